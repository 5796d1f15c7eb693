"""Reading an ONNX file for `inspect` and `diff-weights`: tensors, operator counts, precision, and its convolution
and linear layers (Gemm/MatMul weights, with a following BatchNormalization when it was not folded)."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import InputError

from .shapes import TensorInfo
from .weights import BatchNorm, ModelDescription, WeightLayer, precision_of

def describe_onnx(path: Path) -> ModelDescription:
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(path))
    except Exception as error:
        raise InputError(f"model {path.name}: expected an ONNX protobuf, found: {error}") from error
    graph = model.graph
    weights = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:  # some exporters keep weights in Constant nodes
        if node.op_type == "Constant" and node.attribute and node.attribute[0].HasField("t"):
            weights[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    consumers: dict[str, list[Any]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    layers: list[WeightLayer] = []
    by_output: dict[str, WeightLayer] = {}
    for node in graph.node:
        if node.op_type == "Conv" and len(node.input) > 1 and node.input[1] in weights:
            weight = weights[node.input[1]]
            bias = weights.get(node.input[2]) if len(node.input) > 2 else None
            layer = WeightLayer(node.name or node.output[0], "conv", weight.astype(np.float32),
                                None if bias is None else bias.astype(np.float32), str(weight.dtype))
            layers.append(layer)
            by_output[node.output[0]] = layer
        elif node.op_type in ("Gemm", "MatMul") and len(node.input) > 1 and node.input[1] in weights:
            weight = weights[node.input[1]]
            trans_b = any(a.name == "transB" and a.i == 1 for a in node.attribute)
            matrix = weight if (node.op_type == "Gemm" and trans_b) else weight.T
            bias = weights.get(node.input[2]) if len(node.input) > 2 else None
            layers.append(WeightLayer(node.name or node.output[0], "linear", matrix.astype(np.float32),
                                      None if bias is None else bias.astype(np.float32), str(weight.dtype)))
        elif node.op_type == "BatchNormalization" and node.input[0] in by_output and len(consumers[node.input[0]]) == 1:
            gamma, beta, mean, var = (weights.get(n) for n in node.input[1:5])
            if all(v is not None for v in (gamma, beta, mean, var)):
                eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
                by_output[node.input[0]].bn = BatchNorm(gamma, beta, mean, var, float(eps))
    float_dtypes = Counter(str(w.dtype) for w in weights.values() if w.dtype.kind == "f" and w.size > 1)
    elem = {1: "float32", 10: "float16", 11: "float64", 7: "int64", 6: "int32"}

    def info(value: Any) -> TensorInfo:
        t = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim) if t.HasField("shape") else None
        return TensorInfo(value.name, dims, elem.get(t.elem_type, str(t.elem_type)))

    initializer_names = set(weights)
    return ModelDescription(
        path, "onnx", [info(v) for v in graph.input if v.name not in initializer_names], [info(v) for v in graph.output],
        precision_of(float_dtypes), dict(Counter(n.op_type for n in graph.node if n.op_type != "Constant")),
        int(sum(w.size for name, w in weights.items() if w.dtype.kind == "f" and not _only_resize_arguments(name, consumers))),
        layers,
        [f"opset {', '.join(str(o.version) for o in model.opset_import)}; producer {model.producer_name or '?'}"],
    )


def _only_resize_arguments(name: str, consumers: dict[str, list[Any]]) -> bool:
    """Resize's scales and roi are float initializers too, but no one would call them parameters."""
    users = consumers.get(name, [])
    return bool(users) and all(node.op_type in ("Resize", "Upsample") and name in node.input[1:] for node in users)
