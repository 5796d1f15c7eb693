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
"""

from __future__ import annotations

import json

import logging
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import InputError

OPSET = 17

# Ops whose result is exactly representable in fp16 when their inputs are: no rounding step is needed after them.
_FP16_EXACT_OPS = {
    "relu", "concat", "pad", "reshape", "squeeze", "expand_dims", "transpose", "identity", "max_pool",
    "flatten", "reshapeStatic", "padding", "split", "slice_by_index",
}

# Precision modes: "as_stored" follows the program; "fp32" computes everything in fp32 (isolates weight storage from
# fp16 arithmetic); "fp16" rounds the inputs, every weight and every op's result to fp16 (what the GPU / Neural Engine
# do with an fp32 program).
PRECISION_MODES = ("as_stored", "fp32", "fp16")


@dataclass
class TranslatedModel:
    """An ONNX graph equivalent to one Core ML model, with what the translation learned about the model."""

    onnx_bytes: bytes
    kind: str  # "mlprogram" or "neuralnetwork"
    inputs: dict[str, tuple[int, ...]]  # Core ML input name -> static shape
    outputs: dict[str, tuple[int, ...] | None]  # Core ML output name -> shape where known
    precision: str  # "fp32", "fp16" or "mixed": read from the program (compute types and stored weights)
    op_counts: dict[str, int]
    batchable: bool  # True when the leading dimension can grow past the model's fixed batch of 1
    details: dict[str, str] = field(default_factory=dict)


def _quiet_coremltools() -> Any:
    """Import coremltools without its Linux noise (missing native libs, untested torch version warnings)."""
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import coremltools

    return coremltools


def load_spec(path: str | Path) -> tuple[Any, Path | None]:
    """Read a .mlpackage / .mlmodel spec (and the package's weights folder) on any platform, strictly read-only.

    coremltools' MLModel opens a package through its ModelPackage class, which rewrites the package's Manifest.json
    when it is released: opening a user's model must never write into it, so the package layout (Manifest.json ->
    root model item -> Data/<path>, weights beside it) is read here directly and the protobuf parsed with
    coremltools' generated classes.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"Core ML model: expected an existing .mlpackage or .mlmodel, found no file at {path}")
    _quiet_coremltools()
    from coremltools.proto import Model_pb2

    if path.is_dir():
        model_file, weights_dir = _package_items(path)
    else:
        model_file, weights_dir = path, None
    spec = Model_pb2.Model()
    try:
        spec.ParseFromString(model_file.read_bytes())
    except Exception as error:  # protobuf raises DecodeError and friends for damaged files
        raise InputError(
            f"Core ML model {path.name}: expected a Core ML model specification, found unreadable data ({error})"
        ) from error
    if spec.WhichOneof("Type") is None:
        raise InputError(f"Core ML model {path.name}: expected a Core ML model specification, found an empty one")
    return spec, weights_dir


def _package_items(package: Path) -> tuple[Path, Path | None]:
    """The root model file and the weights folder of an .mlpackage, from its Manifest.json."""
    manifest_path = package / "Manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        entries = manifest["itemInfoEntries"]
        root = entries[manifest["rootModelIdentifier"]]
        model_file = package / "Data" / root["path"]
    except FileNotFoundError:
        raise InputError(f"Core ML package {package.name}: expected a Manifest.json inside, found none") from None
    except (ValueError, KeyError, TypeError) as error:
        raise InputError(
            f"Core ML package {package.name}: expected a Manifest.json naming the root model, found an unreadable "
            f"manifest ({error!r})"
        ) from None
    if not model_file.is_file():
        raise InputError(f"Core ML package {package.name}: the manifest names {root['path']}, which is missing")
    weights_dir = None
    for entry in entries.values():
        if isinstance(entry, dict) and entry.get("name") == "weights" and "path" in entry:
            weights_dir = package / "Data" / entry["path"]
    if weights_dir is None and (model_file.parent / "weights").is_dir():
        weights_dir = model_file.parent / "weights"
    return model_file, weights_dir


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
# package's own bytes, the precision mode and this translator's source, so an edited model or a changed translator
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


