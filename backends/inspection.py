"""Describe a model file (ONNX, Core ML, .pth): `describe` picks the reader beside the file's backend.

The bug that started this project was a Core ML encoder that silently kept its random initial weights. Its outputs
were 100-200x too small, which looked like a scale problem; the weights tell the real story at a glance. So every
reader turns a file's layers into one form (``backends/weights.py``: weight, bias, and the batch norm that follows,
if it was not folded) and flags layers whose weights look like PyTorch's default initialisation. Comparing two
descriptions is ``cli/diff_weights.py``'s (it reuses ``pipeline.metrics``, which backends may not import).
Readers are imported when a file of their kind is read: onnx, coremltools' protobufs and torch load slowly.
"""

from __future__ import annotations

from pathlib import Path

from core.errors import InputError

from .weights import BatchNorm, ModelDescription, WeightLayer, fan_in, looks_default_init

__all__ = ["BatchNorm", "ModelDescription", "WeightLayer", "describe", "fan_in", "looks_default_init"]


def describe(path: str | Path) -> ModelDescription:
    """Read any supported model file; the kind is decided by its suffix."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"model: expected an .onnx, .mlpackage, .mlmodel, .pth or .pt file, found nothing at {path}")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from .onnx_inspection import describe_onnx

        return describe_onnx(path)
    if suffix in (".mlpackage", ".mlmodel"):
        from .coreml_inspection import describe_coreml

        return describe_coreml(path)
    if suffix in (".pth", ".pt"):
        from .torch_inspection import describe_torch

        return describe_torch(path)
    raise InputError(f"model {path.name}: expected .onnx, .mlpackage, .mlmodel, .pth or .pt, found {suffix or 'no suffix'}")
