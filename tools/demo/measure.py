"""The mouth-opening measure: how tall the mouth's interior is in a generated 160 px crop.

numpy only, so the training machine and the CPU measurements use the same function. The interior is drawn dark
(MOUTH_INSIDE) with light upper teeth; lips and skin are neither, so counting dark-or-teeth pixels down the central
columns of the mouth gives the interior height in pixels.
"""

from __future__ import annotations

import numpy as np

DARK_MAX = 100  # every channel below this: the mouth's interior (skin and lips have a channel above 170)
TEETH_MIN = 200  # every channel above this: teeth (skin's blue channel is 150)
HALF_COLUMNS = 8


def mouth_opening(images: np.ndarray, centre_x: float, rows: tuple[int, int]) -> np.ndarray:
    """[F] interior height in pixels for images [F, 3, S, S] in [0, 1] (generator outputs) or uint8 [F, S, S, 3]."""
    array = np.asarray(images)
    if array.ndim == 3:
        array = array[None]
    if array.shape[1] == 3 and array.shape[-1] != 3:
        array = array.transpose(0, 2, 3, 1)
    if array.dtype != np.uint8:
        array = (np.clip(array, 0, 1) * 255).astype(np.uint8)
    c = int(round(centre_x))
    region = array[:, rows[0] : rows[1], c - HALF_COLUMNS : c + HALF_COLUMNS + 1].astype(np.int16)
    inside = (region.max(axis=-1) < DARK_MAX) | (region.min(axis=-1) > TEETH_MIN)
    return inside.sum(axis=1).mean(axis=1).astype(np.float64)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; 0.0 when either side is constant (an unmoving mouth follows nothing)."""
    a = np.asarray(a, np.float64) - np.mean(a)
    b = np.asarray(b, np.float64) - np.mean(b)
    denominator = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denominator) if denominator > 0 else 0.0
