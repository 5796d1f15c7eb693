"""The playback policy (workspace/playback_policy.py) and how the transport plays by it.

No wall time: costs are made up (unit tests) or advanced by the fake lanes themselves on a counter the transport
times them with (the transport tests), and the playback clock is a number the test moves.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from tests.builders.fake_lanes import FakeLane
from workspace.clock import WallClock
from workspace.model import Workspace, frame_count_for
from workspace.playback_policy import (
    AUTO, EVERY, EVERY_FRAME, MAX_LEAD_FRAMES, REDUCED, REDUCED_RATE, RENDER_AHEAD, SUGGEST_PRERENDER, CostMeter,
    Decision, TimedLane, choose, reduced_step, render_ahead_lead)
from workspace.render_worker import frame_order
from workspace.transport import Transport

BUDGET = 0.040


# ---------------------------------------------------------------------------------------------------------------
# the policy alone, on made-up costs
# ---------------------------------------------------------------------------------------------------------------
def test_lanes_that_fit_the_budget_play_every_frame() -> None:
    decision = choose(0.030, BUDGET, frames_left=300, uncached=290)
    assert decision.mode == EVERY_FRAME and decision.step == 1 and decision.lead == 0
    assert decision.reason == "every frame: lanes take 30 ms a frame, budget 40 ms"
    assert decision.ratio == pytest.approx(0.75)


def test_the_fit_leaves_headroom_for_the_ui_thread() -> None:
    assert choose(0.036, BUDGET, 300, 290).mode == EVERY_FRAME  # 90% of the budget
    assert choose(0.037, BUDGET, 300, 290).mode != EVERY_FRAME


def test_unmeasured_lanes_play_every_frame_and_say_they_are_being_measured() -> None:
    decision = choose(None, BUDGET, 300, 300)
    assert decision.mode == EVERY_FRAME and "measuring" in decision.reason and decision.cost_ms is None


def test_a_little_too_slow_for_a_short_stretch_renders_ahead_by_the_lead_it_needs() -> None:
    # 44 ms against 40 ms (ratio 1.1), 100 frames left, all to render: 100 x 1.1 - 100 + 1.1 = 11.1 -> 12 frames
    decision = choose(0.044, BUDGET, frames_left=100, uncached=100)
    assert decision.mode == RENDER_AHEAD and decision.lead == 12 and decision.lookahead == 88
    assert decision.reason.startswith("rendering 12 frames ahead of the playhead (0.5 s held, then every frame)")
    # rendering from the lead on never falls behind: frame lead + j is done at (j + 1) x ratio <= lead + j
    ratio = 1.1
    assert all((j + 1) * ratio <= decision.lead + j for j in range(100 - decision.lead))


def test_render_ahead_counts_only_the_frames_still_to_render() -> None:
    assert render_ahead_lead(2.0, frames_left=40, uncached=30) == 22  # 60 - 40 + 2
    assert render_ahead_lead(2.0, frames_left=40, uncached=10) == 2  # the cached ones buy the time
    assert choose(0.080, BUDGET, 40, 10).mode == RENDER_AHEAD


def test_too_slow_for_render_ahead_lowers_the_preview_rate() -> None:
    # ratio 1.5 over a whole 30 s clip would need 150 held frames: show every 2nd frame instead
    assert render_ahead_lead(1.5, 750, 750) > MAX_LEAD_FRAMES
    decision = choose(0.060, BUDGET, frames_left=750, uncached=750)
    assert decision.mode == REDUCED_RATE and decision.step == 2
    assert decision.reason == ("every 2nd frame (12.5 pictures/s, the audio plays on): lanes take 60 ms a frame, "
                               "budget 40 ms")


@pytest.mark.parametrize(("ratio", "step"), [(0.5, 1), (0.9, 1), (1.0, 2), (1.8, 2), (1.81, 3), (3.6, 4), (3.7, 5)])
def test_the_reduced_step_fits_each_shown_frame_in_its_time_with_headroom(ratio, step) -> None:
    assert reduced_step(ratio) == step
    assert ratio <= 0.9 * step


def test_a_reduced_rate_steps_down_only_when_the_cost_is_clearly_lower() -> None:
    before = choose(0.100, BUDGET, 750, 750)  # ratio 2.5: every 3rd frame
    assert before.step == 3
    assert choose(0.070, BUDGET, 750, 750, previous=before).step == 3  # ratio 1.75 fits 2, but only just
    assert choose(0.055, BUDGET, 750, 750, previous=before).step == 2  # ratio 1.375: clearly fits every 2nd
    assert choose(0.070, BUDGET, 750, 750).step == 2  # without a decision in force, the smallest step that fits
    assert choose(0.150, BUDGET, 750, 750, previous=before).step == 5  # slower: at once


def test_far_too_slow_suggests_pre_render() -> None:
    decision = choose(0.200, BUDGET, 750, 750)  # ratio 5: every 6th frame would be 4 pictures a second
    assert decision.mode == SUGGEST_PRERENDER and decision.step == 6
    assert "Pre-render" in decision.reason and "200 ms" in decision.reason


def test_everything_left_already_rendered_plays_every_frame_however_slow() -> None:
    decision = choose(0.200, BUDGET, 750, 0)
    assert decision.mode == EVERY_FRAME and "rendered" in decision.reason


def test_the_user_setting_overrides_the_choice() -> None:
    slow = choose(0.200, BUDGET, 750, 750, EVERY)
    assert slow.mode == EVERY_FRAME and slow.step == 1 and "your setting" in slow.reason and "late" in slow.reason
    fast = choose(0.010, BUDGET, 750, 750, REDUCED)
    assert fast.mode == REDUCED_RATE and fast.step == 2 and "your setting" in fast.reason
    assert choose(0.200, BUDGET, 750, 750, REDUCED).step == 6
    assert choose(None, BUDGET, 750, 750, REDUCED).step == 2
    with pytest.raises(ValueError, match="expected one of auto, every, reduced, found 'fast'"):
        choose(0.01, BUDGET, 1, 1, "fast")


def test_a_slower_speed_widens_the_budget() -> None:
    assert choose(0.060, 1 / (25 * 0.5), 750, 750).mode == EVERY_FRAME  # 80 ms at half speed


def test_the_cost_meter_takes_a_moving_median_per_lane_and_sums_the_lanes() -> None:
    meter = CostMeter(window=5)
    meter.record(1, 0.010)
    meter.record(1, 0.012)
    assert meter.median(1) is None and meter.frame_cost([1]) is None  # too few frames to trust
    meter.record(1, 0.500)  # one slow frame does not move a median
    assert meter.median(1) == pytest.approx(0.012)
    for cost in (0.020, 0.020, 0.020, 0.020):
        meter.record(1, cost)
    assert meter.median(1) == pytest.approx(0.020)  # the window forgot the old frames
    for cost in (0.030, 0.030, 0.030):
        meter.record(2, cost)
    assert meter.frame_cost([1, 2]) == pytest.approx(0.050)
    assert meter.frame_cost([1, 2, 3]) is None  # a lane not measured yet
    meter.forget(2)
    assert meter.median(2) is None


def test_a_timed_lane_records_each_frame_call_and_passes_everything_through() -> None:
    now = [0.0]
    lane = FakeLane("a", 20)

    class Slow:
        spec = lane.spec

        def raw_features(self):
            return lane.raw_features()

        def frame(self, index, scale):
            now[0] += 0.025
            return lane.frame(index, scale)

    meter = CostMeter()
    timed = TimedLane(Slow(), 7, meter, now=lambda: now[0])
    for index in range(3):
        timed.frame(index, 1.0)
    assert meter.median(7) == pytest.approx(0.025)
    assert timed.raw_features() is lane.raw_features() and timed.spec is lane.spec


def test_frame_order_with_a_step_renders_every_kth_frame() -> None:
    assert frame_order(10, 8, 100, step=2) == [10, 12, 14, 16]
    assert frame_order(95, 10, 100, step=3) == [95, 98]
    assert frame_order(8, 6, 100, loop=(6, 9), step=2) == [8, 6]


# ---------------------------------------------------------------------------------------------------------------
# the transport, on a clock the test moves, with lanes whose render cost is simulated
# ---------------------------------------------------------------------------------------------------------------
class CostTime:
    """What the transport times render calls with: the fake lanes add their simulated cost to it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class CostlyLane(FakeLane):
    def __init__(self, name: str, frames: int, cost_s: float, clock: CostTime, seed: int = 0) -> None:
        super().__init__(name, frames, seed=seed)
        self.cost_s = cost_s
        self._clock = clock

    def frame(self, index: int, scale: float):
        self._clock.now += self.cost_s  # only the render thread calls this
        return super().frame(index, scale)

    def rendered(self) -> list[int]:
        return [index for what, index, _, _ in self.calls if what == "frame"]


