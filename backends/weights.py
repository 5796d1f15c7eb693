"""What every model reader produces: a file's layers in one form, and the signs of an untrained network.

The readers (``onnx_inspection``, ``coreml_inspection``, ``torch_inspection``, one beside each backend) fill these
records; ``inspection.describe`` picks the reader, and the CLI's ``diff-weights`` compares two descriptions.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .shapes import TensorInfo

# A layer "looks untrained" when its weights fit PyTorch's default init: kaiming_uniform(a=sqrt(5)) for Conv2d and
# Linear draws from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), whose standard deviation is bound/sqrt(3).
BOUND_SLACK = 1.002  # fp16 storage moves a value by at most 2^-11 relative; a folded default BN by 1/sqrt(1+1e-5)
STD_TOLERANCE = 0.15  # |std / (bound/sqrt(3)) - 1| below this, with enough values for the std to be stable
MIN_VALUES_FOR_STD = 64


@dataclass
class BatchNorm:
    gamma: np.ndarray
    beta: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    eps: float = 1e-5

    def is_default(self) -> bool:
        """nn.BatchNorm2d straight after construction: weight 1, bias 0, running mean 0, running variance 1."""
        return bool(np.all(self.gamma == 1) and np.all(self.beta == 0) and np.all(self.mean == 0) and np.all(self.var == 1))


@dataclass
class WeightLayer:
    """One convolution or linear layer as a file stores it; `bn` is the batch norm after it when not folded."""

    name: str
    kind: str  # "conv" or "linear"
    weight: np.ndarray
    bias: np.ndarray | None
    stored_dtype: str
    bn: BatchNorm | None = None

    def effective(self) -> tuple[np.ndarray, np.ndarray]:
        """Weight and bias with the batch norm folded in, which is what a folded file stores."""
        weight = self.weight.astype(np.float64)
        bias = np.zeros(weight.shape[0]) if self.bias is None else self.bias.astype(np.float64)
        if self.bn is None:
            return weight, bias
        scale = self.bn.gamma.astype(np.float64) / np.sqrt(self.bn.var.astype(np.float64) + self.bn.eps)
        folded = weight * scale.reshape(-1, *([1] * (weight.ndim - 1)))
        return folded, (bias - self.bn.mean) * scale + self.bn.beta

    def flags(self) -> list[str]:
        found = []
        if looks_default_init(self.weight):
            found.append("looks untrained (default init)")
        if self.bn is not None and self.bn.is_default():
            found.append("batch norm at defaults (mean 0, var 1)")
        return found

    def stats(self) -> dict[str, Any]:
        w = self.weight.astype(np.float64)
        return {"name": self.name, "kind": self.kind, "shape": list(self.weight.shape), "dtype": self.stored_dtype,
                "bias": self.bias is not None, "batch_norm": self.bn is not None, "min": float(w.min()),
                "max": float(w.max()), "mean": float(w.mean()), "std": float(w.std()),
                "abs_max_over_default_bound": float(np.abs(w).max() * math.sqrt(fan_in(self.weight))),
                "flags": self.flags()}


def fan_in(weight: np.ndarray) -> int:
    return int(np.prod(weight.shape[1:])) if weight.ndim > 1 else 1


def looks_default_init(weight: np.ndarray) -> bool:
    """True when every value lies within 1/sqrt(fan_in) and the spread is that of a uniform draw over it."""
    w = np.asarray(weight, dtype=np.float64)
    if w.ndim < 2 or not np.any(w):
        return False
    bound = 1.0 / math.sqrt(fan_in(w))
    if np.abs(w).max() > bound * BOUND_SLACK:
        return False
    if w.size < MIN_VALUES_FOR_STD:
        return True
    return abs(w.std() / (bound / math.sqrt(3.0)) - 1.0) < STD_TOLERANCE


@dataclass
class ModelDescription:
    path: Path
    format: str  # "onnx", "coreml-mlprogram", "coreml-neuralnetwork", "pytorch"
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    precision: str
    op_counts: dict[str, int]
    parameter_count: int
    layers: list[WeightLayer] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        def tensor(t: TensorInfo) -> dict[str, Any]:
            return {"name": t.name, "shape": None if t.shape is None else [d if isinstance(d, int) else None for d in t.shape],
                    "dtype": t.dtype}

        return {"path": str(self.path), "format": self.format, "inputs": [tensor(t) for t in self.inputs],
                "outputs": [tensor(t) for t in self.outputs], "precision": self.precision,
                "op_counts": dict(sorted(self.op_counts.items())), "parameter_count": self.parameter_count,
                "layers": [layer.stats() for layer in self.layers], "notes": self.notes}


def precision_of(dtypes: Counter[str]) -> str:
    kinds = {d for d in dtypes if d in ("float16", "float32", "float64")}
    if kinds == {"float16"}:
        return "fp16"
    if kinds == {"float32"}:
        return "fp32"
    return "mixed" if kinds else "unknown"
