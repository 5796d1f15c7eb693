"""Tiny ONNX models with the encoder's and generator's tensor shapes, built with onnx.helper (no torch needed).

Each builder writes a model with deliberately non-standard tensor names and deterministic weights from a seed, and
returns a pure-numpy reference of the same computation, so tests check the backend's numerics against numpy rather
than against the backend itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MEL_WINDOW = 80 * 16  # one flattened encoder window
IR_VERSION = 8  # readable by every onnxruntime this project supports

FIELD_ENCODER_NAMES = [("mel", "emb"), ("mel_input", "features"), ("mel_spectrogram", "var_242")]
FIELD_GENERATOR_NAMES = [
    {"image": "input", "audio": "audio", "output": "output"},
    {"image": "visual_input", "audio": "audio_input", "output": "var_1677"},
]


def _save(graph: onnx.GraphProto, path: str | Path, opset: int) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="lipsync-tests")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, str(path))
    return path


def _batch_dim(batch: str | int) -> str | int:
    if batch == "dynamic":
        return "B"
    if isinstance(batch, int) and batch >= 1:
        return batch
    raise ValueError(f"batch must be 'dynamic' or a positive int, got {batch!r}")


@dataclass(frozen=True)
class EncoderReference:
    """relu(scale · (flatten(windows) @ weight + bias)), the builder's encoder in numpy (float64 internally)."""

    weight: np.ndarray  # [1280, width]
    bias: np.ndarray  # [width]
    scale: float

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        flat = np.asarray(windows, dtype=np.float64).reshape(len(windows), -1)
        return np.maximum(self.scale * (flat @ self.weight.astype(np.float64) + self.bias), 0.0)


def make_encoder(
    path: str | Path,
    batch: str | int = "dynamic",
    in_name: str = "melz",
    out_name: str = "embedding",
    opset: int = 12,
    fp16: bool = False,
    scale: float = 1.0,
    extra_output: bool = False,
    seed: int = 0,
    output_4d: bool = False,
    mixed: bool = False,
    width: int = 512,
) -> EncoderReference:
    """Flatten -> MatMul [1280,width] -> Add -> Mul scale -> Relu, output [B,512] (or [B,512,1,1] with output_4d).

    fp16: every tensor (inputs, weights, output) is float16; the reference uses the fp16-rounded weights.
    mixed: float32 inputs and outputs around float16 weights that are Cast up, as half-converted exports do.
    extra_output: also expose the flattened window [B,1280] as 'tiny_flattened', an output detection must skip.
    width: another feature width (e.g. 256), which detection must refuse.
    """
    rng = np.random.default_rng(seed)
    weight = rng.normal(0.0, 0.05, size=(MEL_WINDOW, width)).astype(np.float32)
    bias = rng.normal(0.5, 0.2, size=(width,)).astype(np.float32)
    io_type = TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT
    weight_dtype = np.float16 if (fp16 or mixed) else np.float32
    weight = weight.astype(weight_dtype)
    bias = bias.astype(weight_dtype)

    b = _batch_dim(batch)
    out_shape = [b, width, 1, 1] if output_4d else [b, width]
    nodes = [helper.make_node("Flatten", [in_name], ["tiny_flattened"], axis=1)]
    initializers = [
        numpy_helper.from_array(weight, "tiny_w"),
        numpy_helper.from_array(bias, "tiny_b"),
        numpy_helper.from_array(np.array(scale, dtype=weight_dtype if fp16 else np.float32), "tiny_scale"),
    ]
    w_name, b_name = "tiny_w", "tiny_b"
    if mixed:
        nodes += [
            helper.make_node("Cast", ["tiny_w"], ["tiny_w32"], to=TensorProto.FLOAT),
            helper.make_node("Cast", ["tiny_b"], ["tiny_b32"], to=TensorProto.FLOAT),
        ]
        w_name, b_name = "tiny_w32", "tiny_b32"
    nodes += [
        helper.make_node("MatMul", ["tiny_flattened", w_name], ["tiny_mm"]),
        helper.make_node("Add", ["tiny_mm", b_name], ["tiny_biased"]),
        helper.make_node("Mul", ["tiny_biased", "tiny_scale"], ["tiny_scaled"]),
    ]
    if output_4d:
        initializers.append(numpy_helper.from_array(np.array([-1, width, 1, 1], dtype=np.int64), "tiny_shape4d"))
        nodes += [
            helper.make_node("Relu", ["tiny_scaled"], ["tiny_relu"]),
            helper.make_node("Reshape", ["tiny_relu", "tiny_shape4d"], [out_name]),
        ]
    else:
        nodes.append(helper.make_node("Relu", ["tiny_scaled"], [out_name]))

    outputs = [helper.make_tensor_value_info(out_name, io_type, out_shape)]
    if extra_output:
        outputs.append(helper.make_tensor_value_info("tiny_flattened", io_type, [b, MEL_WINDOW]))
    graph = helper.make_graph(
        nodes,
        "tiny_encoder",
        [helper.make_tensor_value_info(in_name, io_type, [b, 1, 80, 16])],
        outputs,
        initializers,
    )
    _save(graph, path, opset)
    return EncoderReference(weight.astype(np.float32), bias.astype(np.float32), float(scale))


