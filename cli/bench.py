"""`bench [SESSION] [--quick] [--json OUT]`: the speed figures of issue 12, each next to the reference it is judged by.

Every figure is a ratio against a reference measured in the same run on the same machine, because absolute times
on a shared 2-core machine mean little:

| figure | reference | target |
| --- | --- | --- |
| render: the app's per-frame cost of one lane (audio tensor, generator, paste-back, display pixels) | a raw onnxruntime loop of the same generator file, same session options, inputs prepared beforehand | raw / app >= 0.95 |
| scale change: paused, from submitting a new scale to that lane's current frame being ready | one generator call | <= 1.1 x call + 5 ms |
| start-up: `app.py SESSION --exit-after-first-frame`, second start | a plain script doing the irreducible work (Qt window, model sessions, the clip's features, one generator call per lane) | <= 1.3x |
| long clips: features of an L-minute clip, streamed | the same for a short clip, scaled by length; 1 GB | time linear (60 min <= 65 x 1 min), peak < 1 GB |
| GPU (when one is present): frames/s of four lanes pre-rendering, benchmarks/bench_gpu.py | 500 frames/s | >= 1 |

`--quick` proves the benchmark runs (short clips, few repetitions, one start-up each); its numbers are not the
figures. No threshold is ever asserted: this prints and writes figures, the test suite checks only that it runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

RENDER_TARGET = 0.95
SCALE_CHANGE_FACTOR, SCALE_CHANGE_SLACK_MS = 1.1, 5.0
STARTUP_TARGET = 1.3
FEATURES_PEAK_TARGET_MB = 1024.0
LINEARITY_TARGET = 65.0 / 60.0
GPU_TARGET_FPS = 500.0
PAUSED_LOOKAHEAD = 10  # what the window renders ahead of a paused playhead


def register(subparsers: argparse._SubParsersAction) -> None:
    from cli.common import add_json_output

    p = subparsers.add_parser("bench", help="measure render, scale-change, start-up, long-clip and GPU speed",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("session", nargs="?", type=Path, help="session .toml (default: the demo)")
    p.add_argument("--quick", action="store_true",
                   help="a few seconds to a minute: short clips, few repetitions (proves it works; not the figures)")
    add_json_output(p, "figures")
    p.add_argument("--long-minutes", type=float, default=None, help="the long clip's length (default 60; quick 0.5)")
    p.add_argument("--short-minutes", type=float, default=None, help="the short clip's length (default 1; quick 0.1)")
    p.add_argument("--frames", type=int, default=None, help="frames per render pass (default 50; quick 8)")
    p.add_argument("--repeats", type=int, default=None, help="paired repetitions (default 5; quick 2)")
    p.add_argument("--skip", action="append", default=[], choices=["render", "scale", "startup", "features", "gpu"],
                   help="leave one part out (its figures are null); may be repeated")
    p.set_defaults(func=run)


# -- helpers ------------------------------------------------------------------------------------------------------
def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def _finite_or_none(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def machine() -> dict[str, Any]:
    """What the figures were measured on, including how busy it was (load average over 1, 5, 15 minutes)."""
    return {"platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "numpy": np.__version__,
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def _peak_rss_mb() -> float:
    """This process's peak resident memory. On Linux VmHWM, because ru_maxrss survives fork + exec and a child
    started by a big parent would report the parent's size."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource  # POSIX only: imported here so the CLI's parser still loads elsewhere

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    if not env.get("DISPLAY") and not env.get("WAYLAND_DISPLAY") and sys.platform.startswith("linux"):
        env.setdefault("QT_QPA_PLATFORM", "offscreen")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _python_call(code: str, timeout: float) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run `python -c code` from the checkout; (wall seconds from spawn to exit, the finished process)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_child_env(), capture_output=True, text=True,
                          timeout=timeout)
    return time.perf_counter() - start, done


def _last_json_line(text: str) -> dict[str, Any]:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"no JSON line in the output: {text[-500:]}")


# -- render -------------------------------------------------------------------------------------------------------
def _render_lane(lanes: list[Any]) -> Any | None:
    """The first lane whose generator is an ONNX Runtime model: the raw loop can then run the very same file."""
    for lane in lanes:
        generator = getattr(lane, "generator", None)
        provenance = getattr(generator, "provenance", None)
        if provenance is not None and provenance.runtime == "onnxruntime" and getattr(lane, "avatar", None):
            return lane
    return None


