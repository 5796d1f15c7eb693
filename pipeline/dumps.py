"""Feature and mel dumps written by other programs (a Go or Swift port, an earlier run), read as lane sources.

A dump replaces a stage of the pipeline, which is how a user compares a real port against the reference: the port
writes its encoder output (aud_ave.npy / aud_ave.bin) or its mel, and the lane shows exactly those numbers. Every
guess made while reading (padding, orientation, dtype conversion) is written into the provenance, so a wrong guess
is visible instead of silent.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core import limits
from core.errors import InputError
from pipeline.features import pad_features

from core.constants import FEATURE_WIDTH, MEL_BANDS
from core.interfaces import Provenance

FEATURE_KEYS = ("features", "aud", "aud_ave", "arr_0")  # .npz keys that hold features in files seen so far
MEL_KEYS = ("mel", "mels", "melspectrogram", "arr_0")
FEATURE_ROW_BYTES = FEATURE_WIDTH * 4  # raw .bin: 512 little-endian float32 per row
DUMP_SUFFIXES = (".npy", ".npz", ".bin")

PRECISION_OF_DTYPE = {"float32": "fp32", "float16": "fp16", "float64": "fp64"}


@dataclass
class _RawArray:
    """An array as read from disk plus notes on how it was read, before any reshaping."""

    array: np.ndarray
    notes: dict[str, str] = field(default_factory=dict)


def _check_npy_header(handle: Any, data_bytes: int, what: str) -> None:
    """Read a .npy header and refuse, before numpy allocates, an array larger than the data that follows it (a
    truncated file, or a 128-byte file declaring 1e11 rows) or larger than core/limits.py allows."""
    try:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            shape, _, dtype = np.lib.format._read_array_header(handle, version)
    except Exception as exc:  # noqa: BLE001 - numpy parses the header text with ast/tokenize: any of their errors
        raise InputError(f"{what}: not a NumPy .npy file: expected a .npy header, found one that cannot be read "
                         f"({type(exc).__name__}: {str(exc)[:120]})") from None
    if dtype.hasobject:
        raise InputError(f"{what}: expected an array of numbers, found dtype {dtype} (Python objects are not loaded)")
    size = limits.check_array(shape, dtype.itemsize, what)
    available = data_bytes - handle.tell()
    if size > available:
        raise InputError(f"{what}: its header declares {list(shape)} {dtype} ({size} bytes), found {available} bytes "
                         "of data after the header (a truncated or damaged file)")


def _read_npy(path: Path, what: str) -> np.ndarray:
    try:
        with open(path, "rb") as handle:
            _check_npy_header(handle, os.fstat(handle.fileno()).st_size, f"{what} {path}")
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as exc:
        raise InputError(f"{what} {path}: not a NumPy .npy file ({exc})") from exc


def _check_npz_members(path: Path, what: str) -> None:
    """Every member of an .npz inflates to at most the array limit, and each .npy member's header fits its data."""
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            limits.check_size(info.file_size, limits.MAX_ARRAY_BYTES, f"{what} {path}: member {info.filename}")
            if info.filename.endswith(".npy"):
                with archive.open(info) as member:
                    _check_npy_header(member, info.file_size, f"{what} {path}: member {info.filename}")


def _read_npz(path: Path, keys: tuple[str, ...], what: str) -> _RawArray:
    """One array, or the one array under a known key; anything ambiguous is the user's call, not ours."""
    try:
        _check_npz_members(path, what)
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            if len(names) == 1:
                chosen = names[0]
            else:
                known = [k for k in keys if k in names]
                if len(known) != 1:
                    raise InputError(
                        f"{what} {path}: expected one array or one of the keys {', '.join(keys)}, found keys "
                        f"{', '.join(names) if names else '(none)'}"
                    )
                chosen = known[0]
            array = archive[chosen]
    except (ValueError, OSError, EOFError, SyntaxError, TypeError, NotImplementedError, zipfile.BadZipFile,
            zipfile.LargeZipFile, RuntimeError) as exc:  # RuntimeError: an encrypted member
        raise InputError(f"{what} {path}: not a NumPy .npz archive ({exc})") from exc
    return _RawArray(array, {"npz key": chosen})


