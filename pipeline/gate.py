"""Tolerances a team's CI holds every conversion to, with Polygraphy's semantics, and the least that would pass.

Polygraphy compares element-wise: an element fails only when it is outside *both* the absolute and the relative
tolerance (``|a - b| > atol`` and ``|a - b| / |b| > rtol``; a zero reference makes any difference relatively
infinite). Here the same holds per stage, plus a cosine floor and a PSNR floor. Each can be global (``1e-3``) or per
stage (``features=1e-3``); a per-stage value wins. A stage with neither atol nor rtol is not checked element-wise.

When a comparison fails, the report prints the smallest tolerance that would have passed it, each with the other
tolerances held as given, so a person sees at once whether the gap is fp16 noise or a real divergence.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from core.errors import InputError

GATE_STAGES = ("mel", "features", "tensors", "inputs", "outputs", "frames")
# The peak value a stage's PSNR is computed against: images in [0, 1] or grey levels; numeric stages use the
# reference's own peak |value|.
PSNR_PEAK = {"inputs": 1.0, "outputs": 1.0, "frames": 255.0}
FLAGS = ("atol", "rtol", "cosine_min", "psnr_min")


@dataclass
class Tolerances:
    """Per flag, a global value (key None) and per-stage values."""

    values: dict[str, dict[str | None, float]] = field(default_factory=lambda: {f: {} for f in FLAGS})

    def get(self, flag: str, stage: str) -> float | None:
        per = self.values.get(flag, {})
        return per.get(stage, per.get(None))

    @property
    def any(self) -> bool:
        return any(self.values.get(f) for f in FLAGS)

    def add(self, flag: str, text: str) -> None:
        """Parse one ``--atol``-style argument: ``VALUE`` or ``STAGE=VALUE``."""
        option = "--" + flag.replace("_", "-")
        stage: str | None = None
        value_text = text
        if "=" in text:
            stage, value_text = (part.strip() for part in text.split("=", 1))
            if stage not in GATE_STAGES:
                raise InputError(f"{option} {text!r}: expected a stage among {', '.join(GATE_STAGES)}, found "
                                 f"{stage!r}")
        try:
            value = float(value_text)
        except ValueError:
            raise InputError(f"{option} {text!r}: expected a number or STAGE=NUMBER (for example features=1e-3)") \
                from None
        if not math.isfinite(value) or (flag in ("atol", "rtol") and value < 0):
            raise InputError(f"{option} {text!r}: expected a finite number" + (" >= 0" if flag in ("atol", "rtol")
                                                                                 else ""))
        self.values.setdefault(flag, {})[stage] = value

    @classmethod
    def parse(cls, atol: list[str] | None = None, rtol: list[str] | None = None, cosine_min: list[str] | None = None,
              psnr_min: list[str] | None = None) -> Tolerances:
        tol = cls()
        for flag, texts in (("atol", atol), ("rtol", rtol), ("cosine_min", cosine_min), ("psnr_min", psnr_min)):
            for text in texts or []:
                tol.add(flag, text)
        return tol


@dataclass
class GateResult:
    """One stage of one lane under the tolerances: passed, what failed, and the least tolerances that pass."""

    passed: bool
    failures: list[str]
    minimal: dict[str, float]  # flag -> the smallest value that would have passed (the others held as given)
    figures: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def stage_psnr(stage: str, a: np.ndarray, b: np.ndarray) -> float:
    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    mse = float(np.mean(diff * diff)) if diff.size else 0.0
    peak = PSNR_PEAK.get(stage) or float(np.abs(np.asarray(b, np.float64)).max() if b.size else 0.0)
    if mse == 0:
        return math.inf
    return 10.0 * math.log10(peak * peak / mse) if peak > 0 else -math.inf


def check(stage: str, lane: np.ndarray, reference: np.ndarray, tol: Tolerances) -> GateResult:
    """Hold one stage's arrays to the tolerances (non-finite values fail every element-wise check)."""
    a = np.asarray(lane, np.float64).ravel()
    b = np.asarray(reference, np.float64).ravel()
    if a.shape != b.shape:
        return GateResult(False, [f"shapes differ ({lane.shape} vs {reference.shape})"], {}, {})
    absdiff = np.abs(a - b)
    absdiff[~(np.isfinite(a) & np.isfinite(b))] = math.inf
    with np.errstate(divide="ignore", invalid="ignore"):
        reldiff = np.where(absdiff == 0, 0.0, absdiff / np.abs(b))
    reldiff[np.isnan(reldiff)] = math.inf
    failures: list[str] = []
    minimal: dict[str, float] = {}
    figures: dict[str, float] = {"max_abs": float(absdiff.max()) if a.size else 0.0,
                                 "max_rel": float(reldiff.max()) if a.size else 0.0}
    atol, rtol = tol.get("atol", stage), tol.get("rtol", stage)
    if atol is not None or rtol is not None:
        at, rt = atol or 0.0, rtol or 0.0
        bad = (absdiff > at) & (reldiff > rt)
        figures["failing_elements"] = float(bad.sum())
        if bad.any():
            failures.append(f"{int(bad.sum())} of {a.size} elements outside atol {at:g} and rtol {rt:g}")
            # The least atol with rtol held: the largest |diff| among elements rtol alone does not cover; and the
            # other way round.
            minimal["atol"] = float(absdiff[reldiff > rt].max())
            minimal["rtol"] = float(reldiff[absdiff > at].max())
    finite = np.isfinite(a) & np.isfinite(b)
    na, nb = float(np.linalg.norm(a[finite])), float(np.linalg.norm(b[finite]))
    cosine = float(a[finite] @ b[finite] / (na * nb)) if na > 0 and nb > 0 else (1.0 if na == nb else 0.0)
    if not finite.all():
        cosine = -math.inf
    figures["cosine"] = cosine
    cosine_min = tol.get("cosine_min", stage)
    if cosine_min is not None and not cosine >= cosine_min:
        failures.append(f"cosine {cosine:.6f} < {cosine_min:g}")
        minimal["cosine_min"] = cosine
    psnr = stage_psnr(stage, a, b) if finite.all() else -math.inf
    figures["psnr"] = psnr
    psnr_min = tol.get("psnr_min", stage)
    if psnr_min is not None and not psnr >= psnr_min:
        failures.append(f"PSNR {psnr:.2f} dB < {psnr_min:g}")
        minimal["psnr_min"] = psnr
    return GateResult(not failures, failures, minimal, figures)


def describe_minimal(stage: str, result: GateResult) -> str:
    """'would pass with --atol features=0.0048 (rtol as given) or --rtol features=...' for a failed comparison."""
    parts = []
    for flag, value in result.minimal.items():
        option = "--" + flag.replace("_", "-")
        if not math.isfinite(value):
            why = "the lane differs where the reference is 0" if flag == "rtol" else "non-finite values"
            parts.append(f"no {option} passes ({why})")
        elif flag in ("cosine_min", "psnr_min"):
            parts.append(f"{option} {stage}={_round_down(value):.6g}")
        else:
            parts.append(f"{option} {stage}={_round_up(value):.3g}")
    return "would pass with " + " or ".join(parts) if parts else ""


def _round_up(value: float) -> float:
    """Three significant digits, never below the value (so the printed tolerance really passes)."""
    if value <= 0:
        return value
    digits = 3 - int(math.floor(math.log10(value))) - 1
    scale = 10.0**digits
    return math.ceil(value * scale) / scale


def _round_down(value: float) -> float:
    if value <= 0 or not math.isfinite(value):
        return value
    digits = 6 - int(math.floor(math.log10(abs(value)))) - 1
    scale = 10.0**digits
    return math.floor(value * scale) / scale
