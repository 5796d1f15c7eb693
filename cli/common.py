"""Small helpers shared by the headless subcommands."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np

from core import safe_write
from core.errors import InputError


def add_json_output(parser: argparse.ArgumentParser, what: str) -> None:
    """The --json OUT.json / --force pair every reporting subcommand offers, worded the same everywhere."""
    parser.add_argument("--json", type=Path, metavar="OUT.json", help=f"also write the {what} as JSON")
    parser.add_argument("--force", action="store_true", help="replace OUT.json if it exists")


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, found {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, found {text!r}")
    return value


def add_time_limit(parser: argparse.ArgumentParser) -> None:
    """--time-limit SECONDS: stop the command (exit 2, with a message) when its models run longer than this."""
    parser.add_argument("--time-limit", type=positive_seconds, metavar="SECONDS",
                        help="stop with a message (exit 2) after this many seconds, e.g. for a model that never "
                        "finishes (default: no limit)")


def check_outputs(*outputs: tuple[Path | None, bool, str]) -> None:
    """Refuse unwritable output paths (existing without --force, folders, devices, links without --force) before
    any input is read: nobody should wait minutes to hear that --out cannot be written. ``(path, force, option)``."""
    for path, force, what in outputs:
        if path is not None:
            safe_write.check_output_path(path, force, what)


def write_json(path: Path, data: dict[str, Any], force: bool) -> None:
    safe_write.write_json(path, data, force, "--json")


def write_npy(path: Path, array: np.ndarray, force: bool) -> None:
    if Path(path).suffix.lower() != ".npy":
        raise InputError(f"--out {path}: expected a file name ending in .npy")

    def _write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.save(handle, array)

    safe_write.write_atomically(path, _write, force, "--out")
