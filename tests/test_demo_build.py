"""The demo build: speech timings, viseme targets, the drawn avatar, the mouth measure, and the smoke build.

Expected values are worked out by hand here (interpolation between phoneme centres, the drawn interior's height)
or come from a second implementation (numpy's corrcoef), never from the output of the code under test.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tools.demo import face
from tools.demo.measure import mouth_opening, pearson
from tools.demo.speech import Phoneme, Utterance, concatenate, silence
from tools.demo.visemes import CLOSED, CONSONANT, OPEN, ROUND, SPREAD, mouth_track, viseme

# ------------------------------------------------------------------------------------------------------ visemes


@pytest.mark.parametrize(
    ("name", "shape"),
    [("aI", OPEN), ("a", OPEN), ("p", CLOSED), ("m", CLOSED), ("_:", CLOSED), ("u:", ROUND), ("oU", ROUND),
     ("i:", SPREAD), ("eI", SPREAD), ("k", CONSONANT), ("s", CONSONANT)],
)
def test_viseme_classes(name: str, shape: tuple[float, float]) -> None:
    assert viseme(name) == shape


def test_mouth_track_interpolates_between_phoneme_centres() -> None:
    # "p" spans 0.00-0.10 s (centre 0.05, closed 0.0); "a" spans 0.10-0.30 s (centre 0.20, opening 0.95).
    phonemes = [Phoneme("p", 0.0, 0.1), Phoneme("a", 0.1, 0.3)]
    track = mouth_track(phonemes, 0.4)
    assert track.shape == (11, 2)  # frames at 0, 0.04, .., 0.40 s
    # t = 0.12 s lies 0.07 of the 0.15 s from the "p" centre to the "a" centre.
    assert track[3, 0] == pytest.approx(0.95 * 0.07 / 0.15, abs=1e-6)
    assert track[5, 0] == pytest.approx(0.95, abs=1e-6)  # t = 0.20: the "a" centre itself
    # After the last centre the mouth closes towards the clip's end (0.40 s): t = 0.28 is 0.08 of 0.20 s on.
    assert track[7, 0] == pytest.approx(0.95 * (1 - 0.08 / 0.2), abs=1e-6)
    assert track[0, 0] == pytest.approx(0.0)


def test_mouth_track_can_cover_the_lanes_extra_frames() -> None:
    assert mouth_track([Phoneme("a", 0.0, 0.2)], 0.2, frames=9).shape == (9, 2)


# ------------------------------------------------------------------------------------------------------- speech


def test_concatenate_shifts_phoneme_times_by_the_audio_before() -> None:
    a = Utterance(np.zeros(8000, np.float32), [Phoneme("a", 0.1, 0.3)])
    joined = concatenate([silence(0.25), a])
    assert joined.duration_s == pytest.approx(0.75)
    assert joined.phonemes[1].start_s == pytest.approx(0.35) and joined.phonemes[1].end_s == pytest.approx(0.55)


def test_espeak_gives_16_khz_speech_with_ordered_phoneme_times() -> None:
    from tools.demo.speech import synthesize

    try:
        utterance = synthesize("Hello mama, how are you?", "en-us", 160)
    except OSError as error:  # libespeak-ng missing
        pytest.skip(f"libespeak-ng not available: {error}")
    assert utterance.samples.dtype == np.float32 and np.abs(utterance.samples).max() <= 1.0
    assert 0.8 < utterance.duration_s < 4.0
    names = [p.name for p in utterance.phonemes]
    assert "m" in names and any(n.startswith(("a", "A")) for n in names)
    starts = [p.start_s for p in utterance.phonemes]
    assert starts == sorted(starts) and starts[-1] <= utterance.duration_s
    # The speech is where the phonemes say: little energy before the first non-pause phoneme starts.
    first = next(p for p in utterance.phonemes if not p.name.startswith("_"))
    lead = utterance.samples[: int(first.start_s * 16000)]
    assert (np.sqrt(np.mean(lead**2)) if lead.size else 0.0) < 0.5 * np.sqrt(np.mean(utterance.samples**2))


# -------------------------------------------------------------------------------------------------------- avatar


def test_landmarks_follow_the_head_by_whole_pixels() -> None:
    base = face.landmarks(0)
    for i in (7, 19, 33):
        dx, dy = np.array(face.head_offset(i)) - np.array(face.head_offset(0))
        np.testing.assert_array_equal(face.landmarks(i) - base, np.broadcast_to([dx, dy], base.shape))
    offsets = {face.head_offset(i) for i in range(100)}
    assert len(offsets) > 3 and all(abs(x) <= 3 and abs(y) <= 2 for x, y in offsets)


def test_eyes_blink_now_and_then() -> None:
    openness = [face.eye_openness(i) for i in range(100)]
    assert min(openness) == 0.0 and openness.count(1.0) > 80


def test_mouth_sits_inside_the_crop_and_under_the_generators_mask() -> None:
    """Crop rule by hand (points 1, 31, 52) and the 160 model's mask (x 5..154, y 5..149 inclusive)."""
    points = face.landmarks(0)
    x1, x2, y1 = points[1, 0], points[31, 0], points[52, 1]
    mouth_x = face.FACE_CENTRE[0] + face.head_offset(0)[0] + face.MOUTH_OFFSET[0]
    mouth_y = face.FACE_CENTRE[1] + face.head_offset(0)[1] + face.MOUTH_OFFSET[1]
    scale = 168 / (x2 - x1)
    u, v = (mouth_x - x1) * scale - 4, (mouth_y - y1) * scale - 4
    half_w, height = face.mouth_size(1.0, 1.0, scale)
    assert 5 < u - half_w and u + half_w < 155 and 5 < v - height and v + height < 150


