"""Argument parsing and dispatch for `python app.py` (and the `lipsync-compare` console script).

The exit codes are a contract scripts rely on: 0 ok, 2 usage or input error (one clear message on stderr), 1 an
unexpected failure (a traceback, because that is a bug of ours and the details help fix it).
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
import threading
import time
import traceback
from pathlib import Path

from core.errors import InputError

# Each module defines register(subparsers) and run(args) -> int. Missing modules are skipped so a partial install
# (for example without the Core ML tools) still runs the rest.
SUBCOMMAND_MODULES = ("cli.report", "cli.dump", "cli.inspect", "cli.diff_weights", "cli.render", "cli.bench")
SUBCOMMANDS = ("report", "dump", "inspect", "diff-weights", "render", "bench")
# `python app.py [SESSION] --exit-after-first-frame`: the window opens, paints every lane's first frame (or its error)
# and exits 0; what the start-up benchmark times.
EXIT_AFTER_FIRST_FRAME = "--exit-after-first-frame"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lipsync-compare",
        description=(
            "See, hear and measure one lip-sync pipeline on several inference backends. "
            "With no argument, opens the demo; with SESSION.toml, opens that session."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(sub)
    return parser


def run(argv: list[str]) -> int:
    """Run the command line; never lets an exception escape as anything but an exit code."""
    try:
        if EXIT_AFTER_FIRST_FRAME in argv and not (argv and argv[0] in SUBCOMMANDS):
            return _run_gui([a for a in argv if a != EXIT_AFTER_FIRST_FRAME], exit_after_first_frame=True)
        if not argv or (argv[0] not in SUBCOMMANDS and not argv[0].startswith("-")):
            return _run_gui(argv)
        parser = build_parser()
        args = parser.parse_args(join_negative_values(argv))
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        start_time_limit(getattr(args, "time_limit", None))
        return int(args.func(args) or 0)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except SystemExit as exc:  # argparse: 2 for usage errors, 0 for --help
        return int(exc.code) if isinstance(exc.code, int) else 2
    except ModuleNotFoundError as exc:
        message = missing_dependency_message(exc)
        if message is None:
            return _unexpected()
        print(f"error: {message}", file=sys.stderr)
        return 2
    except Exception:  # noqa: BLE001 - the contract: unexpected failures exit 1 with details
        return _unexpected()


def _unexpected() -> int:
    """Exit 1 with the traceback, and a crash log a user can attach to a bug report."""
    traceback.print_exc()
    from core.crash_log import write_crash_log

    log = write_crash_log(sys.exc_info(), context="command line: " + " ".join(sys.argv))
    where = f"; a crash log for the bug report is in {log}" if log else ""
    print(f"error: unexpected failure (this is a bug in lipsync-compare; the details are above{where})",
          file=sys.stderr)
    return 1


# Import names of the Python packages the app needs -> what pip calls them.
PIP_NAMES = {"soundfile": "soundfile", "soxr": "soxr", "sounddevice": "sounddevice", "onnx": "onnx",
             "onnxruntime": "onnxruntime", "coremltools": "coremltools", "cv2": "opencv-python-headless",
             "numpy": "numpy", "PySide6": "PySide6-Essentials", "pyqtgraph": "pyqtgraph", "tomli_w": "tomli-w",
             "platformdirs": "platformdirs", "torch": "torch", "av": "av"}


def missing_dependency_message(exc: ModuleNotFoundError) -> str | None:
    """One install message for a third-party package this Python lacks; None for our own modules (a bug)."""
    top = (exc.name or "").split(".")[0]
    if top not in PIP_NAMES:
        return None
    return (f"the Python package {PIP_NAMES[top]!r} is not installed for {sys.executable}; expected the set-up's "
            "environment: run `bash tools/run.sh` once, then `.venv/bin/lipsync-compare ...` (or "
            f"`{sys.executable} -m pip install {PIP_NAMES[top]}` into this Python)")


# `--frames -5:` : argparse takes a value starting with '-' for an option unless it looks like a number.
_VALUE_OPTIONS_WITH_NEGATIVES = ("--frames",)
_NEGATIVE_RANGE = re.compile(r"^-\d*:-?\d*$")


def join_negative_values(argv: list[str]) -> list[str]:
    """['--frames', '-5:'] -> ['--frames=-5:'], so a range from the end needs no '=' form."""
    joined: list[str] = []
    index = 0
    while index < len(argv):
        item = argv[index]
        if (item in _VALUE_OPTIONS_WITH_NEGATIVES and index + 1 < len(argv)
                and _NEGATIVE_RANGE.match(argv[index + 1])):
            joined.append(f"{item}={argv[index + 1]}")
            index += 2
            continue
        joined.append(item)
        index += 1
    return joined


TIME_LIMIT_GRACE_S = 10.0  # after asking the runtimes to stop: how long before the process is ended regardless


def start_time_limit(seconds: float | None) -> None:
    """After ``seconds``: stop the running models (onnxruntime's RunOptions.terminate), then, if the command has
    still not returned after a grace period (a runtime without a cancel hook), end the process with the message."""
    if seconds is None:
        return
    from core import limits

    message = (f"--time-limit {seconds:g} s reached: the command was stopped (a model that runs this long may "
               "never finish, for example a Loop without an end; raise --time-limit if it is just slow)")

    def _expire() -> None:
        limits.expire(message)
        time.sleep(TIME_LIMIT_GRACE_S)
        print(f"error: {message}", file=sys.stderr, flush=True)
        os._exit(2)

    timer = threading.Timer(seconds, _expire)
    timer.daemon = True
    timer.start()


def _run_gui(argv: list[str], exit_after_first_frame: bool = False) -> int:
    if len(argv) > 1:
        raise InputError(
            f"expected at most one session file, found {len(argv)} arguments: {' '.join(argv)} "
            f"(subcommands: {', '.join(SUBCOMMANDS)})"
        )
    session_path = Path(argv[0]) if argv else None
    if session_path is not None and not session_path.exists():
        raise InputError(f"session file not found: {session_path} (expected a .toml session or a subcommand: "
                         f"{', '.join(SUBCOMMANDS)})")
    try:
        from ui.app import run_gui
    except ModuleNotFoundError as exc:
        if exc.name and (exc.name.startswith("ui") or exc.name.startswith("PySide6") or exc.name == "pyqtgraph"):
            raise InputError(
                f"the window cannot start: {exc.name} is not available ({exc}). "
                "Run `bash tools/run.sh` to set up, or use the headless subcommands: " + ", ".join(SUBCOMMANDS)
            ) from None
        raise
    if exit_after_first_frame:
        from ui.first_frame import run_until_first_frames

        return run_until_first_frames(session_path)
    return int(run_gui(session_path) or 0)
