"""Playback on the JACK dummy device: frames shown, late frames and the A/V error, with the playback policy's choice.

    python benchmarks/bench_playback.py                          # the demo's two lanes, 30 s, preview rate auto
    python benchmarks/bench_playback.py --settings auto,every    # one play per setting, same lanes, cache emptied
    python benchmarks/bench_playback.py --session my.toml --seconds 10
    python benchmarks/bench_playback.py --synthetic              # tests' two small lanes (160 px generator)
    python benchmarks/bench_playback.py --startup 3              # first frame vs features at open, no JACK

--startup N opens the session N times each way (alternating): with the current frame drawn first from just its
windows (Lane.draws_before_features), and with it turned off (the whole clip's features first, as before), and
prints, from the end of open_session, when each lane's first frame and its features arrived (medians).

Plays the session's lanes through the Qt-free Transport (the window's model: the same clock, render thread, frame
cache and playback policy) on a private JACK server with the dummy driver (48 kHz, 480-frame periods: a real-time
PortAudio device without a sound card), started here and stopped at the end. The demo's clip (13 s) is tiled to
the length asked so the frames are rendered while playing, not found in the cache from an earlier pass.

Every 10 ms, like the window's display timer, it ticks the transport and notes the device's stream time and each
lane's picture: the frame a window would show (the playhead's frame when it is rendered, else the newest one that
arrived, marked late). Afterwards the frame being heard at each of those moments is read from the device's own
log of audio blocks (sample -> DAC time), and the A/V error is (picture's frame + 0.5 - heard frame) / 25 s.

- frames_shown: per lane, playhead frames whose picture was in the cache when the playhead reached them;
- late_frames: per lane, playhead frames whose picture was not there yet (shown late or never);
- av_error_ms: median and p99 of |A/V error| over every tick and lane (a reduced preview rate holds frames by
  design: up to step - 1 frames of error);
- onset_av_error_ms: |A/V error| at the moments a lane's picture changes (the new frame's start against the heard
  time): whether a mouth appears with its sound, whatever the rate;
- the policy's mode and reason at the end, and every decision it announced.

Without jackd (Debian package jackd2) it prints a message and a JSON line with "skipped" and exits 0. Figures,
never assertions: the test suite does not time anything.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

JACK_RATE = 48000
JACK_PERIOD = 480
TICK_S = 0.010


def _start_jack() -> tuple[subprocess.Popen | None, str | None]:
    """A private JACK server with the dummy driver; (process, None), or (None, why not)."""
    if shutil.which("jackd") is None or shutil.which("jack_wait") is None:
        return None, "jackd and jack_wait are not installed (Debian package jackd2)"
    server = f"bench-playback-{uuid.uuid4().hex[:8]}"
    os.environ["JACK_DEFAULT_SERVER"] = server  # before PortAudio is initialised: it then sees this server
    os.environ["JACK_NO_AUDIO_RESERVATION"] = "1"
    process = subprocess.Popen(["jackd", "--no-realtime", "-n", server, "-d", "dummy", "-r", str(JACK_RATE),
                                "-p", str(JACK_PERIOD)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    waited = subprocess.run(["jack_wait", "-w", "-t", "30", "-s", server], capture_output=True, text=True,
                            timeout=60)
    if process.poll() is not None or "available" not in waited.stdout:
        process.kill()
        return None, f"jackd did not start: {waited.stdout.strip()} {waited.stderr.strip()}"
    return process, None


def _stop_jack(process: subprocess.Popen | None) -> None:
    if process is None:
        return
    try:
        import sounddevice

        sounddevice._terminate()  # PortAudio lets go of the JACK client before the server goes
    except Exception:
        pass
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


def _tiled_session(path: Path, seconds: float, folder: Path) -> Path:
    """The session with its audio tiled to ``seconds`` (+2 s), written to ``folder``."""
    import dataclasses

    import numpy as np
    import soundfile

    from pipeline.audio import load_audio
    from pipeline.session import load_session, save_session

    session = load_session(path)
    audio = load_audio(session.audio)
    repeats = int(np.ceil((seconds + 2.0) / audio.duration_s))
    wav = folder / "tiled.wav"
    soundfile.write(wav, np.tile(audio.samples, repeats), 16000)
    bench = folder / "bench.toml"
    save_session(dataclasses.replace(session, audio=wav), bench)
    return bench


def _heard_frames(blocks, times: list[float]) -> list[float | None]:
    """The media frame at the DAC at each stream time, interpolated between the device's blocks."""
    dac = [b.dac_time for b in blocks]
    heard: list[float | None] = []
    for now in times:
        k = bisect.bisect_right(dac, now) - 1
        if k < 0 or k + 1 >= len(blocks) or blocks[k + 1].dac_time <= blocks[k].dac_time:
            heard.append(None)
            continue
        earlier, later = blocks[k], blocks[k + 1]
        fraction = (now - earlier.dac_time) / (later.dac_time - earlier.dac_time)
        sample = earlier.first_sample + fraction * (later.first_sample - earlier.first_sample)
        heard.append(sample / JACK_RATE * 25.0)
    return heard


