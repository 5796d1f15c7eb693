"""The single render thread: renders frames ahead of the playhead for every lane, newest request first.

Qt-free (a plain Python thread and a condition variable) so the scheduling rules are unit-tested without a
window; the window wraps ``deliver`` in a Qt signal to get results onto the main thread.

Rules, each one a reason:
- One thread for every lane: a Lane must not be called from two threads at once, and on a 2-core machine more
  threads would only fight the backends' own thread pools.
- Each ``submit`` bumps a generation counter. The worker checks it between jobs (a job is one frame, which it
  cannot interrupt) and re-plans from the newest request, so a seek or a scale change drops superseded work
  after at most one frame.
- The plan renders the frame at the playhead for every lane first, then walks ahead round-robin across lanes,
  so every lane gets a picture before any lane gets a second one. Within each frame the lane served longest ago
  goes first: during playback that cannot keep up, every new playhead supersedes the plan after one frame, and
  a fixed lane order would then only ever serve the first lane (the others froze on their first picture).
- A lane that raises is marked failed with its message and never tried again (until it is replaced); the others
  keep rendering.
"""

from __future__ import annotations

import logging
import threading
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from workspace.frame_cache import FrameCache

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LaneJob:
    """One lane as the worker sees it: a stable id (cache key), the Lane object and its current scale."""

    lane_id: int
    lane: Any
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


@dataclass(frozen=True)
class FeaturesReady:
    lane_id: int
    raw_features: np.ndarray  # [N+2, 512], unscaled


@dataclass(frozen=True)
class FrameReady:
    lane_id: int
    scale: float
    index: int
    frame: Any  # RenderedFrame
    generation: int


@dataclass(frozen=True)
class LaneFailed:
    lane_id: int
    message: str
    details: str  # traceback, for the "details" disclosure


def frame_order(playhead: int, lookahead: int, num_frames: int, loop: tuple[int, int] | None = None) -> list[int]:
    """Frame indices to render, nearest first: the playhead, then ahead; inside a loop region it wraps around."""
    if num_frames <= 0 or lookahead <= 0:
        return []
    playhead = max(0, min(num_frames - 1, playhead))
    if loop is not None:
        start, end = max(0, loop[0]), min(num_frames - 1, loop[1])
        if start <= playhead <= end:
            span = end - start + 1
            return [start + (playhead - start + k) % span for k in range(min(lookahead, span))]
    return list(range(playhead, min(num_frames, playhead + lookahead)))


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
        self._thread = threading.Thread(target=self._run, name="render-worker", daemon=True)
        self._thread.start()

    # -- main thread ------------------------------------------------------------------------------------------
    def submit(self, playhead: int, lanes: list[LaneJob], lookahead: int, num_frames: int,
               loop: tuple[int, int] | None = None) -> int:
        """Replace the pending request; returns its generation."""
        with self._condition:
            self._generation += 1
            self._request = RenderRequest(self._generation, playhead, tuple(lanes), lookahead, num_frames, loop)
            self._condition.notify()
            return self._generation

    def forget_lane(self, lane_id: int) -> None:
        """A lane was removed or replaced: its id is never reused, but drop its cached frames."""
        self.cache.drop_lane(lane_id)

    @property
    def idle(self) -> bool:
        with self._condition:
            return self._request is None or self._finished_generation == self._request.generation

    def stop(self, timeout: float = 10.0) -> None:
        with self._condition:
            self._stopped = True
            self._condition.notify()
        self._thread.join(timeout)

    # -- render thread ----------------------------------------------------------------------------------------
    def _superseded(self, request: RenderRequest) -> bool:
        return self._stopped or self._request is None or self._request.generation != request.generation

    def _plan(self, request: RenderRequest) -> Iterator[tuple[LaneJob, int | None]]:
        """(lane, None) means "compute the features"; (lane, i) means "render frame i"."""
        for index in frame_order(request.playhead, request.lookahead, request.num_frames, request.loop):
            # sorted() is stable: lanes never served keep the request's order
            for job in sorted(request.lanes, key=lambda job: self._last_served.get(job.lane_id, -1)):
                if job.lane_id in self._failed:
                    continue
                if job.lane_id not in self._features_sent:
                    yield job, None
                if job.lane_id in self._failed or not job.render_frames:
                    continue
                if (job.lane_id, job.scale, index) not in self.cache:
                    yield job, index

    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._stopped and (self._request is None
                                             or self._request.generation == self._finished_generation):
                    self._condition.wait()
                if self._stopped:
                    return
                request = self._request
            assert request is not None
            completed = True
            for job, index in self._plan(request):
                if self._superseded(request):
                    completed = False
                    break
                self._execute(job, index, request.generation)
            with self._condition:
                if completed and not self._superseded(request):
                    self._finished_generation = request.generation

    def _execute(self, job: LaneJob, index: int | None, generation: int) -> None:
        try:
            if index is None:
                raw = job.lane.raw_features()
                self._features_sent.add(job.lane_id)
                self._deliver(FeaturesReady(job.lane_id, raw))
                return
            frame = job.lane.frame(index, job.scale)
            self.cache.put((job.lane_id, job.scale, index), frame)
            self.frames_rendered += 1
            self._last_served[job.lane_id] = self._serve_count
            self._serve_count += 1
            self._deliver(FrameReady(job.lane_id, job.scale, index, frame, generation))
        except Exception as error:  # InputError is expected (bad model); anything else is still one lane's fault
            self._failed.add(job.lane_id)
            kind = "" if type(error).__name__ == "InputError" else f"{type(error).__name__}: "
            log.warning("lane %s failed: %s", job.lane_id, error)
            self._deliver(LaneFailed(job.lane_id, f"{kind}{error}", traceback.format_exc()))
