"""Playback clocks: the pure timing rules, the wall-clock fallback, and the audio clock on a real-time JACK device.

The JACK test starts a dummy JACK server (a real, real-time PortAudio device with no sound card), plays 5 s in
the real window and checks, at every display tick, that the frame on screen is the frame of the sample being
heard. The expected frame is computed here from the raw log of audio blocks the device consumed (interpolating
between blocks' DAC times), not from the clock's own extrapolation.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import numpy as np
import pytest

from tests.builders.fake_lanes import FakeLane, encoded_frame_index
from workspace.clock import FallbackWatcher, WallClock, frame_at, heard_sample, open_clock


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------------------------------------------------------
# pure rules
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("position", "offset", "expected"),
    [(0.0, 0.0, 0), (0.039, 0.0, 0), (0.04, 0.0, 1), (1.0, 0.0, 25), (2.5, 0.0, 62),
     (1.0, 0.2, 20),  # a positive offset delays the picture by 0.2 s = 5 frames
     (1.0, -0.2, 30), (0.1, 0.5, 0), (100.0, 0.0, 99)],  # clamped to the clip's 100 frames
)
def test_frame_at_is_the_25fps_frame_of_the_heard_time(position, offset, expected) -> None:
    assert frame_at(position, 100, offset) == expected


def test_heard_sample_extrapolates_from_the_dac_anchor() -> None:
    # sample 48000 reaches the DAC at t=10.0; 5 ms later, 240 more samples at 48 kHz have been heard
    assert heard_sample(48000, 10.0, 10.005, 48000) == pytest.approx(48240)
    # before the block reaches the DAC, the heard position is still behind the anchor
    assert heard_sample(48000, 10.0, 9.99, 48000) == pytest.approx(47520)


def test_wall_clock_plays_pauses_seeks_and_slows_down() -> None:
    now = FakeTime()
    clock = WallClock(10.0, now=now)
    clock.play()
    now.now += 2.0
    assert clock.position_s() == pytest.approx(2.0)
    clock.pause()
    now.now += 5.0
    assert clock.position_s() == pytest.approx(2.0) and not clock.playing
    clock.seek(4.0)
    clock.set_speed(0.25)
    clock.play()
    now.now += 2.0
    assert clock.position_s() == pytest.approx(4.5)
    now.now += 100.0
    assert clock.position_s() == pytest.approx(10.0) and not clock.playing  # stops at the end
    with pytest.raises(ValueError, match="expected 0.25 to 1.0, found 2"):
        clock.set_speed(2.0)


class DyingAudioClock:
    """An audio clock whose device vanished at 3.2 s of playback."""

    kind = "audio"
    description = "audio: test device"
    duration_s = 10.0
    playing = True
    failure = "the audio device went away"

    def __init__(self) -> None:
        self.closed = False

    def position_s(self) -> float:
        return 3.2

    def close(self) -> None:
        self.closed = True


def test_a_vanished_device_hands_over_to_a_wall_clock_at_the_same_position() -> None:
    dying = DyingAudioClock()
    watcher = FallbackWatcher(dying)
    assert watcher.check() == "the audio device went away"
    assert dying.closed
    assert watcher.clock.kind == "wall" and "went away" in watcher.clock.description
    assert watcher.clock.playing
    assert watcher.clock.position_s() == pytest.approx(3.2, abs=0.05)
    assert watcher.check() is None  # only once


def test_no_device_gives_a_wall_clock_and_a_reason(monkeypatch) -> None:
    import sounddevice

    def no_device(*args, **kwargs):
        raise sounddevice.PortAudioError("Error querying device -1")

    monkeypatch.setattr(sounddevice, "query_devices", no_device)
    clock, reason = open_clock(np.zeros(16000, np.float32))
    assert clock.kind == "wall"
    assert "PortAudioError" in reason and "Error querying device" in reason
    assert "wall clock" in clock.description


# ---------------------------------------------------------------------------------------------------------------
# a real-time device: JACK's dummy driver
# ---------------------------------------------------------------------------------------------------------------
JACK_RATE = 48000
JACK_PERIOD = 480


@pytest.fixture
def jack_device(monkeypatch):
    """Starts a private jackd (dummy driver), re-initialises PortAudio, yields the JACK output device index."""
    if shutil.which("jackd") is None or shutil.which("jack_wait") is None:
        pytest.skip("jackd (Debian package jackd2) is not installed; tools/setup.sh dev installs it")
    import sounddevice

    server = f"lipsync-test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("JACK_DEFAULT_SERVER", server)
    monkeypatch.setenv("JACK_NO_AUDIO_RESERVATION", "1")
    process = subprocess.Popen(
        ["jackd", "--no-realtime", "-n", server, "-d", "dummy", "-r", str(JACK_RATE), "-p", str(JACK_PERIOD)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=os.environ.copy(),
    )
    try:
        waited = subprocess.run(["jack_wait", "-w", "-t", "30", "-s", server], capture_output=True, text=True,
                                timeout=60)
        if process.poll() is not None or "available" not in waited.stdout:
            output = process.stdout.read().decode(errors="replace") if process.poll() is not None else ""
            pytest.fail(f"jackd did not start: {waited.stdout} {waited.stderr} {output}")
        sounddevice._terminate()  # PortAudio lists host APIs at initialisation: re-scan now that JACK runs
        sounddevice._initialize()
        apis = [api for api in sounddevice.query_hostapis() if "JACK" in api["name"]]
        assert apis, f"PortAudio has no JACK host API: {sounddevice.query_hostapis()}"
        yield apis[0]["default_output_device"]
    finally:
        # PortAudio must let go of the JACK client before the server dies, or its JACK host API asserts on exit.
        sounddevice._terminate()
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        sounddevice._initialize()


def heard_frame_from_blocks(blocks, now: float, rate: float, speed: float = 1.0) -> float | None:
    """The media frame at the DAC at stream time ``now``, interpolated between the two blocks around ``now``."""
    for earlier, later in zip(blocks, blocks[1:]):
        if earlier.dac_time <= now < later.dac_time:
            fraction = (now - earlier.dac_time) / (later.dac_time - earlier.dac_time)
            sample = earlier.first_sample + fraction * (later.first_sample - earlier.first_sample)
            return sample / rate * speed * 25.0
    return None


@pytest.mark.audio_device
@pytest.mark.slow
def test_the_displayed_frame_follows_the_jack_clock_for_five_seconds(qtbot, tmp_path, jack_device) -> None:
    from PySide6.QtCore import QSettings

    from ui.main_window import MainWindow, frame_count_for

    samples = (0.2 * np.sin(2 * np.pi * 220 * np.arange(16000 * 7) / 16000)).astype(np.float32)
    frames = frame_count_for(samples)
    window = MainWindow(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat), prefer_audio=True,
                        audio_device=jack_device, audio_options={"samplerate": JACK_RATE, "record_blocks": True})
    qtbot.addWidget(window)
    window.show()
    window.set_content(samples, [FakeLane("a", frames), FakeLane("b", frames, seed=1)])
    clock = window.clock
    assert clock.kind == "audio", window.clock_label.text()
    assert clock.rate == JACK_RATE
    qtbot.waitUntil(lambda: all(s.view.shown_index == 0 for s in window.slots), timeout=30_000)

    observations: list[tuple[float, int, list[int]]] = []
    asked_at: list[float] = []  # the device's time at the moment the window asked the clock for its position
    real_position = clock.position_s

    def position_s() -> float:
        asked_at.append(clock._stream.time)
        return real_position()

    clock.position_s = position_s

    def observe() -> None:  # runs right after the window's own tick (connected after it)
        if clock.playing and asked_at:
            # The time the tick used, not the time now: a loaded machine may pause this thread between the two.
            # A lane marked late is behind by design (its renderer fell behind), so only on-time pictures count.
            pictures = [encoded_frame_index(s.view.image.shown[..., ::-1]) for s in window.slots
                        if not s.view.is_late]
            observations.append((asked_at[-1], window.current_frame, pictures))

    window.timer.timeout.connect(observe)
    window.play()
    qtbot.waitUntil(lambda: clock.position_s() >= 5.0, timeout=60_000)
    window.pause()
    window.timer.timeout.disconnect(observe)
    blocks = list(clock.blocks)
    window.close()

    # The device consumed the 5 s asked for, and its clock never ran slower than the samples it took. It may run
    # faster: on a loaded machine JACK's dummy driver misses cycles (xruns) and its time jumps ahead, and how long
    # past 5 s it played depends on how soon the test noticed; neither is the window's doing, so neither is asserted.
    stream_span = blocks[-1].dac_time - blocks[0].dac_time
    samples_span = (blocks[-1].first_sample - blocks[0].first_sample) / JACK_RATE
    assert samples_span >= 4.9
    assert stream_span >= samples_span - 2 * JACK_PERIOD / JACK_RATE
    checked = 0
    worst = 0.0
    for now, shown, pictures in observations:
        expected = heard_frame_from_blocks(blocks, now, JACK_RATE)
        if expected is None:
            continue
        checked += 1
        for frame in [shown, *pictures]:
            worst = max(worst, abs(frame + 0.5 - expected))  # +0.5: a frame covers [i, i+1) of frame time
            assert abs(frame + 0.5 - expected) <= 1.5, (now, frame, expected)
    # How many display ticks ran depends on how busy the machine was, not on the window: each checked tick must be
    # right, and a handful is enough to show the check ran at all.
    assert checked >= 5, f"only {checked} display ticks could be checked"
    print(f"checked {checked} ticks; worst distance from the heard frame {worst:.2f} frames")


@pytest.mark.audio_device
def test_stepping_plays_exactly_that_frames_200_ms_on_the_device(jack_device) -> None:
    import time

    from workspace.clock import AudioClock

    clock = AudioClock(np.zeros(16000 * 3, np.float32), device=jack_device, samplerate=JACK_RATE, record_blocks=True)
    try:
        clock.seek(0.5)
        clock.play_snippet(30 / 25)  # frame 30 starts at 1.2 s
        deadline = time.monotonic() + 30
        while clock._snippet is not None and time.monotonic() < deadline:
            time.sleep(0.01)
        snippet = [b for b in clock.blocks if b.snippet]
        assert snippet, "the device never played the snippet"
        assert snippet[0].first_sample == 57_600  # 1.2 s x 48 kHz
        assert sum(b.frames for b in snippet) == 9_600  # 0.2 s x 48 kHz
        assert all(a.first_sample + a.frames == b.first_sample for a, b in zip(snippet, snippet[1:]))
        assert clock.position_s() == pytest.approx(0.5)  # the paused position did not move
        assert not [b for b in clock.blocks if not b.snippet]  # and nothing else was played
    finally:
        clock.close()


# The device-loss scenario runs in a child process: after its JACK server dies, PortAudio cannot be shut down
# cleanly (its JACK host API asserts in Pa_Terminate), so the child reports and leaves with os._exit.
DEVICE_LOSS_CHILD = r"""
import json, os, subprocess, sys, time
sys.path.insert(0, os.getcwd())
os.environ["QT_QPA_PLATFORM"] = "offscreen"
server = sys.argv[1]
os.environ["JACK_DEFAULT_SERVER"] = server
jackd = subprocess.Popen(["jackd", "--no-realtime", "-n", server, "-d", "dummy", "-r", "48000", "-p", "480"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
open(sys.argv[3], "w").write(str(jackd.pid))  # so the test can stop it if this child dies first
subprocess.run(["jack_wait", "-w", "-t", "30", "-s", server], capture_output=True, timeout=60)
import numpy as np, sounddevice
from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication
from tests.builders.fake_lanes import FakeLane
from ui.main_window import MainWindow, frame_count_for

def wait(condition, seconds):
    end = time.monotonic() + seconds
    while not condition() and time.monotonic() < end:
        app.processEvents(); time.sleep(0.005)
    return condition()

app = QApplication([])
device = [a for a in sounddevice.query_hostapis() if "JACK" in a["name"]][0]["default_output_device"]
window = MainWindow(QSettings(sys.argv[2], QSettings.Format.IniFormat), audio_device=device,
                    audio_options={"samplerate": 48000})
samples = np.zeros(16000 * 8, np.float32)
window.set_content(samples, [FakeLane("a", frame_count_for(samples))])
report = {"kind_before": window.clock.kind}
window.play()
wait(lambda: window.current_frame >= 10, 30)
report["frame_at_loss"] = window.current_frame
jackd.terminate(); jackd.wait()
report["switched"] = wait(lambda: window.clock.kind == "wall", 30)
report["status"] = window.clock_label.text()
report["message"] = window.statusBar().currentMessage()
frame_after_switch = window.current_frame
report["kept_playing"] = wait(lambda: window.current_frame >= frame_after_switch + 10, 30)
report["frame_after_switch"] = frame_after_switch
print("REPORT " + json.dumps(report), flush=True)
os._exit(0)
"""


@pytest.mark.audio_device
@pytest.mark.slow
def test_losing_the_device_during_playback_continues_on_the_wall_clock(tmp_path) -> None:
    if shutil.which("jackd") is None or shutil.which("jack_wait") is None:
        pytest.skip("jackd (Debian package jackd2) is not installed; tools/setup.sh dev installs it")
    import json
    import sys
    from pathlib import Path

    server = f"lipsync-loss-{uuid.uuid4().hex[:8]}"
    pid_file = tmp_path / "jackd.pid"
    try:
        child = subprocess.run([sys.executable, "-c", DEVICE_LOSS_CHILD, server, str(tmp_path / "s.ini"),
                                str(pid_file)],
                               cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300)
    finally:
        if pid_file.exists():  # the child stops its server; this only cleans up after a child that died early
            try:
                os.kill(int(pid_file.read_text()), 15)
            except (ProcessLookupError, ValueError):
                pass
    lines = [line for line in child.stdout.splitlines() if line.startswith("REPORT ")]
    assert lines, f"child failed (rc {child.returncode}):\n{child.stdout[-2000:]}\n{child.stderr[-3000:]}"
    report = json.loads(lines[-1][len("REPORT "):])
    assert report["kind_before"] == "audio"
    assert report["switched"], report
    assert report["status"].startswith("wall clock") and "went away" in report["status"]
    assert "Audio output lost" in report["message"]
    assert report["frame_after_switch"] >= report["frame_at_loss"]  # no jump back to the start
    assert report["kept_playing"], report
