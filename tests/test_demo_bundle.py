"""The shipped demo bundle (resources/demo/) is what issue 3 promises: sizes, shapes, formats, agreement, failures.

References are independent of the code that built the bundle: PIPELINE.md's formulas written out here, the
BatchNorm folding written out by hand, onnxruntime / coremltools / torch each read the files directly.
"""

from __future__ import annotations

import json
import shutil
import tomllib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
sf = pytest.importorskip("soundfile")

from backends.torch_models import AudioEncoderAVE, UNetGenerator  # noqa: E402

BUNDLE = Path(__file__).resolve().parents[1] / "resources" / "demo"
MODELS = BUNDLE / "models"
MANIFEST = json.loads((BUNDLE / "manifest.json").read_text()) if (BUNDLE / "manifest.json").exists() else {}
pytestmark = pytest.mark.skipif(not MANIFEST, reason="demo bundle not built (python tools/build_demo.py)")


def _bundle_bytes() -> int:
    return sum(p.stat().st_size for p in BUNDLE.rglob("*") if p.is_file())


def _expected_windows(num_samples: int) -> int:
    """PIPELINE.md stages 1-2: T = 1 + len // 200; N = int((T - 16) / 80 * 25) + 2."""
    t = 1 + num_samples // 200
    return int((t - 16) / 80 * 25) + 2


def _windows_by_hand(samples: np.ndarray) -> np.ndarray:
    from pipeline.mel import melspectrogram

    mel = melspectrogram(samples)
    t = mel.shape[0]
    n = _expected_windows(len(samples))
    starts = [min(int(80 * i / 25), t - 16) for i in range(n)]
    return np.stack([mel[s : s + 16].T[None] for s in starts]).astype(np.float32)


def _torch_encoder() -> AudioEncoderAVE:
    encoder = AudioEncoderAVE()
    encoder.load_state_dict(torch.load(MODELS / "audio_visual_encoder.pth", map_location="cpu"), strict=True)
    return encoder.eval()


def _torch_generator() -> UNetGenerator:
    generator = UNetGenerator(size=160, width=MANIFEST["generator_width"])
    generator.load_state_dict(torch.load(MODELS / "generator.pth", map_location="cpu"), strict=True)
    return generator.eval()


@pytest.fixture(scope="module")
def demo_samples() -> np.ndarray:
    from pipeline.audio import load_audio

    return load_audio(BUNDLE / "aud.wav").samples