def _settle(transport: Transport) -> None:
    deadline = time.monotonic() + 120  # a generous wait for the render thread, never a timing assertion
    while not transport.worker.idle and time.monotonic() < deadline:
        time.sleep(0.005)
    assert transport.worker.idle, "the render thread did not finish its request"
    transport.process_results()


class Player:
    def __init__(self, cost_s: float, seconds: int = 8) -> None:
        self.now = [100.0]
        samples = np.zeros(16000 * seconds, np.float32)
        self.frames = frame_count_for(samples)
        self.cost_time = CostTime()
        self.lanes = [CostlyLane("a", self.frames, cost_s, self.cost_time),
                      CostlyLane("b", self.frames, cost_s, self.cost_time, seed=1)]
        self.workspace = Workspace()
        self.transport = Transport(self.workspace, clock_factory=lambda s: (
            WallClock(len(s) / 16000, now=lambda: self.now[0]), None))
        self.transport.cost_clock = self.cost_time
        self.shown: list[int] = []
        self.decisions: list[Decision] = []
        self.transport.frame_changed.connect(self.shown.append)
        self.transport.playback_mode_changed.connect(self.decisions.append)
        self.workspace.set_content(samples, self.lanes)
        _settle(self.transport)  # the paused look-ahead: 10 frames a lane, timed

    def rendered_after(self, marks: list[int]) -> list[list[int]]:
        return [lane.rendered()[mark:] for lane, mark in zip(self.lanes, marks)]

    def marks(self) -> list[int]:
        return [len(lane.rendered()) for lane in self.lanes]

    def advance(self, frames: int) -> None:
        for _ in range(frames):
            self.now[0] += 0.04
            self.transport.tick()
            _settle(self.transport)


