"""The playback policy: do the lanes fit the frame budget, and if not, what the app does about it (and says so).

Qt-free and clock-free: ``CostMeter`` keeps each lane's recent per-frame render cost (measured on the render thread
around ``Lane.frame``), and ``choose`` turns those costs, the frame budget and what is left to play into a
``Decision``: a mode, how it plays, and one line for the status bar. The transport applies the decision; tests
feed ``choose`` made-up costs, so nothing here depends on how fast the machine is.

The budget is one frame's time at the playback speed (40 ms at 25 fps and 1x). All lanes share one render thread,
so the cost of a frame is the sum of the lanes' costs. The modes, in the order ``auto`` tries them:

- ``every_frame``: the lanes fit (cost <= HEADROOM x budget), or every frame left to play is already rendered.
- ``render_ahead``: the lanes are a little too slow for what is left to play (to the loop's end or the clip's):
  rendering starts ``lead`` frames ahead of the playhead and runs on from there, so every frame from there on is
  ready in time; the frames before it hold the last picture. Chosen when that lead is at most MAX_LEAD_FRAMES.
- ``reduced_rate``: show every ``step``-th frame (step = cost / budget, rounded up, with headroom), holding the
  picture in between while the audio plays on; each shown frame is rendered before it is due.
- ``suggest_prerender``: the same reduced rate, but so low (step above MAX_STEP) that the status bar offers
  Playback > Pre-render whole clip instead.

The user can override ``auto`` with ``every`` (every frame, late ones marked) or ``reduced`` (a reduced rate even
when the lanes would fit, at least every 2nd frame).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from workspace.clock import FPS

HEADROOM = 0.9  # the lanes "fit" when they need at most 90% of the budget: the UI thread and jitter need the rest
COST_WINDOW = 15  # frames per lane in the moving median
MIN_SAMPLES = 3  # per lane, before the policy trusts its median
MAX_LEAD_FRAMES = 50  # render ahead only when at most 2 s of frames would be held before it catches up
MAX_STEP = 4  # below 25/4 = 6.25 pictures a second, suggest pre-render
STEP_DOWN_MARGIN = 0.8  # a reduced rate goes back to a smaller step only when the cost is 20% under that step's
# limit: costs wander on a busy machine, and each change of step moves the frames shown off those rendered ahead

EVERY_FRAME = "every_frame"
RENDER_AHEAD = "render_ahead"
REDUCED_RATE = "reduced_rate"
SUGGEST_PRERENDER = "suggest_prerender"
MODES = (EVERY_FRAME, RENDER_AHEAD, REDUCED_RATE, SUGGEST_PRERENDER)

AUTO, EVERY, REDUCED = "auto", "every", "reduced"
SETTINGS = (AUTO, EVERY, REDUCED)


@dataclass(frozen=True)
class Decision:
    """What playback does now. ``step``: show every step-th frame; ``lead``: frames ahead of the playhead where
    rendering starts (render_ahead); ``lookahead``: how many frames the render window spans from there."""

    mode: str
    reason: str
    step: int = 1
    lead: int = 0
    lookahead: int = 0
    cost_ms: float | None = None  # all lanes together, per frame (moving median), None while unmeasured
    budget_ms: float = 1000.0 / FPS
    setting: str = AUTO

    @property
    def ratio(self) -> float | None:
        return None if self.cost_ms is None else self.cost_ms / self.budget_ms

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "reason": self.reason, "step": self.step, "lead": self.lead,
                "lookahead": self.lookahead, "cost_ms": self.cost_ms, "budget_ms": self.budget_ms,
                "setting": self.setting}


def _ordinal(k: int) -> str:
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"


def reduced_step(ratio: float) -> int:
    """Show every k-th frame, k the smallest whole number with cost <= HEADROOM x k x budget."""
    return max(1, math.ceil(ratio / HEADROOM - 1e-9))


def render_ahead_lead(ratio: float, frames_left: int, uncached: int) -> int:
    """Frames ahead of the playhead where rendering must start so that it never falls behind again.

    Rendering the ``uncached`` frames takes uncached x ratio frame-times, the stretch plays in ``frames_left``; the
    difference is the head start, plus ``ratio`` so the first frame rendered is ready when it is due."""
    return math.ceil(max(0.0, uncached * ratio - frames_left) + ratio - 1e-9)


def _steady_step(step: int, ratio: float, previous: Decision | None, setting: str) -> int:
    """Keep the previous reduced step while the cost is not clearly below it (no flapping between k and k-1)."""
    if previous is None or previous.setting != setting or previous.mode not in (REDUCED_RATE, SUGGEST_PRERENDER):
        return step
    if previous.step > step and reduced_step(ratio / STEP_DOWN_MARGIN) >= previous.step:
        return previous.step
    return step


def choose(cost_s: float | None, budget_s: float, frames_left: int, uncached: int,
           setting: str = AUTO, previous: Decision | None = None) -> Decision:
    """The decision for a per-frame cost (all lanes, seconds; None: not measured yet) against a budget (seconds).

    ``frames_left``: frames from the playhead to the end of what plays (the loop region's end, else the clip's);
    ``uncached``: how many of them some lane still has to render; ``previous``: the decision in force (a reduced
    rate steps down only when the cost is clearly lower, STEP_DOWN_MARGIN)."""
    if setting not in SETTINGS:
        raise ValueError(f"preview rate setting: expected one of {', '.join(SETTINGS)}, found {setting!r}")
    budget_ms = budget_s * 1000.0
    frames_left = max(0, int(frames_left))
    uncached = max(0, min(int(uncached), frames_left))
    if cost_s is None:
        step = 2 if setting == REDUCED else 1
        mode = REDUCED_RATE if setting == REDUCED else EVERY_FRAME
        what = f"every {_ordinal(step)} frame" if step > 1 else "every frame"
        return Decision(mode, f"{what}: measuring the lanes' render time", step=step, budget_ms=budget_ms,
                        setting=setting)
    cost_ms = cost_s * 1000.0
    ratio = cost_s / budget_s
    figures = f"lanes take {cost_ms:.0f} ms a frame, budget {budget_ms:.0f} ms"
    if setting == EVERY:
        late = "" if ratio <= HEADROOM else "; frames will be late"
        return Decision(EVERY_FRAME, f"every frame (your setting): {figures}{late}", cost_ms=cost_ms,
                        budget_ms=budget_ms, setting=setting)
    if setting == REDUCED:
        step = _steady_step(max(2, reduced_step(ratio)), ratio, previous, setting)
        return Decision(REDUCED_RATE, f"every {_ordinal(step)} frame (your setting): {figures}", step=step,
                        cost_ms=cost_ms, budget_ms=budget_ms, setting=setting)
    if ratio <= HEADROOM:
        return Decision(EVERY_FRAME, f"every frame: {figures}", cost_ms=cost_ms, budget_ms=budget_ms)
    if uncached == 0:
        return Decision(EVERY_FRAME, f"every frame: all frames to play are rendered ({figures})",
                        cost_ms=cost_ms, budget_ms=budget_ms)
    lead = render_ahead_lead(ratio, frames_left, uncached)
    if lead <= MAX_LEAD_FRAMES and lead < frames_left:
        return Decision(RENDER_AHEAD, f"rendering {lead} frames ahead of the playhead ({lead / FPS:.1f} s held, "
                                      f"then every frame): {figures}", lead=lead,
                        lookahead=max(1, frames_left - lead), cost_ms=cost_ms, budget_ms=budget_ms)
    step = _steady_step(reduced_step(ratio), ratio, previous, setting)
    if step <= MAX_STEP:
        return Decision(REDUCED_RATE, f"every {_ordinal(step)} frame ({FPS / step:.1f} pictures/s, the audio "
                                      f"plays on): {figures}", step=step, cost_ms=cost_ms, budget_ms=budget_ms)
    return Decision(SUGGEST_PRERENDER, f"every {_ordinal(step)} frame; for every frame use Playback ▸ Pre-render "
                                       f"whole clip: {figures}", step=step, cost_ms=cost_ms, budget_ms=budget_ms)


class CostMeter:
    """Each lane's recent per-frame render cost (seconds), written on the render thread, read on the owner's."""

    def __init__(self, window: int = COST_WINDOW) -> None:
        self._window = window
        self._costs: dict[int, deque[float]] = {}
        self._lock = threading.Lock()

    def record(self, lane_id: int, seconds: float) -> None:
        with self._lock:
            self._costs.setdefault(lane_id, deque(maxlen=self._window)).append(float(seconds))

    def median(self, lane_id: int) -> float | None:
        with self._lock:
            costs = list(self._costs.get(lane_id, ()))
        return float(np.median(costs)) if len(costs) >= MIN_SAMPLES else None

    def frame_cost(self, lane_ids: Iterable[int]) -> float | None:
        """All these lanes together (they share one render thread); None until each has MIN_SAMPLES frames."""
        medians = [self.median(lane_id) for lane_id in lane_ids]
        if not medians or any(m is None for m in medians):
            return None
        return float(sum(medians))  # type: ignore[arg-type]

    def forget(self, lane_id: int) -> None:
        with self._lock:
            self._costs.pop(lane_id, None)

    def reset(self) -> None:
        with self._lock:
            self._costs.clear()


class TimedLane:
    """A lane as the render worker sees it, timing each ``frame`` call into a CostMeter (render thread only)."""

    def __init__(self, lane: Any, lane_id: int, meter: CostMeter, now=time.perf_counter) -> None:
        self.lane = lane
        self.lane_id = lane_id
        self._meter = meter
        self._now = now

    def raw_features(self) -> np.ndarray:
        return self.lane.raw_features()

    def frame(self, index: int, scale: float):
        started = self._now()
        result = self.lane.frame(index, scale)
        self._meter.record(self.lane_id, self._now() - started)
        return result

    # ``frames`` (the pre-render's runs, several frames a call) goes to the lane untimed through __getattr__: a batched
    # frame costs less than the single frame playback renders, and the meter must keep measuring what playback pays.
    def __getattr__(self, name: str) -> Any:  # anything else a caller reads goes to the lane itself
        return getattr(self.lane, name)
