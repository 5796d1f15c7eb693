"""Name the way a port diverges from the reference, by reproducing it.

`report` used to say *where* two lanes first differ; a person fixing a port needs *what* differs: a frame late, a
wrong mel scale, a tiled audio window, a crop in RGB order, a nearest-neighbour paste-back. Each of those leaves a
fingerprint that can be reproduced exactly, so the diagnosis here works by construction: at the first stage where the
lane's arrays leave the reference's, it applies every known divergence of that stage to the *reference's* arrays (a
shift, a scale, reflect padding, an HTK mel bank, a channel swap, a nearest-neighbour paste, ...) and reports the
candidate that reproduces the lane, with the residual that is left. When two candidates reproduce it equally, both
are named. When none does, the verdict is honest about it (`unknown`, or `front_end` "cause not identified").

Agreement is judged per stage by relative error and agreement, not by one absolute bound: fp16 arithmetic on
features spanning 0-5 leaves ~2e-3, on generator outputs in [0, 1] a few 1e-2 at the worst pixel but a PSNR far
above what any real divergence leaves. A correct fp16 port is `precision`, never a divergence.

The vocabulary (README "report") is fixed: see KINDS. Stage arrays come in as plain numpy (LaneArrays); what can only
be known from model files (whether the weights look untrained, from backends/inspection.py) or from rerunning a
lane on other audio (pipeline/mouth.py) is passed in as evidence, so this module needs neither backends nor models.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from core.constants import CONTEXT_ROWS, HOP_LENGTH, MEL_BANDS, SAMPLE_RATE
from pipeline.crop import CROP_MARGIN, INTERPOLATION, MASK_EXTENT, MASK_ORIGIN, CropBox, output_to_uint8
from pipeline.mel import FMAX, FMIN, hz_to_slaney_mel, normalise_db, preemphasis, slaney_mel_to_hz

KINDS = (
    "match", "precision", "scale", "weights", "front_end", "padding_edges", "time_shift", "window", "audio_ignored",
    "crop", "paste_back", "non_finite", "unknown",
)
STAGES = ("mel", "features", "tensors", "inputs", "outputs", "frames")
PASSING_KINDS = ("match", "precision")

# Agreement levels. Relative error = max |a - b| / max |b|; mean relative = mean |a - b| / mean |b|.
MATCH_REL = 1e-4  # fp32 ports differ by ~1e-6 relative (ONNX vs PyTorch on the demo: 7e-7)
PRECISION_REL = 2e-2  # fp16 keeps 11 bits: ~5e-4 per operation, a few 1e-3 after a network
PRECISION_MEAN_REL = 5e-3
PRECISION_COSINE = 0.9999
IMAGE_MATCH_ABS = 1e-4  # outputs/inputs in [0, 1]
IMAGE_PRECISION_PSNR = 40.0  # dB: fp16 generators stay above ~50 dB; a wrong crop or model falls far below
INPUT_PRECISION_ABS = 1e-3  # generator inputs are pixels / 255: fp16 storage moves them by <= 2.5e-4
FRAME_MATCH_ABS = 1.0  # grey levels: truncation to uint8 turns a 1e-6 difference into 1 level
EQUAL_EXPLANATION = 1.5  # candidates within this factor of the best residual "explain equally"
MAX_SHIFT = 12  # frames or rows searched for a time shift
EDGE_ROWS = 3  # "only the first/last frames differ" means within this many of each end


@dataclass
class LaneArrays:
    """One lane's arrays at each stage it can produce (None where it cannot), for the frames listed."""

    name: str
    mel: np.ndarray | None = None  # [T, 80]
    features: np.ndarray | None = None  # [N+2, 512], after the lane's scale
    frames: list[int] = field(default_factory=list)  # output frames the per-frame arrays below hold, in order
    tensors: np.ndarray | None = None  # [F, 32, 16, 16]
    inputs: np.ndarray | None = None  # [F, 6, S, S]
    outputs: np.ndarray | None = None  # [F, 3, S, S] in [0, 1]
    images: np.ndarray | None = None  # [F, H, W, 3] uint8 final frames
    dumped: tuple[str, ...] = ()  # stages that come from another program's dump

    def stage(self, stage: str) -> np.ndarray | None:
        return self.images if stage == "frames" else getattr(self, stage)


@dataclass
class ReferenceContext:
    """What reproducing a candidate needs beyond the reference lane's arrays."""

    samples: np.ndarray | None = None  # the clip, mono 16 kHz (mel candidates)
    pad_mode: str = "constant"
    source: tuple[np.ndarray, int] | None = None  # the clip at its own rate, mono (resampling candidates)
    templates: Callable[[int], tuple[np.ndarray, CropBox]] | None = None  # output frame -> (template frame, box)


@dataclass
class Verdict:
    """A lane's diagnosis: the first stage that diverges, the kind (KINDS), a sentence, and the figures."""

    first_divergent_stage: str | None
    kind: str
    explanation: str
    evidence: dict[str, Any] = field(default_factory=dict)
    also: list[str] = field(default_factory=list)  # other kinds that explain the data equally well
    stages: dict[str, str] = field(default_factory=dict)  # per stage compared: match, precision, diverges, follows...

    @property
    def passed(self) -> bool:
        return self.kind in PASSING_KINDS


