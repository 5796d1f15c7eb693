"""`dump`: write one stage of one lane to .npy, headless, so any port's arrays can be compared with ours.

Shapes and dtypes are a contract (see README): mel [T,80], windows [N,1,80,16], features [N+2,512], tensors
[N+2,32,16,16] (all float32); inputs [F,6,S,S] float32, crops (raw generator outputs) [F,3,S,S] float32, frames
[F,H,W,3] uint8 BGR for output frames A..B-1.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from backends.registry import MODELS
from cli.common import add_time_limit, check_outputs, write_npy
from pipeline.audio import load_audio
from pipeline.avatar import Avatar
from core.errors import InputError
from pipeline.lane import Lane, parse_frame_range
from pipeline.metrics import check_scale
from pipeline.session import LaneSpec

STAGES = ("mel", "windows", "features", "tensors", "inputs", "crops", "frames")
NEEDS_ENCODER = {"features", "tensors", "crops", "frames"}
NEEDS_AVATAR = {"inputs", "crops", "frames"}
NEEDS_GENERATOR = {"crops", "frames"}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "dump",
        help="write one stage of one lane to a .npy file",
        description="Run one lane's pipeline up to STAGE and write that stage's array to OUT.npy.",
    )
    p.add_argument("--audio", type=Path, required=True, help="speech (wav/flac/ogg)")
    p.add_argument("--encoder", type=Path, help="encoder model (.onnx, .mlpackage, .mlmodel, .pth) or feature dump")
    p.add_argument("--avatar", type=Path, help="SyncTalk_2D dataset folder")
    p.add_argument("--generator", type=Path, help="generator model (.onnx, .mlpackage, .mlmodel, .pth)")
    p.add_argument("--size", type=int, help="crop size for --stage inputs without a generator (160 or 320)")
    p.add_argument("--mel", type=Path, help="use this mel dump [T,80] instead of computing the mel")
    p.add_argument("--scale", type=float, default=1.0, help="multiply the encoder features (default 1)")
    p.add_argument("--pad-mode", choices=("constant", "reflect"), default="constant",
                   help="STFT centre padding: constant (librosa >= 0.9, default) or reflect (librosa < 0.9)")
    p.add_argument("--provider", help="ONNX Runtime execution provider (cpu, cuda, coreml)")
    p.add_argument("--frames", metavar="A:B", help="output frames A..B-1 (default all N+2)")
    p.add_argument("--stage", required=True, choices=STAGES)
    p.add_argument("--out", type=Path, required=True, metavar="FILE.npy")
    p.add_argument("--force", action="store_true", help="replace FILE.npy if it exists")
    add_time_limit(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    stage = args.stage
    if Path(args.out).suffix.lower() != ".npy":
        raise InputError(f"--out {args.out}: expected a file name ending in .npy")
    check_outputs((args.out, args.force, "--out"))  # before minutes of work, not after
    if stage in NEEDS_ENCODER and args.encoder is None:
        raise InputError(f"--stage {stage} needs --encoder (a model or a feature dump)")
    if stage in NEEDS_AVATAR and args.avatar is None:
        raise InputError(f"--stage {stage} needs --avatar (a SyncTalk_2D dataset folder)")
    if stage in NEEDS_GENERATOR and args.generator is None:
        raise InputError(f"--stage {stage} needs --generator")
    if stage == "inputs" and args.generator is None and args.size is None:
        raise InputError("--stage inputs needs --generator or --size (160 or 320) to know the crop size")
    check_scale(args.scale, "--scale")  # the shared float32 check; the lane checks it against its features too

    audio = load_audio(args.audio)
    avatar = Avatar.open(args.avatar) if args.avatar is not None and stage in NEEDS_AVATAR else None
    options = {"provider": args.provider} if args.provider else {}
    array = _compute(stage, args, audio, avatar, options)
    write_npy(args.out, array, args.force)
    print(f"wrote {args.out}: {stage} {list(array.shape)} {array.dtype}")
    return 0


def _compute(stage: str, args: argparse.Namespace, audio, avatar, options: dict) -> np.ndarray:
    spec = LaneSpec(
        name="dump",
        encoder=args.encoder if stage in NEEDS_ENCODER else None,
        generator=args.generator if stage in NEEDS_AVATAR else None,
        scale=args.scale,
        mel=args.mel,
        options=options,
    )
    lane = Lane(spec, audio, avatar, pad_mode=args.pad_mode, models=MODELS)
    if stage == "mel":
        return lane.mel()
    if stage == "windows":
        return lane.windows()
    if stage == "features":
        return lane.features()
    total = lane.num_frames if lane.encoder is not None else lane.num_windows + 2
    frames = parse_frame_range(args.frames, total)
    if stage == "tensors":
        return lane.audio_tensors(frames)
    if stage == "inputs":
        size = lane.image_size if lane.generator is not None else args.size
        return np.stack([lane.generator_input(i, size).tensor for i in frames]).astype(np.float32)
    if stage == "crops":
        return np.stack([lane.raw_output(i) for i in frames]).astype(np.float32)
    return np.stack([lane.frame(i).image for i in frames]).astype(np.uint8)
