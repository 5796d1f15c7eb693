"""The ONNX Runtime backend and shape detection, checked against numpy references of tiny models.

The tiny models (tests/builders/onnx_models.py) compute the same thing as a few lines of numpy, so every numeric
assertion compares onnxruntime's result with an independent implementation, never with the backend's own output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from core.interfaces import Encoder, Generator
from backends.onnx_backend import OnnxEncoder, OnnxGenerator, available_providers, precision_from_kinds, \
    resolve_provider
from backends.shapes import TensorInfo, find_encoder_tensors, find_generator_tensors, match_score
from core.errors import InputError
from tests.builders.onnx_models import (
    FIELD_ENCODER_NAMES,
    FIELD_GENERATOR_NAMES,
    generator_inputs_like,
    make_encoder,
    make_generator,
    make_lying_encoder,
    make_wrong_shape_model,
    mel_windows_like,
)

TOLERANCE = 1e-5


# ---------------------------------------------------------------------------------------------- shape detection


def t(name: str, *shape: int | str | None, dtype: str = "float32") -> TensorInfo:
    return TensorInfo(name, tuple(shape), dtype)


def test_match_score_counts_fixed_dims_and_refuses_conflicts() -> None:
    assert match_score((1, 1, 80, 16), (None, 1, 80, 16)) == 4
    assert match_score(("B", 1, 80, 16), (None, 1, 80, 16)) == 3
    assert match_score(("B", None, None, None), (None, 1, 80, 16)) == 0
    assert match_score((1, 1, 16, 80), (None, 1, 80, 16)) is None
    assert match_score((1, 1, 80), (None, 1, 80, 16)) is None
    assert match_score((1, 6, 320, 160), (None, 6, "S", "S")) is None  # not square
    assert match_score((1, 3, 320, 320), (None, 3, "S", "S"), size=160) is None


def test_encoder_detection_prefers_the_tensor_that_states_the_full_shape() -> None:
    inputs = [t("x", "B", None, None, None), t("mel_input", "B", 1, 80, 16)]
    outputs = [t("hidden", "B", 1280), t("features", "B", 512)]
    found = find_encoder_tensors(inputs, outputs)
    assert (found.input.name, found.output.name, found.squeeze_output, found.batch) == \
        ("mel_input", "features", False, None)


def test_encoder_detection_accepts_a_4d_output_and_marks_it_for_squeezing() -> None:
    found = find_encoder_tensors([t("mel", 1, 1, 80, 16)], [t("var_242", 1, 512, 1, 1)])
    assert found.squeeze_output and found.batch == 1


def test_encoder_detection_reports_ambiguity_with_every_candidate() -> None:
    with pytest.raises(InputError) as err:
        find_encoder_tensors([t("mel", 1, 1, 80, 16)], [t("a", 1, 512), t("b", 1, 512)], label="encoder e.onnx")
    message = str(err.value)
    assert "ambiguous" in message and "a, b" in message and "output_name" in message
    # naming one resolves it
    assert find_encoder_tensors([t("mel", 1, 1, 80, 16)], [t("a", 1, 512), t("b", 1, 512)],
                                output_name="b").output.name == "b"


def test_encoder_override_of_a_missing_name_lists_what_exists() -> None:
    with pytest.raises(InputError, match=r"no input named 'audio'.*inputs mel:\[1,1,80,16\]"):
        find_encoder_tensors([t("mel", 1, 1, 80, 16)], [t("emb", 1, 512)], input_name="audio")


def test_encoder_override_with_an_unusable_shape_is_refused() -> None:
    with pytest.raises(InputError, match=r"'hidden' was chosen by name.*expected \[B,512\] or \[B,512,1,1\]"):
        find_encoder_tensors([t("mel", 1, 1, 80, 16)], [t("emb", 1, 512), t("hidden", 1, 1280)],
                             output_name="hidden")


def test_generator_detection_assigns_roles_jointly_even_with_dynamic_dims() -> None:
    # The first input states nothing but rank; the second states 32 channels: it must become the audio.
    inputs = [t("a", None, None, None, None), t("b", "B", 32, 16, 16)]
    outputs = [t("out", "B", 3, 320, 320)]
    found = find_generator_tensors(inputs, outputs)
    assert (found.image.name, found.audio.name, found.size) == ("a", "b", 320)


def test_generator_detection_needs_a_fixed_square_size_somewhere() -> None:
    inputs = [t("img", "B", 6, "H", "W"), t("aud", "B", 32, 16, 16)]
    with pytest.raises(InputError, match="square size S is dynamic"):
        find_generator_tensors(inputs, [t("out", "B", 3, "H", "W")])


def test_generator_output_must_match_the_image_size() -> None:
    inputs = [t("img", 1, 6, 160, 160), t("aud", 1, 32, 16, 16)]
    with pytest.raises(InputError, match=r"expected an output of shape \[B,3,160,160\].*out:\[1,3,320,320\]"):
        find_generator_tensors(inputs, [t("out", 1, 3, 320, 320)])


def test_generator_indistinguishable_inputs_ask_for_names() -> None:
    inputs = [t("p", None, None, None, None), t("q", None, None, None, None)]
    with pytest.raises(InputError, match="image_input and audio_input"):
        find_generator_tensors(inputs, [t("out", 1, 3, 160, 160)])
    found = find_generator_tensors(inputs, [t("out", 1, 3, 160, 160)], image_input="q", audio_input="p")
    assert (found.image.name, found.audio.name, found.size) == ("q", "p", 160)


# ---------------------------------------------------------------------------------------------- encoder


@pytest.mark.parametrize("opset", [12, 17])
@pytest.mark.parametrize("batch", ["dynamic", 1])
def test_encoder_matches_numpy_reference(tmp_path: Path, opset: int, batch: str | int) -> None:
    reference = make_encoder(tmp_path / "e.onnx", batch=batch, opset=opset)
    encoder = OnnxEncoder(tmp_path / "e.onnx")
    windows = mel_windows_like(70)  # more than one dynamic batch of 64
    features = encoder.encode(windows)
    assert features.dtype == np.float32 and features.shape == (70, 512)
    np.testing.assert_allclose(features, reference(windows), atol=TOLERANCE, rtol=0)
    assert isinstance(encoder, Encoder)
    assert encoder.provenance.details["opset"] == str(opset)


@pytest.mark.parametrize("in_name,out_name", FIELD_ENCODER_NAMES + [("x", "y"), ("melz", "embedding")])
def test_encoder_finds_tensors_whatever_their_names(tmp_path: Path, in_name: str, out_name: str) -> None:
    reference = make_encoder(tmp_path / "e.onnx", in_name=in_name, out_name=out_name, seed=5)
    encoder = OnnxEncoder(tmp_path / "e.onnx")
    windows = mel_windows_like(3)
    np.testing.assert_allclose(encoder.encode(windows), reference(windows), atol=TOLERANCE, rtol=0)
    assert encoder.provenance.details["input"].startswith(in_name + ":")
    assert encoder.provenance.details["output"].startswith(out_name + ":")


def test_dynamic_and_static_batch_give_identical_features(tmp_path: Path) -> None:
    make_encoder(tmp_path / "dyn.onnx", batch="dynamic", seed=3)
    make_encoder(tmp_path / "one.onnx", batch=1, seed=3)
    dynamic, static = OnnxEncoder(tmp_path / "dyn.onnx"), OnnxEncoder(tmp_path / "one.onnx")
    assert dynamic.provenance.details["batch"] == "dynamic" and static.provenance.details["batch"] == "1"
    windows = mel_windows_like(65)
    np.testing.assert_array_equal(dynamic.encode(windows), static.encode(windows))


def test_fixed_batch_above_one_pads_the_last_run_and_drops_the_padding(tmp_path: Path) -> None:
    reference = make_encoder(tmp_path / "four.onnx", batch=4, seed=6)
    encoder = OnnxEncoder(tmp_path / "four.onnx")
    windows = mel_windows_like(10)  # runs of 4, 4, then 2 real + 2 zero windows
    features = encoder.encode(windows)
    assert features.shape == (10, 512)
    np.testing.assert_allclose(features, reference(windows), atol=TOLERANCE, rtol=0)


def test_batched_encoding_equals_window_by_window(tmp_path: Path) -> None:
    make_encoder(tmp_path / "e.onnx")
    encoder = OnnxEncoder(tmp_path / "e.onnx")
    windows = mel_windows_like(10)
    one_by_one = np.concatenate([encoder.encode(windows[i:i + 1]) for i in range(10)])
    np.testing.assert_allclose(encoder.encode(windows), one_by_one, atol=1e-6, rtol=0)


def test_encoder_skips_an_extra_output_of_another_shape(tmp_path: Path) -> None:
    reference = make_encoder(tmp_path / "e.onnx", extra_output=True)
    encoder = OnnxEncoder(tmp_path / "e.onnx")
    windows = mel_windows_like(4)
    np.testing.assert_allclose(encoder.encode(windows), reference(windows), atol=TOLERANCE, rtol=0)


def test_encoder_squeezes_a_4d_output(tmp_path: Path) -> None:
    reference = make_encoder(tmp_path / "e.onnx", output_4d=True)
    encoder = OnnxEncoder(tmp_path / "e.onnx")
    windows = mel_windows_like(5)
    features = encoder.encode(windows)
    assert features.shape == (5, 512)
    np.testing.assert_allclose(features, reference(windows), atol=TOLERANCE, rtol=0)
    assert encoder.provenance.details["squeezed output"] == "yes"


def test_encoder_scale_is_visible_in_the_numbers(tmp_path: Path) -> None:
    """The bug this project chases: a 200x smaller encoder must come out 200x smaller, not normalised."""
    make_encoder(tmp_path / "full.onnx", seed=4)
    make_encoder(tmp_path / "small.onnx", seed=4, scale=1 / 200)
    windows = mel_windows_like(6)
    full = OnnxEncoder(tmp_path / "full.onnx").encode(windows)
    small = OnnxEncoder(tmp_path / "small.onnx").encode(windows)
    np.testing.assert_allclose(small * 200, full, rtol=1e-5, atol=1e-5)


def test_encoder_override_by_name_picks_the_named_output(tmp_path: Path) -> None:
    make_encoder(tmp_path / "e.onnx", extra_output=True)
    with pytest.raises(InputError, match="'tiny_flattened' was chosen by name"):
        OnnxEncoder(tmp_path / "e.onnx", output_name="tiny_flattened")
    encoder = OnnxEncoder(tmp_path / "e.onnx", input_name="melz", output_name="embedding")
    assert encoder.tensors.output.name == "embedding"


def test_fp16_model_gets_fp16_inputs_and_returns_float32(tmp_path: Path) -> None:
    reference = make_encoder(tmp_path / "e.onnx", fp16=True)
    encoder = OnnxEncoder(tmp_path / "e.onnx")
    windows = mel_windows_like(8)
    features = encoder.encode(windows)
    assert features.dtype == np.float32
    assert encoder.provenance.precision == "fp16"
    # the model sees fp16-rounded windows and accumulates in fp16: compare to numpy at fp16's resolution
    expected = reference(windows.astype(np.float16).astype(np.float32))
    np.testing.assert_allclose(features, expected, rtol=5e-3, atol=2e-2)


def test_precision_is_read_from_the_model_file(tmp_path: Path) -> None:
    make_encoder(tmp_path / "fp32.onnx")
    make_encoder(tmp_path / "mixed.onnx", mixed=True)
    assert OnnxEncoder(tmp_path / "fp32.onnx").provenance.precision == "fp32"
    assert OnnxEncoder(tmp_path / "mixed.onnx").provenance.precision == "mixed"
    assert precision_from_kinds(set()) == "unknown"


def test_mixed_precision_model_matches_reference_with_its_rounded_weights(tmp_path: Path) -> None:
    reference = make_encoder(tmp_path / "e.onnx", mixed=True)
    windows = mel_windows_like(4)
    np.testing.assert_allclose(OnnxEncoder(tmp_path / "e.onnx").encode(windows), reference(windows),
                               atol=TOLERANCE, rtol=0)


def test_provenance_names_runtime_version_and_provider(tmp_path: Path) -> None:
    import onnxruntime

    make_encoder(tmp_path / "e.onnx")
    provenance = OnnxEncoder(tmp_path / "e.onnx", threads=1).provenance
    assert provenance.runtime == "onnxruntime"
    assert provenance.version == onnxruntime.__version__
    assert provenance.provider == "CPUExecutionProvider"
    assert provenance.source == str(tmp_path / "e.onnx")
    assert provenance.details["threads"] == "1"
    assert provenance.summary() == f"onnxruntime {onnxruntime.__version__} · CPUExecutionProvider · fp32"


def test_encoder_refuses_windows_of_the_wrong_shape(tmp_path: Path) -> None:
    make_encoder(tmp_path / "e.onnx")
    encoder = OnnxEncoder(tmp_path / "e.onnx")
    with pytest.raises(InputError, match=r"expected mel windows \[B,1,80,16\], found \[2, 1, 16, 80\]"):
        encoder.encode(np.zeros((2, 1, 16, 80), np.float32))
    assert encoder.encode(np.zeros((0, 1, 80, 16), np.float32)).shape == (0, 512)


def test_model_returning_another_shape_than_declared_is_reported(tmp_path: Path) -> None:
    make_lying_encoder(tmp_path / "lie.onnx", true_width=256)
    encoder = OnnxEncoder(tmp_path / "lie.onnx")  # declared [B,512]: detection accepts it
    with pytest.raises(InputError, match=r"should be \[3,512\] for 3 windows, but the model returned \[3, 256\]"):
        encoder.encode(mel_windows_like(3))


def test_encoder_of_another_width_is_refused_naming_its_tensors(tmp_path: Path) -> None:
    make_encoder(tmp_path / "e256.onnx", width=256)
    with pytest.raises(InputError) as err:
        OnnxEncoder(tmp_path / "e256.onnx")
    message = str(err.value)
    assert "expected an output of shape [B,512] or [B,512,1,1]" in message
    assert "melz:[B,1,80,16]" in message and "embedding:[B,256]" in message


def test_wrong_model_error_names_expected_and_found(tmp_path: Path) -> None:
    make_wrong_shape_model(tmp_path / "model.onnx")
    with pytest.raises(InputError) as err:
        OnnxEncoder(tmp_path / "model.onnx")
    assert str(err.value).startswith(
        "encoder model.onnx: expected an input of shape [B,1,80,16], found inputs x:[1,3,224,224] float32")
    assert "outputs y:[1,3] float32" in str(err.value)
    with pytest.raises(InputError, match=r"generator model.onnx: expected an image input \[B,6,S,S\] and an audio "
                                         r"input \[B,32,16,16\], found inputs x:\[1,3,224,224\]"):
        OnnxGenerator(tmp_path / "model.onnx")


def test_corrupt_and_missing_files_are_input_errors(tmp_path: Path) -> None:
    (tmp_path / "junk.onnx").write_bytes(b"this is not protobuf \x00\xff" * 10)
    with pytest.raises(InputError, match="not an ONNX model"):
        OnnxEncoder(tmp_path / "junk.onnx")
    make_encoder(tmp_path / "e.onnx")
    (tmp_path / "cut.onnx").write_bytes((tmp_path / "e.onnx").read_bytes()[:5000])
    with pytest.raises(InputError, match="not an ONNX model"):
        OnnxEncoder(tmp_path / "cut.onnx")
    with pytest.raises(InputError, match="not found"):
        OnnxGenerator(tmp_path / "missing.onnx")


def test_model_with_an_input_we_cannot_feed_is_refused(tmp_path: Path) -> None:
    """An encoder with a second required input (say, a sequence length) would fail on first run: fail on open."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Flatten", ["mel"], ["f"], axis=1),
         helper.make_node("Slice", ["f", "start", "end"], ["emb"])],
        "two_inputs",
        [helper.make_tensor_value_info("mel", TensorProto.FLOAT, ["B", 1, 80, 16]),
         helper.make_tensor_value_info("start", TensorProto.INT64, [1]),
         helper.make_tensor_value_info("end", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("emb", TensorProto.FLOAT, ["B", 512])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "two.onnx"))
    with pytest.raises(InputError, match=r"also needs start:\[1\] int64, end:\[1\] int64"):
        OnnxEncoder(tmp_path / "two.onnx")


