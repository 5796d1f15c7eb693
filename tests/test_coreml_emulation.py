"""The emulated Core ML backend computes what PyTorch computes with the same weights, in fp32 and in fp16.

References: PyTorch running the module the Core ML file was converted from (fp32 within 1e-4, fp16 within 2e-2), and
for the fp16 rounding itself a float64 numpy convolution with explicit fp16 rounding, written without onnxruntime.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from backends.coreml_backend import CoreMLEncoder, CoreMLGenerator, open_coreml_encoder, open_coreml_generator
from core.errors import InputError
from tests.builders.coreml_models import (
    cached_model,
    convert,
    encoder_inputs,
    generator_inputs,
    torch_forward,
)


@pytest.fixture(scope="session")
def coreml_cache(tmp_path_factory: pytest.TempPathFactory):
    cache = tmp_path_factory.getbasetemp() / "coreml_cache"
    cache.mkdir(exist_ok=True)
    return cache


def _max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def test_fp32_encoder_matches_torch_within_1e4(coreml_cache) -> None:
    path, model = cached_model(coreml_cache, "encoder", "fp32")
    windows = encoder_inputs(6)
    encoder = CoreMLEncoder(path, mode="emulated")
    features = encoder.encode(windows)
    reference = torch_forward(model, windows)
    assert features.shape == (6, 512)
    assert reference.max() > 1.0, "the reference must be non-trivial for the tolerance to mean anything"
    assert _max_abs(features, reference) <= 1e-4
    assert encoder.provenance.runtime == "coreml-emulated"
    assert encoder.provenance.precision == "fp32"
    assert encoder.provenance.details["input"] == "mel_spectrogram"


def test_fp16_encoder_matches_torch_within_fp16_tolerance(coreml_cache) -> None:
    path, model = cached_model(coreml_cache, "encoder", "fp16")
    windows = encoder_inputs(4)
    encoder = CoreMLEncoder(path, mode="emulated")
    features = encoder.encode(windows)
    reference = torch_forward(model, windows)
    assert encoder.provenance.precision == "fp16"
    # Relative to the feature range: fp16 keeps ~3 decimal digits through 13 blocks.
    assert _max_abs(features, reference) <= 2e-2 * float(np.abs(reference).max())
    assert _max_abs(features, reference) > 0.0, "an fp16 program must not reproduce fp32 bit for bit"


@pytest.mark.parametrize("size", [160, 320])
@pytest.mark.parametrize("precision, tolerance", [("fp32", 1e-4), ("fp16", 2e-2)])
def test_generator_matches_torch(coreml_cache, size: int, precision: str, tolerance: float) -> None:
    path, model = cached_model(coreml_cache, "generator", precision, size=size, width=0.25, seed=2)
    image, audio = generator_inputs(1, size)
    generator = CoreMLGenerator(path, mode="emulated")
    output = generator.generate(image, audio)
    reference = torch_forward(model, image, audio)
    assert generator.size == size
    assert output.shape == (1, 3, size, size)
    assert reference.std() > 0.05, "the reference must vary for the comparison to mean anything"
    assert _max_abs(output, reference) <= tolerance
    assert generator.provenance.precision == precision


def test_fp16_generator_rounds_more_than_weights_alone(coreml_cache) -> None:
    """precision='fp32' keeps the file's fp16 weights but computes in fp32: closer to torch than full fp16."""
    path, model = cached_model(coreml_cache, "generator", "fp16", size=160, width=0.25, seed=2)
    image, audio = generator_inputs(1, 160)
    reference = torch_forward(model, image, audio)
    as_stored = CoreMLGenerator(path, mode="emulated").generate(image, audio)
    weights_only = CoreMLGenerator(path, mode="emulated", precision="fp32").generate(image, audio)
    assert 0.0 < _max_abs(weights_only, reference) < _max_abs(as_stored, reference)


@pytest.mark.slow
def test_full_size_320_generator_structure_and_fp16_accuracy(coreml_cache) -> None:
    """One full-width conversion: every op coremltools emits for the real generator is covered."""
    path, model = cached_model(coreml_cache, "generator", "fp16", size=320, width=1.0, seed=3)
    generator = CoreMLGenerator(path, mode="emulated")
    ops = set(generator.runner.translated.op_counts)
    assert {"conv", "relu", "add", "concat", "upsample_bilinear", "sigmoid", "cast"} <= ops
    assert sum(p.numel() for p in model.parameters()) > 11_000_000
    image, audio = generator_inputs(1, 320)
    output = generator.generate(image, audio)
    assert _max_abs(output, torch_forward(model, image, audio)) <= 2e-2