# -- agreement --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Agreement:
    level: str  # "match", "precision", "differs", "non_finite", "shape"
    figures: dict[str, float]

    @property
    def close(self) -> bool:
        return self.level in PASSING_KINDS


def _figures(a: np.ndarray, b: np.ndarray, peak: float | None) -> dict[str, float]:
    a64, b64 = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    diff = np.abs(a64 - b64)
    max_abs = float(diff.max()) if diff.size else 0.0
    mean_abs = float(diff.mean()) if diff.size else 0.0
    ref_peak = float(np.abs(b64).max()) if b64.size else 0.0
    ref_mean = float(np.abs(b64).mean()) if b64.size else 0.0
    na, nb = float(np.linalg.norm(a64)), float(np.linalg.norm(b64))
    cosine = float(a64 @ b64 / (na * nb)) if na > 0 and nb > 0 else (1.0 if na == nb == 0 else 0.0)
    figures = {
        "max_abs": max_abs,
        "mean_abs": mean_abs,
        "rel": max_abs / ref_peak if ref_peak > 0 else (0.0 if max_abs == 0 else math.inf),
        "mean_rel": mean_abs / ref_mean if ref_mean > 0 else (0.0 if mean_abs == 0 else math.inf),
        "cosine": cosine,
    }
    if peak is not None:
        mse = float((diff**2).mean()) if diff.size else 0.0
        figures["psnr"] = math.inf if mse == 0 else 10.0 * math.log10(peak * peak / mse)
    return figures


