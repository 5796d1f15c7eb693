"""Describe a model file (ONNX, Core ML, .pth) and compare the weights of two files of one network.

The bug that started this project was a Core ML encoder that silently kept its random initial weights. Its outputs
were 100-200x too small, which looked like a scale problem; the weights tell the real story at a glance. So this
module reads the layers of any supported file into one form (weight, bias, and the batch norm that follows, if it
was not folded), pairs the layers of two files by order and shape (names never agree across formats), compares the
effective weights, and flags layers whose weights look like PyTorch's default initialisation.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import InputError

from .shapes import TensorInfo

# A layer "looks untrained" when its weights fit PyTorch's default init: kaiming_uniform(a=sqrt(5)) for Conv2d and
# Linear draws from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), whose standard deviation is bound/sqrt(3).
BOUND_SLACK = 1.002  # fp16 storage moves a value by at most 2^-11 relative; a folded default BN by 1/sqrt(1+1e-5)
STD_TOLERANCE = 0.15  # |std / (bound/sqrt(3)) - 1| below this, with enough values for the std to be stable
MIN_VALUES_FOR_STD = 64
SAME_COSINE = 0.999
SAME_SCALE = 1e-2


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


def describe(path: str | Path) -> ModelDescription:
    """Read any supported model file; the kind is decided by its suffix."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"model: expected an .onnx, .mlpackage, .mlmodel, .pth or .pt file, found nothing at {path}")
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        return _describe_onnx(path)
    if suffix in (".mlpackage", ".mlmodel"):
        return _describe_coreml(path)
    if suffix in (".pth", ".pt"):
        return _describe_torch(path)
    raise InputError(f"model {path.name}: expected .onnx, .mlpackage, .mlmodel, .pth or .pt, found {suffix or 'no suffix'}")


def _precision_of(dtypes: Counter[str]) -> str:
    kinds = {d for d in dtypes if d in ("float16", "float32", "float64")}
    if kinds == {"float16"}:
        return "fp16"
    if kinds == {"float32"}:
        return "fp32"
    return "mixed" if kinds else "unknown"


# --- ONNX ---------------------------------------------------------------------------------------------------------


def _describe_onnx(path: Path) -> ModelDescription:
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
        _precision_of(float_dtypes), dict(Counter(n.op_type for n in graph.node if n.op_type != "Constant")),
        int(sum(w.size for name, w in weights.items() if w.dtype.kind == "f" and not _only_resize_arguments(name, consumers))),
        layers,
        [f"opset {', '.join(str(o.version) for o in model.opset_import)}; producer {model.producer_name or '?'}"],
    )


def _only_resize_arguments(name: str, consumers: dict[str, list[Any]]) -> bool:
    """Resize's scales and roi are float initializers too, but no one would call them parameters."""
    users = consumers.get(name, [])
    return bool(users) and all(node.op_type in ("Resize", "Upsample") and name in node.input[1:] for node in users)


# --- Core ML ------------------------------------------------------------------------------------------------------


def _describe_coreml(path: Path) -> ModelDescription:
    from .coreml_emulator import load_mil_function, load_spec, translate

    spec, weights_dir = load_spec(path)
    kind = spec.WhichOneof("Type")
    inputs = [_coreml_tensor(f) for f in spec.description.input]
    outputs = [_coreml_tensor(f) for f in spec.description.output]
    notes = [f"specificationVersion {spec.specificationVersion}"]
    try:
        precision = translate(path).precision
    except InputError as error:
        precision, notes = "unknown", notes + [f"not emulatable: {error}"]
    if kind == "mlProgram":
        function = load_mil_function(spec, weights_dir, path.name)
        layers, counts, params = _mil_layers(function)
        return ModelDescription(path, "coreml-mlprogram", inputs, outputs, precision, counts, params, layers, notes)
    if kind == "neuralNetwork":
        layers, counts, params = _nn_layers(spec.neuralNetwork.layers)
        return ModelDescription(path, "coreml-neuralnetwork", inputs, outputs, precision, counts, params, layers, notes)
    raise InputError(f"model {path.name}: expected an ML Program or NeuralNetwork Core ML model, found {kind}")


