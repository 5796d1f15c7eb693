"""A small real session for the window's tests: espeak speech, a synthetic avatar, tiny ONNX models.

Two lanes share one encoder's weights: "reference" at the encoder's own scale and "tiny features" built with its
output multiplied by 0.01 inside the graph (the shape of the Core ML bug, without the random weights). So the
least-squares fit must find exactly 100x, and the test knows that number without asking the window.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests.builders.avatar import make_dataset
from tests.builders.onnx_models import EncoderReference, make_encoder, make_generator, make_wrong_shape_model
from tests.builders.speech import speak

TINY_FEATURE_SCALE = 0.01  # the "tiny features" lane's encoder multiplies by this: fitting must give 1 / 0.01


@dataclass(frozen=True)
class UiSession:
    path: Path  # the session .toml
    folder: Path
    reference_encoder: EncoderReference  # numpy reference of the reference lane's encoder
    encoder: Path
    tiny_encoder: Path
    generator: Path
    broken_model: Path  # an ONNX model with the wrong input shapes for either role


def make_ui_session(folder: Path, text: str = "Hello there. Open wide and say ah.") -> UiSession:
    """Write everything into ``folder`` and return the paths; about 2-3 seconds of speech."""
    folder.mkdir(parents=True, exist_ok=True)
    speak(text, folder / "speech.wav", rate=16000)
    make_dataset(folder / "avatar", frames=6, size=(320, 240), image_format="png")
    reference = make_encoder(folder / "encoder.onnx", in_name="mel_in", out_name="feat", seed=3)
    make_encoder(folder / "tiny_encoder.onnx", in_name="mel_spectrogram", out_name="var_242", seed=3,
                 scale=TINY_FEATURE_SCALE)
    make_generator(folder / "generator.onnx", size=160, seed=4)
    make_wrong_shape_model(folder / "broken.onnx")
    session = folder / "session.toml"
    session.write_text(
        'title = "window test"\n'
        'audio = "speech.wav"\n'
        'avatar = "avatar"\n'
        'reference = "reference"\n\n'
        '[[lanes]]\nname = "reference"\nencoder = "encoder.onnx"\ngenerator = "generator.onnx"\n\n'
        '[[lanes]]\nname = "tiny features"\nencoder = "tiny_encoder.onnx"\ngenerator = "generator.onnx"\n',
        encoding="utf-8",
    )
    return UiSession(session, folder, reference, folder / "encoder.onnx", folder / "tiny_encoder.onnx",
                     folder / "generator.onnx", folder / "broken.onnx")
