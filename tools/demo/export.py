"""Writes the demo bundle from trained weights: avatar, demo clip, .pth, ONNX, Core ML (correct and broken), dumps.

The Core ML files are made the way users make theirs (trace the torch model, coremltools.convert to an ML
Program), including the two broken encoders the app exists to expose:
- ``convert_encoder_like_the_buggy_script``: the real failure. The script filtered the checkpoint's keys by a
  prefix they did not have and loaded with strict=False, so nothing loaded and the converted model kept its random
  initial weights;
- ``ScaledEncoder``: a pure scale error (outputs exactly 1/200 of the correct ones), for tuning by eye.
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch import nn

from backends.torch_models import AudioEncoderAVE, UNetGenerator, load_encoder_state
from pipeline.audio import load_audio
from pipeline.features import pad_features
from pipeline.mel import melspectrogram
from pipeline.windows import mel_windows
from tools.demo import face
from tools.demo.dataset import crop_geometry, demo_utterance, clip_arrays, PATCH_ROWS
from tools.demo.speech import SAMPLE_RATE

SCALE_ERROR = 200.0
UNTRAINED_SEED = 1234  # the seed of the buggy script's fresh model: its "random initial weights" are reproducible
ENCODER_INPUT = "mel_spectrogram"  # the names seen in the field's Core ML files (PIPELINE.md)
GENERATOR_IMAGE_INPUT = "visual_input"
GENERATOR_AUDIO_INPUT = "audio_input"


@dataclass
class BundleLayout:
    """Every file of the bundle, relative to its folder (resources/demo/ in the repo)."""

    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    avatar = property(lambda self: self.root / "avatar")
    audio = property(lambda self: self.root / "aud.wav")
    target = property(lambda self: self.root / "demo_mouth_target.npy")
    phonemes = property(lambda self: self.root / "demo_phonemes.json")
    features = property(lambda self: self.root / "aud_ave.npy")
    models = property(lambda self: self.root / "models")
    encoder_pth = property(lambda self: self.models / "audio_visual_encoder.pth")
    generator_pth = property(lambda self: self.models / "generator.pth")
    encoder_onnx = property(lambda self: self.models / "audio_encoder.onnx")
    generator_onnx = property(lambda self: self.models / "generator.onnx")
    encoder_coreml = property(lambda self: self.models / "AudioEncoder.mlpackage")
    encoder_coreml_untrained = property(lambda self: self.models / "AudioEncoder_untrained.mlpackage")
    encoder_coreml_scaled = property(lambda self: self.models / "AudioEncoder_scale200.mlpackage")
    generator_coreml = property(lambda self: self.models / "Generator.mlpackage")
    manifest = property(lambda self: self.root / "manifest.json")


class ScaledEncoder(nn.Module):
    """The correct encoder followed by a multiplication by 1/200: a pure scale error, same zero pattern."""

    def __init__(self, encoder: AudioEncoderAVE, factor: float = 1.0 / SCALE_ERROR) -> None:
        super().__init__()
        self.encoder = encoder
        self.factor = factor

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.encoder(mel) * self.factor


def load_trained(trained_dir: Path, width: float) -> tuple[AudioEncoderAVE, UNetGenerator]:
    encoder = load_encoder_state(AudioEncoderAVE(), torch.load(trained_dir / "encoder.pth", map_location="cpu"))
    generator = UNetGenerator(size=160, width=width)
    generator.load_state_dict(torch.load(trained_dir / "generator.pth", map_location="cpu"), strict=True)
    return encoder.eval(), generator.eval()


def write_avatar_and_clip(layout: BundleLayout, num_templates: int) -> dict:
    """The avatar dataset folder and the demo clip (16 kHz PCM16 wav), its phonemes and its mouth target."""
    if layout.avatar.exists():
        shutil.rmtree(layout.avatar)
    face.write_dataset(layout.avatar, num_templates)
    utterance = demo_utterance()
    sf.write(layout.audio, utterance.samples, SAMPLE_RATE, subtype="PCM_16")
    # The target is computed from the audio as shipped (PCM16), so the frame count matches what a lane computes.
    samples = load_audio(layout.audio).samples
    _, track = clip_arrays(type(utterance)(samples, utterance.phonemes))
    np.save(layout.target, track.astype(np.float32))
    layout.phonemes.write_text(json.dumps([[p.name, round(p.start_s, 4), round(p.end_s, 4)]
                                           for p in utterance.phonemes]))
    return {"audio_seconds": round(len(samples) / SAMPLE_RATE, 3), "output_frames": int(len(track))}


def save_state_dicts(layout: BundleLayout, encoder: AudioEncoderAVE, generator: UNetGenerator) -> None:
    """Plain state dicts; the encoder's keys carry no prefix, as audio_visual_encoder.pth does."""
    torch.save({k: v.clone() for k, v in encoder.state_dict().items()}, layout.encoder_pth)
    torch.save({k: v.clone() for k, v in generator.state_dict().items()}, layout.generator_pth)


