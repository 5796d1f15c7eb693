"""The session file: which audio, which avatar, and which lanes to compare.

A session is a small TOML file a person writes by hand, shares with a colleague and commits next to their models,
so paths inside it are relative to the file, and a mistake in it is reported as one message per problem (key,
value, what was expected) instead of failing on the first. Saving is atomic so a crash never leaves half a file.

Schema (documented for users in README.md):

    audio = "speech.wav"            # required: wav/flac/ogg, any rate, mono or multi-channel
    avatar = "avatar"               # optional: SyncTalk_2D dataset folder (needed for frames)
    pad_mode = "constant"           # optional: "constant" (librosa >= 0.9, default) or "reflect" (librosa < 0.9)
    reference = "ONNX Runtime"      # optional: the lane others are compared with (default: the first)

    [[lanes]]
    name = "ONNX Runtime"           # required, unique
    encoder = "audio_encoder.onnx"  # required: .onnx, .mlpackage, .mlmodel, .pth, or a feature dump
    generator = "generator.onnx"    # optional: .onnx, .mlpackage, .mlmodel, .pth, or a dump of outputs/frames
    scale = 1.0                     # optional, > 0: multiplies the lane's encoder features
    mel = "mel_dump.npy"            # optional: use this mel [T,80] instead of computing it
    tensors = "tensors.npz"         # optional: audio tensors [F,32,16,16] from another program (all or some frames)
    inputs = "inputs.npz"           # optional: generator inputs [F,6,S,S] from another program (all or some frames)
    [lanes.options]                 # optional, passed to the backends (provider, compute_unit, input_name, ...)
    provider = "cpu"
"""

from __future__ import annotations

import errno
import os
import stat
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import tomli_w

from core import limits, safe_write
from core.errors import SessionError
from core.filekinds import accepted_suffixes, suffix_kind
from pipeline.metrics import scale_problem

PAD_MODES = ("constant", "reflect")
TOP_LEVEL_KEYS = {"audio", "avatar", "pad_mode", "reference", "lanes", "title"}
LANE_KEYS = {"name", "encoder", "generator", "scale", "mel", "tensors", "inputs", "options"}


@dataclass
class LaneSpec:
    """One column on screen: where its features come from, how they are scaled, and what draws the mouth."""

    name: str
    encoder: Path | None  # None only for lanes built in code that stop before the features (the dump command)
    generator: Path | None = None
    scale: float = 1.0
    mel: Path | None = None
    options: dict[str, Any] = field(default_factory=dict)
    # Later stages from another program's dumps: the stages after a dumped one run from it.
    tensors: Path | None = None
    inputs: Path | None = None

    def describe_sources(self) -> str:
        """A short title such as 'audio_encoder.onnx → generator.onnx' for lane headers."""
        enc = self.encoder.name if self.encoder else "no encoder"
        gen = self.generator.name if self.generator else "no generator"
        return f"{enc} → {gen}"


@dataclass
class Session:
    """A parsed session; every path in it is absolute."""

    audio: Path
    lanes: list[LaneSpec]
    avatar: Path | None = None
    pad_mode: str = "constant"
    reference: str | None = None
    title: str | None = None
    path: Path | None = None

    @property
    def reference_index(self) -> int:
        """Index of the lane the others are compared with."""
        if self.reference is None:
            return 0
        for i, lane in enumerate(self.lanes):
            if lane.name == self.reference:
                return i
        return 0


def repo_root() -> Path:
    """The project's root folder (where app.py and resources/ live)."""
    return Path(__file__).resolve().parents[1]


def demo_session_path() -> Path:
    """The demo session that `python app.py` opens with no argument."""
    return repo_root() / "resources" / "demo" / "demo.toml"


