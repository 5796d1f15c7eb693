"""The window's diagnostics, Qt-free: the report on the lanes as they are now, the scale sweep, the mouth track.

The window's Diagnostics dock (ui/diagnostics_panel.py) snapshots a request on its own thread (``snapshot``: each
lane at the scale the window shows, the reference, how many frames to compare), computes it on a worker thread
(``compute``: pipeline.report.build_report plus the weight comparison of workspace/weight_diff.py), and applies the
newest result on its thread; ``LatestOnly`` is that worker: a request submitted while another waits replaces it, and
a result whose request was superseded is never delivered.

The lanes handed to the report and the sweep are shallow copies of the workspace's lanes with the window's scale in
their spec: they share the models, the audio, the mel and the lane's lock (so the render thread and this one never
run one lane's cached stages at once), but each keeps its own last-scale feature cache, so a sweep over nine scales
does not evict the features the render thread is drawing from.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.errors import InputError
from core.filekinds import file_kind
from pipeline.crop import output_to_uint8
from pipeline.dumps import OutputDump
from pipeline.lane import FailedLane, Lane
from pipeline.mouth import mouth_opening
from pipeline.report import Report, build_report, default_report_frames, dumped_frames
from workspace.model import LaneState, Workspace

log = logging.getLogger(__name__)

REPORT_FRAMES = 6  # generator outputs compared per refresh: the report's default is 12; the window stays quick
MOUTH_FRAMES = 24  # frames spread over the clip for the mouth measures (report's default: 64)
SWEEP_STEPS = 9
SWEEP_REGION = ((0.3, 0.8), (0.2, 0.8))  # rows, columns of the crop shown per scale: the mouth, centred
MAX_TRACKED_SCALES = 16  # mouth curves kept per lane (one per scale the lane was rendered at, newest kept)
SWEEP_SCALES = tuple(float(s) for s in np.logspace(0.0, 3.0, SWEEP_STEPS))  # 1x .. 1000x, logarithmic


# -- the lanes as the window shows them ------------------------------------------------------------------------
class Superseded(Exception):
    """A newer request replaced this one (or the window is closing): its work stops at the next model call."""


class _StoppableGenerator:
    """A lane's generator that refuses new calls once its request is superseded, so a report in flight (seconds of
    generator calls) ends within one call instead of running to the end for nothing."""

    def __init__(self, inner: Any, stop: threading.Event) -> None:
        self._inner = inner
        self._stop = stop

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        if self._stop.is_set():
            raise Superseded("superseded")
        return self._inner.generate(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def lane_at_scale(state: LaneState, stop: threading.Event | None = None) -> Lane | FailedLane:
    """The lane of ``state`` with the window's scale in its spec (a shallow copy sharing models, caches and lock),
    or a FailedLane saying why it has nothing to compare. With ``stop``, its generator calls raise Superseded once
    ``stop`` is set."""
    lane = state.lane
    if not isinstance(lane, Lane):
        return FailedLane(state.spec, state.failure or "this lane is not a pipeline lane (nothing to compare)")
    if state.failure is not None and not state.features_only:
        return FailedLane(state.spec, state.failure)
    view = copy.copy(lane)
    view.spec = dataclasses.replace(lane.spec, scale=float(state.scale))
    view._scaled = None  # its own last-scale cache; the lock, the mel and the raw features stay shared
    if stop is not None and lane.generator is not None and not isinstance(lane.generator, OutputDump):
        view.generator = _StoppableGenerator(lane.generator, stop)
    return view


@dataclass(frozen=True)
class DiagnosticsRequest:
    """What one refresh computes, captured on the window's thread."""

    lanes: list[Lane | FailedLane]
    lane_ids: list[int]
    reference_index: int
    report_frames: int = REPORT_FRAMES
    mouth_frames: int = MOUTH_FRAMES
    audio_check: bool = False
    weights: bool = True
    stop: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self.stop.set()


