"""The transport: which frame is shown, playing or paused, loop, speed, A/V offset, and what to render next.

Qt-free: the window calls ``tick()`` from its display timer and forwards its buttons here; a headless caller (a
test, a benchmark) drives the same object and may hand it a clock it moves itself (``clock_factory``), so nothing
here depends on how fast the machine is.

Render results arrive on the render thread. The owner passes ``deliver`` to move them onto its own thread (the
window: a queued Qt signal) and then calls ``apply_result``; without ``deliver`` they wait in a queue until
``process_results()`` applies them on the caller's thread. Either way lane state only changes on one thread.
"""

from __future__ import annotations

import logging
import math
import queue
import time
from typing import Any, Callable

import numpy as np

from pipeline.lane import RENDER_BATCH
from workspace.clock import FPS, FallbackWatcher, PlaybackClock, frame_at, open_clock
from workspace.events import Event
from workspace.frame_cache import FrameCache
from workspace.model import Workspace
from workspace.playback_policy import AUTO, RENDER_AHEAD, CostMeter, Decision, TimedLane, choose
from workspace.render_worker import Busy, FeaturesReady, FrameFailed, FrameReady, LaneFailed, LaneJob, RenderWorker

log = logging.getLogger(__name__)

PLAY_LOOKAHEAD = 50  # frames rendered ahead while playing (2 s): rides out one slow frame
PAUSED_LOOKAHEAD = 10
LOOP_SPAN_FRAMES = 2 * FPS  # a new loop region starts at the playhead and spans 2 s
DECIDE_EVERY_FRAMES = FPS  # while playing, the playback policy looks at the measured costs again once a second
ClockFactory = Callable[[np.ndarray], "tuple[PlaybackClock, str | None]"]


