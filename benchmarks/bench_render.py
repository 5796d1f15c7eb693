"""How fast the window's render path is: frames per second per lane, and how soon a scale change shows.

    python benchmarks/bench_render.py                     # the demo session (or a synthetic one if it is missing)
    python benchmarks/bench_render.py --session my.toml --frames 100

Measures, through the same RenderWorker and FrameCache the window uses (no Qt):
- throughput: frames rendered per second for all lanes together, rendering ahead from frame 0;
- scale-change latency: from submit() with a new scale to the current frame of that lane being ready, which is
  what a person dragging the slider waits for (the worker finishes at most one superseded frame first);
- first features: how long each lane's encoder takes over the whole clip.
Prints a table and one JSON line. Figures, never assertions: the test suite does not time anything.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _session_path(arg: Path | None) -> tuple[Path, str]:
    from pipeline.session import demo_session_path

    if arg is not None:
        return arg, str(arg)
    if demo_session_path().exists():
        return demo_session_path(), "demo"
    # Benchmarks import no test code: without the demo bundle, name a session.
    raise SystemExit("bench_render: the demo bundle (resources/demo/demo.toml) is missing; pass --session SESSION.toml")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--session", type=Path)
    parser.add_argument("--frames", type=int, default=60, help="frames to render ahead for the throughput figure")
    parser.add_argument("--scale-changes", type=int, default=5)
    args = parser.parse_args(argv)

    from backends.registry import MODELS
    from cli.bench import StampedResults
    from pipeline.lane import FailedLane, open_lanes
    from pipeline.session import load_session
    from workspace.frame_cache import FrameCache
    from workspace.render_worker import FeaturesReady, FrameReady, LaneFailed, LaneJob, RenderWorker

    path, label = _session_path(args.session)
    session = load_session(path, check_files=False)
    lanes = [lane for lane in open_lanes(session, models=MODELS) if not isinstance(lane, FailedLane)]
    if not lanes:
        print("bench_render: no lane of this session opens", file=sys.stderr)
        return 2

    results = StampedResults("bench_render: timed out")

    def wait_for(predicate, timeout: float = 600.0) -> float:
        return results.wait_for(predicate, timeout)

    worker = RenderWorker(FrameCache(), results)
    jobs = [LaneJob(i, lane, 1.0) for i, lane in enumerate(lanes)]
    try:
        start = time.perf_counter()
        worker.submit(0, jobs, 1, 1)
        feature_times = {}
        for job in jobs:
            stamp = wait_for(lambda r, j=job: isinstance(r, (FeaturesReady, LaneFailed)) and r.lane_id == j.lane_id)
            feature_times[job.lane.spec.name] = stamp - start
        live = [j for j in jobs if not any(isinstance(r, LaneFailed) and r.lane_id == j.lane_id for _, r in results)]
        wait_for(lambda r: isinstance(r, FrameReady) and r.index == 0)
        num_frames = min(args.frames, live[0].lane.num_frames) if live else 0

        results.clear()
        start = time.perf_counter()
        worker.submit(0, live, num_frames, live[0].lane.num_frames)
        expected = num_frames * len(live)
        while True:
            done = sum(isinstance(r, FrameReady) for _, r in results)
            if done >= expected - len(live):  # frame 0 of every lane is cached already
                break
            time.sleep(0.01)
        elapsed = time.perf_counter() - start
        throughput = done / elapsed if elapsed > 0 else float("nan")

        latencies = []
        target = live[-1]
        for change in range(args.scale_changes):
            scale = 1.5 + change
            frame = 5 + change
            results.clear()
            submitted = time.perf_counter()
            worker.submit(frame, [LaneJob(j.lane_id, j.lane, scale if j is target else 1.0) for j in live], 50,
                          live[0].lane.num_frames)
            stamp = wait_for(lambda r: isinstance(r, FrameReady) and r.lane_id == target.lane_id
                             and r.index == frame and r.scale == scale)
            latencies.append(stamp - submitted)
    finally:
        worker.stop()

    latencies.sort()
    figures = {
        "benchmark": "render", "session": label, "lanes": len(live), "frames_per_lane": num_frames,
        "throughput_fps_all_lanes": round(throughput, 2),
        "throughput_fps_per_lane": round(throughput / max(1, len(live)), 2),
        "scale_change_latency_ms_median": round(1000 * latencies[len(latencies) // 2], 1) if latencies else None,
        "scale_change_latency_ms_max": round(1000 * latencies[-1], 1) if latencies else None,
        "features_s": {k: round(v, 3) for k, v in feature_times.items()},
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
    }
    print(f"session               {label}")
    print(f"lanes                 {len(live)}")
    print(f"throughput            {figures['throughput_fps_all_lanes']} frames/s all lanes, "
          f"{figures['throughput_fps_per_lane']} per lane (real time needs 25 per lane)")
    print(f"scale change -> frame median {figures['scale_change_latency_ms_median']} ms, "
          f"max {figures['scale_change_latency_ms_max']} ms")
    for name, seconds in figures["features_s"].items():
        print(f"features ({name})  {seconds} s for the whole clip (includes opening the clip's mel)")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