@dataclass(frozen=True)
class GeneratorReference:
    """sigmoid(conv1x1(image) + conv1x1(mean over 16x16 of audio)), the builder's generator in numpy."""

    image_weight: np.ndarray  # [3, 6]
    image_bias: np.ndarray  # [3]
    audio_weight: np.ndarray  # [3, 32]

    def __call__(self, image: np.ndarray, audio: np.ndarray) -> np.ndarray:
        image = np.asarray(image, dtype=np.float64)
        audio_means = np.asarray(audio, dtype=np.float64).mean(axis=(2, 3))  # [B, 32]
        per_channel = audio_means @ self.audio_weight.T.astype(np.float64)  # [B, 3]
        mixed = np.einsum("oc,bchw->bohw", self.image_weight.astype(np.float64), image)
        logits = mixed + self.image_bias[None, :, None, None] + per_channel[:, :, None, None]
        return 1.0 / (1.0 + np.exp(-logits))


def make_generator(
    path: str | Path,
    size: int = 160,
    batch: str | int = "dynamic",
    names: dict[str, str] | None = None,
    opset: int = 17,
    seed: int = 1,
    audio_first: bool = False,
    fp16: bool = False,
) -> GeneratorReference:
    """Image [B,6,S,S] and audio [B,32,16,16] -> sigmoid(1x1 conv of the image + per-channel audio mean) [B,3,S,S].

    names: {"image": .., "audio": .., "output": ..}; defaults are unusual names no detector could guess by name.
    audio_first: declare the audio input first, so detection cannot rely on input order either.
    fp16: inputs, weights and output in float16 (as a half-precision export stores them).
    """
    names = {"image": "frame_pair", "audio": "speech", "output": "mouth", **(names or {})}
    rng = np.random.default_rng(seed)
    image_weight = rng.normal(0.0, 0.5, size=(3, 6)).astype(np.float32)
    image_bias = rng.normal(0.0, 0.1, size=(3,)).astype(np.float32)
    audio_weight = rng.normal(0.0, 0.2, size=(3, 32)).astype(np.float32)
    if fp16:
        image_weight, image_bias, audio_weight = (a.astype(np.float16) for a in (image_weight, image_bias,
                                                                                 audio_weight))
    io_type = TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT
    b = _batch_dim(batch)

    nodes = [
        helper.make_node("Conv", [names["image"], "tiny_wi", "tiny_bi"], ["tiny_image_mix"]),
        helper.make_node("GlobalAveragePool", [names["audio"]], ["tiny_audio_mean"]),
        helper.make_node("Conv", ["tiny_audio_mean", "tiny_wa"], ["tiny_audio_mix"]),
        helper.make_node("Add", ["tiny_image_mix", "tiny_audio_mix"], ["tiny_logits"]),
        helper.make_node("Sigmoid", ["tiny_logits"], [names["output"]]),
    ]
    initializers = [
        numpy_helper.from_array(image_weight.reshape(3, 6, 1, 1), "tiny_wi"),
        numpy_helper.from_array(image_bias, "tiny_bi"),
        numpy_helper.from_array(audio_weight.reshape(3, 32, 1, 1), "tiny_wa"),
    ]
    image_in = helper.make_tensor_value_info(names["image"], io_type, [b, 6, size, size])
    audio_in = helper.make_tensor_value_info(names["audio"], io_type, [b, 32, 16, 16])
    inputs = [audio_in, image_in] if audio_first else [image_in, audio_in]
    graph = helper.make_graph(
        nodes,
        "tiny_generator",
        inputs,
        [helper.make_tensor_value_info(names["output"], io_type, [b, 3, size, size])],
        initializers,
    )
    _save(graph, path, opset)
    return GeneratorReference(image_weight.astype(np.float32), image_bias.astype(np.float32),
                              audio_weight.astype(np.float32))


