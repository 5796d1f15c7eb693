"""`python app.py [SESSION] --exit-after-first-frame`: open the window, wait for every lane's first frame or its
error to be painted, exit 0. What the start-up benchmark (cli/bench.py) times, and a smoke test for packagers.

Only public facts of the window are read (its lane slots, each view's shown frame index, each slot's failure), so
the window can be restructured freely around it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

POLL_MS = 5
EMPTY_WINDOW_GRACE_S = 2.0  # a window with no lane (no session, or one that failed to open) has nothing to wait for


def lanes_settled(window: Any) -> tuple[int, int] | None:
    """(lanes painted, lanes failed) once every lane shows its first frame or its error; None while one is pending."""
    painted = failed = 0
    for slot in list(getattr(window, "slots", [])):
        if getattr(slot, "lane", None) is None or getattr(slot, "failure", None):
            failed += 1
        elif getattr(slot.view, "shown_index", None) is not None:
            painted += 1
        else:
            return None
    return painted, failed


def run_until_first_frames(session_path: Path | None, timeout_s: float = 600.0) -> int:
    """Start the window as `python app.py` does and quit once each lane has painted its first frame (or error).

    Exit code 0 when every lane settled, 1 when the time-out passed first. Prints one line to stderr with the time
    from this call to the last first frame.
    """
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from ui.app import start_gui

    started = time.perf_counter()
    window = start_gui(session_path)
    app = QApplication.instance()
    opened = time.perf_counter()
    outcome = {"code": 1}

    def check() -> None:
        now = time.perf_counter()
        settled = lanes_settled(window)
        empty = not list(getattr(window, "slots", []))
        if settled is not None and (not empty or now - opened > EMPTY_WINDOW_GRACE_S):
            app.processEvents()  # let the last picture reach the screen before leaving
            painted, failed = settled
            print(f"first frames: {painted} lane(s) painted, {failed} showing an error, "
                  f"{time.perf_counter() - started:.2f} s after the window was asked for", file=sys.stderr)
            outcome["code"] = 0
            app.quit()
        elif now - started > timeout_s:
            print(f"error: no first frame from every lane within {timeout_s:g} s", file=sys.stderr)
            app.quit()

    timer = QTimer()
    timer.timeout.connect(check)
    timer.start(POLL_MS)
    app.exec()
    timer.stop()
    window.shutdown()
    return outcome["code"]