def _wait_idle(transport, limit_s: float = 600.0) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        transport.process_results()
        if transport.worker.idle:
            transport.process_results()
            return
        time.sleep(0.01)


def _play(transport, workspace, seconds: float, setting: str) -> dict:
    import numpy as np

    from workspace.render_worker import FrameReady

    lanes = [s for s in workspace.lanes if s.renders_frames]
    for state in lanes:
        transport.cache.drop_lane(state.lane_id)  # a fresh start: nothing rendered ahead from an earlier play
    transport.set_preview_setting(setting)
    transport.seek(0)
    _wait_idle(transport)  # the paused look-ahead (10 frames), as a window has before Play is pressed
    shown = {s.lane_id: None for s in lanes}
    reached: dict[int, set[int]] = {s.lane_id: set() for s in lanes}
    on_time = {s.lane_id: 0 for s in lanes}
    late = {s.lane_id: 0 for s in lanes}
    decisions: list[dict] = []

    def on_frame(frame: int) -> None:
        for state in lanes:
            if frame in reached[state.lane_id]:
                continue
            reached[state.lane_id].add(frame)
            if (state.lane_id, state.scale, frame) in transport.cache:
                shown[state.lane_id] = frame
                on_time[state.lane_id] += 1
            else:
                late[state.lane_id] += 1

    def on_ready(result: FrameReady) -> None:
        current = transport.current_frame
        before = shown.get(result.lane_id)
        if result.lane_id in shown and result.index <= current and (before is None or before < result.index
                                                                    or before > current):
            shown[result.lane_id] = result.index  # the newest picture that arrived (late, if behind the playhead)

    def on_decision(decision) -> None:
        decisions.append({"frame": transport.current_frame, **decision.as_dict()})

    transport.frame_changed.connect(on_frame)
    transport.frame_ready.connect(on_ready)
    transport.playback_mode_changed.connect(on_decision)
    clock = transport.clock
    clock.blocks.clear()
    observations: list[tuple[float, int, list[int | None]]] = []
    transport.play()
    if not decisions:  # the decision did not change at Play: it is still the one in force
        decisions.append({"frame": transport.current_frame, **transport.decision.as_dict()})
    started = time.monotonic()
    while clock.playing and clock.position_s() < seconds:
        asked = clock._stream.time
        transport.tick()
        transport.process_results()
        if transport.playing:
            observations.append((asked, transport.current_frame, [shown[s.lane_id] for s in lanes]))
        time.sleep(TICK_S)
    wall = time.monotonic() - started
    transport.pause()
    blocks = list(clock.blocks)
    transport.frame_changed.disconnect(on_frame)
    transport.frame_ready.disconnect(on_ready)
    transport.playback_mode_changed.disconnect(on_decision)

    heard = _heard_frames(blocks, [o[0] for o in observations])
    picture_errors, playhead_errors, onset_errors = [], [], []
    previous: list[int | None] = [None] * len(lanes)
    for (now, playhead, pictures), frame in zip(observations, heard):
        if frame is not None:
            playhead_errors.append(abs(playhead + 0.5 - frame) * 40.0)
            picture_errors.extend(abs(p + 0.5 - frame) * 40.0 for p in pictures if p is not None)
        for k, picture in enumerate(pictures):
            if picture is not None and picture != previous[k] and frame is not None:
                # the moment a new mouth appears: (its start - the heard time), negative when it comes early
                onset_errors.append((picture - frame) * 40.0)
            previous[k] = picture

    def summary(values: list[float]) -> dict:
        if not values:
            return {"median": None, "p99": None, "max": None, "count": 0}
        array = np.asarray(values)
        return {"median": round(float(np.median(array)), 2), "p99": round(float(np.percentile(array, 99)), 2),
                "max": round(float(array.max()), 2), "count": int(array.size)}

    names = {s.lane_id: s.name for s in lanes}
    return {
        "setting": setting,
        "seconds_played": round(clock.position_s(), 2),
        "wall_s": round(wall, 2),
        "ticks": len(observations),
        "frames_shown": {names[i]: n for i, n in on_time.items()},
        "late_frames": {names[i]: n for i, n in late.items()},
        "late_frames_total": sum(late.values()),
        "playhead_frames": len(set().union(*reached.values())) if reached else 0,
        "av_error_ms": summary(picture_errors),
        "playhead_av_error_ms": summary(playhead_errors),
        "onset_av_error_ms": summary([abs(e) for e in onset_errors]),
        "pictures_changed": len(onset_errors),
        "cost_ms": {names[s.lane_id]: (None if transport.costs.median(s.lane_id) is None
                                       else round(transport.costs.median(s.lane_id) * 1000, 1)) for s in lanes},
        "mode": transport.decision.mode,
        "reason": transport.decision.reason,
        "step": transport.decision.step,
        "decisions": decisions,
        "audio_blocks": len(blocks),
    }