def agreement(stage: str, a: np.ndarray, b: np.ndarray) -> Agreement:
    """How closely a lane's array ``a`` follows the reference's ``b`` at ``stage``: match, precision or differs.

    Numeric stages (mel, features, tensors) use relative error, mean relative error and cosine, so the verdict does
    not depend on the range of the numbers (the scale-error lane's features are 200x smaller than the reference's).
    Image stages use PSNR: fp16 leaves an occasional pixel a few percent off but a PSNR above 40 dB.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return Agreement("shape", {})
    if not np.isfinite(a).all() or not np.isfinite(b).all():
        return Agreement("non_finite", {"lane_non_finite": float((~np.isfinite(a)).sum()),
                                        "reference_non_finite": float((~np.isfinite(b)).sum())})
    if stage == "frames":
        f = _figures(a, b, 255.0)
        if f["max_abs"] <= FRAME_MATCH_ABS:
            return Agreement("match", f)
        ok = f["psnr"] >= IMAGE_PRECISION_PSNR and f["mean_abs"] <= 1.0
        return Agreement("precision" if ok else "differs", f)
    if stage in ("inputs", "outputs"):
        f = _figures(a, b, 1.0)
        if f["max_abs"] <= IMAGE_MATCH_ABS:
            return Agreement("match", f)
        if stage == "inputs":
            return Agreement("precision" if f["max_abs"] <= INPUT_PRECISION_ABS else "differs", f)
        ok = f["psnr"] >= IMAGE_PRECISION_PSNR and f["cosine"] >= 0.999
        return Agreement("precision" if ok else "differs", f)
    f = _figures(a, b, None)
    if f["rel"] <= MATCH_REL:
        return Agreement("match", f)
    ok = f["rel"] <= PRECISION_REL and f["mean_rel"] <= PRECISION_MEAN_REL and f["cosine"] >= PRECISION_COSINE
    return Agreement("precision" if ok else "differs", f)


@dataclass
class Candidate:
    """One reproduced divergence: its kind, what it is, the residual against the lane, and its own figures."""

    kind: str
    cause: str
    residual: Agreement
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def score(self) -> float:
        f = self.residual.figures
        return f.get("mean_rel", math.inf) if "psnr" not in f else f.get("mean_abs", math.inf)


def _best(candidates: list[Candidate]) -> list[Candidate]:
    """The candidates that reproduce the lane (match or precision), best first; those within a factor of the best."""
    explaining = sorted((c for c in candidates if c.residual.close), key=lambda c: c.score)
    if not explaining:
        return []
    best = explaining[0].score
    return [c for c in explaining if c.score <= max(best * EQUAL_EXPLANATION, best + 1e-12)]


def _try(stage: str, lane: np.ndarray, kind: str, cause: str, reproduced: np.ndarray | None,
         **details: Any) -> Candidate | None:
    if reproduced is None or reproduced.shape != lane.shape:
        return None
    return Candidate(kind, cause, agreement(stage, lane, reproduced), details)


def _describe_figures(f: dict[str, float]) -> str:
    parts = []
    if "max_abs" in f:
        parts.append(f"max abs {f['max_abs']:.3g}")
    if "rel" in f and "psnr" not in f:
        parts.append(f"relative {f['rel']:.2g}")
    if "psnr" in f:
        parts.append(f"PSNR {f['psnr']:.1f} dB")
    if "cosine" in f:
        parts.append(f"cosine {f['cosine']:.5f}")
    return ", ".join(parts)


# -- scale and shift (any numeric stage) -------------------------------------------------------------------------
def _scale_candidate(stage: str, lane: np.ndarray, ref: np.ndarray) -> Candidate | None:
    """lane ≈ k · reference for one k, with the residual judged relative to the lane (robust to fp16 noise)."""
    a, b = lane.astype(np.float64).ravel(), ref.astype(np.float64).ravel()
    bb = float(b @ b)
    if bb == 0:
        return None
    k = float(a @ b) / bb
    if not math.isfinite(k) or k <= 0 or abs(k - 1.0) <= 1e-3:
        return None
    zero_agreement = float(np.mean((a == 0) == (b == 0)))
    return _try(stage, lane, "scale", f"a scaled copy of the reference (one uniform factor): lane ≈ {k:.4g} × "
                "reference", (ref * k).astype(np.float64), factor=k, correction=1.0 / k, zero_agreement=zero_agreement)


def _shift_rows(stage: str, lane: np.ndarray, ref: np.ndarray, unit: str, skip_edges: int = 1) -> list[Candidate]:
    """lane[t] ≈ ref[t + s] over the rows both have (edges left out): a signed offset of s rows."""
    out = []
    n = min(lane.shape[0], ref.shape[0])
    for s in range(-MAX_SHIFT, MAX_SHIFT + 1):
        if s == 0:
            continue
        lo = max(skip_edges, -s + skip_edges)
        hi = min(n - skip_edges, n - s - skip_edges)
        if hi - lo < max(8, n // 4):
            continue
        residual = agreement(stage, lane[lo:hi], ref[lo + s : hi + s])
        direction = "later" if s > 0 else "earlier"
        out.append(Candidate("time_shift", f"shifted by {s:+d} {unit}s (the lane shows the reference's {unit} "
                             f"{abs(s)} {direction})", residual, {"offset": s, "unit": unit}))
    return out


def _edges_only(stage: str, lane: np.ndarray, ref: np.ndarray) -> Candidate | None:
    """Only the first/last EDGE_ROWS rows differ: the interior agrees."""
    n = lane.shape[0]
    if lane.shape != ref.shape or n <= 2 * EDGE_ROWS + 4:
        return None
    interior = agreement(stage, lane[EDGE_ROWS:-EDGE_ROWS], ref[EDGE_ROWS:-EDGE_ROWS])
    if not interior.close:
        return None
    rows = np.flatnonzero(np.abs(lane.astype(np.float64) - ref).reshape(n, -1).max(axis=1) >
                          MATCH_REL * max(float(np.abs(ref).max()), 1e-12))
    return Candidate("padding_edges", "only the first and last rows differ", interior,
                     {"differing_rows": rows.tolist()})


# -- the mel front end ------------------------------------------------------------------------------------------
def _htk_mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, np.float64) / 700.0)


def _htk_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, np.float64) / 2595.0) - 1.0)


def variant_filterbank(mel_scale: str = "slaney", n_fft: int = 800) -> np.ndarray:
    """[80, n_fft/2+1] triangles on the Slaney or HTK mel scale, Slaney area-normalised (librosa's norm default)."""
    to_mel, to_hz = (hz_to_slaney_mel, slaney_mel_to_hz) if mel_scale == "slaney" else (_htk_mel, _htk_hz)
    bins = np.linspace(0.0, SAMPLE_RATE / 2.0, n_fft // 2 + 1)
    edges = to_hz(np.linspace(float(to_mel(FMIN)), float(to_mel(FMAX)), MEL_BANDS + 2))
    left, centre, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    tri = np.clip(np.minimum((bins - left) / (centre - left), (right - bins) / (right - centre)), 0.0, None)
    return tri * (2.0 / (right - left))


def variant_mel(samples: np.ndarray, mel_scale: str = "slaney", n_fft: int = 800, center: bool = True,
                pad_mode: str = "constant") -> np.ndarray:
    """The Wav2Lip mel with one ingredient changed, as a port might have it: [T', 80] float32.

    n_fft is also the window length (a port with a 512-point FFT frames 512 samples); center=False drops the 400
    samples of padding, which gives 4 fewer frames.
    """
    x = preemphasis(np.asarray(samples, np.float64))
    if center:
        x = np.pad(x, n_fft // 2, mode=pad_mode)
    if x.shape[0] < n_fft:
        return np.zeros((0, MEL_BANDS), np.float32)
    n = np.arange(n_fft)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / n_fft)
    frames = sliding_window_view(x, n_fft)[::HOP_LENGTH]
    magnitude = np.abs(np.fft.rfft(frames * window, axis=1))
    return normalise_db(magnitude @ variant_filterbank(mel_scale, n_fft).T).astype(np.float32)


def _resample_linear(mono: np.ndarray, rate: int) -> np.ndarray:
    length = int(np.ceil(mono.shape[0] * SAMPLE_RATE / rate))
    t = np.arange(length) * (rate / SAMPLE_RATE)
    return np.interp(t, np.arange(mono.shape[0]), mono).astype(np.float32)


def _aligned(lane: np.ndarray, ref: np.ndarray) -> tuple[int, Agreement]:
    """Mels of different lengths: the offset o (lane row t ~ reference row t + o) that agrees best, and how well."""
    best: tuple[int, Agreement] | None = None
    for o in range(-8, 9):
        lo, hi = max(0, -o), min(lane.shape[0], ref.shape[0] - o)
        if hi - lo < 16:
            continue
        ag = agreement("mel", lane[lo:hi], ref[lo + o : hi + o])
        if best is None or ag.figures.get("mean_abs", math.inf) < best[1].figures.get("mean_abs", math.inf):
            best = (o, ag)
    return best if best is not None else (0, Agreement("shape", {}))


def _mel_candidates(lane: np.ndarray, ref: np.ndarray, ctx: ReferenceContext) -> list[Candidate]:
    out: list[Candidate] = []
    if lane.shape == ref.shape:
        out += _shift_rows("mel", lane, ref, "mel frame")
        edges = _edges_only("mel", lane, ref)
        if edges is not None:
            out.append(edges)
    if ctx.samples is None:
        return [c for c in out if c is not None]
    x = ctx.samples
    other_pad = "reflect" if ctx.pad_mode == "constant" else "constant"
    specs = [
        ("padding_edges", f"{other_pad} padding of the centred STFT instead of {ctx.pad_mode} "
         "(librosa < 0.9 reflects, >= 0.9 pads zeros)", dict(pad_mode=other_pad)),
        ("front_end", "an HTK mel scale instead of Slaney", dict(mel_scale="htk", pad_mode=ctx.pad_mode)),
        ("front_end", "a 512-point FFT (and window) instead of 800", dict(n_fft=512, pad_mode=ctx.pad_mode)),
        ("front_end", "no centre padding of the STFT (4 fewer frames)", dict(center=False)),
        ("front_end", "an HTK mel scale and no centre padding", dict(mel_scale="htk", center=False)),
        ("front_end", "a 512-point FFT and no centre padding", dict(n_fft=512, center=False)),
    ]
    for kind, cause, kw in specs:
        if kind == "padding_edges" and x.size <= 400:
            continue
        out.append(_try("mel", lane, kind, cause, variant_mel(x, **kw), variant=kw))
    if ctx.source is not None and ctx.source[1] != SAMPLE_RATE:
        mono, rate = ctx.source
        resampled = _resample_linear(mono, rate)
        out.append(_try("mel", lane, "front_end",
                        f"resampling from {rate} Hz by linear interpolation instead of soxr (librosa's default)",
                        variant_mel(resampled, pad_mode=ctx.pad_mode), variant={"resample": "linear"}))
    return [c for c in out if c is not None]


# -- features ---------------------------------------------------------------------------------------------------
def temporal_structure(features: np.ndarray, limit: int = 400) -> np.ndarray:
    """The upper triangle of the rows' pairwise distances (scale-free): which moments sound alike to this encoder.

    Two encoders of the same clip agree on it even when their weights differ (silence is like silence, a vowel like
    a vowel); features of another clip do not.
    """
    f = np.asarray(features, np.float64)
    if f.shape[0] > limit:
        f = f[np.linspace(0, f.shape[0] - 1, limit).astype(int)]
    f = f - f.mean(axis=0)
    sq = (f * f).sum(axis=1)
    d = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * f @ f.T, 0.0))
    iu = np.triu_indices(f.shape[0], 1)
    return d[iu]


