"""Small widgets and pixel helpers on their own: the log scale slider, wipe/difference, the late-frame marker."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
from PySide6.QtCore import QSettings

from tests.builders.fake_lanes import FakeLane, encoded_frame_index
from ui.compare_view import difference, wipe
from ui.scale_control import SLIDER_MAX, ScaleControl, scale_to_slider, slider_to_scale
from ui.timeline import waveform_envelope
from workspace.clock import WallClock


class MovedTime:
    """A clock the test moves: playback position changes only when the test says so, so nothing in these tests
    depends on how fast (or how loaded) the machine is."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def clock_factory(self, samples: np.ndarray) -> tuple[WallClock, None]:
        return WallClock(len(samples) / 16000.0, now=self), None

    def advance(self, window, seconds: float) -> None:
        """Move time on, then run one display tick, as the window's timer would."""
        self.now += seconds
        window._tick()


def test_slider_spans_five_decades_evenly_in_log10() -> None:
    assert SLIDER_MAX == 5000
    assert slider_to_scale(0) == pytest.approx(0.01)
    assert slider_to_scale(SLIDER_MAX) == pytest.approx(1000.0)
    assert slider_to_scale(2000) == pytest.approx(1.0)  # 0.01 x 10^2
    assert slider_to_scale(4000) == pytest.approx(100.0)
    # equal steps are equal ratios
    assert slider_to_scale(1300) / slider_to_scale(1000) == pytest.approx(10 ** 0.3)


@pytest.mark.parametrize("scale", [0.01, 0.0371, 1.0, 42.0, 999.0])
def test_slider_round_trip_is_within_half_a_step(scale: float) -> None:
    back = slider_to_scale(scale_to_slider(scale))
    assert abs(math.log10(back / scale)) <= 0.5 / 1000 + 1e-12


def test_slider_clamps_out_of_range_and_nonsense_scales() -> None:
    assert scale_to_slider(5000.0) == SLIDER_MAX
    assert scale_to_slider(1e-5) == 0
    assert scale_to_slider(float("nan")) == 0
    assert scale_to_slider(-3.0) == 0


def test_dragging_is_coalesced_into_few_scale_changes(qtbot) -> None:
    control = ScaleControl(1.0)
    qtbot.addWidget(control)
    seen: list[float] = []
    control.scaleChanged.connect(seen.append)
    for position in range(2000, 2400, 4):  # a quick drag: 100 slider moves within one coalescing interval
        control.slider.setValue(position)
    qtbot.waitUntil(lambda: len(seen) >= 1, timeout=10_000)
    qtbot.wait(200)
    assert len(seen) < 10
    assert seen[-1] == pytest.approx(slider_to_scale(2396))
    assert control.box.value() == pytest.approx(slider_to_scale(2396), rel=1e-4)


def test_typing_a_value_applies_at_once_and_reset_returns_to_one(qtbot) -> None:
    control = ScaleControl(1.0)
    qtbot.addWidget(control)
    seen: list[float] = []
    control.scaleChanged.connect(seen.append)
    control.box.setValue(250.0)
    assert seen == [250.0]
    assert control.slider.value() == scale_to_slider(250.0)
    control.reset_button.click()
    assert seen[-1] == 1.0 and control.slider.value() == 2000


def test_wipe_and_difference_by_hand() -> None:
    a = np.full((2, 4, 3), 10, np.uint8)
    b = np.full((2, 4, 3), 13, np.uint8)
    assert wipe(a, b, 0.5)[:, :2].tolist() == a[:, :2].tolist()
    assert wipe(a, b, 0.5)[:, 2:].tolist() == b[:, 2:].tolist()
    assert int(difference(a, b, 8).max()) == 24
    assert int(difference(b, a, 100).max()) == 255  # clipped, symmetric


def test_waveform_envelope_is_min_and_max_per_bucket() -> None:
    samples = np.array([0, 1, -2, 3, 4, -5, 6, 7], np.float32)
    low, high = waveform_envelope(samples, 2)
    assert low.tolist() == [-2, -5] and high.tolist() == [3, 7]


