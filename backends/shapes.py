"""Find a model's encoder or generator tensors by rank and shape, whatever the exporter named them.

Files of the same model carry different tensor names (mel, mel_input, mel_spectrogram, input, visual_input, var_242,
...), so names cannot be trusted; shapes can. These functions are pure and runtime-agnostic: the ONNX backend and the
Core ML backend both describe their model as a list of `TensorInfo` and get back which tensor plays which role.

A dimension is an int when the model fixes it and None or a string (a symbolic name such as "B") when it is dynamic.
A dynamic dimension is accepted wherever a fixed value is expected, but fixed matches score higher, so a tensor that
states [B,1,80,16] wins over one that only states [B,?,?,?].
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Sequence

from core.errors import InputError

from core.constants import AUDIO_TENSOR_SHAPE, FEATURE_WIDTH, MEL_BANDS, WINDOW_FRAMES

Dim = int | str | None
# Pattern entries: an int must match, "S" must be the same square size everywhere, None is the batch (anything).
Pattern = tuple[int | str | None, ...]

ENCODER_INPUT: Pattern = (None, 1, MEL_BANDS, WINDOW_FRAMES)
ENCODER_OUTPUT: Pattern = (None, FEATURE_WIDTH)
ENCODER_OUTPUT_4D: Pattern = (None, FEATURE_WIDTH, 1, 1)
GENERATOR_IMAGE: Pattern = (None, 6, "S", "S")
GENERATOR_AUDIO: Pattern = (None, *AUDIO_TENSOR_SHAPE)
GENERATOR_OUTPUT: Pattern = (None, 3, "S", "S")


@dataclass(frozen=True)
class TensorInfo:
    """One model input or output as the runtime declares it; dtype is a numpy name such as "float32"."""

    name: str
    shape: tuple[Dim, ...] | None  # None when the model does not declare a rank at all
    dtype: str = "float32"

    def describe(self) -> str:
        """'name:[B,1,80,16] float32', the form used in every error message."""
        if self.shape is None:
            dims = "?"
        else:
            dims = "[" + ",".join(format_dim(d) for d in self.shape) + "]"
        return f"{self.name}:{dims} {self.dtype}"


@dataclass(frozen=True)
class EncoderTensors:
    """The encoder's resolved input and output; `squeeze_output` is set for [B,512,1,1] outputs."""

    input: TensorInfo
    output: TensorInfo
    squeeze_output: bool
    batch: int | None  # None: dynamic batch; an int: the only batch size the model accepts


@dataclass(frozen=True)
class GeneratorTensors:
    """The generator's resolved image input, audio input and output, and its square size S."""

    image: TensorInfo
    audio: TensorInfo
    output: TensorInfo
    size: int
    batch: int | None


def format_dim(dim: Dim) -> str:
    """Fixed dims print as numbers, dynamic ones as their symbol (or '?')."""
    if isinstance(dim, int):
        return str(dim)
    return dim if dim else "?"


def format_pattern(pattern: Pattern) -> str:
    """(None, 1, 80, 16) -> '[B,1,80,16]' for error messages."""
    return "[" + ",".join("B" if d is None else str(d) for d in pattern) + "]"


def describe_model(inputs: Sequence[TensorInfo], outputs: Sequence[TensorInfo]) -> str:
    """'inputs a:[1,3] float32, b:[..]; outputs y:[..]' so a user sees everything the model offers."""
    ins = ", ".join(t.describe() for t in inputs) or "none"
    outs = ", ".join(t.describe() for t in outputs) or "none"
    return f"inputs {ins}; outputs {outs}"


def is_dynamic(dim: Dim) -> bool:
    return not isinstance(dim, int) or dim <= 0


def match_score(shape: tuple[Dim, ...] | None, pattern: Pattern, size: int | None = None) -> int | None:
    """How well `shape` fits `pattern`: None when it cannot fit, else the number of fixed dims that agree.

    "S" entries must all be equal (and equal `size` when given); dynamic dims fit anything but score nothing.
    """
    if shape is None or len(shape) != len(pattern):
        return None
    score = 0
    square: int | None = size
    for dim, want in zip(shape, pattern):
        if is_dynamic(dim):
            continue
        if want is None:
            score += 1  # a fixed batch is still information, but any value is fine
        elif want == "S":
            if square is None:
                square = dim
            elif dim != square:
                return None
            score += 1
        elif dim != want:
            return None
        else:
            score += 1
    return score


