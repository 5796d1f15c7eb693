"""Faults during use (issue 13): a backend that raises or returns NaN for some frames, a model file that changes on
disk, a model that never returns, a disk that fills during an export, quitting while work is in flight.

Qt-free where the behaviour is the model's (workspace/: Workspace, Transport, RenderWorker), the real window through
pytest-qt where it is the window's. Waits are generous polls for a worker thread, never timing assertions.
(The audio device disappearing mid-play is tests/test_audio_clock.py: a FallbackWatcher unit test and a real JACK
server killed during playback.)
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile

from backends.registry import MODELS
from tests.builders.avatar import make_dataset
from tests.builders.fake_lanes import FakeLane, FakeRenderedFrame
from tests.builders.waiting import wait_for
from tests.builders.onnx_models import make_encoder, make_endless_encoder, make_generator
from workspace.clock import WallClock
from workspace.model import Workspace, frame_count_for
from workspace.render_worker import FrameFailed
from workspace.transport import Transport

WAIT_S = 120.0  # generous: two shared cores; a bound on waiting, not on speed
WORKER_THREADS = ("render-worker", "video-export")




class MovedTime:
    """A clock time the test moves: playback never depends on how fast the machine is."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def clock_factory(self, samples):
        return WallClock(len(samples) / 16000, "test clock", now=self), None


def headless(lanes, seconds: float = 2.0, models=None) -> tuple[Workspace, Transport]:
    workspace = Workspace(models=models)
    transport = Transport(workspace, clock_factory=MovedTime().clock_factory)
    if lanes is not None:
        workspace.set_content(np.zeros(int(16000 * seconds), np.float32), lanes)
    return workspace, transport


def settle(transport: Transport, condition) -> None:
    """Apply worker results on this thread (as the window does) until ``condition`` holds."""
    wait_for(condition, poll=transport.process_results)
    transport.process_results()


def worker_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.is_alive() and t.name in WORKER_THREADS]


def child_processes() -> list[int]:
    """Processes whose parent is this one (Linux /proc; empty elsewhere)."""
    children = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and int(fields[1]) == os.getpid() and fields[0] != "Z":
            children.append(int(entry.name))
    return children


# --- lanes that misbehave on some frames ---------------------------------------------------------------------------

class FlakyLane(FakeLane):
    """Draws most frames; raises on ``raising`` frames and returns NaN pixels (counted) on ``nan`` frames."""

    def __init__(self, name: str, num_frames: int, raising=(), nan=(), **kwargs) -> None:
        super().__init__(name, num_frames, **kwargs)
        self.raising, self.nan = set(raising), set(nan)

    def frame(self, index: int, scale: float):
        drawn = super().frame(index, scale)
        if index in self.raising:
            raise RuntimeError(f"backend error on frame {index}")
        if index in self.nan:
            return NanFrame(drawn.image, drawn.crop, drawn.template_index, non_finite=3 * 160 * 160)
        return drawn


class NanFrame(FakeRenderedFrame):
    def __init__(self, image, crop, template_index, non_finite: int) -> None:
        super().__init__(image, crop, template_index)
        self.non_finite = non_finite


def test_a_lane_that_raises_on_some_frames_marks_them_and_every_lane_goes_on() -> None:
    frames = frame_count_for(np.zeros(32000, np.float32))
    good, flaky = FakeLane("good", frames), FlakyLane("flaky", frames, raising={3, 5})
    workspace, transport = headless([good, flaky])
    failed: list[FrameFailed] = []
    transport.frame_failed.connect(failed.append)
    try:
        good_id, flaky_id = (state.lane_id for state in workspace.lanes)
        settle(transport, lambda: transport.worker.idle and transport.process_results() == 0)
        flaky_state = workspace.lane(flaky_id)
        assert flaky_state.failure is None  # one frame's fault does not fail the lane
        assert sorted(flaky_state.failed_frames) == [(1.0, 3), (1.0, 5)]
        assert "backend error on frame 3" in flaky_state.failed_frames[(1.0, 3)]
        assert sorted((f.lane_id, f.index) for f in failed) == [(flaky_id, 3), (flaky_id, 5)]
        rows = transport.rendered_rows()
        assert rows[0][:10].all()  # the other lane drew every frame of the paused look-ahead
        assert list(np.flatnonzero(rows[1][:10])) == [0, 1, 2, 4, 6, 7, 8, 9]  # and so did this one, but 3 and 5
        # A failed frame is not retried at that scale (it would raise again on every redraw) ...
        calls = sum(1 for call in flaky.calls if call[0] == "frame" and call[1] == 3)
        transport.seek(2)
        settle(transport, lambda: transport.worker.idle and transport.process_results() == 0)
        assert sum(1 for call in flaky.calls if call[0] == "frame" and call[1] == 3) == calls
        # ... and the lane goes on past it.
        assert transport.rendered_rows()[1][10:12].all()
    finally:
        transport.shutdown()


