"""Small helpers shared by the headless subcommands."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from core import safe_write
from core.errors import InputError


def add_json_output(parser: argparse.ArgumentParser, what: str) -> None:
    """The --json OUT.json / --force pair every reporting subcommand offers, worded the same everywhere."""
    parser.add_argument("--json", type=Path, metavar="OUT.json", help=f"also write the {what} as JSON")
    parser.add_argument("--force", action="store_true", help="replace OUT.json if it exists")


def write_json(path: Path, data: dict[str, Any], force: bool) -> None:
    safe_write.write_json(path, data, force, "--json")


def write_npy(path: Path, array: np.ndarray, force: bool) -> None:
    if Path(path).suffix.lower() != ".npy":
        raise InputError(f"--out {path}: expected a file name ending in .npy")

    def _write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.save(handle, array)

    safe_write.write_atomically(path, _write, force, "--out")
