"""The real window, driven offscreen on a real session (espeak speech, synthetic avatar, tiny ONNX models).

Every expected value comes from outside the window: the builder's numpy encoder, a fresh Lane rendered in the
test, the known 0.01 factor of the "tiny features" encoder, or plain arithmetic.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import QApplication

from backends.registry import MODELS
from pipeline.audio import load_audio
from pipeline.avatar import Avatar
from pipeline.features import pad_features
from pipeline.lane import Lane
from pipeline.mel import melspectrogram
from pipeline.session import LaneSpec, load_session
from pipeline.windows import mel_windows
from tests.builders.speech import espeak_available
from tests.builders.ui_session import TINY_FEATURE_SCALE, UiSession, make_ui_session
from ui.lane_view import bgr_to_display
from ui.scale_control import scale_to_slider

pytestmark = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is needed to speak the test clip")

WAIT_MS = 60_000  # generous: the CI machine has two shared cores


@pytest.fixture(scope="module")
def ui_session(tmp_path_factory) -> UiSession:
    return make_ui_session(tmp_path_factory.mktemp("ui_session"))


@pytest.fixture
def window(qtbot, tmp_path, ui_session):
    from ui.main_window import MainWindow

    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    win = MainWindow(settings, prefer_audio=False)
    qtbot.addWidget(win)
    win.resize(1300, 850)
    win.show()
    assert win.open_session(ui_session.path)
    yield win
    win.close()
    assert not win.worker._thread.is_alive()


def expected_features(ui_session: UiSession) -> np.ndarray:
    """The reference lane's padded features from the builder's numpy encoder, not from the app's backend."""
    audio = load_audio(ui_session.folder / "speech.wav")
    return pad_features(ui_session.reference_encoder(mel_windows(melspectrogram(audio.samples))))


def fresh_lane(ui_session: UiSession, name: str, encoder: Path) -> Lane:
    audio = load_audio(ui_session.folder / "speech.wav")
    return Lane(LaneSpec(name, encoder, ui_session.generator), audio, Avatar.open(ui_session.folder / "avatar"),
                models=MODELS)


def wait_shown(qtbot, window, index: int) -> None:
    qtbot.waitUntil(lambda: all(s.view.shown_index == index and not s.view.is_late
                                for s in window.slots if s.failure is None), timeout=WAIT_MS)


def lane_by_name(window, name: str):
    return next(s for s in window.slots if s.spec.name == name)


def test_opening_a_session_shows_every_lane_with_its_sources_and_provenance(qtbot, window, ui_session) -> None:
    wait_shown(qtbot, window, 0)
    assert [s.spec.name for s in window.slots] == ["reference", "tiny features"]
    reference = lane_by_name(window, "reference")
    assert "encoder.onnx → generator.onnx" in reference.view.sources.text()
    assert "onnxruntime" in reference.view.provenance.text() and "fp32" in reference.view.provenance.text()
    assert "reference" in reference.view.title.text()
    # the pixels on screen are what a fresh Lane renders for frame 0
    expected = fresh_lane(ui_session, "check", ui_session.encoder).frame(0, 1.0).image
    np.testing.assert_array_equal(reference.view.image.shown, bgr_to_display(expected))


def test_opening_names_each_lane_as_it_loads_and_hides_the_progress_after(qtbot, tmp_path, ui_session) -> None:
    from ui.main_window import MainWindow

    window = MainWindow(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat), prefer_audio=False)
    qtbot.addWidget(window)
    window.show()
    messages: list[str] = []
    in_lane_area: list[tuple[str, str]] = []  # what the empty lane area says meanwhile (it said "Open a session…")
    window.statusBar().messageChanged.connect(messages.append)
    window.statusBar().messageChanged.connect(lambda m: in_lane_area.append((m, window.empty_label.text())))
    try:
        assert window.open_session(ui_session.path)
        opening = [m for m in messages if m.startswith("Opening session.toml")]
        assert opening[1:] == ["Opening session.toml: lane 1 of 2, reference…",
                               "Opening session.toml: lane 2 of 2, tiny features…"]
        assert all(label == message for message, label in in_lane_area if message.startswith("Opening"))
        assert window.empty_label.text().startswith("Open a session")  # back to the invitation for next time
        assert not window.progress.isVisible() and window.statusBar().currentMessage() == ""
        assert not window.open_session(ui_session.folder / "missing.toml")
        assert not window.progress.isVisible() and QApplication.overrideCursor() is None
    finally:
        window.close()