def _read_raw_float32(path: Path, row_values: int, what: str) -> _RawArray:
    size = path.stat().st_size
    limits.check_size(size, limits.MAX_ARRAY_BYTES, f"{what} {path}")
    row_bytes = row_values * 4
    if size == 0 or size % row_bytes:
        raise InputError(
            f"{what} {path}: expected raw little-endian float32 with {row_values} values per row, i.e. a size that "
            f"is a non-zero multiple of {row_bytes} bytes; found {size} bytes"
        )
    array = np.fromfile(path, dtype="<f4").reshape(-1, row_values)
    return _RawArray(array, {"format": f"raw little-endian float32, {row_values} per row, no header"})


def _read_any(path: Path, keys: tuple[str, ...], row_values: int, what: str) -> _RawArray:
    """Dispatch on the suffix; missing files and unknown suffixes are InputErrors naming what is accepted."""
    if not path.exists() and not path.is_symlink():
        raise InputError(f"{what} not found: {path}")
    limits.input_file(path, what, "a .npy, .npz or .bin file")  # a FIFO would block, a device stream forever
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return _RawArray(_read_npy(path, what), {"format": "npy"})
    if suffix == ".npz":
        return _read_npz(path, keys, what)
    if suffix == ".bin":
        return _read_raw_float32(path, row_values, what)
    raise InputError(f"{what} {path}: expected a .npy, .npz or .bin file, found {suffix or 'no suffix'}")


def _to_float32(raw: _RawArray, what: str, path: Path) -> tuple[np.ndarray, str]:
    """Convert numbers to float32 with a note; non-numeric arrays cannot be features."""
    array = raw.array
    source_dtype = str(array.dtype)
    if array.dtype.kind not in "fiu":
        raise InputError(f"{what} {path}: expected float32 numbers, found dtype {source_dtype}")
    if array.dtype != np.float32:
        raw.notes["converted"] = f"{source_dtype} -> float32"
        array = array.astype(np.float32)
    return array, PRECISION_OF_DTYPE.get(source_dtype, "unknown")


def _count_non_finite(array: np.ndarray, notes: dict[str, str]) -> None:
    """NaN and Inf are data too (a broken port writes them): keep them, but count them where the user looks."""
    notes["nan"] = str(int(np.isnan(array).sum()))
    notes["inf"] = str(int(np.isinf(array).sum()))


def _drop_leading_ones(array: np.ndarray) -> np.ndarray:
    while array.ndim > 2 and array.shape[0] == 1:
        array = array[0]
    return array


class FeatureDump:
    """Encoder features from a file: `.features` is [N+2,512] float32, ready for the audio tensor stage.

    With `num_windows` (N, known from the audio) a dump of N rows is padded and one of N+2 rows is used as is; any
    other count is an error. Without it the rows are used as they are, and that assumption is recorded.
    """

    def __init__(self, path: str | Path, num_windows: int | None = None) -> None:
        self.path = Path(path)
        what = "feature dump"
        raw = _read_any(self.path, FEATURE_KEYS, FEATURE_WIDTH, what)
        array, precision = _to_float32(raw, what, self.path)
        array = _drop_leading_ones(array)
        if array.ndim != 2 or array.shape[1] != FEATURE_WIDTH or array.shape[0] == 0:
            raise InputError(
                f"{what} {self.path}: expected features [N,{FEATURE_WIDTH}] or [N+2,{FEATURE_WIDTH}], "
                f"found {list(raw.array.shape)}"
            )
        rows = array.shape[0]
        notes = raw.notes
        notes["rows in file"] = str(rows)
        if num_windows is None:
            notes["padding"] = f"assumed already padded: {rows} rows used as N+2 (N = {rows - 2})"
        elif rows == num_windows:
            array = pad_features(array)
            notes["padding"] = f"{rows} rows = N: padded to N+2 by repeating the first and last row"
        elif rows == num_windows + 2:
            notes["padding"] = f"{rows} rows = N+2: used as is"
        else:
            raise InputError(
                f"{what} {self.path}: expected {num_windows} rows (N, one per window) or {num_windows + 2} rows "
                f"(N+2, padded) for this audio, found {rows} rows"
            )
        _count_non_finite(array, notes)
        self.features: np.ndarray = np.ascontiguousarray(array, dtype=np.float32)
        self.provenance = Provenance("dump", "", "file", precision, str(self.path), notes)


def load_feature_dump(path: str | Path, num_windows: int | None = None) -> np.ndarray:
    """The padded features [N+2,512] float32 of a dump (see FeatureDump for the rules)."""
    return FeatureDump(path, num_windows).features


@dataclass(frozen=True)
class MelDump:
    """A mel spectrogram from a file, [T,80] float32, with how it was read."""

    mel: np.ndarray
    provenance: Provenance


