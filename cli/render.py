"""`render [SESSION.toml] --out FILE.mp4 [--frames A:B] [--lanes NAMES] [--crop] [--diff] [--force]
[--png FRAME.png --frame N]`: the lanes side by side as a video with the session's audio, or one frame as a PNG.

Evidence for people who never run the app: each column is titled with its lane's name, scale and provenance, and
every picture carries its frame number and time (pipeline/compose.py draws it, the same way the window exports).
Both output paths are checked before any model is opened, so a typo or an existing file costs no waiting; Ctrl+C
stops between frames, leaves no partial file and exits 130.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Iterator, Sequence, TextIO

import cv2
import numpy as np

from backends.registry import MODELS
from core import safe_write
from core.constants import SAMPLE_RATE, VIDEO_FPS
from core.errors import InputError
from pipeline.compose import ComposeOptions, PanelLabel, compose_frame, label_for_lane
from pipeline.lane import FailedLane, Lane, open_lanes, parse_frame_range
from pipeline.session import demo_session_path, load_session
from pipeline.video_export import audio_for_frames, check_mp4_path, encode_video
from cli.common import add_time_limit


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "render",
        help="write the lanes side by side as an MP4 with the audio (or one frame as a PNG)",
        description="Render the session's lanes side by side, each titled with its name, scale and provenance, "
        "with the frame number and time, into an H.264 + AAC MP4 at 25 fps muxed with the session's audio for the "
        "same frames; or one frame as a PNG (--png/--frame).",
    )
    p.add_argument("session", nargs="?", type=Path, help="session .toml (default: the demo)")
    p.add_argument("--out", type=Path, metavar="FILE.mp4", help="the video to write")
    p.add_argument("--frames", metavar="A:B", help="output frames A..B-1 (default: the whole clip)")
    p.add_argument("--lanes", metavar="NAMES", help="comma-separated lane names (or 1-based numbers), in the order "
                   "to show them (default: every lane of the session)")
    p.add_argument("--crop", action="store_true", help="add each lane's generator crop, enlarged, below its frame")
    p.add_argument("--diff", action="store_true", help="add a panel |reference - next lane| x4")
    p.add_argument("--png", type=Path, metavar="FRAME.png", help="also (or only) write one frame as a PNG")
    p.add_argument("--frame", type=int, metavar="N", help="the frame --png shows (default: the first of --frames)")
    p.add_argument("--force", action="store_true", help="replace FILE.mp4 / FRAME.png if they exist")
    add_time_limit(p)
    p.set_defaults(func=run)


def select_lanes(lanes: Sequence[Lane | FailedLane], names: str | None) -> list[int]:
    """Indices of the lanes --lanes names (exact names, or 1-based numbers), in the order given."""
    if names is None or not names.strip():
        return list(range(len(lanes)))
    chosen: list[int] = []
    available = [lane.name for lane in lanes]
    for raw in names.split(","):
        name = raw.strip()
        if not name:
            continue
        if name in available:
            index = available.index(name)
        elif name.isdigit() and 1 <= int(name) <= len(lanes):
            index = int(name) - 1
        else:
            raise InputError(f"--lanes {name!r}: expected one of the session's lanes "
                             f"({', '.join(repr(n) for n in available)}) or a number 1..{len(lanes)}")
        if index in chosen:
            raise InputError(f"--lanes: lane {available[index]!r} is named twice")
        chosen.append(index)
    if not chosen:
        raise InputError(f"--lanes {names!r}: expected at least one lane name")
    return chosen


RENDER_CHUNK = 16  # frames per lane per generator call (pipeline.lane.Lane.frames)


class LaneRenderer:
    """Draws composed pictures for a set of lanes; a lane that cannot draw shows its reason in its own column.

    A lane's first InputError is remembered, so a lane without a generator costs one failed try, not one per frame.
    """

    def __init__(self, lanes: Sequence[Lane | FailedLane], reference: int, options: ComposeOptions) -> None:
        self.lanes = list(lanes)
        self.options = options
        self.failures: dict[int, str] = {k: lane.message for k, lane in enumerate(self.lanes)
                                         if isinstance(lane, FailedLane)}
        self.labels: list[PanelLabel] = [label_for_lane(lane, reference=(k == reference))
                                         for k, lane in enumerate(self.lanes)]
        working = [lane for lane in self.lanes if isinstance(lane, Lane)]
        if not working:
            raise InputError("no lane could be opened: " + "; ".join(f"{lane.name}: {lane.message}"
                                                                      for lane in self.lanes))
        self.total = working[0].num_frames
        self.audio = working[0].audio

    def pictures(self, frame: int) -> list:
        items: list = []
        for k, lane in enumerate(self.lanes):
            if k in self.failures:
                items.append(self.failures[k])
                continue
            try:
                items.append(lane.frame(frame))
            except InputError as exc:
                self.failures[k] = str(exc)
                items.append(str(exc))
        return items

    def compose(self, frame: int) -> np.ndarray:
        return self._compose_items(frame, self.pictures(frame))

    def _compose_items(self, frame: int, items: list) -> np.ndarray:
        if all(isinstance(item, str) for item in items):
            raise InputError("no lane can draw frames: " + "; ".join(
                f"{label.name}: {item}" for label, item in zip(self.labels, items)))
        return compose_frame(items, self.labels, frame, self.total, self.options)

    def _render_chunk(self, k: int, lane: Lane | FailedLane, chunk: list[int]) -> list:
        """Lane k's pictures for several frames, with one generator call per chunk where the lane can batch."""
        if k in self.failures:
            return [self.failures[k]] * len(chunk)
        try:
            batch = getattr(lane, "frames", None)
            return list(batch(chunk)) if callable(batch) else [lane.frame(i) for i in chunk]
        except InputError as exc:
            self.failures[k] = str(exc)
            return [str(exc)] * len(chunk)

    def frames(self, indices: Sequence[int]) -> Iterator[np.ndarray]:
        """Composed pictures for ``indices``, rendered RENDER_CHUNK frames at a time per lane (a GPU generator is
        far faster on a batch; Ctrl+C still stops within one chunk)."""
        indices = list(indices)
        for start in range(0, len(indices), RENDER_CHUNK):
            chunk = indices[start:start + RENDER_CHUNK]
            columns = [self._render_chunk(k, lane, chunk) for k, lane in enumerate(self.lanes)]
            for j, i in enumerate(chunk):
                yield self._compose_items(i, [column[j] for column in columns])