def test_reference_features_reach_the_plots(qtbot, window, ui_session) -> None:
    qtbot.waitUntil(lambda: all(s.raw_features is not None for s in window.slots), timeout=WAIT_MS)
    features = expected_features(ui_session)
    np.testing.assert_allclose(lane_by_name(window, "reference").raw_features, features, rtol=1e-4, atol=1e-4)
    plot = window.plots.range_plots[0]
    assert plot.y_range is not None
    assert plot.y_range[1] == pytest.approx(features.max(), rel=1e-4)
    # number of frames follows PIPELINE.md: N + 2 rows
    assert window.num_frames == features.shape[0]


def test_play_advances_and_pause_holds(qtbot, window) -> None:
    wait_shown(qtbot, window, 0)
    qtbot.keyClick(window, Qt.Key.Key_Space)
    assert window.playing
    qtbot.waitUntil(lambda: window.current_frame >= 10, timeout=WAIT_MS)
    qtbot.keyClick(window, Qt.Key.Key_Space)
    assert not window.playing
    held = window.current_frame
    wait_shown(qtbot, window, held)
    qtbot.waitUntil(lambda: window.worker.idle, timeout=WAIT_MS)
    assert window.current_frame == held


def test_step_home_end_and_seek_move_the_picture(qtbot, window, ui_session) -> None:
    wait_shown(qtbot, window, 0)
    qtbot.keyClick(window, Qt.Key.Key_Right)
    qtbot.keyClick(window, Qt.Key.Key_Right)
    wait_shown(qtbot, window, 2)
    qtbot.keyClick(window, Qt.Key.Key_Left)
    wait_shown(qtbot, window, 1)
    qtbot.keyClick(window, Qt.Key.Key_End)
    wait_shown(qtbot, window, window.num_frames - 1)
    qtbot.keyClick(window, Qt.Key.Key_Home)
    wait_shown(qtbot, window, 0)
    window.timeline.seekRequested.emit(17)  # what a click or a drag on the timeline sends
    wait_shown(qtbot, window, 17)
    expected = fresh_lane(ui_session, "check", ui_session.encoder).frame(17, 1.0).image
    np.testing.assert_array_equal(lane_by_name(window, "reference").view.image.shown, bgr_to_display(expected))
    assert window.timeline.playhead.value() == 17


def test_scale_slider_changes_the_tiny_lanes_pixels_and_plots(qtbot, window, ui_session) -> None:
    window.seek_frame(20)
    wait_shown(qtbot, window, 20)
    tiny = lane_by_name(window, "tiny features")
    qtbot.waitUntil(lambda: tiny.raw_features is not None, timeout=WAIT_MS)
    before_pixels = tiny.view.image.shown.copy()
    plot_index = window.slots.index(tiny)
    before_top = window.plots.range_plots[plot_index].y_range[1]

    tiny.view.scale_control.slider.setValue(scale_to_slider(100.0))  # as a drag would, coalesced
    qtbot.waitUntil(lambda: tiny.scale == pytest.approx(100.0, rel=1e-3), timeout=WAIT_MS)
    wait_shown(qtbot, window, 20)
    after_pixels = tiny.view.image.shown
    assert not np.array_equal(before_pixels, after_pixels)
    expected = fresh_lane(ui_session, "check", ui_session.tiny_encoder).frame(20, tiny.scale).image
    np.testing.assert_array_equal(after_pixels, bgr_to_display(expected))
    assert window.plots.range_plots[plot_index].y_range[1] == pytest.approx(before_top * tiny.scale, rel=1e-4)
    # at 100x the tiny lane is the reference again, so its mouth matches the reference lane's
    reference_pixels = lane_by_name(window, "reference").view.image.shown
    assert np.abs(after_pixels.astype(int) - reference_pixels.astype(int)).max() <= 1