def follows_audio(lane: np.ndarray, ref: np.ndarray) -> float:
    """Pearson correlation of the two lanes' temporal structures: ~0 when the lane does not follow this clip."""
    a, b = temporal_structure(lane), temporal_structure(ref)
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


FOLLOWS_AUDIO_MIN = 0.3  # below this the lane's features do not follow the clip (random weights stay above 0.6)


def _features_verdict(lane: np.ndarray, ref: np.ndarray, evidence: dict[str, Any]) -> Verdict:
    candidates: list[Candidate] = []
    scale = _scale_candidate("features", lane, ref)
    if scale is not None:
        candidates.append(scale)
    candidates += _shift_rows("features", lane, ref, "frame") if lane.shape == ref.shape else []
    edges = _edges_only("features", lane, ref)
    if edges is not None:
        candidates.append(edges)
    best = _best(candidates)
    if best:
        return _verdict_from("features", best)
    plain = agreement("features", lane, ref)
    figures = dict(plain.figures)
    a, b = lane.astype(np.float64).ravel(), ref.astype(np.float64).ravel()
    figures["zero_agreement"] = float(np.mean((a == 0) == (b == 0)))
    k = float(a @ b) / float(b @ b) if float(b @ b) > 0 else math.nan
    figures["best_scale"] = k
    if math.isfinite(k):
        total = float(((a - a.mean()) ** 2).sum())
        figures["r2_of_best_scale"] = 1.0 - float(((a - k * b) ** 2).sum()) / total if total > 0 else math.nan
    check = evidence.get("audio_dependence")
    follows = follows_audio(lane, ref) if lane.shape == ref.shape and lane.shape[0] > 4 else math.nan
    figures["follows_audio"] = follows
    if check and check.get("ignored") and check.get("where", "encoder") == "encoder":
        figures.update({f"audio_check_{k}": v for k, v in check.items() if isinstance(v, (int, float))})
        return Verdict("features", "audio_ignored",
                       "the lane's encoder ignores its audio: " + str(check.get("explanation", "its features do not "
                       "change on silence or on the reversed clip")), figures)
    lane_varies = float(np.std(lane, axis=0).mean()) > 1e-6 * max(float(np.abs(lane).max()), 1e-12)
    if (math.isfinite(follows) and follows < FOLLOWS_AUDIO_MIN) or not lane_varies:
        why = ("its features are the same for every frame" if not lane_varies else
               f"which moments sound alike agrees with the reference at r = {follows:.2f} only")
        return Verdict("features", "audio_ignored",
                       f"the lane's features do not follow this clip's audio ({why}): it may return features of "
                       "another clip (the Go server once returned the training clip's) or ignore its input", figures)
    weights = evidence.get("weights") or {}
    sentence = (f"different weights: no factor fixes it (best factor {k:.4g} leaves R² "
                f"{figures.get('r2_of_best_scale', math.nan):.3f}; zero patterns differ at "
                f"{100 * (1 - figures['zero_agreement']):.1f}% of positions), though the features follow the clip "
                f"(r = {follows:.2f})")
    if weights.get("untrained"):
        detail = weights.get("detail", "they match default initialisation")
        sentence += f"; the encoder's weights look untrained: {detail}"
    elif weights.get("detail"):
        sentence += f"; weight comparison: {weights['detail']}"
    figures.update({f"weights_{k}": v for k, v in weights.items() if isinstance(v, (bool, int, float))})
    return Verdict("features", "weights", sentence, figures)