def open_mel_dump(path: str | Path) -> MelDump:
    """Read a mel dump as [T,80]: [T,80], [80,T] and [1,80,T] are accepted; T = 80 is ambiguous and refused.

    A raw .bin is read as rows of 80 float32 (time-major), the layout a C-like port writes from a [T,80] buffer.
    """
    path = Path(path)
    what = "mel dump"
    raw = _read_any(path, MEL_KEYS, MEL_BANDS, what)
    array, precision = _to_float32(raw, what, path)
    found = list(raw.array.shape)
    array = _drop_leading_ones(array)
    if array.ndim != 2 or MEL_BANDS not in array.shape:
        raise InputError(f"{what} {path}: expected a mel [T,{MEL_BANDS}] or [{MEL_BANDS},T], found {found}")
    if array.shape == (MEL_BANDS, MEL_BANDS):
        raise InputError(
            f"{what} {path}: found {found}, which could be [T,80] or [80,T]; expected a mel whose frame count is not "
            f"80 (save it as [T,80] with a different length, or as .bin rows of 80)"
        )
    notes = raw.notes
    if array.shape[1] == MEL_BANDS:
        notes["orientation"] = f"{found} read as [T,80]"
    else:
        array = array.T
        notes["orientation"] = f"{found} read as [80,T] and transposed"
    _count_non_finite(array, notes)
    mel = np.ascontiguousarray(array, dtype=np.float32)
    return MelDump(mel, Provenance("dump", "", "file", precision, str(path), notes))


def load_mel_dump(path: str | Path) -> np.ndarray:
    """The mel of a dump as [T,80] float32 (see open_mel_dump for the accepted layouts)."""
    return open_mel_dump(path).mel


OUTPUT_KEYS = ("outputs", "crops", "frames", "arr_0")
TENSOR_KEYS = ("tensors", "audio", "audio_tensors", "arr_0")
INPUT_KEYS = ("inputs", "input", "generator_inputs", "arr_0")
# A dump that covers only some output frames is an .npz holding `frames` (the output frame indices, [F] integers)
# and `data` (the arrays, [F, ...]): a port that renders a few frames for a check should not have to write all.
PARTIAL_KEYS = ("frames", "data")


