"""File ▸ Export video… / Export picture… in the real window, driven through pytest-qt on the small window session.

The MP4 is read back with PyAV (FFmpeg's decoders), the PNG with OpenCV: never with the code that wrote them.
"""

from __future__ import annotations

import threading
from pathlib import Path

import av
import cv2
import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtWidgets import QFileDialog, QPushButton

import ui.export_actions as export_actions
from tests.builders.speech import espeak_available
from tests.builders.ui_session import UiSession, make_ui_session

pytestmark = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is needed to speak the test clip")

WAIT_MS = 120_000  # generous: two shared cores


@pytest.fixture(scope="module")
def ui_session(tmp_path_factory) -> UiSession:
    return make_ui_session(tmp_path_factory.mktemp("export_session"))


@pytest.fixture
def window(qtbot, tmp_path, ui_session):
    from ui.main_window import MainWindow

    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    win = MainWindow(settings, prefer_audio=False)
    qtbot.addWidget(win)
    win.resize(1200, 800)
    win.show()
    assert win.open_session(ui_session.path)
    # The window renders the frames around the playhead first: the export must take those from its cache.
    qtbot.waitUntil(lambda: all(win.cache.get((s.lane_id, s.scale, 0)) is not None for s in win.slots),
                    timeout=WAIT_MS)
    yield win
    win.close()


def file_menu_action(window, text: str):
    return next(a for a in window.file_menu.actions() if a.text().replace("&", "") == text)


def choose_file(monkeypatch, path: Path) -> None:
    """The save dialog answers ``path`` (the real one would wait for a person)."""
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (str(path), "")))


def test_export_video_from_the_file_menu_writes_every_frame_with_the_audio(qtbot, window, monkeypatch,
                                                                           tmp_path) -> None:
    out = tmp_path / "exported.mp4"
    choose_file(monkeypatch, out)
    action = file_menu_action(window, "Export video…")
    assert action.shortcut().toString() == "Ctrl+E"
    with qtbot.waitSignal(window.exports.finished, timeout=WAIT_MS) as finished:
        action.trigger()
        assert window.exports.dialog is not None and window.exports.dialog.isVisible()
    job = finished.args[0]
    assert job.outcome == "written", job.message
    assert job.cache_hits >= len(window.slots)  # frame 0 of every lane came from the window's cache
    assert "Exported" in window.statusBar().currentMessage()
    assert window.exports.dialog is None and window.exports.video_action.isEnabled()

    with av.open(str(out)) as container:
        video = container.streams.video[0]
        frames = sum(1 for _ in container.decode(video))
        assert video.average_rate == 25
    with av.open(str(out)) as container:
        audio = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(audio))
        rate = audio.rate
    assert frames == window.num_frames
    assert abs(samples / rate - frames / 25) <= 1 / 25
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


def test_cancel_stops_the_export_keeps_the_window_responsive_and_leaves_no_file(qtbot, window, monkeypatch,
                                                                                tmp_path) -> None:
    out = tmp_path / "cancelled.mp4"
    choose_file(monkeypatch, out)
    gate = threading.Event()
    original = export_actions.VideoExportJob.picture

    def held_after_three(self, i):  # the export thread waits here until the test has pressed Cancel
        if i >= 3:
            gate.wait(60)
        return original(self, i)

    monkeypatch.setattr(export_actions.VideoExportJob, "picture", held_after_three)
    file_menu_action(window, "Export video…").trigger()
    job = window.exports.job
    assert job is not None
    qtbot.waitUntil(lambda: window.exports.dialog.value() >= 3, timeout=WAIT_MS)

    # The export runs on its own thread: the window still steps frames and updates its label meanwhile.
    before = window.current_frame
    window.step(1)
    qtbot.waitUntil(lambda: window.current_frame == before + 1, timeout=WAIT_MS)
    assert f"frame {before + 1} /" in window.frame_label.text()

    cancel = next(b for b in window.exports.dialog.findChildren(QPushButton) if b.text() == "Cancel")
    with qtbot.waitSignal(window.exports.finished, timeout=WAIT_MS):
        qtbot.mouseClick(cancel, Qt.MouseButton.LeftButton)
        gate.set()
    assert job.outcome == "cancelled"
    assert "cancelled" in window.statusBar().currentMessage()
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith((".part", ".mp4"))] == []
    assert window.exports.video_action.isEnabled()


def test_asks_before_replacing_a_file_and_keeps_it_when_told_no(qtbot, window, monkeypatch, tmp_path) -> None:
    out = tmp_path / "exists.mp4"
    out.write_bytes(b"keep me")
    asked: list[Path] = []

    def answer_no(parent, path):
        asked.append(path)
        return False

    monkeypatch.setattr(export_actions, "confirm_overwrite", answer_no)
    choose_file(monkeypatch, out)
    file_menu_action(window, "Export video…").trigger()
    assert asked == [out]
    assert window.exports.job is None
    assert out.read_bytes() == b"keep me"


def test_a_missing_folder_is_one_message_and_no_export(qtbot, window, tmp_path) -> None:
    assert window.exports.export_video(tmp_path / "no" / "such" / "x.mp4") is None
    assert "expected an existing folder" in window.exports.message_box.text()
    assert window.exports.job is None


def test_export_picture_saves_the_window_as_png(qtbot, window, monkeypatch, tmp_path) -> None:
    out = tmp_path / "view.png"
    out.write_bytes(b"old")
    monkeypatch.setattr(export_actions, "confirm_overwrite", lambda parent, path: True)
    choose_file(monkeypatch, out)
    action = file_menu_action(window, "Export picture…")
    assert action.shortcut().toString() == "Ctrl+Shift+E"
    action.trigger()
    picture = cv2.imread(str(out))
    assert picture is not None
    ratio = window.devicePixelRatioF()
    assert picture.shape[1] == round(window.width() * ratio) and picture.shape[0] == round(window.height() * ratio)
    assert picture.std() > 5  # the lanes and plots, not an empty grab
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []


def test_closing_the_window_mid_export_stops_it_and_leaves_no_file(qtbot, window, monkeypatch, tmp_path) -> None:
    out = tmp_path / "closed.mp4"
    choose_file(monkeypatch, out)
    original = export_actions.VideoExportJob.picture

    def held_until_cancelled(self, i):  # the export thread waits here until the window's close cancels it
        if i >= 3:
            while not self.cancelled:
                threading.Event().wait(0.01)
        return original(self, i)

    monkeypatch.setattr(export_actions.VideoExportJob, "picture", held_until_cancelled)
    file_menu_action(window, "Export video…").trigger()
    job = window.exports.job
    qtbot.waitUntil(lambda: job.done >= 3, timeout=WAIT_MS)
    window.close()
    qtbot.waitUntil(lambda: job.thread is not None and not job.thread.is_alive(), timeout=WAIT_MS)
    assert job.outcome == "cancelled"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith((".part", ".mp4"))] == []
