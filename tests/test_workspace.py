"""The application model without a window: the demo session opened, rescaled, fitted and saved through the
Workspace, in a fresh interpreter that must never load Qt; and the transport driven by a clock the test moves."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.session import demo_session_path
from tests.builders.fake_lanes import FakeLane
from workspace.clock import WallClock
from workspace.model import MAX_SCALE, FitError, Workspace, frame_count_for
from workspace.render_worker import FeaturesReady, FrameReady
from workspace.transport import Transport

ROOT = Path(__file__).resolve().parents[1]
QT_MODULES = ("PySide6", "shiboken6", "pyqtgraph")

HEADLESS = r"""
import json, sys
from pathlib import Path
from backends.registry import MODELS
from pipeline.session import demo_session_path, load_session
from workspace.clock import WallClock
from workspace.model import Workspace
from workspace.transport import Transport

workspace = Workspace(models=MODELS)
transport = Transport(workspace, clock_factory=lambda samples: (WallClock(len(samples) / 16000), None))
progress = []
workspace.open_session(demo_session_path(), progress=lambda message, done, total: progress.append(message))
reference, other = workspace.lanes
events = []
workspace.scale_changed.connect(lambda lane_id, scale: events.append(("scale", lane_id, scale)))
workspace.set_scale(other.lane_id, 40.0)
assert workspace.dirty
for state in workspace.lanes:  # the features the window's worker would compute, here on this thread
    workspace.set_features(state.lane_id, state.lane.raw_features())