@pytest.fixture
def player_factory():
    players: list[Player] = []

    def make(cost_s: float, seconds: int = 8) -> Player:
        players.append(Player(cost_s, seconds))
        return players[-1]

    yield make
    for player in players:
        player.transport.shutdown()


def test_lanes_that_fit_play_every_frame_and_every_frame_is_rendered_before_it_is_shown(player_factory) -> None:
    player = player_factory(0.010)  # 2 x 10 ms against 40 ms
    player.transport.play()
    assert player.transport.decision.mode == EVERY_FRAME
    assert player.transport.decision.cost_ms == pytest.approx(20.0)
    player.advance(20)
    assert player.shown[-20:] == list(range(1, 21))
    for frame in range(1, 21):
        assert all((lane.lane_id, 1.0, frame) in player.transport.cache for lane in player.workspace.lanes)


def test_slow_lanes_over_a_long_stretch_lower_the_preview_rate_and_render_only_the_frames_shown(
        player_factory) -> None:
    player = player_factory(0.030)  # 60 ms a frame against 40 ms over 8 s: render ahead would hold too long
    marks = player.marks()
    player.transport.play()
    decision = player.transport.decision
    assert decision.mode == REDUCED_RATE and decision.step == 2
    assert player.decisions[-1] == decision and "every 2nd frame" in decision.reason and "60 ms" in decision.reason
    start = len(player.shown)
    player.advance(30)
    shown = player.shown[start:]
    assert shown and all(frame % 2 == 0 for frame in shown)  # the odd frames hold the last picture
    assert shown == sorted(set(shown))
    for rendered in player.rendered_after(marks):
        assert rendered and all(index % 2 == 0 for index in rendered)  # no work on frames never shown
    for frame in shown:  # each shown frame was rendered before the playhead reached it
        assert all((lane.lane_id, 1.0, frame) in player.transport.cache for lane in player.workspace.lanes)


