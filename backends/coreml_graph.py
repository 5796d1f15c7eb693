"""The ONNX side of the Core ML translation: the graph builder both translators write into, with the fp16
emulation helpers (a Cast to float16 and back after each fp16 op), the precision modes and the TranslatedModel result.

No coremltools here; onnx is imported when a graph is built. See backends/coreml_emulator.py for the whole picture.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np


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
