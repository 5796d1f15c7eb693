"""Stage 1 numerics against librosa: every mel value we compute must match librosa's own primitives.

The reference below is assembled from librosa/scipy building blocks (lfilter pre-emphasis, librosa.stft,
librosa.filters.mel) with the Wav2Lip dB formula written out, so a mistake in our from-scratch numpy cannot
hide behind a shared helper.
"""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import pytest
import scipy.signal

from pipeline.audio import audio_from_array, load_audio
from core.errors import InputError
from pipeline.mel import (
    hann_window,
    hz_to_slaney_mel,
    mel_filterbank,
    melspectrogram,
    preemphasis,
    slaney_mel_to_hz,
)
from tests.builders.speech import espeak_available, speak, speech_samples

needs_espeak = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")
TOLERANCE = 1e-4
SENTENCE = "The quick brown fox jumps over the lazy dog, then sits down quietly."


def librosa_mel_reference(samples: np.ndarray, pad_mode: str = "constant") -> np.ndarray:
    """The Wav2Lip front end from librosa primitives, in float64: [T, 80]."""
    emphasised = scipy.signal.lfilter([1.0, -0.97], [1.0], np.asarray(samples, dtype=np.float64))
    spectrum = librosa.stft(
        emphasised, n_fft=800, hop_length=200, win_length=800, window="hann", center=True, pad_mode=pad_mode
    )
    bank = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600, dtype=np.float64)
    level_db = 20.0 * np.log10(np.maximum(1e-5, bank @ np.abs(spectrum))) - 20.0
    return np.clip((8.0 * (level_db + 100.0) / 100.0) - 4.0, -4.0, 4.0).T


@pytest.fixture(scope="module")
def speech_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if not espeak_available():
        pytest.skip("espeak-ng is not installed")
    folder = tmp_path_factory.mktemp("mel_speech")
    return {
        "mono16k": speak(SENTENCE, folder / "mono16k.wav", rate=16000),
        "stereo44k": speak(SENTENCE, folder / "stereo44k.wav", rate=44100, channels=2, voice="en-gb", speed=170),
    }


@pytest.fixture(scope="module")
def speech_16k() -> np.ndarray:
    if not espeak_available():
        pytest.skip("espeak-ng is not installed")
    samples, rate = speech_samples("Hello there, this sentence has plenty of fricatives and stops.")
    return librosa.resample(samples, orig_sr=rate, target_sr=16000)


def assert_matches_reference(ours: np.ndarray, reference: np.ndarray) -> None:
    assert ours.dtype == np.float32
    assert ours.shape == reference.shape
    assert np.abs(ours.astype(np.float64) - reference).max() <= TOLERANCE


# --- whole front end against librosa ------------------------------------------------------------------------------


@needs_espeak
def test_mono_16k_speech_matches_librosa(speech_files: dict[str, Path]) -> None:
    reference_samples, _ = librosa.load(speech_files["mono16k"], sr=16000)
    ours = melspectrogram(load_audio(speech_files["mono16k"]).samples)
    assert_matches_reference(ours, librosa_mel_reference(reference_samples))


@needs_espeak
def test_stereo_44k_file_matches_librosa_load_then_reference(speech_files: dict[str, Path]) -> None:
    reference_samples, _ = librosa.load(speech_files["stereo44k"], sr=16000)
    ours = melspectrogram(load_audio(speech_files["stereo44k"]).samples)
    assert_matches_reference(ours, librosa_mel_reference(reference_samples))