def snapshot(workspace: Workspace, report_frames: int = REPORT_FRAMES, mouth_frames: int = MOUTH_FRAMES,
             audio_check: bool = False, weights: bool = True) -> DiagnosticsRequest | None:
    """The request for the workspace's lanes now; None when there is nothing to compare."""
    states = list(workspace.lanes)
    if not states:
        return None
    ids = [state.lane_id for state in states]
    reference = ids.index(workspace.reference_id) if workspace.reference_id in ids else 0
    stop = threading.Event()
    return DiagnosticsRequest([lane_at_scale(state, stop) for state in states], ids, reference, report_frames,
                              mouth_frames, audio_check, weights, stop)


@dataclass
class WeightsEntry:
    """The weight comparison of one lane's model file with the reference lane's (diff-weights), or why not."""

    lane: str
    role: str  # "encoder" or "generator"
    reference_path: str
    lane_path: str
    verdict: str
    untrained: bool = False
    layers: int = 0
    untrained_layers: int = 0
    differing: int = 0
    error: str | None = None


@dataclass
class DiagnosticsResult:
    report: Report | None
    lane_ids: list[int]
    weights: list[WeightsEntry] = field(default_factory=list)
    error: str | None = None  # the whole refresh failed (then ``report`` is None)


def _report_frames(lanes: list[Lane | FailedLane], reference: Lane | FailedLane, count: int) -> list[int] | None:
    """``count`` frames spread over the clip (or over the frames every partial dump holds); None: report decides."""
    if not isinstance(reference, Lane) or reference.generator is None or reference.avatar is None:
        return None
    covered = dumped_frames(lanes)
    if covered is None:
        return default_report_frames(reference.num_frames, count)
    return [covered[i] for i in default_report_frames(len(covered), count)]


def weights_evidence_for(cache: WeightsCache) -> Callable[[Lane, Lane, str], dict[str, Any] | None]:
    """build_report's ``weights_evidence``: what the model files say, as `report` gives it."""

    def evidence(lane: Lane, reference: Lane, role: str) -> dict[str, Any] | None:
        entry = cache.entry(lane, reference, role)
        if entry is None:
            return None
        if entry.error is not None:
            return {"detail": f"the weights could not be compared ({entry.error})"}
        return {"untrained": entry.untrained, "untrained_layers": entry.untrained_layers, "layers": entry.layers,
                "detail": entry.verdict}

    return evidence