def test_slow_lanes_in_a_short_loop_render_ahead_of_the_playhead(player_factory) -> None:
    player = player_factory(0.040)  # 80 ms a frame: ratio 2
    player.transport.set_loop((40, 79))
    player.transport.seek(40)
    _settle(player.transport)  # paused: frames 40..49 rendered
    marks = player.marks()
    player.transport.play()
    decision = player.transport.decision
    # 39 frames left in the loop, 30 of them to render at twice the budget: 60 - 39 + 2 = 23 frames of lead
    assert decision.mode == RENDER_AHEAD and decision.lead == 23
    assert "23 frames ahead" in decision.reason
    _settle(player.transport)
    for rendered in player.rendered_after(marks):
        assert rendered[0] == 63  # frames 50..62 could not be ready in time: rendering starts past them
        assert rendered[:17] == list(range(63, 80))


def test_far_too_slow_lanes_suggest_pre_render_and_the_user_can_override(player_factory) -> None:
    player = player_factory(0.100)  # 200 ms a frame: ratio 5
    player.transport.play()
    assert player.transport.decision.mode == SUGGEST_PRERENDER and player.transport.decision.step == 6
    assert "Pre-render" in player.decisions[-1].reason
    decision = player.transport.set_preview_setting(EVERY)
    assert decision.mode == EVERY_FRAME and decision.step == 1 and player.decisions[-1] is decision
    player.advance(3)
    assert player.shown[-3:] == [1, 2, 3]
    assert player.transport.set_preview_setting(AUTO).mode == SUGGEST_PRERENDER
    with pytest.raises(ValueError):
        player.transport.set_preview_setting("sometimes")
    assert player.transport.preview_setting == AUTO


# ---------------------------------------------------------------------------------------------------------------
# the window: the setting is a menu choice, remembered, and the status bar says how playback plays
# ---------------------------------------------------------------------------------------------------------------
def test_the_window_shows_the_decision_and_remembers_the_preview_rate(qtbot, tmp_path) -> None:
    from PySide6.QtCore import QSettings

    from ui.main_window import MainWindow

    def window() -> MainWindow:
        made = MainWindow(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat), prefer_audio=False)
        qtbot.addWidget(made)
        return made

    first = window()
    samples = np.zeros(16000 * 3, np.float32)
    first.set_content(samples, [FakeLane("a", frame_count_for(samples))])
    assert first.preview_actions[AUTO].isChecked() and first.transport.preview_setting == AUTO
    first.preview_actions[REDUCED].trigger()
    assert first.transport.preview_setting == REDUCED
    assert first.policy_label.text().startswith("every 2nd frame (your setting)")
    first.close()
    second = window()
    assert second.preview_actions[REDUCED].isChecked() and second.transport.preview_setting == REDUCED
    second.close()


