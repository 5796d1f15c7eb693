"""Mouth measures from the generated crops alone: does the mouth move, does it follow the audio, is it the same?

Whole-crop metrics hide the failure this project exists for: the demo's untrained encoder lane reads cosine 0.997
against the reference on generator outputs, because the face around the mouth is the same picture; only the mouth
is wrong, and it barely moves. So the mouth gets its own numbers, computed from images only (no face model):

- an opening signal per frame: the height in pixels of the mouth's interior (dark pixels, or bright teeth) down the
  central columns of the lower face;
- its correlation with the clip's loudness envelope, the audio/video offset that maximises it, and its range;
- PSNR / SSIM / mean absolute difference on the lower-face region next to the whole-crop ones;
- an audio-dependence check for lanes with models: the lane rerun on silence and on the clip reversed in time.

Geometry is relative to the crop (the reference's crop runs from the nose bridge to below the chin), so it holds for
160 and 320 px generators alike.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

from core.constants import SAMPLE_RATE, VIDEO_FPS
from core.errors import InputError

# The band of crop rows where the mouth's interior can appear, and the columns searched, as fractions of the size.
MOUTH_ROWS = (0.225, 0.725)
MOUTH_HALF_WIDTH = 0.05
# The lower-face region for image metrics (rows, columns), as fractions of the size.
LOWER_FACE = ((0.45, 0.95), (0.2, 0.8))
DARK_MAX = 100  # every channel below: the interior of an open mouth (skin and lips are far brighter)
TEETH_MIN = 200  # every channel above: teeth
SAMPLES_PER_FRAME = SAMPLE_RATE // VIDEO_FPS  # 640
WINDOW_SAMPLES = 16 * 200  # one encoder window: 16 mel frames
MAX_OFFSET = 6  # frames searched for the audio/video offset
BARELY_MOVES_PX = 1.5  # a range of motion below this (p95 - p5) is a mouth that barely moves
BARELY_MOVES_FRACTION = 0.35  # ... or below this fraction of the reference lane's range


def _as_uint8_hwc(crops: np.ndarray) -> np.ndarray:
    """[F,3,S,S] float in [0,1] (generator outputs, truncated like the reference) or [F,S,S,3] uint8 -> uint8 HWC."""
    array = np.asarray(crops)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4:
        raise InputError(f"mouth: expected crops [F,3,S,S] or [F,S,S,3], found {list(array.shape)}")
    if array.shape[1] == 3 and array.shape[-1] != 3:
        array = array.transpose(0, 2, 3, 1)
    if array.shape[-1] != 3:
        raise InputError(f"mouth: expected 3 colour channels, found {list(array.shape)}")
    if array.dtype != np.uint8:
        array = (np.clip(np.nan_to_num(array.astype(np.float32)), 0.0, 1.0) * np.float32(255.0)).astype(np.uint8)
    return array


def mouth_opening(crops: np.ndarray) -> np.ndarray:
    """[F] interior height in pixels: dark-or-teeth pixels counted down each central column, averaged over columns."""
    images = _as_uint8_hwc(crops)
    size = images.shape[1]
    r0, r1 = (int(round(f * size)) for f in MOUTH_ROWS)
    centre = images.shape[2] / 2.0
    half = max(1, int(round(MOUTH_HALF_WIDTH * images.shape[2])))
    c0, c1 = int(round(centre)) - half, int(round(centre)) + half + 1
    region = images[:, r0:r1, c0:c1].astype(np.int16)
    inside = (region.max(axis=-1) < DARK_MAX) | (region.min(axis=-1) > TEETH_MIN)
    return inside.sum(axis=1).mean(axis=1).astype(np.float64)


def loudness_envelope(samples: np.ndarray, frames: list[int] | np.ndarray) -> np.ndarray:
    """[F] loudness (RMS in dB) of the audio the generator hears at each output frame.

    Output frame i is drawn from padded feature row i, which is encoder window i - 1: mel frames from
    int(80 (i-1) / 25), 16 of them, i.e. samples [(i-1)·640, (i-1)·640 + 3200).
    """
    x = np.asarray(samples, np.float64)
    out = np.empty(len(frames))
    for row, i in enumerate(frames):
        start = max(0, (int(i) - 1) * SAMPLES_PER_FRAME)
        chunk = x[start:start + WINDOW_SAMPLES]
        rms = math.sqrt(float(np.mean(chunk * chunk))) if chunk.size else 0.0
        out[row] = 20.0 * math.log10(max(rms, 1e-5))
    return out


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; 0.0 when either side is constant (a mouth that never moves follows nothing)."""
    a = np.asarray(a, np.float64) - np.mean(a)
    b = np.asarray(b, np.float64) - np.mean(b)
    denominator = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denominator) if denominator > 0 else 0.0