def _coreml_tensor(feature: Any) -> TensorInfo:
    array = feature.type.multiArrayType
    dtypes = {65568: "float32", 65552: "float16", 65600: "float64", 131104: "int32"}
    return TensorInfo(feature.name, tuple(int(d) for d in array.shape) or None, dtypes.get(array.dataType, "unknown"))


def _mil_layers(function: Any) -> tuple[list[WeightLayer], dict[str, int], int]:
    layers: list[WeightLayer] = []
    by_output: dict[str, WeightLayer] = {}
    params = 0
    counts = Counter(op.op_type for op in function.operations if op.op_type != "const")
    for op in function.operations:
        if op.op_type == "const":
            value = op.outputs[0].val
            if isinstance(value, np.ndarray) and value.dtype.kind == "f" and value.size > 1:
                params += value.size
            continue
        weight_var = op.inputs.get("weight")
        if op.op_type in ("conv", "linear") and weight_var is not None and weight_var.val is not None:
            weight = np.asarray(weight_var.val)
            bias_var = op.inputs.get("bias")
            bias = None if bias_var is None or bias_var.val is None else np.asarray(bias_var.val, dtype=np.float32)
            layer = WeightLayer(op.name, "conv" if op.op_type == "conv" else "linear", weight.astype(np.float32), bias,
                                str(weight.dtype))
            layers.append(layer)
            by_output[op.outputs[0].name] = layer
        elif op.op_type == "batch_norm" and op.inputs["x"].name in by_output:
            get = lambda k: np.asarray(op.inputs[k].val, dtype=np.float32) if op.inputs.get(k) is not None else None  # noqa: E731
            channels = by_output[op.inputs["x"].name].weight.shape[0]
            gamma = get("gamma") if get("gamma") is not None else np.ones(channels, np.float32)
            beta = get("beta") if get("beta") is not None else np.zeros(channels, np.float32)
            eps = float(op.inputs["epsilon"].val) if op.inputs.get("epsilon") is not None else 1e-5
            by_output[op.inputs["x"].name].bn = BatchNorm(gamma, beta, get("mean"), get("variance"), eps)
    return layers, dict(counts), int(params)


def _nn_layers(nn_layers: Any) -> tuple[list[WeightLayer], dict[str, int], int]:
    layers: list[WeightLayer] = []
    by_output: dict[str, WeightLayer] = {}
    params = 0

    def values(w: Any) -> tuple[np.ndarray, str]:
        if len(w.floatValue):
            return np.asarray(w.floatValue, np.float32), "float32"
        if len(w.float16Value):
            return np.frombuffer(w.float16Value, np.float16).astype(np.float32), "float16"
        return np.zeros(0, np.float32), "quantized"

    for layer in nn_layers:
        kind = layer.WhichOneof("layer")
        if kind == "convolution":
            p = layer.convolution
            w, dtype = values(p.weights)
            weight = w.reshape(int(p.outputChannels), int(p.kernelChannels), *[int(k) for k in p.kernelSize])
            bias = values(p.bias)[0] if p.hasBias else None
            entry = WeightLayer(layer.name, "conv", weight, bias, dtype)
        elif kind == "innerProduct":
            p = layer.innerProduct
            w, dtype = values(p.weights)
            entry = WeightLayer(layer.name, "linear", w.reshape(int(p.outputChannels), int(p.inputChannels)),
                                values(p.bias)[0] if p.hasBias else None, dtype)
        elif kind == "batchnorm" and layer.input[0] in by_output:
            p = layer.batchnorm
            by_output[layer.input[0]].bn = BatchNorm(values(p.gamma)[0], values(p.beta)[0], values(p.mean)[0],
                                                     values(p.variance)[0], float(p.epsilon or 1e-5))
            params += 4 * int(p.channels)
            continue
        else:
            continue
        layers.append(entry)
        by_output[layer.output[0]] = entry
        params += entry.weight.size + (0 if entry.bias is None else entry.bias.size)
    counts = Counter(layer.WhichOneof("layer") for layer in nn_layers)
    return layers, dict(counts), int(params)


# --- PyTorch ------------------------------------------------------------------------------------------------------


