"""The one table that says what a path is: a model of some runtime, or a dump of some pipeline stage.

Sessions, the CLI, the window's file dialogs and drops all ask here, so a suffix accepted in one place is accepted
everywhere (before this table there were five copies that disagreed).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from core.errors import InputError

# Model files by runtime. A .mlpackage is a folder.
MODEL_FORMATS: dict[str, str] = {".onnx": "onnx", ".mlpackage": "coreml", ".mlmodel": "coreml", ".pth": "torch",
                                 ".pt": "torch"}
# Dumps another program may hand us, by the stage (session key) they stand in for.
DUMP_FORMATS: dict[str, tuple[str, ...]] = {
    "mel": (".npy", ".npz", ".bin"),
    "encoder": (".npy", ".npz", ".bin"),  # features [N,512] or [N+2,512]
    "tensors": (".npy", ".npz"),  # audio tensors [F,32,16,16]
    "inputs": (".npy", ".npz"),  # generator inputs [F,6,S,S]
    "generator": (".npy", ".npz"),  # raw outputs [F,3,S,S] or final frames [F,H,W,3]
}
AUDIO_FORMATS: tuple[str, ...] = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
SESSION_FORMATS: tuple[str, ...] = (".toml",)
# Roles that may name a model file (the others take dumps only).
MODEL_ROLES = ("encoder", "generator")


def accepted_suffixes(role: str) -> tuple[str, ...]:
    """Every suffix a lane's ``role`` key accepts, models first."""
    models = tuple(MODEL_FORMATS) if role in MODEL_ROLES else ()
    return models + tuple(s for s in DUMP_FORMATS.get(role, ()) if s not in models)


def suffix_kind(path: str | Path, role: str) -> str | None:
    """'onnx', 'coreml', 'torch' or 'dump' by suffix alone (the path need not exist); None when ``role`` refuses it."""
    suffix = Path(path).suffix.lower()
    if role in MODEL_ROLES and suffix in MODEL_FORMATS:
        return MODEL_FORMATS[suffix]
    if suffix in DUMP_FORMATS.get(role, ()):
        return "dump"
    return None


def file_kind(path: str | Path, role: str) -> str:
    """'onnx', 'coreml', 'torch' or 'dump' for an existing path; anything else is an InputError naming the path."""
    path = Path(path)
    suffix = path.suffix.lower()  # of the name given: a link's target may have none (the Hugging Face cache)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise InputError(f"{role} not found: {path}") from None
    except (OSError, ValueError) as exc:  # a link loop, a NUL byte, a folder above that cannot be read
        raise InputError(f"{role} {path}: expected a model or dump file, found a path that cannot be opened "
                         f"({getattr(exc, 'strerror', None) or exc})") from None
    if stat.S_ISDIR(mode) and suffix != ".mlpackage":
        raise InputError(f"{role} {path}: expected a model file or an .mlpackage folder, found a folder")
    if not stat.S_ISDIR(mode) and not stat.S_ISREG(mode):
        from core.safe_write import describe_kind

        raise InputError(f"{role} {path}: expected a model or dump file, found {describe_kind(mode)}")
    kind = suffix_kind(path, role)
    if kind is None:
        accepted = ", ".join(accepted_suffixes(role))
        raise InputError(f"{role} {path}: expected one of {accepted}, found {suffix or 'a file without a suffix'}")
    return kind