def make_lying_encoder(path: str | Path, true_width: int = 256) -> Path:
    """Declares [B,512] but returns the first `true_width` values of the flattened window.

    The width comes from a data-dependent Slice end (0 · max(x) + true_width), so neither onnx nor onnxruntime can
    infer it when loading: only a check of what the model actually returns can catch the lie.
    """
    ints = lambda values, name: numpy_helper.from_array(np.array(values, dtype=np.int64), name)  # noqa: E731
    nodes = [
        helper.make_node("Flatten", ["mel_lie"], ["flat"], axis=1),
        helper.make_node("ReduceMax", ["flat"], ["peak"], keepdims=0),
        helper.make_node("Mul", ["peak", "zero"], ["nothing"]),
        helper.make_node("Add", ["nothing", "width"], ["end_float"]),
        helper.make_node("Cast", ["end_float"], ["end_scalar"], to=TensorProto.INT64),
        helper.make_node("Unsqueeze", ["end_scalar", "axis0"], ["end"]),
        helper.make_node("Slice", ["flat", "start", "end", "axis1"], ["claimed_512"]),
    ]
    initializers = [
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
        numpy_helper.from_array(np.array(float(true_width), dtype=np.float32), "width"),
        ints([0], "axis0"), ints([0], "start"), ints([1], "axis1"),
    ]
    graph = helper.make_graph(
        nodes,
        "lying_encoder",
        [helper.make_tensor_value_info("mel_lie", TensorProto.FLOAT, ["B", 1, 80, 16])],
        [helper.make_tensor_value_info("claimed_512", TensorProto.FLOAT, ["B", 512])],
        initializers,
    )
    return _save(graph, path, 13)


# The published audio encoder (PIPELINE.md stage 3): (cin, cout, kernel, stride, padding, residual).
AVE_LAYERS: list[tuple[int, int, int, tuple[int, int], int, bool]] = [
    (1, 32, 3, (1, 1), 1, False), (32, 32, 3, (1, 1), 1, True), (32, 32, 3, (1, 1), 1, True),
    (32, 64, 3, (3, 1), 1, False), (64, 64, 3, (1, 1), 1, True), (64, 64, 3, (1, 1), 1, True),
    (64, 128, 3, (3, 3), 1, False), (128, 128, 3, (1, 1), 1, True), (128, 128, 3, (1, 1), 1, True),
    (128, 256, 3, (3, 2), 1, False), (256, 256, 3, (1, 1), 1, True),
    (256, 512, 3, (1, 1), 0, False), (512, 512, 1, (1, 1), 0, False),
]


