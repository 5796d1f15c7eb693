"""ONNX Runtime encoder and generator: the reference backend most ports (Go, Python) run.

Tensors are found by shape (backends/shapes.py), not by name, because exporters name them differently. The provider
actually used and the precision stored in the file are recorded in the provenance: both change the numbers a lane
shows, so the user must see them next to every result.
"""

from __future__ import annotations

import threading
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from core import limits
from core.errors import InputError

from core.constants import FEATURE_WIDTH
from core.interfaces import Provenance, checked_generator_inputs, checked_windows
from .shapes import (
    EncoderTensors,
    GeneratorTensors,
    TensorInfo,
    describe_model,
    find_encoder_tensors,
    find_generator_tensors,
)

ENCODER_BATCH = 64  # windows per run when the batch is dynamic: fast, and small enough for any memory
GENERATOR_BATCH = 8  # images are 6x320x320 floats: keep peaks modest

PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
}
AUTO_ORDER = ("CUDAExecutionProvider", "CoreMLExecutionProvider", "CPUExecutionProvider")

# onnxruntime's type strings ("tensor(float)") whose element name is not already the numpy name.
ORT_ELEMENT_NAMES = {"float": "float32", "double": "float64"}
FEEDABLE_TYPES = ("float32", "float16", "float64")
FLOAT_ELEMENT_TYPES = {1: "fp32", 10: "fp16", 11: "fp64", 16: "bf16"}


def _ort() -> Any:
    """Import onnxruntime late so that importing the package (e.g. for the CLI's help) stays fast."""
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - onnxruntime is a runtime dependency
        raise InputError(f"ONNX models need the onnxruntime package, which is not installed ({exc})") from exc
    return onnxruntime


def available_providers() -> list[str]:
    """The execution providers this onnxruntime build offers, e.g. ['CPUExecutionProvider']."""
    return list(_ort().get_available_providers())


def resolve_provider(provider: str) -> str:
    """'cpu' / 'cuda' / 'coreml' / 'auto' (or a full provider name) -> the provider name, if this build has it."""
    available = available_providers()
    if not isinstance(provider, str):
        raise InputError(f"ONNX Runtime provider: expected a name such as 'cpu' or 'auto', found {provider!r}")
    wanted = provider.strip()
    if wanted.lower() == "auto":
        for name in AUTO_ORDER:
            if name in available:
                return name
        return available[0]
    name = PROVIDER_ALIASES.get(wanted.lower(), wanted)
    if name not in available:
        short = [k for k, v in PROVIDER_ALIASES.items() if v in available] + ["auto"]
        raise InputError(
            f"ONNX Runtime provider {provider!r} is not available in this onnxruntime build; expected one of "
            f"{', '.join(short)} (available providers: {', '.join(available)})"
        )
    return name


CACHE_ENV = "LIPSYNC_COMPARE_CACHE_DIR"  # the same folder the Core ML translations are cached in
_FACTS_FORMAT = 1


def _facts_file(path: Path) -> Path | None:
    """Where this file's (opset, precision) are remembered: keyed by its absolute path, size and modification time."""
    import hashlib
    import os

    try:
        stat = path.stat()
        override = os.environ.get(CACHE_ENV)
        if override:
            root = Path(override)
        else:
            import platformdirs

            root = Path(platformdirs.user_cache_dir("lipsync-compare", appauthor=False))
    except (OSError, ImportError):
        return None
    key = f"{_FACTS_FORMAT} {path.resolve()} {stat.st_size} {stat.st_mtime_ns}"
    return root / "onnx-facts" / f"{hashlib.sha256(key.encode()).hexdigest()}.json"


