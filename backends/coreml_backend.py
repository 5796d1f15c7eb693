"""Core ML encoder and generator: natively through Core ML on macOS, emulated from the file's own graph elsewhere.

The compute unit alone changes Core ML's numbers (the GPU and the Neural Engine compute in fp16), so it is part of
every result's provenance; so are the precision the program declares and the coremltools version. On Linux and
Windows the model is emulated (backends/coreml_emulator.py): its MIL program or layer list is translated to ONNX and
run with onnxruntime, with fp16 storage reproduced by rounding, so QA can check a .mlpackage without a Mac.

Options (all optional): mode "auto" | "native" | "emulated" (auto: native on macOS when Core ML loads, else
emulated); compute_unit "cpu_only" | "cpu_and_gpu" | "cpu_and_ne" | "all" (native only: the emulator always runs on
the CPU); precision "as_stored" | "fp32" | "fp16" (emulated only: see coreml_emulator.PRECISION_MODES);
input_name / image_input / audio_input / output_name override the tensors found by shape; threads for onnxruntime.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from core.errors import InputError

from core.constants import FEATURE_WIDTH
from core.interfaces import Provenance, checked_generator_inputs, checked_windows
from .coreml_emulator import PRECISION_MODES, TranslatedModel, _quiet_coremltools, load_spec, translate, translate_cached
from .shapes import TensorInfo, find_encoder_tensors, find_generator_tensors

COMPUTE_UNITS = {"cpu_only": "CPU_ONLY", "cpu_and_gpu": "CPU_AND_GPU", "cpu_and_ne": "CPU_AND_NE", "all": "ALL"}
MODES = ("auto", "native", "emulated")
ENCODER_BATCH = 256  # windows per onnxruntime run: a whole 10 s clip in one go, still a few MB
GENERATOR_BATCH = 4


def coremltools_version() -> str:
    return str(_quiet_coremltools().__version__)


def native_available() -> bool:
    """Core ML itself exists only on macOS, and coremltools needs its native library to call it."""
    if sys.platform != "darwin":
        return False
    try:
        _quiet_coremltools()
        from coremltools import libcoremlpython  # noqa: F401
    except Exception:
        return False
    return True


def resolve_mode(mode: str) -> str:
    """'auto' -> 'native' where Core ML can run, else 'emulated'; asking for native elsewhere is an input error."""
    if mode not in MODES:
        raise InputError(f"Core ML mode: expected one of {', '.join(MODES)}, found {mode!r}")
    if mode == "auto":
        return "native" if native_available() else "emulated"
    if mode == "native" and not native_available():
        raise InputError(
            f"Core ML mode 'native': expected macOS with Core ML, found {sys.platform}; use mode 'emulated' "
            "(the model's own graph and weights run through onnxruntime)"
        )
    return mode


def _check_compute_unit(compute_unit: str) -> str:
    if compute_unit not in COMPUTE_UNITS:
        raise InputError(f"Core ML compute unit: expected one of {', '.join(COMPUTE_UNITS)}, found {compute_unit!r}")
    return compute_unit


class _EmulatedRunner:
    """The translated graph in an onnxruntime session; the batch grows when the program allows it."""

    def __init__(self, path: Path, precision: str, threads: int | None) -> None:
        import onnxruntime as ort

        self.label = path.name
        # Cached by the package's content: a second start reads the ONNX translation and imports no coremltools.
        self.translated: TranslatedModel = translate_cached(path, precision)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(self.translated.onnx_bytes, options, providers=["CPUExecutionProvider"])
        except Exception as error:  # a translation onnxruntime rejects: the user's model is not at fault, say so
            raise InputError(f"Core ML model {path.name}: its emulation (the program translated to ONNX) could not be "
                             f"loaded by onnxruntime; please report it with the model: {error}") from error
        self.ort_version = ort.__version__
        batch = None if self.translated.batchable else 1
        self.inputs = [TensorInfo(n, (batch, *s[1:])) for n, s in self.translated.inputs.items()]
        self.outputs = [
            TensorInfo(n, (batch, *s[1:]) if s else None) for n, s in self.translated.outputs.items()
        ]
        self.max_batch = None if self.translated.batchable else 1

    def run(self, output: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        try:
            return self.session.run([output], feeds)[0]
        except Exception as error:  # onnxruntime's own error types: a lane shows it instead of crashing
            shapes = ", ".join(f"{k}:{list(v.shape)}" for k, v in feeds.items())
            raise InputError(f"Core ML model {self.label}: the emulation failed on inputs {shapes}: {error}") from error


class _NativeRunner:
    """coremltools' MLModel.predict on macOS, one sample per call (Core ML models are usually fixed at batch 1)."""

    def __init__(self, path: Path, compute_unit: str) -> None:
        ct = _quiet_coremltools()
        # coremltools' MLModel rewrites a package's Manifest.json (its ModelPackage writes it back when released); the
        # user's package must stay untouched, so Core ML gets a private copy (a few MB; Core ML compiles its own copy anyway).
        copy = None
        if path.is_dir():
            copy = tempfile.TemporaryDirectory(prefix="lipsync-coreml-")
            path = Path(shutil.copytree(path, Path(copy.name) / path.name))
        try:
            self.model = ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, COMPUTE_UNITS[compute_unit]))
        except Exception as error:
            raise InputError(f"Core ML model {path.name}: Core ML could not load it: {error}") from error
        self._copy = copy  # assigned after the model, so it is released after it
        spec = self.model.get_spec()
        self.inputs = [_feature_info(f) for f in spec.description.input]
        self.outputs = [_feature_info(f) for f in spec.description.output]
        # Models converted for iOS 16+ may declare fp16 inputs; Core ML wants the declared type.
        self.input_dtypes = {t.name: np.float16 if t.dtype == "float16" else np.float32 for t in self.inputs}
        self.max_batch = 1

    def run(self, output: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        result = self.model.predict({k: np.ascontiguousarray(v, dtype=self.input_dtypes.get(k, np.float32))
                                     for k, v in feeds.items()})
        return np.asarray(result[output], dtype=np.float32)


_ARRAY_DTYPES = {65568: "float32", 65552: "float16", 65600: "float64", 131104: "int32"}  # ArrayFeatureType codes


def _feature_info(feature: Any) -> TensorInfo:
    array = feature.type.multiArrayType
    shape = tuple(int(d) for d in array.shape) or None
    return TensorInfo(feature.name, shape, _ARRAY_DTYPES.get(array.dataType, "float32"))


def _spec_precision(path: Path) -> str:
    """Precision as the file declares it (used for native runs, where nothing is translated)."""
    try:
        return translate(path).precision
    except InputError:
        return "unknown"


class _CoreMLModel:
    """Shared opening logic: mode, compute unit, runner and provenance."""

    def __init__(self, path: str | Path, role: str, compute_unit: str, mode: str, precision: str,
                 threads: int | None) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() not in (".mlpackage", ".mlmodel"):
            raise InputError(f"{role} {self.path.name}: expected a .mlpackage or .mlmodel, found {self.path.suffix or 'no suffix'}")
        if precision not in PRECISION_MODES:
            raise InputError(f"Core ML precision: expected one of {', '.join(PRECISION_MODES)}, found {precision!r}")
        self.compute_unit = _check_compute_unit(compute_unit)
        self.mode = resolve_mode(mode)
        self.label = f"{role} {self.path.name}"
        if self.mode == "native":
            load_spec(self.path)  # a missing or unreadable file is an InputError before anything else
            if precision != "as_stored":
                raise InputError(f"Core ML precision {precision!r}: expected 'as_stored' in native mode (Core ML decides), found {precision!r}")
            self.runner: Any = _NativeRunner(self.path, self.compute_unit)
            self.precision = _spec_precision(self.path)
            self.runtime, provider = "coreml-native", COMPUTE_UNITS[self.compute_unit].lower()
            version = tools_version = coremltools_version()
        else:
            # The emulated path reads coremltools' version from the translation (cached ones record it), so a cache
            # hit never imports coremltools (nor the torch it pulls in).
            self.runner = _EmulatedRunner(self.path, precision, threads)
            self.precision = self.runner.translated.precision
            self.runtime = "coreml-emulated"
            provider = "cpu (emulated)"
            tools_version = self.runner.translated.details.get("coremltools", "unknown")
            version = f"coremltools {tools_version} + onnxruntime {self.runner.ort_version}"
        self._base = dict(runtime=self.runtime, version=version, provider=provider, precision=self.precision,
                          source=str(self.path))
        self._details = {"compute_unit": self.compute_unit if self.mode == "native" else f"{self.compute_unit} (not used when emulated)",
                         "coremltools": tools_version}
        if self.mode != "native":
            self._details["translation"] = self.runner.translated.details.get("translation", "fresh")

    def _provenance(self, details: dict[str, str]) -> Provenance:
        return Provenance(**self._base, details={**self._details, **details})

    def _batches(self, count: int, preferred: int) -> list[tuple[int, int]]:
        step = preferred if self.runner.max_batch is None else self.runner.max_batch
        return [(start, min(start + step, count)) for start in range(0, count, step)]


class CoreMLEncoder(_CoreMLModel):
    """Mel windows [B,1,80,16] -> features [B,512], through Core ML or its emulation."""

    def __init__(self, path: str | Path, compute_unit: str = "cpu_only", input_name: str | None = None,
                 output_name: str | None = None, mode: str = "auto", precision: str = "as_stored",
                 threads: int | None = None) -> None:
        super().__init__(path, "encoder", compute_unit, mode, precision, threads)
        self.tensors = find_encoder_tensors(self.runner.inputs, self.runner.outputs, input_name, output_name, self.label)
        self.provenance = self._provenance({"input": self.tensors.input.name, "output": self.tensors.output.name})

    def encode(self, windows: np.ndarray) -> np.ndarray:
        windows = np.asarray(checked_windows(windows, self.label), dtype=np.float32)
        parts = []
        for start, stop in self._batches(len(windows), ENCODER_BATCH):
            result = self.runner.run(self.tensors.output.name, {self.tensors.input.name: windows[start:stop]})
            parts.append(np.asarray(result, dtype=np.float32).reshape(stop - start, -1))
        features = np.concatenate(parts) if parts else np.zeros((0, FEATURE_WIDTH), np.float32)
        if features.shape[1] != FEATURE_WIDTH:
            raise InputError(f"{self.label}: expected features [B,{FEATURE_WIDTH}], found {list(features.shape)}")
        return features


class CoreMLGenerator(_CoreMLModel):
    """Image [B,6,S,S] + audio [B,32,16,16] -> image [B,3,S,S], through Core ML or its emulation."""

    def __init__(self, path: str | Path, compute_unit: str = "cpu_only", image_input: str | None = None,
                 audio_input: str | None = None, output_name: str | None = None, mode: str = "auto",
                 precision: str = "as_stored", threads: int | None = None) -> None:
        super().__init__(path, "generator", compute_unit, mode, precision, threads)
        self.tensors = find_generator_tensors(self.runner.inputs, self.runner.outputs, image_input, audio_input,
                                              output_name, self.label)
        self.size = int(self.tensors.size)
        self.provenance = self._provenance({"image_input": self.tensors.image.name,
                                            "audio_input": self.tensors.audio.name, "output": self.tensors.output.name})

    def generate(self, image: np.ndarray, audio: np.ndarray) -> np.ndarray:
        size = self.size
        image, audio = checked_generator_inputs(image, audio, size, self.label)
        image, audio = image.astype(np.float32, copy=False), audio.astype(np.float32, copy=False)
        parts = []
        for start, stop in self._batches(len(image), GENERATOR_BATCH):
            feeds = {self.tensors.image.name: image[start:stop], self.tensors.audio.name: audio[start:stop]}
            parts.append(np.asarray(self.runner.run(self.tensors.output.name, feeds), dtype=np.float32))
        return np.concatenate(parts).reshape(len(image), 3, size, size)


_ENCODER_KEYS = ("compute_unit", "input_name", "output_name", "mode", "precision", "threads")
_GENERATOR_KEYS = ("compute_unit", "image_input", "audio_input", "output_name", "mode", "precision", "threads")


def _options(options: Mapping[str, Any] | None, allowed: tuple[str, ...], role: str) -> dict[str, Any]:
    options = dict(options or {})
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise InputError(f"Core ML {role} options: expected some of {', '.join(allowed)}, found {', '.join(unknown)}")
    return {k: v for k, v in options.items() if v is not None}


def open_coreml_encoder(path: str | Path, options: Mapping[str, Any] | None = None) -> CoreMLEncoder:
    """Registry entry point: a Core ML encoder with the session's options."""
    return CoreMLEncoder(path, **_options(options, _ENCODER_KEYS, "encoder"))


def open_coreml_generator(path: str | Path, options: Mapping[str, Any] | None = None) -> CoreMLGenerator:
    """Registry entry point: a Core ML generator with the session's options."""
    return CoreMLGenerator(path, **_options(options, _GENERATOR_KEYS, "generator"))
