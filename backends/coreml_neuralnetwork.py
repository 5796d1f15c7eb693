"""NeuralNetwork (.mlmodel) -> ONNX: the older layer list translated layer by layer (see coreml_emulator.py)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from core.errors import InputError

from .coreml_graph import _FP16_EXACT_OPS, TranslatedModel, _GraphBuilder


class _NeuralNetworkTranslator:
    """The older layer list. Layers are fp32 unless weights are stored as fp16; Core ML's CPU runs them in fp32."""

    def __init__(self, spec: Any, precision: str, label: str) -> None:
        self.spec = spec
        self.precision = precision
        self.label = label
        self.g = _GraphBuilder()
        self.g.round_constants = precision == "fp16"
        self.names: dict[str, str] = {}
        self.batchable = True
        self.fp16_weights = 0
        self.fp32_weights = 0

    def run(self) -> TranslatedModel:
        network = self.spec.neuralNetwork
        layers = list(network.layers)
        counts = Counter(layer.WhichOneof("layer") for layer in layers)
        unsupported = sorted({k for k in counts if k not in _NN_LAYERS})
        if unsupported:
            raise InputError(
                f"Core ML model {self.label}: expected only NeuralNetwork layers the emulator supports "
                f"({', '.join(sorted(_NN_LAYERS))}); found unsupported {unsupported} among the layers met: "
                + ", ".join(f"{k} x{v}" for k, v in sorted(counts.items()))
            )
        if len(network.preprocessing):
            raise InputError(f"Core ML model {self.label}: expected no image preprocessing, found {len(network.preprocessing)} entries")
        inputs: dict[str, tuple[int, ...]] = {}
        for feature in self.spec.description.input:
            array = feature.type.multiArrayType
            if not array.shape:
                raise InputError(f"Core ML model {self.label}: input {feature.name}: expected a multi-array with a fixed shape, found none")
            inputs[feature.name] = tuple(int(d) for d in array.shape)
            self.names[feature.name] = self.g.round_fp16(feature.name) if self.precision == "fp16" else feature.name
        for layer in layers:
            kind = layer.WhichOneof("layer")
            result = _NN_LAYERS[kind](self, layer, getattr(layer, kind))
            if self.precision == "fp16" and kind not in _FP16_EXACT_OPS:
                result = self.g.round_fp16(result)
            self.names[layer.output[0]] = result
        outputs: dict[str, tuple[int, ...] | None] = {}
        onnx_outputs = []
        for feature in self.spec.description.output:
            onnx_outputs.append(self.g.node("Identity", [self.names[feature.name]], feature.name))
            shape = tuple(int(d) for d in feature.type.multiArrayType.shape)
            outputs[feature.name] = shape or None
        stored = "fp16" if self.fp16_weights and not self.fp32_weights else ("mixed" if self.fp16_weights else "fp32")
        precision = f"{stored} weights, fp32 compute" if stored != "fp32" else "fp32"
        if self.precision != "as_stored":
            precision = f"{precision} (emulated as {self.precision})"
        onnx_bytes = self.g.build(inputs, onnx_outputs, batch_dynamic=self.batchable)
        outputs = _infer_missing_shapes(onnx_bytes, outputs, inputs)
        return TranslatedModel(onnx_bytes, "neuralnetwork", inputs, outputs, precision, dict(counts), self.batchable,
                               {"specificationVersion": str(self.spec.specificationVersion)})

    def x(self, layer: Any, index: int = 0) -> str:
        return self.names[layer.input[index]]

    def weights(self, params: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
        """WeightParams hold fp32 floats or fp16 bytes; quantized weights are refused (not emulated)."""
        if len(params.floatValue):
            self.fp32_weights += 1
            values = np.asarray(params.floatValue, dtype=np.float32)
        elif len(params.float16Value):
            self.fp16_weights += 1
            values = np.frombuffer(params.float16Value, dtype=np.float16).astype(np.float32)
        else:
            raise InputError(f"Core ML model {self.label}: {what}: expected fp32 or fp16 weights, found quantized or empty weights")
        if values.size != int(np.prod(shape)):
            raise InputError(f"Core ML model {self.label}: {what}: expected {int(np.prod(shape))} values for {shape}, found {values.size}")
        return values.reshape(shape)


def _infer_missing_shapes(onnx_bytes: bytes, outputs: dict[str, tuple[int, ...] | None],
                          inputs: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...] | None]:
    """NeuralNetwork specs often leave output shapes out; ONNX shape inference recovers them from the layers."""
    import onnx

    if all(outputs.values()):
        return outputs
    batch = next(iter(inputs.values()))[0] if inputs else 1
    inferred = onnx.shape_inference.infer_shapes(onnx.load_from_string(onnx_bytes))
    found: dict[str, tuple[int, ...] | None] = dict(outputs)
    for value in inferred.graph.output:
        if found.get(value.name) is None and value.type.tensor_type.HasField("shape"):
            dims = value.type.tensor_type.shape.dim
            if all(d.HasField("dim_value") or d.HasField("dim_param") for d in dims):
                found[value.name] = tuple(int(d.dim_value) if d.HasField("dim_value") else batch for d in dims)
    return found


