"""The PyTorch backend loads SyncTalk_2D checkpoints strictly and computes what the saved module computed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backends import registry
from backends.torch_backend import TorchEncoder, TorchGenerator, infer_generator_layout, open_torch_generator
from core.errors import InputError
from tests.builders.coreml_models import (
    build_encoder,
    build_generator,
    encoder_inputs,
    generator_inputs,
    save_state_dict,
    torch_forward,
)


@pytest.mark.parametrize("prefix", ["", "audio_encoder."])
def test_encoder_checkpoint_with_or_without_prefix_reproduces_the_saved_module(tmp_path, prefix: str) -> None:
    model = build_encoder(seed=11)
    path = save_state_dict(model, tmp_path / "audio_visual_encoder.pth", prefix)
    encoder = TorchEncoder(path)
    windows = encoder_inputs(5)
    assert np.array_equal(encoder.encode(windows), torch_forward(model, windows))
    assert encoder.provenance.runtime == "torch"
    assert encoder.provenance.precision == "fp32"


def test_encoder_checkpoint_with_missing_and_extra_keys_names_them(tmp_path) -> None:
    state = build_encoder(seed=11).state_dict()
    del state["12.conv_block.1.running_var"]
    state["13.conv_block.0.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(InputError) as error:
        TorchEncoder(path)
    assert "12.conv_block.1.running_var" in str(error.value)
    assert "13.conv_block.0.weight" in str(error.value)


@pytest.mark.parametrize("size", [160, 320])
def test_generator_size_and_width_are_read_from_the_tensors(tmp_path, size: int) -> None:
    model = build_generator(size, 0.25, seed=12)
    path = save_state_dict(model, tmp_path / f"unet_{size}.pth")
    assert infer_generator_layout(torch.load(path, weights_only=True)) == (size, 0.25)
    generator = open_torch_generator(path)
    image, audio = generator_inputs(1, size)
    assert generator.size == size
    assert np.array_equal(generator.generate(image, audio), torch_forward(model, image, audio))


def test_generator_checkpoint_with_a_missing_key_is_an_error(tmp_path) -> None:
    state = build_generator(160, 0.25, seed=12).state_dict()
    del state["outc.conv.bias"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(InputError, match="outc.conv.bias"):
        TorchGenerator(path)


def test_a_generator_is_not_accepted_as_an_encoder_and_vice_versa(tmp_path) -> None:
    encoder_path = save_state_dict(build_encoder(seed=1), tmp_path / "enc.pth")
    generator_path = save_state_dict(build_generator(160, 0.25, seed=1), tmp_path / "gen.pth")
    with pytest.raises(InputError, match="found a generator checkpoint"):
        TorchEncoder(generator_path)
    with pytest.raises(InputError, match="found an AVE encoder checkpoint"):
        TorchGenerator(encoder_path)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="state dict"):
        TorchEncoder(tmp_path / "junk.pth")


def test_registry_opens_pth_files_with_the_torch_backend(tmp_path) -> None:
    model = build_encoder(seed=3)
    path = save_state_dict(model, tmp_path / "enc.pth")
    encoder = registry.open_encoder(path)
    windows = encoder_inputs(2)
    assert encoder.provenance.runtime == "torch"
    assert np.array_equal(encoder.encode(windows), torch_forward(model, windows))