def test_neuralnetwork_mlmodel_encoder_and_generator_match_torch(coreml_cache) -> None:
    enc_path, encoder_model = cached_model(coreml_cache, "encoder", "fp32", fmt="neuralnetwork")
    windows = encoder_inputs(3)
    encoder = open_coreml_encoder(enc_path, {"mode": "emulated"})
    assert _max_abs(encoder.encode(windows), torch_forward(encoder_model, windows)) <= 1e-4
    gen_path, generator_model = cached_model(coreml_cache, "generator", "fp32", fmt="neuralnetwork", size=160)
    image, audio = generator_inputs(1, 160)
    generator = open_coreml_generator(gen_path, {"mode": "emulated"})
    assert _max_abs(generator.generate(image, audio), torch_forward(generator_model, image, audio)) <= 1e-4


def test_neuralnetwork_fp16_weights_are_widened_exactly_and_computed_in_fp32(coreml_cache) -> None:
    path, model = cached_model(coreml_cache, "encoder", "fp16", fmt="neuralnetwork")
    encoder = CoreMLEncoder(path, mode="emulated")
    windows = encoder_inputs(3)
    reference = torch_forward(model, windows)
    error = _max_abs(encoder.encode(windows), reference)
    assert encoder.provenance.precision == "fp16 weights, fp32 compute"
    assert 0.0 < error <= 2e-2 * float(np.abs(reference).max())


def test_batched_encoding_equals_window_by_window(coreml_cache) -> None:
    """300 windows cross the 256-window chunk boundary; each row must equal its own single-window run."""
    path, _ = cached_model(coreml_cache, "encoder", "fp32")
    encoder = CoreMLEncoder(path, mode="emulated")
    windows = encoder_inputs(300, seed=9)
    batched = encoder.encode(windows)
    for index in (0, 255, 256, 299):
        assert np.allclose(batched[index], encoder.encode(windows[index:index + 1])[0], atol=1e-5)


# --- fp16 rounding against an independent float64 reference -------------------------------------------------


