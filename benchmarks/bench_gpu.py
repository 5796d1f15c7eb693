"""GPU lanes: how many frames a second a GPU gives PyTorch lanes of the full-size 320 generator.

    python benchmarks/bench_gpu.py --json gpu.json          # on a machine with CUDA (or Apple's MPS)
    python benchmarks/bench_gpu.py --tiny                   # CPU smoke test: 160 px, width 0.125, a few frames

Measures, with the project's own U-Net (backends/torch_models.py; 320 px, width 1.0: 12.2 M parameters, random
weights: speed does not depend on the values):
1. the generator alone at batch 1 and batched (16), fp32 and fp16: ms per frame and frames/s;
2. four lanes pre-rendering a 60 s clip end to end: the clip's mel (CPU, streamed, shared by the lanes as in the
   app), each lane's encoder on the GPU, audio tensors, the generator in batches, paste-back on the GPU (uint8 mouth
   into the resized crop, bicubic resize to the crop box, into a copy of the template frame) and the finished frames
   copied back to host memory: frames/s for all lanes together (issue 12's target: >= 500);
3. four live lanes at 25 fps, each on its own thread and CUDA stream, one frame per 40 ms tick at batch 1: late
   frames and latency percentiles.
The GPU paste-back resizes with torch's bicubic, which rounds differently from cv2's: its pixels can differ by a
level from the CPU path's, which is why the app pastes back on the CPU; the figure is what a GPU paste-back costs.
Prints a table and one JSON line; --json OUT writes it too. Figures only, never assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FPS = 25
LANES = 4


def pick_device(requested: str) -> str:
    import torch

    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def synchronize(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
    elif device == "mps":
        torch.mps.synchronize()


def build_generator(size: int, width: float, device: str, half: bool, seed: int = 0) -> Any:
    import torch

    from backends.torch_models import UNetGenerator

    torch.manual_seed(seed)
    model = UNetGenerator(size=size, width=width).eval().to(device)
    return model.half() if half else model


def time_generator(model: Any, size: int, batch: int, device: str, half: bool, calls: int) -> dict[str, float]:
    """Median ms per call over `calls` calls (after warm-up), and the frames/s that makes."""
    import torch

    dtype = torch.float16 if half else torch.float32
    image = torch.rand(batch, 6, size, size, device=device, dtype=dtype)
    audio = torch.rand(batch, 32, 16, 16, device=device, dtype=dtype)
    times = []
    with torch.inference_mode():
        for _ in range(3):
            model(image, audio)
        synchronize(device)
        for _ in range(calls):
            start = time.perf_counter()
            model(image, audio)
            synchronize(device)
            times.append((time.perf_counter() - start) * 1000.0)
    per_call = statistics.median(times)
    return {"batch": batch, "ms_per_call": round(per_call, 3), "ms_per_frame": round(per_call / batch, 4),
            "frames_per_s": round(1000.0 * batch / per_call, 1)}


class SyntheticAvatar:
    """Template frames with crop boxes that vary a little from frame to frame, as real landmarks do; the prepared
    generator inputs and resized crops come from the pipeline's own prepare_input (cv2, as the app does)."""

    def __init__(self, count: int, height: int, width: int, box: int, size: int, seed: int = 0) -> None:
        from pipeline.crop import CropBox, prepare_input

        rng = np.random.default_rng(seed)
        self.frames = rng.integers(0, 256, (count, height, width, 3), dtype=np.uint8)
        self.boxes = []
        inputs, crops = [], []
        for k in range(count):
            jitter = int(rng.integers(-8, 9))
            x1, y1 = width // 2 - box // 2 + jitter, height // 2 - box // 4 + jitter
            b = CropBox(x1, y1, x1 + box + jitter, y1 + box + jitter)
            self.boxes.append(b)
            prepared = prepare_input(self.frames[k], b, size)
            inputs.append(prepared.tensor)
            crops.append(prepared.resized_crop)
        self.inputs = np.stack(inputs)  # [K, 6, S, S] float32
        self.crops = np.stack(crops)  # [K, S+8, S+8, 3] uint8


