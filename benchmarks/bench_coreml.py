"""Time the emulated Core ML backend against ONNX Runtime running the same network's ONNX export.

Target (issue 5): the emulated encoder on a batch of 250 windows, and the emulated generator on one 320 frame, each
within 3x of ONNX Runtime on the same machine. Both sides get the same full-size networks with random weights: the
encoder and the 320 generator are built from backends/torch_models.py, exported to ONNX and converted to Core ML
(fp32 and fp16 ML Programs). Prints a table and the ratios; --json OUT writes them.

    python benchmarks/bench_coreml.py --threads 2 --repeats 5 --json bench_coreml.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backends.coreml_backend import CoreMLEncoder, CoreMLGenerator  # noqa: E402
from backends.onnx_backend import OnnxEncoder, OnnxGenerator  # noqa: E402
from tests.builders.coreml_models import (  # noqa: E402
    build_encoder,
    build_generator,
    convert,
    encoder_inputs,
    export_onnx,
    generator_inputs,
)

TARGET_RATIO = 3.0


def paired_median_ms(reference: Callable[[], object], candidate: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median times of two functions run alternately, so that load from other processes hits both alike."""
    reference()
    candidate()  # warm-up: session allocations, thread pool start
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for function, bucket in ((reference, times[0]), (candidate, times[1])):
            start = time.perf_counter()
            function()
            bucket.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times[0]), statistics.median(times[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--windows", type=int, default=250)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        encoder = build_encoder(seed=1)
        generator = build_generator(320, 1.0, seed=2)
        enc_onnx = export_onnx(encoder, "encoder", tmp / "encoder.onnx")
        gen_onnx = export_onnx(generator, "generator", tmp / "generator.onnx")
        windows = encoder_inputs(args.windows)
        image, audio = generator_inputs(1, 320)

        ort_encoder = OnnxEncoder(enc_onnx, threads=args.threads)
        ort_generator = OnnxGenerator(gen_onnx, threads=args.threads)
        for precision in ("fp32", "fp16"):
            enc_ml = convert(encoder, "encoder", tmp / f"encoder_{precision}.mlpackage", precision)
            gen_ml = convert(generator, "generator", tmp / f"generator_{precision}.mlpackage", precision)
            emulated_encoder = CoreMLEncoder(enc_ml, mode="emulated", threads=args.threads)
            emulated_generator = CoreMLGenerator(gen_ml, mode="emulated", threads=args.threads)
            enc_ref, enc_ms = paired_median_ms(lambda: ort_encoder.encode(windows),
                                               lambda: emulated_encoder.encode(windows), args.repeats)
            gen_ref, gen_ms = paired_median_ms(lambda: ort_generator.generate(image, audio),
                                               lambda: emulated_generator.generate(image, audio), args.repeats)
            rows.append({"what": f"encoder {args.windows} windows", "precision": precision, "onnxruntime_ms": enc_ref,
                         "emulated_ms": enc_ms, "ratio": enc_ms / enc_ref})
            rows.append({"what": "generator 320 one frame", "precision": precision, "onnxruntime_ms": gen_ref,
                         "emulated_ms": gen_ms, "ratio": gen_ms / gen_ref})

    print(f"{'what':28} {'prec':5} {'onnxruntime ms':>15} {'emulated ms':>12} {'ratio':>6}  (target <= {TARGET_RATIO}x)")
    for row in rows:
        verdict = "ok" if row["ratio"] <= TARGET_RATIO else "SLOWER THAN TARGET"
        print(f"{row['what']:28} {row['precision']:5} {row['onnxruntime_ms']:15.1f} {row['emulated_ms']:12.1f} "
              f"{row['ratio']:6.2f}  {verdict}")
    if args.json:
        args.json.write_text(json.dumps({"machine": platform.platform(), "processor": platform.processor(),
                                         "threads": args.threads, "repeats": args.repeats, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