def display_pixels(image: np.ndarray) -> np.ndarray:
    """What the lane view does before painting (ui.lane_view.bgr_to_display), without importing Qt."""
    import cv2

    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def measure_render(lane: Any, frames: int, repeats: int) -> dict[str, Any]:
    """Paired passes over the same frames: the app's path (Lane.frame + display pixels) and a raw onnxruntime loop
    of the same generator file with the same session options on inputs prepared beforehand."""
    import onnxruntime as ort

    generator = lane.generator
    threads = lane.spec.options.get("threads")
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    raw = ort.InferenceSession(str(generator.provenance.source), sess_options=options,
                               providers=[generator.provenance.provider])
    tensors = generator.tensors
    indices = list(range(min(frames, lane.num_frames)))
    dtype_image = np.float16 if tensors.image.dtype == "float16" else np.float32
    dtype_audio = np.float16 if tensors.audio.dtype == "float16" else np.float32
    feeds = [{tensors.image.name: lane.generator_input(i).tensor[None].astype(dtype_image),
              tensors.audio.name: lane.audio_tensors(range(i, i + 1), 1.0).astype(dtype_audio)} for i in indices]

    def raw_pass() -> None:
        for feed in feeds:
            raw.run([tensors.output.name], feed)

    def app_pass() -> None:
        for i in indices:
            display_pixels(lane.frame(i, 1.0).image)

    raw_pass()
    app_pass()  # warm: session arenas, the lane's prepared template inputs
    raw_ms, app_ms, raw_cpu, app_cpu = [], [], [], []
    for _ in range(repeats):
        for label, function in (("raw", raw_pass), ("app", app_pass)):
            start, cpu_start = time.perf_counter(), time.process_time()
            function()
            per_frame = (time.perf_counter() - start) * 1000.0 / len(indices)
            cpu_per_frame = (time.process_time() - cpu_start) * 1000.0 / len(indices)
            (raw_ms if label == "raw" else app_ms).append(per_frame)
            (raw_cpu if label == "raw" else app_cpu).append(cpu_per_frame)
    raw_median, app_median = _median(raw_ms), _median(app_ms)
    return {
        "render_lane": lane.name, "render_frames": len(indices),
        "render_app_ms": _rounded(app_median), "render_raw_ms": _rounded(raw_median),
        "render_ratio": _rounded(raw_median / app_median),
        # CPU milliseconds of this process per frame: on a machine shared by many, wall time follows everyone's
        # load; CPU time is what this process itself spends (onnxruntime's spinning threads included in both).
        "render_app_cpu_ms": _rounded(_median(app_cpu)), "render_raw_cpu_ms": _rounded(_median(raw_cpu)),
        "render_ratio_cpu": _rounded(_median(raw_cpu) / _median(app_cpu)),
        "generator_call_ms": _rounded(raw_median),
        "render_generator": generator.provenance.summary(),
    }



class StampedResults:
    """What a render worker delivers, each with its arrival time: a request is timed to the frame that answers it."""

    def __init__(self, timeout_message: str) -> None:
        self._items: list[tuple[float, object]] = []
        self._arrived = threading.Condition()
        self._timeout_message = timeout_message

    def __call__(self, item: object) -> None:
        with self._arrived:
            self._items.append((time.perf_counter(), item))
            self._arrived.notify_all()

    def __iter__(self) -> Iterator[tuple[float, object]]:
        with self._arrived:
            return iter(list(self._items))

    def clear(self) -> None:
        with self._arrived:
            self._items.clear()

    def wait_for(self, predicate: Callable[[object], bool], timeout: float = 300.0) -> float:
        """The arrival time of the first delivery ``predicate`` accepts (waiting for it if needed)."""
        deadline = time.perf_counter() + timeout
        with self._arrived:
            while True:
                for stamp, item in self._items:
                    if predicate(item):
                        return stamp
                if not self._arrived.wait(max(0.0, deadline - time.perf_counter())):
                    raise RuntimeError(self._timeout_message)

