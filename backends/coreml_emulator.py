"""Run a Core ML model without Core ML: translate its own graph and weights into ONNX and run that with onnxruntime.

Core ML exists only on Apple platforms and coremltools' predict fails elsewhere, yet the question QA asks on Linux is
"does this .mlpackage compute what the ONNX model computes?". coremltools *can* read both model kinds everywhere:
the ML Program (.mlpackage: a MIL program plus weights/weight.bin) and the older NeuralNetwork (.mlmodel: a list of
layers). This module translates either, op by op, into an ONNX graph that uses the file's own weights, so the
emulation never borrows anything from the network the model is supposed to be (see docs/COREML.md for why ONNX
rather than a numpy interpreter).

Precision: where the program computes in fp16 (fp16 weights, casts to fp16, ops typed fp16), each such op is computed
in fp32 on values that are exactly representable in fp16 and its result is rounded to fp16 (a Cast to float16 and
back). That reproduces fp16 storage between ops, which is where most of Core ML's fp16 error comes from; the
accumulation inside one convolution stays fp32 (Core ML's GPU and Neural Engine accumulate at higher precision too).

The translator is split along its seams: coreml_package (reading files and specs without MLModel), coreml_graph (the
ONNX graph builder and fp16 emulation helpers), coreml_mlprogram (ML Program ops), coreml_neuralnetwork
(NeuralNetwork layers). This module is the one place callers import from: translate, translate_cached and the cache.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from core.errors import InputError

from . import coreml_graph, coreml_mlprogram, coreml_neuralnetwork, coreml_package
from .coreml_graph import PRECISION_MODES, TranslatedModel
from .coreml_mlprogram import SUPPORTED_MIL_OPS, _MilTranslator
from .coreml_neuralnetwork import SUPPORTED_NN_LAYERS, _NeuralNetworkTranslator
from .coreml_package import _quiet_coremltools, load_mil_function, load_spec

__all__ = [
    "CACHE_ENV", "PRECISION_MODES", "SUPPORTED_MIL_OPS", "SUPPORTED_NN_LAYERS", "TranslatedModel", "_quiet_coremltools",
    "cache_dir", "content_key", "load_mil_function", "load_spec", "translate", "translate_cached",
    "translator_sources",
]

# Every module whose source decides what a translation is: all of them are part of the cache key.
_TRANSLATOR_MODULES = (__name__, coreml_package.__name__, coreml_graph.__name__, coreml_mlprogram.__name__,
                       coreml_neuralnetwork.__name__)


def translate(path: str | Path, precision: str = "as_stored") -> TranslatedModel:
    """Translate a Core ML file into ONNX; raises InputError naming unsupported operations."""
    if precision not in PRECISION_MODES:
        raise InputError(f"Core ML precision: expected one of {PRECISION_MODES}, found {precision!r}")
    spec, weights_dir = load_spec(path)
    kind = spec.WhichOneof("Type")
    if kind == "mlProgram":
        return _MilTranslator(spec, weights_dir, precision, Path(path).name).run()
    if kind == "neuralNetwork":
        return _NeuralNetworkTranslator(spec, precision, Path(path).name).run()
    raise InputError(
        f"Core ML model {Path(path).name}: expected an ML Program or a NeuralNetwork model, found type {kind!r}"
    )


# -- the translation cache ------------------------------------------------------------------------------------
# Translating a package imports coremltools (which imports torch when it is installed: 4-19 s) and walks its whole
# program; a second start of the app must not pay that again. The translation is stored under a key made of the
# package's own bytes, the precision mode and the source of every translator module, so an edited model or a changed translator
# is simply a different key and a stale entry can never be used.
CACHE_ENV = "LIPSYNC_COMPARE_CACHE_DIR"
_CACHE_FORMAT = 1


def cache_dir() -> Path:
    """Where translations are kept: $LIPSYNC_COMPARE_CACHE_DIR/coreml, else the platform's user cache folder."""
    import os

    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override) / "coreml"
    import platformdirs

    return Path(platformdirs.user_cache_dir("lipsync-compare", appauthor=False)) / "coreml"


def translator_sources() -> list[Path]:
    """The source files of every translator module (this facade and the four it splits into), hashed into the key."""
    import sys

    return [Path(sys.modules[name].__file__ or "") for name in _TRANSLATOR_MODULES]


def _files_of(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    return [path]


def content_key(path: str | Path, precision: str) -> str:
    """sha256 of the model's content (every file of a package, with its relative path), the precision mode, and
    the source code of every translator module (translator_sources())."""
    import hashlib

    path = Path(path)
    if not path.exists():
        raise InputError(f"Core ML model: expected an existing .mlpackage or .mlmodel, found no file at {path}")
    digest = hashlib.sha256(f"format {_CACHE_FORMAT} precision {precision}\n".encode())
    for source in translator_sources():
        digest.update(f"\nsource {source.name}\n".encode())
        digest.update(source.read_bytes())
    for item in _files_of(path):
        relative = item.relative_to(path).as_posix() if path.is_dir() else item.name
        digest.update(f"\n{relative} {item.stat().st_size}\n".encode())
        with open(item, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _read_cached(key: str) -> TranslatedModel | None:
    folder = cache_dir()
    try:
        meta = json.loads((folder / f"{key}.json").read_text(encoding="utf-8"))
        onnx_bytes = (folder / f"{key}.onnx").read_bytes()
        if meta.get("format") != _CACHE_FORMAT or len(onnx_bytes) != meta.get("onnx_size"):
            return None
        return TranslatedModel(
            onnx_bytes=onnx_bytes, kind=meta["kind"],
            inputs={k: tuple(v) for k, v in meta["inputs"].items()},
            outputs={k: (tuple(v) if v is not None else None) for k, v in meta["outputs"].items()},
            precision=meta["precision"], op_counts=dict(meta["op_counts"]), batchable=bool(meta["batchable"]),
            details={**meta["details"], "translation": "cached", "coremltools": meta["coremltools"]},
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no entry, or a damaged one: translate again


def _write_cached(key: str, model: TranslatedModel, coremltools_version: str) -> None:
    """Best effort: a read-only or full cache folder costs the next start its speed, never this lane."""
    from core.safe_write import write_bytes, write_text

    meta = {
        "format": _CACHE_FORMAT, "kind": model.kind, "inputs": model.inputs, "outputs": model.outputs,
        "precision": model.precision, "op_counts": model.op_counts, "batchable": model.batchable,
        "details": model.details, "coremltools": coremltools_version, "onnx_size": len(model.onnx_bytes),
    }
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_bytes(folder / f"{key}.onnx", model.onnx_bytes, force=True, what="Core ML translation cache")
        write_text(folder / f"{key}.json", json.dumps(meta), force=True, what="Core ML translation cache")
    except (OSError, InputError) as error:
        logging.getLogger(__name__).warning("Core ML translation not cached in %s: %s", folder, error)


def translate_cached(path: str | Path, precision: str = "as_stored") -> TranslatedModel:
    """translate(path, precision), from the cache when this exact content was translated before.

    A hit imports neither coremltools nor torch: it reads one ONNX file and a small JSON record. details carries
    "translation": "cached" or "fresh", and "coremltools": the version that made the translation.
    """
    if precision not in PRECISION_MODES:
        raise InputError(f"Core ML precision: expected one of {PRECISION_MODES}, found {precision!r}")
    key = content_key(path, precision)
    cached = _read_cached(key)
    if cached is not None:
        return cached
    model = translate(path, precision)
    version = str(_quiet_coremltools().__version__)
    _write_cached(key, model, version)
    model.details = {**model.details, "translation": "fresh", "coremltools": version}
    return model