def _nn_convolution(t: _NeuralNetworkTranslator, layer: Any, p: Any) -> str:
    if p.isDeconvolution:
        raise InputError(f"Core ML model {t.label}: layer {layer.name}: expected a convolution, found a deconvolution")
    kernel = [int(k) for k in p.kernelSize] or [3, 3]
    weight = t.weights(p.weights, (int(p.outputChannels), int(p.kernelChannels), *kernel), f"layer {layer.name}")
    strides = [int(s) for s in p.stride] or [1, 1]
    dilations = [int(d) for d in p.dilationFactor] or [1, 1]
    if p.WhichOneof("ConvolutionPaddingType") == "valid":
        borders = p.valid.paddingAmounts.borderAmounts
        pads = [int(b.startEdgeSize) for b in borders] + [int(b.endEdgeSize) for b in borders] if len(borders) else [0, 0, 0, 0]
        attrs: dict[str, Any] = {"pads": pads}
    else:
        attrs = {"auto_pad": "SAME_UPPER" if p.same.asymmetryMode == 0 else "SAME_LOWER"}
    inputs = [t.x(layer), t.g.const(weight, "weight")]
    if p.hasBias:
        inputs.append(t.g.const(t.weights(p.bias, (int(p.outputChannels),), f"layer {layer.name} bias"), "bias"))
    return t.g.node("Conv", inputs, strides=strides, dilations=dilations, group=int(p.nGroups) or 1,
                    kernel_shape=kernel, **attrs)


def _nn_activation(t: _NeuralNetworkTranslator, layer: Any, p: Any) -> str:
    kind = p.WhichOneof("NonlinearityType")
    simple = {"ReLU": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}
    if kind in simple:
        return t.g.node(simple[kind], [t.x(layer)])
    if kind == "leakyReLU":
        return t.g.node("LeakyRelu", [t.x(layer)], alpha=float(p.leakyReLU.alpha))
    if kind == "linear":
        scaled = t.g.node("Mul", [t.x(layer), t.g.const(np.asarray(p.linear.alpha, np.float32))])
        return t.g.node("Add", [scaled, t.g.const(np.asarray(p.linear.beta, np.float32))])
    raise InputError(f"Core ML model {t.label}: layer {layer.name}: expected ReLU/sigmoid/tanh/leakyReLU/linear activation, found {kind}")


def _nn_add(t: _NeuralNetworkTranslator, layer: Any, p: Any) -> str:
    total = t.x(layer)
    for index in range(1, len(layer.input)):
        total = t.g.node("Add", [total, t.x(layer, index)])
    if p.alpha and len(layer.input) == 1:
        total = t.g.node("Add", [total, t.g.const(np.asarray(p.alpha, np.float32))])
    return total


def _nn_multiply(t: _NeuralNetworkTranslator, layer: Any, p: Any) -> str:
    total = t.x(layer)
    for index in range(1, len(layer.input)):
        total = t.g.node("Mul", [total, t.x(layer, index)])
    if len(layer.input) == 1:
        total = t.g.node("Mul", [total, t.g.const(np.asarray(p.alpha, np.float32))])
    return total


def _nn_concat(t: _NeuralNetworkTranslator, layer: Any, p: Any) -> str:
    if p.sequenceConcat:
        raise InputError(f"Core ML model {t.label}: layer {layer.name}: expected a channel concat, found a sequence concat")
    return t.g.node("Concat", [t.x(layer, i) for i in range(len(layer.input))], axis=-3)