# -- scale change ---------------------------------------------------------------------------------------------------
def measure_scale_change(lanes: list[Any], changes: int) -> dict[str, Any]:
    """Paused window: the worker has rendered the lookahead (idle), or is still busy with the previous change's
    lookahead (busy); a new scale for the last lane is submitted and we wait for its current frame."""
    from workspace.frame_cache import FrameCache
    from workspace.render_worker import FrameReady, LaneFailed, LaneJob, RenderWorker

    results = StampedResults("bench: the render worker did not answer in time")
    wait_for = results.wait_for

    def wait_idle(worker: Any) -> None:
        while not worker.idle:
            time.sleep(0.002)

    worker = RenderWorker(FrameCache(), results)
    num_frames = min(lane.num_frames for lane in lanes)
    jobs = [LaneJob(i, lane, 1.0) for i, lane in enumerate(lanes)]
    idle_ms: list[float] = []
    busy_ms: list[float] = []
    try:
        worker.submit(0, jobs, PAUSED_LOOKAHEAD, num_frames)
        for job in jobs:
            wait_for(lambda r, j=job: (isinstance(r, FrameReady) and r.lane_id == j.lane_id and r.index == 0)
                     or (isinstance(r, LaneFailed) and r.lane_id == j.lane_id))
        if any(isinstance(r, LaneFailed) for _, r in results):
            raise RuntimeError("bench: a lane failed while rendering; scale-change figures need working lanes")
        target = jobs[-1]
        scale = 1.0
        for change in range(changes):
            for busy, sink in ((False, idle_ms), (True, busy_ms)):
                frame = min(num_frames - 1, 3 + change)
                if not busy:
                    wait_idle(worker)
                scale += 0.125
                results.clear()
                submitted = time.perf_counter()
                worker.submit(frame, [LaneJob(j.lane_id, j.lane, scale if j is target else 1.0) for j in jobs],
                              PAUSED_LOOKAHEAD, num_frames)
                stamp = wait_for(lambda r: isinstance(r, FrameReady) and r.lane_id == target.lane_id
                                 and r.index == frame and r.scale == scale)
                sink.append((stamp - submitted) * 1000.0)
    finally:
        worker.stop()
    return {"scale_change_ms": _rounded(_median(idle_ms), 2), "scale_change_busy_ms": _rounded(_median(busy_ms), 2),
            "scale_change_runs_ms": [round(x, 2) for x in idle_ms]}


# -- start-up -----------------------------------------------------------------------------------------------------
_BASELINE = """
import sys, time
from pathlib import Path
import numpy as np
from PySide6.QtWidgets import QApplication, QLabel, QMainWindow
app = QApplication(sys.argv[:1])
window = QMainWindow(); label = QLabel("baseline"); window.setCentralWidget(label); window.resize(1200, 800)
window.show(); app.processEvents()
from backends.registry import MODELS
from pipeline.audio import load_audio
from pipeline.avatar import Avatar
from pipeline.crop import paste_back, prepare_input
from pipeline.features import audio_tensors
from pipeline.session import load_session
from pipeline.streaming import features_from_mel, streamed_melspectrogram
session = load_session(Path(sys.argv[1]), check_files=False)
audio = load_audio(session.audio)
avatar = Avatar.open(session.avatar) if session.avatar is not None else None
mel = streamed_melspectrogram(audio.samples, session.pad_mode)
for spec in session.lanes[:4]:
    try:
        encoder = MODELS.open_encoder(spec.encoder, spec.options)
        features = features_from_mel(encoder.encode, mel)
        if spec.generator is not None and avatar is not None:
            generator = MODELS.open_generator(spec.generator, spec.options)
            prepared = prepare_input(avatar.frame(1), avatar.crop_box(1), generator.size)
            out = generator.generate(prepared.tensor[None], audio_tensors(features, [0]))
            frame = paste_back(avatar.frame(1), avatar.crop_box(1), prepared.resized_crop, out[0])
    except Exception as error:  # a lane that fails costs its error, as in the window
        print("lane failed:", error, file=sys.stderr)
app.processEvents()
"""


