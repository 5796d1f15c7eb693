"""Stage 2: cut the mel spectrogram [T, 80] into one 16-frame window per 25 fps video frame.

Mel frames come at 80 per second (16 kHz / hop 200) and video at 25 fps, so window i starts at mel frame
int(80. * (i / float(25))). The reference code computes that start with Python floats; we evaluate its literal
expression, in its order (divide first, then multiply), not an integer shortcut or a rearranged product, so that
an off-by-one here can only come from a port, never from us.
"""

from __future__ import annotations

import numpy as np

from core.errors import InputError

from core.constants import MEL_BANDS, MEL_FRAMES_PER_SECOND, VIDEO_FPS, WINDOW_FRAMES  # noqa: F401 (re-exported)


def _require_enough_frames(num_mel_frames: int) -> None:
    if num_mel_frames < WINDOW_FRAMES:
        raise InputError(
            f"mel spectrogram: expected at least {WINDOW_FRAMES} mel frames (one window, 187.5 ms of 16 kHz audio), "
            f"found {num_mel_frames}"
        )


def num_windows(num_mel_frames: int) -> int:
    """N = int((T - 16) / 80. * float(25)) + 2: the reference's AudDataset.data_len, in Python floats, its order."""
    _require_enough_frames(int(num_mel_frames))
    return int((int(num_mel_frames) - WINDOW_FRAMES) / float(MEL_FRAMES_PER_SECOND) * float(VIDEO_FPS)) + 2


def window_starts(num_mel_frames: int) -> np.ndarray:
    """First mel frame of every window ([N] int64): int(80. * (i / float(25))), slid back to T - 16 past the end.

    The reference's crop_audio_window expression, vectorised: numpy's float64 division and product are the same
    correctly rounded IEEE operations Python performs on floats, in the same order, and the cast to int truncates
    like int(); so each start equals the literal expression. (80 * i / 25 happens to give the same integers for
    every i below 10**8, but only the reference's own order is the reference.)
    """
    count = num_windows(num_mel_frames)
    index = np.arange(count, dtype=np.int64)
    starts = (float(MEL_FRAMES_PER_SECOND) * (index / float(VIDEO_FPS))).astype(np.int64)
    last_valid_start = int(num_mel_frames) - WINDOW_FRAMES
    return np.minimum(starts, last_valid_start)


def mel_windows(mel: np.ndarray) -> np.ndarray:
    """[T, 80] mel -> encoder input [N, 1, 80, 16] float32: window i is mel[s_i : s_i + 16].T (band 0 in row 0).

    Gathered with one fancy-index, so a long clip costs one copy and no Python loop.
    """
    mel = np.asarray(mel)
    if mel.ndim != 2 or mel.shape[1] != MEL_BANDS:
        raise InputError(f"mel spectrogram: expected shape [T, {MEL_BANDS}], found {list(mel.shape)}")
    starts = window_starts(mel.shape[0])
    frame_index = starts[:, None] + np.arange(WINDOW_FRAMES)[None, :]
    windows = mel[frame_index]  # [N, 16, 80]
    return np.ascontiguousarray(windows.transpose(0, 2, 1)[:, None, :, :], dtype=np.float32)
