"""Mouth targets from phonemes: each espeak phoneme maps to a viseme (opening, width), sampled at 25 fps.

Opening 0 is closed lips, 1 wide open; width 0 is rounded/protruded ("oo"), 1 spread ("ee"). The values sit at
each phoneme's centre and are linearly interpolated between centres, which is how a mouth moves between shapes.
"""

from __future__ import annotations

import numpy as np

from tools.demo.speech import Phoneme

FPS = 25

# (opening, width) per viseme class.
CLOSED = (0.0, 0.5)  # p b m and pauses
LABIODENTAL = (0.12, 0.55)  # f v
OPEN = (0.95, 0.65)  # a, aI, aU, A:, V
MID = (0.6, 0.6)  # E, e@, @, 3
SPREAD = (0.35, 1.0)  # i, I, eI
ROUND = (0.5, 0.05)  # O, 0, oU, u, U, OI
ROUND_CLOSED = (0.2, 0.1)  # w
CONSONANT = (0.25, 0.55)  # t d n l s z k g h r T D S Z tS dZ N j

_BY_PREFIX: tuple[tuple[str, tuple[float, float]], ...] = (
    # Longest prefixes first: "aI" before "a", "oU" before "o", "eI" before "e".
    ("aI", OPEN), ("aU", OPEN), ("eI", SPREAD), ("e@", MID), ("i@", SPREAD), ("oU", ROUND), ("OI", ROUND),
    ("U@", ROUND), ("tS", CONSONANT), ("dZ", CONSONANT),
    ("a", OPEN), ("A", OPEN), ("V", OPEN), ("&", OPEN),
    ("E", MID), ("e", MID), ("@", MID), ("3", MID),
    ("i", SPREAD), ("I", SPREAD), ("j", SPREAD),
    ("O", ROUND), ("0", ROUND), ("o", ROUND), ("u", ROUND), ("U", ROUND),
    ("w", ROUND_CLOSED),
    ("p", CLOSED), ("b", CLOSED), ("m", CLOSED), ("_", CLOSED),
    ("f", LABIODENTAL), ("v", LABIODENTAL),
)


def viseme(phoneme_name: str) -> tuple[float, float]:
    """(opening, width) of one espeak phoneme mnemonic; unknown consonants get the neutral consonant shape."""
    for prefix, shape in _BY_PREFIX:
        if phoneme_name.startswith(prefix):
            return shape
    return CONSONANT


def num_frames(duration_s: float, fps: int = FPS) -> int:
    return int(np.floor(duration_s * fps)) + 1


def mouth_track(
    phonemes: list[Phoneme], duration_s: float, fps: int = FPS, frames: int | None = None
) -> np.ndarray:
    """[F, 2] (opening, width) at t = i / fps, interpolated between phoneme centres; closed before and after.

    ``frames`` defaults to every frame inside the clip; the lane's N + 2 output frames may ask for one or two more.
    """
    times = np.arange(num_frames(duration_s, fps) if frames is None else frames) / fps
    centres = [0.0] + [(p.start_s + p.end_s) / 2 for p in phonemes] + [max(duration_s, times[-1])]
    shapes = [CLOSED] + [viseme(p.name) for p in phonemes] + [CLOSED]
    centres_arr = np.maximum.accumulate(np.asarray(centres, dtype=np.float64))  # np.interp needs non-decreasing x
    shapes_arr = np.asarray(shapes, dtype=np.float64)
    track = np.stack([np.interp(times, centres_arr, shapes_arr[:, k]) for k in range(2)], axis=1)
    return track.astype(np.float32)