def test_onnx_model_the_runtime_cannot_load_says_so(tmp_path: Path) -> None:
    """A valid ONNX file using an op onnxruntime lacks is not 'corrupt': the message must blame the runtime."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MelMagic", ["mel"], ["emb"], domain="com.example")],
        "custom_op",
        [helper.make_tensor_value_info("mel", TensorProto.FLOAT, ["B", 1, 80, 16])],
        [helper.make_tensor_value_info("emb", TensorProto.FLOAT, ["B", 512])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                    helper.make_opsetid("com.example", 1)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "custom.onnx"))
    with pytest.raises(InputError, match=r"encoder .*custom.onnx: onnxruntime \S+ cannot load this ONNX model "
                                         r"\(opset 13\) with CPUExecutionProvider: .*MelMagic"):
        OnnxEncoder(tmp_path / "custom.onnx")


def test_threads_must_be_positive(tmp_path: Path) -> None:
    make_encoder(tmp_path / "e.onnx")
    with pytest.raises(InputError, match="threads must be a positive whole number, found 0"):
        OnnxEncoder(tmp_path / "e.onnx", threads=0)


# ---------------------------------------------------------------------------------------------- providers


def test_provider_aliases_resolve_to_available_providers() -> None:
    import onnxruntime

    assert available_providers() == onnxruntime.get_available_providers()
    assert resolve_provider("cpu") == "CPUExecutionProvider"
    assert resolve_provider("CPUExecutionProvider") == "CPUExecutionProvider"
    assert resolve_provider("auto") in onnxruntime.get_available_providers()
    with pytest.raises(InputError, match="expected a name such as 'cpu' or 'auto', found 1"):
        resolve_provider(1)  # type: ignore[arg-type]  # a session file can hold any TOML value


@pytest.mark.parametrize("alias,full", [("cuda", "CUDAExecutionProvider"), ("coreml", "CoreMLExecutionProvider")])
def test_unavailable_provider_lists_the_available_ones(tmp_path: Path, alias: str, full: str) -> None:
    import onnxruntime

    if full in onnxruntime.get_available_providers():
        pytest.skip(f"{full} is available here")
    make_encoder(tmp_path / "e.onnx")
    with pytest.raises(InputError) as err:
        OnnxEncoder(tmp_path / "e.onnx", provider=alias)
    message = str(err.value)
    assert f"provider {alias!r} is not available" in message
    for name in onnxruntime.get_available_providers():
        assert name in message


# ---------------------------------------------------------------------------------------------- generator


@pytest.mark.parametrize("size", [160, 320])
def test_generator_matches_numpy_reference(tmp_path: Path, size: int) -> None:
    reference = make_generator(tmp_path / "g.onnx", size=size)
    generator = OnnxGenerator(tmp_path / "g.onnx")
    assert generator.size == size and isinstance(generator, Generator)
    image, audio = generator_inputs_like(2, size)
    out = generator.generate(image, audio)
    assert out.shape == (2, 3, size, size) and out.dtype == np.float32
    np.testing.assert_allclose(out, reference(image, audio), atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("names", FIELD_GENERATOR_NAMES + [{}])
@pytest.mark.parametrize("audio_first", [False, True])
def test_generator_finds_tensors_whatever_their_names_and_order(tmp_path: Path, names: dict[str, str],
                                                                  audio_first: bool) -> None:
    reference = make_generator(tmp_path / "g.onnx", names=names, audio_first=audio_first)
    generator = OnnxGenerator(tmp_path / "g.onnx")
    image, audio = generator_inputs_like(1, 160)
    np.testing.assert_allclose(generator.generate(image, audio), reference(image, audio), atol=TOLERANCE, rtol=0)
    if names:
        assert generator.tensors.image.name == names["image"] and generator.tensors.audio.name == names["audio"]


def test_generator_static_and_dynamic_batch_agree(tmp_path: Path) -> None:
    reference = make_generator(tmp_path / "one.onnx", batch=1, seed=9)
    make_generator(tmp_path / "dyn.onnx", batch="dynamic", seed=9)
    image, audio = generator_inputs_like(3, 160)
    static = OnnxGenerator(tmp_path / "one.onnx").generate(image, audio)
    np.testing.assert_array_equal(static, OnnxGenerator(tmp_path / "dyn.onnx").generate(image, audio))
    np.testing.assert_allclose(static, reference(image, audio), atol=TOLERANCE, rtol=0)


def test_generator_overrides_by_name(tmp_path: Path) -> None:
    make_generator(tmp_path / "g.onnx")
    generator = OnnxGenerator(tmp_path / "g.onnx", image_input="frame_pair", audio_input="speech",
                              output_name="mouth")
    assert generator.provenance.details["image input"].startswith("frame_pair:")
    with pytest.raises(InputError, match=r"'speech' was chosen by name.*expected \[B,6,S,S\]"):
        OnnxGenerator(tmp_path / "g.onnx", image_input="speech")


def test_fp16_generator_gets_fp16_inputs_and_returns_float32(tmp_path: Path) -> None:
    reference = make_generator(tmp_path / "g16.onnx", fp16=True)
    generator = OnnxGenerator(tmp_path / "g16.onnx")
    assert generator.provenance.precision == "fp16"
    assert generator.tensors.image.dtype == "float16" and generator.tensors.audio.dtype == "float16"
    image, audio = generator_inputs_like(2, 160)
    out = generator.generate(image, audio)
    assert out.dtype == np.float32
    # fp16 keeps about 3 decimal digits: compare at that resolution with the fp16-rounded inputs
    expected = reference(image.astype(np.float16), audio.astype(np.float16))
    np.testing.assert_allclose(out, expected, atol=3e-3, rtol=0)


def test_generator_refuses_inputs_of_the_wrong_shape(tmp_path: Path) -> None:
    make_generator(tmp_path / "g.onnx", size=160)
    generator = OnnxGenerator(tmp_path / "g.onnx")
    image, audio = generator_inputs_like(2, 160)
    with pytest.raises(InputError, match=r"expected an image \[B,6,160,160\], found \[2, 6, 320, 320\]"):
        generator.generate(np.zeros((2, 6, 320, 320), np.float32), audio)
    with pytest.raises(InputError, match=r"expected audio \[B,32,16,16\], found \[2, 16, 32, 32\]"):
        generator.generate(image, np.zeros((2, 16, 32, 32), np.float32))
    with pytest.raises(InputError, match="found 2 images and 1 audio tensors"):
        generator.generate(image, audio[:1])


def test_integer_mel_input_is_refused(tmp_path: Path) -> None:
    """A shape can match while the type cannot: feeding mel values as integers would silently truncate them."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Cast", ["mel"], ["m"], to=TensorProto.FLOAT),
         helper.make_node("Flatten", ["m"], ["f"], axis=1),
         helper.make_node("Slice", ["f", "s", "e", "a"], ["emb"])],
        "int_input",
        [helper.make_tensor_value_info("mel", TensorProto.INT32, ["B", 1, 80, 16])],
        [helper.make_tensor_value_info("emb", TensorProto.FLOAT, ["B", 512])],
        [onnx.numpy_helper.from_array(np.array([v], np.int64), n) for n, v in (("s", 0), ("e", 512), ("a", 1))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "int.onnx"))
    with pytest.raises(InputError, match=r"input mel:\[B,1,80,16\] int32 has a type this app cannot feed; "
                                         r"expected float32, float16, float64"):
        OnnxEncoder(tmp_path / "int.onnx")