def load_session(path: str | os.PathLike[str], check_files: bool = True) -> Session:
    """Parse and validate a session file, reporting every problem at once.

    With ``check_files`` the audio, avatar, model and dump paths must exist; the window passes False so that a lane
    whose model is missing can show the reason in its own place while the other lanes keep working.
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        raise SessionError([f"session file not found (expected a .toml file at {path})"], str(path))
    # A regular file of sane size only: a FIFO would block forever, a device stream without end.
    problem = _path_problem(path, "file")
    if problem is not None:
        raise SessionError([f"{problem} (expected a session .toml file)"], str(path))
    try:
        size = path.stat().st_size
        if size > limits.MAX_TEXT_BYTES:
            raise SessionError([f"expected a session .toml file of a few KB, found {size:,} bytes, more than the "
                                f"limit of {limits.MAX_TEXT_BYTES:,} (core/limits.py)"], str(path))
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise SessionError(["expected a UTF-8 TOML text file, found binary data"], str(path)) from None
    except OSError as exc:
        raise SessionError([f"expected a readable session file, found an error reading it ({exc.strerror or exc})"],
                           str(path)) from None
    except RecursionError:
        raise SessionError(["not valid TOML: nested too deeply to read"], str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise SessionError([f"not valid TOML: {exc}"], str(path)) from None
    return session_from_dict(data, base_dir=path.resolve().parent, check_files=check_files, path=path.resolve())


def session_from_dict(
    data: dict[str, Any], base_dir: Path, check_files: bool = True, path: Path | None = None
) -> Session:
    """Validate a session already parsed from TOML (or built in code); relative paths resolve against base_dir."""
    problems: list[str] = []
    for key in sorted(set(data) - TOP_LEVEL_KEYS):
        problems.append(f"unknown key '{key}' (known keys: {', '.join(sorted(TOP_LEVEL_KEYS))})")

    audio = _path_value(data, "audio", base_dir, problems, required=True, check=check_files, want="file")
    avatar = _path_value(data, "avatar", base_dir, problems, required=False, check=check_files, want="dir")

    pad_mode = data.get("pad_mode", "constant")
    if pad_mode not in PAD_MODES:
        problems.append(f"pad_mode = {pad_mode!r}: expected one of {', '.join(repr(m) for m in PAD_MODES)}")

    title = data.get("title")
    if title is not None and not isinstance(title, str):
        problems.append(f"title = {title!r}: expected a string")

    lanes: list[LaneSpec] = []
    raw_lanes = data.get("lanes")
    if raw_lanes is None:
        problems.append("lanes: missing; expected at least one [[lanes]] table with a name and an encoder")
    elif not isinstance(raw_lanes, list) or not all(isinstance(x, dict) for x in raw_lanes):
        problems.append(f"lanes = {raw_lanes!r}: expected an array of tables ([[lanes]])")
    elif not raw_lanes:
        problems.append("lanes: empty; expected at least one [[lanes]] table")
    else:
        seen: set[str] = set()
        for i, raw in enumerate(raw_lanes):
            lane = _lane_from_dict(raw, i, base_dir, problems, check_files)
            if lane is None:
                continue
            if lane.name in seen:
                problems.append(f"lanes[{i}].name = {lane.name!r}: expected a unique name, this one is used twice")
            seen.add(lane.name)
            lanes.append(lane)

    reference = data.get("reference")
    if reference is not None:
        if not isinstance(reference, str):
            problems.append(f"reference = {reference!r}: expected the name of a lane")
        elif lanes and reference not in {lane.name for lane in lanes}:
            names = ", ".join(repr(lane.name) for lane in lanes)
            problems.append(f"reference = {reference!r}: expected the name of a lane, one of {names}")

    if problems:
        raise SessionError(problems, str(path) if path else None)
    assert audio is not None
    return Session(
        audio=audio,
        lanes=lanes,
        avatar=avatar,
        pad_mode=pad_mode,
        reference=reference,
        title=title,
        path=path,
    )


def _lane_from_dict(
    raw: dict[str, Any], index: int, base_dir: Path, problems: list[str], check_files: bool
) -> LaneSpec | None:
    where = f"lanes[{index}]"
    before = len(problems)
    for key in sorted(set(raw) - LANE_KEYS):
        problems.append(f"{where}: unknown key '{key}' (known keys: {', '.join(sorted(LANE_KEYS))})")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.append(f"{where}.name = {name!r}: expected a non-empty string")
        name = f"lane {index + 1}"
    where = f"lanes[{index}] ({name})"

    encoder = _path_value(raw, "encoder", base_dir, problems, required=True, check=check_files, want="any", where=where)
    generator = _path_value(raw, "generator", base_dir, problems, required=False, check=check_files, want="any", where=where)
    mel = _path_value(raw, "mel", base_dir, problems, required=False, check=check_files, want="file", where=where)
    tensors = _path_value(raw, "tensors", base_dir, problems, required=False, check=check_files, want="file",
                          where=where)
    inputs = _path_value(raw, "inputs", base_dir, problems, required=False, check=check_files, want="file",
                         where=where)
    for key, value in (("encoder", encoder), ("generator", generator), ("mel", mel), ("tensors", tensors),
                       ("inputs", inputs)):
        if value is None:
            continue
        if suffix_kind(value, key) is None:
            problems.append(
                f"{where}.{key} = {raw[key]!r}: expected a file ending in {', '.join(accepted_suffixes(key))}, "
                f"found '{value.suffix or 'no extension'}'"
            )

    scale = raw.get("scale", 1.0)
    # The shared check: finite, > 0, and a normal float32 (1e308 would make the features Inf, 1e-320 all zeros).
    scale_issue = scale_problem(scale)
    if scale_issue is not None:
        problems.append(f"{where}.scale = {scale!r}: {scale_issue}")
        scale = 1.0

    options = raw.get("options", {})
    if not isinstance(options, dict):
        problems.append(f"{where}.options = {options!r}: expected a table ([lanes.options])")
        options = {}

    if len(problems) > before:
        return None
    assert encoder is not None
    return LaneSpec(name=name, encoder=encoder, generator=generator, scale=float(scale), mel=mel, options=dict(options),
                    tensors=tensors, inputs=inputs)


def _path_value(
    data: dict[str, Any],
    key: str,
    base_dir: Path,
    problems: list[str],
    required: bool,
    check: bool,
    want: str,
    where: str = "",
) -> Path | None:
    """Read a path-valued key, resolve it against base_dir and (optionally) check that it exists."""
    label = f"{where}.{key}" if where else key
    value = data.get(key)
    if value is None:
        if required:
            problems.append(f"{label}: missing; expected a path")
        return None
    if not isinstance(value, str) or not value.strip():
        problems.append(f"{label} = {value!r}: expected a path string")
        return None
    try:
        # Absolute, but links kept: a model's kind is read from the name the user gave (the Hugging Face cache links
        # snapshots/<rev>/enc.onnx to a blob without a suffix), and a link loop must not raise here.
        resolved = Path(os.path.abspath(base_dir / Path(value).expanduser()))
    except (RuntimeError, ValueError) as exc:  # "~nobody/x": no such user
        problems.append(f"{label} = {value!r}: expected a usable path, found one that cannot be expanded ({exc})")
        return None
    if check:
        problem = _path_problem(resolved, want)
        if problem is not None:
            problems.append(f"{label} = {value!r}: {problem}")
    return resolved


_WANTED = {"file": ("a file", stat.S_ISREG), "dir": ("a folder", stat.S_ISDIR),
           "any": ("a file or a folder", lambda mode: stat.S_ISREG(mode) or stat.S_ISDIR(mode))}


def _path_problem(path: Path, want: str) -> str | None:
    """What is wrong with an input path, in words (None when it is what ``want`` asks for)."""
    expected, accepts = _WANTED[want]
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return f"expected an existing path, found nothing at {path}"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"expected {expected}, found a symbolic link loop at {path}"
        return f"expected {expected}, found a path that cannot be opened at {path} ({exc.strerror or exc})"
    except ValueError as exc:  # a NUL character
        return f"expected {expected}, found an invalid path ({exc})"
    if not accepts(info.st_mode):
        return f"expected {expected}, found {safe_write.describe_kind(info.st_mode)} at {path}"
    return None


def session_to_dict(session: Session, base_dir: Path) -> dict[str, Any]:
    """The TOML-ready form of a session, with paths relative to base_dir where that is possible."""

    def rel(p: Path) -> str:
        try:
            return os.path.relpath(p, base_dir).replace(os.sep, "/")
        except ValueError:  # another drive on Windows
            return str(p)

    out: dict[str, Any] = {}
    if session.title:
        out["title"] = session.title
    out["audio"] = rel(session.audio)
    if session.avatar is not None:
        out["avatar"] = rel(session.avatar)
    if session.pad_mode != "constant":
        out["pad_mode"] = session.pad_mode
    if session.reference is not None:
        out["reference"] = session.reference
    lanes = []
    for lane in session.lanes:
        entry: dict[str, Any] = {"name": lane.name}
        if lane.encoder is not None:
            entry["encoder"] = rel(lane.encoder)
        if lane.generator is not None:
            entry["generator"] = rel(lane.generator)
        entry["scale"] = float(lane.scale)
        if lane.mel is not None:
            entry["mel"] = rel(lane.mel)
        if lane.tensors is not None:
            entry["tensors"] = rel(lane.tensors)
        if lane.inputs is not None:
            entry["inputs"] = rel(lane.inputs)
        if lane.options:
            entry["options"] = dict(lane.options)
        lanes.append(entry)
    out["lanes"] = lanes
    return out


def save_session(session: Session, path: str | os.PathLike[str]) -> Session:
    """Write the session atomically (temp file in the same folder, then rename) and return it bound to path.

    The rename is atomic on POSIX and Windows, so a crash or a full disk leaves either the old file or the new one,
    never a truncated session.
    """
    path = Path(path).resolve()
    text = tomli_w.dumps(session_to_dict(session, path.parent))
    # Saving a session over itself is the point of Save, so an existing file is replaced (never through a link).
    safe_write.write_text(path, text, force=True, what="session")
    return replace(session, path=path)
