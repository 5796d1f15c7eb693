"""File ▸ Export video… (Ctrl+E) and File ▸ Export picture… (Ctrl+Shift+E): evidence that leaves the window.

The video is the `render` command's picture (pipeline/compose.py) and encoder (pipeline/video_export.py), run on a
worker thread so the window keeps playing and answering while it encodes; a progress dialog counts frames and its
Cancel stops between two frames, leaving no file. Frames the window's frame cache already holds (same lane, same
scale) are used as they are; the others are rendered on the export thread. What is exported is what is on screen:
the lanes in their order with their current scales, the loop region when a loop is on (else the whole clip), the
generator crop when View ▸ Show generator crop is on, and a difference panel when the Wipe / difference tab is
showing.

The picture is a PNG of the window as it looks (lanes, plots, timeline), grabbed by Qt.

Both ask before replacing a file, write atomically through core.safe_write (nothing partial on a full disk or a
cancel, the old file intact), and say what went wrong in a message, never a traceback.
"""

from __future__ import annotations

import logging
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PySide6.QtCore import QBuffer, QByteArray, QCoreApplication, QEvent, QIODevice, QObject, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QFileDialog, QMenu, QMessageBox, QProgressDialog, QWidget

from core import safe_write
from core.constants import SAMPLE_RATE, VIDEO_FPS
from core.errors import InputError
from pipeline.compose import ComposeOptions, PanelLabel, compose_frame, label_for_lane
from pipeline.video_export import ExportCancelled, audio_for_frames, check_mp4_path, encode_video

log = logging.getLogger(__name__)

VIDEO_SHORTCUT = "Ctrl+E"
PICTURE_SHORTCUT = "Ctrl+Shift+E"
RENDER_AHEAD = 16  # frames the cache lacks, rendered per generator call


@dataclass
class ExportLane:
    """One column of the export, captured on the GUI thread so the worker never reads a widget."""

    lane_id: int
    lane: Any | None  # pipeline Lane, or None when the lane has no picture (then ``failure`` says why)
    scale: float
    label: PanelLabel
    failure: str | None = None


