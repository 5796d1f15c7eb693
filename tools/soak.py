"""Soak: an hour of looped playback over an hour-long clip with four lanes of the demo's models, driven through the
Qt-free workspace (Workspace, Transport, RenderWorker, FrameCache: what the window runs on), sampling this
process's memory. It answers "does a long session grow?", not "how fast is it?".

    python tools/soak.py                       # 60 min of playback over a 60 min clip, simulated 2.5x real time
    python tools/soak.py --quick               # 1 min over a 1 min clip (what tests/test_soak.py runs)
    python tools/soak.py --minutes 30 --speed 4 --json soak.json

Set-up (in a temporary folder, removed at the end; nothing is committed):
- the clip is the demo's speech tiled to the length asked for (written as a 16 kHz wav);
- four lanes of resources/demo/variants.toml (ONNX Runtime reference; Core ML untrained encoder; Core ML scale-error
  encoder x200; Core ML encoder with the fp16 Core ML generator): each lane's encoder runs once on the demo clip and
  its features, tiled like the audio, become the lane's feature dump. Encoding an hour with four real encoders takes
  most of an hour on a small machine and happens once per lane in any session; what a long session repeats is the
  mel, the generator, paste-back, the frame cache and the scheduling, and those run for real here.

Playback: a simulated clock (workspace.clock.WallClock with a time this script moves) advances ``--speed`` times
faster than real time, ticked like the window's display timer; the render worker renders at its own pace, so the
picture falls behind as it would on a slow machine (the worker renders the playhead first, superseded requests are
dropped). When the clip ends it starts again (looped playback). Every twelfth of the run a 2 s loop region is on for
a while, every ninth a seek jumps somewhere (seeded), every sixth one lane's scale is x1.25 for a twenty-fourth of the
run (new cache keys, a scaled copy of its features while it lasts). Worker results are applied on this thread, as
the window does.

Memory: the resident set size (VmRSS from /proc/self/status; on systems without /proc, the peak from getrusage)
is sampled every ``--sample-every`` frames of playback. Printed and written as JSON: setup/start/peak/end RSS in MB,
and the least-squares slope in MB per hour of playback over the whole run, over its second half, and from the
moment the frame cache (768 MiB by default, like the window's) first held 90% of its budget: before that, growth is
the cache filling, as designed; after it, growth would be a leak. SIGINT/SIGTERM end the run early and still print
the figures of what ran.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

DEMO = ROOT / "resources" / "demo"
VARIANTS = DEMO / "variants.toml"
# variants.toml lanes: ONNX reference; Core ML untrained encoder; Core ML scale-error encoder x200; Core ML encoder +
# fp16 Core ML generator. Three runtimes' code paths, two generators (the ONNX one shared by three lanes).
LANE_INDICES = (0, 1, 4, 5)
SAMPLE_RATE = 16000
FPS = 25
TICK_S = 0.02  # simulated seconds per tick (the window ticks every 10 ms of real time)


# --- memory --------------------------------------------------------------------------------------------------------

def rss_mb() -> float:
    """This process's resident set size in MB (1e6 bytes)."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    import resource  # no /proc (macOS): the peak is the best figure available

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e6 if sys.platform == "darwin" else peak * 1024 / 1e6