# ---------------------------------------------------------------------------------------------------------------
# start-up: the current frame first, the features for the rest later
# ---------------------------------------------------------------------------------------------------------------
def test_a_frames_feature_rows_from_just_its_windows_equal_the_whole_clips_features(tmp_path) -> None:
    from backends.registry import MODELS
    from pipeline.audio import audio_from_array
    from pipeline.lane import Lane
    from pipeline.session import LaneSpec
    from tests.builders.onnx_models import make_encoder

    encoder = tmp_path / "encoder.onnx"
    make_encoder(encoder)
    rng = np.random.default_rng(5)
    audio = audio_from_array((0.3 * rng.standard_normal(16000 * 3)).astype(np.float32), 16000)
    early = Lane(LaneSpec(name="early", encoder=encoder, scale=3.0), audio, None, models=MODELS)
    assert early.draws_before_features
    count = early.num_frames  # from the mel alone: the features are not computed for it
    assert early._raw_features is None
    near = {i: early.features_near(i) for i in (0, 1, 7, 8, 9, count // 2, count - 9, count - 2, count - 1)}
    tensors = {i: early._audio_tensor(i, None) for i in near}
    assert early._raw_features is None  # still nothing computed for the whole clip
    whole = Lane(LaneSpec(name="whole", encoder=encoder, scale=3.0), audio, None, models=MODELS)
    full = whole.raw_features()
    assert full.shape[0] == count
    for i, rows in near.items():
        np.testing.assert_array_equal(rows, full[max(0, i - 8):min(count, i + 8)])  # bit for bit
        np.testing.assert_array_equal(tensors[i], whole.audio_tensors(range(i, i + 1), 3.0))


class EarlyLane(FakeLane):
    """Draws a frame without its features (as a Lane does from the frame's own windows); features wait for a gate."""

    draws_before_features = True

    def __init__(self, *args, gate=None, fail_frames: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gate = gate
        self.fail_frames = fail_frames
        self.features_done = False

    def raw_features(self):
        if self.gate is not None:
            self.gate.wait(120)
        result = super().raw_features()
        self.features_done = True
        return result

    def frame(self, index, scale):
        if not self.features_done:
            self._record("early frame", index, scale)
            if self.fail_frames:
                raise RuntimeError("no encoder")
            return super().frame.__func__(_NoFeatures(self), index, scale)
        return super().frame(index, scale)


class _NoFeatures:
    """FakeLane.frame on a lane whose features() returns zeros (stand-in for rows from the frame's own windows)."""

    def __init__(self, lane: EarlyLane) -> None:
        self._lane = lane

    def __getattr__(self, name):
        return getattr(self._lane, name)

    def features(self, scale):
        return np.zeros((self._lane.num_frames, 512), np.float32)

    def _record(self, *args):
        pass


def test_the_worker_draws_the_playheads_frame_before_the_whole_clips_features() -> None:
    import threading

    from workspace.frame_cache import FrameCache
    from workspace.render_worker import FeaturesReady, FrameReady, LaneJob, RenderWorker

    gate = threading.Event()
    results: list[object] = []
    worker = RenderWorker(FrameCache(64 * 1024 * 1024), results.append)
    lanes = [EarlyLane("a", 40, gate=gate), FakeLane("b", 40, seed=1)]
    try:
        worker.submit(12, [LaneJob(i, lane, 1.0) for i, lane in enumerate(lanes)], lookahead=3, num_frames=40)
        deadline = time.monotonic() + 120  # a generous wait for the render thread, never a timing assertion
        while not any(isinstance(r, FrameReady) for r in results) and time.monotonic() < deadline:
            time.sleep(0.005)
        first = [r for r in results if isinstance(r, FrameReady)]
        assert (first[0].lane_id, first[0].index) == (0, 12)  # before lane a's features, which are still waiting
        assert not any(isinstance(r, FeaturesReady) and r.lane_id == 0 for r in results)
        gate.set()
        while not worker.idle and time.monotonic() < deadline:
            time.sleep(0.005)
        frames = sorted((r.lane_id, r.index) for r in results if isinstance(r, FrameReady))
        assert frames == [(lane, i) for lane in (0, 1) for i in (12, 13, 14)]  # frame 12 is not drawn twice
        assert [what for what, *_ in lanes[0].calls][:2] == ["early frame", "raw_features"]
        assert lanes[1].calls[0][0] == "raw_features"  # a lane that cannot draw early keeps the old order
    finally:
        gate.set()
        worker.stop()


def test_a_lane_that_fails_before_its_features_fails_once_with_the_features_reason() -> None:
    from workspace.frame_cache import FrameCache
    from workspace.render_worker import FrameFailed, LaneFailed, LaneJob, RenderWorker

    results: list[object] = []
    worker = RenderWorker(FrameCache(64 * 1024 * 1024), results.append)
    lane = EarlyLane("broken", 40, fail_frames=True, fail_with=InputErrorForTest("encoder broken.onnx: bad shape"))
    try:
        worker.submit(0, [LaneJob(0, lane, 1.0)], lookahead=3, num_frames=40)
        deadline = time.monotonic() + 120
        while not worker.idle and time.monotonic() < deadline:
            time.sleep(0.005)
        assert not [r for r in results if isinstance(r, FrameFailed)]  # the early frame's failure is not reported
        failed = [r for r in results if isinstance(r, LaneFailed)]
        assert len(failed) == 1 and failed[0].message == "encoder broken.onnx: bad shape"
    finally:
        worker.stop()


def InputErrorForTest(message: str):  # noqa: N802 - the project's input error, as a lane raises it
    from core.errors import InputError

    return InputError(message)