@pytest.fixture
def stuck_window(qtbot, tmp_path):
    """A window with one lane that renders frame 0 and then blocks until the test ends: a renderer that cannot keep
    up with the clock."""
    from ui.main_window import MainWindow, frame_count_for

    release = threading.Event()

    class StuckLane(FakeLane):
        def frame(self, index, scale):
            if index > 0:
                release.wait(60)
            return super().frame(index, scale)

    samples = np.zeros(16000 * 4, np.float32)
    frames = frame_count_for(samples)
    time = MovedTime()
    window = MainWindow(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat), prefer_audio=False,
                        clock_factory=time.clock_factory)
    # pytest-qt closes its widgets before fixtures are torn down: the lane must be released first, or closing waits
    # for a render thread that is still blocked inside frame() (and gives up on it, leaving it alive).
    qtbot.addWidget(window, before_close_func=lambda _: release.set())
    window.show()
    window.set_content(samples, [StuckLane("slow", frames)])
    try:
        yield window, frames, time
    finally:
        release.set()
        window.close()
        assert not window.worker._thread.is_alive()


def test_a_lane_that_cannot_keep_up_shows_its_latest_frame_with_a_marker(qtbot, stuck_window) -> None:
    """Audio (here the wall clock) keeps going; the slow lane holds its last picture and says it is late."""
    window, _, time = stuck_window
    view = window.slots[0].view
    qtbot.waitUntil(lambda: view.shown_index == 0, timeout=30_000)
    window.play()
    time.advance(window, 0.2)  # 5 frames on
    assert window.current_frame == 5
    assert window.playing  # the clock did not wait for the renderer
    assert view.is_late and view.late_marker.isVisibleTo(view)
    assert encoded_frame_index(view.image.shown[..., ::-1]) == 0  # still the latest rendered frame
    window.pause()


@pytest.fixture
def moved_time() -> MovedTime:
    return MovedTime()


@pytest.fixture
def fake_window(qtbot, tmp_path, moved_time):
    from ui.main_window import MainWindow, frame_count_for

    samples = np.zeros(16000 * 6, np.float32)
    frames = frame_count_for(samples)
    window = MainWindow(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat), prefer_audio=False,
                        clock_factory=moved_time.clock_factory)
    qtbot.addWidget(window)
    window.show()
    window.set_content(samples, [FakeLane("a", frames), FakeLane("b", frames, seed=1)])
    yield window
    window.close()


def test_loop_region_keeps_playback_inside_it(fake_window, moved_time) -> None:
    window = fake_window
    window.seek_frame(30)
    window.loop_box.setChecked(True)  # region: the playhead and the next 2 s (50 frames)
    assert window.timeline.loop() == (30, 80)
    window.transport.set_loop((30, 40))  # what dragging the region's edge on the timeline sends
    assert window.timeline.loop() == (30, 40)
    window.play()
    seen = []
    for _ in range(4):
        moved_time.advance(window, 0.12)  # 3 frames a step
        seen.append(window.current_frame)
    window.pause()
    assert seen == [33, 36, 39, 30]  # 42 is past the region's end: back to its start instead of running on


def test_av_offset_delays_the_picture(fake_window, moved_time) -> None:
    window = fake_window
    window.offset_box.setValue(200)  # the picture lags the sound by 200 ms = 5 frames
    window.seek_frame(20)
    assert window.clock.position_s() == pytest.approx((20 + 0.5) / 25 + 0.2)  # the sound is 5 frames ahead
    window.play()
    moved_time.advance(window, 0.2)  # 5 frames of playback
    window.pause()
    assert window.current_frame == 25  # frame 20 plus the 5 played, not frame 30
    assert window.clock.position_s() * 25 - window.current_frame == pytest.approx(5.5)


def test_a_frame_that_arrives_after_its_time_still_replaces_an_older_picture(qtbot, stuck_window) -> None:
    """While playing behind the playhead, the lane shows the newest frame it has (marked late), not the last
    frame that happened to arrive on time."""
    from workspace.render_worker import FrameReady

    window, frames, time = stuck_window
    slot = window.slots[0]
    qtbot.waitUntil(lambda: slot.view.shown_index == 0, timeout=30_000)
    window.play()
    time.advance(window, 0.4)
    assert window.current_frame == 10
    reference = FakeLane("slow", frames)
    late_index = window.current_frame - 3  # the clock only moves when this test moves it
    window.transport.apply_result(FrameReady(slot.lane_id, 1.0, late_index, reference.frame(late_index, 1.0), 0))
    assert slot.view.shown_index == late_index and slot.view.is_late
    assert encoded_frame_index(slot.view.image.shown[..., ::-1]) == late_index
    older = late_index - 2  # older than what is on screen: ignored
    window.transport.apply_result(FrameReady(slot.lane_id, 1.0, older, reference.frame(older, 1.0), 0))
    assert encoded_frame_index(slot.view.image.shown[..., ::-1]) == late_index
    window.pause()


