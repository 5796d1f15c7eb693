"""`report [SESSION.toml] [--json OUT.json] [--frames A:B]`: compare every lane with the reference, headless.

Exits 0 when every lane matches, 3 when any lane's comparison fails (a divergence, NaN/Inf, a scaled copy), 2 for
input errors, 1 for a bug: a CI script can tell "the port is wrong" from "the session is wrong".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from backends.registry import MODELS
from cli.common import add_json_output, add_time_limit, check_outputs, write_json
from core.errors import InputError
from pipeline.lane import Lane, open_lanes, parse_frame_range
from pipeline.html_report import write_html_report
from pipeline.report import build_report, format_report
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Before minutes of work, not after.
    check_outputs((args.json, args.force, "--json"), (args.html, args.force, "--html"))
    session_path = args.session or demo_session_path()
    session = load_session(session_path)
    lanes = open_lanes(session, models=MODELS)
    reference = lanes[session.reference_index]
    frames = None
    if args.frames is not None:
        if not isinstance(reference, Lane):
            raise InputError(f"reference lane {reference.name!r} failed to open: {reference.message}")
        frames = list(parse_frame_range(args.frames, reference.num_frames))
    report = build_report(lanes, session.reference_index, frames)
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
