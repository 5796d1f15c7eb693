"""diff-weights tells a correctly converted Core ML encoder from one converted without its weights, and names layers.

References: PyTorch's own default initialisation (a freshly constructed module) for "looks untrained", the module's
trained-ish weights for "same weights", and hand-built layer lists for the pairing rule.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from backends.inspection import BatchNorm, WeightLayer, looks_default_init
from cli.diff_weights import diff_weights, pair_layers
from core.errors import InputError
from tests.builders.coreml_models import build_encoder, build_generator, cached_model, export_onnx, save_state_dict

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def encoder_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    cache = tmp_path_factory.getbasetemp() / "coreml_cache"
    cache.mkdir(exist_ok=True)
    folder = tmp_path_factory.mktemp("diff")
    good_coreml, trained = cached_model(cache, "encoder", "fp32", seed=1)
    untrained_coreml, _ = cached_model(cache, "encoder", "fp32", seed=None)
    good_fp16, _ = cached_model(cache, "encoder", "fp16", seed=1)
    return {
        "pth": save_state_dict(trained, folder / "audio_visual_encoder.pth"),
        "onnx": export_onnx(trained, "encoder", folder / "audio_encoder.onnx"),
        "coreml": good_coreml,
        "coreml_fp16": good_fp16,
        "coreml_untrained": untrained_coreml,
    }


def test_pytorch_default_init_is_recognised_and_trained_weights_are_not() -> None:
    torch.manual_seed(0)
    assert looks_default_init(nn.Conv2d(64, 128, 3).weight.detach().numpy())
    assert looks_default_init(nn.Conv2d(32, 32, 3, groups=32).weight.detach().numpy())  # depthwise: fan_in 9
    assert looks_default_init(nn.Linear(512, 256).weight.detach().numpy())
    randomized = build_encoder(seed=4)
    for module in randomized.modules():
        if isinstance(module, nn.Conv2d):
            assert not looks_default_init(module.weight.detach().numpy())
    assert not looks_default_init(np.zeros((8, 8, 3, 3)))
    assert BatchNorm(np.ones(4), np.zeros(4), np.zeros(4), np.ones(4)).is_default()


def test_correct_pth_and_coreml_encoders_are_the_same_weights(encoder_files) -> None:
    """The .pth keeps batch norm separate, Core ML folded it: equal only if folding is done right."""
    result = diff_weights(encoder_files["pth"], encoder_files["coreml"])
    assert result.verdict.startswith("same weights")
    assert len(result.layers) == 13
    assert all(c.cosine > 0.99999 and abs(c.scale - 1) < 1e-4 for c in result.layers)
    assert not result.untrained_a and not result.untrained_b


def test_encoder_converted_without_weights_is_named_untrained(encoder_files) -> None:
    result = diff_weights(encoder_files["coreml"], encoder_files["coreml_untrained"])
    assert "B (encoder_fp32_mlprogram_seedNone.mlpackage) looks untrained" in result.verdict
    assert len(result.untrained_b) == 13 and not result.untrained_a
    assert all("b: looks untrained (default init)" in c.flags for c in result.layers)
    assert all(abs(c.cosine) < 0.2 for c in result.layers)  # random against trained: nearly orthogonal
    # The layers are named in the verdict and in every row, as the file names them.
    assert result.layers[0].b in result.verdict
    assert all(c.a and c.b for c in result.layers)


def test_fp16_and_fp32_conversions_hold_the_same_weights(encoder_files) -> None:
    result = diff_weights(encoder_files["coreml_fp16"], encoder_files["onnx"])
    assert result.verdict.startswith("same weights")
    assert result.a.precision == "fp16" and result.b.precision == "fp32"
    biggest = max(c.max_abs for c in result.layers)
    assert 0.0 < biggest < 1e-2  # fp16 storage error, nothing more


def test_generator_layers_pair_in_execution_order_across_pth_and_onnx(tmp_path) -> None:
    """The audio branch comes first in the state dict but runs after the image encoder; pairing must still hold."""
    model = build_generator(160, 0.25, seed=7)
    pth = save_state_dict(model, tmp_path / "unet.pth")
    onnx_path = export_onnx(model, "generator", tmp_path / "unet.onnx")
    result = diff_weights(pth, onnx_path)
    assert result.verdict.startswith("same weights"), result.verdict
    assert all(c.cosine is not None and c.cosine > 0.9999 for c in result.layers)


def test_pairing_is_by_order_within_each_shape() -> None:
    def layer(name: str, shape: tuple[int, ...]) -> WeightLayer:
        return WeightLayer(name, "conv", np.ones(shape, np.float32), None, "float32")

    a = [layer("a1", (4, 2, 3, 3)), layer("a2", (8, 4, 1, 1)), layer("a3", (4, 2, 3, 3))]
    b = [layer("b1", (8, 4, 1, 1)), layer("b2", (4, 2, 3, 3)), layer("b3", (4, 2, 3, 3)), layer("b4", (2, 2, 1, 1))]
    names = [(x.name if x else None, y.name if y else None) for x, y in pair_layers(a, b)]
    assert names == [("a1", "b2"), ("a2", "b1"), ("a3", "b3"), (None, "b4")]


def test_folding_batch_norm_matches_torch_fusion() -> None:
    """Independent reference: torch's own conv-bn fusion utility."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model = build_encoder(seed=2)
    block = model[3].conv_block
    fused = fuse_conv_bn_eval(block[0], block[1])
    bn = block[1]
    layer = WeightLayer("x", "conv", block[0].weight.detach().numpy(), block[0].bias.detach().numpy(), "float32",
                        BatchNorm(bn.weight.detach().numpy(), bn.bias.detach().numpy(), bn.running_mean.numpy(),
                                  bn.running_var.numpy(), bn.eps))
    weight, bias = layer.effective()
    assert np.allclose(weight, fused.weight.detach().numpy(), atol=1e-6)
    assert np.allclose(bias, fused.bias.detach().numpy(), atol=1e-6)


