"""Session lanes run on the Core ML and PyTorch backends, and agree where they hold the same weights.

Reference: a third lane-independent computation, PyTorch run directly on the lane's own mel windows.
"""

from __future__ import annotations

import numpy as np
import pytest

from backends.registry import MODELS
from pipeline.audio import Audio
from pipeline.avatar import Avatar
from pipeline.lane import Lane
from pipeline.session import LaneSpec
from tests.builders.avatar import make_dataset
from tests.builders.coreml_models import cached_model, save_state_dict, torch_forward


@pytest.fixture(scope="module")
def lanes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Lane]:
    cache = tmp_path_factory.getbasetemp() / "coreml_cache"
    cache.mkdir(exist_ok=True)
    folder = tmp_path_factory.mktemp("lanes")
    encoder_ml, encoder_model = cached_model(cache, "encoder", "fp32", seed=1)
    generator_ml, generator_model = cached_model(cache, "generator", "fp32", size=160, width=0.25, seed=2)
    encoder_pth = save_state_dict(encoder_model, folder / "audio_visual_encoder.pth", "audio_encoder.")
    generator_pth = save_state_dict(generator_model, folder / "unet.pth")
    rng = np.random.default_rng(0)
    seconds = 1.0
    t = np.arange(int(16000 * seconds)) / 16000.0
    samples = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.02 * rng.standard_normal(t.size))
    audio = Audio(samples.astype(np.float32), 16000, 1)
    avatar = Avatar.open(make_dataset(folder / "avatar", frames=4, size=(320, 240)))
    coreml = Lane(LaneSpec("coreml", encoder_ml, generator_ml), audio, avatar, models=MODELS)
    torch_lane = Lane(LaneSpec("torch", encoder_pth, generator_pth), audio, avatar, models=MODELS)
    return {"coreml": coreml, "torch": torch_lane, "encoder_model": encoder_model}  # type: ignore[dict-item]


def test_lanes_report_their_backends(lanes) -> None:
    assert lanes["coreml"].encoder_provenance.runtime == "coreml-emulated"
    assert lanes["coreml"].generator_provenance.runtime == "coreml-emulated"
    assert lanes["torch"].encoder_provenance.runtime == "torch"
    assert lanes["torch"].generator_provenance.runtime == "torch"


def test_coreml_and_torch_lanes_compute_the_same_features(lanes) -> None:
    windows = lanes["coreml"].windows()
    direct = torch_forward(lanes["encoder_model"], windows)
    coreml = lanes["coreml"].raw_features()
    torch_features = lanes["torch"].raw_features()
    assert coreml.shape == (len(windows) + 2, 512)
    assert np.max(np.abs(coreml[1:-1] - direct)) <= 1e-4
    assert np.max(np.abs(torch_features[1:-1] - direct)) <= 1e-5


def test_coreml_and_torch_lanes_draw_the_same_mouth(lanes) -> None:
    a = lanes["coreml"].raw_output(3)
    b = lanes["torch"].raw_output(3)
    assert a.shape == b.shape == (3, 160, 160)
    assert np.max(np.abs(a - b)) <= 1e-4
    frame = lanes["coreml"].frame(3)
    assert frame.image.shape == (240, 320, 3) and frame.image.dtype == np.uint8


def test_a_session_file_opens_coreml_and_torch_lanes_with_their_options(lanes, tmp_path_factory) -> None:
    """Through the session file and open_lanes, as the window and `report` do: the Core ML lane's options (emulated,
    fp16 compute) reach its backend, the PyTorch lane ignores them, and both compute from their own files."""
    import soundfile

    from pipeline.lane import open_lanes
    from pipeline.session import load_session

    folder = tmp_path_factory.mktemp("session")
    coreml, torch_lane = lanes["coreml"], lanes["torch"]
    soundfile.write(folder / "speech.wav", coreml.audio.samples, 16000, subtype="FLOAT")
    session_path = folder / "session.toml"
    session_path.write_text(
        'audio = "speech.wav"\n'
        '[[lanes]]\nname = "core ml"\n'
        f'encoder = "{coreml.spec.encoder.as_posix()}"\ngenerator = "{coreml.spec.generator.as_posix()}"\n'
        '[lanes.options]\nmode = "emulated"\nprecision = "fp16"\ncompute_unit = "all"\n'
        '[[lanes]]\nname = "torch"\n'
        f'encoder = "{torch_lane.spec.encoder.as_posix()}"\ngenerator = "{torch_lane.spec.generator.as_posix()}"\n'
        '[lanes.options]\nthreads = 1\n'
    )
    opened = open_lanes(load_session(session_path), models=MODELS)
    assert [type(lane).__name__ for lane in opened] == ["Lane", "Lane"], [getattr(l, "error", "") for l in opened]
    emulated, pytorch = opened
    assert emulated.encoder_provenance.runtime == "coreml-emulated"
    assert emulated.encoder_provenance.precision == "fp32 (emulated as fp16)"
    assert emulated.encoder_provenance.details["compute_unit"].startswith("all")
    assert pytorch.generator_provenance.runtime == "torch"
    direct = torch_forward(lanes["encoder_model"], pytorch.windows())
    assert np.max(np.abs(pytorch.raw_features()[1:-1] - direct)) <= 1e-5
    fp16_error = np.max(np.abs(emulated.raw_features()[1:-1] - direct))
    assert 0.0 < fp16_error <= 2e-2 * float(np.abs(direct).max())