@dataclass
class VideoExportJob:
    """An export in flight: its range, its counters (read by the dialog and the tests) and its cancel flag."""

    path: Path
    frames: range
    lanes: list[ExportLane]
    options: ComposeOptions
    total_frames: int
    samples: np.ndarray
    force: bool = False
    cache: Any = None
    done: int = 0
    cache_hits: int = 0
    rendered: int = 0
    outcome: str | None = None  # "written", "cancelled" or "failed" once finished
    message: str = ""
    _cancel: threading.Event = field(default_factory=threading.Event)
    _ahead: dict = field(default_factory=dict)  # frames rendered in a batch, waiting for their turn
    thread: threading.Thread | None = None

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def _render_ahead(self, lane: ExportLane, i: int) -> None:
        """Render frame i and the next frames the cache lacks, up to RENDER_AHEAD, in one batched call
        (Lane.frames: a GPU generator is far faster on a batch); each also goes into the window's cache."""
        wanted = [i]
        for j in range(i + 1, min(i + RENDER_AHEAD, self.frames.stop)):
            if self.cache is None or (lane.lane_id, lane.scale, j) not in self.cache:
                wanted.append(j)
        batch = getattr(lane.lane, "frames", None)
        pictures = batch(wanted, lane.scale) if callable(batch) else [lane.lane.frame(j, lane.scale) for j in wanted]
        for j, rendered in zip(wanted, pictures):
            key = (lane.lane_id, lane.scale, j)
            self._ahead[key] = rendered
            self.rendered += 1
            if self.cache is not None:
                self.cache.put(key, rendered)  # the window shows it too, instead of rendering it again

    def picture(self, i: int) -> np.ndarray:
        """Frame i composed: each lane's picture from the cache if it holds it, else rendered here."""
        items: list[Any] = []
        for lane in self.lanes:
            if lane.lane is None or lane.failure:
                items.append(lane.failure or "no picture")
                continue
            key = (lane.lane_id, lane.scale, i)
            rendered = self._ahead.pop(key, None)
            if rendered is None:
                rendered = self.cache.get(key) if self.cache is not None else None
                if rendered is not None:
                    self.cache_hits += 1
            if rendered is None:
                try:
                    self._render_ahead(lane, i)
                except InputError as exc:
                    lane.failure = str(exc)
                    items.append(lane.failure)
                    continue
                rendered = self._ahead.pop(key)
            items.append(rendered)
        if all(isinstance(item, str) for item in items):
            raise InputError("no lane can draw frames: " + "; ".join(
                f"{lane.label.name}: {item}" for lane, item in zip(self.lanes, items)))
        return compose_frame(items, [lane.label for lane in self.lanes], i, self.total_frames, self.options)

    def run(self, progress: Callable[[int, int], None]) -> None:
        """Encode on the calling (worker) thread; the outcome is recorded, never raised."""

        def pictures():
            for i in self.frames:
                yield self.picture(i)

        def counted(done: int, total: int) -> None:
            self.done = done
            progress(done, total)

        try:
            audio = audio_for_frames(self.samples, self.frames.start, self.frames.stop, SAMPLE_RATE, VIDEO_FPS)
            encode_video(self.path, pictures(), len(self.frames), audio, SAMPLE_RATE, force=self.force,
                         progress=counted, cancelled=lambda: self.cancelled, what="export")
            self.outcome, self.message = "written", f"Exported {len(self.frames)} frames to {self.path}"
        except ExportCancelled:
            self.outcome, self.message = "cancelled", f"Export cancelled; {self.path.name} was not written"
        except InputError as exc:
            self.outcome, self.message = "failed", str(exc)
        except Exception as exc:  # noqa: BLE001 - a bug of ours: say so in the window, log the details
            log.error("video export failed:\n%s", traceback.format_exc())
            self.outcome, self.message = "failed", f"unexpected failure ({type(exc).__name__}: {exc}); see the log"


class _Bridge(QObject):
    """Worker thread -> GUI thread (queued): progress counts and the end of the job."""

    progressed = Signal(int, int)
    ended = Signal(object)