@dataclass
class MouthMeasure:
    """One lane's mouth over the measured frames."""

    lane: str
    frames: list[int]
    opening: list[float]  # px, per frame
    range_px: float  # p95 - p5 of the opening
    mean_px: float
    correlation: float  # with the loudness envelope, at offset 0
    best_offset: int  # frames; positive: the mouth follows the audio this many frames late
    best_correlation: float
    moves: bool
    summary: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def measure_mouth(lane: str, crops: np.ndarray, frames: list[int], samples: np.ndarray,
                  reference_range: float | None = None) -> MouthMeasure:
    """The mouth-opening signal of ``crops`` (output frames ``frames``) and how it follows the clip's loudness."""
    if len(frames) != len(crops):
        raise InputError(f"mouth: expected one crop per frame, found {len(crops)} crops for {len(frames)} frames")
    opening = mouth_opening(crops)
    p5, p95 = np.percentile(opening, [5, 95]) if opening.size else (0.0, 0.0)
    range_px = float(p95 - p5)
    correlations = {}
    for offset in range(-MAX_OFFSET, MAX_OFFSET + 1):
        shifted = [max(0, int(i) - offset) for i in frames]
        correlations[offset] = pearson(opening, loudness_envelope(samples, shifted))
    best_offset = max(correlations, key=lambda o: (correlations[o], -abs(o)))
    threshold = BARELY_MOVES_PX
    if reference_range is not None and reference_range > 0:
        threshold = max(threshold, BARELY_MOVES_FRACTION * reference_range)
    moves = range_px >= threshold
    if not moves:
        summary = (f"the mouth barely moves: range {range_px:.1f} px over {len(frames)} frames"
                   + (f" against {reference_range:.1f} px for the reference" if reference_range else ""))
    else:
        summary = (f"the mouth moves over {range_px:.1f} px and follows the loudness at r = "
                   f"{correlations[best_offset]:.2f} (offset {best_offset:+d} frames)")
    return MouthMeasure(lane, list(map(int, frames)), opening.round(3).tolist(), range_px, float(opening.mean()),
                        correlations[0], best_offset, correlations[best_offset], moves, summary)


# -- image metrics -----------------------------------------------------------------------------------------------
def _gray(images: np.ndarray) -> np.ndarray:
    hwc = _as_uint8_hwc(images).astype(np.float64)
    return hwc @ np.array([0.114, 0.587, 0.299])  # BGR -> luma (BT.601)