class WeightsCache:
    """diff-weights results by (reference file, lane file) and the files' signatures: model files are read once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple, WeightsEntry] = {}

    def entry(self, lane: Lane, reference: Lane, role: str) -> WeightsEntry | None:
        """None where either side is not a model file (a dump has no weights) or both are the same file."""
        from workspace.model import source_signature
        from workspace.weight_diff import diff_weights

        a, b = getattr(reference.spec, role, None), getattr(lane.spec, role, None)
        if a is None or b is None:
            return None
        try:
            if file_kind(a, role) == "dump" or file_kind(b, role) == "dump":
                return None
        except InputError:
            return None
        key = (role, str(a), str(b), source_signature(dataclasses.replace(reference.spec, scale=1.0)),
               source_signature(dataclasses.replace(lane.spec, scale=1.0)))
        with self._lock:
            found = self._entries.get(key)
        if found is not None:
            return dataclasses.replace(found, lane=lane.name)
        try:
            diff = diff_weights(a, b)
            entry = WeightsEntry(lane.name, role, str(a), str(b), diff.verdict,
                                 untrained=len(diff.untrained_b) * 2 > len(diff.b.layers), layers=len(diff.b.layers),
                                 untrained_layers=len(diff.untrained_b),
                                 differing=sum(1 for c in diff.layers if "weights differ" in c.flags))
        except (InputError, OSError, ValueError) as error:
            entry = WeightsEntry(lane.name, role, str(a), str(b), "", error=str(error))
        with self._lock:
            self._entries[key] = entry
        return entry


def compute(request: DiagnosticsRequest, weights_cache: WeightsCache | None = None,
            should_stop: Callable[[], bool] = lambda: False) -> DiagnosticsResult | None:
    """The report on the request's lanes (and their weight comparison); runs on a worker thread. None when the
    request was superseded half-way."""
    cache = weights_cache or WeightsCache()
    lanes = request.lanes
    reference = lanes[request.reference_index]
    try:
        frames = _report_frames(lanes, reference, request.report_frames)
        report = build_report(lanes, request.reference_index, frames, mouth_frames=request.mouth_frames,
                              audio_check=request.audio_check,
                              weights_evidence=weights_evidence_for(cache) if request.weights else None)
    except Superseded:
        return None
    except InputError as error:
        return DiagnosticsResult(None, request.lane_ids, error=str(error))
    entries: list[WeightsEntry] = []
    if request.weights and isinstance(reference, Lane):
        for index, lane in enumerate(lanes):
            if index == request.reference_index or not isinstance(lane, Lane):
                continue
            for role in ("encoder", "generator"):
                if should_stop() or request.stop.is_set():
                    return None
                if str(getattr(lane.spec, role, None)) == str(getattr(reference.spec, role, None)):
                    continue  # the same file: nothing to compare
                entry = cache.entry(lane, reference, role)
                if entry is not None:
                    entries.append(entry)
    return DiagnosticsResult(report, request.lane_ids, entries)


# -- the scale sweep -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepRequest:
    lane: Lane
    lane_id: int
    name: str
    frame: int
    scales: tuple[float, ...] = SWEEP_SCALES


@dataclass
class SweepTile:
    scale: float
    mouth: np.ndarray | None  # [h, w, 3] uint8 BGR: the mouth region of the generator's crop at this scale
    opening: float | None  # the mouth-opening measure (px) of that crop
    error: str | None = None


@dataclass
class SweepResult:
    lane_id: int
    name: str
    frame: int
    tiles: list[SweepTile]


def sweep_request(state: LaneState, frame: int, scales: tuple[float, ...] = SWEEP_SCALES) -> SweepRequest:
    """A sweep of ``state``'s lane at ``frame``; InputError when the lane cannot draw frames."""
    lane = lane_at_scale(state)
    if isinstance(lane, FailedLane):
        raise InputError(f"lane {state.name}: {lane.message}")
    if lane.generator is None or lane.avatar is None or lane.shows_dumped_frames:
        raise InputError(f"lane {state.name} draws no generator crops of its own (no generator model or avatar, "
                         "or its frames come from a dump): there is nothing to sweep")
    return SweepRequest(lane, state.lane_id, state.name, int(frame), tuple(scales))


def mouth_region(crop: np.ndarray) -> np.ndarray:
    """The part of a generator crop ([S, S, 3]) a sweep tile shows: the mouth with some face around it."""
    (r0, r1), (c0, c1) = SWEEP_REGION
    h, w = crop.shape[:2]
    return np.ascontiguousarray(crop[int(r0 * h):int(r1 * h), int(c0 * w):int(c1 * w)])


def render_sweep(request: SweepRequest, should_stop: Callable[[], bool] = lambda: False) -> SweepResult | None:
    """The lane's mouth at each scale (None when superseded half-way); runs on a worker thread."""
    tiles: list[SweepTile] = []
    for scale in request.scales:
        if should_stop():
            return None
        try:
            crop = output_to_uint8(request.lane.raw_output(request.frame, scale))
            tiles.append(SweepTile(scale, mouth_region(crop), float(mouth_opening(crop[None])[0])))
        except InputError as error:  # a scale float32 cannot carry for this lane, a frame that raises
            tiles.append(SweepTile(scale, None, None, str(error)))
    return SweepResult(request.lane_id, request.name, request.frame, tiles)