class TerminalProgress:
    """A progress bar on stderr: redrawn in place on a terminal, a line every 10% when piped into a log."""

    def __init__(self, label: str, stream: TextIO | None = None, width: int = 30) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = time.monotonic()
        self._last_draw = 0.0
        self._last_decile = -1

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        elapsed = max(now - self.started, 1e-6)
        rate = done / elapsed
        eta = (total - done) / rate if rate > 0 else 0.0
        text = f"{self.label} {done}/{total} frames  {rate:4.1f} frames/s  {eta:4.0f} s left"
        if self.tty:
            if done < total and now - self._last_draw < 0.1:
                return
            self._last_draw = now
            filled = int(self.width * done / max(total, 1))
            self.stream.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] {text}")
            if done >= total:
                self.stream.write("\n")
        else:
            decile = 10 * done // max(total, 1)
            if decile == self._last_decile and done < total:
                return
            self._last_decile = decile
            self.stream.write(text + "\n")
        self.stream.flush()

    def interrupted(self) -> None:
        if self.tty:
            self.stream.write("\n")


def write_png(path: Path, picture: np.ndarray, force: bool, what: str = "--png") -> Path:
    """One composed picture as a PNG, atomically (core.safe_write)."""
    ok, data = cv2.imencode(".png", picture)
    if not ok:
        raise InputError(f"{what} {path}: the picture could not be encoded as PNG")
    return safe_write.write_bytes(path, data.tobytes(), force, what)


def run(args: argparse.Namespace) -> int:
    if args.out is None and args.png is None:
        raise InputError("render: expected --out FILE.mp4 and/or --png FRAME.png, found neither")
    if args.frame is not None and args.png is None:
        raise InputError("--frame N: expected --png FRAME.png to write it to")
    if args.png is not None and args.png.suffix.lower() != ".png":
        raise InputError(f"--png {args.png}: expected a file name ending in .png")
    # Before minutes of loading and rendering: an existing file or an unwritable folder is said now.
    if args.out is not None:
        check_mp4_path(args.out, args.force, "--out")
    if args.png is not None:
        safe_write.check_output_path(args.png, args.force, "--png")

    session_path = args.session or demo_session_path()
    session = load_session(session_path)
    all_lanes = open_lanes(session, models=MODELS)
    chosen = select_lanes(all_lanes, args.lanes)
    lanes = [all_lanes[k] for k in chosen]
    reference = chosen.index(session.reference_index) if session.reference_index in chosen else 0
    options = ComposeOptions(crop=args.crop, diff=args.diff, title=session.title or Path(session_path).stem)
    renderer = LaneRenderer(lanes, reference, options)
    frames = parse_frame_range(args.frames, renderer.total)

    if args.png is not None:
        index = frames[0] if args.frame is None else args.frame
        if not 0 <= index < renderer.total:
            raise InputError(f"--frame {index}: expected a frame 0..{renderer.total - 1}")
        write_png(args.png, renderer.compose(index), args.force)
        print(f"wrote {args.png} (frame {index})")

    if args.out is not None:
        audio = audio_for_frames(renderer.audio.samples, frames.start, frames.stop, SAMPLE_RATE, VIDEO_FPS)
        progress = TerminalProgress(f"render {args.out.name}:")
        try:
            encode_video(args.out, renderer.frames(frames), len(frames), audio, SAMPLE_RATE, force=args.force,
                         progress=progress, what="--out")
        except KeyboardInterrupt:
            progress.interrupted()
            print(f"render: interrupted; {args.out} was not written (nothing partial left behind)", file=sys.stderr)
            return 130
        print(f"wrote {args.out}: frames {frames.start}..{frames.stop - 1} ({len(frames)} frames, "
              f"{len(frames) / VIDEO_FPS:.2f} s) of {len(lanes)} lane(s), H.264 + AAC at {VIDEO_FPS} fps")
    for k, message in sorted(renderer.failures.items()):
        print(f"warning: lane {renderer.labels[k].name!r} shows no picture: {message}", file=sys.stderr)
    return 0
