"""How long the avatar and metrics steps take per frame, next to the generator's ~140 ms on a 2-core CPU.

Prints one line per figure and a JSON object at the end (median of repeated runs, milliseconds). Run:
    python benchmarks/bench_avatar.py [--frames 30] [--repeat 20] [--json out.json]
No assertions: speed is reported here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.avatar import Avatar  # noqa: E402
from pipeline.crop import paste_back, prepare_input  # noqa: E402
from pipeline.metrics import compare, histogram, per_row_ranges, stats  # noqa: E402
from tests.builders.avatar import make_dataset  # noqa: E402


def median_ms(action: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``repeat`` calls, in milliseconds (the median shrugs off other users of the CPU)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def run(frames: int, repeat: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        make_dataset(Path(folder) / "small", frames=6, size=(320, 240))
        figures["builder_6x320x240_ms"] = (time.perf_counter() - start) * 1000.0
        make_dataset(Path(folder) / "hd", frames=frames, size=(1280, 720))
        start = time.perf_counter()
        avatar = Avatar.open(Path(folder) / "hd")
        figures[f"open_{frames}x1280x720_ms"] = (time.perf_counter() - start) * 1000.0
        start = time.perf_counter()
        for k in range(avatar.num_templates):
            avatar.frame(k)
        figures["decode_1280x720_jpg_ms"] = (time.perf_counter() - start) * 1000.0 / avatar.num_templates
        figures["cached_frame_ms"] = median_ms(lambda: avatar.frame(avatar.num_templates - 1), repeat)
        frame, box = avatar.frame(1), avatar.crop_box(1)
        figures["crop_side_px"] = float(box.x2 - box.x1)
        for size in (320, 160):
            prepared = prepare_input(frame, box, size)
            output = np.random.default_rng(0).random((3, size, size), dtype=np.float32)
            figures[f"prepare_input_{size}_ms"] = median_ms(lambda: prepare_input(frame, box, size), repeat)
            figures[f"paste_back_{size}_ms"] = median_ms(
                lambda: paste_back(frame, box, prepared.resized_crop, output), repeat
            )
    rng = np.random.default_rng(1)
    features = np.maximum(rng.normal(1, 2, size=(499, 512)), 0).astype(np.float32)  # a 20 s clip, padded
    other = features * 0.01 + rng.normal(0, 0.001, size=features.shape).astype(np.float32)
    figures["stats_499x512_ms"] = median_ms(lambda: stats(features), repeat)
    figures["compare_499x512_ms"] = median_ms(lambda: compare(other, features), repeat)
    figures["histogram_4_lanes_ms"] = median_ms(lambda: histogram([features, other, features, other]), repeat)
    figures["per_row_ranges_499x512_ms"] = median_ms(lambda: per_row_ranges(features), repeat)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=30, help="template frames at 1280x720 (default 30)")
    parser.add_argument("--repeat", type=int, default=20, help="timed repetitions per figure (default 20)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    figures = run(args.frames, args.repeat)
    for name, value in figures.items():
        print(f"{name:32s} {value:10.3f}")
    text = json.dumps({"benchmark": "avatar", "figures": figures}, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