def _nn_upsample(t: _NeuralNetworkTranslator, layer: Any, p: Any) -> str:
    factors = [float(f) for f in p.scalingFactor] or [float(f) for f in p.fractionalScalingFactor] or [1.0, 1.0]
    bilinear = p.mode == 1
    # linearUpsampleMode: 0 DEFAULT (asymmetric), 1 ALIGN_CORNERS_TRUE, 2 ALIGN_CORNERS_FALSE (half-pixel)
    transform = {0: "asymmetric", 1: "align_corners", 2: "half_pixel"}[int(p.linearUpsampleMode)] if bilinear else "asymmetric"
    scales = t.g.const(np.asarray([1.0, 1.0, *factors], np.float32), "scales")
    return t.g.node("Resize", [t.x(layer), "", scales], mode="linear" if bilinear else "nearest",
                    coordinate_transformation_mode=transform, nearest_mode="floor")


def _nn_batchnorm(t: _NeuralNetworkTranslator, layer: Any, p: Any) -> str:
    if p.computeMeanVar:
        raise InputError(f"Core ML model {t.label}: layer {layer.name}: expected stored batch-norm statistics, found computeMeanVar")
    c = (int(p.channels),)
    params = [t.g.const(t.weights(getattr(p, k), c, f"layer {layer.name} {k}")) for k in ("gamma", "beta", "mean", "variance")]
    return t.g.node("BatchNormalization", [t.x(layer), *params], epsilon=float(p.epsilon or 1e-5))


def _nn_reshape_static(t: _NeuralNetworkTranslator, layer: Any, p: Any) -> str:
    target = [int(d) for d in p.targetShape]
    if target and target[0] == 1:
        target[0] = 0  # keep the runtime batch
    else:
        t.batchable = False
    return t.g.node("Reshape", [t.x(layer), t.g.const(np.asarray(target, np.int64), "shape")])


def _nn_flatten(t: _NeuralNetworkTranslator, layer: Any, p: Any) -> str:
    return t.g.node("Flatten", [t.x(layer)], axis=1)


def _nn_squeeze(t: _NeuralNetworkTranslator, layer: Any, p: Any) -> str:
    axes = [int(a) for a in p.axes]
    if p.squeezeAll or not axes:
        raise InputError(f"Core ML model {t.label}: layer {layer.name}: expected explicit squeeze axes, found squeezeAll")
    if 0 in axes:
        t.batchable = False
    return t.g.node("Squeeze", [t.x(layer), t.g.const(np.asarray(axes, np.int64))])


def _nn_padding(t: _NeuralNetworkTranslator, layer: Any, p: Any) -> str:
    borders = p.paddingAmounts.borderAmounts
    top, left = int(borders[0].startEdgeSize), int(borders[1].startEdgeSize)
    bottom, right = int(borders[0].endEdgeSize), int(borders[1].endEdgeSize)
    kind = p.WhichOneof("PaddingType")
    mode = {"constant": "constant", "reflection": "reflect", "replication": "edge"}[kind]
    inputs = [t.x(layer), t.g.const(np.asarray([0, 0, top, left, 0, 0, bottom, right], np.int64))]
    if kind == "constant":
        inputs.append(t.g.const(np.asarray(p.constant.value, np.float32)))
    return t.g.node("Pad", inputs, mode=mode)


def _nn_inner_product(t: _NeuralNetworkTranslator, layer: Any, p: Any) -> str:
    weight = t.weights(p.weights, (int(p.outputChannels), int(p.inputChannels)), f"layer {layer.name}")
    out = t.g.node("MatMul", [t.x(layer), t.g.const(weight.T.copy())])
    if p.hasBias:
        out = t.g.node("Add", [out, t.g.const(t.weights(p.bias, (int(p.outputChannels),), f"layer {layer.name} bias"))])
    return out


_NN_LAYERS = {
    "convolution": _nn_convolution,
    "activation": _nn_activation,
    "add": _nn_add,
    "multiply": _nn_multiply,
    "concat": _nn_concat,
    "upsample": _nn_upsample,
    "batchnorm": _nn_batchnorm,
    "reshapeStatic": _nn_reshape_static,
    "flatten": _nn_flatten,
    "squeeze": _nn_squeeze,
    "padding": _nn_padding,
    "innerProduct": _nn_inner_product,
}
SUPPORTED_NN_LAYERS = tuple(sorted(_NN_LAYERS))
