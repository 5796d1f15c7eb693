"""The comparison report: every lane against the reference lane, stage by stage, with a verdict.

Polygraphy prints PASSED/FAILED per output; this goes further and says *where* two pipelines first diverge and
*what kind* of divergence it is, because that is what decides the fix: a pure scale error can be corrected by a
factor, a different zero pattern after a ReLU cannot (the weights differ), and a mel mismatch means the fault is in
the front end, not the model.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from core.errors import InputError
from pipeline.lane import FailedLane, Lane
from pipeline.metrics import compare, stats
from pipeline import divergence, gate, mouth

# Largest max-abs difference that still counts as "the same" per stage. The mel and features are fp32 end to end in
# a faithful port; generator outputs may legitimately run in fp16 (Core ML on GPU/ANE), hence the looser bound.
# Final frames (compared only when a lane's frames come from another program's dump) are in grey levels 0-255.
STAGE_TOLERANCE = {"mel": 1e-4, "features": 1e-3, "tensors": 1e-3, "inputs": 1e-3, "outputs": 2e-2, "frames": 2.0}
STAGES = ("mel", "features", "tensors", "inputs", "outputs", "frames")
# What one entry along the first axis of each stage's compared array is, for "first at ..." in verdicts.
STAGE_ROW_UNIT = {"mel": "mel frame", "features": "padded feature row", "tensors": "output frame",
                  "inputs": "output frame", "outputs": "output frame", "frames": "output frame"}

# Machine-readable kinds of a stage comparison (and of a lane's diagnosis: the kind of its first failed stage).
# Plain strings on purpose, so other checks can add theirs without a schema change.
KIND_MATCH = "match"
KIND_NON_FINITE = "non_finite"  # NaN/Inf in the lane where the reference is finite, or in the reference itself
KIND_SCALED_COPY = "scale"  # a scaled copy of the reference: a factor fixes it
KIND_DIVERGES = "diverges"  # differs in a way no factor fixes (or not yet classified further)
KIND_EMPTY = "nothing_compared"  # no position to compare
KIND_ERROR = "error"  # the lane could not produce a stage (an InputError); see the report's errors


@dataclass
class StageComparison:
    lane: str
    reference: str
    stage: str
    max_abs: float
    mean_abs: float
    rel: float
    cosine: float
    scale: float
    r2: float
    correction: float
    zero_agreement: float | None
    tolerance: float
    passed: bool
    verdict: str
    frames: list[int] | None = None
    kind: str = KIND_MATCH
    # NaN/Inf positions: produced by the lane (where the reference is finite) and found in the reference; where the
    # first of each is, along the stage's first axis (a mel frame, a padded feature row, an output frame number).
    lane_non_finite: int = 0
    reference_non_finite: int = 0
    first_lane_non_finite_at: int | None = None
    first_reference_non_finite_at: int | None = None
    # Under `report --atol/--rtol/--cosine-min/--psnr-min`: pipeline.gate.GateResult as a dict (None without them).
    gate: dict[str, Any] | None = None


@dataclass
class LaneDiagnosis:
    lane: str
    first_divergent_stage: str | None
    explanation: str
    kind: str = KIND_MATCH
    passed: bool = True  # False whenever any stage failed or could not be compared: what the exit code follows
    # The figures behind the kind (pipeline/divergence.py), other kinds that explain the data equally, and the
    # per-stage status ("match", "precision", "diverges: scale", "follows from features").
    evidence: dict[str, Any] = field(default_factory=dict)
    also: list[str] = field(default_factory=list)
    stages: dict[str, str] = field(default_factory=dict)
    mouth: str | None = None  # the mouth measure's one-line summary, when frames were measured


@dataclass
class Report:
    lanes: list[dict[str, Any]]
    comparisons: list[StageComparison]
    diagnosis: list[LaneDiagnosis]
    reference: str
    frames: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # Per lane: pipeline.mouth.MouthMeasure and, against the reference, RegionMetrics (both as dicts).
    mouth: list[dict[str, Any]] = field(default_factory=list)
    gated: bool = False  # True when tolerances were given: then each comparison's `passed` follows them

    @property
    def passed(self) -> bool:
        """True only when every lane compared matched at every stage (what `report`'s exit code 3 follows)."""
        return all(c.passed for c in self.comparisons) and all(d.passed for d in self.diagnosis)

    def to_json(self) -> dict[str, Any]:
        return _finite_or_none(
            {
                "reference": self.reference,
                "frames": self.frames,
                "lanes": self.lanes,
                "comparisons": [asdict(c) for c in self.comparisons],
                "diagnosis": [asdict(d) for d in self.diagnosis],
                "mouth": self.mouth,
                "errors": self.errors,
            }
        )


def _finite_or_none(value: Any) -> Any:
    """JSON has no NaN/Inf: write them as null so every consumer can parse the file."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    if isinstance(value, np.generic):
        return _finite_or_none(value.item())
    return value


def zero_pattern_agreement(a: np.ndarray, b: np.ndarray) -> float | None:
    """Fraction of positions where both arrays agree on being zero or non-zero (ReLU outputs).

    A scaled copy keeps the zero pattern exactly (agreement 1.0); different weights do not. Returns None when neither
    array has zeros, where the measure says nothing.
    """
    za, zb = a == 0, b == 0
    if not za.any() and not zb.any():
        return None
    return float(np.mean(za == zb))


def _where(stage: str, row: int | None) -> str:
    return f"first at {STAGE_ROW_UNIT.get(stage, 'row')} {row}" if row is not None else ""


def non_finite_verdict(stage: str, c: dict[str, Any], lane: str = "the lane", reference: str = "the reference",
                       lane_first: int | None = None, reference_first: int | None = None) -> str:
    """The sentence for a stage with NaN/Inf: how many, who produced them, where the first is.

    ``c`` holds ``metrics.Comparison``'s fields; ``lane_first``/``reference_first`` are the first positions along
    the stage's first axis (the caller knows the shape and, for outputs, which frame numbers were compared).
    """
    parts = []
    if c["lane_non_finite"]:
        parts.append(
            f"lane {lane} produced {c['lane_non_finite']} non-finite value(s) at the {stage} stage where the "
            f"reference is finite ({c['lane_nan']} NaN and {c['lane_inf']} Inf in the lane in all), "
            f"{_where(stage, lane_first)}"
        )
    if c["reference_non_finite"]:
        parts.append(
            f"the reference lane {reference} itself produced {c['reference_non_finite']} non-finite value(s) at the "
            f"{stage} stage ({c['reference_nan']} NaN and {c['reference_inf']} Inf), {_where(stage, reference_first)}, "
            "so nothing can match it there"
        )
    figures = (f"; over the {c['compared']} positions finite in both, max abs {c['max_abs']:.3g}"
               if c["compared"] else "; no position is finite in both")
    return "non-finite values: " + "; ".join(p.rstrip(", ") for p in parts) + figures


def classify(stage: str, c: dict[str, Any], zero_agreement: float | None, tolerance: float) -> tuple[bool, str, str]:
    """(passed, kind, verdict) for one stage's figures (``c``: ``metrics.Comparison`` as a dict).

    NaN/Inf on either side fails first: the figures cover only the positions finite in both, so a lane with a
    single NaN (or a reference with one) would otherwise read as a match.
    """
    if c.get("lane_non_finite", 0) or c.get("reference_non_finite", 0):
        return False, KIND_NON_FINITE, non_finite_verdict(stage, c)
    passed, verdict = explain(stage, c, zero_agreement, tolerance)
    if passed:
        return True, KIND_MATCH, verdict
    if not c.get("compared", 1):
        return False, KIND_EMPTY, verdict
    return False, (KIND_SCALED_COPY if verdict.startswith("a scaled copy") else KIND_DIVERGES), verdict


def explain(stage: str, c: dict[str, float], zero_agreement: float | None, tolerance: float) -> tuple[bool, str]:
    """Turn one stage's figures into PASSED/FAILED and a sentence a person can act on."""
    if c.get("lane_non_finite", 0) or c.get("reference_non_finite", 0):
        return False, non_finite_verdict(stage, c)
    max_abs = c["max_abs"]
    if not math.isfinite(max_abs):
        return False, "nothing to compare: no position holds a finite number in both lanes"
    if max_abs <= tolerance:
        return True, f"match (max abs {max_abs:.3g} <= {tolerance:g})"
    scale, r2, correction = c["scale"], c["r2"], c["correction"]
    scaled_copy = math.isfinite(r2) and r2 >= 0.999 and (zero_agreement is None or zero_agreement >= 0.999)
    if scaled_copy and math.isfinite(scale) and abs(scale - 1.0) > 1e-3:
        return False, (
            f"a scaled copy of the reference (lane ≈ {scale:.4g} × reference, R² {r2:.4f}): "
            f"multiplying the lane by {correction:.4g} fixes it"
        )
    parts = [f"diverges (max abs {max_abs:.3g}, cosine {c['cosine']:.3f}, R² of the best scale {r2:.3f})"]
    if zero_agreement is not None and zero_agreement < 0.99:
        parts.append(
            f"zero patterns differ at {100 * (1 - zero_agreement):.1f}% of positions, so no scale factor can fix it: "
            "the weights (or the input) differ"
        )
    elif math.isfinite(r2) and r2 < 0.9:
        parts.append("not a scaled copy, so no scale factor can fix it")
    if stage == "mel":
        parts.append("the audio front end differs (mel scale, FFT size, padding or resampling)")
    return False, "; ".join(parts)


def _compare_stage(
    stage: str, lane: Lane, reference: Lane, a: np.ndarray, b: np.ndarray, frames: list[int] | None,
    tolerances: gate.Tolerances | None = None,
) -> StageComparison:
    if stage in ("mel", "features") and a.shape != b.shape and a.ndim == b.ndim == 2 and a.shape[1] == b.shape[1]:
        # Mels of different length (an STFT without centring has 4 fewer frames), and the features that follow from
        # them: compare them aligned, so the figures say how far apart they are instead of giving up; the diagnosis
        # names the cause.
        offset, _ = divergence._aligned(a, b)
        lo, hi = max(0, -offset), min(a.shape[0], b.shape[0] - offset)
        comparison = _compare_stage(stage, lane, reference, a[lo:hi], b[lo + offset:hi + offset], frames, tolerances)
        comparison.passed = False
        comparison.kind = KIND_DIVERGES
        unit = STAGE_ROW_UNIT[stage]
        comparison.verdict = (f"{a.shape[0]} {unit}s against {b.shape[0]}; aligned at offset {offset:+d}: "
                              f"{comparison.verdict}")
        if comparison.gate is not None:
            comparison.gate["passed"] = False
            comparison.gate["failures"].insert(0, f"{a.shape[0]} {unit}s against {b.shape[0]}")
        return comparison
    if a.shape != b.shape:
        raise InputError(f"{stage}: lane {lane.name!r} has shape {list(a.shape)}, reference has {list(b.shape)}")
    result = compare(a, b)
    c = asdict(result)
    zeros = zero_pattern_agreement(a, b) if stage == "features" else None
    tolerance = STAGE_TOLERANCE[stage]
    lane_first = _first_row(result.first_lane_non_finite, a.shape, frames)
    reference_first = _first_row(result.first_reference_non_finite, b.shape, frames)
    passed, kind, verdict = classify(stage, c, zeros, tolerance)
    if kind == KIND_NON_FINITE:
        verdict = non_finite_verdict(stage, c, repr(lane.name), repr(reference.name), lane_first, reference_first)
    gate_result = gate.check(stage, a, b, tolerances) if tolerances is not None and tolerances.any else None
    return StageComparison(
        lane=lane.name,
        reference=reference.name,
        stage=stage,
        max_abs=c["max_abs"],
        mean_abs=c["mean_abs"],
        rel=c["rel"],
        cosine=c["cosine"],
        scale=c["scale"],
        r2=c["r2"],
        correction=c["correction"],
        zero_agreement=zeros,
        tolerance=tolerance,
        passed=passed,
        verdict=verdict,
        frames=frames,
        kind=kind,
        lane_non_finite=result.lane_non_finite,
        reference_non_finite=result.reference_non_finite,
        first_lane_non_finite_at=lane_first,
        first_reference_non_finite_at=reference_first,
        gate=gate_result.to_json() if gate_result is not None else None,
    )


def _first_row(flat_index: int, shape: tuple[int, ...], frames: list[int] | None) -> int | None:
    """The first-axis position of a flat index (an output frame number when ``frames`` says which were stacked)."""
    if flat_index < 0 or not shape:
        return None
    row = int(np.unravel_index(flat_index, shape)[0])
    return int(frames[row]) if frames is not None and row < len(frames) else row


def default_report_frames(total: int, count: int = 12) -> list[int]:
    """Evenly spaced output frames for the generator comparison when the user names none (keeps reports quick)."""
    if total <= count:
        return list(range(total))
    return sorted({int(round(x)) for x in np.linspace(0, total - 1, count)})


def lane_summary(lane: Lane | FailedLane) -> dict[str, Any]:
    """The per-lane block of the report: provenance and feature statistics (or the reason it failed)."""
    if isinstance(lane, FailedLane):
        return {"name": lane.name, "error": lane.message, "provenance": None, "features": None}
    provenance: dict[str, Any] = {"encoder": asdict(lane.encoder_provenance)}
    if lane.generator_provenance is not None:
        provenance["generator"] = asdict(lane.generator_provenance)
    return {
        "name": lane.name,
        "encoder": str(lane.spec.encoder),
        "generator": str(lane.spec.generator) if lane.spec.generator else None,
        "scale": lane.spec.scale,
        "provenance": provenance,
        "features": asdict(stats(lane.features())),
        "error": None,
    }


# Evidence only model files can give (backends/inspection.py: do the weights look untrained?), asked for by the cli
# for a lane whose verdict is "weights": (lane, reference, "encoder" or "generator") -> figures, or None.
WeightsEvidence = Callable[[Lane, Lane, str], "dict[str, Any] | None"]


def dumped_frames(lanes: list[Lane | FailedLane]) -> list[int] | None:
    """The output frames that every per-frame dump of the session covers, or None when no dump is partial.

    A port may dump its tensors, inputs or outputs for a few frames only (an .npz with `frames` + `data`); the
    default frames of the report are then chosen among those, so the report compares what the port wrote.
    """
    covered: set[int] | None = None
    for lane in lanes:
        if isinstance(lane, FailedLane):
            continue
        for dump in (getattr(lane, "tensor_dump", None), getattr(lane, "input_dump", None), lane.generator):
            indices = getattr(dump, "frame_indices", None)
            if indices is not None:
                these = {int(i) for i in indices}
                covered = these if covered is None else covered & these
    if covered is None:
        return None
    if not covered:
        raise InputError("the lanes' dumps of some frames have no output frame in common: name the frames to "
                         "compare with --frames")
    return sorted(covered)


def mouth_report_frames(total: int, count: int) -> list[int]:
    """Every k-th output frame so that at most ``count`` are measured: the mouth signal needs a time series."""
    if count <= 0 or total <= 0:
        return []
    stride = max(1, math.ceil(total / count))
    return list(range(0, total, stride))


def build_report(
    lanes: list[Lane | FailedLane], reference_index: int = 0, frames: list[int] | None = None, *,
    tolerances: gate.Tolerances | None = None, mouth_frames: int = 0, audio_check: bool = False,
    weights_evidence: WeightsEvidence | None = None,
) -> Report:
    """Compare every working lane with the reference lane at each stage both can produce, and diagnose each.

    ``tolerances`` (report --atol ...) make each comparison pass or fail by them; ``mouth_frames`` > 0 measures the
    mouth on up to that many frames spread over the clip; ``audio_check`` reruns a lane whose features diverge on
    silence and on the reversed clip; ``weights_evidence`` supplies what the model files say about the weights.
    """
    if not lanes:
        raise InputError("the session has no lanes to compare")
    reference = lanes[reference_index]
    errors = [f"lane {lane.name!r}: {lane.message}" for lane in lanes if isinstance(lane, FailedLane)]
    summaries = []
    for lane in lanes:
        try:
            summaries.append(lane_summary(lane))
        except InputError as exc:
            errors.append(f"lane {lane.name!r}: {exc}")
            summaries.append({"name": lane.name, "error": str(exc), "provenance": None, "features": None})
    if isinstance(reference, FailedLane):
        return Report(summaries, [], [], reference.name, [], errors)

    can_render = reference.generator is not None and reference.avatar is not None
    if frames is None and can_render:
        covered = dumped_frames(lanes)
        if covered is None:
            frames = default_report_frames(reference.num_frames)
        else:  # dumps of some frames only: compare on frames every such dump holds
            frames = [covered[i] for i in default_report_frames(len(covered))]
    frames = frames if can_render else []
    ref_outputs = {i: reference.raw_output(i) for i in frames} if frames and not reference.shows_dumped_frames else {}
    gated = tolerances is not None and tolerances.any
    study = _Study(reference, frames, ref_outputs, audio_check, weights_evidence)

    mouth_entries: list[dict[str, Any]] = []
    measured = mouth_report_frames(reference.num_frames, mouth_frames) if can_render and \
        not reference.shows_dumped_frames and not _has_partial_dump(reference) else []
    ref_mouth: mouth.MouthMeasure | None = None
    ref_crops: np.ndarray | None = None
    if measured:
        try:
            ref_crops = np.stack([reference.raw_output(i) for i in measured])
            ref_mouth = mouth.measure_mouth(reference.name, ref_crops, measured, reference.audio.samples)
            mouth_entries.append({"lane": reference.name, "measure": ref_mouth.to_json(), "metrics": None})
        except InputError as exc:
            errors.append(f"mouth measure of the reference {reference.name!r}: {exc}")
            measured = []

    comparisons: list[StageComparison] = []
    diagnosis: list[LaneDiagnosis] = []
    for index, lane in enumerate(lanes):
        if index == reference_index or isinstance(lane, FailedLane):
            continue
        lane_comparisons = []
        lane_outputs: dict[int, np.ndarray] = {}
        failure: str | None = None
        stage = "mel"
        try:
            lane_comparisons.append(
                _compare_stage("mel", lane, reference, lane.mel(), reference.mel(), None, tolerances))
            stage = "features"
            lane_comparisons.append(
                _compare_stage("features", lane, reference, lane.features(), reference.features(), None, tolerances)
            )
            rendering = bool(frames) and lane.generator is not None
            stage = "tensors"
            if rendering and (lane.tensor_dump is not None or reference.tensor_dump is not None):
                lane_comparisons.append(_compare_stage(
                    "tensors", lane, reference, _per_frame(lane.audio_tensors, frames),
                    _per_frame(reference.audio_tensors, frames), list(frames), tolerances))
            stage = "inputs"
            if rendering and (lane.input_dump is not None or reference.input_dump is not None) \
                    and not lane.shows_dumped_frames:
                lane_comparisons.append(_compare_stage(
                    "inputs", lane, reference, np.stack([lane.generator_input(i).tensor for i in frames]),
                    np.stack([reference.generator_input(i).tensor for i in frames]), list(frames), tolerances))
            stage = "outputs"
            if rendering:
                if lane.shows_dumped_frames or reference.shows_dumped_frames:
                    # Another program's final frames: only the pasted-back frames can be compared.
                    out = np.stack([lane.frame(i).image for i in frames]).astype(np.float32)
                    ref = np.stack([reference.frame(i).image for i in frames]).astype(np.float32)
                    lane_comparisons.append(
                        _compare_stage("frames", lane, reference, out, ref, list(frames), tolerances))
                else:
                    out = np.stack([lane.raw_output(i) for i in frames])
                    lane_outputs = dict(zip(frames, out))
                    ref = np.stack([ref_outputs[i] for i in frames])
                    lane_comparisons.append(
                        _compare_stage("outputs", lane, reference, out, ref, list(frames), tolerances))
        except InputError as exc:
            errors.append(f"lane {lane.name!r}: {exc}")
            failure = f"could not be compared at the {stage} stage: {exc}"
        comparisons.extend(lane_comparisons)
        verdict = _diagnose(lane.name, lane_comparisons, failure, stage)
        if verdict.kind not in (KIND_NON_FINITE, KIND_EMPTY, KIND_ERROR):
            try:
                verdict = study.diagnose(lane, lane_outputs, lane_comparisons)
            except InputError as exc:
                errors.append(f"lane {lane.name!r}: diagnosis: {exc}")
        if gated:
            for c in lane_comparisons:
                if c.gate is not None:  # tolerances decide, except that NaN/Inf is never within any of them
                    c.passed = bool(c.gate["passed"]) and c.kind != KIND_NON_FINITE
            verdict.passed = failure is None and all(c.passed for c in lane_comparisons)
        if measured and ref_mouth is not None and ref_crops is not None and not lane.shows_dumped_frames \
                and lane.generator is not None and failure is None and not _has_partial_dump(lane):
            try:
                crops = np.stack([lane_outputs[i] if i in lane_outputs else lane.raw_output(i) for i in measured])
                measure = mouth.measure_mouth(lane.name, crops, measured, reference.audio.samples, ref_mouth.range_px)
                metrics = mouth.region_metrics(crops, ref_crops)
                mouth_entries.append({"lane": lane.name, "measure": measure.to_json(), "metrics": metrics.to_json()})
                verdict.mouth = measure.summary
                verdict.evidence["mouth_range_px"] = measure.range_px
                verdict.evidence["mouth_loudness_r"] = measure.best_correlation
                verdict.evidence["mouth_psnr"] = metrics.mouth_psnr
                if not measure.moves and ref_mouth.moves:
                    verdict.explanation += f"; mouth: {measure.summary} (mouth-region PSNR {metrics.mouth_psnr:.1f} " \
                                           f"dB against a whole-crop {metrics.psnr:.1f} dB)"
            except InputError as exc:
                errors.append(f"mouth measure of lane {lane.name!r}: {exc}")
        diagnosis.append(verdict)
    report = Report(summaries, comparisons, diagnosis, reference.name, list(frames or []), errors)
    report.mouth = mouth_entries
    report.gated = gated
    return report


def _has_partial_dump(lane: Lane) -> bool:
    """A lane with a dump of some frames only cannot be measured on frames spread over the clip: an .npz naming its
    frames, or a plain array with fewer rows than the clip has output frames (`dump --frames 0:6`)."""
    dumps = [d for d in (getattr(lane, "tensor_dump", None), getattr(lane, "input_dump", None), lane.generator)
             if d is not None and hasattr(d, "covers")]
    return any(getattr(d, "frame_indices", None) is not None or d.num_frames < lane.num_frames for d in dumps)


def _per_frame(producer: Callable[[range], np.ndarray], frames: list[int]) -> np.ndarray:
    return np.stack([producer(range(i, i + 1))[0] for i in frames])


class _Study:
    """The diagnosis of each lane against the reference (pipeline/divergence.py), with the reference's arrays and
    reproduction context computed once for all lanes."""

    def __init__(self, reference: Lane, frames: list[int], ref_outputs: dict[int, np.ndarray], audio_check: bool,
                 weights_evidence: WeightsEvidence | None) -> None:
        self.reference = reference
        self.frames = list(frames)
        self.ref_outputs = ref_outputs
        self.audio_check = audio_check
        self.weights_evidence = weights_evidence
        self._arrays: dict[bool, divergence.LaneArrays] = {}
        self._context: divergence.ReferenceContext | None = None

    def _reference(self, images: bool) -> divergence.LaneArrays:
        if images not in self._arrays:
            self._arrays[images] = divergence.collect(self.reference, self.frames, self.ref_outputs, images=images)
        return self._arrays[images]

    def diagnose(self, lane: Lane, lane_outputs: dict[int, np.ndarray],
                 comparisons: list[StageComparison]) -> LaneDiagnosis:
        images = lane.shows_dumped_frames or self.reference.shows_dumped_frames
        arrays = divergence.collect(lane, self.frames, lane_outputs, images=images)
        ref = self._reference(images)
        if self._context is None:
            self._context = divergence.context_for(self.reference)
        evidence: dict[str, Any] = {}
        verdict = divergence.diagnose(arrays, ref, self._context, evidence)
        if self.audio_check and ((verdict.first_divergent_stage == "features" and verdict.kind in
                                  ("weights", "audio_ignored")) or
                                 (verdict.first_divergent_stage == "outputs" and verdict.kind == "weights")):
            from pipeline.mouth import audio_dependence

            check = audio_dependence(lane, self.frames[:: max(1, len(self.frames) // 4)])
            if check is not None:
                evidence["audio_dependence"] = check.to_json()
                verdict = divergence.diagnose(arrays, ref, self._context, evidence)
                verdict.evidence["audio_dependence"] = check.explanation
        if verdict.kind == "weights" and self.weights_evidence is not None:
            role = "encoder" if verdict.first_divergent_stage == "features" else "generator"
            found = self.weights_evidence(lane, self.reference, role)
            if found:
                evidence["weights" if role == "encoder" else "generator_weights"] = found
                verdict = divergence.diagnose(arrays, ref, self._context, evidence)
        for c in comparisons:
            status = verdict.stages.get(c.stage, "")
            if c.kind == KIND_NON_FINITE:
                continue
            if status in divergence.PASSING_KINDS:
                if not c.passed:
                    c.verdict = f"{status}: {c.verdict}"
                c.passed, c.kind = True, status
            elif c.stage == verdict.first_divergent_stage:
                c.passed, c.kind = False, verdict.kind
            elif status.startswith("follows"):
                c.passed = False
                c.verdict = f"{status}: {c.verdict}"
        if verdict.first_divergent_stage is None:
            explanation = verdict.explanation
        else:
            explanation = f"first divergence at the {verdict.first_divergent_stage} stage: {verdict.kind}: " \
                          f"{verdict.explanation}"
        return LaneDiagnosis(lane.name, verdict.first_divergent_stage, explanation, verdict.kind, verdict.passed,
                             evidence=verdict.evidence, also=verdict.also, stages=verdict.stages)


def _diagnose(lane: str, comparisons: list[StageComparison], failure: str | None = None,
              failed_stage: str | None = None) -> LaneDiagnosis:
    """The lane's verdict: its first failed stage, else the stage it could not produce, else a match.

    "matches" is said only when every stage compared passed and none was cut short, so a lane whose features could
    not be computed is never called a match on the strength of its mel alone. NaN/Inf at a later stage than the first
    divergence is named too, because it changes what to fix.
    """
    for index, c in enumerate(comparisons):
        if not c.passed:
            explanation = f"first divergence at the {c.stage} stage: {c.verdict}"
            later = [d.stage for d in comparisons[index + 1:] if d.kind == KIND_NON_FINITE]
            if later and c.kind != KIND_NON_FINITE:
                explanation += f"; non-finite values also at the {', '.join(later)} stage"
            return LaneDiagnosis(lane, c.stage, explanation, c.kind, passed=False)
    if failure is not None:
        return LaneDiagnosis(lane, failed_stage, failure, KIND_ERROR, passed=False)
    if not comparisons:
        return LaneDiagnosis(lane, None, "nothing could be compared", KIND_EMPTY, passed=False)
    return LaneDiagnosis(lane, None, "matches the reference at every stage compared", KIND_MATCH, passed=True)


def format_report(report: Report) -> str:
    """A readable plain-text table for the terminal."""
    lines: list[str] = []
    w = max([24, *(len(lane["name"]) for lane in report.lanes)])  # lane names are free text: size the column to them
    lines.append("Lanes (features after scale)")
    header = f"  {'lane':<{w}} {'min':>9} {'max':>9} {'mean':>9} {'std':>9} {'p1':>9} {'p99':>9} {'nan':>5} {'inf':>5}  provenance"
    lines.append(header)
    for lane in report.lanes:
        if lane.get("error"):
            lines.append(f"  {lane['name']:<{w}} FAILED: {lane['error']}")
            continue
        f = lane["features"]
        enc = lane["provenance"]["encoder"]
        prov = f"{enc['runtime']} {enc['version']} {enc['provider']} {enc['precision']}".strip()
        lines.append(
            f"  {lane['name']:<{w}} {f['min']:>9.4g} {f['max']:>9.4g} {f['mean']:>9.4g} {f['std']:>9.4g} "
            f"{f['p1']:>9.4g} {f['p99']:>9.4g} {f['nan']:>5d} {f['inf']:>5d}  {prov}  (scale {lane['scale']:g})"
        )
    if report.comparisons:
        lines.append("")
        lines.append(f"Comparisons with the reference lane {report.reference!r}")
        lines.append(
            f"  {'lane':<{w}} {'stage':<9} {'result':<7} {'max abs':>10} {'mean abs':>10} {'cosine':>8} "
            f"{'scale':>10} {'R²':>7}"
        )
        for c in report.comparisons:
            lines.append(
                f"  {c.lane:<{w}} {c.stage:<9} {'PASSED' if c.passed else 'FAILED':<7} {c.max_abs:>10.4g} "
                f"{c.mean_abs:>10.4g} {c.cosine:>8.4f} {c.scale:>10.4g} {c.r2:>7.4f}"
            )
            if c.kind == KIND_NON_FINITE:  # the figures cover finite positions only: say so under them
                lines.append(f"  {'':<{w}} {c.verdict}")
            if c.gate is not None and not c.gate["passed"]:
                result = gate.GateResult(**c.gate)
                lines.append(f"  {'':<{w}} outside the tolerances: {'; '.join(result.failures)}; "
                             f"{gate.describe_minimal(c.stage, result)}")
    if report.diagnosis:
        lines.append("")
        lines.append("Diagnosis")
        for d in report.diagnosis:
            lines.append(f"  {'PASSED' if d.passed else 'FAILED'} {d.lane} [{d.kind}]: {d.explanation}")
            if d.also:
                lines.append(f"    also explained as: {', '.join(d.also)}")
    if report.mouth:
        lines.append("")
        lines.append("Mouth (opening of the generated mouth's interior, from the crops alone)")
        lines.append(f"  {'lane':<{w}} {'range px':>8} {'mean px':>8} {'loud r':>7} {'offset':>6} "
                     f"{'mouth PSNR':>10} {'SSIM':>6} {'MAD':>6} {'crop PSNR':>9} {'SSIM':>6}  summary")
        for entry in report.mouth:
            m, r = entry["measure"], entry["metrics"]
            figures = (f"{r['mouth_psnr']:>10.1f} {r['mouth_ssim']:>6.3f} {r['mouth_mad']:>6.2f} {r['psnr']:>9.1f} "
                       f"{r['ssim']:>6.3f}" if r else f"{'(reference)':>10} {'':>6} {'':>6} {'':>9} {'':>6}")
            lines.append(f"  {entry['lane']:<{w}} {m['range_px']:>8.1f} {m['mean_px']:>8.1f} "
                         f"{m['best_correlation']:>7.2f} {m['best_offset']:>+6d} {figures}  {m['summary']}")
    if report.frames:
        lines.append("")
        lines.append(f"Generator outputs compared on frames {report.frames[0]}..{report.frames[-1]} ({len(report.frames)} frames)")
    if report.errors:
        lines.append("")
        lines.append("Errors")
        for e in report.errors:
            lines.append(f"  {e}")
    return "\n".join(lines)
