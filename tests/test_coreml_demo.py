"""On the demo bundle: diff-weights names the Core ML encoder converted without its weights, and the emulated Core ML
models compute what the bundle's ONNX models compute (the ONNX files are the independent reference here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from backends.coreml_backend import CoreMLEncoder, CoreMLGenerator
from cli.diff_weights import diff_weights
from backends.onnx_backend import OnnxEncoder, OnnxGenerator
from tests.builders.coreml_models import encoder_inputs, generator_inputs

MODELS = Path(__file__).resolve().parents[1] / "resources" / "demo" / "models"
pytestmark = pytest.mark.skipif(not (MODELS / "AudioEncoder_untrained.mlpackage").exists(),
                                reason="demo bundle not built")


def test_diff_weights_tells_the_correct_encoder_from_the_untrained_one() -> None:
    good = diff_weights(MODELS / "audio_visual_encoder.pth", MODELS / "AudioEncoder.mlpackage")
    assert good.verdict.startswith("same weights") and not good.untrained_b
    bad = diff_weights(MODELS / "audio_visual_encoder.pth", MODELS / "AudioEncoder_untrained.mlpackage")
    assert "B (AudioEncoder_untrained.mlpackage) looks untrained: 13 of 13 layers" in bad.verdict
    assert len(bad.untrained_b) == 13 and not bad.untrained_a
    assert [c.a for c in bad.layers][:2] == ["0.conv_block.0", "1.conv_block.0"]  # rows name the layers


def test_diff_weights_says_the_x200_encoder_holds_the_same_weights_but_another_graph() -> None:
    """The quick fix of the original port: trained weights (from the same export) and one extra multiplication."""
    result = diff_weights(MODELS / "AudioEncoder.mlpackage", MODELS / "AudioEncoder_scale200.mlpackage")
    assert result.verdict.startswith("same weights")
    assert "B has mul x1 more" in result.verdict


def test_emulated_demo_encoder_matches_onnx() -> None:
    windows = encoder_inputs(40)
    reference = OnnxEncoder(MODELS / "audio_encoder.onnx").encode(windows)
    emulated = CoreMLEncoder(MODELS / "AudioEncoder.mlpackage", mode="emulated").encode(windows)
    assert np.max(np.abs(emulated - reference)) <= 1e-4
    untrained = CoreMLEncoder(MODELS / "AudioEncoder_untrained.mlpackage", mode="emulated").encode(windows)
    assert untrained.mean() < 0.2 * reference.mean()  # the bug: far smaller features


def test_emulated_demo_generator_matches_onnx_within_fp16_tolerance() -> None:
    generator = CoreMLGenerator(MODELS / "Generator.mlpackage", mode="emulated")
    image, audio = generator_inputs(1, generator.size)
    reference = OnnxGenerator(MODELS / "generator.onnx").generate(image, audio)
    assert np.max(np.abs(generator.generate(image, audio) - reference)) <= 2e-2


def test_dump_command_accepts_coreml_and_pth_encoders(tmp_path) -> None:
    """The foundation's dump command, fed the bundle's Core ML and .pth encoders: same features (same weights)."""
    from cli.main import run  # in-process: the same parser and dispatch as `python app.py dump ...`

    outputs = {}
    for name in ("AudioEncoder.mlpackage", "audio_visual_encoder.pth"):
        out = tmp_path / f"{name}.npy"
        argv = ["dump", "--audio", str(MODELS.parent / "aud.wav"), "--encoder", str(MODELS / name),
                "--stage", "features", "--out", str(out)]
        assert run(argv) == 0
        outputs[name] = np.load(out)
    coreml, pth = outputs.values()
    assert coreml.shape == pth.shape and coreml.shape[1] == 512
    assert np.max(np.abs(coreml - pth)) <= 1e-4