def test_fit_sets_the_least_squares_scale_and_shows_r2(qtbot, window) -> None:
    tiny = lane_by_name(window, "tiny features")
    qtbot.waitUntil(lambda: all(s.raw_features is not None for s in window.slots), timeout=WAIT_MS)
    qtbot.mouseClick(tiny.view.scale_control.fit_button, Qt.MouseButton.LeftButton)
    assert tiny.scale == pytest.approx(1.0 / TINY_FEATURE_SCALE, rel=1e-3)
    # one name per number: k (lane ≈ k × reference), the correction Fit applies, and the scale it sets
    message = window.statusBar().currentMessage()
    assert "k 0.01 (lane ≈ k × reference)" in message and "correction 100" in message and "scale now 100" in message
    assert tiny.view.scale_control.box.value() == pytest.approx(100.0, rel=1e-3)
    assert tiny.view.scale_control.r2_label.text().startswith("R² 1.00")
    # the scatter's k (lane ≈ k × reference at the current frame) is now 1
    qtbot.waitUntil(lambda: window.plots.fit_k is not None, timeout=WAIT_MS)
    assert window.plots.fit_k == pytest.approx(1.0, rel=1e-3)


def test_choosing_another_reference_changes_what_fit_aims_at(qtbot, window) -> None:
    qtbot.waitUntil(lambda: all(s.raw_features is not None for s in window.slots), timeout=WAIT_MS)
    reference, tiny = lane_by_name(window, "reference"), lane_by_name(window, "tiny features")
    window.fit_lane(tiny.lane_id)
    window.set_lane_scale(tiny.lane_id, 1.0)
    assert tiny.view.scale_control.r2_label.text().startswith("R²")
    window.set_reference(tiny.lane_id)
    assert tiny.view.scale_control.r2_label.text() == ""  # that R² was against the old reference
    assert "reference" in tiny.view.title.text() and "reference" not in reference.view.title.text().replace(
        "<b>reference</b>", "")
    window.fit_lane(reference.lane_id)
    assert reference.scale == pytest.approx(TINY_FEATURE_SCALE, rel=1e-3)  # now the big lane is scaled down


def test_add_reorder_and_remove_a_lane(qtbot, window, ui_session) -> None:
    wait_shown(qtbot, window, 0)
    added = window.add_lane(LaneSpec("third", ui_session.encoder, ui_session.generator, scale=2.0))
    assert [s.spec.name for s in window.slots] == ["reference", "tiny features", "third"]
    assert window.lane_layout.indexOf(added.view) == 2
    wait_shown(qtbot, window, 0)
    assert len(window.plots.range_plots) == 3
    window.move_lane(added.lane_id, -1)
    assert [s.spec.name for s in window.slots] == ["reference", "third", "tiny features"]
    assert window.lane_layout.indexOf(added.view) == 1
    qtbot.mouseClick(added.view.remove_button, Qt.MouseButton.LeftButton)
    assert [s.spec.name for s in window.slots] == ["reference", "tiny features"]
    assert len(window.plots.range_plots) == 2


def test_a_broken_model_shows_its_reason_in_its_lane_and_the_rest_keeps_working(qtbot, window, ui_session) -> None:
    wait_shown(qtbot, window, 0)
    tiny = lane_by_name(window, "tiny features")
    broken = window.replace_lane_source(tiny.lane_id, "encoder", ui_session.broken_model)
    qtbot.waitUntil(lambda: broken.view.error_text is not None, timeout=WAIT_MS)
    message = broken.view.error_text
    assert "broken.onnx" in message and "expected" in message
    assert "224" in message  # names what it found
    window.seek_frame(9)
    qtbot.waitUntil(lambda: lane_by_name(window, "reference").view.shown_index == 9, timeout=WAIT_MS)
    assert window.plots.range_plots[1].y_range is None  # no features to plot for the broken lane
    # a fit against the broken lane cannot ever work: it says why instead of "still being computed"
    window.set_reference(broken.lane_id)
    assert window.fit_lane(lane_by_name(window, "reference").lane_id) is None
    assert "tiny features has no features" in window.last_complaint and "broken.onnx" in window.last_complaint