def _reference_mask_160() -> np.ndarray:
    """The reference's own call on a white 160 x 160 image: True where it paints black."""
    import cv2

    img = np.full((160, 160, 3), 255, np.uint8)
    cv2.rectangle(img, (5, 5, 150, 145), (0, 0, 0), -1)
    return (img == 0).all(axis=2)


def test_training_mask_is_the_reference_rectangle_150_by_145() -> None:
    """The generator is trained on the mask a lane applies: cv2.rectangle(img, (5, 5, 150, 145), ...), not one px more."""
    from tools.demo.dataset import mask_region

    mask = mask_region()
    assert mask.shape == (160, 160) and mask.dtype == bool
    np.testing.assert_array_equal(mask, _reference_mask_160())
    assert int(mask.sum()) == 150 * 145


@pytest.mark.parametrize("opening", [0.2, 0.5, 0.8, 1.0])
def test_mouth_measure_reads_the_drawn_interior_height(opening: float) -> None:
    skin = np.full((160, 160, 3), face.SKIN, np.uint8)
    drawn = face.composite(skin, face.mouth_layer((160, 160), (80.0, 76.0), opening, 0.5))
    interior = 2.0 + 30.0 * opening  # the drawing's definition: 2 px + 30 px per unit of opening
    assert mouth_opening(drawn[None], 80.0, (36, 116))[0] == pytest.approx(interior, abs=2.0)


def test_closed_mouth_measures_near_zero() -> None:
    skin = np.full((160, 160, 3), face.SKIN, np.uint8)
    drawn = face.composite(skin, face.mouth_layer((160, 160), (80.0, 76.0), 0.0, 0.5))
    assert mouth_opening(drawn[None], 80.0, (36, 116))[0] <= 2.0


def test_pearson_matches_numpy_and_is_zero_for_a_constant() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=50), rng.normal(size=50)
    assert pearson(a, b + a) == pytest.approx(np.corrcoef(a, b + a)[0, 1])
    assert pearson(np.ones(5), np.arange(5)) == 0.0


# ---------------------------------------------------------------------------------------------------- smoke build