def test_cli_diff_weights_writes_the_documented_json(encoder_files, tmp_path) -> None:
    out = tmp_path / "diff.json"
    completed = subprocess.run(
        [sys.executable, "app.py", "diff-weights", str(encoder_files["pth"]), str(encoder_files["coreml_untrained"]),
         "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    data = json.loads(out.read_text())
    assert set(data) >= {"layers", "verdict"}
    assert set(data["layers"][0]) >= {"a", "b", "shape", "cosine", "scale", "max_abs", "flags"}
    assert data["layers"][0]["a"] == "0.conv_block.0" and data["layers"][0]["shape"] == [32, 1, 3, 3]
    assert "looks untrained" in data["verdict"]
    assert "verdict: B (" in completed.stdout


def test_cli_diff_weights_missing_file_exits_2(tmp_path, capsys) -> None:
    from cli.main import run

    assert run(["diff-weights", str(tmp_path / "a.onnx"), str(tmp_path / "b.pth")]) == 2
    assert "found nothing at" in capsys.readouterr().err


def test_models_without_weight_layers_are_an_input_error(tmp_path) -> None:
    torch.save({"running_mean": torch.zeros(3)}, tmp_path / "stats.pth")
    with pytest.raises(InputError, match="expected convolution or linear layers"):
        diff_weights(tmp_path / "stats.pth", tmp_path / "stats.pth")


class _Scaled(nn.Module):
    """The "x200 fix": the trained encoder with its output multiplied, which the weights alone do not show."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) * 200.0


def test_same_weights_with_an_extra_operation_says_the_graphs_differ(encoder_files, tmp_path) -> None:
    trained = build_encoder(seed=1)
    scaled = export_onnx(_Scaled(trained).eval(), "encoder", tmp_path / "scaled.onnx")
    result = diff_weights(encoder_files["onnx"], scaled)
    assert result.verdict.startswith("same weights")
    assert "the graphs differ beyond their weights: B has Mul x1 more" in result.verdict
    plain = diff_weights(encoder_files["onnx"], encoder_files["onnx"])
    assert "differ beyond" not in plain.verdict
    assert "differ beyond" not in diff_weights(encoder_files["coreml_fp16"], encoder_files["coreml"]).verdict  # casts


def test_a_layer_scaled_by_two_is_counted_and_named(encoder_files, tmp_path) -> None:
    """Reference: the ONNX file's own third convolution, its weight and bias multiplied by 2 by hand."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(encoder_files["onnx"]))
    conv = [node for node in model.graph.node if node.op_type == "Conv"][2]
    for initializer in model.graph.initializer:
        if initializer.name in conv.input[1:]:
            initializer.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(initializer) * 2, initializer.name))
    onnx.save(model, str(tmp_path / "doubled.onnx"))
    result = diff_weights(tmp_path / "doubled.onnx", encoder_files["onnx"])
    assert abs(result.layers[2].scale - 2.0) < 1e-6 and result.layers[2].cosine > 0.99999
    assert result.verdict.startswith("weights agree in direction but differ in scale in 1 of 13 paired layers")
    assert result.layers[2].a in result.verdict
