"""Stage 1 loading: our samples must equal the reference's load bit for bit, and every unusable file must say why.

The reference loads with ``librosa.core.load(path, sr=16000)[0]`` (tests/reference_calls.load_wav): soundfile's
float32 decode, librosa.to_mono's channel mean, soxr_hq resampling and librosa's length fix. We compare with that
call's output exactly; a tolerance would let a different resampler quality or a float64 mean slip through.
"""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile

from pipeline.audio import MIN_SAMPLES, SAMPLE_RATE, audio_from_array, load_audio
from core.errors import InputError
from tests import reference_calls as reference
from tests.builders.speech import espeak_available, speak

SENTENCE = "Seven silent swans swam south, singing softly."


@pytest.fixture(scope="module")
def speech_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if not espeak_available():
        pytest.skip("espeak-ng is not installed")
    folder = tmp_path_factory.mktemp("audio_speech")
    return {
        "mono16k.wav": speak(SENTENCE, folder / "mono16k.wav", rate=16000),
        "mono22k.wav": speak(SENTENCE, folder / "mono22k.wav"),
        "stereo44k.wav": speak(SENTENCE, folder / "stereo44k.wav", rate=44100, channels=2),
        "stereo48k.flac": speak(SENTENCE, folder / "stereo48k.flac", rate=48000, channels=2),
        "three8k.wav": speak(SENTENCE, folder / "three8k.wav", rate=8000, channels=3, subtype="FLOAT"),
        "mono44k.ogg": speak(SENTENCE, folder / "mono44k.ogg", rate=44100),
    }


@pytest.mark.parametrize(
    ("name", "rate", "channels"),
    [
        ("mono16k.wav", 16000, 1),
        ("mono22k.wav", 22050, 1),
        ("stereo44k.wav", 44100, 2),
        ("stereo48k.flac", 48000, 2),
        ("three8k.wav", 8000, 3),
        ("mono44k.ogg", 44100, 1),
    ],
)
def test_samples_equal_librosa_load(speech_files: dict[str, Path], name: str, rate: int, channels: int) -> None:
    expected = reference.load_wav(str(speech_files[name]), 16000)
    audio = load_audio(speech_files[name])
    assert audio.samples.dtype == expected.dtype == np.float32 and audio.samples.ndim == 1
    assert audio.samples.shape == expected.shape  # same length: decides T and N
    np.testing.assert_array_equal(audio.samples, expected)
    assert (audio.source_rate, audio.source_channels) == (rate, channels)
    assert audio.path == speech_files[name]
    assert audio.duration_s == pytest.approx(len(expected) / SAMPLE_RATE)


def test_sixteen_bit_pcm_maps_to_int_over_32768(tmp_path: Path) -> None:
    known = np.array([-32768, -16384, -1, 0, 1, 255, 16384, 32767], dtype=np.int16)
    values = np.tile(known, 400)  # 3200 samples: long enough for one mel window
    path = tmp_path / "known.wav"
    soundfile.write(str(path), values, 16000, subtype="PCM_16")
    samples = load_audio(path).samples
    expected = np.tile([-1.0, -0.5, -1 / 32768, 0.0, 1 / 32768, 255 / 32768, 0.5, 32767 / 32768], 400)
    np.testing.assert_array_equal(samples, expected.astype(np.float32))
    np.testing.assert_array_equal(audio_from_array(values, 16000).samples, samples)


def test_in_memory_stereo_is_the_mean_of_channels() -> None:
    left = np.linspace(-0.5, 0.5, 4000, dtype=np.float32)
    right = np.full(4000, 0.25, dtype=np.float32)
    audio = audio_from_array(np.stack([left, right], axis=1), 16000)
    # librosa.load's own down-mix (librosa.to_mono on its [channels, n] layout), compared exactly.
    np.testing.assert_array_equal(audio.samples, librosa.to_mono(np.stack([left, right])))
    assert (audio.source_rate, audio.source_channels, audio.path) == (16000, 2, None)


def test_in_memory_resampling_equals_librosa_resample() -> None:
    samples = np.random.default_rng(3).standard_normal(44101).astype(np.float32) * 0.1
    expected = librosa.resample(samples, orig_sr=44100, target_sr=16000)  # what librosa.load calls: soxr_hq, fix
    ours = audio_from_array(samples, 44100).samples
    assert ours.shape == expected.shape == (16001,)
    np.testing.assert_array_equal(ours, expected)


# --- errors: each names the file, what was expected and what was found --------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.wav"
    with pytest.raises(InputError, match=rf"{path}: expected a wav/flac/ogg file, found nothing"):
        load_audio(path)


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=rf"{tmp_path}: expected a wav/flac/ogg file, found a folder"):
        load_audio(tmp_path)


@pytest.mark.parametrize("content", [b"this is not audio at all\n" * 40, b"RIFF\x00\x00\x00\x00WAVEjunk", b""])
def test_non_audio_bytes(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "fake.wav"
    path.write_bytes(content)
    with pytest.raises(InputError, match=rf"{path}: expected audio soundfile can decode .* found {len(content)} bytes"):
        load_audio(path)


def test_zero_length_audio(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    soundfile.write(str(path), np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(InputError, match=rf"{path}: expected audio, found zero-length audio"):
        load_audio(path)
    with pytest.raises(InputError, match="zero-length"):
        audio_from_array(np.zeros((0, 2), dtype=np.float32), 16000)


def test_shorter_than_one_mel_window(tmp_path: Path) -> None:
    # 16 mel frames need 1 + n // 200 >= 16, i.e. n >= 3000 samples = 187.5 ms at 16 kHz.
    assert MIN_SAMPLES == 3000
    path = tmp_path / "short.wav"
    soundfile.write(str(path), np.full(2999, 0.1, dtype=np.float32), 16000)
    with pytest.raises(InputError, match=rf"{path}: expected at least 187.5 ms .* found 187.438 ms \(2999 samples"):
        load_audio(path)
    assert audio_from_array(np.full(3000, 0.1, dtype=np.float32), 16000).samples.shape == (3000,)


def test_short_after_resampling_counts_16k_samples() -> None:
    # 8250 samples at 44.1 kHz resample to ceil(8250 * 16000 / 44100) = 2994 samples: too short.
    with pytest.raises(InputError, match=r"found 187.125 ms \(2994 samples at 16 kHz\)"):
        audio_from_array(np.full(8250, 0.1, dtype=np.float32), 44100)


def test_nan_and_inf_samples(tmp_path: Path) -> None:
    values = np.full(4000, 0.1, dtype=np.float32)
    values[[10, 20]] = np.nan
    values[30] = np.inf
    path = tmp_path / "nan.wav"
    soundfile.write(str(path), values, 16000, subtype="FLOAT")
    with pytest.raises(InputError, match=rf"{path}: expected finite samples, found 2 NaN and 1 Inf"):
        load_audio(path)


@pytest.mark.parametrize(
    ("samples", "rate", "message"),
    [
        (np.zeros(4000, dtype=np.float32), 0, "expected a positive integer sample rate, found 0"),
        (np.zeros(4000, dtype=np.float32), 16000.5, "expected a positive integer sample rate, found 16000.5"),
        (np.zeros((2, 2, 4000), dtype=np.float32), 16000, r"expected samples of shape \[n\] or \[n, channels\]"),
        (np.zeros(4000, dtype=np.uint8), 16000, "expected float32, float64, int16 or int32 samples, found dtype uint8"),
    ],
)
def test_bad_in_memory_input(samples: np.ndarray, rate: int, message: str) -> None:
    with pytest.raises(InputError, match=message):
        audio_from_array(samples, rate)
