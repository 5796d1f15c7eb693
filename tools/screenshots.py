"""Screenshots of the window for README.md and docs/UI.md, taken under a virtual X server (Xvfb).

    python tools/screenshots.py                      # the demo session
    python tools/screenshots.py --session my.toml    # another session
    python tools/screenshots.py --synthetic          # a generated session (espeak + tiny models), no demo needed
    python tools/screenshots.py --frame 150          # show this frame (the demo's widest-open mouth)

Without a DISPLAY the script re-runs itself under xvfb-run, so the pictures come from the real xcb platform plugin
(fonts, styles and antialiasing as users see them), not from the offscreen plugin the tests use. Settings go to a
temporary file, so taking screenshots never changes a user's remembered layout.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZE = (1600, 1000)


def _reexec_under_xvfb() -> int:
    if shutil.which("xvfb-run") is None:
        print("screenshots: no DISPLAY and no xvfb-run; install xvfb (tools/setup.sh dev)", file=sys.stderr)
        return 2
    command = ["xvfb-run", "-a", "-s", f"-screen 0 {SIZE[0] + 100}x{SIZE[1] + 100}x24",
               sys.executable, *sys.argv]
    env = dict(os.environ, LIPSYNC_SCREENSHOTS_CHILD="1", QT_QPA_PLATFORM="xcb")
    return subprocess.run(command, env=env).returncode


def _wait(app, condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        app.processEvents()
        if time.monotonic() > deadline:
            raise SystemExit(f"screenshots: timed out waiting for {what}")
        time.sleep(0.01)


def _settle(app, seconds: float = 0.4) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.01)


def _speech_frame(window) -> int:
    """A frame in the middle of loud speech, so the mouths are open in the picture."""
    import numpy as np

    from workspace.clock import FPS

    samples = window.samples
    hop = 16000 // FPS
    energy = np.array([float(np.abs(samples[i * hop:(i + 1) * hop]).mean()) for i in range(window.num_frames)])
    middle = energy[window.num_frames // 5: window.num_frames * 4 // 5]
    return int(np.argmax(middle)) + window.num_frames // 5


def take(session: Path, out: Path, frame: int | None = None) -> list[Path]:
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QApplication

    from ui.main_window import MainWindow
    from ui.theme import apply_dark_theme

    app = QApplication.instance() or QApplication(["lipsync-compare"])
    apply_dark_theme(app)
    settings_file = Path(tempfile.mkdtemp(prefix="lipsync-shots-")) / "settings.ini"
    window = MainWindow(QSettings(str(settings_file), QSettings.Format.IniFormat), prefer_audio=False)
    window.resize(*SIZE)
    window.show()
    if not window.open_session(session):
        raise SystemExit(f"screenshots: cannot open {session}: {getattr(window, 'last_complaint', '')}")
    _wait(app, lambda: all(s.raw_features is not None or s.failure for s in window.slots), 300, "features")
    frame = _speech_frame(window) if frame is None else max(0, min(window.num_frames - 1, frame))
    window.seek_frame(frame)

    def all_shown() -> bool:
        return all(s.failure or (s.view.shown_index == frame and not s.view.is_late) for s in window.slots)

    _wait(app, all_shown, 300, "frames")
    _settle(app)
    out.mkdir(parents=True, exist_ok=True)
    written = []

    def shoot(name: str) -> None:
        _settle(app)
        path = out / name
        window.grab().save(str(path))
        written.append(path)

    shoot("main.png")  # README.md shows this one
    others = [s for s in window.slots if s.lane_id != window.reference_id and not s.failure]
    if others:
        window.fit_lane(others[0].lane_id)
        _wait(app, all_shown, 300, "frames after fit")
        shoot("fitted.png")
        window.tabs.setCurrentWidget(window.compare_view)
        window.compare_view.mode.setCurrentText("Difference")
        window.compare_view.amount.setValue(8)
        shoot("difference.png")
        window.tabs.setCurrentIndex(0)
    window.crop_action.setChecked(True)
    shoot("crops.png")
    window.close()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--session", type=Path, help="session .toml (default: the demo)")
    parser.add_argument("--synthetic", action="store_true", help="generate a small session instead of the demo")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    parser.add_argument("--frame", type=int, help="frame to show (default: the loudest speech in the middle 60 %%)")
    args = parser.parse_args(argv)
    if not os.environ.get("DISPLAY") and not os.environ.get("LIPSYNC_SCREENSHOTS_CHILD"):
        return _reexec_under_xvfb()
    if args.synthetic:
        from tests.builders.ui_session import make_ui_session

        session = make_ui_session(Path(tempfile.mkdtemp(prefix="lipsync-shots-session-"))).path
    else:
        from pipeline.session import demo_session_path

        session = args.session or demo_session_path()
        if not session.exists():
            print(f"screenshots: {session} does not exist; build the demo or pass --session/--synthetic",
                  file=sys.stderr)
            return 2
    for path in take(session, args.out, args.frame):
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
