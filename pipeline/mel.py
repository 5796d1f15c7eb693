"""Stage 1 numerics: 16 kHz samples -> the Wav2Lip-style normalised log-mel spectrogram [T, 80].

Written in plain numpy (no librosa at run time) so the app can show, and the tests can pin, every constant the
ported pipelines disagree on: the mel scale, the FFT size, the centre padding and the dB normalisation.
Every step is the reference's own arithmetic, so the result equals the reference's (SyncTalk_2D utils.py:
scipy lfilter, librosa.stft, np.dot with librosa's float32 filter bank, its dB and normalisation expressions)
bit for bit: the magnitudes and mel values in float64, and the float32 the encoder sees. tests/test_mel.py checks
that against the reference's own calls (tests/reference_calls.py).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from core.errors import InputError

from core.constants import HOP_LENGTH, MEL_BANDS, SAMPLE_RATE

N_FFT = 800
WIN_LENGTH = 800
N_MELS = MEL_BANDS
FMIN = 55.0
FMAX = 7600.0
PREEMPHASIS = 0.97
MIN_LEVEL_DB = -100.0
REF_LEVEL_DB = 20.0
MAX_ABS_VALUE = 4.0
# The reference writes its floor as np.exp(-5 * np.log(10)), which is 9.99999999999998e-06, not 1e-5. Anything
# that low is clipped to -4 afterwards, so it never shows; it is kept literal so no step differs from the reference.
AMPLITUDE_FLOOR = float(np.exp(-5 * np.log(10)))

PadMode = Literal["constant", "reflect"]
PAD_MODES: tuple[str, ...] = ("constant", "reflect")

# Slaney's mel scale: linear (200/3 Hz per mel) up to 1 kHz, logarithmic above, with the log step chosen so that 6.4x in frequency spans 27 mels. HTK's 2595*log10(1+f/700) is a different scale,
# and using it is one of the port divergences this app exposes.
_SLANEY_HZ_PER_MEL = 200.0 / 3.0
_SLANEY_BREAK_HZ = 1000.0
_SLANEY_BREAK_MEL = _SLANEY_BREAK_HZ / _SLANEY_HZ_PER_MEL
_SLANEY_LOG_STEP = np.log(6.4) / 27.0


def hz_to_slaney_mel(hz: np.ndarray | float) -> np.ndarray:
    """Frequency in Hz -> Slaney mel (linear below 1 kHz, logarithmic above)."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / _SLANEY_HZ_PER_MEL
    with np.errstate(divide="ignore"):
        logarithmic = _SLANEY_BREAK_MEL + np.log(np.maximum(hz, 1e-300) / _SLANEY_BREAK_HZ) / _SLANEY_LOG_STEP
    return np.where(hz >= _SLANEY_BREAK_HZ, logarithmic, linear)