def test_a_model_that_fails_on_every_frame_fails_its_lane_with_the_first_reason() -> None:
    frames = frame_count_for(np.zeros(32000, np.float32))
    broken = FlakyLane("broken", frames, raising=set(range(frames)))
    workspace, transport = headless([FakeLane("good", frames), broken])
    try:
        settle(transport, lambda: workspace.lanes[1].failure is not None)
        assert "backend error on frame 0" in workspace.lanes[1].failure
        settle(transport, lambda: transport.worker.idle)
        assert transport.rendered_rows()[0][:10].all()
    finally:
        transport.shutdown()


def test_nan_frames_reach_the_owner_with_their_count_and_the_lane_goes_on() -> None:
    frames = frame_count_for(np.zeros(32000, np.float32))
    workspace, transport = headless([FakeLane("good", frames), FlakyLane("nan", frames, nan={2, 4})])
    counts: dict[int, int] = {}

    def count(result) -> None:
        if result.lane_id == workspace.lanes[1].lane_id:
            counts[result.index] = getattr(result.frame, "non_finite", 0)

    transport.frame_ready.connect(count)
    try:
        settle(transport, lambda: transport.worker.idle and len(counts) >= 10)
        assert {i for i, n in counts.items() if n} == {2, 4}
        assert workspace.lanes[1].failure is None and transport.rendered_rows()[1][:10].all()
    finally:
        transport.shutdown()


# --- a real session of tiny ONNX models (no espeak needed) ---------------------------------------------------------

def write_session(folder: Path, port_encoder: str = "port.onnx", seconds: float = 2.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(16000 * seconds)) / 16000
    soundfile.write(folder / "speech.wav", (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)))
                    .astype(np.float32), 16000)
    make_dataset(folder / "avatar", frames=6, size=(320, 240), image_format="png")
    make_encoder(folder / "reference.onnx", seed=3)
    if port_encoder == "port.onnx":
        make_encoder(folder / "port.onnx", seed=3)
    make_generator(folder / "generator.onnx", size=160, seed=4)
    path = folder / "session.toml"
    path.write_text('audio = "speech.wav"\navatar = "avatar"\n'
                    '[[lanes]]\nname = "reference"\nencoder = "reference.onnx"\ngenerator = "generator.onnx"\n'
                    f'[[lanes]]\nname = "port"\nencoder = "{port_encoder}"\ngenerator = "generator.onnx"\n',
                    encoding="utf-8")
    return path


def test_reload_models_picks_up_a_rewritten_model_and_drops_the_old_models_frames(tmp_path) -> None:
    session = write_session(tmp_path)
    workspace, transport = headless(None, models=MODELS)
    try:
        workspace.open_session(session)
        reference_id, port_id = (state.lane_id for state in workspace.lanes)
        settle(transport, lambda: transport.worker.idle and all(row[:10].all() for row in transport.rendered_rows()))
        before = np.array(workspace.lane(port_id).raw_features)
        assert workspace.changed_lanes() == [] and workspace.reload_models() == []  # nothing changed: nothing done

        make_encoder(tmp_path / "port.onnx", seed=3, scale=2.0)  # the port's model is rewritten on disk
        assert [state.lane_id for state in workspace.changed_lanes()] == [port_id]
        reloaded = workspace.reload_models()
        assert [state.name for state in reloaded] == ["port"]
        new_id = workspace.lanes[1].lane_id
        assert new_id != port_id and workspace.lanes[0].lane_id == reference_id  # the other lane is untouched
        assert transport.cache.keys_matching(port_id, 1.0) == set()  # the old model's frames are gone
        assert transport.cache.keys_matching(reference_id, 1.0) >= set(range(10))  # the other lane's stay
        assert not workspace.dirty  # nothing a save would write changed
        settle(transport, lambda: workspace.lane(new_id).raw_features is not None
               and transport.rendered_rows()[1][:10].all())
        np.testing.assert_allclose(workspace.lane(new_id).raw_features, 2.0 * before, rtol=1e-5, atol=1e-6)
    finally:
        transport.shutdown()


