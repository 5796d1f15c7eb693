"""Stage 1 numerics against the reference's own calls: every mel value must equal the reference's, bit for bit.

The reference is tests/reference_calls.py: SyncTalk_2D's utils.py calls written in its own form (scipy lfilter
pre-emphasis, librosa.stft with its arguments, np.dot with librosa's float32 filter bank, its _amp_to_db and
_normalize expressions). An earlier version of these tests re-derived the front end (a float64 bank, a rewritten
dB formula) with a 1e-4 tolerance; against the reference's own calls our mel was one float32 ULP off in about
15 % of its values (the filter bank's dtype and the Hann window's rounding), which these exact tests now catch.
"""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import pytest
import scipy.signal

from core.errors import InputError
from pipeline.audio import audio_from_array, load_audio
from pipeline.mel import (
    hann_window,
    hz_to_slaney_mel,
    mel_filterbank,
    mel_from_magnitude,
    melspectrogram,
    normalise_db,
    preemphasis,
    slaney_mel_to_hz,
    stft_magnitude,
)
from tests import reference_calls as reference
from tests.builders.speech import espeak_available, speak, speech_samples

needs_espeak = pytest.mark.skipif(not espeak_available(), reason="espeak-ng is not installed")
SENTENCE = "The quick brown fox jumps over the lazy dog, then sits down quietly."


def librosa_mel_reference(samples: np.ndarray, pad_mode: str = "constant") -> np.ndarray:
    """The reference's orig_mel [T, 80] (float64) for these samples, with the librosa era's pad mode pinned."""
    return reference.orig_mel(samples, pad_mode)


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


def assert_matches_reference(ours: np.ndarray, expected: np.ndarray) -> None:
    """Bit for bit: the float32 the encoder sees, as the reference's torch.FloatTensor(mel) cast gives it."""
    assert ours.dtype == np.float32
    assert ours.shape == expected.shape
    np.testing.assert_array_equal(ours, expected.astype(np.float32))


# --- whole front end against librosa ------------------------------------------------------------------------------


@needs_espeak
def test_mono_16k_speech_matches_librosa(speech_files: dict[str, Path]) -> None:
    reference_samples = reference.load_wav(str(speech_files["mono16k"]), 16000)
    ours = melspectrogram(load_audio(speech_files["mono16k"]).samples)
    assert_matches_reference(ours, librosa_mel_reference(reference_samples))


@needs_espeak
def test_stereo_44k_file_matches_librosa_load_then_reference(speech_files: dict[str, Path]) -> None:
    reference_samples = reference.load_wav(str(speech_files["stereo44k"]), 16000)
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


def test_default_padding_is_what_the_references_call_gets_from_this_librosa() -> None:
    # The reference passes no pad_mode to librosa.stft; librosa >= 0.10 (what pyproject's dev extra installs) pads
    # with zeros, which is our default. Made with the reference's exact call, not with a mode we chose.
    assert tuple(int(part) for part in librosa.__version__.split(".")[:2]) >= (0, 10)
    samples = (0.3 * np.random.default_rng(15).standard_normal(8137)).astype(np.float32)
    assert_matches_reference(melspectrogram(samples), reference.orig_mel(samples, pad_mode=None))


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


def test_filterbank_is_the_reference_float32_bank_bit_for_bit() -> None:
    # The reference calls librosa.filters.mel without dtype, so it multiplies with float32 weights. A float64
    # bank (what this project had) is 184 weights and about 15 % of the float32 mel values away from it.
    expected = reference._build_mel_basis()
    assert expected.dtype == np.float32
    ours = mel_filterbank()
    assert ours.shape == (80, 401) and ours.dtype == np.float32
    np.testing.assert_array_equal(ours, expected)


def test_mel_product_sums_in_float64_like_the_reference_dot() -> None:
    magnitude = np.abs(np.random.default_rng(11).standard_normal((37, 401)))
    expected = reference._linear_to_mel(np.asfortranarray(magnitude.T))  # |D| is Fortran-ordered [401, T]
    assert expected.dtype == np.float64
    ours_db = normalise_db(expected.T.copy())
    np.testing.assert_array_equal(mel_from_magnitude(magnitude), ours_db.astype(np.float32))
    np.testing.assert_array_equal(ours_db, reference._normalize(reference._amp_to_db(expected) - 20).T)


def test_db_and_normalisation_are_the_reference_expressions_bit_for_bit() -> None:
    # Magnitudes spanning the floor, the -4 clip, the useful range and the +4 clip, plus exact powers of ten.
    rng = np.random.default_rng(12)
    magnitudes = np.concatenate([10.0 ** rng.uniform(-7, 2, 20_000), [0.0, 1e-5, 9.99999999999998e-06, 1e-4, 1.0, 10.0]])
    expected = reference._normalize(reference._amp_to_db(magnitudes) - 20)
    np.testing.assert_array_equal(normalise_db(magnitudes.copy()), expected)


def test_stft_magnitude_is_librosa_stft_bit_for_bit() -> None:
    samples = (0.3 * np.random.default_rng(13).standard_normal(16_137)).astype(np.float32)
    for pad_mode in ("constant", "reflect"):
        expected = np.abs(reference._stft(reference.preemphasis(samples, 0.97), pad_mode))
        np.testing.assert_array_equal(stft_magnitude(samples, pad_mode, emphasise=True), expected.T)


def test_preemphasis_is_the_reference_lfilter_bit_for_bit() -> None:
    samples = np.random.default_rng(14).standard_normal(5000).astype(np.float32)
    expected = reference.preemphasis(samples, 0.97)
    assert expected.dtype == np.float64  # lfilter's taps are Python floats, so float32 input gives float64
    np.testing.assert_array_equal(preemphasis(samples), expected)


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
    # librosa.stft's window="hann" is scipy.signal.get_window("hann", 800, fftbins=True): equal to the last bit,
    # which the textbook 0.5 - 0.5 cos(2 pi n / 800) is not for about 500 of the 800 weights.
    np.testing.assert_array_equal(window, scipy.signal.get_window("hann", 800, fftbins=True))
    n = np.array([0, 200, 400, 600])
    np.testing.assert_allclose(window[n], [0.0, 0.5, 1.0, 0.5], atol=1e-15)  # 0.5 - 0.5 cos(2 pi n / 800)
    assert np.abs(window - np.hanning(800)).max() > 1e-4  # not the symmetric one


@pytest.mark.parametrize("length", [3000, 3199, 3200, 3201, 16000, 16137, 160000])
def test_frame_count_is_one_plus_length_over_hop(length: int) -> None:
    samples = np.random.default_rng(length).standard_normal(length).astype(np.float32)
    reference_frames = reference.orig_mel(samples).shape[0]  # the reference's own call, librosa's default padding
    assert melspectrogram(samples).shape == (1 + length // 200, 80) == (reference_frames, 80)


@pytest.mark.parametrize(("seconds", "frames"), [(1, 81), (10, 801), (20, 1601)])
def test_pipeline_examples_mel_frames(seconds: int, frames: int) -> None:
    audio = audio_from_array(np.zeros(16000 * seconds, dtype=np.float32), 16000)
    assert melspectrogram(audio.samples).shape == (frames, 80)