class GpuLane:
    """One lane on the device: its encoder and generator, the templates and their prepared inputs uploaded once."""

    def __init__(self, avatar: SyntheticAvatar, size: int, width: float, device: str, half: bool, seed: int) -> None:
        import torch

        from backends.torch_models import AudioEncoderAVE

        self.device, self.half, self.size = device, half, size
        self.dtype = torch.float16 if half else torch.float32
        torch.manual_seed(seed)
        self.encoder = AudioEncoderAVE().eval().to(device)
        self.generator = build_generator(size, width, device, half, seed)
        self.templates = torch.from_numpy(avatar.frames).to(device)  # [K, H, W, 3] uint8
        self.inputs = torch.from_numpy(avatar.inputs).to(device, self.dtype)
        self.crops = torch.from_numpy(avatar.crops).to(device)
        self.boxes = avatar.boxes
        self.count = len(avatar.boxes)

    def features(self, windows: np.ndarray) -> Any:
        """Padded features [N+2, 512] on the device."""
        import torch

        with torch.inference_mode():
            parts = [self.encoder(torch.from_numpy(windows[i:i + 1024]).to(self.device))
                     for i in range(0, len(windows), 1024)]
            features = torch.cat(parts)
            return torch.cat([features[:1], features, features[-1:]])

    def audio_tensors(self, padded: Any, frames: range) -> Any:
        import torch

        zeros = torch.zeros(8, padded.shape[1], device=self.device, dtype=padded.dtype)
        extended = torch.cat([zeros, padded, zeros])
        index = torch.arange(frames.start, frames.stop, device=self.device)[:, None] + torch.arange(16, device=self.device)
        return extended[index].reshape(len(frames), 32, 16, 16)

    def render(self, padded: Any, frames: range) -> Any:
        """Frames [B, H, W, 3] uint8 on the device: generator in one call, paste-back per frame's own crop box."""
        import torch
        import torch.nn.functional as F

        from pipeline.crop import ping_pong_indices

        ks = torch.from_numpy(np.asarray(ping_pong_indices(np.arange(frames.start, frames.stop), self.count))
                              ).to(self.device)
        with torch.inference_mode():
            out = self.generator(self.inputs[ks], self.audio_tensors(padded, frames).to(self.dtype))
            mouths = (out.float().clamp(0.0, 1.0) * 255.0).to(torch.uint8)  # truncation, as the reference casts
            patches = self.crops[ks].clone()  # [B, S+8, S+8, 3]
            s = self.size
            patches[:, 4:4 + s, 4:4 + s] = mouths.permute(0, 2, 3, 1)
            result = self.templates[ks].clone()
            height, width = result.shape[1:3]
            for row, k in enumerate(ks.tolist()):
                top, bottom, left, right = self.boxes[k].region(height, width)
                patch = patches[row].permute(2, 0, 1)[None].float()
                restored = F.interpolate(patch, size=(bottom - top, right - left), mode="bicubic",
                                         align_corners=False)
                result[row, top:bottom, left:right] = restored[0].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0)
            return result


def prerender(lanes: list[GpuLane], samples: np.ndarray, batch: int, device: str) -> dict[str, Any]:
    """Every lane renders every frame of the clip; frames end in host memory (pinned on CUDA)."""
    import torch

    from pipeline.streaming import iter_window_batches, streamed_melspectrogram

    start = time.perf_counter()
    mel = streamed_melspectrogram(samples)
    windows = np.concatenate(list(iter_window_batches([mel], mel.shape[0])))
    mel_s = time.perf_counter() - start
    frames_done = 0
    host: Any = None
    for lane in lanes:
        padded = lane.features(windows)
        total = padded.shape[0]
        for first in range(0, total, batch):
            frames = range(first, min(first + batch, total))
            rendered = lane.render(padded, frames)
            if host is None or host.shape != rendered.shape:
                host = torch.empty(rendered.shape, dtype=torch.uint8, pin_memory=device == "cuda")
            host.copy_(rendered)
            frames_done += len(frames)
    synchronize(device)
    seconds = time.perf_counter() - start
    return {"frames_all_lanes": frames_done, "seconds": round(seconds, 3), "mel_and_windows_s": round(mel_s, 3),
            "frames_per_s_all_lanes": round(frames_done / seconds, 1)}


