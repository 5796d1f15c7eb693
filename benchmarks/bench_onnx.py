"""Time the ONNX Runtime encoder per window: batched (dynamic batch) against one window per run.

Without a model argument it builds two stand-ins: a tiny one (one MatMul: measures per-call overhead) and one with
the real encoder's layers and random weights (costs what audio_visual_encoder.onnx costs). With a model path it
times that model instead; if its batch is fixed at 1 only the one-by-one figure exists. Prints a table and, with
--json OUT, writes the same figures as JSON so runs on different machines can be compared.

    python benchmarks/bench_onnx.py --windows 247 --threads 2 --json bench_onnx.json
    python benchmarks/bench_onnx.py path/to/audio_encoder.onnx --batch 64
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backends.onnx_backend import OnnxEncoder  # noqa: E402
from tests.builders.onnx_models import make_ave_like_encoder, make_encoder, mel_windows_like  # noqa: E402


def time_ms(function: Callable[[], object], repeats: int) -> list[float]:
    """Run once to warm up (session allocations, thread pool start), then `repeats` timed runs in ms."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1000.0)
    return times


def bench_model(label: str, path: Path, windows: np.ndarray, batch: int, threads: int | None,
                repeats: int) -> dict[str, object]:
    """Per-window milliseconds for both ways of running the same windows through one model."""
    encoder = OnnxEncoder(path, threads=threads, batch_size=batch)
    count = len(windows)
    result: dict[str, object] = {
        "model": label,
        "path": str(path),
        "provenance": encoder.provenance.summary(),
        "model_batch": encoder.provenance.details["batch"],
        "windows": count,
    }
    one_at_a_time = time_ms(lambda: [encoder.encode(windows[i:i + 1]) for i in range(count)], repeats)
    result["one_by_one"] = {
        "median_ms_total": statistics.median(one_at_a_time),
        "per_window_ms": statistics.median(one_at_a_time) / count,
        "runs_ms": one_at_a_time,
    }
    if encoder.tensors.batch is None:
        batched = time_ms(lambda: encoder.encode(windows), repeats)
        result["batched"] = {
            "batch": batch,
            "median_ms_total": statistics.median(batched),
            "per_window_ms": statistics.median(batched) / count,
            "runs_ms": batched,
        }
        result["speed_up"] = statistics.median(one_at_a_time) / statistics.median(batched)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", type=Path, help="an encoder .onnx (default: built-in stand-ins)")
    parser.add_argument("--windows", type=int, default=247, help="windows to encode (247 = 10 s of audio)")
    parser.add_argument("--batch", type=int, default=64, help="windows per run when the batch is dynamic")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: its own)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    windows = mel_windows_like(args.windows)
    results = []
    with tempfile.TemporaryDirectory() as folder:
        if args.model is not None:
            models = [(args.model.name, args.model)]
        else:
            tiny, ave = Path(folder) / "tiny.onnx", Path(folder) / "ave_like.onnx"
            make_encoder(tiny)
            make_ave_like_encoder(ave)
            models = [("tiny (1 MatMul)", tiny), ("AVE-like (13 conv blocks, random weights)", ave)]
        for label, path in models:
            results.append(bench_model(label, path, windows, args.batch, args.threads, args.repeats))

    report = {
        "benchmark": "onnx encoder per window",
        "threads": args.threads,
        "repeats": args.repeats,
        "results": results,
        "machine": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
    }
    print(f"ONNX encoder, {args.windows} windows, threads {args.threads or 'default'}, median of {args.repeats}")
    print(f"{'model':<44}{'one-by-one ms/win':>18}{'batched ms/win':>16}{'speed-up':>10}")
    for r in results:
        batched = r.get("batched")
        batched_text = f"{batched['per_window_ms']:.4f}" if batched else "fixed batch"  # type: ignore[index]
        speed_up = f"{r['speed_up']:.1f}x" if "speed_up" in r else "-"
        one_by_one = r["one_by_one"]["per_window_ms"]  # type: ignore[index]
        print(f"{r['model']:<44}{one_by_one:>18.4f}{batched_text:>16}{speed_up:>10}")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