def _files_of(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    return [path]


def content_key(path: str | Path, precision: str) -> str:
    """sha256 of the model's content (every file of a package, with its relative path), the precision mode, and
    this translator's source code."""
    import hashlib

    path = Path(path)
    if not path.exists():
        raise InputError(f"Core ML model: expected an existing .mlpackage or .mlmodel, found no file at {path}")
    digest = hashlib.sha256(f"format {_CACHE_FORMAT} precision {precision}\n".encode())
    digest.update(Path(__file__).read_bytes())
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


class _GraphBuilder:
    """Accumulates ONNX nodes and initializers, and the fp16 rounding steps, for both translators."""

    def __init__(self) -> None:
        import onnx

        self.onnx = onnx
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._counter = 0
        # precision "fp16" on an fp32 program: the GPU / Neural Engine hold weights in fp16 too, so every float
        # constant is rounded to fp16 (and kept in float32) as it is added.
        self.round_constants = False

    def fresh(self, hint: str) -> str:
        self._counter += 1
        return f"{hint}__{self._counter}"

    def const(self, value: np.ndarray, hint: str = "c") -> str:
        """Add a weight or parameter; fp16 weights become exact fp32 values (fp16 -> fp32 loses nothing)."""
        array = np.asarray(value)
        if array.dtype == np.float16 or array.dtype == np.float64:
            array = array.astype(np.float32)
        if self.round_constants and array.dtype == np.float32:
            array = array.astype(np.float16).astype(np.float32)
        name = self.fresh(hint)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op_type: str, inputs: list[str], output: str | None = None, **attrs: Any) -> str:
        output = output or self.fresh(op_type.lower())
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, [output], **attrs))
        return output

    def round_fp16(self, name: str, output: str | None = None) -> str:
        """Round a float32 tensor to the nearest fp16 value and keep it in float32 (fp16 storage, emulated)."""
        half = self.node("Cast", [name], to=self.onnx.TensorProto.FLOAT16)
        return self.node("Cast", [half], output, to=self.onnx.TensorProto.FLOAT)

    def build(self, inputs: dict[str, tuple[int, ...]], outputs: list[str], batch_dynamic: bool) -> bytes:
        helper, tp = self.onnx.helper, self.onnx.TensorProto
        graph_inputs = []
        for name, shape in inputs.items():
            dims: list[Any] = list(shape)
            if batch_dynamic and dims:
                dims[0] = "batch"
            graph_inputs.append(helper.make_tensor_value_info(name, tp.FLOAT, dims))
        graph_outputs = [helper.make_tensor_value_info(name, tp.FLOAT, None) for name in outputs]
        graph = helper.make_graph(self.nodes, "coreml_emulated", graph_inputs, graph_outputs, self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="lipsync-compare")
        model.ir_version = 8
        return model.SerializeToString()


# ---------------------------------------------------------------------------------------------------------------
# ML Program (.mlpackage)
# ---------------------------------------------------------------------------------------------------------------


def load_mil_function(spec: Any, weights_dir: Path | None, label: str) -> Any:
    """The main function of an ML Program, with its weights read from the package (coremltools' milproto loader)."""
    _quiet_coremltools()
    from coremltools.converters.mil.frontend.milproto.load import load as load_milproto

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = load_milproto(spec, spec.specificationVersion, str(weights_dir or ""))
    except Exception as error:
        raise InputError(f"Core ML model {label}: the ML Program could not be read: {error}") from error
    return program.functions.get("main") or next(iter(program.functions.values()))


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


def _summarise_precision(compute_types: Counter[str], weight_types: Counter[str]) -> str:
    fp16 = compute_types.get("fp16", 0) + weight_types.get("float16", 0)
    fp32 = compute_types.get("fp32", 0) + weight_types.get("float32", 0)
    if fp16 and not compute_types.get("fp32", 0) and not weight_types.get("float32", 0):
        return "fp16"
    if fp16 and compute_types.get("fp16", 0) >= compute_types.get("fp32", 0):
        return "fp16"  # the program computes in fp16; only the I/O casts are fp32
    if fp16:
        return "mixed"
    return "fp32" if fp32 else "unknown"


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


# ---------------------------------------------------------------------------------------------------------------
# NeuralNetwork (.mlmodel)
# ---------------------------------------------------------------------------------------------------------------


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