# -- audio tensors ----------------------------------------------------------------------------------------------
def assemble(padded: np.ndarray, frames: list[int], offsets: np.ndarray, clamp: bool = False) -> np.ndarray:
    """Audio tensors built from rows i + offsets of the padded features (zeros outside, or the edge row if clamp)."""
    n = padded.shape[0]
    idx = np.asarray(frames)[:, None] + np.asarray(offsets)[None, :]
    valid = (idx >= 0) & (idx < n)
    rows = padded[np.clip(idx, 0, n - 1)]
    if not clamp:
        rows = np.where(valid[..., None], rows, 0.0)
    return rows.reshape(len(frames), 32, 16, 16).astype(np.float32)


def _tensor_candidates(lane: np.ndarray, padded: np.ndarray, frames: list[int], ref: np.ndarray) -> list[Candidate]:
    base = np.arange(-CONTEXT_ROWS, CONTEXT_ROWS)
    out: list[Candidate | None] = []
    for s in range(-MAX_SHIFT, MAX_SHIFT + 1):
        if s:
            direction = "later" if s > 0 else "earlier"
            out.append(_try("tensors", lane, "time_shift", f"rows [i-8{s:+d}, i+8{s:+d}): the window sits {abs(s)} "
                            f"frame(s) {direction}", assemble(padded, frames, base + s), offset=s, unit="frame"))
    for c in range(-2, 3):
        out.append(_try("tensors", lane, "window", f"one feature row (i{c:+d}) tiled 16 times instead of 16 rows",
                        assemble(padded, frames, np.full(16, c)), layout="tiled", row_offset=c))
    out.append(_try("tensors", lane, "window", "the 16 rows in reverse order", assemble(padded, frames, base[::-1]),
                    layout="reversed"))
    four = np.arange(-4, 4)
    out.append(_try("tensors", lane, "window", "a ±4 window (8 rows), each row twice, instead of ±8",
                    assemble(padded, frames, np.repeat(four, 2)), layout="±4 repeated"))
    out.append(_try("tensors", lane, "window", "a ±4 window (8 rows) tiled twice instead of ±8",
                    assemble(padded, frames, np.tile(four, 2)), layout="±4 tiled"))
    half = assemble(padded, frames, np.concatenate([four, four]))
    half.reshape(len(frames), 16, 512)[:, 8:] = 0.0
    out.append(_try("tensors", lane, "window", "a ±4 window (8 rows) followed by 8 rows of zeros instead of ±8",
                    half, layout="±4 zero-filled"))
    out.append(_try("tensors", lane, "padding_edges", "rows outside the clip repeat the edge row instead of zeros",
                    assemble(padded, frames, base, clamp=True), layout="clamped"))
    scale = _scale_candidate("tensors", lane, ref)
    out.append(scale)
    return [c for c in out if c is not None]


# -- generator inputs --------------------------------------------------------------------------------------------
_INTERPOLATIONS = {"nearest": cv2.INTER_NEAREST, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC,
                   "area": cv2.INTER_AREA, "lanczos": cv2.INTER_LANCZOS4}


def _build_input(frame: np.ndarray, region: tuple[int, int, int, int], size: int, interpolation: int,
                 mask_extra: int = 0) -> np.ndarray:
    top, bottom, left, right = region
    crop = frame[max(top, 0):bottom, max(left, 0):right]
    outer = size + 2 * CROP_MARGIN
    resized = cv2.resize(crop, (outer, outer), interpolation=interpolation)
    inner = resized[CROP_MARGIN:CROP_MARGIN + size, CROP_MARGIN:CROP_MARGIN + size]
    masked = inner.copy()
    width, height = MASK_EXTENT[size]
    masked[MASK_ORIGIN:MASK_ORIGIN + height + mask_extra, MASK_ORIGIN:MASK_ORIGIN + width + mask_extra] = 0
    return np.concatenate([inner, masked], axis=2).transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)