def live(lanes: list[GpuLane], samples: np.ndarray, seconds: float, device: str) -> dict[str, Any]:
    """Each lane on its own thread (and CUDA stream): one frame due every 40 ms, rendered at batch 1."""
    import torch

    from pipeline.streaming import iter_window_batches, streamed_melspectrogram

    mel = streamed_melspectrogram(samples)
    windows = np.concatenate(list(iter_window_batches([mel], mel.shape[0])))
    padded = [lane.features(windows) for lane in lanes]
    count = min(int(seconds * FPS), int(padded[0].shape[0]))
    latencies: list[list[float]] = [[] for _ in lanes]
    late = [0 for _ in lanes]
    barrier = threading.Barrier(len(lanes))

    def play(n: int) -> None:
        lane = lanes[n]
        stream = torch.cuda.Stream() if device == "cuda" else None
        host = None
        barrier.wait()
        start = time.perf_counter()
        for i in range(count):
            due = start + (i + 1) / FPS
            if stream is not None:
                with torch.cuda.stream(stream):
                    frame = lane.render(padded[n], range(i, i + 1))
                    host = frame.to("cpu", non_blocking=False)
                stream.synchronize()
            else:
                host = lane.render(padded[n], range(i, i + 1)).cpu()
            done = time.perf_counter()
            latencies[n].append((done - (due - 1 / FPS)) * 1000.0)
            if done > due:
                late[n] += 1
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
        del host

    threads = [threading.Thread(target=play, args=(n,)) for n in range(len(lanes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = sorted(x for lane in latencies for x in lane)
    return {"lanes": len(lanes), "frames_per_lane": count, "late_frames": late,
            "latency_ms_median": round(statistics.median(every), 2),
            "latency_ms_p99": round(every[min(len(every) - 1, int(0.99 * len(every)))], 2),
            "budget_ms": 1000.0 / FPS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cuda", "mps", "cpu"])
    parser.add_argument("--tiny", action="store_true", help="CPU smoke test: 160 px, width 0.125, 2 s clip, few calls")
    parser.add_argument("--quick", action="store_true", help="fewer calls and a 10 s clip (what `app.py bench` runs)")
    parser.add_argument("--batch", type=int, default=16, help="frames per generator call when batched (8-32)")
    parser.add_argument("--seconds", type=float, default=None, help="clip length for pre-render (default 60)")
    parser.add_argument("--live-seconds", type=float, default=None, help="live playback length (default 20)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    import torch

    device = pick_device(args.device)
    if args.tiny:
        torch.set_num_threads(1)  # a smoke test on a shared CPU: four lane threads each with a full pool thrash

    def phase(name: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {name}", file=sys.stderr, flush=True)
    size, width = (160, 0.125) if args.tiny else (320, 1.0)
    clip_s = args.seconds or (2.0 if args.tiny else 10.0 if args.quick else 60.0)
    live_s = args.live_seconds or (1.0 if args.tiny else 5.0 if args.quick else 20.0)
    calls = 3 if args.tiny else 10 if args.quick else 30
    frame_h, frame_w, box = (256, 256, 120) if args.tiny else (720, 1280, 300)
    templates = 4 if args.tiny else 100

    figures: dict[str, Any] = {
        "benchmark": "gpu lanes", "device": device,
        "device_name": torch.cuda.get_device_name(0) if device == "cuda" else device,
        "torch": torch.__version__, "generator": {"size": size, "width": width},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "load_average": [round(x, 2) for x in os.getloadavg()]},
    }
    fp32 = build_generator(size, width, device, half=False)
    figures["generator"]["parameters_m"] = round(sum(p.numel() for p in fp32.parameters()) / 1e6, 2)
    phase("generator alone")
    precisions = [("fp32", False)] + ([("fp16", True)] if device != "cpu" else [])
    generator_rows = []
    for label, half in precisions:
        model = fp32 if not half else build_generator(size, width, device, half=True)
        for batch in (1, args.batch):
            generator_rows.append({"precision": label, **time_generator(model, size, batch, device, half, calls)})
    figures["generator_alone"] = generator_rows
    del fp32

    half = device != "cpu"
    phase("pre-render")
    avatar = SyntheticAvatar(templates, frame_h, frame_w, box, size)
    lanes = [GpuLane(avatar, size, width, device, half, seed=n) for n in range(LANES)]
    rng = np.random.default_rng(0)
    samples = (rng.standard_normal(int(clip_s * 16000)) * 0.1).astype(np.float32)
    figures["prerender"] = {"clip_s": clip_s, "batch": args.batch, "precision": "fp16" if half else "fp32",
                            **prerender(lanes, samples, args.batch, device)}
    figures["prerender_frames_per_s_all_lanes"] = figures["prerender"]["frames_per_s_all_lanes"]
    phase("live")
    live_samples = samples[: int(max(live_s + 1.0, 1.0) * 16000)]
    if live_samples.shape[0] < 16000:
        live_samples = np.resize(samples, 16000)
    figures["live"] = {"seconds": live_s, "precision": "fp16" if half else "fp32",
                       **live(lanes, live_samples, live_s, device)}

    print(f"GPU lanes on {figures['device_name']} (torch {torch.__version__}); generator {size} px width {width:g}, "
          f"{figures['generator']['parameters_m']} M parameters, random weights")
    for row in generator_rows:
        print(f"  generator {row['precision']} batch {row['batch']:>3}: {row['ms_per_frame']:8.3f} ms/frame "
              f"{row['frames_per_s']:9.1f} frames/s")
    pre = figures["prerender"]
    print(f"  pre-render, {LANES} lanes, {clip_s:g} s clip, batch {args.batch}, paste-back on the device: "
          f"{pre['frames_per_s_all_lanes']} frames/s all lanes (target 500)")
    lv = figures["live"]
    print(f"  live, {LANES} lanes at {FPS} fps for {live_s:g} s: late frames {lv['late_frames']}, latency median "
          f"{lv['latency_ms_median']} ms, p99 {lv['latency_ms_p99']} ms (budget {lv['budget_ms']:.0f} ms)")
    print(json.dumps(figures))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
