"""A crash log a user can attach to a bug report: the traceback plus the versions that matter, in the platform's log
folder (platformdirs: ~/.local/state/lipsync-compare/log on Linux, ~/Library/Logs/lipsync-compare on macOS).

Called by the CLI on an unexpected exception (exit 1) and by the window's exception hook; both name the file in
their message. Writing the log must never raise: a crash while reporting a crash would hide the first one.
"""

from __future__ import annotations

import datetime
import os
import platform
import sys
import traceback
from importlib import metadata
from pathlib import Path
from types import TracebackType

APP_NAME = "lipsync-compare"
# Distribution names whose versions change what the app computes or shows.
VERSIONED_PACKAGES = ("lipsync-compare", "numpy", "onnxruntime", "onnx", "coremltools", "torch", "PySide6-Essentials",
                      "PySide6", "pyqtgraph", "opencv-python-headless", "soundfile", "soxr")
LOG_DIR_ENV = "LIPSYNC_COMPARE_LOG_DIR"  # overrides the platform's folder (tests, locked-down machines)


def log_dir() -> Path:
    override = os.environ.get(LOG_DIR_ENV)
    if override:
        return Path(override)
    try:
        import platformdirs

        return Path(platformdirs.user_log_dir(APP_NAME, appauthor=False))
    except ImportError:  # the set-up installs platformdirs; a bare environment still gets a log
        return Path.home() / f".{APP_NAME}" / "log"


def versions() -> dict[str, str]:
    """'Python', the platform and every package of VERSIONED_PACKAGES that is installed, by name."""
    found = {"Python": sys.version.split()[0], "platform": platform.platform()}
    for name in VERSIONED_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def crash_report(exc_info: tuple[type[BaseException], BaseException, TracebackType | None], context: str = "") -> str:
    kind, value, tb = exc_info
    lines = [f"{APP_NAME} crash log, {datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}"]
    if context:
        lines.append(context)
    lines.append("")
    lines += [f"{name}: {version}" for name, version in versions().items()]
    lines.append("")
    lines.append("".join(traceback.format_exception(kind, value, tb)).rstrip())
    return "\n".join(lines) + "\n"


def write_crash_log(exc_info: tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None],
                    context: str = "") -> Path | None:
    """Write the report to a new file in :func:`log_dir` and return its path; None if it could not be written."""
    if exc_info[0] is None:
        return None
    try:
        text = crash_report(exc_info, context)  # type: ignore[arg-type]
        folder = log_dir()
        folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        path = folder / f"crash-{stamp}-{os.getpid()}.txt"
        with open(path, "x", encoding="utf-8", errors="backslashreplace") as handle:
            handle.write(text)
        return path
    except Exception:  # noqa: BLE001 - never let the crash log hide the crash
        return None
