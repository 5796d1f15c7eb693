"""Open whatever file a lane names as its encoder or generator, by the kind of file it is.

Sessions name files, not runtimes: the suffix says which backend can read it. The Core ML and PyTorch backends are
imported only when such a file is opened, so a machine without coremltools or torch still runs ONNX lanes, and the
registry works before those modules exist.

Expected of the lazily imported modules (written separately):
  backends.coreml_backend: CoreMLEncoder(path, compute_unit=..., input_name=..., output_name=..., threads=...),
                           CoreMLGenerator(path, compute_unit=..., image_input=..., audio_input=..., output_name=...,
                                           threads=...)  (threads: for its CPU emulation)
  backends.torch_backend:  TorchEncoder(path, threads=...), TorchGenerator(path, threads=...)
Only options the user actually set are passed on, so each backend keeps its own defaults.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Mapping

from core.errors import InputError

from core.filekinds import file_kind
from core.interfaces import Encoder, Generator

# Core ML: mode is "auto" (native on macOS, emulated elsewhere), "native" or "emulated"; precision is "as_stored",
# "fp32" or "fp16". PyTorch generators: size and width override what the checkpoint's shapes imply; PyTorch lanes: device
# "auto" (default: cuda, then mps, then cpu, whichever is present), "cuda", "mps" or "cpu", shown in the provenance.
KNOWN_OPTIONS = ("provider", "input_name", "output_name", "image_input", "audio_input", "threads", "compute_unit",
                 "mode", "precision", "size", "width", "device")

ENCODER_OPTIONS = {
    "onnx": ("provider", "input_name", "output_name", "threads"),
    "coreml": ("compute_unit", "input_name", "output_name", "mode", "precision", "threads"),
    "torch": ("threads", "device"),
}
GENERATOR_OPTIONS = {
    "onnx": ("provider", "image_input", "audio_input", "output_name", "threads"),
    "coreml": ("compute_unit", "image_input", "audio_input", "output_name", "mode", "precision", "threads"),
    "torch": ("threads", "size", "width", "device"),
}
LAZY_BACKENDS = {
    "coreml": ("backends.coreml_backend", "Core ML", "CoreMLEncoder", "CoreMLGenerator"),
    "torch": ("backends.torch_backend", "PyTorch", "TorchEncoder", "TorchGenerator"),
}
def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _positive_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < float("inf")


# What each option's value must be, checked before any backend sees it ("many" threads must be a message).
OPTION_TYPES: dict[str, tuple[Any, str]] = {
    "threads": (_positive_int, "a whole number >= 1"),
    "size": (lambda v: v in (160, 320) and not isinstance(v, bool), "160 or 320"),
    "width": (_positive_number, "a number > 0"),
    **{key: (lambda v: isinstance(v, str) and v.strip() != "", "a non-empty string")
       for key in ("provider", "input_name", "output_name", "image_input", "audio_input", "compute_unit", "mode",
                   "precision")},
}


def _check_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    options = dict(options or {})
    unknown = sorted(set(options) - set(KNOWN_OPTIONS))
    if unknown:
        raise InputError(f"unknown backend option(s) {', '.join(unknown)}; known options: {', '.join(KNOWN_OPTIONS)}")
    for key, value in options.items():
        accepts, expected = OPTION_TYPES.get(key, (lambda v: True, ""))
        if value is not None and not accepts(value):
            raise InputError(f"option {key} = {value!r}: expected {expected}")
    return options


def _picked(options: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: options[k] for k in keys if options.get(k) is not None}


def _lazy_class(kind: str, role: str) -> Any:
    """Import the backend module only now; a missing module means the format is not supported yet."""
    module_name, label, encoder_class, generator_class = LAZY_BACKENDS[kind]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise InputError(f"{label} models are not supported yet") from exc
        raise InputError(f"{label} models need the Python package {exc.name!r}, which is not installed") from exc
    class_name = encoder_class if role == "encoder" else generator_class
    cls = getattr(module, class_name, None)
    if cls is None:
        raise InputError(f"{label} {role}s are not supported yet ({module_name} has no {class_name})")
    return cls


def _model_kind(path: str | Path, role: str) -> str:
    kind = file_kind(path, role)
    if kind == "dump":
        raise InputError(f"{role} {path}: expected a model file, found a dump (the pipeline reads dumps itself)")
    return kind


def open_encoder(path: str | Path, options: Mapping[str, Any] | None = None) -> Encoder:
    """An Encoder for an .onnx, .mlpackage/.mlmodel or .pth/.pt file."""
    options = _check_options(options)
    kind = _model_kind(path, "encoder")
    if kind == "onnx":
        from .onnx_backend import OnnxEncoder

        return OnnxEncoder(path, **_picked(options, ENCODER_OPTIONS["onnx"]))
    return _lazy_class(kind, "encoder")(path, **_picked(options, ENCODER_OPTIONS[kind]))


def open_generator(path: str | Path, options: Mapping[str, Any] | None = None) -> Generator:
    """A Generator for an .onnx, .mlpackage/.mlmodel or .pth/.pt file."""
    options = _check_options(options)
    kind = _model_kind(path, "generator")
    if kind == "onnx":
        from .onnx_backend import OnnxGenerator

        return OnnxGenerator(path, **_picked(options, GENERATOR_OPTIONS["onnx"]))
    return _lazy_class(kind, "generator")(path, **_picked(options, GENERATOR_OPTIONS[kind]))


class _Registry:
    """The ModelOpener the pipeline is handed: these module functions, as one object."""

    open_encoder = staticmethod(open_encoder)
    open_generator = staticmethod(open_generator)


MODELS = _Registry()