def _model_facts(path: Path, role: str) -> tuple[str, str]:
    """Opset and stored precision, remembered between starts: reading them needs the onnx package, whose import
    (ml_dtypes) costs 1-10 s on a busy 2-core machine, more than opening the session itself."""
    import json

    facts_file = _facts_file(path)
    if facts_file is not None:
        try:
            facts = json.loads(facts_file.read_text(encoding="utf-8"))
            return str(facts["opset"]), str(facts["precision"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    opset, precision = _read_model_facts(path, role)
    if facts_file is not None:
        try:
            from core.safe_write import write_text

            facts_file.parent.mkdir(parents=True, exist_ok=True)
            write_text(facts_file, json.dumps({"opset": opset, "precision": precision}), force=True,
                       what="ONNX facts cache")
        except (OSError, InputError):
            pass  # a read-only cache folder costs the next start its speed, never this lane
    return opset, precision


def _read_model_facts(path: Path, role: str) -> tuple[str, str]:
    """Read opset and stored precision from the file itself (without its external weights)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError, truncated files raise others
        raise InputError(f"{role} {path}: not an ONNX model: {exc}") from exc
    opsets = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    opset = str(opsets[0]) if opsets else "unknown"

    kinds: set[str] = set()
    for init in model.graph.initializer:
        if init.data_type in FLOAT_ELEMENT_TYPES:
            kinds.add(FLOAT_ELEMENT_TYPES[init.data_type])
    for value in list(model.graph.input) + list(model.graph.output):
        element = value.type.tensor_type.elem_type
        if element in FLOAT_ELEMENT_TYPES:
            kinds.add(FLOAT_ELEMENT_TYPES[element])
    return opset, precision_from_kinds(kinds)


def precision_from_kinds(kinds: set[str]) -> str:
    """{'fp32'} -> 'fp32', {'fp16'} -> 'fp16', several -> 'mixed', none -> 'unknown'."""
    if not kinds:
        return "unknown"
    if len(kinds) == 1:
        return next(iter(kinds))
    return "mixed"


def numpy_type_name(ort_type: str) -> str:
    """'tensor(float)' -> 'float32', 'tensor(int64)' -> 'int64': one vocabulary for messages and feeding."""
    element = ort_type[len("tensor("):-1] if ort_type.startswith("tensor(") and ort_type.endswith(")") else ort_type
    return ORT_ELEMENT_NAMES.get(element, element)


def _tensor_infos(nodes: list[Any]) -> list[TensorInfo]:
    infos = []
    for node in nodes:
        shape = None if node.shape is None else tuple(d if isinstance(d, (int, str)) else None for d in node.shape)
        infos.append(TensorInfo(node.name, shape, numpy_type_name(node.type)))
    return infos


class _SharedSession:
    """One onnxruntime session and the file's facts, shared by every lane that opens the same file the same way."""

    def __init__(self, session: Any, opset: str, precision: str) -> None:
        self.session = session
        self.opset = opset
        self.precision = precision


# Two lanes of one model (the demo's lanes share generator.onnx) would otherwise each parse the file and build a
# session: twice the start-up time and twice the weights in memory. Sessions are safe to run from several threads.
# Weak values: a session lives as long as some lane uses it. The key includes the file's size and mtime, so a model
# rewritten on disk gets a new session.
_SESSIONS: "weakref.WeakValueDictionary[tuple[Any, ...], _SharedSession]" = weakref.WeakValueDictionary()
_SESSIONS_LOCK = threading.Lock()


def _session_key(path: Path, provider_name: str, threads: int | None) -> tuple[Any, ...]:
    stat = path.stat()
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns, provider_name, threads)


class _OnnxModel:
    """An onnxruntime session plus the facts every provenance needs; shared by the encoder and the generator."""

    def __init__(self, path: str | Path, provider: str, threads: int | None, role: str) -> None:
        self.path = Path(path)
        self.role = role
        if not self.path.exists():
            raise InputError(f"{role} model not found: {self.path}")
        limits.input_file(self.path, role, "an .onnx file")  # a folder, a FIFO or a device, named as what it is
        if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
            raise InputError(f"{role} {self.path.name}: threads must be a positive whole number, found {threads!r}")
        ort = _ort()
        provider_name = resolve_provider(provider)
        self.requested_provider = provider
        key = _session_key(self.path, provider_name, threads)
        with _SESSIONS_LOCK:
            shared = _SESSIONS.get(key)
            if shared is None:
                shared = self._open(ort, provider_name, threads, role)
                _SESSIONS[key] = shared
        self._shared = shared  # holds the shared session alive while this model exists
        self.session = shared.session
        self.opset, self.precision = shared.opset, shared.precision
        used = self.session.get_providers()
        self.provider = used[0] if used else provider_name
        self.version = ort.__version__
        self.threads = threads
        try:
            self.inputs = _tensor_infos(self.session.get_inputs())
            self.outputs = _tensor_infos(self.session.get_outputs())
        except UnicodeDecodeError as exc:  # found by tools/fuzz: a tensor or dimension name that is not UTF-8
            raise InputError(f"{role} {self.path}: expected tensor and dimension names in UTF-8, found bytes that "
                             f"are not ({exc.reason} at byte {exc.start})") from None

    def _open(self, ort: Any, provider_name: str, threads: int | None, role: str) -> _SharedSession:
        """Parse the file's facts and build its session (only for the first lane that opens it this way)."""
        self.opset, self.precision = _model_facts(self.path, role)
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.log_severity_level = 3  # shape-merge warnings would drown the CLI's output
        try:
            session = ort.InferenceSession(str(self.path), sess_options=options, providers=[provider_name])
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/NotImplemented types
            # onnx parsed the file above, so it is an ONNX model: what fails is this runtime (an op it lacks, an
            # opset it does not know), and the user needs to hear that rather than "corrupt file".
            raise InputError(
                f"{role} {self.path}: onnxruntime {ort.__version__} cannot load this ONNX model (opset "
                f"{self.opset}) with {provider_name}: {exc}"
            ) from exc
        return _SharedSession(session, self.opset, self.precision)

    @property
    def label(self) -> str:
        return f"{self.role} {self.path.name}"

    def require_only_inputs(self, used: list[TensorInfo]) -> None:
        """A model with inputs we would not feed cannot run: say so before the first call rather than during it."""
        extra = [t for t in self.inputs if t.name not in {u.name for u in used}]
        if extra:
            raise InputError(
                f"{self.label}: expected only {', '.join(u.name for u in used)} as inputs, but the model also needs "
                f"{', '.join(t.describe() for t in extra)}; found {describe_model(self.inputs, self.outputs)}"
            )

    def run(self, output: TensorInfo, feed: dict[str, np.ndarray]) -> np.ndarray:
        run_options = _ort().RunOptions()
        # A time limit (the CLI's --time-limit) sets run_options.terminate: a model whose Loop never ends stops.
        with limits.cancellable(limits.terminate_hook(run_options)):
            try:
                (result,) = self.session.run([output.name], feed, run_options)
            except Exception as exc:
                raise InputError(f"{self.label}: onnxruntime failed to run the model: {exc}") from exc
        return np.asarray(result)

    def provenance(self, details: dict[str, str]) -> Provenance:
        base = {"opset": self.opset, "threads": str(self.threads) if self.threads else "default"}
        if str(self.requested_provider).strip().lower() == "auto":  # say what "auto" chose, and from what
            base["provider requested"] = f"auto (available: {', '.join(available_providers())})"
        return Provenance("onnxruntime", self.version, self.provider, self.precision, str(self.path),
                          {**base, **details})


def _input_dtype(tensor: TensorInfo, label: str) -> np.dtype:
    """The numpy dtype to feed: what the model declares (fp16 models get fp16), as long as it is a float type."""
    if tensor.dtype not in FEEDABLE_TYPES:
        raise InputError(f"{label}: input {tensor.describe()} has a type this app cannot feed; expected "
                         f"{', '.join(FEEDABLE_TYPES)}")
    return np.dtype(tensor.dtype)


def _batches(count: int, fixed_batch: int | None, dynamic_batch: int) -> list[tuple[int, int]]:
    """[start, stop) ranges: `dynamic_batch` at a time when the model allows it, else its fixed batch size."""
    step = fixed_batch or dynamic_batch
    return [(start, min(start + step, count)) for start in range(0, count, step)]


def _run_in_batches(model: _OnnxModel, output: TensorInfo, fixed_batch: int | None, dynamic_batch: int,
                    feeds: dict[str, np.ndarray], check: Any) -> list[np.ndarray]:
    """Run `feeds` (all with the same leading count) in batches; a fixed batch > 1 pads the last one with zeros."""
    count = len(next(iter(feeds.values())))
    results = []
    for start, stop in _batches(count, fixed_batch, dynamic_batch):
        chunk = {name: array[start:stop] for name, array in feeds.items()}
        real = stop - start
        if fixed_batch is not None and real < fixed_batch:
            chunk = {
                name: np.concatenate([a, np.zeros((fixed_batch - real, *a.shape[1:]), a.dtype)])
                for name, a in chunk.items()
            }
        result = model.run(output, chunk)
        results.append(check(result, len(next(iter(chunk.values()))))[:real])
    return results


class OnnxEncoder:
    """The audio encoder under ONNX Runtime: windows [B,1,80,16] -> features [B,512] float32."""

    def __init__(
        self,
        path: str | Path,
        provider: str = "cpu",
        input_name: str | None = None,
        output_name: str | None = None,
        threads: int | None = None,
        batch_size: int = ENCODER_BATCH,
    ) -> None:
        self._model = _OnnxModel(path, provider, threads, "encoder")
        self.tensors: EncoderTensors = find_encoder_tensors(
            self._model.inputs, self._model.outputs, input_name, output_name, self._model.label
        )
        self._model.require_only_inputs([self.tensors.input])
        self._input_dtype = _input_dtype(self.tensors.input, self._model.label)
        self.batch_size = batch_size if self.tensors.batch is None else self.tensors.batch
        self.provenance = self._model.provenance({
            "input": self.tensors.input.describe(),
            "output": self.tensors.output.describe(),
            "batch": "dynamic" if self.tensors.batch is None else str(self.tensors.batch),
            "squeezed output": "yes" if self.tensors.squeeze_output else "no",
        })

    def encode(self, windows: np.ndarray) -> np.ndarray:
        """Encode every window; batched when the model's batch is dynamic, one run per window when it is 1."""
        windows = checked_windows(windows, self._model.label)
        if len(windows) == 0:
            return np.zeros((0, FEATURE_WIDTH), np.float32)
        feed = {self.tensors.input.name: np.ascontiguousarray(windows, dtype=self._input_dtype)}
        parts = _run_in_batches(self._model, self.tensors.output, self.tensors.batch, self.batch_size, feed,
                                self._checked_output)
        return np.concatenate(parts).astype(np.float32, copy=False)

    def _checked_output(self, result: np.ndarray, batch: int) -> np.ndarray:
        """The model declared [B,512]; a model that returns anything else is reported, never reshaped silently."""
        if self.tensors.squeeze_output and result.ndim == 4 and result.shape[2:] == (1, 1):
            result = result.reshape(result.shape[0], result.shape[1])
        if result.shape != (batch, FEATURE_WIDTH):
            raise InputError(
                f"{self._model.label}: output {self.tensors.output.name!r} should be [{batch},{FEATURE_WIDTH}] for "
                f"{batch} windows, but the model returned {list(result.shape)}"
            )
        return result.astype(np.float32, copy=False)


class OnnxGenerator:
    """The mouth generator under ONNX Runtime: image [B,6,S,S] + audio [B,32,16,16] -> [B,3,S,S] float32."""

    def __init__(
        self,
        path: str | Path,
        provider: str = "cpu",
        image_input: str | None = None,
        audio_input: str | None = None,
        output_name: str | None = None,
        threads: int | None = None,
    ) -> None:
        self._model = _OnnxModel(path, provider, threads, "generator")
        self.tensors: GeneratorTensors = find_generator_tensors(
            self._model.inputs, self._model.outputs, image_input, audio_input, output_name, self._model.label
        )
        self._model.require_only_inputs([self.tensors.image, self.tensors.audio])
        self.size = self.tensors.size
        self._image_dtype = _input_dtype(self.tensors.image, self._model.label)
        self._audio_dtype = _input_dtype(self.tensors.audio, self._model.label)
        self.provenance = self._model.provenance({
            "image input": self.tensors.image.describe(),
            "audio input": self.tensors.audio.describe(),
            "output": self.tensors.output.describe(),
            "size": str(self.size),
            "batch": "dynamic" if self.tensors.batch is None else str(self.tensors.batch),
        })

    def generate(self, image: np.ndarray, audio: np.ndarray) -> np.ndarray:
        """Draw the mouth for every (image, audio) pair; output is float32 in the model's [0,1] range."""
        s = self.size
        image, audio = checked_generator_inputs(image, audio, s, self._model.label)
        if len(image) == 0:
            return np.zeros((0, 3, s, s), np.float32)
        feed = {
            self.tensors.image.name: np.ascontiguousarray(image, dtype=self._image_dtype),
            self.tensors.audio.name: np.ascontiguousarray(audio, dtype=self._audio_dtype),
        }
        fixed = self.tensors.batch
        if (fixed == 1 and len(image) == 1) or (fixed is None and len(image) <= GENERATOR_BATCH):
            # One call (a frame while playing): no batching machinery, no copy of the output.
            return self._checked_output(self._model.run(self.tensors.output, feed), len(image))
        parts = _run_in_batches(self._model, self.tensors.output, self.tensors.batch, GENERATOR_BATCH, feed,
                                self._checked_output)
        if len(parts) == 1:  # one frame a call while playing: no copy of the output
            return parts[0]
        return np.concatenate(parts).astype(np.float32, copy=False)

    def _checked_output(self, result: np.ndarray, batch: int) -> np.ndarray:
        s = self.size
        if result.shape != (batch, 3, s, s):
            raise InputError(
                f"{self._model.label}: output {self.tensors.output.name!r} should be [{batch},3,{s},{s}], but the "
                f"model returned {list(result.shape)}"
            )
        return result.astype(np.float32, copy=False)
