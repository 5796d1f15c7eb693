"""The Diagnostics dock on the shipped demo: the verdicts `report` gives (the untrained Core ML lane is `weights`),
the stage table, the mouth measures and the weight comparison, computed off the window's thread; the scale sweep
whose tiles set a lane's scale through the model; and the timeline's mouth curve per lane."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from PySide6.QtCore import QSettings, Qt

from pipeline.session import demo_session_path
from workspace.diagnostics import LatestOnly

needs_demo = pytest.mark.skipif(not demo_session_path().exists(), reason="the demo bundle is not built")

WAIT_MS = 240_000  # a loaded two-core machine renders the demo's frames at 15-40 ms each; the report takes seconds
UNTRAINED = "Core ML encoder, converted untrained"


@pytest.fixture
def demo_window(qtbot, tmp_path):
    from ui.main_window import MainWindow

    window = MainWindow(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat), prefer_audio=False)
    qtbot.addWidget(window)
    window.resize(1400, 900)
    window.show()
    assert window.open_session(demo_session_path())
    yield window
    window.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("diagnostics-") and t.is_alive()]


def _lane(window, name: str):
    return next(s for s in window.slots if s.spec.name == name)


def _column(table, column: int) -> list[str]:
    return [table.item(row, column).text() for row in range(table.rowCount())]


@needs_demo
def test_the_dock_shows_the_demos_verdicts_stages_mouth_and_weights(qtbot, demo_window, monkeypatch) -> None:
    import ui.diagnostics_panel

    window = demo_window
    panel = window.diagnostics
    threads: list[str] = []
    compute = ui.diagnostics_panel.compute

    def recorded(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return compute(*args, **kwargs)

    monkeypatch.setattr(ui.diagnostics_panel, "compute", recorded)
    assert not panel.isVisible()
    assert panel.toggle_action.shortcut().toString() == "Ctrl+D"
    panel.toggle_action.trigger()  # View ▸ Diagnostics
    assert panel.isVisible()
    qtbot.waitUntil(lambda: panel.result is not None, timeout=WAIT_MS)
    assert panel.result.report is not None, panel.status.text()
    assert threads and set(threads) == {"diagnostics-report"}  # never on the window's thread

    verdict = panel.verdict(UNTRAINED)
    assert verdict.kind == "weights" and verdict.first_divergent_stage == "features"
    text = panel.verdicts.toPlainText()  # the Verdicts tab, in the report's own words
    assert f"{UNTRAINED} — weights, first divergent stage: features" in text
    assert verdict.explanation in text and "no factor fixes it" in text
    assert "evidence: " in text and "r2_of_best_scale" in text  # the figures behind the kind

    stages = list(zip(_column(panel.stages, 0), _column(panel.stages, 1), _column(panel.stages, 6)))
    assert (UNTRAINED, "features", "no") in stages
    assert (UNTRAINED, "mel", "yes") in stages

    # The mouth measures: the reference's mouth moves, the untrained lane's barely does, under a whole-crop PSNR
    # that looks far healthier than the mouth region's.
    mouth = {panel.mouth.item(r, 0).text(): r for r in range(panel.mouth.rowCount())}
    assert set(mouth) == {s.spec.name for s in window.slots}
    assert f"<b>{UNTRAINED}</b>: the mouth barely moves" in panel.mouth_summary.text()
    assert "barely moves" in panel.mouth.item(mouth[UNTRAINED], 1).toolTip()
    reference_range = float(panel.mouth.item(mouth["ONNX Runtime (reference)"], 1).text())
    assert float(panel.mouth.item(mouth[UNTRAINED], 1).text()) < 0.35 * reference_range
    assert float(panel.mouth.item(mouth[UNTRAINED], 4).text()) < float(panel.mouth.item(mouth[UNTRAINED], 6).text())

    # The weight comparison of the encoder files: the Core ML package holds untrained weights.
    assert f"{UNTRAINED}, encoder: looks untrained" in panel.weights.toPlainText()
    assert [(w.lane, w.role, w.untrained) for w in panel.result.weights] == [(UNTRAINED, "encoder", True)]
    assert panel.verdict(UNTRAINED).evidence.get("weights_untrained") is True  # and the verdict says so
    assert "look untrained" in panel.verdict(UNTRAINED).explanation

    # A scale change recomputes (debounced) with the new scale in the report's lanes.
    generation = panel.reports.generation
    window.set_lane_scale(_lane(window, UNTRAINED).lane_id, 40.0)
    qtbot.waitUntil(lambda: panel.reports.generation > generation and not panel.computing
                    and panel.result.report is not None
                    and next(l for l in panel.result.report.lanes if l["name"] == UNTRAINED)["scale"] == 40.0,
                    timeout=WAIT_MS)
    assert panel.verdict(UNTRAINED).kind == "weights"  # no scale makes random weights trained


@needs_demo
def test_a_click_on_a_sweep_tile_sets_that_lanes_scale(qtbot, demo_window) -> None:
    window = demo_window
    panel = window.diagnostics
    untrained = _lane(window, UNTRAINED)
    window.seek_frame(150)
    assert panel.sweep_action.shortcut().toString() == "Ctrl+Shift+D"
    panel.sweep_action.trigger()
    assert panel.isVisible() and panel.tabs.currentWidget() is panel.sweep
    assert panel.sweep.lane_id == untrained.lane_id  # the first lane that is not the reference
    qtbot.waitUntil(lambda: panel.sweep.result is not None, timeout=WAIT_MS)
    result = panel.sweep.result
    scales = [tile.scale for tile in result.tiles]
    assert len(scales) == 9 and scales[0] == pytest.approx(1.0) and scales[-1] == pytest.approx(1000.0)
    assert np.allclose(np.diff(np.log10(scales)), 3 / 8)  # logarithmic steps
    assert result.frame == 150 and all(tile.mouth is not None for tile in result.tiles)
    assert panel.sweep.tiles[0].isChecked()  # the lane's scale now (1x)
    # Scaling random-weight features changes the mouth: the nine crops are not all the same picture.
    assert len({tile.mouth.tobytes() for tile in result.tiles}) > 1

    assert not window.workspace.dirty
    qtbot.mouseClick(panel.sweep.tiles[4], Qt.MouseButton.LeftButton)
    assert window.workspace.lane(untrained.lane_id).scale == pytest.approx(scales[4])
    assert untrained.view.scale_control.scale == pytest.approx(scales[4])
    assert window.workspace.dirty and window.isWindowModified()  # through the model: the quit prompt asks
    assert panel.sweep.tiles[4].isChecked() and not panel.sweep.tiles[0].isChecked()


@needs_demo
def test_the_timeline_gets_a_mouth_curve_per_lane(qtbot, demo_window) -> None:
    window = demo_window
    frames = [40, 41, 42]
    for frame in frames:
        window.seek_frame(frame)
        qtbot.waitUntil(lambda f=frame: all(s.view.shown_index == f and not s.view.is_late for s in window.slots),
                        timeout=WAIT_MS)
    qtbot.waitUntil(lambda: len(window.timeline.mouth_curves) == len(window.slots)
                    and all(np.isfinite(curve[frames]).all() for _, curve in window.timeline.mouth_curves),
                    timeout=WAIT_MS)
    assert [colour for colour, _ in window.timeline.mouth_curves] == [s.colour for s in window.slots]
    for _, curve in window.timeline.mouth_curves:
        assert len(curve) == window.num_frames
    # The values are the mouth measure of the crops the lanes drew (pipeline/mouth.py), frame by frame.
    from pipeline.mouth import mouth_opening

    for slot, (_, curve) in zip(window.slots, window.timeline.mouth_curves):
        crop = window.cache.get((slot.lane_id, slot.scale, frames[-1])).crop
        assert curve[frames[-1]] == pytest.approx(float(mouth_opening(crop[None])[0]))


class _Request:
    def __init__(self, name: str) -> None:
        self.name = name
        self.cancelled = threading.Event()

    def cancel(self) -> None:
        self.cancelled.set()


def test_the_worker_computes_only_the_newest_request_and_tells_superseded_ones(qtbot) -> None:
    """Requests that wait are replaced by newer ones; one being computed is told (cancel) and its result dropped."""
    started, computed, delivered = threading.Event(), [], []

    def work(request: _Request, should_stop) -> str:
        computed.append(request.name)
        if request.name == "a":
            started.set()
            request.cancelled.wait()  # a report in flight: it stops once superseded
            assert should_stop()
        return request.name.upper()

    runner = LatestOnly("diagnostics-test", work, lambda generation, result: delivered.append((generation, result)))
    a, b, c = _Request("a"), _Request("b"), _Request("c")
    runner.submit(a)
    qtbot.waitUntil(started.is_set, timeout=60_000)
    runner.submit(b)
    assert a.cancelled.is_set()
    newest = runner.submit(c)  # b never started: replaced while it waited
    assert b.cancelled.is_set() and not c.cancelled.is_set()
    qtbot.waitUntil(lambda: bool(delivered), timeout=60_000)
    qtbot.waitUntil(lambda: runner.idle, timeout=60_000)
    assert computed == ["a", "c"]
    assert delivered == [(newest, "C")]
    runner.stop()
    assert not [t for t in threading.enumerate() if t.name == "diagnostics-test" and t.is_alive()]


@needs_demo
def test_the_request_holds_the_lanes_at_the_windows_scales_and_a_cancelled_one_stops() -> None:
    """Qt-free: the report's lanes are copies at the workspace's scales (the render thread's lanes keep theirs), and
    cancelling a request stops its report at the next generator call, delivering nothing."""
    from backends.registry import MODELS
    from workspace.diagnostics import compute, snapshot
    from workspace.model import Workspace

    workspace = Workspace(models=MODELS)
    workspace.open_session(demo_session_path())
    untrained = next(s for s in workspace.lanes if s.name == UNTRAINED)
    workspace.set_scale(untrained.lane_id, 40.0)
    request = snapshot(workspace)
    copy = request.lanes[workspace.lanes.index(untrained)]
    assert copy.spec.scale == 40.0 and untrained.lane.spec.scale == 1.0
    assert copy.generator is not untrained.lane.generator  # the copy's calls can be stopped; the lane's cannot
    assert copy.generator.size == untrained.lane.generator.size
    request.cancel()
    assert compute(request) is None
