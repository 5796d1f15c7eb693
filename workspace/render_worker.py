"""The single render thread: renders frames ahead of the playhead for every lane, newest request first.

Qt-free (a plain Python thread and a condition variable) so the scheduling rules are unit-tested without a
window; the window wraps ``deliver`` in a Qt signal to get results onto the main thread.

Rules, each one a reason:
- One thread for every lane: a Lane must not be called from two threads at once, and on a 2-core machine more
  threads would only fight the backends' own thread pools.
- Each ``submit`` bumps a generation counter. The worker checks it between jobs (a job is one frame, which it
  cannot interrupt) and re-plans from the newest request, so a seek or a scale change drops superseded work
  after at most one frame.
- A request may ask for batches (``batch`` > 1: the pre-render). After every lane's first frame, each lane's
  frames come as runs of up to ``batch`` consecutive frames, one ``Lane.frames`` call (one generator call) a run,
  round-robin across lanes run by run; the request is still checked between runs (a seek during a pre-render waits
  for at most one run). A run that raises is redrawn frame by frame, so a failure is still one frame's.
- The plan renders the frame at the playhead for every lane first, then walks ahead round-robin across lanes,
  so every lane gets a picture before any lane gets a second one. Within each frame the lane served longest ago
  goes first: during playback that cannot keep up, every new playhead supersedes the plan after one frame, and
  a fixed lane order would then only ever serve the first lane (the others froze on their first picture).
- A lane whose features raise, or whose first frames all raise (a model that cannot run), is marked failed with its
  message and never tried again (until it is replaced); the others keep rendering. A lane that has drawn frames and
  then raises on one is not failed: that frame is reported (FrameFailed, the window marks it) and not retried at that
  scale, and the lane goes on with its other frames.
- A lane can be stopped (``stop_lane``: the window's Stop on a lane whose model never returns). The call in progress
  is asked to end through core.limits (onnxruntime's RunOptions.terminate); a call that still has not returned after
  STOP_GRACE_S (a runtime without a cancel hook) is left on its thread, which is retired, and a fresh render thread
  carries on with the other lanes.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol

import numpy as np

from core import limits
from core.errors import InputError
from pipeline.lane import RenderedFrame
from workspace.frame_cache import FrameCache

log = logging.getLogger(__name__)

FAILED_FRAMES_BEFORE_LANE_FAILS = 3  # a lane that never drew a frame and fails this many in a row cannot run
STOP_GRACE_S = 2.0  # after Stop: how long a call may take to end before its thread is left behind
STOPPED_MESSAGE = ("stopped: its model did not return for {seconds:.0f} s and the lane was stopped (a model that "
                   "never ends, e.g. an ONNX Loop without an end?). Replace the model, or Reload models (Ctrl+R) "
                   "to try it again")
STOPPED_IDLE_MESSAGE = "stopped. Replace the model, or Reload models (Ctrl+R) to try it again"


class RenderableLane(Protocol):
    """What the worker calls on a lane (pipeline.lane.Lane, or a test's fake), only ever from its own thread."""

    def raw_features(self) -> np.ndarray: ...

    def frame(self, index: int, scale: float) -> RenderedFrame: ...

    # Optional: ``frames(indices, scale) -> list[RenderedFrame]``, several frames a call (pipeline.lane.Lane.frames);
    # a lane without it is drawn frame by frame even in a batched request.


@dataclass(frozen=True)
class LaneJob:
    """One lane as the worker sees it: a stable id (cache key), the Lane object and its current scale."""

    lane_id: int
    lane: RenderableLane
    scale: float
    render_frames: bool = True  # False: features only (a lane whose generator failed still gets plotted)


@dataclass(frozen=True)
class RenderRequest:
    generation: int
    playhead: int
    lanes: tuple[LaneJob, ...]
    lookahead: int
    num_frames: int
    loop: tuple[int, int] | None = None
    step: int = 1  # every step-th frame from the playhead (the playback policy's reduced preview rate)
    batch: int = 1  # frames per lane call for runs of consecutive frames (pre-render: pipeline.lane.RENDER_BATCH)


@dataclass(frozen=True)
class FeaturesReady:
    lane_id: int
    raw_features: np.ndarray  # [N+2, 512], unscaled


@dataclass(frozen=True)
class FrameReady:
    lane_id: int
    scale: float
    index: int
    frame: RenderedFrame
    generation: int


@dataclass(frozen=True)
class LaneFailed:
    lane_id: int
    message: str
    details: str  # traceback, for the "details" disclosure


@dataclass(frozen=True)
class FrameFailed:
    """One frame of a lane that draws others raised: the lane goes on; this frame is marked, not retried."""

    lane_id: int
    scale: float
    index: int
    message: str
    details: str


@dataclass(frozen=True)
class Busy:
    """The call the worker is inside: which lane, which frame (None: its features), since when (monotonic s)."""

    lane_id: int
    index: int | None
    since: float


def consecutive_runs(indices: list[int], limit: int) -> list[list[int]]:
    """``indices`` cut into runs of consecutive frames (each next = previous + 1), at most ``limit`` long."""
    runs: list[list[int]] = []
    for index in indices:
        if runs and index == runs[-1][-1] + 1 and len(runs[-1]) < limit:
            runs[-1].append(index)
        else:
            runs.append([index])
    return runs


def frame_order(playhead: int, lookahead: int, num_frames: int, loop: tuple[int, int] | None = None,
                step: int = 1) -> list[int]:
    """Frame indices to render, nearest first: the playhead, then ahead; inside a loop region it wraps around.
    With ``step`` > 1, every step-th of them (``lookahead`` still counts frames of the clip, not renders)."""
    if num_frames <= 0 or lookahead <= 0:
        return []
    playhead = max(0, min(num_frames - 1, playhead))
    if loop is not None:
        start, end = max(0, loop[0]), min(num_frames - 1, loop[1])
        if start <= playhead <= end:
            span = end - start + 1
            return [start + (playhead - start + k) % span for k in range(0, min(lookahead, span), max(1, step))]
    return list(range(playhead, min(num_frames, playhead + lookahead), max(1, step)))


class RenderWorker:
    """Owns the render thread. ``deliver`` is called on that thread with FeaturesReady/FrameReady/LaneFailed."""

    def __init__(self, cache: FrameCache, deliver: Callable[[object], None]) -> None:
        self.cache = cache
        self._deliver = deliver
        self._condition = threading.Condition()
        self._request: RenderRequest | None = None
        self._finished_generation = -1
        self._generation = 0
        self._stopped = False
        self._features_sent: set[int] = set()
        self._failed: set[int] = set()
        self.frames_rendered = 0
        self._last_served: dict[int, int] = {}  # lane id -> value of _serve_count when it last got a frame
        self._serve_count = 0
        self._failed_frames: set[tuple[int, float, int]] = set()  # (lane id, scale, frame) that raised
        self._drawn: set[int] = set()  # lanes that drew at least one frame
        self._frame_errors: dict[int, list[tuple[str, str]]] = {}  # lane id -> (message, details) of the frames
        # that failed before it drew any: a lane that cannot run is failed with the first of them
        self._gone: set[int] = set()  # lanes forgotten: a frame of theirs still in flight is not cached
        self._stopped_lanes: dict[int, float] = {}  # lane id -> when Stop was asked (monotonic s)
        self._busy: Busy | None = None
        self._epoch = 0  # bumped when a thread stuck in a stopped lane's call is retired
        self.abandoned_threads: list[threading.Thread] = []
        self._thread = self._start_thread()

    def _start_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, args=(self._epoch,), name="render-worker", daemon=True)
        thread.start()
        return thread

    # -- main thread ------------------------------------------------------------------------------------------
    def submit(self, playhead: int, lanes: list[LaneJob], lookahead: int, num_frames: int,
               loop: tuple[int, int] | None = None, step: int = 1, batch: int = 1) -> int:
        """Replace the pending request; returns its generation. ``batch`` > 1 draws runs of consecutive frames
        with one lane call each (after every lane's first frame)."""
        with self._condition:
            self._generation += 1
            self._request = RenderRequest(self._generation, playhead, tuple(lanes), lookahead, num_frames, loop,
                                          step, max(1, int(batch)))
            self._condition.notify()
            return self._generation

    def forget_lane(self, lane_id: int) -> None:
        """A lane was removed or replaced: its id is never reused, but drop its cached frames (and do not cache a
        frame of it that is being drawn now)."""
        self._gone.add(lane_id)
        self.cache.drop_lane(lane_id)

    def busy(self) -> Busy | None:
        """The lane call in progress, if any (the window offers Stop on a lane whose call lasts too long)."""
        with self._condition:
            return self._busy

    def stop_lane(self, lane_id: int) -> bool:
        """Never render this lane again; if the worker is inside one of its calls, ask the runtime to end it.

        A LaneFailed with the stopped message is delivered when the call ends (or at once when the lane was not
        running; or by ``release_stopped`` when the call does not end). Returns True when the lane was running.
        """
        with self._condition:
            if lane_id in self._stopped_lanes:
                return False
            self._stopped_lanes[lane_id] = time.monotonic()
            busy = self._busy
            self._condition.notify()
            if busy is not None and busy.lane_id == lane_id:
                # Under the lock: the worker cannot move on to another lane's job (and clear the cancel) meanwhile.
                limits.cancel_runs_on(self._thread.ident)
                return True
        self._failed.add(lane_id)
        self._deliver(LaneFailed(lane_id, STOPPED_IDLE_MESSAGE, ""))
        return False

    def release_stopped(self, grace_s: float | None = None) -> bool:
        """Called often (the transport's tick): when a stopped lane's call has not ended ``grace_s`` after Stop, retire
        the thread stuck in it and start a fresh one for the other lanes. Returns True when it did."""
        with self._condition:
            busy = self._busy
            if busy is None or busy.lane_id not in self._stopped_lanes or self._stopped:
                return False
            if time.monotonic() - self._stopped_lanes[busy.lane_id] < (STOP_GRACE_S if grace_s is None else grace_s):
                return False
            self._epoch += 1
            self._busy = None
            self._failed.add(busy.lane_id)
            self.abandoned_threads.append(self._thread)
            self._finished_generation = -1  # the new thread re-plans the pending request
            self._thread = self._start_thread()
        log.warning("lane %s: its call did not end after Stop; left on a retired thread", busy.lane_id)
        self._deliver(LaneFailed(busy.lane_id, STOPPED_MESSAGE.format(seconds=time.monotonic() - busy.since)
                                 + " (its runtime could not be interrupted: the call was left running in the "
                                 "background)", ""))
        return True

    @property
    def idle(self) -> bool:
        with self._condition:
            return self._request is None or self._finished_generation == self._request.generation

    def stop(self, timeout: float = 10.0) -> None:
        """End the render thread: a lane call in progress is asked to stop (so quitting during an endless model
        does not wait for it), then the thread is joined."""
        with self._condition:
            self._stopped = True
            self._condition.notify()
            thread = self._thread
            limits.cancel_runs_on(thread.ident)
        thread.join(timeout)

    # -- render thread ----------------------------------------------------------------------------------------
    def _superseded(self, request: RenderRequest, epoch: int) -> bool:
        return self._stale(request.generation, epoch)

    def _stale(self, generation: int, epoch: int) -> bool:
        return (self._stopped or epoch != self._epoch or self._request is None
                or self._request.generation != generation)

    def _plan(self, request: RenderRequest) -> Iterator[tuple[LaneJob, int | list[int] | None, bool]]:
        """(lane, None, _) means "compute the features"; (lane, i, _) means "render frame i"; (lane, [i, i+1, ..], _)
        means "render these consecutive frames in one call" (a batched request, past the first frame); the flag marks
        the playhead's frame drawn before the lane's features (a failure there is not reported: the features come
        next and say why, or the frame is tried again after them)."""
        order = frame_order(request.playhead, request.lookahead, request.num_frames, request.loop, request.step)
        if order:
            # The current frame first, the features for the rest later: a lane that can draw a frame from just the
            # windows it needs (Lane.draws_before_features) shows the playhead's frame before the encoder has run
            # over the whole clip.
            for job in sorted(request.lanes, key=lambda job: self._last_served.get(job.lane_id, -1)):
                key = (job.lane_id, job.scale, order[0])
                if (job.render_frames and job.lane_id not in self._features_sent and job.lane_id not in self._failed
                        and job.lane_id not in self._stopped_lanes and key not in self.cache
                        and key not in self._failed_frames and getattr(job.lane, "draws_before_features", False)):
                    yield job, order[0], True
        # The first frame alone (every lane's current frame first), then groups of ``batch`` frames of the order.
        batch = max(1, request.batch)
        groups = [order[:1]] + [order[start:start + batch] for start in range(1, len(order), batch)] if order else []
        for group in groups:
            # sorted() is stable: lanes never served keep the request's order
            for job in sorted(request.lanes, key=lambda job: self._last_served.get(job.lane_id, -1)):
                if job.lane_id in self._failed or job.lane_id in self._stopped_lanes:
                    continue
                if job.lane_id not in self._features_sent:
                    yield job, None, False
                if job.lane_id in self._failed or not job.render_frames:
                    continue
                needed = [index for index in group if (job.lane_id, job.scale, index) not in self.cache
                          and (job.lane_id, job.scale, index) not in self._failed_frames]
                for run in consecutive_runs(needed, batch):
                    batched = len(run) > 1 and callable(getattr(job.lane, "frames", None))
                    if batched:
                        yield job, run, False
                    else:
                        for index in run:
                            if (job.lane_id, job.scale, index) not in self._failed_frames:
                                yield job, index, False

    def _run(self, epoch: int) -> None:
        while True:
            with self._condition:
                while not self._stopped and epoch == self._epoch and (
                        self._request is None or self._request.generation == self._finished_generation):
                    self._condition.wait()
                if self._stopped or epoch != self._epoch:
                    return
                request = self._request
            assert request is not None
            completed = True
            for job, index, early in self._plan(request):
                if self._superseded(request, epoch):
                    completed = False
                    break
                self._execute(job, index, request.generation, epoch, early)
            with self._condition:
                if completed and not self._superseded(request, epoch):
                    self._finished_generation = request.generation

    def _execute(self, job: LaneJob, index: int | list[int] | None, generation: int, epoch: int,
                 early: bool = False) -> None:
        if isinstance(index, list):
            if self._execute_run(job, index, generation, epoch):
                return
            for single in index:  # the run raised: frame by frame, so a failure is one frame's, as without batches
                if (self._stale(generation, epoch) or job.lane_id in self._failed
                        or job.lane_id in self._stopped_lanes):
                    return
                self._execute(job, single, generation, epoch)
            return
        with self._condition:
            self._busy = Busy(job.lane_id, index, time.monotonic())
            limits.clear_cancel()  # a Stop for the previous job must not end this one; one for this job sticks
        try:
            result = job.lane.raw_features() if index is None else job.lane.frame(index, job.scale)
            error: Exception | None = None
        except Exception as exc:  # InputError is expected (bad model); anything else is still one lane's fault
            result, error, details = None, exc, traceback.format_exc()
        with self._condition:
            if epoch != self._epoch:
                return  # this thread was retired while it was stuck in the call: its result belongs to no one
            busy, self._busy = self._busy, None
            if self._stopped:
                return  # shutting down: the call may have been cancelled; nobody waits for its result
        if job.lane_id in self._stopped_lanes:
            self._failed.add(job.lane_id)
            seconds = time.monotonic() - busy.since if busy is not None else 0.0
            self._deliver(LaneFailed(job.lane_id, STOPPED_MESSAGE.format(seconds=seconds), ""))
            return
        if error is None:
            if index is None:
                self._features_sent.add(job.lane_id)
                self._deliver(FeaturesReady(job.lane_id, result))
                return
            self._accept(job, index, result, generation)
            return
        if early:  # drawn before the features: they come next, and fail with the lane's own reason if it has one
            log.info("lane %s frame %s before its features failed: %s", job.lane_id, index, error)
            return
        kind = "" if isinstance(error, InputError) else f"{type(error).__name__}: "
        message = f"{kind}{error}"
        if index is not None:
            errors = self._frame_errors.setdefault(job.lane_id, [])
            if job.lane_id not in self._drawn:
                errors.append((message, details))
            if job.lane_id in self._drawn or len(errors) < FAILED_FRAMES_BEFORE_LANE_FAILS:
                # One frame's fault (a backend that raises on some inputs): mark it, go on with the others.
                self._failed_frames.add((job.lane_id, job.scale, index))
                self._last_served[job.lane_id] = self._serve_count
                self._serve_count += 1
                log.warning("lane %s frame %s failed: %s", job.lane_id, index, error)
                self._deliver(FrameFailed(job.lane_id, job.scale, index, message, details))
                return
            message, details = errors[0]  # every frame it tried failed: the model cannot run; say why, first cause
        self._failed.add(job.lane_id)
        log.warning("lane %s failed: %s", job.lane_id, message)
        self._deliver(LaneFailed(job.lane_id, message, details))

    def _accept(self, job: LaneJob, index: int, result: RenderedFrame, generation: int) -> None:
        if job.lane_id not in self._gone:
            self.cache.put((job.lane_id, job.scale, index), result)
        self.frames_rendered += 1
        self._drawn.add(job.lane_id)
        self._last_served[job.lane_id] = self._serve_count
        self._serve_count += 1
        self._deliver(FrameReady(job.lane_id, job.scale, index, result, generation))

    def _execute_run(self, job: LaneJob, indices: list[int], generation: int, epoch: int) -> bool:
        """Draw consecutive frames with one ``frames`` call. Returns False when the call raised (the caller redraws
        them one by one, for per-frame failures); True when the run is dealt with."""
        with self._condition:
            self._busy = Busy(job.lane_id, indices[0], time.monotonic())
            limits.clear_cancel()
        try:
            results = list(job.lane.frames(indices, job.scale))
            if len(results) != len(indices):
                raise InputError(f"frames() returned {len(results)} frames for {len(indices)}")
            failed = False
        except Exception as exc:  # noqa: BLE001 - redrawn frame by frame, which reports it properly
            results, failed = [], True
            log.info("lane %s frames %s..%s in one call failed (%s): drawn one by one", job.lane_id, indices[0],
                     indices[-1], exc)
        with self._condition:
            if epoch != self._epoch:
                return True
            busy, self._busy = self._busy, None
            if self._stopped:
                return True
        if job.lane_id in self._stopped_lanes:
            self._failed.add(job.lane_id)
            seconds = time.monotonic() - busy.since if busy is not None else 0.0
            self._deliver(LaneFailed(job.lane_id, STOPPED_MESSAGE.format(seconds=seconds), ""))
            return True
        if failed:
            return False
        for index, result in zip(indices, results):
            self._accept(job, index, result, generation)
        return True