# --- a model that never returns ------------------------------------------------------------------------------------

def test_stopping_a_lane_whose_onnx_loop_never_ends_lets_the_other_lanes_render(tmp_path) -> None:
    make_endless_encoder(tmp_path / "endless.onnx")
    session = write_session(tmp_path, port_encoder="endless.onnx")
    workspace, transport = headless(None, models=MODELS)
    try:
        workspace.open_session(session)
        reference_id, endless_id = (state.lane_id for state in workspace.lanes)
        wait_for(lambda: (busy := transport.busy_lane()) is not None and busy.lane_id == endless_id)
        # stuck in its encoder: the features, or frame 0 drawn from just its windows before them (start-up draws
        # the current frame first)
        assert transport.busy_lane().index in (None, 0)
        assert transport.rendered_rows()[0].sum() <= 1  # the reference waits behind it on the one render thread

        assert transport.stop_lane(endless_id)  # onnxruntime's RunOptions.terminate ends the Loop
        settle(transport, lambda: workspace.lane(endless_id).failure is not None)
        assert workspace.lane(endless_id).failure.startswith("stopped: its model did not return")
        settle(transport, lambda: transport.rendered_rows()[0][:10].all())  # the other lane goes on
        assert transport.worker.abandoned_threads == []  # the call ended: no thread was left behind
        assert workspace.lane(reference_id).failure is None
    finally:
        transport.shutdown()
    assert worker_threads() == []


def test_a_call_that_cannot_be_interrupted_is_left_behind_and_a_fresh_thread_renders_the_others(
        monkeypatch) -> None:
    import workspace.render_worker as render_worker

    release = threading.Event()
    entered = threading.Event()

    class Hung(FakeLane):  # a runtime without a cancel hook (Python code, a native call that ignores terminate)
        def raw_features(self):
            entered.set()
            release.wait(WAIT_S)
            return super().raw_features()

    frames = frame_count_for(np.zeros(32000, np.float32))
    workspace, transport = headless([Hung("hung", frames), FakeLane("good", frames)])
    hung_id, good_id = (state.lane_id for state in workspace.lanes)
    monkeypatch.setattr(render_worker, "STOP_GRACE_S", 0.0)
    try:
        wait_for(entered.is_set)
        assert transport.stop_lane(hung_id)  # it is running; nothing can end this call

        def ticked() -> bool:  # the window's display tick retires a thread stuck after Stop
            transport.tick()
            return workspace.lane(hung_id).failure is not None

        settle(transport, ticked)
        assert "could not be interrupted" in workspace.lane(hung_id).failure
        assert len(transport.worker.abandoned_threads) == 1
        settle(transport, lambda: transport.rendered_rows()[1][:10].all())  # a fresh thread drew the other lane
        assert transport.cache.keys_matching(hung_id, 1.0) == set()
    finally:
        release.set()  # the retired thread returns, sees it was retired, and ends without touching anything
        for thread in transport.worker.abandoned_threads:
            thread.join(WAIT_S)
        transport.shutdown()
    assert worker_threads() == []
    assert workspace.lane(hung_id).raw_features is None  # its late result belonged to no one


def test_shutting_down_during_an_endless_model_ends_the_render_thread(tmp_path) -> None:
    make_endless_encoder(tmp_path / "endless.onnx")
    workspace, transport = headless(None, models=MODELS)
    workspace.open_session(write_session(tmp_path, port_encoder="endless.onnx"))
    endless_id = workspace.lanes[1].lane_id
    wait_for(lambda: (busy := transport.busy_lane()) is not None and busy.lane_id == endless_id)
    transport.shutdown()  # cancels the call in progress, then joins the thread
    assert worker_threads() == []


# --- the window ----------------------------------------------------------------------------------------------------

WAIT_MS = int(WAIT_S * 1000)


