"""ML Program (.mlpackage) -> ONNX: the MIL program's operations translated one by one (see coreml_emulator.py)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import InputError

from .coreml_graph import _FP16_EXACT_OPS, TranslatedModel, _GraphBuilder, _summarise_precision
from .coreml_package import _quiet_coremltools, load_mil_function


class _MilTranslator:
    def __init__(self, spec: Any, weights_dir: Path | None, precision: str, label: str) -> None:
        self.spec = spec
        self.weights_dir = weights_dir
        self.precision = precision
        self.label = label
        self.g = _GraphBuilder()
        self.g.round_constants = precision == "fp16"
        self.names: dict[str, str] = {}  # MIL var name -> ONNX tensor name
        self.batchable = True

    def run(self) -> TranslatedModel:
        _quiet_coremltools()
        from coremltools.converters.mil.mil import types

        self.types = types
        function = load_mil_function(self.spec, self.weights_dir, self.label)
        operations = list(function.operations)
        counts = Counter(op.op_type for op in operations)
        unsupported = sorted({op.op_type for op in operations if op.op_type != "const" and op.op_type not in _MIL_OPS})
        if unsupported:
            raise InputError(
                f"Core ML model {self.label}: expected only operations the emulator supports "
                f"({', '.join(sorted(_MIL_OPS))}); found unsupported {unsupported} among the operations met: "
                + ", ".join(f"{k} x{v}" for k, v in sorted(counts.items()))
            )
        inputs: dict[str, tuple[int, ...]] = {}
        for name, var in function.inputs.items():
            shape = tuple(int(d) for d in var.shape)
            inputs[name] = shape
            self.names[name] = name
            # An fp16 model input (or any input when emulating fp16 compute): the caller's fp32 values are rounded.
            if types.builtin_to_string(var.dtype) == "fp16" or self.precision == "fp16":
                self.names[name] = self.g.round_fp16(name)
        self.consts: dict[str, Any] = {}
        compute_types: Counter[str] = Counter()
        weight_types: Counter[str] = Counter()
        deferred: set[str] = set()
        output_names = {var.name for var in function.outputs}
        for op in operations:
            if op.op_type == "const":
                value = op.outputs[0].val
                self.consts[op.outputs[0].name] = value
                if isinstance(value, np.ndarray) and value.dtype.kind == "f" and value.size > 1:
                    weight_types[str(value.dtype)] += 1
                continue
            out_type = self._dtype(op.outputs[0])
            if out_type in ("fp16", "fp32"):
                compute_types[out_type] += 1
            result = _MIL_OPS[op.op_type](self, op)
            rounded = self._wants_rounding(op, out_type) or op.inputs.get("x") is not None and (
                op.op_type == "relu" and op.inputs["x"].name in deferred)
            if rounded and self._only_feeds_relu(op.outputs[0], output_names):
                # relu(round(x)) == round(relu(x)): rounding after the relu lets onnxruntime fuse conv and relu,
                # which keeps fp16 emulation close to plain fp32 speed.
                deferred.add(op.outputs[0].name)
                rounded = False
            self.names[op.outputs[0].name] = self.g.round_fp16(result) if rounded else result
        outputs: dict[str, tuple[int, ...] | None] = {}
        onnx_outputs = []
        for var in function.outputs:
            final = self.g.node("Identity", [self.names[var.name]], var.name)
            onnx_outputs.append(final)
            outputs[var.name] = tuple(int(d) for d in var.shape) if var.shape is not None else None
        precision = _summarise_precision(compute_types, weight_types)
        if self.precision != "as_stored":
            precision = f"{precision} (emulated as {self.precision})"
        onnx_bytes = self.g.build(inputs, onnx_outputs, batch_dynamic=self.batchable)
        return TranslatedModel(
            onnx_bytes, "mlprogram", inputs, outputs, precision, dict(counts), self.batchable,
            {"opset": str(getattr(function, "opset_version", ""))},
        )

    # -- helpers --------------------------------------------------------------------------------------------

    def _dtype(self, var: Any) -> str:
        try:
            return self.types.builtin_to_string(var.dtype)
        except Exception:
            return "unknown"

    @staticmethod
    def _only_feeds_relu(var: Any, output_names: set[str]) -> bool:
        children = list(getattr(var, "child_ops", []))
        return var.name not in output_names and len(children) == 1 and children[0].op_type == "relu"

    def _wants_rounding(self, op: Any, out_type: str) -> bool:
        if self.precision == "fp32" or out_type not in ("fp16", "fp32"):
            return False
        if op.op_type in _FP16_EXACT_OPS and self.precision != "fp16":
            return False
        if op.op_type == "cast":
            return out_type == "fp16" or self.precision == "fp16"
        return out_type == "fp16" or self.precision == "fp16"

    def value(self, op: Any, key: str, default: Any = None) -> Any:
        """A constant argument of op (strides, axes...), or default when the op does not have it."""
        var = op.inputs.get(key)
        if var is None:
            return default
        if var.val is None:
            raise InputError(f"Core ML model {self.label}: {op.op_type} {op.name}: expected a constant {key}, found a computed one")
        return var.val

    def tensor(self, op: Any, key: str) -> str:
        """The ONNX name of a tensor argument; constants become initializers on first use."""
        var = op.inputs[key]
        return self.tensor_of(var)

    def tensor_of(self, var: Any) -> str:
        if var.name in self.names:
            return self.names[var.name]
        if var.val is not None:
            value = np.asarray(var.val)
            if value.dtype.kind == "f":
                value = value.astype(np.float32)
            name = self.g.const(value, "w")
            self.names[var.name] = name
            return name
        raise InputError(f"Core ML model {self.label}: variable {var.name} is used before it is defined")

    def rank(self, op: Any, key: str = "x") -> int:
        return len(op.inputs[key].shape)

    def shape(self, op: Any, key: str = "x") -> tuple[int, ...]:
        return tuple(int(d) for d in op.inputs[key].shape)


def _mil_conv(t: _MilTranslator, op: Any) -> str:
    weight = np.asarray(t.value(op, "weight"))
    strides = [int(s) for s in t.value(op, "strides", [1] * (weight.ndim - 2))]
    dilations = [int(d) for d in t.value(op, "dilations", [1] * (weight.ndim - 2))]
    groups = int(t.value(op, "groups", 1))
    pads = _conv_pads(t, op, weight.shape[2:], strides, dilations)
    inputs = [t.tensor(op, "x"), t.g.const(weight, "weight")]
    if "bias" in op.inputs and op.inputs["bias"] is not None:
        inputs.append(t.g.const(np.asarray(t.value(op, "bias")), "bias"))
    return t.g.node("Conv", inputs, strides=strides, dilations=dilations, group=groups, pads=pads,
                    kernel_shape=list(weight.shape[2:]))


def _conv_pads(t: _MilTranslator, op: Any, kernel: tuple[int, ...], strides: list[int], dilations: list[int]) -> list[int]:
    """MIL pads are [begin0, end0, begin1, end1]; ONNX wants [begin0, begin1, end0, end1]."""
    pad_type = str(t.value(op, "pad_type", "valid"))
    spatial = len(kernel)
    if pad_type == "valid":
        return [0] * (2 * spatial)
    if pad_type == "custom":
        mil = [int(p) for p in t.value(op, "pad", [0] * (2 * spatial))]
        return mil[0::2] + mil[1::2]
    if pad_type in ("same", "same_lower"):
        size = t.shape(op)[2:]
        begins, ends = [], []
        for n, k, s, d in zip(size, kernel, strides, dilations):
            total = max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
            small = total // 2
            begins.append(small if pad_type == "same" else total - small)
            ends.append(total - small if pad_type == "same" else small)
        return begins + ends
    raise InputError(f"Core ML model {t.label}: conv {op.name}: expected pad_type valid/custom/same, found {pad_type!r}")


def _mil_unary(onnx_op: str):
    def handler(t: _MilTranslator, op: Any) -> str:
        return t.g.node(onnx_op, [t.tensor(op, "x")])

    return handler


def _mil_binary(onnx_op: str):
    def handler(t: _MilTranslator, op: Any) -> str:
        return t.g.node(onnx_op, [t.tensor(op, "x"), t.tensor(op, "y")])

    return handler


def _mil_cast(t: _MilTranslator, op: Any) -> str:
    dtype = str(t.value(op, "dtype"))
    if dtype in ("fp16", "fp32", "fp64"):
        return t.g.node("Identity", [t.tensor(op, "x")])  # rounding (for fp16) is added by the caller
    raise InputError(f"Core ML model {t.label}: cast {op.name}: expected a cast between fp16 and fp32, found to {dtype}")


def _mil_concat(t: _MilTranslator, op: Any) -> str:
    values = op.inputs["values"]
    axis = int(t.value(op, "axis"))
    rank = len(values[0].shape)
    if axis % rank == 0:
        t.batchable = False
    if bool(t.value(op, "interleave", False)):
        raise InputError(f"Core ML model {t.label}: concat {op.name}: expected interleave=False, found True")
    return t.g.node("Concat", [t.tensor_of(v) for v in values], axis=axis)


def _resize(t: _MilTranslator, x: str, in_shape: tuple[int, ...], out_hw: tuple[int, int], mode: str, transform: str) -> str:
    if not t.batchable:
        sizes = t.g.const(np.asarray(list(in_shape[:2]) + list(out_hw), dtype=np.int64), "sizes")
    else:
        # sizes must follow the runtime batch: take N, C from the input's shape and H, W from the constant.
        shape = t.g.node("Shape", [x])
        nc = t.g.node("Slice", [shape, t.g.const(np.array([0], np.int64)), t.g.const(np.array([2], np.int64))])
        sizes = t.g.node("Concat", [nc, t.g.const(np.asarray(out_hw, dtype=np.int64), "hw")], axis=0)
    return t.g.node("Resize", [x, "", "", sizes], mode=mode, coordinate_transformation_mode=transform,
                    nearest_mode="floor")


def _mil_upsample_bilinear(t: _MilTranslator, op: Any) -> str:
    shape = t.shape(op)
    out = tuple(int(d) for d in op.outputs[0].shape[-2:])
    align = bool(t.value(op, "align_corners", False))
    half_pixel = bool(t.value(op, "half_pixel_centers", not align))
    transform = "align_corners" if align else ("half_pixel" if half_pixel else "asymmetric")
    return _resize(t, t.tensor(op, "x"), shape, out, "linear", transform)


def _mil_resize_bilinear(t: _MilTranslator, op: Any) -> str:
    shape = t.shape(op)
    out = tuple(int(d) for d in op.outputs[0].shape[-2:])
    mode = str(t.value(op, "sampling_mode", "DEFAULT"))
    transforms = {"ALIGN_CORNERS": "align_corners", "STRICT_ALIGN_CORNERS": "align_corners",
                  "DEFAULT": "asymmetric", "UNALIGN_CORNERS": "half_pixel"}
    if mode not in transforms:
        raise InputError(f"Core ML model {t.label}: resize_bilinear {op.name}: expected sampling_mode in {sorted(transforms)}, found {mode}")
    return _resize(t, t.tensor(op, "x"), shape, out, "linear", transforms[mode])


def _mil_upsample_nearest(t: _MilTranslator, op: Any) -> str:
    out = tuple(int(d) for d in op.outputs[0].shape[-2:])
    return _resize(t, t.tensor(op, "x"), t.shape(op), out, "nearest", "asymmetric")


def _mil_batch_norm(t: _MilTranslator, op: Any) -> str:
    channels = t.shape(op)[1]
    gamma = t.value(op, "gamma", np.ones(channels, np.float32))
    beta = t.value(op, "beta", np.zeros(channels, np.float32))
    return t.g.node(
        "BatchNormalization",
        [t.tensor(op, "x"), t.g.const(np.asarray(gamma)), t.g.const(np.asarray(beta)),
         t.g.const(np.asarray(t.value(op, "mean"))), t.g.const(np.asarray(t.value(op, "variance")))],
        epsilon=float(t.value(op, "epsilon", 1e-5)),
    )


def _mil_reshape(t: _MilTranslator, op: Any) -> str:
    target = [int(d) for d in t.value(op, "shape")]
    source = t.shape(op)
    if t.batchable:
        if source and target and target[0] == source[0] == 1:
            target[0] = 0  # ONNX: copy the (runtime) batch dimension from the input
        elif not (target and target[0] == -1 and len(source) > 0 and source[0] == 1 and -1 not in target[1:]):
            t.batchable = False
    return t.g.node("Reshape", [t.tensor(op, "x"), t.g.const(np.asarray(target, np.int64), "shape")])


def _axes(t: _MilTranslator, op: Any, key: str = "axes") -> list[int]:
    rank = t.rank(op)
    axes = t.value(op, key, None)
    return list(range(rank)) if axes is None else [int(a) % rank for a in np.atleast_1d(axes)]


def _mil_squeeze(t: _MilTranslator, op: Any) -> str:
    shape = t.shape(op)
    axes = _axes(t, op) if op.inputs.get("axes") is not None else [i for i, d in enumerate(shape) if d == 1]
    if 0 in axes:
        t.batchable = False
    return t.g.node("Squeeze", [t.tensor(op, "x"), t.g.const(np.asarray(axes, np.int64), "axes")])


def _mil_expand_dims(t: _MilTranslator, op: Any) -> str:
    out_rank = t.rank(op) + len(np.atleast_1d(t.value(op, "axes")))
    axes = [int(a) % out_rank for a in np.atleast_1d(t.value(op, "axes"))]
    if 0 in axes:
        t.batchable = False
    return t.g.node("Unsqueeze", [t.tensor(op, "x"), t.g.const(np.asarray(axes, np.int64), "axes")])


def _mil_transpose(t: _MilTranslator, op: Any) -> str:
    perm = [int(p) for p in t.value(op, "perm")]
    if perm and perm[0] != 0:
        t.batchable = False
    return t.g.node("Transpose", [t.tensor(op, "x")], perm=perm)


def _mil_pad(t: _MilTranslator, op: Any) -> str:
    """MIL pads the last len(pad)/2 dims with [begin, end] pairs; ONNX wants all begins then all ends."""
    rank = t.rank(op)
    pairs = [int(p) for p in t.value(op, "pad")]
    padded = len(pairs) // 2
    begins = [0] * (rank - padded) + pairs[0::2]
    ends = [0] * (rank - padded) + pairs[1::2]
    mode = str(t.value(op, "mode", "constant"))
    modes = {"constant": "constant", "reflect": "reflect", "replicate": "edge"}
    if mode not in modes:
        raise InputError(f"Core ML model {t.label}: pad {op.name}: expected mode in {sorted(modes)}, found {mode}")
    inputs = [t.tensor(op, "x"), t.g.const(np.asarray(begins + ends, np.int64), "pads")]
    if mode == "constant":
        inputs.append(t.g.const(np.asarray(float(t.value(op, "constant_val", 0.0)), np.float32), "pad_value"))
    return t.g.node("Pad", inputs, mode=modes[mode])


def _mil_reduce(onnx_op: str):
    def handler(t: _MilTranslator, op: Any) -> str:
        axes = _axes(t, op)
        if 0 in axes:
            t.batchable = False
        keepdims = int(bool(t.value(op, "keep_dims", False)))
        if onnx_op == "ReduceSum":  # since opset 13 ReduceSum takes its axes as an input, not an attribute
            return t.g.node(onnx_op, [t.tensor(op, "x"), t.g.const(np.asarray(axes, np.int64), "axes")], keepdims=keepdims)
        return t.g.node(onnx_op, [t.tensor(op, "x")], axes=axes, keepdims=keepdims)

    return handler


def _mil_linear(t: _MilTranslator, op: Any) -> str:
    weight = np.asarray(t.value(op, "weight"))  # [out, in]
    product = t.g.node("MatMul", [t.tensor(op, "x"), t.g.const(weight.T.copy(), "weight")])
    if op.inputs.get("bias") is not None:
        product = t.g.node("Add", [product, t.g.const(np.asarray(t.value(op, "bias")), "bias")])
    return product


def _mil_pool(onnx_op: str):
    def handler(t: _MilTranslator, op: Any) -> str:
        kernel = [int(k) for k in t.value(op, "kernel_sizes")]
        strides = [int(s) for s in t.value(op, "strides", [1] * len(kernel))]
        pads = _conv_pads(t, op, tuple(kernel), strides, [1] * len(kernel))
        attrs: dict[str, Any] = {"kernel_shape": kernel, "strides": strides, "pads": pads,
                                 "ceil_mode": int(bool(t.value(op, "ceil_mode", False)))}
        if onnx_op == "AveragePool":
            attrs["count_include_pad"] = int(not bool(t.value(op, "exclude_padding_from_average", False)))
        return t.g.node(onnx_op, [t.tensor(op, "x")], **attrs)

    return handler


def _mil_leaky_relu(t: _MilTranslator, op: Any) -> str:
    return t.g.node("LeakyRelu", [t.tensor(op, "x")], alpha=float(t.value(op, "alpha", 0.01)))


def _mil_clip(t: _MilTranslator, op: Any) -> str:
    low = t.g.const(np.asarray(float(t.value(op, "alpha")), np.float32))
    high = t.g.const(np.asarray(float(t.value(op, "beta")), np.float32))
    return t.g.node("Clip", [t.tensor(op, "x"), low, high])


def _mil_slice_by_index(t: _MilTranslator, op: Any) -> str:
    """x[begin:end:stride] per axis, with MIL's masks (ignore begin / end) and squeeze_mask; shapes are static."""
    shape = t.shape(op)
    rank = len(shape)
    begin = [int(v) for v in t.value(op, "begin")]
    end = [int(v) for v in t.value(op, "end")]
    stride = [int(v) for v in t.value(op, "stride", [1] * rank)]
    begin_mask = [bool(v) for v in t.value(op, "begin_mask", [False] * rank)]
    end_mask = [bool(v) for v in t.value(op, "end_mask", [False] * rank)]
    squeeze_mask = [bool(v) for v in t.value(op, "squeeze_mask", [False] * rank)]
    starts, ends, axes, steps = [], [], [], []
    for axis in range(rank):
        step = stride[axis] or 1
        start = (0 if step > 0 else shape[axis] - 1) if begin_mask[axis] else begin[axis]
        stop = (shape[axis] if step > 0 else -shape[axis] - 1) if end_mask[axis] else end[axis]
        if squeeze_mask[axis]:
            stop = start + 1 if start != -1 else shape[axis]
        if (start, stop, step) in ((0, shape[axis], 1),):
            continue  # the whole axis: nothing to slice
        if axis == 0:
            t.batchable = False
        starts.append(start)
        ends.append(stop)
        axes.append(axis)
        steps.append(step)
    out = t.tensor(op, "x")
    if axes:
        as_const = lambda v: t.g.const(np.asarray(v, np.int64))  # noqa: E731
        out = t.g.node("Slice", [out, as_const(starts), as_const(ends), as_const(axes), as_const(steps)])
    squeezed = [axis for axis in range(rank) if squeeze_mask[axis]]
    if squeezed:
        if 0 in squeezed:
            t.batchable = False
        out = t.g.node("Squeeze", [out, t.g.const(np.asarray(squeezed, np.int64))])
    return out if (axes or squeezed) else t.g.node("Identity", [out])