def make_ave_like_encoder(
    path: str | Path,
    batch: str | int = "dynamic",
    in_name: str = "mel",
    out_name: str = "emb",
    opset: int = 12,
    seed: int = 0,
) -> Path:
    """The real encoder's architecture with random weights (BatchNorm folded into the conv bias), for benchmarks.

    It costs what the real model costs to run, so timings taken on it transfer; its numbers mean nothing. Block i's
    output is named "block<i>" so tests can read the intermediate shapes by shape inference.
    """
    rng = np.random.default_rng(seed)
    b = _batch_dim(batch)
    nodes: list[onnx.NodeProto] = []
    initializers: list[onnx.TensorProto] = []
    previous = in_name
    for i, (cin, cout, kernel, stride, pad, residual) in enumerate(AVE_LAYERS):
        weight = rng.normal(0.0, np.sqrt(2.0 / (cin * kernel * kernel)), size=(cout, cin, kernel, kernel))
        bias = rng.normal(0.0, 0.05, size=(cout,))
        initializers += [numpy_helper.from_array(weight.astype(np.float32), f"tiny_w{i}"),
                         numpy_helper.from_array(bias.astype(np.float32), f"tiny_b{i}")]
        conv = f"tiny_conv{i}"
        nodes.append(helper.make_node("Conv", [previous, f"tiny_w{i}", f"tiny_b{i}"], [conv],
                                      kernel_shape=[kernel, kernel], strides=list(stride), pads=[pad] * 4))
        if residual:
            nodes.append(helper.make_node("Add", [conv, previous], [f"tiny_sum{i}"]))
            conv = f"tiny_sum{i}"
        nodes.append(helper.make_node("Relu", [conv], [f"block{i}"]))
        previous = f"block{i}"
    nodes.append(helper.make_node("Flatten", [previous], [out_name], axis=1))
    graph = helper.make_graph(
        nodes,
        "ave_like_encoder",
        [helper.make_tensor_value_info(in_name, TensorProto.FLOAT, [b, 1, 80, 16])],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, [b, 512])],
        initializers,
    )
    return _save(graph, path, opset)


def make_wrong_shape_model(path: str | Path) -> Path:
    """An image classifier's shape, x [1,3,224,224] -> y [1,3]: neither an encoder nor a generator."""
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["x"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["y"], axis=1),
        ],
        "classifier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 224, 224])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )
    return _save(graph, path, 13)


def mel_windows_like(count: int, seed: int = 2) -> np.ndarray:
    """Random windows [count,1,80,16] in the mel front end's range [-4, 4]."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-4.0, 4.0, size=(count, 1, 80, 16)).astype(np.float32)


def generator_inputs_like(
    count: int, size: int, seed: int = 3, audio_high: float = 10.0
) -> tuple[np.ndarray, np.ndarray]:
    """Random image [count,6,S,S] in [0,1] and audio [count,32,16,16] in the features' range [0, audio_high]."""
    rng = np.random.default_rng(seed)
    image = rng.uniform(0.0, 1.0, size=(count, 6, size, size)).astype(np.float32)
    audio = rng.uniform(0.0, audio_high, size=(count, 32, 16, 16)).astype(np.float32)
    return image, audio


def make_endless_encoder(path: str | Path) -> Path:
    """An encoder [1,1,80,16] -> [1,512] whose Loop runs 2**62 times: it never returns in practice."""
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Add", ["state_in", "one"], ["state_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("state_in", TensorProto.FLOAT, [1, 512])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("state_out", TensorProto.FLOAT, [1, 512])],
        [helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])],
    )
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["mel", "axes"], ["summed"], keepdims=0),
         helper.make_node("Reshape", ["summed", "shape"], ["flat"]),
         helper.make_node("Mul", ["flat", "zeros"], ["start"]),
         helper.make_node("Loop", ["trips", "cond", "start"], ["out"], body=body)],
        "endless",
        [helper.make_tensor_value_info("mel", TensorProto.FLOAT, [1, 1, 80, 16])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 512])],
        [helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3]),
         helper.make_tensor("shape", TensorProto.INT64, [2], [1, 1]),
         helper.make_tensor("zeros", TensorProto.FLOAT, [1, 512], [0.0] * 512),
         helper.make_tensor("trips", TensorProto.INT64, [], [2**62]),
         helper.make_tensor("cond", TensorProto.BOOL, [], [True])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return Path(path)
