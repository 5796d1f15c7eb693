"""`report [SESSION.toml] [--json OUT.json] [--frames A:B] [--atol ..] [--clips DIR_OR_GLOB]`: compare every lane
with the reference, headless.

Exits 0 when every lane matches, 3 when any lane's comparison fails (a divergence, NaN/Inf, a scaled copy; or, with
--atol/--rtol/--cosine-min/--psnr-min, any comparison outside those tolerances), 2 for input errors, 1 for a bug: a
CI script can tell "the port is wrong" from "the session is wrong". `--clips` runs the session over many clips, in
parallel processes, and prints one aggregated table.
"""

from __future__ import annotations

import argparse
import glob
import math
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from backends.registry import MODELS
from cli.common import add_json_output, add_time_limit, check_outputs, write_json
from core.errors import InputError
from pipeline.lane import Lane, open_lanes, parse_frame_range
from pipeline.html_report import write_html_report
from pipeline.gate import Tolerances
from pipeline.report import _finite_or_none, build_report, format_report
from pipeline.session import demo_session_path, load_session


# Exit codes scripts rely on (README, "report"): every lane matched; a lane or the session could not be read or
# compared (input errors win: a mismatch report over half the lanes would mislead); some lane's comparison failed.
# 1 stays the "bug in lipsync-compare" code of cli/main.py.
EXIT_MATCH = 0
EXIT_INPUT_ERROR = 2
EXIT_MISMATCH = 3


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report",
        help="compare every lane with the reference lane, without a window",
        description="Compare every lane of a session with its reference lane (the first unless the session says "
        "otherwise) at the mel, feature and generator-output stages, and say where they first diverge.",
    )
    p.add_argument("session", nargs="?", type=Path, help="session .toml (default: the demo)")
    add_json_output(p, "report")
    p.add_argument("--html", type=Path, metavar="OUT.html", help="also write a self-contained HTML page (verdicts, "
                   "provenance, plots, mouth pictures) to open in any browser; --force replaces it")
    p.add_argument("--frames", metavar="A:B", help="output frames to compare the generators on (default: 12 spread "
                   "over the clip)")
    add_time_limit(p)
    gate = p.add_argument_group(
        "CI gate", "Polygraphy's semantics: an element fails only when outside both --atol and --rtol. Each flag is "
        "VALUE (every stage) or STAGE=VALUE (mel, features, tensors, inputs, outputs, frames) and may be repeated. "
        "Exit 3 when any comparison is outside them; the smallest tolerance that would have passed is printed.")
    gate.add_argument("--atol", action="append", metavar="[STAGE=]A", help="absolute tolerance")
    gate.add_argument("--rtol", action="append", metavar="[STAGE=]R", help="relative tolerance (|a-b| / |reference|)")
    gate.add_argument("--cosine-min", action="append", metavar="[STAGE=]C", help="lowest cosine similarity accepted")
    gate.add_argument("--psnr-min", action="append", metavar="[STAGE=]DB",
                      help="lowest PSNR in dB accepted (peak 1 for inputs/outputs, 255 for frames, the reference's "
                      "peak |value| for mel, features, tensors)")
    p.add_argument("--clips", metavar="DIR_OR_GLOB", help="run the session over every clip in a folder (wav, flac, "
                   "ogg) or matching a glob, in parallel, and print one table per lane and stage: worst, median, "
                   "failing clips")
    p.add_argument("--mouth-frames", type=int, default=64, metavar="N", help="measure the mouth on up to N frames "
                   "spread over the clip (0: skip; default 64)")
    p.add_argument("--no-audio-check", action="store_true", help="skip rerunning lanes whose features diverge on "
                   "silence and on the reversed clip (the audio_ignored check)")
    p.set_defaults(func=run)


def tolerances_from(args: argparse.Namespace) -> Tolerances:
    return Tolerances.parse(args.atol, args.rtol, args.cosine_min, args.psnr_min)


