"""Small helpers shared by the headless subcommands."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import InputError


def add_json_output(parser: argparse.ArgumentParser, what: str) -> None:
    """The --json OUT.json / --force pair every reporting subcommand offers, worded the same everywhere."""
    parser.add_argument("--json", type=Path, metavar="OUT.json", help=f"also write the {what} as JSON")
    parser.add_argument("--force", action="store_true", help="replace OUT.json if it exists")


def write_atomically(path: Path, write: "callable[[Path], None]", force: bool) -> None:
    """Write through a temp file in the target folder and rename, refusing to replace a file unless forced.

    Users point --out and --json at folders full of their own dumps; an accidental overwrite would lose work.
    """
    path = Path(path).expanduser().resolve()
    if path.exists() and not force:
        raise InputError(f"{path} already exists; expected a new file name (or pass --force to replace it)")
    if not path.parent.is_dir():
        raise InputError(f"cannot write {path}: expected an existing folder, found none at {path.parent}")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: dict[str, Any], force: bool) -> None:
    def _write(tmp: Path) -> None:
        tmp.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")

    write_atomically(path, _write, force)


def write_npy(path: Path, array: np.ndarray, force: bool) -> None:
    if Path(path).suffix.lower() != ".npy":
        raise InputError(f"--out {path}: expected a file name ending in .npy")

    def _write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.save(handle, array)

    write_atomically(path, _write, force)