@pytest.fixture
def make_window(qtbot, tmp_path):
    """A window on a clock the test moves (prefer_audio off); every window made is closed, and checked to leave no
    worker thread behind."""
    from PySide6.QtCore import QSettings

    from ui.main_window import MainWindow

    made = []

    def make():
        time_source = MovedTime()
        window = MainWindow(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat), prefer_audio=False,
                            clock_factory=time_source.clock_factory)
        qtbot.addWidget(window)
        window.show()
        made.append(window)
        return window

    yield make
    for window in made:
        window.close()
    assert worker_threads() == []


def _slot(window, name: str):
    return next(s for s in window.slots if s.spec.name == name)


def test_the_window_marks_a_lanes_failed_and_nan_frames_and_the_other_lane_goes_on(qtbot, make_window) -> None:
    window = make_window()
    samples = np.zeros(32000, np.float32)
    frames = frame_count_for(samples)
    window.set_content(samples, [FakeLane("good", frames), FlakyLane("flaky", frames, raising={3}, nan={5})])
    flaky, good = _slot(window, "flaky"), _slot(window, "good")
    qtbot.waitUntil(lambda: flaky.view.failed_frame(3) is not None and flaky.view.non_finite_pixels > 0,
                    timeout=WAIT_MS)
    assert flaky.view.error_text is None  # the lane is not failed
    marker = flaky.view.non_finite_marker.text()
    assert "1 frames failed (first 3: RuntimeError: backend error on frame 3)" in marker
    assert "NaN/Inf pixels in 1 frames (first 5)" in marker
    window._refresh_timeline()
    good_row, flaky_row = window.timeline.non_finite_rows
    assert not good_row.any() and list(np.flatnonzero(flaky_row)) == [3, 5]  # red marks on the flaky lane's row

    window.seek_frame(3)  # the good lane shows frame 3; the flaky lane says why it has none (not "late")
    qtbot.waitUntil(lambda: good.view.shown_index == 3, timeout=WAIT_MS)
    assert flaky.view.status.text().startswith("frame 3 failed: RuntimeError: backend error on frame 3")
    assert not flaky.view.is_late
    window.seek_frame(4)
    qtbot.waitUntil(lambda: flaky.view.shown_index == 4 and good.view.shown_index == 4, timeout=WAIT_MS)


def test_reload_models_in_the_file_menu_picks_up_a_rewritten_model(qtbot, make_window, tmp_path) -> None:
    window = make_window()
    assert window.open_session(write_session(tmp_path / "session"))
    port = _slot(window, "port")
    qtbot.waitUntil(lambda: window.cache.get((port.lane_id, 1.0, 0)) is not None and port.view.shown_index == 0,
                    timeout=WAIT_MS)
    old_frame = window.cache.get((port.lane_id, 1.0, 0))
    action = next(a for a in window.file_menu.actions() if a.text().replace("&", "") == "Reload models")
    assert action.shortcut().toString() == "Ctrl+R"

    make_encoder(tmp_path / "session" / "port.onnx", seed=3, scale=2.0)  # rewritten on disk while the window is open
    action.trigger()
    assert window.statusBar().currentMessage() == "Reloaded 1 lane: port"
    reloaded = _slot(window, "port")
    assert reloaded.lane_id != port.lane_id and _slot(window, "reference").lane_id != reloaded.lane_id
    assert window.cache.keys_matching(port.lane_id, 1.0) == set()  # the old model's frames are gone
    qtbot.waitUntil(lambda: reloaded.view.shown_index == 0, timeout=WAIT_MS)
    new_frame = window.cache.get((reloaded.lane_id, 1.0, 0))
    assert not np.array_equal(new_frame.crop, old_frame.crop)  # drawn by the new model
    action.trigger()
    assert window.statusBar().currentMessage().startswith("No model file changed")