def test_wipe_and_difference_between_two_lanes(qtbot, window) -> None:
    window.seek_frame(12)
    wait_shown(qtbot, window, 12)
    window.tabs.setCurrentWidget(window.compare_view)
    view = window.compare_view
    a = lane_by_name(window, "reference").view.image.shown
    b = lane_by_name(window, "tiny features").view.image.shown
    view.mode.setCurrentText("Difference")
    view.amount.setValue(4)
    expected = np.clip(np.abs(a.astype(int) - b.astype(int)) * 4, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(view.image.shown, expected)
    view.mode.setCurrentText("Wipe")
    view.amount.setValue(25)
    split = round(a.shape[1] * 0.25)
    np.testing.assert_array_equal(view.image.shown[:, :split], a[:, :split])
    np.testing.assert_array_equal(view.image.shown[:, split:], b[:, split:])


def test_crop_toggle_shows_the_generator_crop(qtbot, window, ui_session) -> None:
    wait_shown(qtbot, window, 0)
    window.crop_action.trigger()
    expected = fresh_lane(ui_session, "check", ui_session.encoder).frame(0, 1.0).crop
    qtbot.waitUntil(lambda: lane_by_name(window, "reference").view.image.shown.shape == expected.shape,
                    timeout=WAIT_MS)
    np.testing.assert_array_equal(lane_by_name(window, "reference").view.image.shown, bgr_to_display(expected))


def test_saving_keeps_order_and_scales(qtbot, window, tmp_path) -> None:
    tiny = lane_by_name(window, "tiny features")
    window.set_lane_scale(tiny.lane_id, 42.0)
    target = tmp_path / "saved.toml"
    window.save_session(target)
    saved = load_session(target)
    assert [(lane.name, lane.scale) for lane in saved.lanes] == [("reference", 1.0), ("tiny features", 42.0)]
    assert saved.reference == "reference"
    assert window.settings.value("lastSession") == str(target.resolve())


def test_prerender_renders_every_frame_then_plays(qtbot, window) -> None:
    window.prerender_action.setChecked(True)
    window.play()
    qtbot.waitUntil(lambda: window.playing, timeout=WAIT_MS * 3)
    rendered = window.transport.rendered_rows()
    assert all(row.all() for row in rendered)
    window.pause()


def test_unexpected_exception_is_logged_and_the_app_stays_up(qtbot, window, caplog) -> None:
    from ui.app import install_excepthook

    from PySide6.QtCore import QTimer

    def boom() -> None:
        raise RuntimeError("boom in a slot")

    previous = sys.excepthook
    install_excepthook(show_dialog=False)
    try:
        with caplog.at_level(logging.ERROR):
            QTimer.singleShot(0, boom)  # raised inside Qt's event loop, as a slot's bug would be
            qtbot.waitUntil(lambda: "boom in a slot" in caplog.text, timeout=10_000)
    finally:
        sys.excepthook = previous
    assert "Traceback" in caplog.text and "in boom" in caplog.text
    # the window is still up and still works: a seek shows the new frame
    window.seek_frame(3)
    wait_shown(qtbot, window, 3)


def test_dropping_an_audio_file_replaces_the_clip_and_keeps_lanes_and_scales(qtbot, window, ui_session, tmp_path) -> None:
    from tests.builders.speech import speak

    tiny = lane_by_name(window, "tiny features")
    window.set_lane_scale(tiny.lane_id, 7.0)
    longer = speak("A different and rather longer sentence for the second clip.", tmp_path / "other.wav", rate=22050)
    window.open_dropped(longer)
    expected_frames = expected_frames_for(longer)
    assert window.num_frames == expected_frames
    assert [(s.spec.name, s.scale) for s in window.slots] == [("reference", 1.0), ("tiny features", 7.0)]
    assert window.session.audio == longer
    wait_shown(qtbot, window, 0)


def expected_frames_for(path: Path) -> int:
    """N + 2 with N = int((T - 16) / 80 * 25) + 2 and T = 1 + samples // 200 (PIPELINE.md stages 1-2), by hand."""
    samples = load_audio(path).samples
    mel_frames = 1 + len(samples) // 200
    return int((mel_frames - 16) / 80 * 25) + 2 + 2


def test_dropping_something_else_names_what_was_expected(window, tmp_path) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_text("hello")
    window.open_dropped(junk)
    assert "notes.txt" in window.last_complaint and "expected a session (.toml)" in window.last_complaint


def test_layout_and_last_session_are_remembered(qtbot, tmp_path, ui_session) -> None:
    from ui.main_window import MainWindow

    settings = QSettings(str(tmp_path / "remember.ini"), QSettings.Format.IniFormat)
    first = MainWindow(settings, prefer_audio=False)
    qtbot.addWidget(first)
    first.show()
    first.open_session(ui_session.path)
    first.resize(760, 700)  # inside the offscreen platform's 800x800 screen, which clamps restored geometry
    first.splitter.setSizes([450, 200])
    first.offset_box.setValue(-120)
    size, sizes = (first.width(), first.height()), first.splitter.sizes()
    first.close()
    second = MainWindow(QSettings(str(tmp_path / "remember.ini"), QSettings.Format.IniFormat), prefer_audio=False)
    qtbot.addWidget(second)
    second.show()
    try:
        assert (second.width(), second.height()) == size
        qtbot.waitUntil(lambda: sum(second.splitter.sizes()) == sum(sizes), timeout=10_000)
        assert second.splitter.sizes() == sizes
        assert second.settings.value("lastSession") == str(ui_session.path.resolve())
        assert second.offset_box.value() == -120
        assert [a.text() for a in second.recent_menu.actions()] == [str(ui_session.path.resolve())]
    finally:
        second.close()


def test_start_gui_opens_the_session_in_a_shown_window(qtbot, ui_session, tmp_path, monkeypatch) -> None:
    from ui.app import start_gui

    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # start_gui installs its own; restore it afterwards
    settings = QSettings(str(tmp_path / "start.ini"), QSettings.Format.IniFormat)
    window = start_gui(ui_session.path, settings)
    qtbot.addWidget(window)
    try:
        assert window.isVisible()
        assert [s.spec.name for s in window.slots] == ["reference", "tiny features"]
        wait_shown(qtbot, window, 0)
        assert sys.excepthook is not sys.__excepthook__
    finally:
        window.close()



def test_a_broken_generator_keeps_the_lanes_features_in_the_plots(qtbot, window, ui_session) -> None:
    wait_shown(qtbot, window, 0)
    tiny = lane_by_name(window, "tiny features")
    broken = window.replace_lane_source(tiny.lane_id, "generator", ui_session.broken_model)
    assert "broken.onnx" in broken.view.error_text and "expected" in broken.view.error_text
    qtbot.waitUntil(lambda: window.plots.range_plots[1].y_range is not None, timeout=WAIT_MS)
    top = window.plots.range_plots[1].y_range[1]
    assert top == pytest.approx(expected_features(ui_session).max() * TINY_FEATURE_SCALE, rel=1e-3)
    window.seek_frame(6)
    wait_shown(qtbot, window, 6)  # the reference lane keeps rendering
    assert broken.view.error_text is not None and broken.view.shown_index is None
    # its scale still moves its plots, and Fit still finds the 100x its encoder lacks
    assert broken.view.scale_control.isEnabled() and broken.view.scale_control.fit_button.isEnabled()
    window.set_lane_scale(broken.lane_id, 10.0)
    assert window.plots.range_plots[1].y_range[1] == pytest.approx(top * 10.0, rel=1e-4)
    assert window.fit_lane(broken.lane_id) == pytest.approx(1.0 / TINY_FEATURE_SCALE, rel=1e-3)
    assert broken.view.error_text is not None and broken.view.shown_index is None  # still no picture


def test_a_real_drop_event_on_the_window_opens_the_dropped_file(qtbot, window, ui_session, tmp_path) -> None:
    """The Qt path a file manager takes (drag enter, then drop with a URL), not a call to open_dropped."""
    from PySide6.QtCore import QMimeData, QPoint, QPointF, QUrl
    from PySide6.QtGui import QDragEnterEvent, QDropEvent
    from PySide6.QtWidgets import QApplication

    from tests.builders.speech import speak

    other = speak("Dropped on the window.", tmp_path / "dropped.wav", rate=16000)
    data = QMimeData()
    data.setUrls([QUrl.fromLocalFile(str(other))])
    enter = QDragEnterEvent(QPoint(200, 200), Qt.DropAction.CopyAction, data, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(window, enter)
    assert enter.isAccepted()
    drop = QDropEvent(QPointF(200, 200), Qt.DropAction.CopyAction, data, Qt.MouseButton.LeftButton,
                      Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(window, drop)
    assert window.session.audio == other
    assert window.num_frames == expected_frames_for(other)
    wait_shown(qtbot, window, 0)

    link = QMimeData()  # a web link dragged from a browser: refused, nothing changes
    link.setUrls([QUrl("https://example.com/clip.wav")])
    enter = QDragEnterEvent(QPoint(200, 200), Qt.DropAction.CopyAction, link, Qt.MouseButton.LeftButton,
                            Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(window, enter)
    assert not enter.isAccepted()
    QApplication.sendEvent(window, QDropEvent(QPointF(200, 200), Qt.DropAction.CopyAction, link,
                                              Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier))
    assert window.session.audio == other and window.session.avatar == ui_session.folder / "avatar"


def _session_with_lanes(ui_session: UiSession, folder: Path, count: int) -> Path:
    """The test session with ``count`` lanes: the two of the builder, then copies of the reference lane."""
    text = ui_session.path.read_text(encoding="utf-8").replace('"speech.wav"', f'"{ui_session.folder / "speech.wav"}"')
    text = text.replace('"avatar"', f'"{ui_session.folder / "avatar"}"')
    for role in ("encoder.onnx", "tiny_encoder.onnx", "generator.onnx"):
        text = text.replace(f'= "{role}"', f'= "{ui_session.folder / role}"')
    for extra in range(count - 2):
        text += (f'\n[[lanes]]\nname = "extra {extra}"\nencoder = "{ui_session.encoder}"\n'
                 f'generator = "{ui_session.generator}"\nscale = {extra + 2}.5\n')
    path = folder / f"lanes{count}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_saving_a_session_of_more_than_four_lanes_keeps_the_lanes_not_shown(qtbot, window, ui_session,
                                                                           tmp_path) -> None:
    source = _session_with_lanes(ui_session, tmp_path, 6)
    assert len(load_session(source).lanes) == 6
    assert window.open_session(source)
    assert [s.spec.name for s in window.slots] == ["reference", "tiny features", "extra 0", "extra 1"]
    assert "4 of 6 lanes" in window.statusBar().currentMessage()
    window.set_lane_scale(window.slots[1].lane_id, 3.0)
    window.move_lane(window.slots[0].lane_id, 1)
    target = tmp_path / "saved6.toml"
    assert window.save_session(target)
    saved = load_session(target)
    assert [(lane.name, lane.scale) for lane in saved.lanes] == [
        ("tiny features", 3.0), ("reference", 1.0), ("extra 0", 2.5), ("extra 1", 3.5), ("extra 2", 4.5),
        ("extra 3", 5.5)]
    assert saved.reference == "reference"


def test_a_save_that_cannot_be_written_says_so_and_keeps_the_window(qtbot, window, tmp_path) -> None:
    target = tmp_path / "no such folder" / "saved.toml"
    assert window.save_session(target) is False
    assert "Cannot save saved.toml" in window.last_complaint and "no such folder" in window.last_complaint
    assert not target.parent.exists()
    assert window.session.path != target and window.isVisible()


def test_save_on_the_shipped_demo_asks_where_instead_of_overwriting_it(qtbot, window, ui_session, tmp_path,
                                                                      monkeypatch) -> None:
    import pipeline.session
    from PySide6.QtWidgets import QFileDialog

    shipped = ui_session.path.read_bytes()
    target = tmp_path / "my copy.toml"
    asked: list[str] = []
    monkeypatch.setattr(pipeline.session, "demo_session_path", lambda: ui_session.path)  # this session is "the demo"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *args, **kwargs: (asked.append("save as") or
                                                                                 (str(target), "")))
    window.set_lane_scale(lane_by_name(window, "tiny features").lane_id, 5.0)
    window.save_current_session()  # Ctrl+S
    assert asked == ["save as"]
    assert ui_session.path.read_bytes() == shipped
    assert [lane.scale for lane in load_session(target).lanes] == [1.0, 5.0]
    window.save_current_session()  # now the session is the user's copy: saved in place, no question
    assert asked == ["save as"]


def test_an_error_raised_on_every_tick_opens_one_dialog_not_a_cascade(caplog) -> None:
    """The dialog runs its own event loop, in which the same bug raises again: that must log, not nest dialogs."""
    from ui.app import install_excepthook

    dialogs: list[str] = []

    def raise_now(text: str) -> None:
        try:
            raise ValueError(text)
        except ValueError:
            sys.excepthook(*sys.exc_info())

    def dialog(summary: str, details: str) -> None:
        dialogs.append(summary)
        if "tick failed" in summary:
            raise_now("tick failed")  # the same bug, again, while its dialog is open

    previous = sys.excepthook
    install_excepthook(dialog=dialog)
    try:
        with caplog.at_level(logging.ERROR):
            raise_now("tick failed")
            raise_now("tick failed")  # after the dialog closed: the same error is not shown again
            raise_now("another bug")
    finally:
        sys.excepthook = previous
    assert [d.split("\n\nCrash log")[0] for d in dialogs] == ["ValueError: tick failed", "ValueError: another bug"]
    logged = [record.getMessage() for record in caplog.records]
    # every occurrence is logged: two raised here, and one inside its dialog
    assert sum("ValueError: tick failed" in text for text in logged) == 3
    assert sum("ValueError: another bug" in text for text in logged) == 1


def test_dropping_a_model_or_an_mlpackage_manifest_adds_a_lane_with_it(qtbot, window, ui_session) -> None:
    from ui.session_files import model_path

    demo_package = Path(__file__).resolve().parents[1] / "resources" / "demo" / "models" / "AudioEncoder.mlpackage"
    # A file dialog cannot choose a folder-shaped .mlpackage, so it offers the package's Manifest.json instead.
    assert model_path(demo_package / "Manifest.json") == demo_package
    assert model_path(ui_session.encoder) == ui_session.encoder
    before = len(window.slots)
    window.open_dropped(ui_session.encoder)
    assert len(window.slots) == before + 1
    added = window.slots[-1]
    assert added.spec.encoder == ui_session.encoder and added.spec.generator == ui_session.generator
    if demo_package.exists():
        window.open_dropped(demo_package / "Manifest.json")
        assert len(window.slots) == before + 2
        assert window.slots[-1].spec.encoder == demo_package
        assert isinstance(window.slots[-1].lane, Lane)  # it opened: not a FailedLane, not an avatar folder


def test_closing_with_unsaved_changes_asks_save_discard_or_cancel(qtbot, window, tmp_path) -> None:
    tiny = lane_by_name(window, "tiny features")
    copy = tmp_path / "mine.toml"
    assert window.save_session(copy)  # the user's own copy: Save writes it in place
    assert not window.isWindowModified()
    window.set_lane_scale(tiny.lane_id, 3.0)
    assert window.workspace.dirty and window.isWindowModified()
    answers = ["cancel", "save"]
    window.ask_unsaved = lambda: answers.pop(0)
    window.close()  # Cancel: nothing happens
    assert window.isVisible() and window.worker._thread.is_alive()
    window.close()  # Save: written, then closed
    assert not window.isVisible() and answers == []
    assert [lane.scale for lane in load_session(copy).lanes] == [1.0, 3.0]


def test_quit_without_changes_does_not_ask(qtbot, window) -> None:
    window.ask_unsaved = lambda: pytest.fail("nothing changed, so nothing to ask")
    window.quit_action.trigger()
    assert not window.isVisible()