def square_size(shape: tuple[Dim, ...] | None, pattern: Pattern) -> int | None:
    """The fixed S a shape states for the "S" entries of pattern, or None when all of them are dynamic."""
    if shape is None:
        return None
    for dim, want in zip(shape, pattern):
        if want == "S" and not is_dynamic(dim):
            return int(dim)  # type: ignore[arg-type]
    return None


def batch_of(shape: tuple[Dim, ...] | None) -> int | None:
    """The fixed batch size, or None when the batch dimension is dynamic."""
    if not shape or is_dynamic(shape[0]):
        return None
    return int(shape[0])  # type: ignore[arg-type]


def _by_name(tensors: Sequence[TensorInfo], name: str, kind: str, label: str,
             inputs: Sequence[TensorInfo], outputs: Sequence[TensorInfo]) -> TensorInfo:
    for tensor in tensors:
        if tensor.name == name:
            return tensor
    raise InputError(f"{label}: no {kind} named {name!r}; found {describe_model(inputs, outputs)}")


def _check_override(tensor: TensorInfo, patterns: Sequence[Pattern], role: str, label: str,
                    inputs: Sequence[TensorInfo], outputs: Sequence[TensorInfo]) -> None:
    """A tensor chosen by name still has to be usable in its role: a wrong rank or fixed dim is the user's error."""
    if tensor.shape is None:
        return  # nothing declared: the run-time check will judge it
    if any(match_score(tensor.shape, p) is not None for p in patterns):
        return
    wanted = " or ".join(format_pattern(p) for p in patterns)
    raise InputError(
        f"{label}: {role} {tensor.name!r} was chosen by name, but it has shape {tensor.describe()}, "
        f"expected {wanted}; found {describe_model(inputs, outputs)}"
    )


def _best(candidates: list[tuple[int, TensorInfo]], role: str, expected: str, label: str,
          inputs: Sequence[TensorInfo], outputs: Sequence[TensorInfo], override_hint: str) -> TensorInfo:
    """Pick the single best-scoring candidate; none or a tie is an InputError naming every tensor."""
    if not candidates:
        raise InputError(f"{label}: expected {role} of shape {expected}, found {describe_model(inputs, outputs)}")
    top = max(score for score, _ in candidates)
    best = [t for score, t in candidates if score == top]
    if len(best) > 1:
        names = ", ".join(t.name for t in best)
        raise InputError(
            f"{label}: {role} of shape {expected} is ambiguous between {names}; name one with {override_hint}. "
            f"Found {describe_model(inputs, outputs)}"
        )
    return best[0]


def find_encoder_tensors(
    inputs: Sequence[TensorInfo],
    outputs: Sequence[TensorInfo],
    input_name: str | None = None,
    output_name: str | None = None,
    label: str = "encoder",
) -> EncoderTensors:
    """Resolve the encoder's mel input [B,1,80,16] and feature output [B,512] (or [B,512,1,1], squeezed later).

    `label` (usually "encoder <file name>") starts every error message so the user knows which file is meant.
    """
    if input_name is not None:
        chosen_in = _by_name(inputs, input_name, "input", label, inputs, outputs)
        _check_override(chosen_in, [ENCODER_INPUT], "input", label, inputs, outputs)
    else:
        scored = [(s, t) for t in inputs if (s := match_score(t.shape, ENCODER_INPUT)) is not None]
        chosen_in = _best(scored, "an input", format_pattern(ENCODER_INPUT), label, inputs, outputs, "input_name")

    if output_name is not None:
        chosen_out = _by_name(outputs, output_name, "output", label, inputs, outputs)
        _check_override(chosen_out, [ENCODER_OUTPUT, ENCODER_OUTPUT_4D], "output", label, inputs, outputs)
    else:
        scored = []
        for t in outputs:
            for pattern in (ENCODER_OUTPUT, ENCODER_OUTPUT_4D):
                s = match_score(t.shape, pattern)
                if s is not None:
                    scored.append((s, t))
        expected = f"{format_pattern(ENCODER_OUTPUT)} or {format_pattern(ENCODER_OUTPUT_4D)}"
        chosen_out = _best(scored, "an output", expected, label, inputs, outputs, "output_name")

    squeeze = chosen_out.shape is not None and len(chosen_out.shape) == 4
    return EncoderTensors(chosen_in, chosen_out, squeeze, batch_of(chosen_in.shape))