def slope_per_hour(samples: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (played seconds, MB) in MB per hour of playback; None with fewer than 3 samples."""
    if len(samples) < 3:
        return None
    x = np.array([s[0] for s in samples], dtype=np.float64) / 3600.0
    y = np.array([s[1] for s in samples], dtype=np.float64)
    if np.ptp(x) == 0:
        return None
    return float(np.polyfit(x, y, 1)[0])


# --- the clip and the session --------------------------------------------------------------------------------------

def build_session(folder: Path, clip_s: float, lane_indices: tuple[int, ...] = LANE_INDICES,
                  log=print) -> tuple[Path, list[str]]:
    """Write the tiled clip, each lane's tiled feature dump and a session naming them; returns (session, names)."""
    import soundfile

    from backends.registry import MODELS
    from pipeline.audio import load_audio
    from pipeline.lane import Lane
    from pipeline.session import load_session
    from pipeline.windows import num_windows

    variants = load_session(VARIANTS)
    demo_audio = load_audio(variants.audio)
    samples = np.resize(demo_audio.samples, int(round(clip_s * SAMPLE_RATE))).astype(np.float32)
    soundfile.write(folder / "clip.wav", samples, SAMPLE_RATE, subtype="PCM_16")
    windows = num_windows(1 + len(samples) // 200)  # N for the tiled clip (PIPELINE.md stage 2)
    lines = [f'title = "soak: {clip_s / 60:g} min"', 'audio = "clip.wav"',
             f"avatar = {json.dumps(str(variants.avatar))}", ""]
    names = []
    for number, index in enumerate(lane_indices):
        spec = variants.lanes[index]
        log(f"  lane {number + 1}: {spec.name}: encoding the demo clip once")
        lane = Lane(spec, demo_audio, models=MODELS)
        unpadded = np.asarray(lane.raw_features()[1:-1], dtype=np.float32)  # pad_features added the first/last row
        del lane
        np.save(folder / f"features_{number}.npy", np.resize(unpadded, (windows, unpadded.shape[1])))
        names.append(spec.name)
        lines += ["[[lanes]]", f"name = {json.dumps(spec.name)}", f'encoder = "features_{number}.npy"',
                  f"generator = {json.dumps(str(spec.generator))}", f"scale = {float(spec.scale)!r}"]
        if spec.options:
            lines.append("[lanes.options]")
            lines += [f"{key} = {json.dumps(value)}" for key, value in spec.options.items()]
        lines.append("")
    path = folder / "soak.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path, names


# --- the run -------------------------------------------------------------------------------------------------------

class SimulatedTime:
    """The clock's time source: seconds that only move when the soak moves them."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(minutes: float, clip_minutes: float, speed: float, sample_every: int, cache_mb: float, seed: int = 0,
        stop: threading.Event | None = None, log=print) -> dict[str, Any]:
    from backends.registry import MODELS
    from workspace.clock import WallClock
    from workspace.frame_cache import FrameCache
    from workspace.model import Workspace
    from workspace.transport import Transport

    stop = stop or threading.Event()
    figures: dict[str, Any] = {"minutes": minutes, "clip_minutes": clip_minutes, "speed": speed,
                               "cache_mb": cache_mb, "setup_rss_mb": round(rss_mb(), 1)}
    wall_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lipsync-soak-") as temp:
        log(f"building a {clip_minutes:g} min clip and {len(LANE_INDICES)} lanes in {temp}")
        session, names = build_session(Path(temp), clip_minutes * 60.0, log=log)
        figures["lanes"] = names
        sim = SimulatedTime()
        workspace = Workspace(models=MODELS)
        transport = Transport(workspace, FrameCache(int(cache_mb * 2**20)), clock_factory=lambda samples: (
            WallClock(len(samples) / SAMPLE_RATE, "simulated clock", now=sim), None))
        try:
            log("opening the session")
            workspace.open_session(session)
            figures["frames_in_clip"] = workspace.num_frames
            # The worker computes every lane's features first (an hour's mel and dumps): wait for them, then start.
            while not stop.is_set() and any(s.has_features and s.raw_features is None for s in workspace.lanes):
                transport.process_results()
                time.sleep(0.05)
            figures["setup_s"] = round(time.monotonic() - wall_start, 1)
            samples, failures = _play(workspace, transport, sim, minutes * 60.0, speed, sample_every, seed, stop,
                                      figures, log)
        finally:
            transport.shutdown()
            figures["threads_after_shutdown"] = sorted(t.name for t in threading.enumerate()
                                                       if t is not threading.main_thread() and t.is_alive())
    figures["failures"] = failures
    figures["wall_s"] = round(time.monotonic() - wall_start, 1)
    figures["samples"] = [[round(s, 1), round(mb, 1)] for s, mb in samples]
    values = [mb for _, mb in samples]
    figures["start_rss_mb"] = round(values[0], 1) if values else None
    figures["end_rss_mb"] = round(values[-1], 1) if values else None
    figures["peak_rss_mb"] = round(max(values), 1) if values else None
    figures["growth_mb"] = round(values[-1] - values[0], 1) if values else None
    whole = slope_per_hour(samples)
    half = slope_per_hour(samples[len(samples) // 2:])
    full_at = figures.get("cache_full_at_s")
    after_full = slope_per_hour([s for s in samples if s[0] >= full_at]) if full_at is not None else None
    figures["slope_after_cache_full_mb_per_hour"] = round(after_full, 1) if after_full is not None else None
    figures.setdefault("cache_full_at_s", None)
    figures["slope_mb_per_hour"] = round(whole, 1) if whole is not None else None
    figures["second_half_slope_mb_per_hour"] = round(half, 1) if half is not None else None
    return figures


def _play(workspace, transport, sim: SimulatedTime, run_s: float, speed: float, sample_every: int, seed: int,
          stop: threading.Event, figures: dict[str, Any], log) -> tuple[list[tuple[float, float]], list[str]]:
    rng = np.random.default_rng(seed)
    shown = [0]  # frames the picture moved to (what the window would redraw)
    transport.frame_ready.connect(lambda result: shown.__setitem__(0, shown[0] + 1))
    samples: list[tuple[float, float]] = [(0.0, rss_mb())]
    budget = transport.cache.budget_bytes
    log(f"playing {run_s / 60:g} min at {speed:g}x real time; RSS at start {samples[0][1]:.1f} MB")
    events = {"loop": run_s / 12, "seek": run_s / 9, "scale": run_s / 6}
    next_event = dict(events)
    loop_off_at: float | None = None
    scale_back_at: float | None = None
    scaled_lane = workspace.lanes[min(1, len(workspace.lanes) - 1)]
    base_scale = scaled_lane.scale
    restarts = 0
    played = 0.0
    next_sample = sample_every / FPS
    transport.play()
    real_start = time.monotonic()
    while played < run_s and not stop.is_set():
        sim.now += TICK_S
        played += TICK_S
        transport.tick()
        transport.process_results()
        if not transport.playing and not transport.prerender_pending:
            restarts += 1  # the clip ended: looped playback starts it again
            transport.play()
        if played >= next_event["loop"]:
            next_event["loop"] += events["loop"]
            transport.set_loop_on(True)
            loop_off_at = played + events["loop"] / 4
        if loop_off_at is not None and played >= loop_off_at:
            transport.set_loop_on(False)
            loop_off_at = None
        if played >= next_event["seek"]:
            next_event["seek"] += events["seek"]
            transport.seek(int(rng.integers(0, workspace.num_frames)))
            transport.play()
        if played >= next_event["scale"]:
            next_event["scale"] += events["scale"]
            workspace.set_scale(scaled_lane.lane_id, base_scale * 1.25)
            scale_back_at = played + events["scale"] / 4
        if scale_back_at is not None and played >= scale_back_at:
            workspace.set_scale(scaled_lane.lane_id, base_scale)
            scale_back_at = None
        if played >= next_sample:
            next_sample += sample_every / FPS
            samples.append((played, rss_mb()))
            if "cache_full_at_s" not in figures and transport.cache.bytes_used >= 0.9 * budget:
                figures["cache_full_at_s"] = round(played, 1)
            if len(samples) % 10 == 0:
                log(f"  {played / 60:7.2f} min played  RSS {samples[-1][1]:8.1f} MB  cache "
                    f"{transport.cache.bytes_used / 1e6:6.1f} MB ({len(transport.cache)} frames)  rendered "
                    f"{transport.worker.frames_rendered}  real {time.monotonic() - real_start:6.0f} s")
        # Pace the simulated clock: ``speed`` simulated seconds per real second, ticked like the display timer.
        lag = (played / speed) - (time.monotonic() - real_start)
        if lag > 0:
            time.sleep(lag)
    if not samples or samples[-1][0] < played:
        samples.append((played, rss_mb()))
    figures.update({"played_s": round(played, 1), "frames_rendered": transport.worker.frames_rendered,
                    "frames_delivered": shown[0], "restarts": restarts, "interrupted": stop.is_set(),
                    "cache_frames_at_end": len(transport.cache),
                    "cache_mb_at_end": round(transport.cache.bytes_used / 1e6, 1)})
    failures = [f"{state.name}: {state.failure}" for state in workspace.lanes if state.failure]
    return samples, failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 min of playback over a 1 min clip (CI)")
    parser.add_argument("--minutes", type=float, default=None, help="minutes of playback (default 60; quick 1)")
    parser.add_argument("--clip-minutes", type=float, default=None, help="clip length (default 60; quick 1)")
    parser.add_argument("--speed", type=float, default=None,
                        help="simulated seconds per real second (default 2.5; quick 6)")
    parser.add_argument("--sample-every", type=int, default=None,
                        help="frames of playback between RSS samples (default: 120 samples a run)")
    parser.add_argument("--cache-mb", type=float, default=768.0, help="frame cache budget in MiB (the window's)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    minutes = args.minutes if args.minutes is not None else (1.0 if args.quick else 60.0)
    clip_minutes = args.clip_minutes if args.clip_minutes is not None else (1.0 if args.quick else 60.0)
    speed = args.speed if args.speed is not None else (6.0 if args.quick else 2.5)
    if minutes <= 0 or clip_minutes <= 0 or speed <= 0 or args.cache_mb <= 0:
        parser.error("--minutes, --clip-minutes, --speed and --cache-mb must be positive")
    sample_every = args.sample_every or max(1, int(minutes * 60 * FPS / 120))
    stop = threading.Event()
    for name in ("SIGINT", "SIGTERM"):
        signal.signal(getattr(signal, name), lambda *_: stop.set())
    figures = run(minutes, clip_minutes, speed, sample_every, args.cache_mb, stop=stop,
                  log=lambda text: print(text, flush=True))
    figures["mode"] = "quick" if args.quick else "full"
    figures["pid"] = os.getpid()
    print(f"\nsoak ({figures['mode']}): {figures['played_s'] / 60:.2f} min played of a "
          f"{clip_minutes:g} min clip, {len(figures['lanes'])} lanes, {figures['frames_rendered']} frames rendered, "
          f"{figures['wall_s']:.0f} s real")
    print(f"RSS MB: setup {figures['setup_rss_mb']}  start {figures['start_rss_mb']}  peak {figures['peak_rss_mb']}"
          f"  end {figures['end_rss_mb']}  growth {figures['growth_mb']}")
    print(f"slope MB/hour of playback: whole run {figures['slope_mb_per_hour']}, second half "
          f"{figures['second_half_slope_mb_per_hour']}, after the frame cache filled "
          f"{figures['slope_after_cache_full_mb_per_hour']} (full at {figures['cache_full_at_s']} s played)")
    if figures["failures"]:
        print("lane failures: " + "; ".join(figures["failures"]))
    print(json.dumps(figures), flush=True)  # one line; the file below is indented
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0 if not figures["failures"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