def ssim(a: np.ndarray, b: np.ndarray, window: int = 7) -> float:
    """Mean structural similarity of two grey images (0-255), uniform 7x7 windows, sample covariances.

    The constants are Wang et al.'s (K1 0.01, K2 0.03, L 255); windows cover only pixels inside the image.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise InputError(f"ssim: expected two grey images of one shape, found {list(a.shape)} and {list(b.shape)}")
    if min(a.shape) < window:
        raise InputError(f"ssim: expected images of at least {window}x{window} px, found {list(a.shape)}")
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    n = window * window

    def mean(x: np.ndarray) -> np.ndarray:
        return cv2.blur(x, (window, window), borderType=cv2.BORDER_REFLECT)

    pad = window // 2
    ma, mb = mean(a), mean(b)
    cov = n / (n - 1)
    va, vb, vab = cov * (mean(a * a) - ma * ma), cov * (mean(b * b) - mb * mb), cov * (mean(a * b) - ma * mb)
    s = ((2 * ma * mb + c1) * (2 * vab + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2))
    return float(s[pad:-pad, pad:-pad].mean())


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(peak * peak / mse)


def lower_face(images: np.ndarray) -> np.ndarray:
    """The lower-face region of uint8 HWC crops, where the generated mouth is."""
    hwc = _as_uint8_hwc(images)
    (r0, r1), (c0, c1) = LOWER_FACE
    h, w = hwc.shape[1:3]
    return hwc[:, int(r0 * h):int(r1 * h), int(c0 * w):int(c1 * w)]


@dataclass
class RegionMetrics:
    """Image agreement of a lane's crops with the reference's, on the whole crop and on the mouth region."""

    psnr: float
    ssim: float
    mad: float  # mean absolute difference in grey levels (0-255, all channels)
    mouth_psnr: float
    mouth_ssim: float
    mouth_mad: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def region_metrics(lane_crops: np.ndarray, reference_crops: np.ndarray) -> RegionMetrics:
    """PSNR, SSIM and MAD between two lanes' crops (same frames), whole crop and lower face."""
    a, b = _as_uint8_hwc(lane_crops), _as_uint8_hwc(reference_crops)
    if a.shape != b.shape:
        raise InputError(f"mouth metrics: expected crops of one shape, found {list(a.shape)} and {list(b.shape)}")
    ma, mb = lower_face(a), lower_face(b)

    def figures(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
        gx, gy = _gray(x), _gray(y)
        return (psnr(x, y), float(np.mean([ssim(p, q) for p, q in zip(gx, gy)])),
                float(np.abs(x.astype(np.float64) - y).mean()))

    whole, mouth = figures(a, b), figures(ma, mb)
    return RegionMetrics(*whole, *mouth)


# -- audio dependence --------------------------------------------------------------------------------------------
@dataclass
class AudioDependence:
    """Whether a lane's output changes when its audio does (silence, the clip reversed in time)."""

    ignored: bool
    features_change_silence: float  # relative max difference of features: clip vs silence
    features_change_reversed: float
    mouth_change_silence: float | None  # max |opening difference| in px over the checked frames
    mouth_change_reversed: float | None
    explanation: str
    details: dict[str, Any] = field(default_factory=dict)
    # Which part does not hear: "encoder" (features unchanged), "generator" (features change, outputs do not), or
    # None when the lane follows its audio.
    where: str | None = None
    outputs_change: float | None = None  # max |output difference| (0-1 scale) over silence and reversed

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


UNCHANGED_REL = 1e-4  # features that move less than this (relative) did not hear the audio
UNCHANGED_PX = 0.5
UNCHANGED_OUTPUT = 1e-4  # generator outputs (0-1) that move less than this did not hear the audio tensor


def audio_dependence(lane: Any, frames: list[int]) -> AudioDependence | None:
    """Rerun a lane's own models on silence and on the reversed clip; None for lanes without an encoder model.

    A lane whose features (and mouth) come out the same whatever the audio is flagged ``ignored``: the Go server
    once returned the training clip's features for any input, so its mouth moved during silence.
    """
    from core.interfaces import Encoder
    from pipeline.audio import audio_from_array
    from pipeline.lane import Lane

    if not isinstance(lane.encoder, Encoder) or getattr(lane, "tensor_dump", None) is not None \
            or lane.spec.mel is not None:
        return None  # a dump (features, tensors, or the mel the encoder reads) does not change with the audio
    clip = lane.audio.samples
    variants = {"silence": np.zeros_like(clip), "reversed": np.ascontiguousarray(clip[::-1])}
    base = lane.features()
    peak = max(float(np.abs(base).max()), 1e-12)
    change: dict[str, float] = {}
    mouth: dict[str, float | None] = {}
    can_draw = lane.generator is not None and lane.avatar is not None and not lane.shows_dumped_frames \
        and getattr(lane, "input_dump", None) is None
    outputs = np.stack([lane.raw_output(i) for i in frames]) if can_draw and frames else None
    opening = mouth_opening(outputs) if outputs is not None else None
    output_change = 0.0
    for name, samples in variants.items():
        other = Lane(lane.spec, audio_from_array(samples, SAMPLE_RATE), lane.avatar, pad_mode=lane.pad_mode,
                     models=lane.models)
        feats = other.features()
        change[name] = float(np.abs(feats.astype(np.float64) - base).max() / peak) if feats.shape == base.shape \
            else math.inf
        if outputs is not None and opening is not None:
            other_outputs = np.stack([other.raw_output(i) for i in frames])
            output_change = max(output_change, float(np.abs(other_outputs.astype(np.float64) - outputs).max()))
            mouth[name] = float(np.abs(mouth_opening(other_outputs) - opening).max())
        else:
            mouth[name] = None
    features_same = all(v <= UNCHANGED_REL for v in change.values())
    mouth_same = all(v is not None and v <= UNCHANGED_PX for v in mouth.values())
    ignored = features_same and (opening is None or mouth_same)
    where = "encoder" if ignored else None
    if ignored:
        explanation = (f"its features do not change on silence (relative change {change['silence']:.2g}) nor on the "
                       f"reversed clip ({change['reversed']:.2g})"
                       + (", and neither does the mouth" if opening is not None else ""))
    elif outputs is not None and output_change <= UNCHANGED_OUTPUT:
        # The encoder hears the audio, the generator does not use what it hears: the mouth is the same on silence.
        ignored, where = True, "generator"
        explanation = (f"its generator ignores the audio tensor: the features change on silence (by "
                       f"{change['silence']:.2g} of their peak) but the generated frames do not (max change "
                       f"{output_change:.2g})")
    else:
        explanation = (f"its output follows the audio (features change by {change['silence']:.2g} on silence, "
                       f"{change['reversed']:.2g} reversed, relative to their peak)")
    return AudioDependence(ignored, change["silence"], change["reversed"], mouth["silence"], mouth["reversed"],
                           explanation, {"frames": list(frames)}, where,
                           output_change if outputs is not None else None)