@needs_espeak
def test_length_not_a_multiple_of_the_hop_matches_librosa(speech_16k: np.ndarray) -> None:
    samples = speech_16k[: 200 * 57 + 137]
    ours = melspectrogram(samples)
    assert ours.shape == (1 + len(samples) // 200, 80) == (58, 80)
    assert_matches_reference(ours, librosa_mel_reference(samples))


@needs_espeak
def test_clip_cut_mid_speech_matches_librosa(speech_16k: np.ndarray) -> None:
    # Starts on a non-zero sample, so y[0] = x[0] (no filter history) is visible in the first frames.
    samples = speech_16k[3001 : 3001 + 9000]
    assert abs(samples[0]) > 1e-4
    assert_matches_reference(melspectrogram(samples), librosa_mel_reference(samples))


def test_preemphasis_keeps_the_first_sample() -> None:
    # Hand computation: y = [1, 1 - 0.97, 2 - 0.97, 0 - 1.94].
    np.testing.assert_allclose(preemphasis(np.array([1.0, 1.0, 2.0, 0.0])), [1.0, 0.03, 1.03, -1.94], atol=1e-15)


def test_silence_then_quiet_noise_matches_librosa() -> None:
    rng = np.random.default_rng(7)
    samples = np.concatenate([np.zeros(8000), 1e-3 * rng.standard_normal(9000), 0.3 * rng.standard_normal(4123)])
    ours = melspectrogram(samples.astype(np.float32))
    assert_matches_reference(ours, librosa_mel_reference(samples.astype(np.float32)))
    assert ours.min() == -4.0  # the silent part sits on the clip floor


def test_digital_silence_is_the_floor_everywhere() -> None:
    # Hand computation: M = 0 -> max(1e-5, 0) -> -100 dB - 20 = -120 -> 8 * (-20) / 100 - 4 = -5.6 -> clip -> -4.
    assert np.all(melspectrogram(np.zeros(3000, dtype=np.float32)) == -4.0)


def test_an_overdriven_signal_hits_the_ceiling_and_stays_in_range() -> None:
    # +4 needs 20 log10(M) - 20 >= 0, i.e. mel magnitude >= 10: far beyond full scale, so drive the input at 1000.
    samples = (1000.0 * np.sign(np.sin(np.arange(16000) * 0.3))).astype(np.float32)
    mel = melspectrogram(samples)
    assert mel.max() == 4.0 and mel.min() >= -4.0
    assert_matches_reference(mel, librosa_mel_reference(samples))


# --- reflect padding (librosa < 0.9) ------------------------------------------------------------------------------


@needs_espeak
def test_reflect_padding_matches_librosa_reflect(speech_16k: np.ndarray) -> None:
    samples = speech_16k[3000 : 3000 + 16000 + 137]  # cut mid-speech so the edges are not silent
    assert_matches_reference(melspectrogram(samples, pad_mode="reflect"), librosa_mel_reference(samples, "reflect"))


@needs_espeak
@pytest.mark.parametrize("extra", [0, 1, 137, 199])
def test_reflect_changes_only_the_first_and_last_two_frames(speech_16k: np.ndarray, extra: int) -> None:
    samples = speech_16k[3000 : 3000 + 16000 + extra]
    zeros = melspectrogram(samples, pad_mode="constant")
    reflected = melspectrogram(samples, pad_mode="reflect")
    changed = np.flatnonzero(np.any(zeros != reflected, axis=1))
    last = zeros.shape[0] - 1
    assert changed.tolist() == [0, 1, last - 1, last]


def test_unknown_pad_mode_is_an_input_error() -> None:
    with pytest.raises(InputError, match=r"expected one of constant, reflect, found 'edge'"):
        melspectrogram(np.zeros(3000, dtype=np.float32), pad_mode="edge")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("samples", "found"),
    [(np.zeros((3000, 2), dtype=np.float32), r"found shape \[3000, 2\]"), (np.zeros(0), "found an empty array")],
)
def test_bad_sample_arrays_are_input_errors(samples: np.ndarray, found: str) -> None:
    with pytest.raises(InputError, match=found):
        melspectrogram(samples)


# --- the pieces ---------------------------------------------------------------------------------------------------


def test_filterbank_matches_librosa_slaney_defaults() -> None:
    reference = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600, dtype=np.float64)
    ours = mel_filterbank()
    assert ours.shape == (80, 401) and ours.dtype == np.float64
    np.testing.assert_allclose(ours, reference, rtol=1e-6, atol=1e-6 * reference.max())


def test_filterbank_is_not_the_htk_scale_or_unnormalised() -> None:
    ours = mel_filterbank()
    htk = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600, htk=True, dtype=np.float64)
    plain = librosa.filters.mel(sr=16000, n_fft=800, n_mels=80, fmin=55, fmax=7600, norm=None, dtype=np.float64)
    assert np.abs(ours - htk).max() > 1e-3
    assert np.abs(ours - plain).max() > 1e-1


def test_filterbank_is_cached_and_read_only() -> None:
    assert mel_filterbank() is mel_filterbank()
    with pytest.raises(ValueError):
        mel_filterbank()[0, 0] = 1.0


def test_slaney_scale_hand_values() -> None:
    # Linear part: 200/3 Hz per mel, so 1 kHz is mel 15; log part: 6.4x in frequency is 27 mels, so 6.4 kHz is 42.
    np.testing.assert_allclose(hz_to_slaney_mel([0.0, 200.0 / 3.0, 1000.0, 6400.0]), [0.0, 1.0, 15.0, 42.0])
    np.testing.assert_allclose(hz_to_slaney_mel([55.0, 7600.0]), librosa.hz_to_mel([55.0, 7600.0]))
    frequencies = np.array([55.0, 440.0, 999.0, 1000.0, 1001.0, 7600.0])
    np.testing.assert_allclose(slaney_mel_to_hz(hz_to_slaney_mel(frequencies)), frequencies)


def test_hann_window_is_periodic() -> None:
    window = hann_window()
    np.testing.assert_allclose(window, scipy.signal.get_window("hann", 800, fftbins=True), atol=1e-15)
    n = np.array([0, 200, 400, 600])
    np.testing.assert_allclose(window[n], [0.0, 0.5, 1.0, 0.5], atol=1e-15)  # 0.5 - 0.5 cos(2 pi n / 800)
    assert np.abs(window - np.hanning(800)).max() > 1e-4  # not the symmetric one


@pytest.mark.parametrize("length", [3000, 3199, 3200, 3201, 16000, 16137, 160000])
def test_frame_count_is_one_plus_length_over_hop(length: int) -> None:
    samples = np.random.default_rng(length).standard_normal(length).astype(np.float32)
    librosa_frames = librosa.stft(samples, n_fft=800, hop_length=200, center=True, pad_mode="constant").shape[1]
    assert melspectrogram(samples).shape == (1 + length // 200, 80) == (librosa_frames, 80)


@pytest.mark.parametrize(("seconds", "frames"), [(1, 81), (10, 801), (20, 1601)])
def test_pipeline_examples_mel_frames(seconds: int, frames: int) -> None:
    audio = audio_from_array(np.zeros(16000 * seconds, dtype=np.float32), 16000)
    assert melspectrogram(audio.samples).shape == (frames, 80)