def test_timeline_rows_of_rendered_frames_read_top_down_in_lane_order(qtbot) -> None:
    """Each lane's row is coloured where its frames are rendered; the first lane's row is the top one on screen
    (largest y in the plot's own coordinates, mapped by pyqtgraph, not by the timeline's arithmetic)."""
    import pyqtgraph as pg
    from PySide6.QtCore import QPointF

    from ui.timeline import Timeline

    timeline = Timeline()
    qtbot.addWidget(timeline)
    timeline.set_audio(np.zeros(16000, np.float32), 25)
    first, second = np.zeros(25, bool), np.zeros(25, bool)
    first[:5], second[10:] = True, True
    timeline.set_rendered([first, second], ["#ff0000", "#00ff00"])
    item = timeline._rendered
    rows = item.image.shape[0]
    heights = [item.mapToView(QPointF(0.5, row + 0.5)).y() for row in range(rows)]
    top, bottom = item.image[int(np.argmax(heights))], item.image[int(np.argmin(heights))]
    red, green = pg.mkColor("#ff0000"), pg.mkColor("#00ff00")
    assert [tuple(top[i, :3]) for i in (0, 20)] == [(red.red(), 0, 0), (60, 64, 67)]
    assert [tuple(bottom[i, :3]) for i in (0, 20)] == [(60, 64, 67), (0, green.green(), 0)]


def test_prerender_of_a_clip_larger_than_the_cache_still_plays_and_says_why(qtbot, tmp_path) -> None:
    """With a cache that holds 20 fake frames, pre-rendering ~100 frames can never finish: the window must play
    anyway instead of waiting for ever."""
    from ui.main_window import MainWindow, frame_count_for

    samples = np.zeros(16000 * 4, np.float32)
    frames = frame_count_for(samples)
    one_frame = FakeLane("a", frames).frame(0, 1.0)
    budget = 20 * (one_frame.image.nbytes + one_frame.crop.nbytes)
    window = MainWindow(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat), prefer_audio=False,
                        cache_bytes=budget)
    qtbot.addWidget(window)
    window.show()
    try:
        window.set_content(samples, [FakeLane("a", frames)])
        window.prerender_action.setChecked(True)
        window.play()
        qtbot.waitUntil(lambda: window.playing, timeout=30_000)
        assert "does not fit in the frame cache" in window.statusBar().currentMessage()
        assert not window.progress.isVisible()
        window.pause()
    finally:
        window.close()


def test_stepping_plays_the_audio_heard_with_that_picture_offset_included(qtbot, fake_window) -> None:
    window = fake_window
    snippets: list[float] = []
    real_snippet = window.clock.play_snippet
    window.clock.play_snippet = lambda start_s, *args: (snippets.append(start_s), real_snippet(start_s, *args))
    window.seek_frame(20)
    window.step(1)
    window.offset_box.setValue(200)  # picture 200 ms behind the sound: frame 22 goes with the audio at 0.88 + 0.2 s
    window.step(1)
    window.offset_box.setValue(-500)
    window.seek_frame(2)
    window.step(1)  # 0.12 s - 0.5 s is before the clip's start: clamped to 0
    assert snippets == [pytest.approx(21 / 25), pytest.approx(22 / 25 + 0.2), 0.0]


# ---------------------------------------------------------------------------------------------------------------
# the newcomer list: what a first-time user tripped over
# ---------------------------------------------------------------------------------------------------------------
def test_the_toolbar_names_frame_0_as_soon_as_a_clip_is_shown(fake_window) -> None:
    assert fake_window.frame_label.text().startswith(f"frame 0 / {fake_window.num_frames - 1}")


def test_any_other_scale_change_clears_the_fits_r2(qtbot) -> None:
    control = ScaleControl(1.0)
    qtbot.addWidget(control)
    control.show_fit(-0.294)
    control.reset_button.click()
    assert control.r2_label.text() == ""
    control.show_fit(0.9)
    control.slider.setValue(3000)  # a drag
    assert control.r2_label.text() == ""
    control.show_fit(0.9)
    control.set_scale(4.0)  # Fit itself sets the scale from code, then shows its R²: that one stays
    assert control.r2_label.text() == "R² 0.900"


def test_a_typed_scale_beyond_the_sliders_range_is_clamped_and_says_why(qtbot) -> None:
    control = ScaleControl(1.0)
    qtbot.addWidget(control)
    seen: list[float] = []
    control.scaleChanged.connect(seen.append)
    control.box.setValue(5000.0)
    assert seen == [1000.0] and control.box.value() == 1000.0
    assert control.limit_label.text() == "clamped"
    assert "5000" in control.limit_label.toolTip() and "0.01× to 1000×" in control.limit_label.toolTip()
    control.box.setValue(20.0)
    assert seen[-1] == 20.0 and control.limit_label.text() == ""