def export_onnx(layout: BundleLayout, encoder: AudioEncoderAVE, generator: UNetGenerator) -> None:
    """Encoder with a dynamic batch (port B's convention), generator at batch 1; weights inside the file."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            encoder, (torch.zeros(1, 1, 80, 16),), str(layout.encoder_onnx), input_names=["mel_input"],
            output_names=["features"], dynamic_axes={"mel_input": {0: "batch"}, "features": {0: "batch"}},
            opset_version=17, external_data=False, dynamo=False,
        )
    export_generator_onnx(layout, generator)


def export_generator_onnx(layout: BundleLayout, generator: UNetGenerator) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            generator, (torch.zeros(1, 6, 160, 160), torch.zeros(1, 32, 16, 16)), str(layout.generator_onnx),
            input_names=["input", "audio"], output_names=["output"], opset_version=17, external_data=False,
            dynamo=False,
        )


def _convert(model: nn.Module, example: tuple[torch.Tensor, ...], names: list[str], precision: str,
             path: Path, description: str) -> None:
    import coremltools as ct

    # check_trace=False: the check re-traces and re-runs the model only to compare two traces of these
    # deterministic eval-mode models; it changes nothing in the file and took a third of each conversion.
    traced = torch.jit.trace(model.eval(), example, check_trace=False)
    mlmodel = ct.convert(
        traced,
        inputs=[ct.TensorType(name=n, shape=tuple(t.shape), dtype=np.float32) for n, t in zip(names, example)],
        convert_to="mlprogram",
        compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
        minimum_deployment_target=ct.target.macOS13,
    )
    mlmodel.short_description = description
    mlmodel.user_defined_metadata["lipsync_compare.precision"] = precision
    if path.exists():
        shutil.rmtree(path)
    mlmodel.save(str(path))


def untrained_encoder() -> AudioEncoderAVE:
    """A fresh AVE encoder with the seeded random initial weights the buggy conversion ends up with."""
    torch.manual_seed(UNTRAINED_SEED)
    return AudioEncoderAVE().eval()


def convert_encoder_like_the_buggy_script(checkpoint: dict[str, torch.Tensor], path: Path) -> list[str]:
    """Reproduces the real conversion bug; returns the keys that failed to load (all of them).

    The script kept only keys starting with "audio_encoder." (the reference code's prefix), stripped it, and loaded
    with strict=False. audio_visual_encoder.pth has no prefix, so nothing matched and nothing was said.
    """
    model = untrained_encoder()
    prefix = "audio_encoder."
    filtered = {k[len(prefix):]: v for k, v in checkpoint.items() if k.startswith(prefix)}
    result = model.load_state_dict(filtered, strict=False)  # the bug: strict=False hides the empty load
    _convert(model, (torch.zeros(1, 1, 80, 16),), [ENCODER_INPUT], "fp32", path,
             "AVE audio encoder, converted WITHOUT its trained weights (the known conversion bug)")
    return list(result.missing_keys)


def export_coreml(layout: BundleLayout, encoder: AudioEncoderAVE, generator: UNetGenerator) -> dict:
    mel = (torch.zeros(1, 1, 80, 16),)
    _convert(encoder, mel, [ENCODER_INPUT], "fp32", layout.encoder_coreml, "AVE audio encoder (correct, fp32)")
    missing = convert_encoder_like_the_buggy_script(torch.load(layout.encoder_pth, map_location="cpu"),
                                                    layout.encoder_coreml_untrained)
    _convert(ScaledEncoder(encoder), mel, [ENCODER_INPUT], "fp32", layout.encoder_coreml_scaled,
             "AVE audio encoder with outputs exactly 1/200 of the correct ones (scale error)")
    export_generator_coreml(layout, generator)
    return {"untrained_missing_keys": len(missing)}


def export_generator_coreml(layout: BundleLayout, generator: UNetGenerator) -> None:
    _convert(generator, (torch.zeros(1, 6, 160, 160), torch.zeros(1, 32, 16, 16)),
             [GENERATOR_IMAGE_INPUT, GENERATOR_AUDIO_INPUT], "fp16", layout.generator_coreml,
             "SyncTalk_2D 160 px generator, stored and run in fp16")


def reference_features(layout: BundleLayout, encoder: AudioEncoderAVE) -> np.ndarray:
    """aud_ave.npy by the reference path: load -> mel -> windows -> encoder (torch, eval) -> pad: [N+2, 512]."""
    windows = mel_windows(melspectrogram(load_audio(layout.audio).samples))
    with torch.no_grad():
        features = encoder(torch.from_numpy(windows)).numpy()
    padded = pad_features(features).astype(np.float32)
    np.save(layout.features, padded)
    return padded


def bundle_size_mb(root: Path) -> float:
    return sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file()) / 1e6


def export_bundle(trained_dir: Path, out_dir: Path, width: float, num_templates: int, train_log: dict | None) -> dict:
    """Everything under out_dir, plus manifest.json describing what each file is and how it was made."""
    layout = BundleLayout(out_dir)
    layout.models.mkdir(parents=True, exist_ok=True)
    encoder, generator = load_trained(trained_dir, width)
    summary: dict = {"clip": write_avatar_and_clip(layout, num_templates)}
    save_state_dicts(layout, encoder, generator)
    export_onnx(layout, encoder, generator)
    summary.update(export_coreml(layout, encoder, generator))
    features = reference_features(layout, encoder)
    cx, cy, _ = crop_geometry(0)
    summary.update({
        "features_shape": list(features.shape),
        "features_range": [float(features.min()), float(features.max())],
        "generator_width": width,
        "generator_size": 160,
        "scale_error": SCALE_ERROR,
        "untrained_seed": UNTRAINED_SEED,
        "mouth_centre_x": cx,
        "mouth_rows": [PATCH_ROWS.start, PATCH_ROWS.stop],
        "training": {k: v for k, v in (train_log or {}).items() if k not in ("log",)},
    })
    summary["bundle_mb"] = round(bundle_size_mb(out_dir), 2)
    layout.manifest.write_text(json.dumps(summary, indent=1))
    return summary


def export_generator(trained_dir: Path, out_dir: Path, width: float, train_log: dict | None) -> dict:
    """After a fine-tune with the encoder frozen: rewrite only the generator's files (.pth, ONNX, Core ML fp16),
    aud_ave.npy by the pipeline as it is now (unchanged bytes when the mel front end is unchanged) and the manifest.

    The encoder files, the avatar and the clip are left alone; the fine-tune's figures go into the manifest's training
    record under "finetune", beside those of the joint training the bundle started from.
    """
    layout = BundleLayout(out_dir)
    encoder, generator = load_trained(trained_dir, width)
    shipped = torch.load(layout.encoder_pth, map_location="cpu")
    state = encoder.state_dict()
    if set(shipped) != set(state) or any(not torch.equal(shipped[k], state[k]) for k in state):
        raise RuntimeError(f"{trained_dir / 'encoder.pth'} differs from {layout.encoder_pth}: the encoder was not "
                           "frozen, so run the full export stage")
    torch.save({k: v.clone() for k, v in generator.state_dict().items()}, layout.generator_pth)
    export_generator_onnx(layout, generator)
    export_generator_coreml(layout, generator)
    features = reference_features(layout, encoder)
    manifest = json.loads(layout.manifest.read_text())
    record = {k: v for k, v in (train_log or {}).items() if k not in ("log", "features_initial", "finetune")}
    record.update((train_log or {}).get("finetune", {}))
    manifest.setdefault("training", {})["finetune"] = record
    manifest["features_range"] = [float(features.min()), float(features.max())]
    manifest["bundle_mb"] = round(bundle_size_mb(out_dir), 2)
    layout.manifest.write_text(json.dumps(manifest, indent=1))
    return {"finetune": {k: v for k, v in record.items() if k not in ("val", "train_subset", "val_before")},
            "bundle_mb": manifest["bundle_mb"]}