def measure_startup(session_path: Path, runs: int) -> dict[str, Any]:
    """Second starts: one warm-up start of each (file cache, the Core ML translation cache), then `runs` paired."""
    app_code = (f"import sys; sys.argv = ['app.py', {str(session_path)!r}, '--exit-after-first-frame']; "
                "import app; sys.exit(app.main())")
    baseline_code = f"import sys; sys.argv = ['baseline', {str(session_path)!r}]\n" + _BASELINE
    timeout = 600.0
    for code in (app_code, baseline_code):
        _, done = _python_call(code, timeout)
        if done.returncode != 0:
            raise RuntimeError(f"bench: start-up run failed ({done.returncode}): {done.stderr[-800:]}")
    app_s, baseline_s = [], []
    for _ in range(runs):
        seconds, done = _python_call(app_code, timeout)
        if done.returncode != 0:
            raise RuntimeError(f"bench: --exit-after-first-frame failed ({done.returncode}): {done.stderr[-800:]}")
        app_s.append(seconds)
        seconds, done = _python_call(baseline_code, timeout)
        baseline_s.append(seconds)
    startup, baseline = _median(app_s), _median(baseline_s)
    return {"startup_s": _rounded(startup), "startup_baseline_s": _rounded(baseline),
            "startup_ratio": _rounded(startup / baseline), "startup_runs_s": [round(x, 3) for x in app_s],
            "startup_baseline_runs_s": [round(x, 3) for x in baseline_s]}


# -- long clips -----------------------------------------------------------------------------------------------------
def write_long_clip(source: np.ndarray, minutes: float, path: Path, block: int = 16000 * 30) -> int:
    """A 16 kHz PCM-16 file of `minutes` made by repeating `source`, written block by block (never whole)."""
    import soundfile

    total = int(round(minutes * 60.0 * 16000))
    with soundfile.SoundFile(str(path), "w", 16000, 1, "PCM_16") as out:
        written = 0
        while written < total:
            count = min(block, total - written)
            index = (np.arange(written, written + count) % source.shape[0])
            out.write(source[index])
            written += count
    return total


def features_probe(session_path: str, lane_index: int, minutes: float, folder: str) -> None:
    """Run in a fresh process: stream one clip's features with the lane's encoder; print time and peak memory."""
    import gc

    from backends.registry import MODELS
    from pipeline.audio import load_audio
    from pipeline.session import load_session
    from pipeline.streaming import features_from_file

    session = load_session(Path(session_path), check_files=False)
    spec = session.lanes[lane_index]
    encoder = MODELS.open_encoder(spec.encoder, spec.options)
    source = load_audio(session.audio).samples
    clip = Path(folder) / f"clip_{minutes:g}min.wav"
    total = write_long_clip(source, minutes, clip)
    del source
    gc.collect()
    before = _peak_rss_mb()
    start, cpu_start = time.perf_counter(), time.process_time()
    features = features_from_file(encoder.encode, clip, session.pad_mode)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    print(json.dumps({"minutes": minutes, "samples": total, "rows": int(features.shape[0]), "seconds": seconds,
                      "cpu_seconds": cpu_seconds, "peak_mb": _peak_rss_mb(), "peak_before_mb": before,
                      "load_average": list(os.getloadavg())}))


def measure_features(session_path: Path, lane_index: int, short_minutes: float, long_minutes: float
                     ) -> dict[str, Any]:
    """Each clip in its own process, so the peak resident memory is that clip's (plus the runtime's own)."""
    runs = {}
    with tempfile.TemporaryDirectory(prefix="lipsync-bench-") as folder:
        for label, minutes in (("short", short_minutes), ("long", long_minutes)):
            code = (f"from cli.bench import features_probe; features_probe({str(session_path)!r}, {lane_index}, "
                    f"{minutes!r}, {folder!r})")
            _, done = _python_call(code, timeout=3 * 3600.0)
            if done.returncode != 0:
                raise RuntimeError(f"bench: the {label} clip's features failed: {done.stderr[-800:]}")
            runs[label] = _last_json_line(done.stdout)
            (Path(folder) / f"clip_{minutes:g}min.wav").unlink(missing_ok=True)
    short, long = runs["short"], runs["long"]
    scaled = short["seconds"] * long["minutes"] / short["minutes"]
    figures: dict[str, Any] = {
        "features_short_minutes": short_minutes, "features_short_s": _rounded(short["seconds"]),
        "features_long_minutes": long_minutes, "features_long_s": _rounded(long["seconds"]),
        "features_long_peak_mb": _rounded(long["peak_mb"], 1),
        "features_long_peak_before_mb": _rounded(long["peak_before_mb"], 1),
        "features_linearity": _rounded(long["seconds"] / scaled),
        # CPU seconds too: on a shared machine the two clips run under different loads, and wall time follows the
        # load; the CPU time a clip costs does not (as much).
        "features_short_cpu_s": _rounded(short["cpu_seconds"]), "features_long_cpu_s": _rounded(long["cpu_seconds"]),
        "features_linearity_cpu": _rounded(long["cpu_seconds"] / (short["cpu_seconds"] * long["minutes"]
                                                                  / short["minutes"])),
        "features_load_average": {"short": short["load_average"], "long": long["load_average"]},
        "features_1min_s": None, "features_60min_s": None, "features_60min_peak_mb": None,
    }
    if short_minutes == 1.0:
        figures["features_1min_s"] = figures["features_short_s"]
    if long_minutes == 60.0:
        figures["features_60min_s"] = figures["features_long_s"]
        figures["features_60min_peak_mb"] = figures["features_long_peak_mb"]
    return figures


