"""The weight comparison behind `diff-weights` and the window's Diagnostics dock: are two files (any formats) the
same trained network?

Layers are paired by order and shape, batch norm is folded where one file folded it, and each pair gets a cosine,
a scale ratio and a max difference (``pipeline.metrics.compare``); layers that still hold PyTorch's default
initialisation are flagged by name. The files are read by ``backends.inspection.describe``. It lives in workspace/
because it needs both the backends' readers and the pipeline's metrics (which never import each other), and both
the CLI (cli/diff_weights.py, cli/report.py) and the window (ui/diagnostics_panel.py) use it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from backends.inspection import ModelDescription, WeightLayer, describe
from core.errors import InputError
from pipeline.metrics import compare

SAME_COSINE = 0.999
SAME_SCALE = 1e-2


@dataclass
class LayerComparison:
    a: str | None
    b: str | None
    shape: list[int]
    cosine: float | None
    scale: float | None
    max_abs: float | None
    flags: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "shape": self.shape, "cosine": self.cosine, "scale": self.scale,
                "max_abs": self.max_abs, "flags": self.flags}


@dataclass
class WeightDiff:
    a: ModelDescription
    b: ModelDescription
    layers: list[LayerComparison]
    verdict: str
    untrained_a: list[str]
    untrained_b: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"a": str(self.a.path), "b": str(self.b.path), "format_a": self.a.format, "format_b": self.b.format,
                "layers": [layer.to_json() for layer in self.layers], "verdict": self.verdict,
                "untrained_layers_a": self.untrained_a, "untrained_layers_b": self.untrained_b}


def pair_layers(a: list[WeightLayer], b: list[WeightLayer]) -> list[tuple[WeightLayer | None, WeightLayer | None]]:
    """Pair the k-th layer of each weight shape in A with the k-th of that shape in B (names differ by format).

    Pairing within a shape keeps the two orders from having to agree across shapes, which exporters do not
    guarantee; within a shape the order is each file's execution order.
    """
    queues: dict[tuple[int, ...], list[WeightLayer]] = defaultdict(list)
    for layer in b:
        queues[tuple(layer.weight.shape)].append(layer)
    pairs: list[tuple[WeightLayer | None, WeightLayer | None]] = []
    for layer in a:
        queue = queues.get(tuple(layer.weight.shape))
        pairs.append((layer, queue.pop(0) if queue else None))
    leftovers = [layer for queue in queues.values() for layer in queue]
    pairs.extend((None, layer) for layer in sorted(leftovers, key=b.index))
    return pairs


def _compare_layers(la: WeightLayer, lb: WeightLayer) -> tuple[float, float, float]:
    """Cosine, k (A ≈ k × B) and max |A - B| over weight and bias together, batch norms folded: metrics.compare,
    the same figures the report gives for features."""
    wa, ba = la.effective()
    wb, bb = lb.effective()
    result = compare(np.concatenate([wa.ravel(), ba.ravel()]), np.concatenate([wb.ravel(), bb.ravel()]))
    # An all-zero layer has no direction (NaN): it is not the same as a trained one.
    cosine = 0.0 if np.isnan(result.cosine) else float(result.cosine)
    return cosine, float(result.scale), float(result.max_abs)


def diff_weights(path_a: str | Path, path_b: str | Path) -> WeightDiff:
    """Compare the weights of two files of one network, layer by layer, and say what the differences mean."""
    a, b = describe(path_a), describe(path_b)
    if not a.layers or not b.layers:
        empty = a.path.name if not a.layers else b.path.name
        raise InputError(f"diff-weights: expected convolution or linear layers in both files, found none in {empty}")
    comparisons: list[LayerComparison] = []
    for la, lb in pair_layers(a.layers, b.layers):
        flags = [f"a: {f}" for f in (la.flags() if la else [])] + [f"b: {f}" for f in (lb.flags() if lb else [])]
        if la is None or lb is None:
            only = la or lb
            assert only is not None
            flags.append("unpaired: only in " + ("a" if la else "b"))
            comparisons.append(LayerComparison(la.name if la else None, lb.name if lb else None,
                                               list(only.weight.shape), None, None, None, flags))
            continue
        cosine, scale, max_abs = _compare_layers(la, lb)
        if cosine < SAME_COSINE:
            flags.append("weights differ")
        comparisons.append(LayerComparison(la.name, lb.name, list(la.weight.shape), cosine, scale, max_abs, flags))
    untrained_a = [l.name for l in a.layers if "looks untrained (default init)" in l.flags()]
    untrained_b = [l.name for l in b.layers if "looks untrained (default init)" in l.flags()]
    return WeightDiff(a, b, comparisons, _verdict(a, b, comparisons, untrained_a, untrained_b), untrained_a, untrained_b)


def _verdict(a: ModelDescription, b: ModelDescription, layers: list[LayerComparison],
             untrained_a: list[str], untrained_b: list[str]) -> str:
    paired = [c for c in layers if c.cosine is not None]
    unpaired = len(layers) - len(paired)
    parts = []
    for label, desc, untrained in (("A", a, untrained_a), ("B", b, untrained_b)):
        if len(untrained) * 2 > len(desc.layers):
            parts.append(f"{label} ({desc.path.name}) looks untrained: {len(untrained)} of {len(desc.layers)} layers "
                         f"match PyTorch's default initialisation ({_names(untrained)})")
    differing = [c for c in paired if c.cosine is not None and c.cosine < SAME_COSINE]
    if parts:
        verdict = "; ".join(parts) + ". Its outputs cannot be fixed by scaling: load the trained weights strictly."
    elif paired and not differing and all(abs((c.scale or 0) - 1) < SAME_SCALE for c in paired):
        verdict = f"same weights: all {len(paired)} paired layers agree (cosine >= {SAME_COSINE})"
    elif differing:
        verdict = (f"different weights: {len(differing)} of {len(paired)} paired layers differ "
                   f"(cosine < {SAME_COSINE}): {_names([c.a or '' for c in differing])}")
    else:
        scaled = [c for c in paired if abs((c.scale or 0) - 1) >= SAME_SCALE]
        verdict = (f"weights agree in direction but differ in scale in {len(scaled)} of {len(paired)} paired layers: "
                   f"{_names([c.a or '' for c in scaled])}")
    if unpaired:
        verdict += f"; {unpaired} layers could not be paired by shape (different architectures?)"
    extra_ops = _operation_difference(a, b)
    if extra_ops:
        verdict += f"; the graphs differ beyond their weights: {extra_ops}"
    return verdict


# Operations that only change how values are stored (fp16 programs cast at their inputs and outputs).
_STORAGE_OPS = {"cast", "identity", "Cast", "Identity"}


def _operation_difference(a: ModelDescription, b: ModelDescription) -> str:
    """Operations one graph has more of than the other, when both are the same format (op names differ across
    formats). Identical weights do not make identical models: a Core ML encoder with an extra `mul` (the "x200
    fix") holds the trained weights yet computes something else."""
    if a.format != b.format or a.format == "pytorch":
        return ""
    parts = []
    for label, first, second in (("A", a, b), ("B", b, a)):
        more = {op: n - second.op_counts.get(op, 0) for op, n in first.op_counts.items()
                if op not in _STORAGE_OPS and n > second.op_counts.get(op, 0)}
        if more:
            parts.append(f"{label} has " + ", ".join(f"{op} x{n}" for op, n in sorted(more.items())) + " more")
    return "; ".join(parts)


def _names(names: list[str], limit: int = 6) -> str:
    return ", ".join(names[:limit]) + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")