class Transport:
    """Playback state over a Workspace. Events:

    - ``frame_changed(frame)``: the frame to show changed (also once after new content, for frame 0);
    - ``playing_changed(playing)``; ``loop_changed(region or None)``;
    - ``clock_changed(description, lost_reason or None)``: a new clock, or the audio device was lost;
    - ``frame_ready(FrameReady)``: a rendered frame arrived (the cache holds it);
    - ``frame_failed(FrameFailed)``: one frame of a lane raised (the lane goes on; the window marks the frame);
    - ``prerender_progress(done, total)`` while pre-rendering; ``prerender_incomplete(done, total)`` when the
      cache cannot hold the whole clip and playback starts anyway;
    - ``playback_mode_changed(Decision)``: the playback policy chose another way to play (every frame, render
      ahead, a reduced preview rate, or suggest pre-render), or its reason changed (workspace/playback_policy.py).
    """

    def __init__(self, workspace: Workspace, cache: FrameCache | None = None,
                 deliver: Callable[[object], None] | None = None, clock_factory: ClockFactory | None = None,
                 prefer_audio: bool = True, audio_device: int | str | None = None,
                 audio_options: dict[str, Any] | None = None) -> None:
        self.workspace = workspace
        self.cache = cache if cache is not None else FrameCache()
        self._results: queue.SimpleQueue[object] = queue.SimpleQueue()
        self.worker = RenderWorker(self.cache, deliver if deliver is not None else self._results.put)
        options = dict(audio_options or {})
        self._clock_factory: ClockFactory = clock_factory or (
            lambda samples: open_clock(samples, prefer_audio=prefer_audio, device=audio_device, **options))
        self.clock: PlaybackClock | None = None
        self.watcher: FallbackWatcher | None = None
        self._frame = 0
        self._paused_frame = 0
        self._announced_playing = False
        self._known_lanes: set[int] = set()
        self.loop: tuple[int, int] | None = None
        self.speed = 1.0
        self.av_offset_s = 0.0
        self.prerender = False  # the setting: render the whole clip before playing
        self.prerender_pending = False
        self.frame_changed = Event("frame_changed")
        self.playing_changed = Event("playing_changed")
        self.loop_changed = Event("loop_changed")
        self.clock_changed = Event("clock_changed")
        self.frame_ready = Event("frame_ready")
        self.frame_failed = Event("frame_failed")
        self.prerender_progress = Event("prerender_progress")
        self.prerender_incomplete = Event("prerender_incomplete")
        self.playback_mode_changed = Event("playback_mode_changed")
        self.costs = CostMeter()  # each lane's per-frame render cost, measured on the render thread
        self.preview_setting = AUTO  # the user's override: auto / every / reduced (playback_policy.SETTINGS)
        self.decision: Decision = choose(None, 1.0 / FPS, 0, 0)
        self._decided_at = 0  # the frame at which the policy last decided
        self._ahead_from = 0  # render_ahead: rendering starts here (the playhead plus the decision's lead)
        self._timed: dict[int, TimedLane] = {}
        self.cost_clock: Callable[[], float] = time.perf_counter  # what render costs are timed with (tests: fake)
        workspace.content_changed.connect(self._on_content)
        workspace.lanes_changed.connect(self._on_lanes)
        workspace.scale_changed.connect(lambda lane_id, scale: self.request_render())

    # -- state ------------------------------------------------------------------------------------------------
    @property
    def current_frame(self) -> int:
        return max(0, self._frame)

    @property
    def num_frames(self) -> int:
        return self.workspace.num_frames

    @property
    def playing(self) -> bool:
        return self.clock is not None and self.clock.playing

    def position_of(self, frame: int) -> float:
        """Media time at the middle of a frame (plus the A/V offset), so rounding never lands on its neighbour."""
        return max(0.0, (frame + 0.5) / FPS + self.av_offset_s)

    # -- commands ---------------------------------------------------------------------------------------------
    def play(self, use_prerender: bool = True) -> None:
        """Play from the paused frame; with the pre-render setting on, render the whole clip first."""
        if self.clock is None or self.num_frames == 0:
            return
        if use_prerender and self.prerender and not self.all_rendered():
            self.prerender_pending = True
            self.request_render()
            return
        if self._paused_frame >= self.num_frames - 1:
            self._paused_frame = 0
        self.clock.seek(self.position_of(self._paused_frame))
        self.decide(self._paused_frame)
        self.clock.play()
        self._announce(True)
        self.request_render()

    def pause(self) -> None:
        self.prerender_pending = False
        if self.clock is not None and self.clock.playing:
            self.clock.pause()
        self._paused_frame = self.current_frame
        self._announce(False)
        self.request_render()

    def toggle_play(self) -> None:
        if self.playing or self.prerender_pending:
            self.pause()
        else:
            self.play()

    def seek(self, frame: int) -> None:
        if self.num_frames == 0:
            return
        frame = max(0, min(self.num_frames - 1, int(frame)))
        self._paused_frame = frame
        if self.clock is not None:
            self.clock.seek(self.position_of(frame))
        if not self.playing:
            self._set_frame(frame)
        else:
            self.decide(frame)
        self.request_render()

    def step(self, delta: int) -> None:
        """Pause, move ``delta`` frames, and play that frame's 200 ms of audio (A/V offset included)."""
        if self.num_frames == 0:
            return
        if self.playing:
            self.pause()
        self.seek(self.current_frame + delta)
        if self.clock is not None:
            self.clock.play_snippet(max(0.0, self.current_frame / FPS + self.av_offset_s))

    def set_speed(self, speed: float) -> None:
        self.speed = float(speed)
        if self.clock is not None:
            self.clock.set_speed(self.speed)
        if self.playing:
            self.decide()
            self.request_render()

    def set_preview_setting(self, setting: str) -> Decision:
        """The user's preview rate: ``auto`` (the policy chooses), ``every`` (every frame) or ``reduced``."""
        choose(None, 1.0, 0, 0, setting)  # raises ValueError for a setting that does not exist
        self.preview_setting = setting
        decision = self.decide()
        self.request_render()
        return decision

    def decide(self, frame: int | None = None) -> Decision:
        """Ask the playback policy how to play from ``frame`` (default: the playhead) with the costs measured so
        far; announces ``playback_mode_changed`` when the decision differs from the last one."""
        frame = self.current_frame if frame is None else max(0, int(frame))
        lanes = [s for s in self.workspace.lanes if s.lane is not None and s.renders_frames]
        cost = self.costs.frame_cost([s.lane_id for s in lanes])
        end = self.num_frames - 1
        if self.loop is not None and self.loop[0] <= frame <= self.loop[1]:
            end = min(end, self.loop[1])
        frames_left = max(0, end - frame)
        uncached = 0
        if frames_left and lanes:
            ahead = np.zeros(frames_left, dtype=bool)
            for state in lanes:
                have = np.zeros(frames_left, dtype=bool)
                indices = [i - frame - 1 for i in self.cache.keys_matching(state.lane_id, state.scale)
                           if frame < i <= end]
                have[indices] = True
                ahead |= ~have
            uncached = int(ahead.sum())
        decision = choose(cost, 1.0 / (FPS * self.speed), frames_left, uncached, self.preview_setting,
                          previous=self.decision if self.playing else None)
        self._decided_at = frame
        self._ahead_from = frame + decision.lead
        if decision != self.decision:
            self.decision = decision
            self.playback_mode_changed.emit(decision)
        return decision

    def set_av_offset(self, seconds: float) -> None:
        """A positive offset delays the picture against the sound."""
        self.av_offset_s = float(seconds)

    def set_loop_on(self, on: bool) -> None:
        """Loop from the playhead for 2 s (the region's edges can be moved with ``set_loop``), or stop looping."""
        if on and self.num_frames:
            start = self.current_frame
            self.set_loop((start, min(self.num_frames - 1, start + LOOP_SPAN_FRAMES)))
        else:
            self.set_loop(None)

    def set_loop(self, region: tuple[int, int] | None) -> None:
        if region is not None:
            region = (int(region[0]), int(region[1]))
        if region == self.loop:
            return
        self.loop = region
        self.loop_changed.emit(region)
        self.request_render()

    # -- the display tick -------------------------------------------------------------------------------------
    def tick(self) -> None:
        """Turn the clock into the frame to show; called by the window's timer (or a test) about every 10 ms."""
        self.worker.release_stopped()  # a stopped lane whose call never ends: the other lanes get a fresh thread
        if self.watcher is not None:
            lost = self.watcher.check()
            if lost:
                self.clock = self.watcher.clock
                self.clock_changed.emit(self.clock.description, lost)
        if self.clock is not None and self.clock.playing:
            frame = frame_at(self.clock.position_s(), self.num_frames, self.av_offset_s)
            if self.loop is not None and frame > self.loop[1]:
                frame = self.loop[0]
                self.clock.seek(self.position_of(frame))
                self.decide(frame)
            elif abs(frame - self._decided_at) >= DECIDE_EVERY_FRAMES:
                self.decide(frame)
            step = self.decision.step
            if step > 1:  # a reduced preview rate: hold the last shown frame while the audio plays on
                origin = self.loop[0] if self.loop is not None and self.loop[0] <= frame <= self.loop[1] else 0
                frame -= (frame - origin) % step
            if frame != self._frame:
                self._set_frame(frame)
                self.request_render()
        elif self.clock is not None and self._announced_playing and not self.prerender_pending:
            self._paused_frame = self.current_frame  # the clip ended by itself
            self._announce(False)
        if self.prerender_pending:
            self._check_prerender()

    # -- rendering --------------------------------------------------------------------------------------------
    def request_render(self) -> None:
        """Ask the worker for the frames around the playhead (the whole clip while pre-rendering)."""
        jobs = [LaneJob(s.lane_id, self._timed_lane(s.lane_id, s.lane), s.scale, render_frames=s.failure is None)
                for s in self.workspace.lanes
                if s.lane is not None and (s.failure is None or (s.features_only and s.raw_features is None))]
        if not jobs or self.num_frames == 0:
            return
        if self.prerender_pending:
            # The whole clip: runs of consecutive frames go to a lane in one generator call (Lane.frames).
            self.worker.submit(0, jobs, self.num_frames, self.num_frames, batch=RENDER_BATCH)
            return
        if not self.playing:
            self.worker.submit(self.current_frame, jobs, PAUSED_LOOKAHEAD, self.num_frames, self.loop)
            return
        decision = self.decision
        if decision.step > 1:
            # Every step-th frame, from the next one to show: the one on screen is held, the next is due in
            # step frames and its render fits in them.
            step = decision.step
            origin = self.loop[0] if self.loop is not None and self.loop[0] <= self.current_frame <= self.loop[1] \
                else 0
            start = self.current_frame - (self.current_frame - origin) % step + step
            if start >= self.num_frames:
                start = self.current_frame
            self.worker.submit(start, jobs, max(PLAY_LOOKAHEAD, 2 * step), self.num_frames, self.loop, step)
            return
        if decision.mode == RENDER_AHEAD:
            # Frames closer than the lead cannot be ready in time: start past them and render on from there.
            end = self.loop[1] if self.loop is not None and self.loop[0] <= self.current_frame <= self.loop[1] \
                else self.num_frames - 1
            soon = self.current_frame + math.ceil(decision.ratio or 1.0)
            start = min(end, max(self._ahead_from, soon))
            self.worker.submit(start, jobs, max(PLAY_LOOKAHEAD, end - start + 1), self.num_frames, self.loop)
            return
        self.worker.submit(self.current_frame, jobs, PLAY_LOOKAHEAD, self.num_frames, self.loop)

    def _timed_lane(self, lane_id: int, lane: object) -> TimedLane:
        """The lane wrapped so the render thread measures each frame's cost for the playback policy."""
        timed = self._timed.get(lane_id)
        if timed is None or timed.lane is not lane:
            timed = self._timed[lane_id] = TimedLane(lane, lane_id, self.costs, self.cost_clock)
        return timed

    def apply_result(self, result: object) -> None:
        """A worker result, on the owner's thread: features and failures go to the workspace."""
        if isinstance(result, FrameReady):
            self.frame_ready.emit(result)
        elif isinstance(result, FeaturesReady):
            self.workspace.set_features(result.lane_id, result.raw_features)
        elif isinstance(result, LaneFailed):
            self.workspace.set_failed(result.lane_id, result.message, result.details)
        elif isinstance(result, FrameFailed):
            self.workspace.set_frame_failed(result.lane_id, result.scale, result.index, result.message)
            self.frame_failed.emit(result)

    def process_results(self) -> int:
        """Apply the results queued since the last call (only without ``deliver``); returns how many."""
        count = 0
        while True:
            try:
                result = self._results.get_nowait()
            except queue.Empty:
                return count
            self.apply_result(result)
            count += 1

    def rendered_rows(self) -> list[np.ndarray]:
        """Per lane, which frames are in the cache at the lane's current scale."""
        rows = []
        for state in self.workspace.lanes:
            row = np.zeros(self.num_frames, dtype=bool)
            indices = [i for i in self.cache.keys_matching(state.lane_id, state.scale) if i < self.num_frames]
            row[indices] = True
            rows.append(row)
        return rows

    def all_rendered(self) -> bool:
        rows = [row for row, state in zip(self.rendered_rows(), self.workspace.lanes) if state.renders_frames]
        return all(row.all() for row in rows)

    # -- a lane whose model does not return ------------------------------------------------------------------------
    def busy_lane(self) -> Busy | None:
        """The lane call the render worker is inside now, with when it began (the window offers Stop on it)."""
        return self.worker.busy()

    def stop_lane(self, lane_id: int) -> bool:
        """Stop a lane (its model never returns): the call is asked to end, the lane is failed with a "stopped"
        message when it does, and the other lanes go on. Returns True when the lane was running."""
        return self.worker.stop_lane(lane_id)

    # -- shutdown ---------------------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop the audio and the render thread; safe to call twice."""
        self._stop_clock()
        self.worker.stop()

    # -- internals --------------------------------------------------------------------------------------------
    def _set_frame(self, frame: int) -> None:
        self._frame = frame
        self.frame_changed.emit(frame)

    def _announce(self, playing: bool) -> None:
        if playing != self._announced_playing:
            self._announced_playing = playing
            self.playing_changed.emit(playing)

    def _stop_clock(self) -> None:
        if self.clock is not None:
            self.clock.close()
        self.clock = None
        self.watcher = None

    def _forget_gone_lanes(self) -> None:
        current = {state.lane_id for state in self.workspace.lanes}
        for lane_id in self._known_lanes - current:
            self.worker.forget_lane(lane_id)
            self.costs.forget(lane_id)
            self._timed.pop(lane_id, None)
        self._known_lanes = current

    def _on_content(self) -> None:
        self._stop_clock()
        self.prerender_pending = False
        self._announce(False)
        self._forget_gone_lanes()
        self._paused_frame = 0
        self.clock, reason = self._clock_factory(self.workspace.samples)
        if reason:
            log.info("audio: %s", reason)
        self.watcher = FallbackWatcher(self.clock)
        self.clock.set_speed(self.speed)
        self.clock_changed.emit(self.clock.description, None)
        self.set_loop(None)
        self._set_frame(0)  # announced even when it was 0 before: the new clip's frame 0 is a new picture
        self.request_render()

    def _on_lanes(self) -> None:
        self._forget_gone_lanes()
        self.request_render()

    def _check_prerender(self) -> None:
        rows = [row for row, state in zip(self.rendered_rows(), self.workspace.lanes) if state.renders_frames]
        total = max(1, sum(len(row) for row in rows))
        done = sum(int(row.sum()) for row in rows)
        self.prerender_progress.emit(done, total)
        if done >= total or not rows:
            self.prerender_pending = False
            self.play()
        elif self.worker.idle:
            # The worker went through the whole clip, but the frame cache could not hold it: waiting would never
            # end. Play what fits and say why the rest may be late.
            self.prerender_pending = False
            self.prerender_incomplete.emit(done, total)
            self.play(use_prerender=False)
