"""Every kind of divergence, built here from a reference pipeline, is named with the right stage and kind.

Each case is a "port" written the way a real one goes wrong, with the numbers computed in this file (librosa for
the mel variants, cv2 for crops and paste-backs, numpy for feature and tensor assembly), written as a dump to
tmp_path and loaded as a lane next to the reference lane; the report must then name the stage where the divergence
enters and its kind. Correct ports, fp16 ones included, must never be called divergent.
"""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import librosa
import numpy as np
import pytest
import scipy.signal
import soundfile as sf

from backends.registry import MODELS
from pipeline.lane import Lane, open_lanes
from pipeline.report import build_report
from pipeline.session import load_session
from tests.builders.avatar import make_dataset
from tests.builders.onnx_models import make_encoder, make_generator

FRAMES = list(range(0, 8))
SIZE = 160


def _speech_like(seconds: float, seed: int, sr: int = 16000) -> np.ndarray:
    """A voiced signal whose loudness follows a random syllable-like envelope (different per seed)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    knots = rng.uniform(0.0, 1.0, size=int(seconds * 6) + 2) ** 2
    envelope = np.interp(t, np.linspace(0, seconds, knots.size), knots)
    f0 = 120 + 40 * rng.uniform()
    voiced = np.sin(2 * np.pi * f0 * t) + 0.5 * np.sin(2 * np.pi * 2 * f0 * t) + 0.3 * np.sin(2 * np.pi * 1100 * t)
    return (0.3 * envelope * voiced + 0.005 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    d = tmp_path_factory.mktemp("divergence")
    sf.write(d / "speech.wav", _speech_like(2.4, seed=1), 16000, subtype="FLOAT")
    make_dataset(d / "avatar", frames=5, size=(320, 240), image_format="png")
    make_encoder(d / "enc.onnx", seed=0)
    make_encoder(d / "enc_other.onnx", seed=7)
    make_encoder(d / "enc_fp16.onnx", seed=0, fp16=True)
    make_generator(d / "gen.onnx", size=SIZE, seed=1)
    make_generator(d / "gen_other.onnx", size=SIZE, seed=5)
    make_generator(d / "gen_fp16.onnx", size=SIZE, seed=1, fp16=True)
    reference = _open(d, {}, "ref")[0]
    return {"dir": d, "reference": reference}


def _open(d: Path, port: dict[str, str], name: str, audio: str = "speech.wav") -> list:
    """The reference lane and a "port" lane with the given keys (paths relative to d), opened with the backends."""
    lane = {"encoder": "enc.onnx", "generator": "gen.onnx", **port}
    body = "\n".join(f'{k} = "{v}"' for k, v in lane.items())
    text = (f'audio = "{audio}"\navatar = "avatar"\n\n[[lanes]]\nname = "reference"\nencoder = "enc.onnx"\n'
            f'generator = "gen.onnx"\n\n[[lanes]]\nname = "port"\n{body}\n')
    path = d / f"{name}.toml"
    path.write_text(text)
    return open_lanes(load_session(path), models=MODELS)


def _diagnose(world: dict, name: str, **port: str):
    lanes = _open(world["dir"], port, name)
    report = build_report(lanes, 0, FRAMES, audio_check=True)
    assert not report.errors, report.errors
    return report.diagnosis[0]


def _save(world: dict, name: str, array: np.ndarray) -> str:
    np.save(world["dir"] / name, array)
    return name


# -- the mel front end (written with librosa, the library the reference uses) ----------------------------------
def _librosa_mel(samples: np.ndarray, htk: bool = False, n_fft: int = 800, center: bool = True,
                 pad_mode: str = "constant") -> np.ndarray:
    """The Wav2Lip mel with one ingredient changed, through librosa and scipy as a Python port would write it."""
    emphasised = scipy.signal.lfilter([1, -0.97], [1], samples)
    spectrum = np.abs(librosa.stft(y=emphasised, n_fft=n_fft, hop_length=200, win_length=n_fft, center=center,
                                   pad_mode=pad_mode))
    bank = librosa.filters.mel(sr=16000, n_fft=n_fft, n_mels=80, fmin=55, fmax=7600, htk=htk)
    db = 20 * np.log10(np.maximum(1e-5, bank @ spectrum)) - 20
    return np.clip(8 * (db + 100) / 100 - 4, -4, 4).T.astype(np.float32)


def _samples(world: dict) -> np.ndarray:
    return sf.read(world["dir"] / "speech.wav", dtype="float32")[0]


def test_the_reference_own_mel_through_librosa_is_a_match(world):
    d = _diagnose(world, "mel_same", mel=_save(world, "mel_same.npy", _librosa_mel(_samples(world))))
    assert d.kind == "match" and d.first_divergent_stage is None and d.passed


def test_an_htk_mel_scale_is_named_at_the_mel_stage(world):
    d = _diagnose(world, "mel_htk", mel=_save(world, "mel_htk.npy", _librosa_mel(_samples(world), htk=True)))
    assert (d.first_divergent_stage, d.kind) == ("mel", "front_end")
    assert "HTK" in d.explanation and not d.passed


def test_a_512_point_fft_is_named_at_the_mel_stage(world):
    d = _diagnose(world, "mel_512", mel=_save(world, "mel_512.npy", _librosa_mel(_samples(world), n_fft=512)))
    assert (d.first_divergent_stage, d.kind) == ("mel", "front_end")
    assert "512-point FFT" in d.explanation


def test_a_stft_without_centring_has_4_fewer_frames_and_is_compared_aligned(world):
    mel = _librosa_mel(_samples(world), center=False)
    reference_frames = world["reference"].mel().shape[0]
    assert mel.shape[0] == reference_frames - 4
    d = _diagnose(world, "mel_uncentred", mel=_save(world, "mel_uncentred.npy", mel))
    assert (d.first_divergent_stage, d.kind) == ("mel", "front_end")
    assert "no centre padding" in d.explanation


def test_reflect_padding_is_padding_edges_at_the_mel_stage(world):
    mel = _librosa_mel(_samples(world), pad_mode="reflect")
    d = _diagnose(world, "mel_reflect", mel=_save(world, "mel_reflect.npy", mel))
    assert (d.first_divergent_stage, d.kind) == ("mel", "padding_edges")


def test_a_linear_interpolation_resampler_is_named_at_the_mel_stage(world, tmp_path):
    d = world["dir"]
    rate = 44100
    source = _speech_like(2.4, seed=3, sr=rate)
    sf.write(d / "speech44.wav", source, rate, subtype="FLOAT")
    length = int(np.ceil(source.size * 16000 / rate))
    linear = np.interp(np.arange(length) * rate / 16000, np.arange(source.size), source)  # the port's resampler
    np.save(d / "mel_linear.npy", _librosa_mel(linear.astype(np.float32)))
    lanes = _open(d, {"mel": "mel_linear.npy"}, "mel_linear", audio="speech44.wav")
    diagnosis = build_report(lanes, 0, FRAMES).diagnosis[0]
    assert (diagnosis.first_divergent_stage, diagnosis.kind) == ("mel", "front_end")
    assert "linear interpolation" in diagnosis.explanation


def test_a_mel_one_frame_late_is_a_time_shift(world):
    mel = world["reference"].mel()
    late = np.concatenate([mel[:1], mel[:-1]])  # the port's frame t is the reference's t - 1
    d = _diagnose(world, "mel_late", mel=_save(world, "mel_late.npy", late))
    assert (d.first_divergent_stage, d.kind) == ("mel", "time_shift")
    assert d.evidence["offset"] == -1


# -- features ---------------------------------------------------------------------------------------------------
def test_the_reference_features_as_a_dump_are_a_match(world):
    d = _diagnose(world, "feat_same", encoder=_save(world, "feat_same.npy", world["reference"].features()))
    assert d.kind == "match" and d.passed


def test_an_fp16_encoder_is_precision_not_a_divergence(world):
    d = _diagnose(world, "enc_fp16", encoder="enc_fp16.onnx")
    assert d.kind in ("match", "precision") and d.passed, d.explanation
    assert d.first_divergent_stage is None


def test_fp16_rounded_features_are_precision(world):
    rounded = world["reference"].features().astype(np.float16)
    d = _diagnose(world, "feat_fp16", encoder=_save(world, "feat_fp16.npy", rounded))
    assert d.kind == "precision" and d.passed


def test_features_200_times_too_small_are_a_scale_with_the_factor(world):
    small = (world["reference"].features() / 200).astype(np.float32)
    d = _diagnose(world, "feat_small", encoder=_save(world, "feat_small.npy", small))
    assert (d.first_divergent_stage, d.kind) == ("features", "scale")
    assert d.evidence["correction"] == pytest.approx(200, rel=1e-4)


def test_fp16_features_200_times_too_small_are_still_a_scale(world):
    small = (world["reference"].features() / 200).astype(np.float16)
    d = _diagnose(world, "feat_small16", encoder=_save(world, "feat_small16.npy", small))
    assert (d.first_divergent_stage, d.kind) == ("features", "scale")
    assert d.evidence["correction"] == pytest.approx(200, rel=1e-2)


def test_an_encoder_with_other_weights_is_weights(world):
    d = _diagnose(world, "enc_other", encoder="enc_other.onnx")
    assert (d.first_divergent_stage, d.kind) == ("features", "weights")
    assert "no factor fixes it" in d.explanation


def test_features_one_frame_late_are_a_time_shift_with_the_signed_offset(world):
    f = world["reference"].features()
    late = np.concatenate([f[:1], f[:-1]])
    d = _diagnose(world, "feat_late", encoder=_save(world, "feat_late.npy", late))
    assert (d.first_divergent_stage, d.kind) == ("features", "time_shift")
    assert d.evidence["offset"] == -1


def test_features_of_another_clip_are_audio_ignored(world):
    d = world["dir"]
    sf.write(d / "other.wav", _speech_like(2.4, seed=9), 16000, subtype="FLOAT")
    from pipeline.audio import load_audio
    from pipeline.session import LaneSpec

    other = Lane(LaneSpec("reference encoder", d / "enc.onnx"), load_audio(d / "other.wav"), None, models=MODELS)
    features = other.features()
    assert features.shape == world["reference"].features().shape
    diagnosis = _diagnose(world, "feat_other_clip", encoder=_save(world, "feat_other_clip.npy", features))
    assert (diagnosis.first_divergent_stage, diagnosis.kind) == ("features", "audio_ignored")


def test_an_encoder_that_ignores_its_input_is_audio_ignored_by_the_silence_check(world):
    make_encoder(world["dir"] / "enc_deaf.onnx", seed=0, scale=0.0)  # relu(0 * ...) = 0 whatever the audio
    d = _diagnose(world, "enc_deaf", encoder="enc_deaf.onnx")
    assert (d.first_divergent_stage, d.kind) == ("features", "audio_ignored")


def test_nan_in_features_is_non_finite(world):
    f = world["reference"].features().copy()
    f[3, :7] = np.nan
    d = _diagnose(world, "feat_nan", encoder=_save(world, "feat_nan.npy", f))
    assert (d.first_divergent_stage, d.kind) == ("features", "non_finite")


# -- audio tensors ----------------------------------------------------------------------------------------------
def _tensors(padded: np.ndarray, frames: list[int], rows_of) -> np.ndarray:
    """Audio tensors assembled by a port: rows_of(i) lists the padded rows for frame i (-1 or past the end: zeros)."""
    out = []
    for i in frames:
        rows = [padded[r] if 0 <= r < len(padded) else np.zeros(padded.shape[1], np.float32) for r in rows_of(i)]
        out.append(np.stack(rows).reshape(32, 16, 16))
    return np.stack(out).astype(np.float32)


def _tensor_dump(world: dict, name: str, tensors: np.ndarray) -> str:
    np.savez(world["dir"] / name, frames=np.asarray(FRAMES), data=tensors)
    return name


def test_correct_tensors_from_a_partial_dump_are_a_match(world):
    padded = world["reference"].features()
    tensors = _tensors(padded, FRAMES, lambda i: range(i - 8, i + 8))
    d = _diagnose(world, "tens_same", tensors=_tensor_dump(world, "tens_same.npz", tensors))
    assert d.kind == "match"


def test_one_row_tiled_16_times_is_window_at_the_tensor_stage(world):
    padded = world["reference"].features()
    tensors = _tensors(padded, FRAMES, lambda i: [i] * 16)
    d = _diagnose(world, "tens_tiled", tensors=_tensor_dump(world, "tens_tiled.npz", tensors))
    assert (d.first_divergent_stage, d.kind) == ("tensors", "window")
    assert "tiled" in d.explanation


def test_a_plus_minus_4_window_is_window_at_the_tensor_stage(world):
    padded = world["reference"].features()
    tensors = _tensors(padded, FRAMES, lambda i: [r for r in range(i - 4, i + 4) for _ in (0, 1)])
    d = _diagnose(world, "tens_pm4", tensors=_tensor_dump(world, "tens_pm4.npz", tensors))
    assert (d.first_divergent_stage, d.kind) == ("tensors", "window")
    assert "±4" in d.explanation


def test_reversed_rows_are_window_at_the_tensor_stage(world):
    padded = world["reference"].features()
    tensors = _tensors(padded, FRAMES, lambda i: range(i + 7, i - 9, -1))
    d = _diagnose(world, "tens_rev", tensors=_tensor_dump(world, "tens_rev.npz", tensors))
    assert (d.first_divergent_stage, d.kind) == ("tensors", "window")


def test_an_off_by_one_frame_index_is_a_time_shift_at_the_tensor_stage(world):
    padded = world["reference"].features()
    tensors = _tensors(padded, FRAMES, lambda i: range(i - 7, i + 9))  # the port uses frame i + 1
    d = _diagnose(world, "tens_late", tensors=_tensor_dump(world, "tens_late.npz", tensors))
    assert (d.first_divergent_stage, d.kind) == ("tensors", "time_shift")
    assert d.evidence["offset"] == 1


def test_noise_for_tensors_is_unknown_not_a_guess(world):
    noise = np.random.default_rng(4).uniform(0, 3, size=(len(FRAMES), 32, 16, 16)).astype(np.float32)
    d = _diagnose(world, "tens_noise", tensors=_tensor_dump(world, "tens_noise.npz", noise))
    assert (d.first_divergent_stage, d.kind) == ("tensors", "unknown")


# -- generator inputs (prepared with cv2 as a port would) ---------------------------------------------------------
def _port_inputs(world: dict, interpolation=cv2.INTER_LINEAR, rgb: bool = False, two_point_mask: bool = False):
    reference: Lane = world["reference"]
    out = []
    for i in FRAMES:
        k = reference.template_index(i)
        frame, box = reference.avatar.frame(k), reference.avatar.crop_box(k)
        crop = frame[box.y1:box.y2, box.x1:box.x2]
        if rgb:
            crop = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)
        inner = cv2.resize(crop, (SIZE + 8, SIZE + 8), interpolation=interpolation)[4:SIZE + 4, 4:SIZE + 4]
        masked = inner.copy()
        if two_point_mask:
            cv2.rectangle(masked, (5, 5), (155, 150), (0, 0, 0), -1)
        else:
            cv2.rectangle(masked, (5, 5, 150, 145), (0, 0, 0), -1)
        out.append(np.concatenate([inner, masked], axis=2).transpose(2, 0, 1) / 255.0)
    return np.stack(out).astype(np.float32)


def test_a_crop_box_two_pixels_to_the_right_is_crop_at_the_input_stage(world):
    reference: Lane = world["reference"]
    out = []
    for i in FRAMES:
        k = reference.template_index(i)
        frame, box = reference.avatar.frame(k), reference.avatar.crop_box(k)
        crop = frame[box.y1:box.y2, box.x1 + 2:box.x2 + 2]  # the port reads its box two pixels to the right
        inner = cv2.resize(crop, (SIZE + 8, SIZE + 8), interpolation=cv2.INTER_LINEAR)[4:SIZE + 4, 4:SIZE + 4]
        masked = inner.copy()
        cv2.rectangle(masked, (5, 5, 150, 145), (0, 0, 0), -1)
        out.append(np.concatenate([inner, masked], axis=2).transpose(2, 0, 1) / 255.0)
    d = _diagnose(world, "in_box", inputs=_input_dump(world, "in_box.npz", np.stack(out).astype(np.float32)))
    assert (d.first_divergent_stage, d.kind) == ("inputs", "crop")
    assert "moved by (+2, +0)" in d.explanation


def _input_dump(world: dict, name: str, inputs: np.ndarray) -> str:
    np.savez(world["dir"] / name, frames=np.asarray(FRAMES), data=inputs)
    return name


def test_inputs_prepared_like_the_reference_are_a_match(world):
    d = _diagnose(world, "in_same", inputs=_input_dump(world, "in_same.npz", _port_inputs(world)))
    assert d.kind == "match"


def test_rgb_inputs_are_crop_at_the_input_stage(world):
    d = _diagnose(world, "in_rgb", inputs=_input_dump(world, "in_rgb.npz", _port_inputs(world, rgb=True)))
    assert (d.first_divergent_stage, d.kind) == ("inputs", "crop")
    assert "RGB" in d.explanation


def test_the_two_point_mask_is_crop_at_the_input_stage(world):
    inputs = _port_inputs(world, two_point_mask=True)
    d = _diagnose(world, "in_mask", inputs=_input_dump(world, "in_mask.npz", inputs))
    assert (d.first_divergent_stage, d.kind) == ("inputs", "crop")
    assert "two-point" in d.explanation


def test_nearest_neighbour_resize_is_crop_at_the_input_stage(world):
    inputs = _port_inputs(world, interpolation=cv2.INTER_NEAREST)
    d = _diagnose(world, "in_nearest", inputs=_input_dump(world, "in_nearest.npz", inputs))
    assert (d.first_divergent_stage, d.kind) == ("inputs", "crop")
    assert "nearest" in d.explanation


# -- generator outputs and paste-back ----------------------------------------------------------------------------
def test_an_fp16_generator_is_precision(world):
    d = _diagnose(world, "gen_fp16", generator="gen_fp16.onnx")
    assert d.kind in ("match", "precision") and d.passed, d.explanation


def test_a_generator_with_other_weights_is_weights_at_the_output_stage(world):
    d = _diagnose(world, "gen_other", generator="gen_other.onnx")
    assert (d.first_divergent_stage, d.kind) == ("outputs", "weights")


def test_dumped_outputs_of_another_generator_are_unknown_until_its_inputs_are_dumped_too(world):
    reference: Lane = world["reference"]
    from pipeline.session import LaneSpec

    spec = LaneSpec("other generator", world["dir"] / "enc.onnx", world["dir"] / "gen_other.onnx")
    other = Lane(spec, reference.audio, reference.avatar, models=MODELS)
    outputs = np.stack([other.raw_output(i) for i in FRAMES])
    np.savez(world["dir"] / "out_other.npz", frames=np.asarray(FRAMES), data=outputs)
    alone = _diagnose(world, "out_other", generator="out_other.npz")
    assert (alone.first_divergent_stage, alone.kind) == ("outputs", "unknown")
    tensors = _tensors(reference.features(), FRAMES, lambda i: range(i - 8, i + 8))
    inputs = _port_inputs(world)
    with_inputs = _diagnose(world, "out_other_fed", generator="out_other.npz",
                            tensors=_tensor_dump(world, "out_fed_t.npz", tensors),
                            inputs=_input_dump(world, "out_fed_i.npz", inputs))
    assert (with_inputs.first_divergent_stage, with_inputs.kind) == ("outputs", "weights")


def _port_frames(world: dict, paste) -> np.ndarray:
    """Final frames [F_all,H,W,3] of a port: the reference's outputs, pasted back by ``paste`` (frames outside
    FRAMES are the templates, never compared)."""
    reference: Lane = world["reference"]
    frames = []
    for i in range(max(FRAMES) + 1):
        k = reference.template_index(i)
        frame, box = reference.avatar.frame(k).copy(), reference.avatar.crop_box(k)
        mouth = (np.clip(reference.raw_output(i), 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)
        frames.append(paste(frame, box, mouth))
    return np.stack(frames)


def test_final_frames_pasted_like_the_reference_are_a_match(world):
    def paste(frame, box, mouth):
        crop = frame[box.y1:box.y2, box.x1:box.x2]
        patch = cv2.resize(crop, (SIZE + 8, SIZE + 8), interpolation=cv2.INTER_LINEAR)
        patch[4:SIZE + 4, 4:SIZE + 4] = mouth
        frame[box.y1:box.y2, box.x1:box.x2] = cv2.resize(patch, (box.x2 - box.x1, box.y2 - box.y1),
                                                         interpolation=cv2.INTER_LINEAR)
        return frame

    d = _diagnose(world, "paste_same", generator=_save(world, "paste_same.npy", _port_frames(world, paste)))
    assert d.kind == "match", d.explanation


def test_a_nearest_neighbour_paste_back_is_paste_back(world):
    def paste(frame, box, mouth):
        crop = frame[box.y1:box.y2, box.x1:box.x2]
        patch = cv2.resize(crop, (SIZE + 8, SIZE + 8), interpolation=cv2.INTER_LINEAR)
        patch[4:SIZE + 4, 4:SIZE + 4] = mouth
        frame[box.y1:box.y2, box.x1:box.x2] = cv2.resize(patch, (box.x2 - box.x1, box.y2 - box.y1),
                                                         interpolation=cv2.INTER_NEAREST)
        return frame

    d = _diagnose(world, "paste_nearest", generator=_save(world, "paste_nearest.npy", _port_frames(world, paste)))
    assert (d.first_divergent_stage, d.kind) == ("frames", "paste_back")
    assert "nearest" in d.explanation


def test_an_output_stretched_over_the_whole_box_is_paste_back(world):
    def paste(frame, box, mouth):
        frame[box.y1:box.y2, box.x1:box.x2] = cv2.resize(mouth, (box.x2 - box.x1, box.y2 - box.y1),
                                                         interpolation=cv2.INTER_LINEAR)
        return frame

    d = _diagnose(world, "paste_stretch", generator=_save(world, "paste_stretch.npy", _port_frames(world, paste)))
    assert (d.first_divergent_stage, d.kind) == ("frames", "paste_back")
    assert "stretched" in d.explanation


# -- the demo ------------------------------------------------------------------------------------------------------
DEMO_LANES = {
    "Core ML encoder, converted untrained": ("features", "weights"),
    "Core ML scale-error encoder (1/200)": ("features", "scale"),
    "Core ML scale-error encoder x200 (fixed)": (None, "match"),
    "Core ML correct encoder + fp16 generator": (None, ("match", "precision")),
}


def test_the_demo_lanes_get_the_right_verdicts():
    from cli.report import weights_evidence

    session = load_session(Path(__file__).resolve().parents[1] / "resources" / "demo" / "variants.toml")
    session.lanes = [session.lanes[0], *(lane for lane in session.lanes if lane.name in DEMO_LANES)]
    lanes = open_lanes(session, models=MODELS)
    report = build_report(lanes, 0, [0, 100, 200], weights_evidence=weights_evidence)
    assert not report.errors, report.errors
    by_lane = {d.lane: d for d in report.diagnosis}
    for name, (stage, kind) in DEMO_LANES.items():
        d = by_lane[name]
        assert d.first_divergent_stage == stage, (name, d.explanation)
        assert d.kind in (kind if isinstance(kind, tuple) else (kind,)), (name, d.explanation)
    untrained = by_lane["Core ML encoder, converted untrained"]
    assert untrained.evidence["weights_untrained"] is True and "untrained" in untrained.explanation
    assert untrained.stages["outputs"] == "follows from features" and untrained.stages["mel"] == "match"
    assert by_lane["Core ML scale-error encoder (1/200)"].evidence["correction"] == pytest.approx(200, rel=1e-3)


# -- dumps of later stages ----------------------------------------------------------------------------------------
def test_a_partial_dump_chooses_the_report_frames_among_those_it_holds(world):
    padded = world["reference"].features()
    held = [2, 5, 6]
    tensors = _tensors(padded, held, lambda i: range(i - 8, i + 8))
    np.savez(world["dir"] / "tens_some.npz", frames=np.asarray(held), data=tensors)
    lanes = _open(world["dir"], {"tensors": "tens_some.npz"}, "tens_some")
    report = build_report(lanes, 0, None, mouth_frames=8)
    assert report.frames == held and not report.errors, report.errors
    tensor_row = next(c for c in report.comparisons if c.stage == "tensors")
    assert tensor_row.max_abs == 0.0 and report.diagnosis[0].kind == "match"


@pytest.mark.parametrize("content, expected", [
    (dict(data=np.zeros((3, 32, 16, 8), np.float32)), "expected audio tensors [F,32,16,16]"),
    (dict(frames=np.asarray([0, 0, 1]), data=np.zeros((3, 32, 16, 16), np.float32)), "distinct output frame"),
    (dict(frames=np.asarray([0, 1]), data=np.zeros((3, 32, 16, 16), np.float32)), "one per row"),
])
def test_a_malformed_tensor_dump_is_one_input_error(tmp_path, content, expected):
    from core.errors import InputError
    from pipeline.dumps import StageDump

    np.savez(tmp_path / "bad.npz", **content)
    with pytest.raises(InputError, match=re.escape(expected)):
        StageDump(tmp_path / "bad.npz", "tensors")


def test_a_frame_the_dump_does_not_hold_is_named(tmp_path):
    from core.errors import InputError
    from pipeline.dumps import StageDump

    np.savez(tmp_path / "some.npz", frames=np.asarray([4, 9]), data=np.zeros((2, 6, 160, 160), np.float32))
    dump = StageDump(tmp_path / "some.npz", "inputs")
    assert dump.frames == [4, 9] and dump.size == 160
    with pytest.raises(InputError, match=r"holds frames 4\.\.9 \(2 of them\), frame 5 was asked for"):
        dump.item(5)


def test_a_generator_that_ignores_its_audio_is_audio_ignored_at_the_output_stage(world):
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(world["dir"] / "gen_other.onnx"))
    for index, init in enumerate(model.graph.initializer):
        if init.name == "tiny_wa":  # the audio branch's weights: zero, so the audio tensor never reaches the mouth
            zero = numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(init)), init.name)
            model.graph.initializer[index].CopyFrom(zero)
    onnx.save(model, str(world["dir"] / "gen_deaf.onnx"))
    d = _diagnose(world, "gen_deaf", generator="gen_deaf.onnx")
    assert (d.first_divergent_stage, d.kind) == ("outputs", "audio_ignored")
    assert "generator ignores" in d.explanation