def _startup(session_path: Path, repeats: int) -> dict:
    """Seconds from open_session's return to each lane's first frame and features, early frame on and off."""
    import numpy as np

    from backends.registry import MODELS
    from pipeline.lane import Lane
    from workspace.clock import WallClock
    from workspace.model import Workspace
    from workspace.render_worker import FeaturesReady, FrameReady
    from workspace.transport import Transport

    original = Lane.draws_before_features
    figures: dict[str, dict[str, list[float]]] = {"current_frame_first": {}, "features_first": {}}
    for attempt in range(repeats * 2):
        mode = "current_frame_first" if attempt % 2 == 0 else "features_first"
        Lane.draws_before_features = original if mode == "current_frame_first" else property(lambda self: False)
        try:
            workspace = Workspace(models=MODELS)
            transport = Transport(workspace, clock_factory=lambda s: (WallClock(len(s) / 16000), None))
            seen: dict[str, float] = {}
            try:
                workspace.open_session(session_path)
                opened = time.monotonic()
                names = {s.lane_id: s.name for s in workspace.lanes}

                def note(result) -> None:
                    if isinstance(result, FrameReady) and result.index == 0:
                        seen.setdefault(f"first_frame {names[result.lane_id]}", time.monotonic() - opened)
                    elif isinstance(result, FeaturesReady):
                        seen.setdefault(f"features {names[result.lane_id]}", time.monotonic() - opened)

                transport.apply_result = note  # type: ignore[method-assign]
                while not transport.worker.idle and time.monotonic() - opened < 600:
                    transport.process_results()
                    time.sleep(0.002)
                transport.process_results()
            finally:
                transport.shutdown()
            for key, value in seen.items():
                figures[mode].setdefault(key, []).append(value)
        finally:
            Lane.draws_before_features = original
    return {mode: {key: round(float(np.median(values)), 3) for key, values in sorted(found.items())}
            for mode, found in figures.items()} | {"repeats": repeats}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--session", type=Path, help="default: the demo (resources/demo/demo.toml)")
    parser.add_argument("--synthetic", action="store_true",
                        help="the tests' synthetic session (espeak speech, tiny ONNX models): lanes that fit")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--settings", default="auto", help="comma-separated preview rates: auto, every, reduced")
    parser.add_argument("--json", type=Path, help="also write the JSON here")
    parser.add_argument("--startup", type=int, metavar="N", help="measure start-up order instead (N opens each way)")
    args = parser.parse_args(argv)
    if args.startup:
        from pipeline.session import demo_session_path

        load = open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") else None
        result = {"benchmark": "startup_order", "session": str(args.session or demo_session_path()),
                  "loadavg_before": load, **_startup(args.session or demo_session_path(), args.startup)}
        print(json.dumps(result))
        if args.json:
            args.json.write_text(json.dumps(result) + "\n")
        return 0
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]

    jack, why = _start_jack()
    if jack is None:
        print(f"bench_playback: skipped: {why}", file=sys.stderr)
        print(json.dumps({"skipped": why}))
        return 0
    try:
        import sounddevice

        from backends.registry import MODELS
        from pipeline.session import demo_session_path
        from workspace.model import Workspace
        from workspace.transport import Transport

        apis = [api for api in sounddevice.query_hostapis() if "JACK" in api["name"]]
        if not apis:
            print(json.dumps({"skipped": f"PortAudio has no JACK host API: {sounddevice.query_hostapis()}"}))
            return 0
        device = apis[0]["default_output_device"]
        folder = Path(tempfile.mkdtemp(prefix="bench-playback-"))
        session_path = args.session or demo_session_path()
        if args.synthetic:
            from tests.builders.ui_session import make_ui_session

            session_path = make_ui_session(folder / "synthetic").path
        bench_session = _tiled_session(session_path, args.seconds, folder)
        workspace = Workspace(models=MODELS)
        transport = Transport(workspace, audio_device=device,
                              audio_options={"samplerate": JACK_RATE, "record_blocks": True})
        try:
            opened = time.monotonic()
            workspace.open_session(bench_session)
            open_s = time.monotonic() - opened
            first = time.monotonic()
            _wait_idle(transport)  # features of the whole clip, then the paused look-ahead
            first_s = time.monotonic() - first
            failed = [s.name for s in workspace.lanes if s.failure]
            if transport.clock is None or transport.clock.kind != "audio":
                print(json.dumps({"skipped": f"no audio clock: {transport.clock and transport.clock.description}"}))
                return 0
            clock_description = transport.clock.description
            runs = [_play(transport, workspace, args.seconds, setting) for setting in settings]
        finally:
            transport.shutdown()
        result = {
            "benchmark": "playback",
            "session": str(session_path),
            "lanes": [s.name for s in workspace.lanes],
            "failed_lanes": failed,
            "clock": clock_description,
            "open_s": round(open_s, 2),
            "features_and_first_frames_s": round(first_s, 2),
            "seconds": args.seconds,
            "machine": {"cpus": os.cpu_count(), "loadavg": open("/proc/loadavg").read().split()[:3]
                        if os.path.exists("/proc/loadavg") else None, "python": platform.python_version(),
                        "platform": platform.platform()},
            "runs": runs,
        }
    finally:
        _stop_jack(jack)
    for run in result["runs"]:
        print(f"[{run['setting']}] played {run['seconds_played']} s: shown {run['frames_shown']}, late "
              f"{run['late_frames']}, A/V error median {run['av_error_ms']['median']} ms p99 "
              f"{run['av_error_ms']['p99']} ms, at picture changes median {run['onset_av_error_ms']['median']} ms p99 "
              f"{run['onset_av_error_ms']['p99']} ms ({run['pictures_changed']} changes); lane cost {run['cost_ms']} ms; mode {run['mode']}: {run['reason']}",
              file=sys.stderr)
    text = json.dumps(result)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
