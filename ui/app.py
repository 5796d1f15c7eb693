"""Starting the window: the QApplication, an exception hook that keeps the app up, the main window, the loop."""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path
from types import TracebackType
from typing import Callable

log = logging.getLogger("lipsync-compare")


def install_excepthook(show_dialog: bool = True,
                       dialog: Callable[[str, str], None] | None = None) -> None:
    """Log any unexpected exception and show it in a dialog with details, instead of letting Qt abort.

    PySide6 calls sys.excepthook for exceptions raised in slots; the default hook prints and the app carries on,
    but a person at the window would never see it. The dialog makes the failure visible and reportable.

    Every exception is logged, but one dialog at a time and one per distinct error: a bug in the 10 ms display
    tick raises on every tick, and the dialog's own event loop keeps ticking, so without that guard dialogs would
    nest without end. ``dialog(summary, details)`` replaces the message box (tests).
    """
    shown: set[str] = set()
    showing = False

    def message_box(summary: str, details: str) -> None:
        from PySide6.QtWidgets import QApplication, QMessageBox

        if QApplication.instance() is None or QApplication.platformName() in ("offscreen", "minimal"):
            return
        box = QMessageBox(QMessageBox.Icon.Critical, "Unexpected error",
                          f"{summary}\n\nThe window stays open; the details are in the log.")
        box.setDetailedText(details)
        box.exec()

    def hook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
        nonlocal showing
        details = "".join(traceback.format_exception(kind, error, tb))
        log.error("unexpected error:\n%s", details)
        if kind is KeyboardInterrupt:
            sys.__excepthook__(kind, error, tb)
            return
        summary = f"{kind.__name__}: {error}"
        if not show_dialog or showing or summary in shown:
            return
        shown.add(summary)
        showing = True
        try:
            from core.crash_log import write_crash_log  # the file a user attaches to a bug report, named below
            crash_log = write_crash_log((kind, error, tb), context="window")
            (dialog or message_box)(summary + (f"\n\nCrash log for a bug report: {crash_log}" if crash_log else ""), details)
        finally:
            showing = False

    sys.excepthook = hook


def start_gui(session_path: Path | None, settings=None):
    """Everything run_gui does before the event loop: app, theme, exception hook, window, session.

    Split out so tests can check the start-up without running (and quitting) the application's event loop.
    Returns the MainWindow; it is shown.
    """
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from ui.main_window import MainWindow
    from ui.theme import apply_dark_theme

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("lipsync-compare")
    app.setOrganizationName("lipsync-compare")
    apply_dark_theme(app)
    install_excepthook()
    window = MainWindow(settings if settings is not None else QSettings())
    window.show()
    if session_path is None:
        from pipeline.session import demo_session_path

        session_path = demo_session_path()
        if not session_path.exists():
            last = window.settings.value("lastSession", "")
            session_path = Path(last) if last and Path(last).exists() else None
            if session_path is None:
                window.statusBar().showMessage("The demo session is missing (resources/demo/demo.toml); "
                                               "open a session with Ctrl+O.")
    if session_path is not None:
        window.open_session(session_path)
    return window


def run_gui(session_path: Path | None) -> int:
    """Open the window on a session (the demo when None, else the last session if the demo is missing) and run."""
    from PySide6.QtWidgets import QApplication

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    window = start_gui(session_path)
    code = int(QApplication.instance().exec())
    window.shutdown()
    return code