def slaney_mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Slaney mel -> frequency in Hz; the exact inverse of hz_to_slaney_mel."""
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * _SLANEY_HZ_PER_MEL
    logarithmic = _SLANEY_BREAK_HZ * np.exp(_SLANEY_LOG_STEP * (mel - _SLANEY_BREAK_MEL))
    return np.where(mel >= _SLANEY_BREAK_MEL, logarithmic, linear)


@lru_cache(maxsize=1)
def _cached_filterbank() -> np.ndarray:
    fft_bin_hz = np.linspace(0.0, SAMPLE_RATE / 2.0, N_FFT // 2 + 1)
    # N_MELS triangles need N_MELS + 2 edge frequencies, equally spaced on the mel scale.
    edges_mel = np.linspace(hz_to_slaney_mel(FMIN), hz_to_slaney_mel(FMAX), N_MELS + 2)
    edges_hz = slaney_mel_to_hz(edges_mel)
    left, centre, right = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (fft_bin_hz[None, :] - left) / (centre - left)
    falling = (right - fft_bin_hz[None, :]) / (right - centre)
    triangles = np.clip(np.minimum(rising, falling), 0.0, None)
    # Slaney area normalisation: each triangle gets height 2 / (its width in Hz), so every band has the same area
    # and a flat spectrum gives a flat mel spectrum.
    area_norm = 2.0 / (right - left)
    # float32, rounded where librosa.filters.mel rounds (its default dtype, and the bank the reference multiplies
    # with): the triangles are stored into a float32 array, then scaled in place by the float64 area factors, so
    # each weight is rounded twice. Float64 weights moved about 15 % of the float32 mel values by one ULP against
    # the reference; rounding only the final product still left 184 weights one float32 ULP off.
    bank = triangles.astype(np.float32)
    bank *= area_norm
    bank.setflags(write=False)
    return bank


def mel_filterbank() -> np.ndarray:
    """The [80, 401] float32 mel filter bank (Slaney scale and area normalisation, 55-7600 Hz, n_fft 800).

    float32 because that is the bank the reference multiplies with (librosa.filters.mel's default dtype); the
    product itself runs in float64 (numpy promotes it against the float64 magnitudes), as in the reference.
    Built once and cached because every lane of every session uses the same one; the returned array is read-only
    so that no caller can corrupt the shared copy.
    """
    return _cached_filterbank()


@lru_cache(maxsize=1)
def _cached_hann() -> np.ndarray:
    # 0.5 - 0.5 cos(2 pi n / 800), evaluated the way scipy.signal.get_window("hann", 800) (librosa.stft's window)
    # evaluates it: 0.5 + 0.5 cos(x) on 801 points spaced evenly over [-pi, pi], the last one dropped. The textbook
    # expression rounds about 500 of the 800 weights differently, which moved most STFT magnitudes by an ULP.
    angles = np.linspace(-np.pi, np.pi, WIN_LENGTH + 1)[:WIN_LENGTH]
    window = 0.5 + 0.5 * np.cos(angles)
    window.setflags(write=False)
    return window


def hann_window() -> np.ndarray:
    """The periodic Hann window of 800 samples (denominator 800, not 799), as scipy's get_window('hann') gives.

    Periodic rather than symmetric because that is what the reference STFT uses; the symmetric one shifts every
    magnitude slightly.
    """
    return _cached_hann()


def num_mel_frames(num_samples: int) -> int:
    """T = 1 + len // 200: the centred STFT puts one frame on every hop, including one at the very end."""
    return 1 + int(num_samples) // HOP_LENGTH


def preemphasis(samples: np.ndarray) -> np.ndarray:
    """y[n] = x[n] - 0.97 x[n-1] with y[0] = x[0] (float64): boosts highs the way the Wav2Lip front end does."""
    x = np.asarray(samples, dtype=np.float64)
    y = x.copy()
    y[1:] -= PREEMPHASIS * x[:-1]
    return y


def _centre_padded(samples: np.ndarray, pad_mode: PadMode) -> np.ndarray:
    """Pre-emphasised samples with 400 samples of centre padding on each side (float64).

    For zero padding the pre-emphasis is written straight into the padded buffer: a minute of audio is a million
    samples, and skipping two full-length copies is a measurable part of the mel budget.
    """
    x = np.asarray(samples)
    margin = N_FFT // 2
    if pad_mode == "reflect":
        return np.pad(preemphasis(x), margin, mode="reflect")
    padded = np.zeros(x.shape[0] + 2 * margin, dtype=np.float64)
    body = padded[margin : margin + x.shape[0]]
    body[:] = x
    body[1:] -= PREEMPHASIS * body[:-1]  # the right side is evaluated first, from the not yet emphasised samples
    return padded


def stft_magnitude(samples: np.ndarray, pad_mode: PadMode = "constant", emphasise: bool = False) -> np.ndarray:
    """|STFT| as [T, 401] float64: 400-sample centre padding, 800-point periodic-Hann frames every 200 samples.

    Frames are strided views of the padded signal, transformed in one np.fft.rfft call, so a minute of audio needs
    no Python loop. With emphasise=True the 0.97 pre-emphasis is applied first (what melspectrogram does).
    """
    if emphasise:
        padded = _centre_padded(samples, pad_mode)
    else:
        padded = np.pad(np.asarray(samples, dtype=np.float64), N_FFT // 2, mode=pad_mode)
    frames = sliding_window_view(padded, N_FFT)[::HOP_LENGTH]
    windowed = np.multiply(frames, hann_window())
    return np.abs(np.fft.rfft(windowed, n=N_FFT, axis=1))


def normalise_db(mel_magnitude: np.ndarray) -> np.ndarray:
    """Magnitude -> 20 log10(max(1e-5, M)) - 20 -> clip(8 ((S + 100) / 100) - 4, -4, 4), as a new float64 array.

    The reference's expressions (_amp_to_db, then _normalize: ``(2 * 4.) * ((S - -100) / (--100)) - 4.``) in the
    reference's order, one operation at a time in place (a minute of audio is 384,000 values). A shortcut such as
    ln(m) * 20 / ln 10 or a folded 8 / 100 factor changes half of the float64 values by an ULP.
    """
    level_db = np.maximum(mel_magnitude, AMPLITUDE_FLOOR)
    np.log10(level_db, out=level_db)
    level_db *= 20
    level_db -= REF_LEVEL_DB
    scaled = level_db
    scaled -= MIN_LEVEL_DB  # S - -100
    scaled /= -MIN_LEVEL_DB  # / (--100)
    scaled *= 2 * MAX_ABS_VALUE  # (2 * 4.) * (...)
    scaled -= MAX_ABS_VALUE
    return np.clip(scaled, -MAX_ABS_VALUE, MAX_ABS_VALUE, out=scaled)


def melspectrogram(samples: np.ndarray, pad_mode: PadMode = "constant") -> np.ndarray:
    """Mono 16 kHz samples -> normalised log-mel spectrogram [T, 80] float32, T = 1 + len // 200.

    pad_mode "constant" (zeros) is what librosa >= 0.9 does and what the models were used with; "reflect"
    reproduces librosa < 0.9 and only changes the first and last two frames.
    """
    if pad_mode not in PAD_MODES:
        raise InputError(f"mel pad mode: expected one of {', '.join(PAD_MODES)}, found {pad_mode!r}")
    x = np.asarray(samples)
    if x.ndim != 1:
        raise InputError(f"mel input: expected mono samples of shape [n], found shape {list(x.shape)}")
    if x.size == 0:
        raise InputError("mel input: expected at least one sample, found an empty array")
    if pad_mode == "reflect" and x.size <= N_FFT // 2:
        raise InputError(
            f"mel input: reflect padding needs more than {N_FFT // 2} samples, found {x.size}"
        )
    magnitude = stft_magnitude(x, pad_mode, emphasise=True)
    return mel_from_magnitude(magnitude)


def mel_from_magnitude(magnitude: np.ndarray) -> np.ndarray:
    """|STFT| rows [n, 401] -> normalised log-mel rows [n, 80] float32; each row depends only on its own frame.

    Shared by melspectrogram and the chunked front end (pipeline/streaming.py), so a long clip's mel computed in
    chunks runs exactly these operations and stays bit-identical to the whole-clip mel.
    """
    # The reference's np.dot(_mel_basis, |D|): the float32 bank times the [401, T] magnitudes, summed in float64 by
    # the same BLAS call on the same memory layout (magnitude.T of a C-ordered [T, 401] is the reference's
    # Fortran-ordered |D|). Skipping the all-zero bins, or multiplying in the other orientation, sums in another
    # order and changes a few hundred float64 values per clip by an ULP.
    mel = np.dot(mel_filterbank(), np.asarray(magnitude, dtype=np.float64).T).T
    return normalise_db(mel).astype(np.float32)