def _read_frame_dump(path: Path, keys: tuple[str, ...], what: str) -> tuple[_RawArray, np.ndarray | None]:
    """A per-frame dump as (array [F, ...], the frame index of each row or None for rows 0..F-1)."""
    if path.suffix.lower() not in (".npy", ".npz"):
        raise InputError(f"{what} {path}: expected a .npy or .npz file, found {path.suffix or 'no suffix'}")
    if not path.exists():
        raise InputError(f"{what} not found: {path}")
    if path.suffix.lower() == ".npz":
        limits.input_file(path, what, "a .npz file")  # a FIFO would block, a device stream forever
        try:
            _check_npz_members(path, what)  # a zip bomb or a header declaring 1e11 rows, before numpy allocates
            with np.load(path, allow_pickle=False) as archive:
                names = set(archive.files)
                if set(PARTIAL_KEYS) <= names:
                    frames, data = archive["frames"], archive["data"]
                else:
                    frames = data = None
        except (ValueError, OSError, EOFError, SyntaxError, TypeError, NotImplementedError, RuntimeError,
                zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
            raise InputError(f"{what} {path}: not a NumPy .npz archive ({exc})") from exc
        if data is not None:
            assert frames is not None
            frames = np.asarray(frames)
            if frames.ndim != 1 or frames.dtype.kind not in "iu" or frames.shape[0] != data.shape[0]:
                raise InputError(
                    f"{what} {path}: expected `frames` to be [F] integers, one per row of `data` {list(data.shape)}, "
                    f"found {frames.dtype} {list(frames.shape)}"
                )
            if frames.size and (frames.min() < 0 or len(set(frames.tolist())) != frames.size):
                raise InputError(f"{what} {path}: expected distinct output frame indices >= 0 in `frames`, found "
                                 f"{frames.tolist()[:12]}")
            return _RawArray(data, {"frames": f"{frames.size} frames given ({_span(frames)})"}), frames.astype(np.int64)
    return _read_any(path, keys, 1, what), None


def _span(frames: np.ndarray) -> str:
    return "none" if frames.size == 0 else f"{int(frames.min())}..{int(frames.max())}"


class _FrameIndexed:
    """Rows of a per-frame dump looked up by output frame, whether the dump covers every frame or only some."""

    path: Path
    array: np.ndarray
    frame_indices: np.ndarray | None
    what: str

    def _index_map(self) -> dict[int, int]:
        if self.frame_indices is None:
            return {i: i for i in range(int(self.array.shape[0]))}
        return {int(f): row for row, f in enumerate(self.frame_indices)}

    @property
    def num_frames(self) -> int:
        """Rows in the dump (for a partial dump, the number of frames it covers, not the clip's frame count)."""
        return int(self.array.shape[0])

    @property
    def frames(self) -> list[int]:
        """The output frames this dump covers, ascending."""
        return sorted(self._index_map())

    def covers(self, i: int) -> bool:
        return int(i) in self._index_map()

    def item(self, i: int) -> np.ndarray:
        row = self._index_map().get(int(i))
        if row is None:
            covered = self.frames
            span = f"frames {covered[0]}..{covered[-1]} ({len(covered)} of them)" if covered else "no frame"
            raise InputError(f"{self.what} {self.path.name}: holds {span}, frame {i} was asked for")
        return self.array[row]


class OutputDump(_FrameIndexed):
    """Generator results written by another program, standing in for a lane's generator.

    Two layouts, told apart by shape and dtype: raw generator outputs [F,3,S,S] (float, in [0,1], what `dump --stage
    crops` writes) are pasted back like a model's output; final frames [F,H,W,3] uint8 BGR (`dump --stage frames`, or
    a Swift/Go port's rendered video frames) are shown as they are. Row i is output frame i, unless the dump is an
    .npz with `frames` + `data` (some frames only). A dump cannot follow the scale slider: its provenance says so.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.what = what = "generator output dump"
        raw, self.frame_indices = _read_frame_dump(self.path, OUTPUT_KEYS, what)
        array = raw.array
        found = list(array.shape)
        notes = raw.notes
        if array.ndim == 4 and array.shape[1] == 3 and array.shape[2] == array.shape[3] and array.dtype.kind == "f":
            self.kind = "outputs"
            self.size: int | None = int(array.shape[2])
            precision = PRECISION_OF_DTYPE.get(str(array.dtype), "unknown")
            array = np.ascontiguousarray(array, dtype=np.float32)
            _count_non_finite(array, notes)
        elif array.ndim == 4 and array.shape[3] == 3 and array.dtype == np.uint8:
            self.kind = "frames"
            self.size = None
            precision = "uint8"
        else:
            raise InputError(
                f"{what} {self.path}: expected raw generator outputs [F,3,S,S] float32 or final frames [F,H,W,3] "
                f"uint8 (BGR), found {found} {array.dtype}"
            )
        notes["layout"] = f"{self.kind} {found}; fixed: the scale slider does not change a dump"
        self.array = array
        self.provenance = Provenance("dump", "", "file", precision, str(self.path), notes)


class StageDump(_FrameIndexed):
    """Audio tensors [F,32,16,16] (`tensors`) or generator inputs [F,6,S,S] (`inputs`) from another program.

    The stages after it run from these arrays, so a port's tensor assembly or crop can be checked on its own. Rows
    are output frames 0..F-1, or the frames an .npz's `frames` names. Numbers are converted to float32 with a note.
    """

    def __init__(self, path: str | Path, stage: str) -> None:
        if stage not in ("tensors", "inputs"):
            raise ValueError(f"stage must be 'tensors' or 'inputs', got {stage!r}")
        self.path = Path(path)
        self.stage = stage
        self.what = what = "audio tensor dump" if stage == "tensors" else "generator input dump"
        raw, self.frame_indices = _read_frame_dump(self.path, TENSOR_KEYS if stage == "tensors" else INPUT_KEYS, what)
        array, precision = _to_float32(raw, what, self.path)
        found = list(raw.array.shape)
        if stage == "tensors":
            ok = array.ndim == 4 and tuple(array.shape[1:]) == (32, 16, 16)
            expected = "audio tensors [F,32,16,16]"
        else:
            ok = array.ndim == 4 and array.shape[1] == 6 and array.shape[2] == array.shape[3]
            expected = "generator inputs [F,6,S,S]"
        if not ok or array.shape[0] == 0:
            raise InputError(f"{what} {self.path}: expected {expected}, found {found}")
        notes = raw.notes
        notes["layout"] = f"{stage} {found}; fixed: the scale slider does not change a dump"
        _count_non_finite(array, notes)
        self.array = np.ascontiguousarray(array, dtype=np.float32)
        self.size: int | None = int(array.shape[-1]) if stage == "inputs" else None
        self.provenance = Provenance("dump", "", "file", precision, str(self.path), notes)
