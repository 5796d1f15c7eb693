"""Mouth measures from the generated crops: opening height, loudness following, offset, region metrics, and the
audio-dependence check. References are drawn or computed here (ellipses of known height, per-window SSIM by loops)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from backends.registry import MODELS
from pipeline.audio import load_audio
from pipeline.lane import Lane, open_lanes
from pipeline.mouth import audio_dependence, measure_mouth, mouth_opening, psnr, region_metrics, ssim
from pipeline.report import build_report
from pipeline.session import LaneSpec, load_session
from tests.builders.avatar import make_dataset
from tests.builders.onnx_models import make_encoder, make_generator

SKIN = (150, 170, 215)  # BGR: every channel far above the interior's and below the teeth's thresholds
SIZE = 160


def _face(opening_px: int, size: int = SIZE) -> np.ndarray:
    """A crop with a dark mouth interior exactly ``opening_px`` rows tall around the centre column (0: closed)."""
    image = np.full((size, size, 3), SKIN, np.uint8)
    if opening_px > 0:
        top = int(0.45 * size)
        image[top:top + opening_px, size // 2 - 20:size // 2 + 21] = (40, 30, 60)
    return image


def test_the_opening_is_the_height_of_the_dark_interior():
    heights = [0, 3, 10, 25]
    measured = mouth_opening(np.stack([_face(h) for h in heights]))
    assert measured.tolist() == pytest.approx(heights)


def test_teeth_count_as_inside_the_mouth_and_float_outputs_read_like_the_reference():
    image = _face(10)
    top = int(0.45 * SIZE)
    image[top:top + 4, SIZE // 2 - 20:SIZE // 2 + 21] = (240, 240, 240)  # upper teeth
    as_output = image.transpose(2, 0, 1).astype(np.float32) / 255.0 + 0.001  # generator output layout, in [0, 1]
    assert mouth_opening(image[None])[0] == pytest.approx(10)
    assert mouth_opening(as_output[None])[0] == pytest.approx(10)


def _bursts(frames: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Audio whose loudness changes every video frame (640 samples), and the loudness of each frame's window.

    Per PIPELINE.md, output frame i hears encoder window i - 1: mel frames from int(80 (i-1) / 25), 16 of them, i.e.
    3200 samples from (i-1) x 640.
    """
    rng = np.random.default_rng(seed)
    amplitude = rng.uniform(0.0, 1.0, frames + 8) ** 2
    t = np.arange(640 * (frames + 8)) / 16000
    samples = (np.repeat(amplitude, 640) * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    heard = []
    for i in range(frames):
        start = max(0, (i - 1) * 640)
        chunk = samples[start:start + 3200].astype(np.float64)
        heard.append(20 * math.log10(max(math.sqrt(float(np.mean(chunk**2))), 1e-5)))
    return samples, np.asarray(heard)


def test_a_mouth_that_follows_the_loudness_two_frames_late_has_offset_plus_2():
    frames = list(range(60))
    samples, heard = _bursts(len(frames), seed=2)
    scaled = (heard - heard.min()) / (heard.max() - heard.min())
    synced = [int(round(2 + 20 * scaled[i])) for i in frames]
    late = [int(round(2 + 20 * scaled[max(0, i - 2)])) for i in frames]
    on_time = measure_mouth("synced", np.stack([_face(h) for h in synced]), frames, samples)
    delayed = measure_mouth("late", np.stack([_face(h) for h in late]), frames, samples)
    assert on_time.best_offset == 0 and on_time.best_correlation > 0.95 and on_time.moves
    assert delayed.best_offset == 2 and delayed.best_correlation > 0.95
    assert on_time.range_px == pytest.approx(np.percentile(synced, 95) - np.percentile(synced, 5))


def test_a_still_mouth_barely_moves_and_follows_nothing():
    frames = list(range(40))
    samples, _ = _bursts(len(frames), seed=3)
    still = measure_mouth("still", np.stack([_face(6)] * len(frames)), frames, samples, reference_range=15.0)
    assert not still.moves and "barely moves" in still.summary
    assert still.correlation == 0.0 and still.range_px == 0.0


def _ssim_by_loops(a: np.ndarray, b: np.ndarray, window: int = 7) -> float:
    """SSIM as the paper writes it: per 7x7 window (inside the image), sample variances, then the mean."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    values = []
    for y in range(a.shape[0] - window + 1):
        for x in range(a.shape[1] - window + 1):
            p, q = a[y:y + window, x:x + window].ravel(), b[y:y + window, x:x + window].ravel()
            mp, mq = p.mean(), q.mean()
            vp, vq = p.var(ddof=1), q.var(ddof=1)
            cov = ((p - mp) * (q - mq)).sum() / (p.size - 1)
            values.append(((2 * mp * mq + c1) * (2 * cov + c2)) / ((mp**2 + mq**2 + c1) * (vp + vq + c2)))
    return float(np.mean(values))


def test_ssim_equals_the_per_window_definition_and_psnr_the_formula():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 255, (24, 30))
    b = np.clip(a + rng.normal(0, 20, a.shape), 0, 255)
    assert ssim(a, b) == pytest.approx(_ssim_by_loops(a, b), abs=1e-9)
    assert ssim(a, a) == pytest.approx(1.0)
    assert psnr(a, a + 1.0) == pytest.approx(10 * math.log10(255**2 / 1.0))


def test_region_metrics_see_a_wrong_mouth_that_the_whole_crop_hides():
    reference = np.stack([_face(h) for h in (0, 12, 24, 12)])
    wrong = np.stack([_face(6)] * 4)
    metrics = region_metrics(wrong, reference)
    assert metrics.mouth_mad > 2 * metrics.mad  # the difference sits in the mouth region
    assert metrics.mouth_psnr < metrics.psnr
    same = region_metrics(reference, reference)
    assert same.mouth_psnr == math.inf and same.mouth_ssim == pytest.approx(1.0) and same.mad == 0.0


@pytest.fixture(scope="module")
def small_world(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("mouth")
    samples, _ = _bursts(50, seed=5)
    sf.write(d / "speech.wav", samples, 16000, subtype="FLOAT")
    make_dataset(d / "avatar", frames=4, size=(320, 240), image_format="png")
    make_encoder(d / "enc.onnx", seed=0)
    make_encoder(d / "deaf.onnx", seed=0, scale=0.0)
    make_generator(d / "gen.onnx", size=SIZE, seed=1)
    return d


def test_a_lane_that_hears_its_audio_is_not_flagged(small_world):
    d = small_world
    lane = Lane(LaneSpec("ok", d / "enc.onnx", d / "gen.onnx"), load_audio(d / "speech.wav"), None, models=MODELS)
    check = audio_dependence(lane, [])
    assert check is not None and not check.ignored
    assert check.features_change_silence > 0.01


def test_an_encoder_that_ignores_its_audio_is_flagged_on_silence_and_reversed(small_world):
    d = small_world
    from pipeline.avatar import Avatar

    lane = Lane(LaneSpec("deaf", d / "deaf.onnx", d / "gen.onnx"), load_audio(d / "speech.wav"),
                Avatar.open(d / "avatar"), models=MODELS)
    check = audio_dependence(lane, [0, 5, 10])
    assert check is not None and check.ignored
    assert check.features_change_silence == 0.0 and check.mouth_change_reversed == 0.0


def test_a_feature_dump_has_no_audio_dependence_check(small_world, tmp_path):
    d = small_world
    np.save(tmp_path / "f.npy", np.ones((20, 512), np.float32))
    lane = Lane(LaneSpec("dump", tmp_path / "f.npy"), load_audio(d / "speech.wav"), None, models=MODELS)
    assert audio_dependence(lane, []) is None


def test_the_demo_untrained_lane_barely_moves_although_its_whole_crop_cosine_is_high():
    session = load_session(Path(__file__).resolve().parents[1] / "resources" / "demo" / "demo.toml")
    lanes = open_lanes(session, models=MODELS)
    report = build_report(lanes, 0, [40, 120, 200], mouth_frames=40)
    by_lane = {entry["lane"]: entry for entry in report.mouth}
    reference = by_lane["ONNX Runtime (reference)"]["measure"]
    untrained = by_lane["Core ML encoder, converted untrained"]
    assert reference["moves"] and reference["best_correlation"] > 0.3
    assert not untrained["measure"]["moves"] and "barely moves" in untrained["measure"]["summary"]
    outputs = next(c for c in report.comparisons if c.stage == "outputs")
    assert outputs.cosine > 0.99  # whole-crop agreement looks healthy ...
    assert untrained["metrics"]["mouth_psnr"] < untrained["metrics"]["psnr"]  # ... the mouth region does not
    assert "barely moves" in report.diagnosis[0].explanation


def test_a_lane_whose_mel_is_a_dump_has_no_audio_dependence_check(small_world, tmp_path):
    d = small_world
    audio = load_audio(d / "speech.wav")
    np.save(tmp_path / "mel.npy", np.zeros((1 + audio.samples.size // 200, 80), np.float32))
    spec = LaneSpec("mel dump", d / "enc.onnx", mel=tmp_path / "mel.npy")
    assert audio_dependence(Lane(spec, audio, None, models=MODELS), []) is None  # silence would not reach it