# ---------------------------------------------------------------------------------------------- encoder-sized model


def test_ave_like_encoder_has_the_published_shapes_and_parameter_count(tmp_path: Path) -> None:
    """The benchmark model must cost what the real one costs: same layers, so same shapes and parameters.

    Shapes come from onnx's own shape inference and the count from PIPELINE.md (2,812,672 with BatchNorm's weight
    and bias, which the ONNX model folds into the conv bias: 2 per output channel are added back here).
    """
    from tests.builders.onnx_models import AVE_LAYERS, make_ave_like_encoder

    path = make_ave_like_encoder(tmp_path / "ave.onnx", batch=1)
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.value_info
    }
    assert shapes["block0"] == [1, 32, 80, 16]
    assert shapes["block3"] == [1, 64, 27, 16]
    assert shapes["block6"] == [1, 128, 9, 6]
    assert shapes["block9"] == [1, 256, 3, 3]
    assert shapes["block12"] == [1, 512, 1, 1]
    stored = sum(int(np.prod(init.dims)) for init in model.graph.initializer)
    batch_norm = sum(2 * cout for _, cout, *_ in AVE_LAYERS)
    assert stored + batch_norm == 2_812_672


def test_ave_like_encoder_runs_batched_like_one_by_one(tmp_path: Path) -> None:
    from tests.builders.onnx_models import make_ave_like_encoder

    make_ave_like_encoder(tmp_path / "ave.onnx")
    encoder = OnnxEncoder(tmp_path / "ave.onnx", threads=1)
    windows = mel_windows_like(3)
    batched = encoder.encode(windows)
    assert batched.shape == (3, 512) and (batched >= 0).all()  # the final ReLU
    one_by_one = np.concatenate([encoder.encode(windows[i:i + 1]) for i in range(3)])
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-5, atol=1e-5)


def test_auto_prefers_an_accelerator_and_aliases_follow_the_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """Provider choice against a pretend GPU build (this machine has none), so the ordering rule is pinned."""
    import backends.onnx_backend as onnx_backend

    gpu_build = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(onnx_backend, "available_providers", lambda: list(gpu_build))
    assert onnx_backend.resolve_provider("auto") == "CUDAExecutionProvider"
    assert onnx_backend.resolve_provider("CUDA") == "CUDAExecutionProvider"
    with pytest.raises(InputError, match=r"expected one of cpu, cuda, auto \(available providers: "
                                         r"TensorrtExecutionProvider, CUDAExecutionProvider, CPUExecutionProvider\)"):
        onnx_backend.resolve_provider("coreml")
    mac_build = ["CoreMLExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(onnx_backend, "available_providers", lambda: list(mac_build))
    assert onnx_backend.resolve_provider("auto") == "CoreMLExecutionProvider"
    with pytest.raises(InputError, match="'nnapi' is not available"):
        onnx_backend.resolve_provider("nnapi")