# -- GPU ----------------------------------------------------------------------------------------------------------
def gpu_present() -> bool:
    """An NVIDIA driver or Apple silicon, checked without importing torch (seconds) on machines that have neither."""
    if shutil.which("nvidia-smi") or Path("/dev/nvidiactl").exists():
        return True
    return sys.platform == "darwin" and platform.machine() == "arm64"


def measure_gpu(quick: bool) -> dict[str, Any]:
    """benchmarks/bench_gpu.py in its own process (it needs torch); null figures where no GPU is present."""
    empty: dict[str, Any] = {"gpu_frames_per_s": None, "gpu": None}
    script = ROOT / "benchmarks" / "bench_gpu.py"
    if not gpu_present() or not script.exists():
        return empty
    with tempfile.TemporaryDirectory(prefix="lipsync-bench-gpu-") as folder:
        out = Path(folder) / "gpu.json"
        arguments = [sys.executable, str(script), "--json", str(out)] + (["--quick"] if quick else [])
        done = subprocess.run(arguments, cwd=ROOT, env=_child_env(), capture_output=True, text=True, timeout=1800)
        if done.returncode != 0 or not out.exists():
            return {**empty, "gpu_error": done.stderr[-800:]}
        figures = json.loads(out.read_text())
    if figures.get("device") in (None, "cpu"):
        return empty
    return {"gpu_frames_per_s": figures.get("prerender_frames_per_s_all_lanes"), "gpu": figures}


# -- the command --------------------------------------------------------------------------------------------------
def _ratio_line(name: str, value: str, reference: str, ratio: float | None, target: str) -> str:
    shown = "n/a" if ratio is None else f"{ratio:.3f}"
    return f"{name:<14} {value:<28} vs {reference:<38} ratio {shown:<7} (target {target})"


