"""Argument parsing and dispatch for `python app.py` (and the `lipsync-compare` console script).

The exit codes are a contract scripts rely on: 0 ok, 2 usage or input error (one clear message on stderr), 1 an
unexpected failure (a traceback, because that is a bug of ours and the details help fix it).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from pathlib import Path

from core.errors import InputError

# Each module defines register(subparsers) and run(args) -> int. Missing modules are skipped so a partial install
# (for example without the Core ML tools) still runs the rest.
SUBCOMMAND_MODULES = ("cli.report", "cli.dump", "cli.inspect", "cli.diff_weights")
SUBCOMMANDS = ("report", "dump", "inspect", "diff-weights")


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
        if not argv or (argv[0] not in SUBCOMMANDS and not argv[0].startswith("-")):
            return _run_gui(argv)
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
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
    except Exception:  # noqa: BLE001 - the contract: unexpected failures exit 1 with details
        traceback.print_exc()
        print("error: unexpected failure (this is a bug in lipsync-compare; the details are above)", file=sys.stderr)
        return 1


def _run_gui(argv: list[str]) -> int:
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
    return int(run_gui(session_path) or 0)
