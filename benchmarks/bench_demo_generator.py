"""Time the demo bundle's 160 px generator per frame under ONNX Runtime (the figure docs/DEMO.md quotes).

Issue 3 asks for a generator small enough that two lanes play in real time on a 2-core laptop CPU (about 15 ms per
frame with 2 threads). This times resources/demo/models/generator.onnx through the app's own OnnxGenerator on the
demo's real inputs (avatar crops, aud_ave.npy), one frame per run as a lane plays. With --widths it also exports
generators of other width multipliers with random weights (speed does not depend on the weights; needs torch) so
the choice of width can be checked. Prints a table and, with --json OUT, the same figures as JSON.

    python benchmarks/bench_demo_generator.py --threads 2
    python benchmarks/bench_demo_generator.py --threads 2 --widths 0.375 0.5 --json bench_demo_generator.json
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backends.onnx_backend import OnnxGenerator  # noqa: E402
from pipeline.avatar import Avatar  # noqa: E402
from pipeline.crop import ping_pong_index, prepare_input  # noqa: E402
from pipeline.features import audio_tensors  # noqa: E402

BUNDLE = ROOT / "resources" / "demo"


def demo_inputs(bundle: Path, frames: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image [1,6,160,160], audio [1,32,16,16]) for the first `frames` output frames of the demo clip."""
    avatar = Avatar.open(bundle / "avatar")
    features = np.load(bundle / "aud_ave.npy")
    inputs = []
    for i in range(min(frames, len(features))):
        k = ping_pong_index(i, avatar.num_templates)
        image = prepare_input(avatar.frame(k), avatar.crop_box(k), 160).tensor[None]
        inputs.append((image, audio_tensors(features, [i])))
    return inputs


def time_per_frame(generator: OnnxGenerator, inputs: list[tuple[np.ndarray, np.ndarray]], repeats: int) -> dict:
    """Median over `repeats` passes of the mean milliseconds per frame (one warm-up pass first)."""
    for image, audio in inputs[:5]:
        generator.generate(image, audio)
    passes = []
    for _ in range(repeats):
        start = time.perf_counter()
        for image, audio in inputs:
            generator.generate(image, audio)
        passes.append((time.perf_counter() - start) * 1000.0 / len(inputs))
    return {"median_ms_per_frame": statistics.median(passes), "passes_ms_per_frame": passes}


def export_random_width(width: float, folder: Path) -> Path:
    """A 160 px generator at this width multiplier with random weights, as ONNX (opset 17, like the bundle's)."""
    import warnings

    import torch

    from backends.torch_models import UNetGenerator

    path = folder / f"generator_w{width}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(UNetGenerator(size=160, width=width).eval(),
                          (torch.zeros(1, 6, 160, 160), torch.zeros(1, 32, 16, 16)), str(path),
                          input_names=["input", "audio"], output_names=["output"], opset_version=17,
                          external_data=False, dynamo=False)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=BUNDLE)
    parser.add_argument("--frames", type=int, default=50, help="demo frames per pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    parser.add_argument("--widths", type=float, nargs="*", default=[],
                        help="also time random-weight generators at these width multipliers (needs torch)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    inputs = demo_inputs(args.bundle, args.frames)
    models = [("shipped generator.onnx", args.bundle / "models" / "generator.onnx")]
    with tempfile.TemporaryDirectory(prefix="bench_demo_generator_") as folder:
        models += [(f"width {w} (random weights)", export_random_width(w, Path(folder))) for w in args.widths]
        rows = []
        for label, path in models:
            generator = OnnxGenerator(path, threads=args.threads)
            rows.append({"model": label, "provenance": generator.provenance.summary(),
                         **time_per_frame(generator, inputs, args.repeats)})
    figures = {
        "threads": args.threads,
        "frames": len(inputs),
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "machine": platform.processor() or platform.machine(),
        "results": rows,
    }
    print(f"160 px generator, ONNX Runtime, {args.threads} threads, {len(inputs)} demo frames, "
          f"median of {args.repeats} passes (1-min load average {figures['load_average_1min']:.1f} "
          f"on {figures['cpu_count']} CPUs)")
    for row in rows:
        print(f"  {row['model']:32s} {row['median_ms_per_frame']:7.2f} ms/frame")
    print(json.dumps(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
