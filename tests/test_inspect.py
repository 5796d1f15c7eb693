"""inspect describes ONNX, Core ML (ML Program and NeuralNetwork) and .pth files the same way.

References: PIPELINE.md's facts (the AVE encoder has 13 conv blocks and 2,812,672 parameters, input [1,1,80,16],
output [.,512]), the names the test conversion gave the tensors, and the precision it was asked to convert to.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from backends.inspection import describe
from cli.inspect import format_description
from core.errors import InputError
from tests.builders.coreml_models import build_generator, cached_model, export_onnx, save_state_dict

ROOT = Path(__file__).resolve().parents[1]
AVE_PARAMETERS = 2_812_672  # PIPELINE.md stage 3


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    cache = tmp_path_factory.getbasetemp() / "coreml_cache"
    cache.mkdir(exist_ok=True)
    folder = tmp_path_factory.mktemp("inspect")
    mlpackage, trained = cached_model(cache, "encoder", "fp32", seed=1)
    mlpackage16, _ = cached_model(cache, "encoder", "fp16", seed=1)
    mlmodel, _ = cached_model(cache, "encoder", "fp32", fmt="neuralnetwork", seed=1)
    return {
        "pth": save_state_dict(trained, folder / "audio_visual_encoder.pth", "audio_encoder."),
        "onnx": export_onnx(trained, "encoder", folder / "encoder.onnx"),
        "mlpackage": mlpackage,
        "mlpackage16": mlpackage16,
        "mlmodel": mlmodel,
    }


def test_pth_encoder_parameter_count_and_layers_match_the_published_facts(files) -> None:
    d = describe(files["pth"])
    assert d.format == "pytorch"
    assert d.parameter_count == AVE_PARAMETERS
    assert len(d.layers) == 13 and all(layer.bn is not None for layer in d.layers)
    assert d.op_counts["conv"] == 13 and d.op_counts["batch_norm"] == 13
    assert [layer.weight.shape for layer in d.layers][-2:] == [(512, 256, 3, 3), (512, 512, 1, 1)]
    assert d.precision == "fp32"


@pytest.mark.parametrize("key, fmt, precision", [
    ("mlpackage", "coreml-mlprogram", "fp32"),
    ("mlpackage16", "coreml-mlprogram", "fp16"),
    ("mlmodel", "coreml-neuralnetwork", "fp32"),
])
def test_coreml_files_show_inputs_outputs_precision_and_ops(files, key: str, fmt: str, precision: str) -> None:
    d = describe(files[key])
    assert d.format == fmt
    assert [(t.name, t.shape) for t in d.inputs] == [("mel_spectrogram", (1, 1, 80, 16))]
    assert d.precision == precision
    assert len(d.layers) == 13
    conv_ops = d.op_counts.get("conv", d.op_counts.get("convolution"))
    assert conv_ops == 13
    if fmt == "coreml-mlprogram":  # BN folded: its gamma and beta (2 per channel) are gone
        assert d.parameter_count == AVE_PARAMETERS - 2 * sum(layer.weight.shape[0] for layer in d.layers)
        assert {layer.stored_dtype for layer in d.layers} == {"float16" if precision == "fp16" else "float32"}


def test_onnx_file_is_described(files) -> None:
    d = describe(files["onnx"])
    assert d.format == "onnx"
    assert d.inputs[0].name == "mel" and d.inputs[0].shape[1:] == (1, 80, 16)
    assert d.op_counts["Conv"] == 13
    assert len(d.layers) == 13


def test_onnx_parameter_count_is_the_layers_weights_not_resize_scales(tmp_path) -> None:
    """Reference: the torch module's convolutions (ONNX export folds each batch norm into a conv bias)."""
    from torch import nn

    model = build_generator(160, 0.25, seed=1)
    d = describe(export_onnx(model, "generator", tmp_path / "unet.onnx"))
    assert d.op_counts["Resize"] == 4
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert d.parameter_count == sum(m.weight.numel() + m.out_channels for m in convs)


def test_long_layer_names_keep_both_ends() -> None:
    from cli.inspect import fit_name

    name = "/down1/maxpool_conv/maxpool_conv.0/double_conv/double_conv.0/conv/conv.3/Conv"
    short = fit_name(name, 32)
    assert len(short) == 32 and short.startswith("/down1/") and short.endswith("conv.3/Conv")
    assert fit_name("0.conv_block.0", 32) == "0.conv_block.0"


def test_generator_pth_is_recognised_with_its_size(tmp_path) -> None:
    path = save_state_dict(build_generator(320, 0.25, seed=1), tmp_path / "unet_328.pth")
    d = describe(path)
    assert [t.shape for t in d.inputs] == [(None, 6, 320, 320), (None, 32, 16, 16)]
    assert any("size 320" in note for note in d.notes)


def test_cli_inspect_prints_and_writes_json(files, tmp_path) -> None:
    out = tmp_path / "model.json"
    completed = subprocess.run([sys.executable, "app.py", "inspect", str(files["mlpackage16"]), "--json", str(out)],
                               cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert "precision   fp16" in completed.stdout
    data = json.loads(out.read_text())
    assert {"format", "inputs", "outputs", "precision", "op_counts", "parameter_count", "layers"} <= set(data)
    assert data["outputs"][0]["shape"] == [1, 512]
    assert {"name", "shape", "min", "max", "mean", "std", "flags"} <= set(data["layers"][0])


def test_text_output_has_one_line_per_layer(files) -> None:
    text = format_description(describe(files["pth"]))
    assert sum(1 for line in text.splitlines() if "conv_block.0 " in line and "+bn" in line) == 13


def test_unknown_or_missing_files_are_input_errors(tmp_path) -> None:
    (tmp_path / "model.tflite").write_bytes(b"x")
    with pytest.raises(InputError, match="expected .onnx"):
        describe(tmp_path / "model.tflite")
    (tmp_path / "broken.onnx").write_bytes(b"not a protobuf at all")
    with pytest.raises(InputError, match="broken.onnx"):
        describe(tmp_path / "broken.onnx")
    from cli.main import run

    assert run(["inspect", str(tmp_path / "none.mlpackage")]) == 2  # in-process: the exit-code contract