def test_after_typing_a_scale_enter_gives_space_back_to_playback(qtbot, fake_window) -> None:
    from PySide6.QtCore import Qt
    from PySide6.QtWidgets import QApplication

    window = fake_window
    window.activateWindow()
    qtbot.waitUntil(lambda: QApplication.activeWindow() is window, timeout=10_000)
    box = window.slots[1].view.scale_control.box
    box.setFocus()
    qtbot.waitUntil(box.hasFocus, timeout=10_000)
    box.selectAll()
    qtbot.keyClicks(box, "3")
    qtbot.keyClick(box, Qt.Key.Key_Return)
    assert window.slots[1].scale == 3.0
    assert not box.hasFocus()
    qtbot.keyClick(QApplication.focusWidget() or window, Qt.Key.Key_Space)
    assert window.playing  # Space reached the play action, not the box
    window.pause()
    box.setFocus()
    qtbot.waitUntil(box.hasFocus, timeout=10_000)
    qtbot.keyClicks(box, "99")
    qtbot.keyClick(box, Qt.Key.Key_Escape)  # Escape: the edit is dropped and the keys go back too
    assert window.slots[1].scale == 3.0 and not box.hasFocus()
    assert window.slots[1].view.scale_control.slider.focusPolicy() == Qt.FocusPolicy.NoFocus


def test_the_progress_bar_is_wide_enough_for_its_text(fake_window) -> None:
    metrics = fake_window.progress.fontMetrics()
    for text in ("pre-rendering 100%", "opening lanes 4 / 4"):
        assert fake_window.progress.minimumWidth() > metrics.horizontalAdvance(text) + 20


def test_shared_y_ranges_show_the_magnitude_gap_and_are_remembered(qtbot, tmp_path) -> None:
    from ui.main_window import MainWindow, frame_count_for

    samples = np.zeros(16000 * 2, np.float32)
    frames = frame_count_for(samples)
    settings_path = str(tmp_path / "shared.ini")
    window = MainWindow(QSettings(settings_path, QSettings.Format.IniFormat), prefer_audio=False)
    qtbot.addWidget(window)
    window.set_content(samples, [FakeLane("big", frames), FakeLane("small", frames, gain=0.02)])
    qtbot.waitUntil(lambda: all(s.raw_features is not None for s in window.slots), timeout=30_000)
    big, small = window.plots.range_plots
    assert window.shared_y_action.isChecked()  # on by default: comparing is the point
    assert big.shown_y_range == small.shown_y_range == (0.0, big.y_range[1])
    assert "shared" in window.plots.y_mode_label.text()
    window.shared_y_action.setChecked(False)
    assert small.shown_y_range == small.y_range and small.y_range[1] < big.y_range[1] / 10
    assert "own range" in window.plots.y_mode_label.text()
    window.close()
    again = MainWindow(QSettings(settings_path, QSettings.Format.IniFormat), prefer_audio=False)
    qtbot.addWidget(again)
    assert not again.shared_y_action.isChecked() and not again.plots.shared_y
    again.close()


def test_help_lists_the_shortcuts_from_the_actions_and_about_gives_versions(fake_window) -> None:
    import platform
    from importlib import metadata

    from PySide6.QtGui import QKeySequence

    window = fake_window
    assert window.shortcuts_action.shortcut() == QKeySequence(QKeySequence.StandardKey.HelpContents)
    shortcuts = window.shortcuts_html()
    for keys, what in (("Space", "Play / pause"), ("Right", "Step one frame"), ("L", "Toggle loop"),
                       ("Ctrl+S", "Save session")):
        assert f"<b>{keys}</b>" in shortcuts and what in shortcuts
    window.step_action.setShortcut(QKeySequence("F7"))  # generated: a changed key shows up at once
    assert "<b>F7</b>" in window.shortcuts_html()
    about = window.about_html()
    assert platform.python_version() in about and metadata.version("onnxruntime") in about
    assert "coremltools" in about and "PySide6" in about
    window.show_shortcuts()
    assert window.help_box is not None and window.help_box.isVisible() and not window.help_box.isModal()
    window.help_box.close()


def test_reading_versions_for_about_imports_neither_coremltools_nor_torch() -> None:
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, ui.help; rows = dict(ui.help.versions()); "
            "print(rows['coremltools'] != '', 'coremltools' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                         text=True, check=True)
    assert out.stdout.split() == ["True", "False", "False"], out.stderr