@pytest.fixture(scope="module")
def torch_features(demo_samples: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return _torch_encoder()(torch.from_numpy(_windows_by_hand(demo_samples))).numpy()


# ------------------------------------------------------------------------------------------------ files and sizes


def test_bundle_is_at_most_100_mb() -> None:
    assert _bundle_bytes() <= 100e6


def test_every_promised_file_is_there() -> None:
    for name in ("audio_visual_encoder.pth", "generator.pth", "audio_encoder.onnx", "generator.onnx",
                 "AudioEncoder.mlpackage", "AudioEncoder_untrained.mlpackage", "AudioEncoder_scale200.mlpackage",
                 "Generator.mlpackage"):
        assert (MODELS / name).exists(), name
    for name in ("aud.wav", "aud_ave.npy", "demo.toml", "variants.toml", "avatar/full_body_img/0.jpg"):
        assert (BUNDLE / name).exists(), name


def test_demo_clip_is_8_to_15_seconds_of_16_khz_speech() -> None:
    info = sf.info(str(BUNDLE / "aud.wav"))
    assert info.samplerate == 16000 and info.channels == 1
    assert 8.0 <= info.duration <= 15.0


def test_aud_ave_npy_is_the_padded_reference_features(demo_samples: np.ndarray, torch_features: np.ndarray) -> None:
    dump = np.load(BUNDLE / "aud_ave.npy")
    n = _expected_windows(len(demo_samples))
    assert dump.dtype == np.float32 and dump.shape == (n + 2, 512)
    np.testing.assert_array_equal(dump[0], dump[1])
    np.testing.assert_array_equal(dump[-1], dump[-2])
    np.testing.assert_allclose(dump[1:-1], torch_features, atol=1e-5)
    assert dump.min() >= 0.0 and 1.0 < dump.max() < 20.0  # trained AVE features: speech gives roughly 0 to 10


def test_avatar_is_a_synctalk_dataset_folder_whose_crop_follows_landmarks_1_31_52() -> None:
    import cv2

    images = sorted((BUNDLE / "avatar" / "full_body_img").glob("*.jpg"), key=lambda p: int(p.stem))
    assert [p.stem for p in images] == [str(i) for i in range(len(images))]
    assert 75 <= len(images) <= 125  # 3-5 s of template frames at 25 fps
    for index in (0, len(images) // 2):
        lines = (BUNDLE / "avatar" / "landmarks" / f"{index}.lms").read_text().split("\n")
        points = np.array([[int(v) for v in line.split()] for line in lines if line.strip()])
        assert points.shape == (110, 2)
        x1, x2, y1 = points[1, 0], points[31, 0], points[52, 1]
        frame = cv2.imread(str(images[index]))
        assert 0 <= x1 < x2 <= frame.shape[1] and 0 <= y1 < y1 + (x2 - x1) <= frame.shape[0]
        lips = points[90:110]
        assert (lips[:, 0] > x1).all() and (lips[:, 0] < x2).all() and (lips[:, 1] > y1).all()


def test_head_moves_between_template_frames() -> None:
    """Idle motion: the shipped landmarks shift by a few pixels over the clip (blinks: test_demo_build.py)."""
    first = np.loadtxt(BUNDLE / "avatar" / "landmarks" / "0.lms")
    moved = [np.abs(np.loadtxt(BUNDLE / "avatar" / "landmarks" / f"{i}.lms") - first).max() for i in range(0, 100, 5)]
    assert max(moved) >= 2


# ------------------------------------------------------------------------------------------------- session files


def test_demo_session_opens_with_the_reference_beside_the_failing_core_ml_lane() -> None:
    data = tomllib.loads((BUNDLE / "demo.toml").read_text())
    first, second = data["lanes"][:2]
    assert first["encoder"].endswith(".onnx") and first["generator"].endswith(".onnx")
    assert second["encoder"] == "models/AudioEncoder_untrained.mlpackage"
    for lane in data["lanes"]:
        for key in ("encoder", "generator"):
            assert (BUNDLE / lane[key]).exists()


def test_variants_cover_the_scale_error_and_the_pytorch_lane() -> None:
    lanes = tomllib.loads((BUNDLE / "variants.toml").read_text())["lanes"]
    encoders = {(lane["encoder"], lane.get("scale", 1.0)) for lane in lanes}
    assert ("models/AudioEncoder_scale200.mlpackage", 200.0) in encoders
    assert ("models/audio_visual_encoder.pth", 1.0) in encoders


# ---------------------------------------------------------------------------------------------- PyTorch and ONNX


def test_encoder_pth_is_a_plain_state_dict_without_prefix() -> None:
    state = torch.load(MODELS / "audio_visual_encoder.pth", map_location="cpu")
    assert list(state)[0] == "0.conv_block.0.weight" and list(state)[-1] == "12.conv_block.1.num_batches_tracked"


def test_onnx_encoder_has_a_dynamic_batch_and_matches_torch_to_1e_4(
    demo_samples: np.ndarray, torch_features: np.ndarray
) -> None:
    session = ort.InferenceSession(str(MODELS / "audio_encoder.onnx"), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert not isinstance(inp.shape[0], int) and inp.shape[1:] == [1, 80, 16]
    features = session.run(None, {inp.name: _windows_by_hand(demo_samples)})[0]
    assert np.abs(features - torch_features).max() <= 1e-4


def test_onnx_generator_matches_torch_to_1e_4_on_demo_frames(torch_features: np.ndarray) -> None:
    from pipeline.avatar import Avatar
    from pipeline.crop import ping_pong_index, prepare_input
    from pipeline.features import audio_tensors, pad_features

    avatar = Avatar.open(BUNDLE / "avatar")
    padded = pad_features(torch_features)
    session = ort.InferenceSession(str(MODELS / "generator.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    generator = _torch_generator()
    for i in (0, 40, 120, len(padded) - 1):
        k = ping_pong_index(i, avatar.num_templates)
        image = prepare_input(avatar.frame(k), avatar.crop_box(k), 160).tensor[None]
        audio = audio_tensors(padded, [i])
        onnx_out = session.run(None, dict(zip(names, (image, audio))))[0]
        with torch.no_grad():
            torch_out = generator(torch.from_numpy(image), torch.from_numpy(audio)).numpy()
        assert np.abs(onnx_out - torch_out).max() <= 1e-4


# ------------------------------------------------------------------------------------------- Core ML read-back


@contextmanager
def _coreml_reader(folder: Path):
    """coremltools' own reader, on copies in folder: its ModelPackage rewrites Manifest.json, and the bundle must stay
    as built. Each package is copied once; the folder is removed on leaving."""
    ct = pytest.importorskip("coremltools")
    folder.mkdir(parents=True, exist_ok=True)
    copies: dict[Path, Path] = {}

    def read(path: Path):
        if path not in copies:
            copies[path] = folder / path.name
            shutil.copytree(path, copies[path])
        return ct.models.MLModel(str(copies[path]), skip_model_load=True)

    try:
        yield read
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def coreml(tmp_path_factory: pytest.TempPathFactory):
    with _coreml_reader(tmp_path_factory.mktemp("coreml_readback")) as read:
        yield read


def test_core_ml_read_back_copies_are_removed_afterwards(tmp_path: Path) -> None:
    """The copies live in the reader's folder only (an 11 MB copy was left in the temp directory per test before)."""
    folder = tmp_path / "readback"
    with _coreml_reader(folder) as read:
        assert read(MODELS / "Generator.mlpackage").get_spec().WhichOneof("Type") == "mlProgram"
        assert (folder / "Generator.mlpackage" / "Manifest.json").is_file()
    assert not folder.exists()


def _float_weights(read, path: Path) -> list[np.ndarray]:
    from coremltools.optimize.coreml import get_weights_metadata

    metadata = get_weights_metadata(read(path), weight_threshold=0)
    return [m.val for m in metadata.values() if np.issubdtype(m.val.dtype, np.floating)]


def _folded_conv_weights(state: dict) -> list[np.ndarray]:
    """Conv weight x gamma / sqrt(running_var + eps), per block: what a converter folding BatchNorm must store."""
    folded = []
    for block in range(13):
        w = state[f"{block}.conv_block.0.weight"].double().numpy()
        gamma = state[f"{block}.conv_block.1.weight"].double().numpy()
        var = state[f"{block}.conv_block.1.running_var"].double().numpy()
        folded.append(w * (gamma / np.sqrt(var + 1e-5))[:, None, None, None])
    return folded


def _conv_weights(read, path: Path) -> list[np.ndarray]:
    return [w.astype(np.float64) for w in _float_weights(read, path) if w.ndim == 4]


@pytest.mark.parametrize("name", ["AudioEncoder", "AudioEncoder_untrained", "AudioEncoder_scale200"])
def test_core_ml_encoders_are_fp32_ml_programs_with_one_mel_input_and_512_features(name: str, coreml) -> None:
    spec = coreml(MODELS / f"{name}.mlpackage").get_spec()
    assert spec.WhichOneof("Type") == "mlProgram"
    (inp,), (out,) = spec.description.input, spec.description.output
    assert inp.name == "mel_spectrogram" and list(inp.type.multiArrayType.shape) == [1, 1, 80, 16]
    assert list(out.type.multiArrayType.shape) == [1, 512]
    assert all(w.dtype == np.float32 for w in _float_weights(coreml, MODELS / f"{name}.mlpackage"))


def test_core_ml_generator_is_stored_in_fp16(coreml) -> None:
    spec = coreml(MODELS / "Generator.mlpackage").get_spec()
    assert spec.WhichOneof("Type") == "mlProgram"
    shapes = sorted(list(i.type.multiArrayType.shape) for i in spec.description.input)
    assert shapes == [[1, 6, 160, 160], [1, 32, 16, 16]]
    assert [list(o.type.multiArrayType.shape) for o in spec.description.output] == [[1, 3, 160, 160]]
    weights = _float_weights(coreml, MODELS / "Generator.mlpackage")
    assert weights and all(w.dtype == np.float16 for w in weights)
    outc = torch.load(MODELS / "generator.pth", map_location="cpu")["outc.conv.weight"].numpy()
    stored = [w for w in weights if w.shape == outc.shape]
    assert any(np.abs(w.astype(np.float32) - outc).max() <= 2e-3 * np.abs(outc).max() for w in stored)


def test_correct_and_scaled_core_ml_encoders_hold_the_trained_weights(coreml) -> None:
    expected = _folded_conv_weights(torch.load(MODELS / "audio_visual_encoder.pth", map_location="cpu"))
    for name in ("AudioEncoder", "AudioEncoder_scale200"):
        stored = _conv_weights(coreml, MODELS / f"{name}.mlpackage")
        assert len(stored) == 13
        for w, e in zip(stored, expected):
            np.testing.assert_allclose(w, e, rtol=1e-5, atol=1e-6)


def test_untrained_core_ml_encoder_holds_the_random_initial_weights_not_the_trained_ones(coreml) -> None:
    torch.manual_seed(MANIFEST["untrained_seed"])
    fresh = AudioEncoderAVE().state_dict()
    stored = _conv_weights(coreml, MODELS / "AudioEncoder_untrained.mlpackage")
    assert len(stored) == 13  # zip below must not pass on an empty read-back
    for w, e in zip(stored, _folded_conv_weights(fresh)):
        np.testing.assert_allclose(w, e, rtol=1e-5, atol=1e-6)
    trained = _folded_conv_weights(torch.load(MODELS / "audio_visual_encoder.pth", map_location="cpu"))
    assert all(np.abs(w - t).max() > 1e-3 for w, t in zip(stored, trained))


# ---------------------------------------------------------------------------- Core ML execution (emulated backend)


def _coreml_encoder(name: str):
    backend = pytest.importorskip("backends.coreml_backend")
    return backend.CoreMLEncoder(MODELS / f"{name}.mlpackage")


def test_core_ml_correct_encoder_runs_like_torch(demo_samples: np.ndarray, torch_features: np.ndarray) -> None:
    features = _coreml_encoder("AudioEncoder").encode(_windows_by_hand(demo_samples))
    assert np.abs(features - torch_features).max() <= 1e-4


def test_scale_error_encoder_times_200_matches_the_correct_lane(
    demo_samples: np.ndarray, torch_features: np.ndarray
) -> None:
    features = _coreml_encoder("AudioEncoder_scale200").encode(_windows_by_hand(demo_samples))
    assert np.abs(features * 200.0 - torch_features).max() <= 1e-3
    assert features.max() < torch_features.max() / 100  # the symptom: ~1/200 of the reference's range


def test_untrained_encoder_is_not_a_scaled_copy(demo_samples: np.ndarray, torch_features: np.ndarray) -> None:
    """The real bug: small values, and no single scale maps them onto the reference (zero patterns differ)."""
    features = _coreml_encoder("AudioEncoder_untrained").encode(_windows_by_hand(demo_samples)).astype(np.float64)
    reference = torch_features.astype(np.float64)
    assert features.max() < reference.max() / 10
    scale = (features * reference).sum() / (features * features).sum()
    residual = ((reference - scale * features) ** 2).sum() / ((reference - reference.mean()) ** 2).sum()
    assert residual > 0.5  # a scaled copy would leave ~0
    assert ((features > 0) != (reference > 0)).mean() > 0.1


def test_untrained_core_ml_encoder_runs_like_the_seeded_fresh_torch_encoder(demo_samples: np.ndarray) -> None:
    """Failure 1 computes exactly what the buggy script's model computed: the seeded random initialisation."""
    windows = _windows_by_hand(demo_samples)[::8]
    torch.manual_seed(MANIFEST["untrained_seed"])
    fresh = AudioEncoderAVE().eval()
    with torch.no_grad():
        expected = fresh(torch.from_numpy(windows)).numpy()
    features = _coreml_encoder("AudioEncoder_untrained").encode(windows)
    assert np.abs(features - expected).max() <= 1e-5 * max(1.0, float(np.abs(expected).max()))


def test_core_ml_fp16_generator_runs_close_to_torch(torch_features: np.ndarray) -> None:
    backend = pytest.importorskip("backends.coreml_backend")
    from pipeline.avatar import Avatar
    from pipeline.crop import prepare_input
    from pipeline.features import audio_tensors, pad_features

    avatar = Avatar.open(BUNDLE / "avatar")
    generator = backend.CoreMLGenerator(MODELS / "Generator.mlpackage")
    image = prepare_input(avatar.frame(3), avatar.crop_box(3), 160).tensor[None]
    audio = audio_tensors(pad_features(torch_features), [60])
    with torch.no_grad():
        expected = _torch_generator()(torch.from_numpy(image), torch.from_numpy(audio)).numpy()
    assert np.abs(generator.generate(image, audio) - expected).max() <= 0.05  # fp16 storage and arithmetic


# ------------------------------------------------------------------------------------------------- lip sync


@pytest.mark.slow
def test_mouth_follows_the_speech_with_the_correct_encoder_and_not_with_the_untrained_one() -> None:
    from tools.demo.measurements import measure_bundle

    figures = measure_bundle(BUNDLE, frame_stride=3, lanes=["Core ML encoder, converted untrained"])
    lanes = figures["lanes"]
    assert lanes["ONNX Runtime (reference)"]["mouth_r"] >= 0.7
    assert abs(lanes["Core ML encoder, converted untrained"]["mouth_r"]) < 0.3