fit = workspace.fit(other.lane_id)
saved = workspace.save(Path(sys.argv[1]))
transport.shutdown()
print("RESULT " + json.dumps({
    "progress": progress, "events": events, "fit": [fit.k, fit.correction, fit.scale, fit.r2],
    "dirty_after_save": workspace.dirty,
    "saved": [[lane.name, lane.scale] for lane in load_session(saved).lanes],
    "qt": sorted(m for m in sys.modules if m.split(".")[0] in %r),
}))
""" % (QT_MODULES,)


@pytest.mark.skipif(not demo_session_path().exists(), reason="the demo bundle is not built")
def test_the_demo_is_opened_rescaled_fitted_and_saved_without_loading_qt(tmp_path) -> None:
    target = tmp_path / "fitted.toml"
    child = subprocess.run([sys.executable, "-c", HEADLESS, str(target)], cwd=ROOT, capture_output=True, text=True,
                           timeout=600)
    lines = [line for line in child.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, f"child failed (rc {child.returncode}):\n{child.stdout[-2000:]}\n{child.stderr[-3000:]}"
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["qt"] == []
    assert result["progress"][1:] == ["Opening demo.toml: lane 1 of 2, ONNX Runtime (reference)…",
                                      "Opening demo.toml: lane 2 of 2, Core ML encoder, converted untrained…"]
    assert result["events"][0][2] == 40.0
    k, correction, scale, r2 = result["fit"]
    assert scale == pytest.approx(40.0 * correction)  # Fit multiplies the scale by the correction
    assert r2 < 0.5  # random weights are not a scaled copy (PIPELINE.md): no scale fixes this lane
    assert not result["dirty_after_save"]
    assert result["saved"][0] == ["ONNX Runtime (reference)", 1.0]
    assert result["saved"][1][1] == pytest.approx(scale)


def _workspace(*lanes: FakeLane, seconds: int = 4) -> tuple[Workspace, np.ndarray]:
    samples = np.zeros(16000 * seconds, np.float32)
    workspace = Workspace()
    workspace.set_content(samples, list(lanes))
    return workspace, samples


def test_fit_applies_the_correction_and_names_k_against_the_reference() -> None:
    frames = frame_count_for(np.zeros(16000 * 4, np.float32))
    workspace, _ = _workspace(FakeLane("ref", frames), FakeLane("small", frames, gain=0.01))
    reference, small = workspace.lanes
    with pytest.raises(FitError) as waiting:
        workspace.fit(small.lane_id)
    assert waiting.value.pending
    for state in workspace.lanes:
        workspace.set_features(state.lane_id, state.lane.raw_features())
    fit = workspace.fit(small.lane_id)
    assert fit.k == pytest.approx(0.01, rel=1e-5)  # small ≈ k × reference
    assert fit.correction == pytest.approx(100.0, rel=1e-4) and small.scale == pytest.approx(100.0, rel=1e-4)
    assert fit.r2 == pytest.approx(1.0) and not fit.clamped
    with pytest.raises(FitError, match="is the reference"):
        workspace.fit(reference.lane_id)


def test_a_fit_beyond_the_largest_scale_is_clamped_and_says_so() -> None:
    frames = frame_count_for(np.zeros(16000 * 4, np.float32))
    workspace, _ = _workspace(FakeLane("ref", frames), FakeLane("tiny", frames, gain=1e-4))
    for state in workspace.lanes:
        workspace.set_features(state.lane_id, state.lane.raw_features())
    fit = workspace.fit(workspace.lanes[1].lane_id)
    assert fit.clamped and fit.scale == MAX_SCALE


def test_lane_edits_keep_stable_ids_mark_the_workspace_dirty_and_announce_themselves() -> None:
    frames = frame_count_for(np.zeros(16000 * 4, np.float32))
    workspace, _ = _workspace(FakeLane("a", frames), FakeLane("b", frames), FakeLane("c", frames))
    seen: list[str] = []
    workspace.lanes_changed.connect(lambda: seen.append("lanes"))
    workspace.dirty_changed.connect(lambda dirty: seen.append(f"dirty={dirty}"))
    ids = [s.lane_id for s in workspace.lanes]
    assert not workspace.dirty
    workspace.move_lane(ids[0], 2)
    assert [s.lane_id for s in workspace.lanes] == [ids[1], ids[2], ids[0]]
    assert seen == ["dirty=True", "lanes"]
    workspace.set_reference(ids[2])
    workspace.remove_lane(ids[2])
    assert workspace.reference_id == ids[1]  # the reference went with its lane: the first lane takes over
    assert [s.name for s in workspace.lanes] == ["b", "a"]


def test_the_transport_follows_a_clock_the_test_moves() -> None:
    """No wall time at all: the clock's time is a number this test sets, so the result is exact on any machine."""
    now = [100.0]
    frames = frame_count_for(np.zeros(16000 * 6, np.float32))
    workspace = Workspace()
    transport = Transport(workspace, clock_factory=lambda samples: (WallClock(len(samples) / 16000,
                                                                              now=lambda: now[0]), None))
    shown: list[int] = []
    transport.frame_changed.connect(shown.append)
    try:
        workspace.set_content(np.zeros(16000 * 6, np.float32), [FakeLane("a", frames)])
        assert shown == [0]  # new content announces frame 0 (the toolbar shows "frame 0 / N")
        transport.set_av_offset(0.2)
        transport.seek(20)
        transport.play()
        now[0] += 0.2  # 5 frames of audio
        transport.tick()
        assert transport.current_frame == 25
        transport.pause()
        assert transport.clock.position_s() * 25 - transport.current_frame == pytest.approx(5.5)
        transport.set_loop((30, 40))
        transport.seek(38)
        transport.play()
        now[0] += 0.2
        transport.tick()  # 38 + 5 is past the loop's end: back to its start
        assert transport.current_frame == 30
    finally:
        transport.shutdown()


def test_headless_results_wait_until_the_caller_applies_them() -> None:
    frames = frame_count_for(np.zeros(16000 * 2, np.float32))
    workspace = Workspace()
    transport = Transport(workspace, clock_factory=lambda samples: (WallClock(len(samples) / 16000), None))
    ready: list[FrameReady] = []
    transport.frame_ready.connect(ready.append)
    try:
        workspace.set_content(np.zeros(16000 * 2, np.float32), [FakeLane("a", frames)])
        import time

        deadline = time.monotonic() + 60  # a generous wait for the worker thread, not a timing assertion
        while not transport.worker.idle and time.monotonic() < deadline:
            time.sleep(0.01)
        assert workspace.lanes[0].raw_features is None  # nothing applied behind the caller's back
        assert transport.process_results() > 0
        assert workspace.lanes[0].raw_features is not None
        assert sorted(r.index for r in ready) == list(range(10))  # the paused look-ahead
        assert not any(isinstance(r, FeaturesReady) for r in ready)
    finally:
        transport.shutdown()