@pytest.mark.slow
def test_smoke_build_makes_every_file_of_the_bundle(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("coremltools")
    ort = pytest.importorskip("onnxruntime")
    from tools.build_demo import main

    bundle = tmp_path / "bundle"
    assert main(["--smoke", "--work", str(tmp_path / "work"), "--out", str(bundle)]) == 0
    manifest = json.loads((bundle / "manifest.json").read_text())
    models = bundle / "models"
    for name in ("audio_visual_encoder.pth", "generator.pth", "audio_encoder.onnx", "generator.onnx"):
        assert (models / name).is_file(), name
    for name in ("AudioEncoder", "AudioEncoder_untrained", "AudioEncoder_scale200", "Generator"):
        assert (models / f"{name}.mlpackage" / "Manifest.json").is_file(), name
    assert manifest["untrained_missing_keys"] == 78  # 13 blocks x (conv w, b, bn w, b, mean, var): nothing loaded
    assert manifest["training"]["steps"] == 2
    windows = np.zeros((3, 1, 80, 16), np.float32)
    session = ort.InferenceSession(str(models / "audio_encoder.onnx"), providers=["CPUExecutionProvider"])
    assert session.run(None, {session.get_inputs()[0].name: windows})[0].shape == (3, 512)
    generator = ort.InferenceSession(str(models / "generator.onnx"), providers=["CPUExecutionProvider"])
    feeds = dict(zip([i.name for i in generator.get_inputs()],
                     (np.zeros((1, 6, 160, 160), np.float32), np.zeros((1, 32, 16, 16), np.float32))))
    assert generator.run(None, feeds)[0].shape == (1, 3, 160, 160)
    _assert_state_dicts_load_strictly(models, manifest["generator_width"])
    _assert_core_ml_interfaces(models)
    features = np.load(bundle / "aud_ave.npy")
    assert features.shape == (manifest["clip"]["output_frames"], 512)
    assert len(list((bundle / "avatar" / "landmarks").glob("*.lms"))) == len(
        list((bundle / "avatar" / "full_body_img").glob("*.jpg"))
    )
    with np.load(tmp_path / "work" / "train.npz") as data:  # what the training script masks with
        np.testing.assert_array_equal(data["mask"], _reference_mask_160())
    _assert_finetune_rewrites_only_the_generator(tmp_path / "work", bundle)


def _assert_finetune_rewrites_only_the_generator(work: Path, bundle: Path) -> None:
    """The fine-tune stage starts from the bundle's weights with the encoder frozen; export-generator rewrites the
    generator's three files and leaves every encoder file byte for byte as it was."""
    import torch

    from tools.build_demo import main

    models = bundle / "models"
    encoder_files = [models / "audio_visual_encoder.pth", models / "audio_encoder.onnx"] + sorted(
        p for name in ("AudioEncoder", "AudioEncoder_untrained", "AudioEncoder_scale200")
        for p in (models / f"{name}.mlpackage").rglob("*") if p.is_file()
    )
    before = {p: p.read_bytes() for p in encoder_files}
    generator_before = torch.load(models / "generator.pth")
    assert main(["--smoke", "--stage", "finetune", "--work", str(work), "--out", str(bundle)]) == 0
    log = json.loads((work / "finetuned" / "train_log.json").read_text())
    assert log["steps"] == 2 and log["finetune"]["encoder_frozen"] and "r_all" in log["finetune"]["val_before"]
    encoder_after = torch.load(work / "finetuned" / "encoder.pth")
    encoder_shipped = torch.load(models / "audio_visual_encoder.pth")
    assert all(torch.equal(encoder_after[k], encoder_shipped[k]) for k in encoder_shipped)  # BatchNorm stats too
    assert main(["--smoke", "--stage", "export-generator", "--work", str(work), "--out", str(bundle)]) == 0
    assert {p: p.read_bytes() for p in encoder_files} == before
    generator_after = torch.load(models / "generator.pth")
    assert any(not torch.equal(generator_after[k], generator_before[k]) for k in generator_before)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["training"]["steps"] == 2 and manifest["training"]["finetune"]["steps"] == 2
    assert manifest["training"]["finetune"]["encoder_frozen"] is True
    _assert_core_ml_interfaces(models)


def _assert_state_dicts_load_strictly(models: Path, width: float) -> None:
    import torch

    from backends.torch_models import AudioEncoderAVE, UNetGenerator

    AudioEncoderAVE().load_state_dict(torch.load(models / "audio_visual_encoder.pth"), strict=True)
    UNetGenerator(size=160, width=width).load_state_dict(torch.load(models / "generator.pth"), strict=True)


def _assert_core_ml_interfaces(models: Path) -> None:
    """Each .mlpackage read back by coremltools: an ML Program with the input names and shapes users' files have."""
    import coremltools as ct

    expected = {
        "AudioEncoder": ({"mel_spectrogram": [1, 1, 80, 16]}, [1, 512], "fp32"),
        "AudioEncoder_untrained": ({"mel_spectrogram": [1, 1, 80, 16]}, [1, 512], "fp32"),
        "AudioEncoder_scale200": ({"mel_spectrogram": [1, 1, 80, 16]}, [1, 512], "fp32"),
        "Generator": ({"visual_input": [1, 6, 160, 160], "audio_input": [1, 32, 16, 16]}, [1, 3, 160, 160], "fp16"),
    }
    for name, (inputs, output, precision) in expected.items():
        model = ct.models.MLModel(str(models / f"{name}.mlpackage"), skip_model_load=True)
        spec = model.get_spec()
        assert spec.WhichOneof("Type") == "mlProgram", name
        found = {i.name: list(i.type.multiArrayType.shape) for i in spec.description.input}
        assert found == inputs, name
        assert [list(o.type.multiArrayType.shape) for o in spec.description.output] == [output], name
        assert model.user_defined_metadata["lipsync_compare.precision"] == precision, name