# -- the mouth-opening signal of the frames rendered so far ---------------------------------------------------
class MouthTrack:
    """Per lane and scale, the mouth opening (px, pipeline.mouth.mouth_opening) of each frame rendered so far."""

    def __init__(self) -> None:
        self.num_frames = 0
        self._curves: dict[tuple[int, float], np.ndarray] = {}

    def reset(self, num_frames: int) -> None:
        self.num_frames = int(num_frames)
        self._curves.clear()

    def forget_other_lanes(self, lane_ids: set[int]) -> None:
        for key in [k for k in self._curves if k[0] not in lane_ids]:
            del self._curves[key]

    def note(self, lane_id: int, scale: float, index: int, crop: np.ndarray) -> None:
        """A rendered frame's generator crop ([S, S, 3] uint8): one narrow slice of it is measured."""
        if not 0 <= index < self.num_frames:
            return
        try:
            opening = float(mouth_opening(np.asarray(crop)[None])[0])
        except InputError:  # not a colour crop (a stand-in lane's picture): nothing to measure
            return
        key = (lane_id, float(scale))
        curve = self._curves.pop(key, None)
        if curve is None:
            curve = np.full(self.num_frames, np.nan)
            scales = [k for k in self._curves if k[0] == lane_id]
            for old in scales[:max(0, len(scales) - MAX_TRACKED_SCALES + 1)]:  # a slider drag: keep the latest
                del self._curves[old]
        self._curves[key] = curve  # most recently used last
        curve[index] = opening

    def curve(self, lane_id: int, scale: float) -> np.ndarray | None:
        return self._curves.get((lane_id, float(scale)))


# -- the worker ----------------------------------------------------------------------------------------------
@dataclass
class WorkFailed:
    """An unexpected exception in a worker's job: the message and the traceback, delivered like a result."""

    message: str
    details: str


class LatestOnly:
    """One worker thread that computes only the newest request.

    ``submit`` replaces a request still waiting; ``deliver(generation, result)`` is called (on the worker thread)
    only when no newer request was submitted meanwhile. ``work(request, should_stop)`` may poll ``should_stop`` to
    give up a superseded request early; a request with a ``cancel()`` method is also told when it is superseded.
    """

    def __init__(self, name: str, work: Callable[[Any, Callable[[], bool]], Any],
                 deliver: Callable[[int, Any], None]) -> None:
        self.name = name
        self._work = work
        self._deliver = deliver
        self._cond = threading.Condition()
        self._pending: tuple[int, Any] | None = None
        self._stopping = False
        self.generation = 0
        self.running: int | None = None  # generation being computed (tests and the panel's "computing…" read it)
        self._running_request: Any = None
        self._thread: threading.Thread | None = None

    def _supersede(self) -> None:
        """Under the lock: tell the waiting and the running request that they are no longer wanted."""
        for request in (self._pending[1] if self._pending else None, self._running_request):
            cancel = getattr(request, "cancel", None)
            if callable(cancel):
                cancel()

    def submit(self, request: Any) -> int:
        with self._cond:
            self._supersede()
            self.generation += 1
            self._pending = (self.generation, request)
            if self._thread is None or not self._thread.is_alive():
                self._stopping = False
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            self._cond.notify_all()
            return self.generation

    def cancel(self) -> None:
        """Drop what waits and what runs (its result will not be delivered)."""
        with self._cond:
            self._supersede()
            self.generation += 1
            self._pending = None

    @property
    def idle(self) -> bool:
        with self._cond:
            return self._pending is None and self.running is None

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._supersede()
            self._stopping = True
            self._pending = None
            self.generation += 1
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                assert self._pending is not None
                generation, request = self._pending
                self._pending = None
                self.running = generation
                self._running_request = request
            try:
                result = self._work(request, lambda g=generation: g != self.generation)
            except Exception as error:  # reported to the window, which shows it
                log.exception("%s failed", self.name)
                result = WorkFailed(f"{type(error).__name__}: {error}", traceback.format_exc())
            with self._cond:
                self.running = None
                self._running_request = None
                current = generation == self.generation and not self._stopping
            if current and result is not None:
                self._deliver(generation, result)
