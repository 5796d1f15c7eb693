"""Core ML, ONNX and .pth files of the project's own networks, with weights that are not PyTorch's defaults.

Tests compare the Core ML emulation with PyTorch running the very same weights, so a builder returns both the
torch module (the independent reference) and the converted file. Conversions take seconds each, so `cached_model`
keeps them in a folder shared by the whole test session and rebuilds the torch module from its seed instead of
storing it.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from backends.torch_models import AudioEncoderAVE, UNetGenerator
from tests.builders.onnx_models import generator_inputs_like, mel_windows_like


def randomize(model: nn.Module, seed: int, gain: float = 1.0) -> nn.Module:
    """Give every layer non-default weights and non-trivial batch-norm statistics (deterministic per seed).

    Convs get normal weights of std sqrt(gain/fan_in) (about a third of them outside PyTorch's kaiming-uniform bound
    1/sqrt(fan_in)), so "looks untrained" detection must not fire on them; gain 1 keeps the encoder's features in
    the 0-10 range real speech gives, so absolute tolerances mean what they mean for real models; BN gets gamma around 1, a mean
    and variance away from 0 and 1, so folding BN into the conv is visible in the weights.
    """
    generator = torch.Generator().manual_seed(seed)

    def normal(shape: torch.Size, std: float) -> torch.Tensor:
        return torch.randn(shape, generator=generator) * std

    def uniform(shape: torch.Size, low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(shape, generator=generator)

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.copy_(normal(module.weight.shape, math.sqrt(gain / fan_in)))
                if module.bias is not None:
                    module.bias.copy_(normal(module.bias.shape, 0.05))
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.copy_(uniform(module.weight.shape, 0.6, 1.4))
                module.bias.copy_(normal(module.bias.shape, 0.1))
                module.running_mean.copy_(normal(module.running_mean.shape, 0.2))
                module.running_var.copy_(uniform(module.running_var.shape, 0.5, 2.0))
    return model.eval()


def build_encoder(seed: int | None = 1) -> AudioEncoderAVE:
    """The AVE encoder, randomized with `seed`, or left at PyTorch's initialisation when seed is None."""
    torch.manual_seed(1234)
    model = AudioEncoderAVE().eval()
    return randomize(model, seed) if seed is not None else model


def build_generator(size: int, width: float, seed: int | None = 2) -> UNetGenerator:
    torch.manual_seed(4321)
    model = UNetGenerator(size=size, width=width).eval()
    return randomize(model, seed) if seed is not None else model


def encoder_inputs(count: int, seed: int = 5) -> np.ndarray:
    """Mel windows in the normalised range [-4, 4], as the pipeline feeds them."""
    return mel_windows_like(count, seed)


def generator_inputs(count: int, size: int, seed: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Images in [0, 1] and audio tensors shaped like encoder features (non-negative, a few units)."""
    return generator_inputs_like(count, size, seed, audio_high=3.0)


def torch_forward(model: nn.Module, *inputs: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(*(torch.from_numpy(x) for x in inputs)).numpy()


def convert(model: nn.Module, role: str, path: Path, precision: str = "fp32", fmt: str = "mlprogram") -> Path:
    """Convert with coremltools the way a user would: traced torch, fixed batch 1, the field's tensor names."""
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import coremltools as ct

        if role == "encoder":
            example = (torch.zeros(1, 1, 80, 16),)
            inputs = [ct.TensorType(name="mel_spectrogram", shape=(1, 1, 80, 16))]
        else:
            size = model.size  # type: ignore[attr-defined]
            example = (torch.zeros(1, 6, size, size), torch.zeros(1, 32, 16, 16))
            inputs = [ct.TensorType(name="visual_input", shape=(1, 6, size, size)),
                      ct.TensorType(name="audio_input", shape=(1, 32, 16, 16))]
        traced = torch.jit.trace(model.eval(), example)
        # const_deduplication only merges identical constants (random weights have none) but hashes every weight:
        # without it the full-size generator converts in ~8 s instead of ~30 s, with the same operations.
        passes = ct.PassPipeline.DEFAULT
        passes.remove_passes(["common::const_deduplication"])
        if fmt == "mlprogram":
            compute = ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32
            mlmodel = ct.convert(traced, inputs=inputs, convert_to="mlprogram", compute_precision=compute,
                                 minimum_deployment_target=ct.target.iOS15, pass_pipeline=passes)
        else:
            mlmodel = ct.convert(traced, inputs=inputs, convert_to="neuralnetwork", pass_pipeline=passes)
            if precision == "fp16":
                from coremltools.models.neural_network.quantization_utils import quantize_weights

                mlmodel = quantize_weights(mlmodel, nbits=16)
    mlmodel.save(str(path))
    return path


def cached_model(cache_dir: Path, role: str, precision: str = "fp32", fmt: str = "mlprogram", size: int = 160,
                 width: float = 0.25, seed: int | None = 1) -> tuple[Path, nn.Module]:
    """(Core ML file, the torch module it was converted from), converting only the first time in cache_dir."""
    model = build_encoder(seed) if role == "encoder" else build_generator(size, width, seed)
    suffix = ".mlpackage" if fmt == "mlprogram" else ".mlmodel"
    shape = "" if role == "encoder" else f"_{size}_w{width}"
    path = Path(cache_dir) / f"{role}{shape}_{precision}_{fmt}_seed{seed}{suffix}"
    if not path.exists():
        convert(model, role, path, precision, fmt)
    return path, model


def save_state_dict(model: nn.Module, path: Path, prefix: str = "") -> Path:
    """A .pth the way SyncTalk_2D ships them: a plain state dict, optionally with a key prefix."""
    torch.save({prefix + k: v for k, v in model.state_dict().items()}, str(path))
    return path


def export_onnx(model: nn.Module, role: str, path: Path) -> Path:
    """ONNX export of the same module (dynamic batch), for cross-format weight comparisons."""
    if role == "encoder":
        args: tuple[torch.Tensor, ...] = (torch.zeros(1, 1, 80, 16),)
        names, outputs = ["mel"], ["emb"]
    else:
        size = model.size  # type: ignore[attr-defined]
        args = (torch.zeros(1, 6, size, size), torch.zeros(1, 32, 16, 16))
        names, outputs = ["input", "audio"], ["output"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # A dynamic batch, as the field's encoder files have: OnnxEncoder then runs a clip in one call, which is the
        # fair reference for the emulated encoder's timing (a fixed batch of 1 would mean one call per window).
        torch.onnx.export(model.eval(), args, str(path), input_names=names, output_names=outputs, opset_version=17,
                          dynamo=False, do_constant_folding=True,
                          dynamic_axes={name: {0: "batch"} for name in [*names, *outputs]})
    return path