def input_candidates(frame: np.ndarray, box: CropBox, size: int) -> dict[str, tuple[str, np.ndarray]]:
    """Generator inputs [6,S,S] for one template frame with one ingredient of the crop changed, by cause."""
    region = box.region(frame.shape[0], frame.shape[1])
    ref_interp = INTERPOLATION[size]
    out: dict[str, tuple[str, np.ndarray]] = {}
    reference = _build_input(frame, region, size, ref_interp)
    ref_name = next(k for k, v in _INTERPOLATIONS.items() if v == ref_interp)
    for name, flag in _INTERPOLATIONS.items():
        if flag != ref_interp:
            out[f"resize with {name} instead of {ref_name}"] = ("crop", _build_input(frame, region, size, flag))
    out["RGB channel order instead of BGR"] = ("crop", reference[[2, 1, 0, 5, 4, 3]])
    out["the mask in cv2.rectangle's two-point form (one more column and row)"] = (
        "crop", _build_input(frame, region, size, ref_interp, mask_extra=1))
    out["pixels not divided by 255"] = ("crop", reference * np.float32(255.0))
    out["no mask on the masked half"] = ("crop", np.concatenate([reference[:3], reference[:3]]))
    top, bottom, left, right = region
    for dy in range(-3, 4):
        for dx in range(-3, 4):
            if dx or dy:
                moved = (top + dy, bottom + dy, left + dx, right + dx)
                if moved[0] >= 0 and moved[2] >= 0 and moved[1] <= frame.shape[0] and moved[3] <= frame.shape[1]:
                    out[f"the crop box moved by ({dx:+d}, {dy:+d}) px"] = (
                        "crop", _build_input(frame, moved, size, ref_interp))
    for grow in (-2, -1, 1, 2):
        grown = (top, bottom + grow, left, right + grow)
        if grown[1] <= frame.shape[0] and grown[3] <= frame.shape[1]:
            out[f"the crop box {abs(grow)} px {'larger' if grow > 0 else 'smaller'} (x2, y2 {grow:+d})"] = (
                "crop", _build_input(frame, grown, size, ref_interp))
    return out


# -- paste back ---------------------------------------------------------------------------------------------------
def paste_candidates(frame: np.ndarray, box: CropBox, output: np.ndarray) -> dict[str, tuple[str, np.ndarray]]:
    """Final frames for one output with one ingredient of the paste-back changed, by cause."""
    size = int(output.shape[-1])
    top, bottom, left, right = box.region(frame.shape[0], frame.shape[1])
    h, w = bottom - top, right - left
    outer = size + 2 * CROP_MARGIN
    ref_interp = INTERPOLATION[size]
    crop = frame[top:bottom, left:right]
    resized = cv2.resize(crop, (outer, outer), interpolation=ref_interp)
    mouth = output_to_uint8(output)

    def paste(patch_img: np.ndarray, interp: int) -> np.ndarray:
        result = frame.copy()
        result[top:bottom, left:right] = cv2.resize(patch_img, (w, h), interpolation=interp)
        return result

    patch = resized.copy()
    patch[CROP_MARGIN:CROP_MARGIN + size, CROP_MARGIN:CROP_MARGIN + size] = mouth
    ref_name = next(k for k, v in _INTERPOLATIONS.items() if v == ref_interp)
    out: dict[str, tuple[str, np.ndarray]] = {}
    for name, flag in _INTERPOLATIONS.items():
        if flag != ref_interp:
            out[f"resized back with {name} instead of {ref_name}"] = ("paste_back", paste(patch, flag))
    stretch = (outer / size - 1) * 100
    out[f"the output stretched over the whole crop box, without the {CROP_MARGIN} px margin "
        f"({stretch:.1f}% too large)"] = ("paste_back", paste(np.ascontiguousarray(mouth), ref_interp))
    swapped = resized.copy()
    swapped[CROP_MARGIN:CROP_MARGIN + size, CROP_MARGIN:CROP_MARGIN + size] = mouth[:, :, ::-1]
    out["the output pasted in RGB order"] = ("paste_back", paste(swapped, ref_interp))
    return out


# -- the diagnosis ------------------------------------------------------------------------------------------------
def _verdict_from(stage: str, best: list[Candidate], prefix: str = "") -> Verdict:
    top = best[0]
    evidence: dict[str, Any] = {**top.residual.figures, **{k: v for k, v in top.details.items()
                                                           if isinstance(v, (int, float, str))}}
    evidence["cause"] = top.cause
    others = [c for c in best[1:] if c.kind != top.kind or c.cause != top.cause]
    left = _describe_figures(top.residual.figures)
    sentence = f"{prefix}{top.cause}; reproducing that on the reference leaves {left}"
    if top.kind == "scale":
        sentence += f"; multiplying the lane by {top.details['correction']:.4g} fixes it"
    also = []
    if others:
        names = "; ".join(f"{c.kind}: {c.cause}" for c in others[:3])
        sentence += f". Explained equally well by: {names}"
        also = sorted({c.kind for c in others if c.kind != top.kind})
        evidence["also_causes"] = [c.cause for c in others[:3]]
    return Verdict(stage, top.kind, sentence, evidence, also)