_MIL_OPS = {
    "conv": _mil_conv,
    "relu": _mil_unary("Relu"),
    "sigmoid": _mil_unary("Sigmoid"),
    "tanh": _mil_unary("Tanh"),
    "identity": _mil_unary("Identity"),
    "add": _mil_binary("Add"),
    "sub": _mil_binary("Sub"),
    "mul": _mil_binary("Mul"),
    "real_div": _mil_binary("Div"),
    "maximum": _mil_binary("Max"),
    "minimum": _mil_binary("Min"),
    "cast": _mil_cast,
    "concat": _mil_concat,
    "upsample_bilinear": _mil_upsample_bilinear,
    "resize_bilinear": _mil_resize_bilinear,
    "upsample_nearest_neighbor": _mil_upsample_nearest,
    "batch_norm": _mil_batch_norm,
    "reshape": _mil_reshape,
    "squeeze": _mil_squeeze,
    "expand_dims": _mil_expand_dims,
    "transpose": _mil_transpose,
    "pad": _mil_pad,
    "reduce_mean": _mil_reduce("ReduceMean"),
    "reduce_sum": _mil_reduce("ReduceSum"),
    "reduce_max": _mil_reduce("ReduceMax"),
    "linear": _mil_linear,
    "avg_pool": _mil_pool("AveragePool"),
    "max_pool": _mil_pool("MaxPool"),
    "leaky_relu": _mil_leaky_relu,
    "clip": _mil_clip,
    "slice_by_index": _mil_slice_by_index,
}
SUPPORTED_MIL_OPS = tuple(sorted(_MIL_OPS))