def find_generator_tensors(
    inputs: Sequence[TensorInfo],
    outputs: Sequence[TensorInfo],
    image_input: str | None = None,
    audio_input: str | None = None,
    output_name: str | None = None,
    label: str = "generator",
) -> GeneratorTensors:
    """Resolve the generator's image input [B,6,S,S], audio input [B,32,16,16] and output [B,3,S,S].

    Inputs are assigned jointly (every distinct pair is scored), so a model whose dims are partly dynamic still gets
    the tensor stating 6 channels as the image and the one stating 32 as the audio.
    """
    image_fixed = _by_name(inputs, image_input, "input", label, inputs, outputs) if image_input else None
    audio_fixed = _by_name(inputs, audio_input, "input", label, inputs, outputs) if audio_input else None
    if image_fixed is not None:
        _check_override(image_fixed, [GENERATOR_IMAGE], "image input", label, inputs, outputs)
    if audio_fixed is not None:
        _check_override(audio_fixed, [GENERATOR_AUDIO], "audio input", label, inputs, outputs)

    image_options = [image_fixed] if image_fixed else list(inputs)
    audio_options = [audio_fixed] if audio_fixed else list(inputs)
    pairs: list[tuple[int, tuple[TensorInfo, TensorInfo]]] = []
    for image, audio in itertools.product(image_options, audio_options):
        if image.name == audio.name:
            continue
        s_image = 0 if image_fixed else match_score(image.shape, GENERATOR_IMAGE)
        s_audio = 0 if audio_fixed else match_score(audio.shape, GENERATOR_AUDIO)
        if s_image is not None and s_audio is not None:
            pairs.append((s_image + s_audio, (image, audio)))
    expected_inputs = f"an image input {format_pattern(GENERATOR_IMAGE)} and an audio input " \
                      f"{format_pattern(GENERATOR_AUDIO)}"
    if not pairs:
        raise InputError(f"{label}: expected {expected_inputs}, found {describe_model(inputs, outputs)}")
    top = max(score for score, _ in pairs)
    best = [pair for score, pair in pairs if score == top]
    if len(best) > 1:
        options = "; ".join(f"image={i.name}, audio={a.name}" for i, a in best)
        raise InputError(
            f"{label}: cannot tell the image input from the audio input ({options}); name them with image_input and "
            f"audio_input. Found {describe_model(inputs, outputs)}"
        )
    image, audio = best[0]

    size = square_size(image.shape, GENERATOR_IMAGE)
    if output_name is not None:
        output = _by_name(outputs, output_name, "output", label, inputs, outputs)
        _check_override(output, [GENERATOR_OUTPUT], "output", label, inputs, outputs)
        if size is not None and output.shape is not None and match_score(output.shape, GENERATOR_OUTPUT, size) is None:
            raise InputError(
                f"{label}: output {output.describe()} does not match the image input's size {size}: expected "
                f"[B,3,{size},{size}]; found {describe_model(inputs, outputs)}"
            )
    else:
        scored = [(s, t) for t in outputs if (s := match_score(t.shape, GENERATOR_OUTPUT, size)) is not None]
        expected = format_pattern(GENERATOR_OUTPUT).replace("S", str(size)) if size else \
            format_pattern(GENERATOR_OUTPUT)
        output = _best(scored, "an output", expected, label, inputs, outputs, "output_name")
    if size is None:
        size = square_size(output.shape, GENERATOR_OUTPUT)
    if size is None:
        raise InputError(
            f"{label}: the square size S is dynamic in both the image input and the output, so the crop size is "
            f"unknown; expected a fixed S such as [B,6,320,320]; found {describe_model(inputs, outputs)}"
        )
    batch = batch_of(image.shape)
    if batch is None:
        batch = batch_of(audio.shape)
    return GeneratorTensors(image, audio, output, size, batch)
