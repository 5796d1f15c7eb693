"""File actions of the comparison window: open a session, an audio file or an avatar folder (menu or drop),
save the session, recent sessions, and input problems shown as messages instead of crashes.

A mixin of MainWindow: the dialogs and messages are here, the changes themselves are the workspace's
(workspace/model.py). It relies on the window's ``settings``, ``workspace``, ``open_session``, ``add_lane``,
``replace_lane_source`` and ``statusBar``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from core.errors import InputError
from core.filekinds import AUDIO_FORMATS, accepted_suffixes
from PySide6.QtWidgets import QApplication, QFileDialog, QMessageBox

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = set(AUDIO_FORMATS)
ENCODER_SUFFIXES = set(accepted_suffixes("encoder"))
MAX_RECENT = 8
# An .mlpackage is a folder, so file dialogs open it instead of choosing it: they offer its Manifest.json instead.
MODEL_FILTER = "Models and dumps (*.onnx *.mlmodel *.pth *.pt *.npy *.npz *.bin Manifest.json);;All files (*)"


def model_path(chosen: str | Path) -> Path:
    """The model a dialog choice means: X.mlpackage/Manifest.json stands for the package X.mlpackage."""
    chosen = Path(chosen)
    if chosen.name == "Manifest.json" and chosen.parent.suffix.lower() == ".mlpackage":
        return chosen.parent
    return chosen


class SessionFilesMixin:
    """Menu and drag-and-drop file handling for MainWindow."""

    def choose_session(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open session", self._last_dir(), "Sessions (*.toml)")
        if path:
            self.open_session(path)

    def choose_audio(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open audio", self._last_dir(),
                                              "Audio (" + " ".join(f"*{s}" for s in sorted(AUDIO_SUFFIXES)) + ")")
        if path:
            self.replace_session_input("audio", Path(path))

    def choose_avatar(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open avatar folder", self._last_dir())
        if path:
            self.replace_session_input("avatar", Path(path))

    def choose_new_lane(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Encoder model or feature dump for the new lane (for an "
                                              ".mlpackage, choose its Manifest.json)", self._last_dir(), MODEL_FILTER)
        if path:
            self.add_lane_from(model_path(path))

    def add_lane_from(self, path: Path) -> None:
        """A new lane with this encoder (or feature dump) and the generator of the first lane that has one."""
        self.add_lane(self.workspace.spec_for_new_lane(Path(path)))

    def choose_replacement(self, lane_id: int, role: str) -> None:
        path, _ = QFileDialog.getOpenFileName(self, f"Replace the {role} (for an .mlpackage, choose its Manifest.json)",
                                              self._last_dir(), MODEL_FILTER)
        if path:
            self.replace_lane_source(lane_id, role, str(model_path(path)))

    def replace_session_input(self, key: str, path: Path) -> None:
        """Reopen the session with another audio file or avatar folder; the lanes and scales stay."""
        if self.workspace.session is None:
            self._complain("No session", "Open a session first; then an audio file or avatar folder can replace its own.")
            return
        try:
            self.workspace.replace_input(key, path)
        except InputError as error:
            self._complain(f"Cannot open {path.name}", str(error))

    def save_session(self, path: str | Path) -> bool:
        """Write the session with the lanes as they are now (order, sources and scales), then the lanes the
        window did not show (beyond the fourth), so saving never drops a lane. False (with a message) when the
        file cannot be written: a full disk or a read-only folder is the user's to fix, not a crash."""
        if self.workspace.session is None:
            raise RuntimeError("no session to save")
        try:
            written = self.workspace.save(Path(path))
        except InputError as error:  # core.safe_write's checks: a missing folder, a link, not a regular file
            self._complain(f"Cannot save {Path(path).name}", str(error))
            return False
        except OSError as error:
            self._complain(f"Cannot save {Path(path).name}",
                           f"{path}: expected a writable file in an existing folder, found {error.strerror or error}")
            return False
        self._remember_recent(written)
        self.statusBar().showMessage(f"Saved {path}", 4000)
        return True

    def save_current_session(self) -> None:
        """Save in place, except the shipped demo (and unsaved sessions), which ask where: saving over
        resources/demo/demo.toml would change the demo for good and drop its explanatory comments."""
        from pipeline.session import demo_session_path

        session = self.workspace.session
        path = session.path if session is not None else None
        if path is not None and Path(path).resolve() != demo_session_path().resolve():
            self.save_session(path)
        else:
            self.choose_save_path()

    def choose_save_path(self) -> None:
        if self.workspace.session is None:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save session", self._last_dir(), "Sessions (*.toml)")
        if path:
            self.save_session(path)

    def _last_dir(self) -> str:
        recent = self._recent()
        return str(Path(recent[0]).parent) if recent else str(Path.home())

    def _recent(self) -> list[str]:
        value = self.settings.value("recentSessions", [])
        if isinstance(value, str):
            value = [value]
        return [str(v) for v in (value or [])]

    def _remember_recent(self, path: Path) -> None:
        entry = str(Path(path).resolve())
        recent = [entry] + [p for p in self._recent() if p != entry]
        self.settings.setValue("recentSessions", recent[:MAX_RECENT])
        self.settings.setValue("lastSession", entry)
        self._refresh_recent_menu()

    def _refresh_recent_menu(self) -> None:
        self.recent_menu.clear()
        recent = self._recent()
        for path in recent:
            self.recent_menu.addAction(path, lambda p=path: self.open_session(p))
        self.recent_menu.setEnabled(bool(recent))

    def dragEnterEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        # Only files: a link dragged from a browser has no local path (toLocalFile() is "", which is the
        # current folder as a Path, and would have been opened as an avatar folder).
        if any(url.isLocalFile() for url in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802
        local = [url for url in event.mimeData().urls() if url.isLocalFile()]
        if local:
            self.open_dropped(Path(local[0].toLocalFile()))

    def open_dropped(self, path: Path) -> None:
        """A session opens; a model or dump adds a lane; an audio file or a folder replaces the audio or avatar."""
        path = model_path(path)
        if path.suffix.lower() == ".toml":
            self.open_session(path)
        elif path.suffix.lower() in ENCODER_SUFFIXES:
            if self.workspace.session is None:
                self._complain("No session", "Open a session first; then a dropped model adds a lane to it.")
            else:
                self.add_lane_from(path)
        elif path.is_dir():
            self.replace_session_input("avatar", path)
        elif path.suffix.lower() in AUDIO_SUFFIXES:
            self.replace_session_input("audio", path)
        else:
            self._complain("Cannot open this file",
                           f"{path.name}: expected a session (.toml), an audio file "
                           f"({', '.join(sorted(AUDIO_SUFFIXES))}), a model or dump for a new lane "
                           f"({', '.join(sorted(ENCODER_SUFFIXES))}) or an avatar folder")

    def _complain(self, title: str, message: str) -> None:
        """Input problems go in a message box (not a crash); offscreen tests read last_complaint instead."""
        log.warning("%s: %s", title, message)
        self.last_complaint = f"{title}: {message}"
        self.statusBar().showMessage(self.last_complaint, 10000)
        if QApplication.platformName() not in ("offscreen", "minimal"):
            QMessageBox.warning(self, title, message)