def weights_evidence(lane: Lane, reference: Lane, role: str) -> dict[str, Any] | None:
    """What the model files say about a lane whose verdict is "weights" (backends/inspection.py, as diff-weights).

    Only where both lanes name model files for that role; a dump has no weights to look at.
    """
    from cli.diff_weights import diff_weights
    from core.filekinds import file_kind

    a, b = getattr(reference.spec, role), getattr(lane.spec, role)
    if a is None or b is None:
        return None
    try:
        if file_kind(a, role) == "dump" or file_kind(b, role) == "dump":
            return None
        diff = diff_weights(a, b)
    except (InputError, OSError, ValueError) as exc:
        return {"detail": f"the weights could not be compared ({exc})"}
    layers = len(diff.b.layers)
    untrained = len(diff.untrained_b)
    return {"untrained": untrained * 2 > layers, "untrained_layers": untrained, "layers": layers,
            "detail": diff.verdict}


def run(args: argparse.Namespace) -> int:
    # Before minutes of work, not after.
    check_outputs((args.json, args.force, "--json"), (args.html, args.force, "--html"))
    tolerances = tolerances_from(args)
    if args.mouth_frames < 0:
        raise InputError(f"--mouth-frames {args.mouth_frames}: expected 0 (skip) or a positive number of frames")
    session_path = args.session or demo_session_path()
    session = load_session(session_path)
    if args.clips is not None:
        if args.html:
            raise InputError("--html writes one session's page; with --clips use --json (the page shows one clip)")
        return run_clips(args, session_path, tolerances)
    lanes = open_lanes(session, models=MODELS)
    reference = lanes[session.reference_index]
    frames = None
    if args.frames is not None:
        if not isinstance(reference, Lane):
            raise InputError(f"reference lane {reference.name!r} failed to open: {reference.message}")
        frames = list(parse_frame_range(args.frames, reference.num_frames))
    report = build_report(lanes, session.reference_index, frames, tolerances=tolerances,
                          mouth_frames=args.mouth_frames, audio_check=not args.no_audio_check,
                          weights_evidence=weights_evidence)
    print(format_report(report))
    if args.json:
        write_json(args.json, report.to_json(), args.force)
        print(f"\nwrote {args.json}")
    if args.html:
        command = f"python app.py report {session_path}" + (f" --frames {args.frames}" if args.frames else "")
        write_html_report(args.html, report, lanes, session, args.force, command)
        print(f"wrote {args.html}")
    if report.errors:
        print(f"error: {len(report.errors)} lane(s) could not be compared (see Errors above)", file=sys.stderr)
        return EXIT_INPUT_ERROR
    if not report.passed:
        failed = sorted({d.lane for d in report.diagnosis if not d.passed} | {c.lane for c in report.comparisons
                                                                              if not c.passed})
        print(f"report: {len(failed)} lane(s) do not match the reference: {', '.join(failed)}", file=sys.stderr)
        return EXIT_MISMATCH
    return EXIT_MATCH


AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