def format_figures(f: dict[str, Any]) -> str:
    def v(key: str, unit: str = "", digits: int = 1) -> str:
        value = f.get(key)
        return "n/a" if value is None else f"{value:.{digits}f}{unit}"

    scale_reference = (None if f.get("generator_call_ms") is None
                       else SCALE_CHANGE_FACTOR * f["generator_call_ms"] + SCALE_CHANGE_SLACK_MS)
    scale_ratio = (None if scale_reference is None or f.get("scale_change_ms") is None
                   else f["scale_change_ms"] / scale_reference)
    peak_ratio = None if f.get("features_long_peak_mb") is None else f["features_long_peak_mb"] / FEATURES_PEAK_TARGET_MB
    lines = [
        f"lipsync-compare bench{' --quick (not the figures: proves the benchmark runs)' if f['quick'] else ''}",
        f"session {f['session']}; load average {f['machine']['load_average']} on {f['machine']['cpus']} CPUs",
        _ratio_line("render", f"app {v('render_app_ms', ' ms/frame', 2)}", f"raw onnxruntime {v('render_raw_ms', ' ms/frame', 2)}",
                    f.get("render_ratio"), f">= {RENDER_TARGET} raw/app"),
        _ratio_line("scale change", f"{v('scale_change_ms', ' ms')} (busy {v('scale_change_busy_ms', ' ms')})",
                    "1.1 x generator call + 5 ms = " + ("n/a" if scale_reference is None else f"{scale_reference:.1f} ms"),
                    scale_ratio, "<= 1"),
        _ratio_line("start-up", v("startup_s", " s", 2), f"plain script {v('startup_baseline_s', ' s', 2)}",
                    f.get("startup_ratio"), f"<= {STARTUP_TARGET}"),
        _ratio_line("long clip", f"{f.get('features_long_minutes')} min in {v('features_long_s', ' s', 2)}",
                    f"{f.get('features_short_minutes')} min x length ({v('features_short_s', ' s', 2)})",
                    f.get("features_linearity"), f"<= {LINEARITY_TARGET:.3f}"),
        _ratio_line("peak memory", v("features_long_peak_mb", " MB"), f"{FEATURES_PEAK_TARGET_MB:.0f} MB",
                    peak_ratio, "< 1"),
        _ratio_line("GPU", v("gpu_frames_per_s", " frames/s"), f"{GPU_TARGET_FPS:.0f} frames/s (4 lanes)",
                    None if f.get("gpu_frames_per_s") is None else f["gpu_frames_per_s"] / GPU_TARGET_FPS, ">= 1"),
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from backends.registry import MODELS
    from cli.common import check_outputs, write_json
    from core.errors import InputError
    from pipeline.lane import Lane, open_lanes
    from pipeline.session import demo_session_path, load_session

    check_outputs((args.json, args.force, "--json"))
    quick = bool(args.quick)
    frames = args.frames or (8 if quick else 50)
    repeats = args.repeats or (2 if quick else 5)
    short_minutes = args.short_minutes or (0.1 if quick else 1.0)
    long_minutes = args.long_minutes or (0.5 if quick else 60.0)
    session_path = (args.session or demo_session_path()).resolve()
    session = load_session(session_path, check_files=False)
    figures: dict[str, Any] = {
        "benchmark": "lipsync-compare bench", "quick": quick, "session": str(session_path), "machine": machine(),
        "render_ratio": None, "render_app_ms": None, "render_raw_ms": None, "generator_call_ms": None,
        "scale_change_ms": None, "scale_change_busy_ms": None, "startup_s": None, "startup_baseline_s": None,
        "startup_ratio": None, "features_60min_peak_mb": None, "features_60min_s": None, "features_1min_s": None,
        "gpu_frames_per_s": None,
        "targets": {"render_ratio_min": RENDER_TARGET, "scale_change_ms_max": "1.1 x generator_call_ms + 5",
                    "startup_ratio_max": STARTUP_TARGET, "features_peak_mb_max": FEATURES_PEAK_TARGET_MB,
                    "features_linearity_max": LINEARITY_TARGET, "gpu_frames_per_s_min": GPU_TARGET_FPS},
    }
    lanes = [lane for lane in open_lanes(session, models=MODELS) if isinstance(lane, Lane)]
    if not lanes:
        raise InputError(f"bench: no lane of {session_path.name} opens, so there is nothing to time")
    if "render" not in args.skip:
        lane = _render_lane(lanes)
        if lane is not None:
            figures.update(measure_render(lane, frames, repeats))
    drawable = [lane for lane in lanes if lane.generator is not None and lane.avatar is not None]
    if "scale" not in args.skip and drawable:
        figures.update(measure_scale_change(drawable[:4], 3 if quick else 9))
    if "startup" not in args.skip:
        figures.update(measure_startup(session_path, 1 if quick else 3))
    if "features" not in args.skip:
        encoder_lane = next((i for i, spec in enumerate(session.lanes) if spec.encoder is not None
                             and spec.encoder.suffix.lower() in (".onnx", ".mlpackage", ".mlmodel", ".pth", ".pt")),
                            None)
        if encoder_lane is not None:
            figures.update(measure_features(session_path, encoder_lane, short_minutes, long_minutes))
    if "gpu" not in args.skip:
        figures.update(measure_gpu(quick))
    figures["machine_after"] = machine()
    figures = {k: _finite_or_none(v) for k, v in figures.items()}
    print(format_figures(figures))
    print(json.dumps(figures))
    if args.json is not None:
        write_json(args.json, figures, args.force)
    return 0