def _divergence_at(stage: str, lane: LaneArrays, ref: LaneArrays, ctx: ReferenceContext,
                   evidence: dict[str, Any], plain: Agreement) -> Verdict:
    a, b = lane.stage(stage), ref.stage(stage)
    assert a is not None and b is not None
    if plain.level == "non_finite":
        return Verdict(stage, "non_finite", f"NaN/Inf at the {stage} stage ({int(plain.figures['lane_non_finite'])} "
                       f"in the lane, {int(plain.figures['reference_non_finite'])} in the reference)", plain.figures)
    if stage == "mel":
        best = _best(_mel_candidates(a, b, ctx))
        if best:
            return _verdict_from("mel", best, "the audio front end differs: ")
        evidence_mel: dict[str, Any] = dict(plain.figures)
        if a.shape != b.shape:
            offset, aligned = _aligned(a, b)
            evidence_mel.update({"lane_frames": a.shape[0], "reference_frames": b.shape[0], "aligned_offset": offset,
                                 **{f"aligned_{k}": v for k, v in aligned.figures.items()}})
            return Verdict("mel", "front_end", f"the mel differs: {a.shape[0]} frames against {b.shape[0]} (aligned "
                           f"at offset {offset:+d}: {_describe_figures(aligned.figures)}); cause not identified "
                           "(checked: mel scale, FFT size, centring, padding, resampling, time shift)", evidence_mel)
        out_of_tol = float(np.mean(np.abs(a - b) > 1e-3 * max(float(np.abs(b).max()), 1e-12)))
        evidence_mel["fraction_out_of_tolerance"] = out_of_tol
        return Verdict("mel", "front_end", f"the mel differs ({_describe_figures(plain.figures)}; "
                       f"{100 * out_of_tol:.0f}% of values off); cause not identified (checked: mel scale, FFT size, "
                       "centring, padding, resampling, time shift)", evidence_mel)
    if stage == "features":
        if a.shape != b.shape:
            return Verdict("features", "unknown", f"the lane has {a.shape[0]} feature rows, the reference "
                           f"{b.shape[0]}", {"lane_rows": a.shape[0], "reference_rows": b.shape[0]})
        return _features_verdict(a, b, evidence)
    if stage == "tensors":
        padded = lane.features if lane.features is not None else ref.features
        best = _best(_tensor_candidates(a, padded, lane.frames, b)) if padded is not None else []
        if best:
            return _verdict_from("tensors", best, "the audio tensor is assembled differently: ")
        return Verdict("tensors", "unknown", f"the audio tensors differ although the features agree "
                       f"({_describe_figures(plain.figures)}); no known assembly (shift, tiling, order, ±4, edge "
                       "rows, scale) reproduces them", dict(plain.figures))
    if stage == "inputs":
        candidates: list[Candidate] = []
        if ctx.templates is not None and a.shape == b.shape:
            per_cause: dict[str, tuple[str, list[np.ndarray]]] = {}
            for i in lane.frames:
                frame, box = ctx.templates(i)
                for cause, (kind, tensor) in input_candidates(frame, box, a.shape[-1]).items():
                    per_cause.setdefault(cause, (kind, []))[1].append(tensor)
            for cause, (kind, tensors) in per_cause.items():
                if len(tensors) == len(lane.frames):
                    cand = _try("inputs", a, kind, cause, np.stack(tensors))
                    if cand is not None:
                        candidates.append(cand)
        best = _best(candidates)
        if best:
            return _verdict_from("inputs", best, "the generator input is prepared differently: ")
        return Verdict("inputs", "crop", f"the generator inputs differ ({_describe_figures(plain.figures)}); cause "
                       "not identified (checked: resize interpolation, colour order, mask form, /255, mask, crop "
                       "box moved or resized by up to 3 px)", dict(plain.figures))
    if stage == "outputs":
        if "outputs" in lane.dumped and not {"tensors", "inputs"} <= set(lane.dumped):
            # Another program's outputs, but not what it fed its generator: the generator, its audio tensor or its
            # crop may differ, and these arrays cannot tell which. Say so rather than guess.
            return Verdict("outputs", "unknown", f"the dumped generator outputs differ "
                           f"({_describe_figures(plain.figures)}); the dump does not say what the port fed its "
                           "generator, so its weights, its audio tensors and its crop are all suspects: dump its "
                           "tensors and inputs too (session keys tensors, inputs) to tell them apart",
                           dict(plain.figures))
        check = evidence.get("audio_dependence") or {}
        if check.get("ignored") and check.get("where") == "generator":
            figures = {**plain.figures, "outputs_change": check.get("outputs_change")}
            return Verdict("outputs", "audio_ignored", f"the generator ignores its audio: {check.get('explanation')}",
                           figures)
        weights = evidence.get("generator_weights") or {}
        sentence = (f"the generator's outputs differ on the same inputs ({_describe_figures(plain.figures)}): its "
                    "weights or operations differ")
        if weights.get("untrained"):
            sentence += f"; the generator's weights look untrained: {weights.get('detail', '')}"
        return Verdict("outputs", "weights", sentence, dict(plain.figures))
    # frames: the final frames differ beyond what the outputs explain
    candidates = []
    source = lane.outputs if lane.outputs is not None else ref.outputs
    if ctx.templates is not None and source is not None and a.shape == b.shape:
        per_cause2: dict[str, tuple[str, list[np.ndarray]]] = {}
        for row, i in enumerate(lane.frames):
            frame, box = ctx.templates(i)
            for cause, (kind, image) in paste_candidates(frame, box, source[row]).items():
                per_cause2.setdefault(cause, (kind, []))[1].append(image)
        for cause, (kind, images) in per_cause2.items():
            cand = _try("frames", a, kind, cause, np.stack(images).astype(np.float32))
            if cand is not None:
                candidates.append(cand)
    best = _best(candidates)
    if best:
        return _verdict_from("frames", best, "the paste-back differs: ")
    return Verdict("frames", "unknown", f"the final frames differ ({_describe_figures(plain.figures)}) and no known "
                   "paste-back difference (interpolation, stretched box, colour order) reproduces them from the "
                   "generator outputs: the generator itself may differ (compare raw outputs to tell)",
                   dict(plain.figures))