def find_clips(pattern: str) -> list[Path]:
    """The clips of a folder (wav/flac/ogg, sorted) or of a glob; none is an InputError naming the pattern."""
    path = Path(pattern).expanduser()
    if path.is_dir():
        clips = sorted(p for p in path.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    else:
        clips = sorted(Path(p) for p in glob.glob(str(path)) if Path(p).is_file())
    if not clips:
        raise InputError(f"--clips {pattern}: expected a folder with .wav/.flac/.ogg clips or a glob matching "
                         "audio files, found none")
    return [c.resolve() for c in clips]


def _report_clip(session_path: str, clip: str, frames: str | None, tolerance_args: dict[str, list[str] | None]
                 ) -> dict[str, Any]:
    """One clip, in a worker process: the session's lanes over this audio, as JSON-ready figures."""
    try:
        session = replace(load_session(session_path), audio=Path(clip))
        lanes = open_lanes(session, models=MODELS)
        reference = lanes[session.reference_index]
        chosen = None
        if frames is not None and isinstance(reference, Lane):
            chosen = list(parse_frame_range(frames, reference.num_frames))
        report = build_report(lanes, session.reference_index, chosen, tolerances=Tolerances.parse(**tolerance_args))
    except InputError as exc:
        return {"clip": clip, "errors": [str(exc)], "comparisons": [], "diagnosis": []}
    data = report.to_json()
    return {"clip": clip, "errors": data["errors"], "comparisons": data["comparisons"],
            "diagnosis": [{k: d[k] for k in ("lane", "first_divergent_stage", "kind", "passed")}
                          for d in data["diagnosis"]]}


def aggregate(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per lane and stage over the clips: worst and median max-abs and cosine, and the clips that failed."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for result in results:
        for c in result["comparisons"]:
            row = rows.setdefault((c["lane"], c["stage"]), {"lane": c["lane"], "stage": c["stage"], "max_abs": [],
                                                              "cosine": [], "failing": [], "clips": 0})
            row["clips"] += 1
            row["max_abs"].append(c["max_abs"] if c["max_abs"] is not None else math.inf)
            row["cosine"].append(c["cosine"] if c["cosine"] is not None else -math.inf)
            if not c["passed"]:
                row["failing"].append(Path(result["clip"]).name)
    out = []
    for row in rows.values():
        max_abs, cosine = np.asarray(row["max_abs"], float), np.asarray(row["cosine"], float)
        out.append({"lane": row["lane"], "stage": row["stage"], "clips": row["clips"],
                    "worst_max_abs": float(max_abs.max()), "median_max_abs": float(np.median(max_abs)),
                    "worst_cosine": float(cosine.min()), "median_cosine": float(np.median(cosine)),
                    "failing_clips": row["failing"]})
    return out


def format_aggregate(rows: list[dict[str, Any]], clips: int) -> str:
    w = max([24, *(len(r["lane"]) for r in rows)])
    lines = [f"Over {clips} clip(s): per lane and stage",
             f"  {'lane':<{w}} {'stage':<9} {'worst max abs':>13} {'median':>10} {'worst cos':>9} {'median':>8}  "
             "failing clips"]
    for r in rows:
        failing = f"{len(r['failing_clips'])}/{r['clips']}"
        if r["failing_clips"]:
            failing += ": " + ", ".join(r["failing_clips"][:8]) + (" ..." if len(r["failing_clips"]) > 8 else "")
        lines.append(f"  {r['lane']:<{w}} {r['stage']:<9} {r['worst_max_abs']:>13.4g} {r['median_max_abs']:>10.4g} "
                     f"{r['worst_cosine']:>9.5f} {r['median_cosine']:>8.5f}  {failing}")
    return "\n".join(lines)


def run_clips(args: argparse.Namespace, session_path: Path, tolerances: Tolerances) -> int:
    """`report --clips`: the same session over many clips, one process per clip at a time, one aggregated table."""
    clips = find_clips(args.clips)
    tolerance_args = {"atol": args.atol, "rtol": args.rtol, "cosine_min": args.cosine_min, "psnr_min": args.psnr_min}
    workers = max(1, min(len(clips), os.cpu_count() or 1))
    session_text = str(Path(session_path).resolve())
    if workers == 1:
        results = [_report_clip(session_text, str(c), args.frames, tolerance_args) for c in clips]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_report_clip, [session_text] * len(clips), map(str, clips),
                                    [args.frames] * len(clips), [tolerance_args] * len(clips)))
    rows = aggregate(results)
    print(format_aggregate(rows, len(clips)))
    errors = [f"{Path(r['clip']).name}: {e}" for r in results for e in r["errors"]]
    if args.json:
        write_json(args.json, _finite_or_none({"clips": results, "aggregate": rows}), args.force)
        print(f"\nwrote {args.json}")
    if errors:
        print("\nErrors\n" + "\n".join(f"  {e}" for e in errors))
        print(f"error: {len(errors)} problem(s) in {len(clips)} clip(s) (see Errors above)", file=sys.stderr)
        return EXIT_INPUT_ERROR
    failing = [r for r in rows if r["failing_clips"]]
    if failing:
        print(f"report: {len(failing)} lane/stage comparison(s) failed on some clip", file=sys.stderr)
        return EXIT_MISMATCH
    return EXIT_MATCH