class _TinyConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(6, 3, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.normal_(0.0, 0.7)
            self.conv.bias.normal_(0.0, 0.3)
        self.size = 8

    def forward(self, image: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv(image)) + 0.0 * audio.mean()


def _conv_float64(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    patches = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(2, 3))  # [B,C,H,W,3,3]
    return np.einsum("bchwij,ocij->bohw", patches, w.astype(np.float64)) + b.astype(np.float64)[None, :, None, None]


def _fp16(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float16).astype(np.float64)


def test_fp16_program_rounds_like_fp16_storage(tmp_path) -> None:
    """Emulated fp16 = fp16(sigmoid(fp16(conv(fp16 x, fp16 w)))) and differs from fp32 by fp16-sized steps."""
    model = _TinyConv().eval()
    path16 = convert(model, "generator", tmp_path / "tiny16.mlpackage", "fp16")
    path32 = convert(model, "generator", tmp_path / "tiny32.mlpackage", "fp32")
    rng = np.random.default_rng(3)
    image = rng.uniform(0, 1, (1, 6, 8, 8)).astype(np.float32)
    audio = np.zeros((1, 32, 16, 16), np.float32)
    w = model.conv.weight.detach().numpy()
    b = model.conv.bias.detach().numpy()
    out16 = CoreMLGenerator(path16, mode="emulated").generate(image, audio).astype(np.float64)
    out32 = CoreMLGenerator(path32, mode="emulated").generate(image, audio).astype(np.float64)

    pre16 = _fp16(_conv_float64(_fp16(image), _fp16(w), _fp16(b)))
    expected16 = _fp16(1.0 / (1.0 + np.exp(-pre16)))
    expected32 = 1.0 / (1.0 + np.exp(-_conv_float64(image, w, b)))
    ulp = np.spacing(expected16.astype(np.float16)).astype(np.float64)
    assert np.all(np.abs(out16 - expected16) <= ulp)  # at most one fp16 step (fp32 vs float64 accumulation)
    assert _max_abs(out32, expected32) <= 1e-6
    difference = np.abs(out16 - out32)
    assert difference.max() > 0.0
    assert difference.max() <= 2.0 ** -10  # fp16 has 11 significant bits; sigmoid outputs are below 1


def test_fp16_mode_on_an_fp32_program_rounds_inputs_weights_and_results(tmp_path) -> None:
    """precision='fp16' emulates GPU / Neural Engine running an fp32 program: the same fp16(sigmoid(fp16(conv(fp16 x,
    fp16 w)))) as a program converted to fp16, though the file stores fp32 weights."""
    model = _TinyConv().eval()
    path32 = convert(model, "generator", tmp_path / "tiny32.mlpackage", "fp32")
    rng = np.random.default_rng(4)
    image = rng.uniform(0, 1, (1, 6, 8, 8)).astype(np.float32)
    audio = np.zeros((1, 32, 16, 16), np.float32)
    w = model.conv.weight.detach().numpy()
    b = model.conv.bias.detach().numpy()
    generator = CoreMLGenerator(path32, mode="emulated", precision="fp16")
    out = generator.generate(image, audio).astype(np.float64)
    expected = _fp16(1.0 / (1.0 + np.exp(-_fp16(_conv_float64(_fp16(image), _fp16(w), _fp16(b))))))
    ulp = np.spacing(expected.astype(np.float16)).astype(np.float64)
    assert np.all(np.abs(out - expected) <= ulp)
    assert np.array_equal(out, out.astype(np.float16).astype(np.float64))  # every value is an fp16 value
    assert generator.provenance.precision == "fp32 (emulated as fp16)"


def test_unsupported_operation_is_listed_with_every_operation_met(tmp_path) -> None:
    class WithSin(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sin(self.conv(x)).flatten(1)

    path = convert(WithSin().eval(), "encoder", tmp_path / "sin.mlpackage", "fp32")
    with pytest.raises(InputError) as error:
        CoreMLEncoder(path, mode="emulated")
    message = str(error.value)
    assert "unsupported ['sin']" in message
    assert "conv x1" in message and "sin x1" in message


def test_bad_options_and_inputs_are_input_errors(coreml_cache, tmp_path) -> None:
    path, _ = cached_model(coreml_cache, "encoder", "fp32")
    with pytest.raises(InputError, match="macOS"):
        CoreMLEncoder(path, mode="native")
    with pytest.raises(InputError, match="compute unit"):
        CoreMLEncoder(path, compute_unit="gpu_only", mode="emulated")
    with pytest.raises(InputError, match="precision"):
        CoreMLEncoder(path, mode="emulated", precision="int8")
    with pytest.raises(InputError, match=r"\[B,1,80,16\], found \[2, 80, 16\]"):
        CoreMLEncoder(path, mode="emulated").encode(np.zeros((2, 80, 16), np.float32))
    with pytest.raises(InputError, match="no file"):
        CoreMLEncoder(tmp_path / "missing.mlpackage", mode="emulated")
    with pytest.raises(InputError, match="expected a generator|image input"):
        CoreMLGenerator(path, mode="emulated")  # an encoder file has no [B,6,S,S] input


def test_auto_mode_emulates_off_macos_and_says_so(coreml_cache) -> None:
    path, _ = cached_model(coreml_cache, "encoder", "fp32")
    encoder = CoreMLEncoder(path)  # mode auto
    assert encoder.provenance.runtime == "coreml-emulated"
    assert "onnxruntime" in encoder.provenance.version
    assert "coremltools" in encoder.provenance.details
    assert "cpu_only" in encoder.provenance.details["compute_unit"]


def test_native_mode_wiring_with_a_stand_in_for_core_ml(coreml_cache, monkeypatch) -> None:
    """No Mac here: a stand-in MLModel (PyTorch behind coremltools' API) checks what the native path asks Core ML:
    the chosen compute unit, one float32 sample per predict call, 'coreml-native' in the provenance, and a private
    copy of the package (coremltools rewrites the Manifest.json of the package it opens; the user's must not change)."""
    import backends.coreml_backend as coreml_backend
    from backends.coreml_emulator import load_spec

    path, model = cached_model(coreml_cache, "encoder", "fp32")
    ct = coreml_backend._quiet_coremltools()
    spec, weights_dir = load_spec(path)
    output_name = spec.description.output[0].name
    manifest = path / "Manifest.json"
    manifest_before = (manifest.read_bytes(), manifest.stat().st_mtime_ns)
    requested_units, batches, opened = [], [], []

    class StandInMLModel:
        def __init__(self, _path: str, compute_units=None, skip_model_load: bool = False) -> None:
            if not skip_model_load:
                requested_units.append(compute_units)
            opened.append(_path)
            (Path(_path) / "Manifest.json").write_text("{}")  # what coremltools' ModelPackage may do to it
            self.weights_dir = weights_dir

        def get_spec(self):
            return spec

        def predict(self, feeds: dict) -> dict:
            x = feeds["mel_spectrogram"]
            batches.append((x.shape[0], x.dtype))
            return {output_name: torch_forward(model, x)}

    monkeypatch.setattr(coreml_backend, "native_available", lambda: True)
    monkeypatch.setattr(ct.models, "MLModel", StandInMLModel)
    encoder = CoreMLEncoder(path, compute_unit="cpu_and_gpu")  # auto -> native where Core ML is available
    windows = encoder_inputs(3)
    features = encoder.encode(windows)
    assert requested_units == [ct.ComputeUnit.CPU_AND_GPU]
    assert batches == [(1, np.float32)] * 3
    assert encoder.provenance.runtime == "coreml-native"
    assert encoder.provenance.provider == "cpu_and_gpu"
    assert encoder.provenance.precision == "fp32"
    assert np.allclose(features, torch_forward(model, windows), atol=1e-5)
    assert len(opened) == 1 and Path(opened[0]).resolve() != path.resolve()
    assert (manifest.read_bytes(), manifest.stat().st_mtime_ns) == manifest_before


class _ManyOps(nn.Module):
    """Operations the SyncTalk_2D nets do not use but other conversions do; a batch norm after a non-conv op stays
    unfolded, so batch_norm itself is exercised too."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(1, 4, 3, stride=(2, 1), padding=1)
        self.bn = nn.BatchNorm2d(4)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)
        self.linear = nn.Linear(4 * 40 * 9, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.tanh(self.conv(x))
        y = nn.functional.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False)  # half-pixel
        y = self.bn(nn.functional.leaky_relu(y, 0.1))
        y = nn.functional.pad(y, (1, 1, 2, 0), mode="reflect")
        y = nn.functional.max_pool2d(y, 2) - 0.5 * nn.functional.avg_pool2d(y, 2)  # [1, 4, 41, 17]
        y = torch.clamp(y, -1.0, 1.5)[:, :, 1:, ::2]  # slicing: [1, 4, 40, 9]
        return self.linear(y.flatten(1))


def test_other_common_operations_match_torch(tmp_path) -> None:
    import onnxruntime as ort

    from backends.coreml_emulator import translate

    model = _ManyOps().eval()
    path = convert(model, "encoder", tmp_path / "many.mlpackage", "fp32")
    translated = translate(path)
    session = ort.InferenceSession(translated.onnx_bytes, providers=["CPUExecutionProvider"])
    x = encoder_inputs(1)
    result = session.run(None, {"mel_spectrogram": x})[0]
    ops = {"batch_norm", "upsample_bilinear", "pad", "max_pool", "avg_pool", "linear", "slice_by_index", "clip"}
    assert ops <= set(translated.op_counts)
    assert _max_abs(result, torch_forward(model, x)) <= 1e-4


class _Reductions(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.conv = nn.Conv2d(1, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return torch.cat([y.sum(dim=(2, 3)), y.mean(dim=(2, 3)), y.amax(dim=(2, 3))], 1)


def test_reductions_match_torch(tmp_path) -> None:
    """reduce_sum takes its axes as an input in ONNX opset 13+, unlike reduce_mean and reduce_max at opset 17."""
    model = _Reductions().eval()
    path = convert(model, "encoder", tmp_path / "reductions.mlpackage", "fp32")
    import onnxruntime as ort

    from backends.coreml_emulator import translate

    translated = translate(path)  # run the graph itself: its output [1, 12] is not an encoder's [1, 512]
    assert {"reduce_sum", "reduce_mean", "reduce_max"} <= set(translated.op_counts)
    session = ort.InferenceSession(translated.onnx_bytes, providers=["CPUExecutionProvider"])
    x = encoder_inputs(2)[:1]
    assert _max_abs(session.run(None, {"mel_spectrogram": x})[0], torch_forward(model, x)) <= 1e-4


def test_a_translation_onnxruntime_rejects_is_an_input_error(coreml_cache, monkeypatch) -> None:
    import dataclasses

    import backends.coreml_backend as coreml_backend

    path, _ = cached_model(coreml_cache, "encoder", "fp32")
    real = coreml_backend.translate(path)
    # The runner takes its program through the translation cache, so the broken translation goes in there.
    monkeypatch.setattr(coreml_backend, "translate_cached",
                        lambda *_: dataclasses.replace(real, onnx_bytes=b"not onnx"))
    with pytest.raises(InputError, match="could not be loaded by onnxruntime"):
        CoreMLEncoder(path, mode="emulated")


def test_an_emulation_failing_at_run_time_is_an_input_error(coreml_cache) -> None:
    path, _ = cached_model(coreml_cache, "encoder", "fp32")
    encoder = CoreMLEncoder(path, mode="emulated")

    class FailingSession:
        def run(self, *_args):
            raise RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT")

    encoder.runner.session = FailingSession()
    with pytest.raises(InputError, match=r"emulation failed on inputs mel_spectrogram:\[2, 1, 80, 16\]"):
        encoder.encode(encoder_inputs(2))
