"""The one way lipsync-compare writes a user's file: checked first, written atomically, never through a link.

Users point --out, --json, exports and "Save" at folders full of their own dumps and models. A write must never
replace a file unless asked (``force``), never follow a symlink into its target, never turn a device or a folder
into a regular file, keep an existing file's permissions, and leave nothing partial behind when the disk fills or
the user cancels. Check the path with :func:`check_output_path` before minutes of work, then write inside
:func:`atomic_output`.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from core.errors import InputError

_KIND_NAMES = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def describe_kind(mode: int) -> str:
    """'a folder', 'a FIFO (named pipe)', ... or 'a regular file': what a path is, for messages."""
    for test, name in _KIND_NAMES:
        if test(mode):
            return name
    return "a regular file"


def _absolute(path: str | os.PathLike[str]) -> Path:
    # Resolve the folder, not the file: a symlink named as the output is judged (and replaced) as a link.
    path = Path(path).expanduser()
    return Path(os.path.abspath(path.parent)).resolve() / path.name


def check_output_path(path: str | os.PathLike[str], force: bool, what: str = "output") -> Path:
    """The absolute path to write, or an InputError saying why it cannot be written. Call it before the work.

    A symlink is never written through: with ``force`` the link itself is replaced by a regular file, its target
    left untouched. Folders, devices, FIFOs and sockets are refused even with ``force``.
    """
    target = _absolute(path)
    if not target.name:
        raise InputError(f"{what} {path}: expected a file name, found a folder path")
    try:
        info = target.lstat()
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise InputError(f"{what} {target}: cannot be checked ({exc.strerror})") from None
    if info is not None:
        if stat.S_ISLNK(info.st_mode):
            if not force:
                raise InputError(f"{what} {target} already exists (a symbolic link); expected a new file name "
                                 "(or --force to replace the link itself, never its target)")
        elif not stat.S_ISREG(info.st_mode):
            raise InputError(f"{what} {target}: expected a regular file name, found {describe_kind(info.st_mode)}")
        elif not force:
            raise InputError(f"{what} {target} already exists; expected a new file name (or --force to replace it)")
    parent = target.parent
    if not parent.is_dir():
        raise InputError(f"{what} {target}: expected an existing folder, found none at {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{what} {target}: the folder {parent} is not writable")
    return target


def _new_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_output(path: str | os.PathLike[str], force: bool, what: str = "output") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    The new file gets the replaced file's permissions, or the umask's for a new file (mkstemp's 0600 would hide a
    report from the rest of a team). On any failure, or a cancel, the temporary file is removed and the old file is
    left intact; a full disk or a write error becomes an InputError naming the file.
    """
    target = check_output_path(path, force, what)
    try:
        existing = target.lstat()
        mode = stat.S_IMODE(existing.st_mode) if stat.S_ISREG(existing.st_mode) else _new_file_mode()
    except FileNotFoundError:
        mode = _new_file_mode()
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    except OSError as exc:
        raise InputError(f"{what} {target}: cannot create a file in {target.parent} ({exc.strerror})") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise InputError(f"{what} {target}: the disk is full ({exc.strerror}); nothing was written and any "
                             "earlier file is intact") from None
        raise InputError(f"{what} {target}: writing failed ({exc.strerror or exc}); nothing was written") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomically(path: str | os.PathLike[str], write: Callable[[Path], None], force: bool,
                     what: str = "output") -> Path:
    """Run ``write(tmp)`` inside :func:`atomic_output`; return the path written."""
    with atomic_output(path, force, what) as tmp:
        write(tmp)
    return _absolute(path)


def write_bytes(path: str | os.PathLike[str], data: bytes, force: bool, what: str = "output") -> Path:
    return write_atomically(path, lambda tmp: tmp.write_bytes(data), force, what)


def write_text(path: str | os.PathLike[str], text: str, force: bool, what: str = "output") -> Path:
    return write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), force, what)


def write_json(path: str | os.PathLike[str], data: Any, force: bool, what: str = "--json") -> Path:
    """JSON with NaN/Inf refused by the encoder: callers turn non-finite numbers into null first."""
    return write_text(path, json.dumps(data, indent=2, allow_nan=False) + "\n", force, what)
