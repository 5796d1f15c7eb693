"""The render scheduler and frame cache, without a window: ordering, superseding, failures, memory bound."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from core.errors import InputError
from tests.builders.fake_lanes import FakeLane
from tests.builders.waiting import Collector, wait_for
from workspace.frame_cache import FrameCache
from workspace.render_worker import FeaturesReady, FrameReady, LaneFailed, LaneJob, RenderWorker, frame_order






@pytest.fixture
def worker_and_results():
    results = Collector()
    worker = RenderWorker(FrameCache(64 * 1024 * 1024), results)
    yield worker, results
    worker.stop()


def test_frame_order_starts_at_playhead_and_stops_at_clip_end() -> None:
    assert frame_order(5, 4, 100) == [5, 6, 7, 8]
    assert frame_order(98, 5, 100) == [98, 99]
    assert frame_order(150, 3, 100) == [99]


def test_frame_order_wraps_inside_loop_region() -> None:
    assert frame_order(8, 5, 100, loop=(6, 9)) == [8, 9, 6, 7]
    # outside the loop region, the loop does not apply
    assert frame_order(20, 3, 100, loop=(6, 9)) == [20, 21, 22]


def test_cache_evicts_least_recently_used_by_bytes() -> None:
    item = np.zeros(1000, dtype=np.uint8)
    cache = FrameCache(2500)
    cache.put((0, 1.0, 0), item)
    cache.put((0, 1.0, 1), item.copy())
    assert cache.get((0, 1.0, 0)) is item  # touch 0: frame 1 becomes the oldest
    cache.put((0, 1.0, 2), item.copy())
    assert (0, 1.0, 1) not in cache
    assert (0, 1.0, 0) in cache and (0, 1.0, 2) in cache
    assert cache.bytes_used == 2000


def test_cache_keeps_a_single_entry_larger_than_budget() -> None:
    cache = FrameCache(10)
    cache.put("big", np.zeros(100, dtype=np.uint8))
    assert "big" in cache


def test_every_lane_gets_its_current_frame_before_any_lane_looks_ahead(worker_and_results) -> None:
    worker, results = worker_and_results
    lanes = [FakeLane("a", 40), FakeLane("b", 40, seed=1)]
    worker.submit(10, [LaneJob(i, lane, 1.0) for i, lane in enumerate(lanes)], lookahead=5, num_frames=40)
    wait_for(lambda: len(results.of(FrameReady)) == 10)
    order = [(r.lane_id, r.index) for r in results.of(FrameReady)]
    assert order[:2] == [(0, 10), (1, 10)]
    assert sorted(order) == [(lane, i) for lane in (0, 1) for i in range(10, 15)]
    # all work ran on the worker thread, never on the caller's
    threads = {call[3] for lane in lanes for call in lane.calls}
    assert threads == {"render-worker"}


def test_features_are_delivered_once_per_lane(worker_and_results) -> None:
    worker, results = worker_and_results
    lane = FakeLane("a", 20)
    worker.submit(0, [LaneJob(0, lane, 1.0)], lookahead=3, num_frames=20)
    wait_for(lambda: worker.idle)
    worker.submit(5, [LaneJob(0, lane, 2.0)], lookahead=3, num_frames=20)
    wait_for(lambda: worker.idle and len(results.of(FrameReady)) == 6)
    features = results.of(FeaturesReady)
    assert len(features) == 1
    np.testing.assert_array_equal(features[0].raw_features, lane.raw_features())


def test_a_newer_request_supersedes_the_rest_of_an_older_one(worker_and_results) -> None:
    worker, results = worker_and_results
    gate = threading.Event()
    entered = threading.Event()

    class SlowLane(FakeLane):
        def frame(self, index, scale):
            entered.set()
            assert gate.wait(60), "test gate never opened"

            return super().frame(index, scale)

    lane = SlowLane("slow", 500)
    worker.submit(0, [LaneJob(0, lane, 1.0)], lookahead=500, num_frames=500)
    assert entered.wait(60)  # the worker is inside frame 0 of the old request
    newer = worker.submit(300, [LaneJob(0, lane, 3.0)], lookahead=2, num_frames=500)
    gate.set()
    wait_for(lambda: worker.idle)
    rendered = [(r.index, r.scale) for r in results.of(FrameReady)]
    # the frame in progress finishes; nothing else of the old request is rendered
    assert rendered == [(0, 1.0), (300, 3.0), (301, 3.0)]
    assert results.of(FrameReady)[-1].generation == newer


def test_cached_frames_are_not_rendered_again(worker_and_results) -> None:
    worker, results = worker_and_results
    lane = FakeLane("a", 30)
    worker.submit(0, [LaneJob(0, lane, 1.0)], lookahead=10, num_frames=30)
    wait_for(lambda: worker.idle)
    worker.submit(5, [LaneJob(0, lane, 1.0)], lookahead=10, num_frames=30)
    wait_for(lambda: worker.idle)
    indices = [r.index for r in results.of(FrameReady)]
    assert sorted(indices) == list(range(15))


def test_a_failing_lane_reports_its_message_and_others_keep_rendering(worker_and_results) -> None:
    worker, results = worker_and_results
    broken = FakeLane("broken", 20, fail_with=InputError("encoder x.onnx: expected [B,1,80,16], found [1,3]"))
    good = FakeLane("good", 20)
    worker.submit(0, [LaneJob(0, broken, 1.0), LaneJob(1, good, 1.0)], lookahead=4, num_frames=20)
    wait_for(lambda: worker.idle)
    failures = results.of(LaneFailed)
    assert [(f.lane_id, f.message) for f in failures] == [(0, "encoder x.onnx: expected [B,1,80,16], found [1,3]")]
    assert {r.lane_id for r in results.of(FrameReady)} == {1}
    assert len(results.of(FrameReady)) == 4
    # the broken lane is not retried on the next request
    calls_before = len(broken.calls)
    worker.submit(3, [LaneJob(0, broken, 1.0), LaneJob(1, good, 1.0)], lookahead=4, num_frames=20)
    wait_for(lambda: worker.idle)
    assert len(broken.calls) == calls_before


def test_when_each_frame_is_superseded_the_lanes_take_turns(worker_and_results) -> None:
    """Playback that cannot keep up: a new playhead arrives while lane 0 draws; the next plan serves lane 1 first,
    otherwise lane 1 would never get a frame while the playhead moves."""
    worker, results = worker_and_results
    gate = threading.Event()
    entered = threading.Event()

    class SlowFirstFrame(FakeLane):
        def frame(self, index, scale):
            entered.set()
            assert gate.wait(60), "test gate never opened"
            return super().frame(index, scale)

    first, second = SlowFirstFrame("a", 40), FakeLane("b", 40, seed=1)
    jobs = [LaneJob(0, first, 1.0), LaneJob(1, second, 1.0)]
    worker.submit(0, jobs, lookahead=5, num_frames=40)
    assert entered.wait(60)  # lane 0 is drawing frame 0 when the playhead moves on
    worker.submit(2, jobs, lookahead=2, num_frames=40)
    gate.set()
    wait_for(lambda: worker.idle)
    order = [(r.lane_id, r.index) for r in results.of(FrameReady)]
    assert order == [(0, 0), (1, 2), (0, 2), (1, 3), (0, 3)]
