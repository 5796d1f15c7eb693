"""The pre-render draws runs of consecutive frames with one Lane.frames call (one generator call per run) instead of
frame by frame; every lane's current frame still comes first, the request is still checked between runs, and the
pixels equal single-frame rendering."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from backends.registry import MODELS
from pipeline.lane import RENDER_BATCH, Lane, open_lanes
from pipeline.session import LaneSpec, Session
from tests.builders.fake_lanes import FakeLane
from tests.builders.waiting import Collector, wait_for
from workspace.clock import WallClock
from workspace.frame_cache import FrameCache
from workspace.model import Workspace, frame_count_for
from workspace.render_worker import FrameFailed, FrameReady, LaneJob, RenderWorker, consecutive_runs
from workspace.transport import Transport

DEMO = Path(__file__).resolve().parents[1] / "resources" / "demo"






class BatchingFakeLane(FakeLane):
    """A FakeLane with the batched entry point; ``log`` lists ("frame", i) and ("frames", [i, ..]) calls in order."""

    def __init__(self, *args, fail_batches: bool = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.log: list[tuple[str, object]] = []
        self.fail_batches = fail_batches

    def frame(self, index: int, scale: float):
        self.log.append(("frame", index))
        return super().frame(index, scale)

    def frames(self, indices: list[int], scale: float):
        self.log.append(("frames", list(indices)))
        if self.fail_batches:
            raise RuntimeError("this backend cannot batch")
        return [FakeLane.frame(self, i, scale) for i in indices]


def test_consecutive_runs() -> None:
    assert consecutive_runs([1, 2, 3, 5, 6, 9], 16) == [[1, 2, 3], [5, 6], [9]]
    assert consecutive_runs(list(range(10)), 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert consecutive_runs([], 4) == []


def test_batched_request_draws_the_current_frames_first_then_runs_per_lane() -> None:
    results = Collector()
    worker = RenderWorker(FrameCache(256 * 1024 * 1024), results)
    lanes = [BatchingFakeLane("a", 40), BatchingFakeLane("b", 40, seed=1)]
    try:
        worker.submit(3, [LaneJob(k, lane, 1.0) for k, lane in enumerate(lanes)], 37, 40, batch=16)
        wait_for(lambda: worker.idle and len(results.of(FrameReady)) == 2 * 37)
    finally:
        worker.stop()
    for lane in lanes:
        assert lane.log == [("frame", 3), ("frames", list(range(4, 20))), ("frames", list(range(20, 36))),
                            ("frames", list(range(36, 40)))]
    ready = results.of(FrameReady)
    assert {r.index for r in ready[:2]} == {3} and {r.lane_id for r in ready[:2]} == {0, 1}  # current frame first
    # Round-robin run by run: lane a's second run does not come before lane b's first.
    first_runs = [r.lane_id for r in ready[2:2 + 32]]
    assert first_runs == [first_runs[0]] * 16 + [1 - first_runs[0]] * 16
    for r in ready:  # the pixels single-frame rendering gives
        expected = FakeLane.frame(lanes[r.lane_id], r.index, 1.0)
        np.testing.assert_array_equal(r.frame.image, expected.image)


def test_an_unbatched_request_never_calls_frames() -> None:
    results = Collector()
    worker = RenderWorker(FrameCache(256 * 1024 * 1024), results)
    lane = BatchingFakeLane("a", 12)
    try:
        worker.submit(0, [LaneJob(0, lane, 1.0)], 12, 12)
        wait_for(lambda: worker.idle and len(results.of(FrameReady)) == 12)
    finally:
        worker.stop()
    assert [what for what, _ in lane.log] == ["frame"] * 12


def test_a_run_that_raises_is_redrawn_frame_by_frame() -> None:
    results = Collector()
    worker = RenderWorker(FrameCache(256 * 1024 * 1024), results)
    lane = BatchingFakeLane("a", 10, fail_batches=True)
    try:
        worker.submit(0, [LaneJob(0, lane, 1.0)], 10, 10, batch=4)
        wait_for(lambda: worker.idle and len(results.of(FrameReady)) == 10)
    finally:
        worker.stop()
    assert not results.of(FrameFailed)
    assert sorted(r.index for r in results.of(FrameReady)) == list(range(10))
    assert lane.log[:6] == [("frame", 0), ("frames", [1, 2, 3, 4]), ("frame", 1), ("frame", 2), ("frame", 3),
                            ("frame", 4)]


def test_a_new_request_supersedes_a_batched_one_between_runs() -> None:
    results = Collector()
    worker = RenderWorker(FrameCache(256 * 1024 * 1024), results)
    lane = BatchingFakeLane("a", 200)
    gate = threading.Event()
    entered = threading.Event()
    original = lane.frames

    def slow_frames(indices, scale):
        entered.set()
        gate.wait(30)
        return original(indices, scale)

    lane.frames = slow_frames  # type: ignore[method-assign]
    try:
        worker.submit(0, [LaneJob(0, lane, 1.0)], 200, 200, batch=16)
        assert entered.wait(30)
        worker.submit(150, [LaneJob(0, lane, 1.0)], 1, 200)  # a seek while the first run is drawn
        gate.set()
        wait_for(lambda: worker.idle)
    finally:
        worker.stop()
    assert lane.log == [("frame", 0), ("frames", list(range(1, 17))), ("frame", 150)]


def test_the_transport_prerenders_in_batches() -> None:
    frames = frame_count_for(np.zeros(16000 * 2, np.float32))
    workspace = Workspace()
    transport = Transport(workspace, clock_factory=lambda samples: (WallClock(len(samples) / 16000), None))
    lane = BatchingFakeLane("a", frames)
    submitted: list[int] = []
    submit = transport.worker.submit

    def spy(*args, **kwargs):
        submitted.append(kwargs.get("batch", 1))
        return submit(*args, **kwargs)

    transport.worker.submit = spy  # type: ignore[method-assign]
    try:
        workspace.set_content(np.zeros(16000 * 2, np.float32), [lane])
        transport.prerender = True
        transport.play()
        assert transport.prerender_pending and submitted[-1] == RENDER_BATCH
        deadline = time.monotonic() + 60
        while transport.prerender_pending and time.monotonic() < deadline:
            transport.process_results()
            transport.tick()
            time.sleep(0.01)
        assert not transport.prerender_pending
        assert all(row.all() for row in transport.rendered_rows())
    finally:
        transport.shutdown()
    assert any(what == "frames" and len(indices) == RENDER_BATCH for what, indices in lane.log)


@pytest.fixture(scope="module")
def onnx_lanes() -> list[Lane]:
    spec = LaneSpec("onnx", DEMO / "models" / "audio_encoder.onnx", DEMO / "models" / "generator.onnx",
                    options={"provider": "cpu"})
    session = Session(audio=DEMO / "aud.wav", avatar=DEMO / "avatar", lanes=[spec, spec], path=None)
    lanes = open_lanes(session, models=MODELS)
    assert all(isinstance(lane, Lane) for lane in lanes), lanes
    return lanes  # type: ignore[return-value]


def test_onnx_lane_prerender_uses_frames_and_equals_single_frame_rendering(onnx_lanes: list[Lane]) -> None:
    batched_lane, single_lane = onnx_lanes
    calls: list[list[int]] = []
    original = batched_lane.frames

    def spy(indices, scale=None, batch=RENDER_BATCH):
        calls.append(list(indices))
        return original(indices, scale, batch)

    batched_lane.frames = spy  # type: ignore[method-assign]
    results = Collector()
    worker = RenderWorker(FrameCache(512 * 1024 * 1024), results)
    count = 1 + RENDER_BATCH + 3  # the current frame, one whole run, a short one
    try:
        worker.submit(0, [LaneJob(0, batched_lane, 1.0)], count, batched_lane.num_frames, batch=RENDER_BATCH)
        wait_for(lambda: worker.idle and len(results.of(FrameReady)) == count, timeout=300)
    finally:
        worker.stop()
    assert calls == [list(range(1, 1 + RENDER_BATCH)), list(range(1 + RENDER_BATCH, count))]
    for r in sorted(results.of(FrameReady), key=lambda r: r.index):
        single = single_lane.frame(r.index, 1.0)
        np.testing.assert_array_equal(r.frame.image, single.image)
        np.testing.assert_array_equal(r.frame.crop, single.crop)
