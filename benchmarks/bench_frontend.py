"""Time the audio front end on a 60 s clip: load (+resample), mel, windows, pad, audio tensors.

The encoder is not part of the front end, so the features fed to pad/tensors are random [N, 512] values of the
right shape. Prints a table of milliseconds (median and best of --repeats) and, with --json OUT, writes the same
figures as JSON so runs on different machines can be compared.

    python benchmarks/bench_frontend.py --seconds 60 --repeats 7 --json bench_frontend.json
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
import soundfile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.audio import load_audio  # noqa: E402
from pipeline.features import audio_tensors, pad_features  # noqa: E402
from pipeline.mel import melspectrogram  # noqa: E402
from pipeline.windows import mel_windows  # noqa: E402


def make_clip(path: Path, seconds: float, rate: int, channels: int) -> str:
    """Write a test clip of shaped noise (the front end's cost does not depend on the content; benchmarks import no
    test code, so no espeak-ng builder). Returns its kind."""
    rng = np.random.default_rng(0)
    envelope = 0.5 + 0.5 * np.sin(np.linspace(0.0, 2.0 * np.pi * 3.0, rate))  # syllable-like loudness
    speech = (rng.standard_normal(rate) * 0.1 * envelope).astype(np.float32)
    length = int(seconds * rate)
    mono = np.resize(speech, length) * 0.8
    data = np.stack([np.roll(mono, 5 * c) for c in range(channels)], axis=1) if channels > 1 else mono
    soundfile.write(str(path), data, rate, subtype="PCM_16")
    return "shaped noise"


def time_ms(function: Callable[[], object], repeats: int) -> tuple[list[float], object]:
    """Run function once to warm up, then `repeats` times; returns the times in ms and the last result."""
    result = function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append((time.perf_counter() - start) * 1000.0)
    return times, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=int, default=44100, help="sample rate of the file (16000 skips resampling)")
    parser.add_argument("--channels", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as folder:
        clip = Path(folder) / "clip.wav"
        kind = make_clip(clip, args.seconds, args.rate, args.channels)
        stages: dict[str, list[float]] = {}
        stages["load"], audio = time_ms(lambda: load_audio(clip), args.repeats)
        samples = audio.samples
        stages["mel"], mel = time_ms(lambda: melspectrogram(samples), args.repeats)
        stages["windows"], windows = time_ms(lambda: mel_windows(mel), args.repeats)
        features = np.random.default_rng(1).random((windows.shape[0], 512), dtype=np.float32) * 10
        stages["pad"], padded = time_ms(lambda: pad_features(features), args.repeats)
        stages["tensors"], tensors = time_ms(lambda: audio_tensors(padded), args.repeats)

        def end_to_end() -> np.ndarray:
            """The chain a lane runs, with the encoder replaced by the ready-made random features."""
            clip_windows = mel_windows(melspectrogram(load_audio(clip).samples))
            return audio_tensors(pad_features(features[: clip_windows.shape[0]]))

        stages["end to end"], _ = time_ms(end_to_end, args.repeats)

    summary = {
        name: {"median_ms": statistics.median(times), "best_ms": min(times), "runs_ms": times}
        for name, times in stages.items()
    }
    front_end_total = sum(summary[name]["median_ms"] for name in ("load", "mel", "windows", "pad", "tensors"))
    report = {
        "benchmark": "audio front end",
        "clip": {
            "seconds": args.seconds,
            "file_rate": args.rate,
            "channels": args.channels,
            "content": kind,
            "samples_16k": int(samples.shape[0]),
            "mel_frames": int(mel.shape[0]),
            "windows": int(windows.shape[0]),
            "audio_tensors": int(tensors.shape[0]),
        },
        "stages": summary,
        "sum_of_stage_medians_ms": front_end_total,
        "machine": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
    }

    print(f"audio front end, {args.seconds:g} s {kind}, {args.rate} Hz x {args.channels} ch "
          f"-> T {mel.shape[0]}, N {windows.shape[0]}, {tensors.shape[0]} audio tensors")
    print(f"{'stage':<26}{'median ms':>12}{'best ms':>12}")
    for name, figures in summary.items():
        print(f"{name:<26}{figures['median_ms']:>12.2f}{figures['best_ms']:>12.2f}")
    print(f"{'sum of stage medians':<26}{front_end_total:>12.2f}")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