def _describe_torch(path: Path) -> ModelDescription:
    from .torch_backend import is_encoder_state, load_state_dict

    state = {k: v.detach().cpu().numpy() for k, v in load_state_dict(path).items() if hasattr(v, "detach")}
    layers_by_prefix: dict[str, WeightLayer] = {}
    order: list[str] = []
    previous: WeightLayer | None = None
    for key, value in state.items():
        prefix, _, leaf = key.rpartition(".")
        if leaf == "weight" and value.ndim in (2, 4):
            bias = state.get(f"{prefix}.bias")
            previous = WeightLayer(prefix, "conv" if value.ndim == 4 else "linear", value.astype(np.float32),
                                   None if bias is None else bias.astype(np.float32), str(value.dtype))
            layers_by_prefix[prefix] = previous
            order.append(prefix)
        elif leaf == "running_mean" and previous is not None and previous.bn is None:
            # In these networks a batch norm is registered right after the conv it normalises.
            previous.bn = BatchNorm(state[f"{prefix}.weight"], state[f"{prefix}.bias"], value, state[f"{prefix}.running_var"])
    notes = []
    inputs: list[TensorInfo] = []
    outputs: list[TensorInfo] = []
    if is_encoder_state(state):
        inputs, outputs = [TensorInfo("mel", (None, 1, 80, 16))], [TensorInfo("features", (None, 512))]
        notes.append("AVE audio encoder (layers in execution order = state-dict order)")
    elif "inc.inconv.0.conv.6.weight" in state:
        execution = _generator_execution_order(path)
        if execution:
            order = [p for p in execution if p in layers_by_prefix] + [p for p in order if p not in execution]
        from .torch_backend import infer_generator_layout

        size, width = infer_generator_layout(state)
        inputs = [TensorInfo("image", (None, 6, size, size)), TensorInfo("audio", (None, 32, 16, 16))]
        outputs = [TensorInfo("output", (None, 3, size, size))]
        notes.append(f"U-Net generator size {size} width {width:g} (layers in execution order)")
    else:
        notes.append("unknown architecture: layers in state-dict order")
    kinds = Counter(key.rpartition(".")[2] for key in state)
    counts = {"conv": sum(1 for l in layers_by_prefix.values() if l.kind == "conv"),
              "linear": sum(1 for l in layers_by_prefix.values() if l.kind == "linear"),
              "batch_norm": kinds.get("running_mean", 0)}
    params = int(sum(v.size for k, v in state.items() if v.dtype.kind == "f" and not k.endswith(("running_mean", "running_var"))))
    precision = _precision_of(Counter(str(v.dtype) for v in state.values() if v.dtype.kind == "f"))
    return ModelDescription(path, "pytorch", inputs, outputs, precision, counts, params,
                            [layers_by_prefix[p] for p in order], notes)


def _generator_execution_order(path: Path) -> list[str]:
    """Module names of the generator's convs in the order a forward pass calls them (state-dict order differs:
    the audio branch is registered first but runs after the image encoder)."""
    try:
        import torch

        from .torch_backend import build_generator, load_state_dict

        model = build_generator(load_state_dict(path))
    except (ImportError, InputError):
        return []
    called: list[str] = []
    hooks = [module.register_forward_hook(lambda m, i, o, name=name: called.append(name))
             for name, module in model.named_modules() if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.inference_mode():
        model(torch.zeros(1, 6, model.size, model.size), torch.zeros(1, 32, 16, 16))
    for hook in hooks:
        hook.remove()
    return called


# --- weight comparison --------------------------------------------------------------------------------------------


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
    wa, ba = la.effective()
    wb, bb = lb.effective()
    va = np.concatenate([wa.ravel(), ba.ravel()])
    vb = np.concatenate([wb.ravel(), bb.ravel()])
    norm = float(np.linalg.norm(va) * np.linalg.norm(vb))
    cosine = float(va @ vb / norm) if norm > 0 else 0.0
    denominator = float(vb @ vb)
    scale = float(va @ vb / denominator) if denominator > 0 else float("nan")
    return cosine, scale, float(np.abs(va - vb).max())


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