def confirm_overwrite(parent: QWidget, path: Path) -> bool:
    """Ask before replacing an existing file (the CLI's --force, as a question). Tests replace this function."""
    answer = QMessageBox.question(
        parent, "Replace file?", f"{path.name} already exists in {path.parent}.\nReplace it?",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
    return answer == QMessageBox.StandardButton.Yes


class ExportActions(QObject):
    """The two File menu actions and the export in flight (at most one at a time)."""

    finished = Signal(object)  # the VideoExportJob, once its outcome is known

    def __init__(self, window: Any, menu: QMenu | None = None) -> None:
        super().__init__(window)
        self.window = window
        self.job: VideoExportJob | None = None
        self.dialog: QProgressDialog | None = None
        self.message_box: QMessageBox | None = None
        self._bridge = _Bridge()
        self._bridge.progressed.connect(self._on_progress, Qt.ConnectionType.QueuedConnection)
        self._bridge.ended.connect(self._on_ended, Qt.ConnectionType.QueuedConnection)
        self.video_action = QAction("Export &video…", window)
        self.video_action.setShortcut(QKeySequence(VIDEO_SHORTCUT))
        self.video_action.setStatusTip("Write the lanes side by side with the audio as an MP4 (H.264 + AAC)")
        self.video_action.triggered.connect(self.choose_video)
        self.picture_action = QAction("Export &picture…", window)
        self.picture_action.setShortcut(QKeySequence(PICTURE_SHORTCUT))
        self.picture_action.setStatusTip("Save the window as it looks now as a PNG")
        self.picture_action.triggered.connect(self.choose_picture)
        for action in (self.video_action, self.picture_action):
            window.addAction(action)
            if menu is not None:
                menu.addAction(action)
        window.installEventFilter(self)
        app = QCoreApplication.instance()
        if app is not None:  # quitting mid-export: stop between two frames so no .part file is left behind
            app.aboutToQuit.connect(self.cancel_and_wait)

    # -- what the window shows --------------------------------------------------------------------------------
    def _samples(self) -> np.ndarray:
        workspace = getattr(self.window, "workspace", None)
        samples = getattr(workspace, "samples", None) if workspace is not None else None
        if samples is None:
            samples = getattr(self.window, "samples", np.zeros(0, np.float32))
        return np.asarray(samples, np.float32)

    def export_range(self) -> range:
        """The loop region when a loop is on, else the whole clip."""
        total = int(self.window.num_frames)
        timeline = getattr(self.window, "timeline", None)
        region = timeline.loop() if timeline is not None and callable(getattr(timeline, "loop", None)) else None
        if region is not None:
            start, stop = max(0, region[0]), min(total, region[1])
            if stop > start:
                return range(start, stop)
        return range(total)

    def _options(self) -> ComposeOptions:
        crop_action = getattr(self.window, "crop_action", None)
        tabs, compare = getattr(self.window, "tabs", None), getattr(self.window, "compare_view", None)
        session = getattr(self.window, "session", None)
        title = getattr(session, "title", None) or (Path(session.path).stem if getattr(session, "path", None)
                                                    else None)
        return ComposeOptions(crop=bool(crop_action is not None and crop_action.isChecked()),
                              diff=bool(tabs is not None and compare is not None and tabs.currentWidget() is compare),
                              title=title)

    def _lanes(self) -> list[ExportLane]:
        lanes = []
        for slot in self.window.slots:
            reference = slot.lane_id == self.window.reference_id
            failure = slot.failure
            if slot.lane is None or failure:
                label = PanelLabel(slot.spec.name, float(slot.scale), (), reference)
                lanes.append(ExportLane(slot.lane_id, None, float(slot.scale), label, failure or "cannot run"))
                continue
            lanes.append(ExportLane(slot.lane_id, slot.lane, float(slot.scale),
                                    label_for_lane(slot.lane, slot.scale, reference)))
        return lanes

    # -- video --------------------------------------------------------------------------------------------------
    def choose_video(self) -> None:
        if not self._ready():
            return
        path = self._ask_path("Export video", "comparison.mp4", "MP4 video (*.mp4)")
        if path:
            self.export_video(path)

    def export_video(self, path: str | Path, force: bool | None = None) -> VideoExportJob | None:
        """Start exporting to ``path`` on a worker thread and show the progress dialog; returns the job (None when
        it could not start, with the reason shown). ``force=None`` asks before replacing an existing file."""
        if not self._ready():
            return None
        path = Path(path)
        if force is None:
            force = path.exists() or path.is_symlink()
            if force and not confirm_overwrite(self.window, path):
                return None
        try:
            check_mp4_path(path, force, "export")
            lanes = self._lanes()
            frames = self.export_range()
            if not frames:
                raise InputError("the session has no frames to export")
        except InputError as exc:
            self._show_error("Export video", str(exc))
            return None
        job = VideoExportJob(path, frames, lanes, self._options(), int(self.window.num_frames), self._samples(),
                             force=force, cache=getattr(self.window, "cache", None))
        self.job = job
        self.dialog = dialog = QProgressDialog(f"Exporting {len(frames)} frames to {path.name}…", "Cancel", 0,
                                               len(frames), self.window)
        dialog.setWindowTitle("Export video")
        dialog.setWindowModality(Qt.WindowModality.NonModal)  # the window keeps playing and answering
        dialog.setAutoClose(False)
        dialog.setAutoReset(False)
        dialog.setMinimumDuration(0)
        dialog.canceled.connect(job.cancel)
        dialog.setValue(0)
        dialog.show()
        self.video_action.setEnabled(False)
        job.thread = threading.Thread(target=self._work, args=(job,), name="video-export", daemon=True)
        job.thread.start()
        return job

    def _work(self, job: VideoExportJob) -> None:
        job.run(lambda done, total: self._bridge.progressed.emit(done, total))
        self._bridge.ended.emit(job)

    def _on_progress(self, done: int, total: int) -> None:
        if self.dialog is not None and self.job is not None and not self.job.cancelled:
            self.dialog.setValue(done)

    def _on_ended(self, job: VideoExportJob) -> None:
        if self.dialog is not None:
            self.dialog.canceled.disconnect()
            self.dialog.close()
            self.dialog.deleteLater()
            self.dialog = None
        self.video_action.setEnabled(True)
        if job is self.job:
            self.job = None
        if job.outcome == "failed":
            self._show_error("Export video", job.message)
        else:
            self.window.statusBar().showMessage(job.message, 15000)
        self.finished.emit(job)

    def cancel_and_wait(self, timeout: float = 30.0) -> None:
        """Stop an export in flight and wait for its thread (closing the window must not leave a .part file)."""
        job = self.job
        if job is not None and job.thread is not None:
            job.cancel()
            job.thread.join(timeout)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt's name
        # The window may still refuse to close (unsaved changes): decide once it has, on the next turn of the loop.
        if watched is self.window and event.type() == QEvent.Type.Close and self.job is not None:
            QTimer.singleShot(0, self._stop_if_closed)
        return False

    def _stop_if_closed(self) -> None:
        if not self.window.isVisible():
            self.cancel_and_wait()

    # -- picture ------------------------------------------------------------------------------------------------
    def choose_picture(self) -> None:
        path = self._ask_path("Export picture", "comparison.png", "PNG picture (*.png)")
        if path:
            self.export_picture(path)

    def _ask_path(self, title: str, default_name: str, file_filter: str) -> str | None:
        """A file name from the save dialog with the default's suffix added, or None when cancelled. The dialog does
        not confirm overwriting: export_video/export_picture ask, for dialog and callers alike."""
        path, _ = QFileDialog.getSaveFileName(self.window, title, default_name, file_filter,
                                              options=QFileDialog.Option.DontConfirmOverwrite)
        if not path:
            return None
        suffix = Path(default_name).suffix
        return path if path.lower().endswith(suffix) else path + suffix

    def export_picture(self, path: str | Path, force: bool | None = None) -> Path | None:
        """The window as it looks now, as a PNG at ``path``; None when it was not written (the reason is shown)."""
        path = Path(path)
        if force is None:
            force = path.exists() or path.is_symlink()
            if force and not confirm_overwrite(self.window, path):
                return None
        try:
            if path.suffix.lower() != ".png":
                raise InputError(f"export {path}: expected a file name ending in .png")
            safe_write.check_output_path(path, force, "export")
            data = QByteArray()
            buffer = QBuffer(data)
            buffer.open(QIODevice.OpenModeFlag.WriteOnly)
            if not self.window.grab().save(buffer, "PNG"):
                raise InputError(f"export {path}: the window could not be encoded as PNG")
            buffer.close()
            safe_write.write_bytes(path, bytes(data.data()), force, "export")
        except InputError as exc:
            self._show_error("Export picture", str(exc))
            return None
        self.window.statusBar().showMessage(f"Saved the window as {path}", 10000)
        return path

    # -- helpers ------------------------------------------------------------------------------------------------
    def _ready(self) -> bool:
        if self.job is not None:
            self._show_error("Export video", "An export is already running; wait for it or cancel it first.")
            return False
        if int(getattr(self.window, "num_frames", 0)) <= 0 or not list(self.window.slots):
            self._show_error("Export video", "Open a session first: there is nothing to export.")
            return False
        return True

    def _show_error(self, title: str, message: str) -> None:
        """A message box that does not block the event loop (open(), not exec()), kept for the tests to read."""
        box = QMessageBox(QMessageBox.Icon.Warning, title, message, QMessageBox.StandardButton.Ok, self.window)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, False)
        self.message_box = box
        box.open()


def install_export_actions(window: Any, menu: QMenu | None = None) -> ExportActions:
    """Add File ▸ Export video… and Export picture… to ``window`` (the MainWindow); the window keeps the object."""
    return ExportActions(window, menu)
