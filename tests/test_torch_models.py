"""The PyTorch model definitions match the published SyncTalk_2D facts (PIPELINE.md stages 3 and 5).

The references here are written independently of backends/torch_models.py: parameter counts come from closed-form
layer formulas, key names and shapes are spelled out by hand from the published layer list.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from backends.torch_models import (  # noqa: E402
    AudioEncoderAVE,
    UNetGenerator,
    count_parameters,
    load_encoder_state,
)
from core.errors import InputError  # noqa: E402


# ----------------------------------------------------------------------------------------------- encoder (stage 3)


def _ave_param_count_by_formula() -> int:
    """Conv weights + bias + BatchNorm gamma/beta, summed over PIPELINE.md's 13 (cin, cout, k) entries."""
    layers = [(1, 32, 3)] + [(32, 32, 3)] * 2 + [(32, 64, 3)] + [(64, 64, 3)] * 2 + [(64, 128, 3)]
    layers += [(128, 128, 3)] * 2 + [(128, 256, 3), (256, 256, 3), (256, 512, 3), (512, 512, 1)]
    return sum(cin * cout * k * k + cout + 2 * cout for cin, cout, k in layers)


def test_ave_parameter_count_is_the_published_2_812_672() -> None:
    assert _ave_param_count_by_formula() == 2_812_672  # the formula itself agrees with PIPELINE.md
    assert count_parameters(AudioEncoderAVE()) == 2_812_672


def test_ave_state_dict_keys_have_no_prefix_and_run_from_block_0_to_12() -> None:
    keys = list(AudioEncoderAVE().state_dict().keys())
    per_block = ["conv_block.0.weight", "conv_block.0.bias", "conv_block.1.weight", "conv_block.1.bias",
                 "conv_block.1.running_mean", "conv_block.1.running_var", "conv_block.1.num_batches_tracked"]
    assert keys == [f"{block}.{name}" for block in range(13) for name in per_block]
    assert keys[0] == "0.conv_block.0.weight" and keys[-1] == "12.conv_block.1.num_batches_tracked"


def test_ave_intermediate_shapes_follow_pipeline_md() -> None:
    encoder = AudioEncoderAVE().eval()
    shapes = {}
    x = torch.randn(2, 1, 80, 16)
    with torch.no_grad():
        for index, block in enumerate(encoder):
            x = block(x)
            shapes[index] = tuple(x.shape[1:])
    assert shapes[2] == (32, 80, 16)
    assert shapes[5] == (64, 27, 16)
    assert shapes[8] == (128, 9, 6)
    assert shapes[10] == (256, 3, 3)
    assert shapes[12] == (512, 1, 1)


def test_ave_output_is_b_by_512_and_never_negative() -> None:
    encoder = AudioEncoderAVE().eval()
    with torch.no_grad():
        out = encoder(torch.randn(5, 1, 80, 16) * 4)
    assert out.shape == (5, 512)
    assert float(out.min()) >= 0.0


def test_ave_residual_blocks_add_their_input_before_the_relu() -> None:
    """Block 1 is residual: with its conv and BN zeroed, it must return relu(input) unchanged."""
    encoder = AudioEncoderAVE().eval()
    block = encoder[1]
    with torch.no_grad():
        for p in block.parameters():
            p.zero_()
        x = torch.randn(1, 32, 80, 16)
        assert torch.equal(block(x), torch.relu(x))


def test_load_encoder_state_accepts_the_reference_prefix() -> None:
    source = AudioEncoderAVE()
    prefixed = {"audio_encoder." + k: v.clone() for k, v in source.state_dict().items()}
    target = load_encoder_state(AudioEncoderAVE(), prefixed)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value)


def test_load_encoder_state_refuses_a_partial_checkpoint_and_names_the_keys() -> None:
    state = AudioEncoderAVE().state_dict()
    del state["3.conv_block.0.weight"]
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(InputError) as caught:
        load_encoder_state(AudioEncoderAVE(), state)
    assert "3.conv_block.0.weight" in str(caught.value)
    assert "extra.weight" in str(caught.value)


def test_load_encoder_state_refuses_a_checkpoint_with_a_foreign_prefix() -> None:
    """The real bug: keys under another prefix load nothing; strict loading must say so, not keep random weights."""
    state = {"model.encoder." + k: v for k, v in AudioEncoderAVE().state_dict().items()}
    with pytest.raises(InputError, match="missing 91"):
        load_encoder_state(AudioEncoderAVE(), state)


# --------------------------------------------------------------------------------------------- generator (stage 5)


def _inverted_residual(cin: int, cout: int, expand: int = 2) -> int:
    hidden = cin * expand
    return cin * hidden + 2 * hidden + 9 * hidden + 2 * hidden + hidden * cout + 2 * cout


def _double(cin: int, cout: int) -> int:
    return _inverted_residual(cin, cout) + _inverted_residual(cout, cout)