def diagnose(lane: LaneArrays, ref: LaneArrays, ctx: ReferenceContext | None = None,
             evidence: dict[str, Any] | None = None) -> Verdict:
    """The verdict for one lane against the reference: first divergent stage, kind, sentence, figures.

    Stages are walked in pipeline order; the first that neither matches nor stays within precision is explained by
    reproduction, and every later stage that differs is marked "follows from <stage>".
    """
    ctx = ctx or ReferenceContext()
    evidence = evidence or {}
    stages: dict[str, str] = {}
    verdict: Verdict | None = None
    any_precision = False
    worst_precision: dict[str, Any] = {}
    for stage in STAGES:
        a, b = lane.stage(stage), ref.stage(stage)
        if a is None or b is None:
            continue
        if stage == "frames" and lane.outputs is not None and ref.outputs is not None and verdict is None \
                and "frames" not in lane.dumped:
            continue  # frames computed here from matching outputs cannot differ: nothing to learn
        plain = agreement(stage, a, b)
        if verdict is not None:
            stages[stage] = plain.level if plain.close else f"follows from {verdict.first_divergent_stage}"
            continue
        if plain.close:
            stages[stage] = plain.level
            if plain.level == "precision":
                any_precision = True
                worst_precision[stage] = plain.figures
            continue
        verdict = _divergence_at(stage, lane, ref, ctx, evidence, plain)
        stages[stage] = f"diverges: {verdict.kind}"
    if verdict is None:
        if not stages:
            return Verdict(None, "unknown", "nothing could be compared", {}, stages=stages)
        if any_precision:
            where = ", ".join(f"{s} ({_describe_figures(f)})" for s, f in worst_precision.items())
            return Verdict(None, "precision", f"agrees within floating-point precision (fp16-level) at every stage "
                           f"compared: {where}", {s: f for s, f in worst_precision.items()}, stages=stages)
        return Verdict(None, "match", "matches the reference at every stage compared", {}, stages=stages)
    follows = [s for s, v in stages.items() if v.startswith("follows")]
    if follows:
        verdict.explanation += f" ({', '.join(follows)}: follows from {verdict.first_divergent_stage})"
    verdict.stages = stages
    return verdict


# -- from lanes ---------------------------------------------------------------------------------------------------
def collect(lane: Any, frames: list[int], outputs: dict[int, np.ndarray] | None = None,
            images: bool = False) -> LaneArrays:
    """A pipeline.lane.Lane's arrays for the diagnosis: mel and features whole, per-frame stages on ``frames``.

    Stages the lane cannot produce stay None (no avatar, no generator, a frames dump without raw outputs). With
    ``images`` the final frames are collected too (when either side of a comparison is another program's frames).
    """
    from pipeline.dumps import OutputDump  # local: keeps this module importable without the lane machinery

    arrays = LaneArrays(name=lane.name, frames=list(frames))
    dumped = []
    if lane.spec.mel is not None:
        dumped.append("mel")
    arrays.mel = lane.mel()
    arrays.features = lane.features()
    if getattr(lane, "tensor_dump", None) is not None:
        dumped.append("tensors")
    if getattr(lane, "input_dump", None) is not None:
        dumped.append("inputs")
    if frames and lane.generator is not None:
        arrays.tensors = np.stack([lane.audio_tensors(range(i, i + 1))[0] for i in frames])
        if lane.avatar is not None:
            if lane.shows_dumped_frames or images:
                arrays.images = np.stack([lane.frame(i).image for i in frames])
            if lane.shows_dumped_frames:
                dumped.append("frames")
            else:
                if isinstance(lane.generator, OutputDump):
                    dumped.append("outputs")
                    if getattr(lane, "input_dump", None) is not None:
                        arrays.inputs = np.stack([lane.generator_input(i).tensor for i in frames])
                else:
                    arrays.inputs = np.stack([lane.generator_input(i).tensor for i in frames])
                arrays.outputs = np.stack([outputs[i] if outputs and i in outputs else lane.raw_output(i)
                                           for i in frames])
    arrays.dumped = tuple(dumped)
    return arrays


def context_for(reference: Any) -> ReferenceContext:
    """What reproduction needs from the reference lane: its clip, padding, source audio, templates."""
    audio = reference.audio
    source = None
    if getattr(audio, "source_rate", 16000) != SAMPLE_RATE and getattr(audio, "path", None) is not None:
        try:
            import soundfile

            data, rate = soundfile.read(str(audio.path), dtype="float32", always_2d=True)
            source = (data.mean(axis=1), int(rate))
        except Exception:  # noqa: BLE001 - resampling candidates are optional evidence
            source = None
    templates: Callable[[int], tuple[np.ndarray, CropBox]] | None = None
    if reference.avatar is not None:
        avatar = reference.avatar

        def template_of(i: int) -> tuple[np.ndarray, CropBox]:
            k = reference.template_index(i)
            return avatar.frame(k), avatar.crop_box(k)

        templates = template_of
    return ReferenceContext(samples=audio.samples, pad_mode=reference.pad_mode, source=source, templates=templates)
