"""Reading a Core ML file (.mlpackage or .mlmodel; ML Program or NeuralNetwork) for `inspect` and `diff-weights`,
through the emulator's parser, never coremltools' MLModel (which rewrites a package's Manifest.json)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import InputError

from .shapes import TensorInfo
from .weights import BatchNorm, ModelDescription, WeightLayer

def describe_coreml(path: Path) -> ModelDescription:
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