def _generator_params_by_formula(size: int) -> int:
    """Closed-form count for the published channels 32/64/128/256/512 (audio input 32 channels)."""
    audio = (_inverted_residual(32, 64) + _inverted_residual(64, 128) + (128 * 256 * 9 + 256) + 2 * 256
             + _inverted_residual(256, 256) + (256 * 512 * 9 + 512) + 2 * 512 + 2 * _inverted_residual(512, 512))
    fuse = _double(1024, 512) + _double(512, 256)
    inc = _inverted_residual(6, 32)
    if size == 160:
        downs = _double(32, 64) + _double(64, 128) + _double(128, 256) + _double(256, 512)
        ups = _double(512, 128) + _double(256, 64) + _double(128, 32) + _double(64, 32)
        out = 32 * 3 + 3
    else:
        downs = _double(32, 32) + _double(32, 64) + _double(64, 128) + _double(128, 256) + _double(256, 512)
        ups = _double(512, 128) + _double(256, 64) + _double(128, 32) + _double(64, 32) + _double(64, 16)
        out = 16 * 3 + 3
    return audio + fuse + inc + downs + ups + out


@pytest.mark.parametrize("size", [160, 320])
def test_generator_at_width_1_has_the_published_about_12_2_million_parameters(size: int) -> None:
    count = count_parameters(UNetGenerator(size=size, width=1.0))
    assert count == _generator_params_by_formula(size)
    assert 12.1e6 < count < 12.25e6  # PIPELINE.md: "about 12.2 M parameters for both sizes"


@pytest.mark.parametrize("size", [160, 320])
def test_generator_output_shape_and_range(size: int) -> None:
    generator = UNetGenerator(size=size, width=0.25).eval()
    with torch.no_grad():
        out = generator(torch.rand(2, 6, size, size), torch.randn(2, 32, 16, 16) * 5)
    assert out.shape == (2, 3, size, size)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_generator_keys_match_the_synctalk_checkpoint_names() -> None:
    """Spot keys and shapes of a real SyncTalk_2D 320 checkpoint, spelled out from the published layer list."""
    state = UNetGenerator(size=320, width=1.0).state_dict()
    expected = {
        "audio_model.conv1.conv.0.weight": (64, 32, 1, 1),
        "audio_model.conv3.weight": (256, 128, 3, 3),
        "audio_model.bn5.running_var": (512,),
        "audio_model.conv7.conv.7.num_batches_tracked": (),
        "fuse_conv.0.double_conv.0.conv.0.weight": (2048, 1024, 1, 1),
        "fuse_conv.1.double_conv.1.conv.6.weight": (256, 512, 1, 1),
        "inc.inconv.0.conv.0.weight": (12, 6, 1, 1),
        "inc.inconv.0.conv.3.weight": (12, 1, 3, 3),
        "down1.maxpool_conv.0.double_conv.0.conv.0.weight": (64, 32, 1, 1),
        "down5.maxpool_conv.0.double_conv.1.conv.7.running_mean": (512,),
        "up1.conv.double_conv.0.conv.0.weight": (1024, 512, 1, 1),
        "up5.conv.double_conv.0.conv.6.weight": (16, 128, 1, 1),
        "outc.conv.weight": (3, 16, 1, 1),
        "outc.conv.bias": (3,),
    }
    for key, shape in expected.items():
        assert key in state, key
        assert tuple(state[key].shape) == shape, key
    prefixes = {key.split(".")[0] for key in state}
    assert prefixes == {"audio_model", "fuse_conv", "inc", "down1", "down2", "down3", "down4", "down5",
                        "up1", "up2", "up3", "up4", "up5", "outc"}


def test_generator_160_has_four_levels_and_ends_at_32_channels() -> None:
    state = UNetGenerator(size=160, width=1.0).state_dict()
    assert not any(key.startswith(("down5.", "up5.")) for key in state)
    assert tuple(state["down1.maxpool_conv.0.double_conv.0.conv.6.weight"].shape) == (64, 64, 1, 1)
    assert tuple(state["outc.conv.weight"].shape) == (3, 32, 1, 1)


def test_generator_loads_its_own_checkpoint_strictly_across_instances() -> None:
    source = UNetGenerator(size=160, width=0.25)
    target = UNetGenerator(size=160, width=0.25)
    target.load_state_dict(source.state_dict(), strict=True)
    x, a = torch.rand(1, 6, 160, 160), torch.randn(1, 32, 16, 16)
    with torch.no_grad():
        assert torch.equal(source.eval()(x, a), target.eval()(x, a))


def test_generator_output_depends_on_the_audio() -> None:
    """The audio branch is wired into the image path: the output has a non-zero gradient w.r.t. the audio."""
    torch.manual_seed(0)
    generator = UNetGenerator(size=160, width=0.25).eval()
    audio = torch.randn(1, 32, 16, 16, requires_grad=True)
    generator(torch.rand(1, 6, 160, 160), audio).sum().backward()
    assert audio.grad is not None and float(audio.grad.abs().sum()) > 0.0


def test_generator_rejects_an_unsupported_size() -> None:
    with pytest.raises(ValueError, match="160, 320"):
        UNetGenerator(size=256)