def test_a_lane_whose_model_never_returns_offers_stop_and_the_others_go_on(qtbot, make_window, tmp_path,
                                                                           monkeypatch) -> None:
    import ui.main_window as main_window
    from PySide6.QtCore import Qt

    monkeypatch.setattr(main_window, "STUCK_AFTER_S", 0.0)  # offer Stop at once: no waiting on wall time
    folder = tmp_path / "session"
    folder.mkdir()
    make_endless_encoder(folder / "endless.onnx")
    window = make_window()
    assert window.open_session(write_session(folder, port_encoder="endless.onnx"))
    port, reference = _slot(window, "port"), _slot(window, "reference")
    qtbot.waitUntil(lambda: port.view.stop_button.isVisible(), timeout=WAIT_MS)
    assert "no answer for" in port.view.busy_marker.text()
    assert not reference.view.stop_button.isVisible()

    before = window.current_frame  # the window answers while the lane is stuck
    window.step(1)
    assert window.current_frame == before + 1 and f"frame {before + 1} /" in window.frame_label.text()

    qtbot.mouseClick(port.view.stop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: port.view.error_text is not None, timeout=WAIT_MS)
    assert "stopped: its model did not return" in port.view.error_text
    assert port.view.status.text() == "stopped" and not port.view.stop_button.isVisible()
    qtbot.waitUntil(lambda: window.cache.keys_matching(reference.lane_id, 1.0) >= set(range(1, 11)),
                    timeout=WAIT_MS)  # the reference renders on past the stopped lane
    qtbot.waitUntil(lambda: reference.view.shown_index == window.current_frame, timeout=WAIT_MS)


def test_closing_the_window_while_a_model_never_returns_ends_the_render_thread(qtbot, make_window, tmp_path) -> None:
    folder = tmp_path / "session"
    folder.mkdir()
    make_endless_encoder(folder / "endless.onnx")
    window = make_window()
    assert window.open_session(write_session(folder, port_encoder="endless.onnx"))
    port = _slot(window, "port")
    qtbot.waitUntil(lambda: (busy := window.transport.busy_lane()) is not None and busy.lane_id == port.lane_id,
                    timeout=WAIT_MS)
    window.close()  # quitting cancels the endless call: the render thread ends (checked by the fixture too)
    assert worker_threads() == [] and child_processes() == []


def test_a_full_disk_during_an_export_is_one_message_and_the_old_file_stays(qtbot, make_window, tmp_path) -> None:
    import resource
    import signal

    window = make_window()
    assert window.open_session(write_session(tmp_path / "session"))
    out = tmp_path / "out.mp4"
    out.write_bytes(b"the old video")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    # A real write failure: files of this process may not grow past 4 KB while the export runs (EFBIG, the error a
    # full quota gives), so libav's writes into the temporary file fail part-way.
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        with qtbot.waitSignal(window.exports.finished, timeout=WAIT_MS) as ended:
            assert window.exports.export_video(out, force=True) is not None
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    job = ended.args[0]
    assert job.outcome == "failed" and "disk is full" in job.message and str(out) in job.message
    assert "disk is full" in window.exports.message_box.text()
    assert out.read_bytes() == b"the old video"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4", "s.ini", "session"]  # no .part left


def test_quitting_during_an_export_and_a_prerender_leaves_no_thread_or_file(qtbot, make_window, tmp_path,
                                                                          monkeypatch) -> None:
    import ui.export_actions as export_actions

    window = make_window()
    assert window.open_session(write_session(tmp_path / "session", seconds=4.0))
    window.prerender_action.setChecked(True)
    window.play()  # pre-renders the whole clip first
    reached = threading.Event()
    picture = export_actions.VideoExportJob.picture

    def noted_picture(self, i):  # tells the test the export is in flight
        if i == 2:
            reached.set()
        return picture(self, i)

    monkeypatch.setattr(export_actions.VideoExportJob, "picture", noted_picture)
    job = window.exports.export_video(tmp_path / "quit.mp4", force=False)
    assert job is not None
    qtbot.waitUntil(reached.is_set, timeout=WAIT_MS)
    assert window.transport.prerender_pending and not window.worker.idle  # both still at work
    window.close()  # the export is cancelled on the next turn of the event loop, once the window is really closed
    qtbot.waitUntil(lambda: not job.thread.is_alive(), timeout=WAIT_MS)
    assert job.outcome == "cancelled"
    assert worker_threads() == [] and child_processes() == []
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".mp4", ".part")) == []


def test_a_cancel_that_comes_before_the_run_begins_still_ends_it() -> None:
    """Stop can land while the lane is still preparing its call (its mel): the run it then begins ends at once."""
    from core import limits

    calls: list[str] = []
    limits.cancel_runs_on(threading.get_ident())
    try:
        with limits.cancellable(lambda: calls.append("cancelled")):
            assert calls == ["cancelled"]  # onnxruntime's terminate flag is set before session.run
    finally:
        limits.clear_cancel()  # what the render worker does when it takes its next job
    with limits.cancellable(lambda: calls.append("again")):
        pass
    assert calls == ["cancelled"]
