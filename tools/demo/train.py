"""Joint training of the AVE encoder and the 160 px generator on the demo data (.npz from tools.demo.dataset).

Runs on the GPU machine with only torch and numpy (plus this repo's backends/torch_models.py and
tools/demo/measure.py); on a CPU it runs a few steps for the smoke build. The encoder is trained end to end
through the generator, exactly as the features flow at inference (16 padded feature rows -> [32, 16, 16]), so a
wrong encoder (untrained, scaled) visibly breaks the mouth.

    python -m tools.demo.train --data .demo_work/train.npz --out .demo_work/trained --minutes 7

Fine-tuning (issue 8: the generator input's mask changed by one column and one row) starts from shipped weights
and keeps the encoder frozen (eval mode, no gradients, so its BatchNorm statistics do not move either), so only
the generator's files change:

    python -m tools.demo.train --data .demo_work/train.npz --out .demo_work/trained --minutes 2 --lr 2e-4 \
        --init-encoder resources/demo/models/audio_visual_encoder.pth \
        --init-generator resources/demo/models/generator.pth --freeze-encoder --checkpoint-every 20
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from backends.torch_models import AudioEncoderAVE, UNetGenerator, count_parameters
from tools.demo.measure import mouth_opening, pearson

CONTEXT_ROWS = 16  # stage 4: rows [i - 8, i + 8) of the padded features


class DemoData:
    """The .npz on the training device, with the index arithmetic of PIPELINE.md stages 2-4 precomputed."""

    def __init__(self, path: Path, device: torch.device) -> None:
        data = np.load(path)
        self.device = device
        self.mel = torch.from_numpy(data["mel"].astype(np.float32)).to(device)
        self.window_starts = torch.from_numpy(data["window_starts"].astype(np.int64)).to(device)
        self.targets = data["targets"]
        self.target_states = torch.from_numpy(data["target_states"].astype(np.int64)).to(device)
        self.bare = torch.from_numpy(data["bare_crops"]).to(device).permute(0, 3, 1, 2).float() / 255.0
        self.colour = torch.from_numpy(data["mouth_colour"]).to(device).permute(0, 3, 1, 2).float() / 255.0
        self.alpha = torch.from_numpy(data["mouth_alpha"]).to(device)[:, None].float() / 255.0
        self.patch_origin = tuple(int(v) for v in data["patch_origin"])
        self.keep = (~torch.from_numpy(data["mask"])).to(device).float()[None, None]
        self.mouth_centre = tuple(float(v) for v in data["mouth_centre"])
        self.num_states = self.colour.shape[0]
        self.idle_state = int(data["idle_state"][0])
        frame_windows, frame_clip, is_val = [], [], []
        window_offset = 0
        for clip, (frames, windows, val) in enumerate(
            zip(data["clip_frames"], data["clip_windows"], data["clip_is_val"])
        ):
            rows = np.arange(frames)[:, None] + np.arange(-8, 8)[None, :]  # padded-feature rows per output frame
            inside = (rows >= 0) & (rows <= windows + 1)
            window = window_offset + np.clip(rows - 1, 0, windows - 1)  # padded row r holds window r - 1, clamped
            frame_windows.append(np.where(inside, window, -1))
            frame_clip.append(np.full(frames, clip))
            is_val.append(np.full(frames, bool(val)))
            window_offset += int(windows)
        self.frame_windows = torch.from_numpy(np.concatenate(frame_windows)).to(device)
        self.frame_clip = np.concatenate(frame_clip)
        self.is_val = np.concatenate(is_val)
        self.train_frames = np.flatnonzero(~self.is_val)
        self.val_frames = np.flatnonzero(self.is_val)

    def mel_windows(self, window_ids: torch.Tensor) -> torch.Tensor:
        """[n] window ids -> [n, 1, 80, 16] (band 0 in row 0, 16 frames as width)."""
        rows = self.window_starts[window_ids][:, None] + torch.arange(16, device=self.device)[None, :]
        return self.mel[rows].permute(0, 2, 1)[:, None]

    def with_mouth(self, templates: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """Bare template crops with the mouth of each table state composited into its patch."""
        images = self.bare[templates].clone()
        r, c = self.patch_origin
        h, w = self.colour.shape[2:]
        alpha = self.alpha[states]
        images[:, :, r : r + h, c : c + w] = images[:, :, r : r + h, c : c + w] * (1 - alpha) + self.colour[states]
        return images


def audio_tensors(encoder: AudioEncoderAVE, data: DemoData, frames: torch.Tensor) -> torch.Tensor:
    """[B] global frame ids -> [B, 32, 16, 16]: encode the 16 context windows, zero the rows outside the clip."""
    ids = data.frame_windows[frames]  # [B, 16]
    valid = (ids >= 0).float()
    features = encoder(data.mel_windows(ids.clamp(min=0).reshape(-1))).reshape(len(frames), CONTEXT_ROWS, 512)
    features = features * valid[..., None]
    return features.reshape(len(frames), 32, 16, 16)  # row-major [16, 512] -> [32, 16, 16]


def make_batch(data: DemoData, frames: np.ndarray, generator: torch.Generator, reference_states=None):  # noqa: ANN001
    """(image input [B, 6, S, S], target [B, 3, S, S]) for these frames, on random templates."""
    frames_t = torch.from_numpy(frames).to(data.device)
    b = len(frames)
    templates = torch.randint(0, data.bare.shape[0], (b,), generator=generator, device="cpu").to(data.device)
    if reference_states is None:  # a random other mouth, so the generator cannot copy the reference's mouth
        reference_states = torch.randint(0, data.num_states, (b,), generator=generator).to(data.device)
    target = data.with_mouth(templates, data.target_states[frames_t])
    reference = data.with_mouth(templates, reference_states)
    masked = target * data.keep
    return torch.cat([reference, masked], dim=1), target, frames_t


def evaluate(encoder, generator_net, data: DemoData, frames: np.ndarray, batch: int = 128) -> dict:
    """Correlation of the generated mouth opening with the phoneme target, the reference mouth kept idle."""
    modes = (encoder.training, generator_net.training)
    encoder.eval()
    generator_net.eval()
    rng = torch.Generator().manual_seed(1)
    measured = []
    with torch.no_grad():
        for start in range(0, len(frames), batch):
            chunk = frames[start : start + batch]
            idle = torch.full((len(chunk),), data.idle_state, dtype=torch.long, device=data.device)
            image, _, frames_t = make_batch(data, chunk, rng, reference_states=idle)
            out = generator_net(image, audio_tensors(encoder, data, frames_t)).float().cpu().numpy()
            r0 = data.patch_origin[0]
            measured.append(mouth_opening(out, data.mouth_centre[0], (r0, r0 + data.colour.shape[2])))
    opening = np.concatenate(measured)
    target = data.targets[frames, 0]
    per_clip = {}
    for clip in np.unique(data.frame_clip[frames]):
        sel = data.frame_clip[frames] == clip
        per_clip[int(clip)] = pearson(opening[sel], target[sel])
    encoder.train(modes[0])
    generator_net.train(modes[1])
    return {"r_all": pearson(opening, target), "r_per_clip": per_clip}


def resolve_device(name: str) -> torch.device:
    """The torch device for a --device value: cuda when present for "auto", else the CPU; others as given."""
    return torch.device(name if name != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """A plain state dict on the CPU, written beside and renamed, so a run cut off mid-write leaves the last one."""
    partial = path.with_name(path.name + ".partial")
    torch.save({k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, partial)
    partial.replace(path)


def train(args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    rng = torch.Generator().manual_seed(args.seed)
    np_rng = np.random.default_rng(args.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    data = DemoData(Path(args.data), device)
    encoder = AudioEncoderAVE().to(device)
    generator_net = UNetGenerator(size=160, width=args.width).to(device)
    initial_encoder = {k: v.detach().cpu().clone() for k, v in encoder.state_dict().items()}
    if args.init_encoder:  # strict, prefix-free keys, exactly as audio_visual_encoder.pth is stored
        encoder.load_state_dict(torch.load(args.init_encoder, map_location=device), strict=True)
    if args.init_generator:
        generator_net.load_state_dict(torch.load(args.init_generator, map_location=device), strict=True)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.freeze_encoder:
        encoder.eval().requires_grad_(False)  # eval: BatchNorm uses (and keeps) its running statistics
        save_weights(encoder, out_dir / "encoder.pth")
    params = list(generator_net.parameters()) + ([] if args.freeze_encoder else list(encoder.parameters()))
    optimiser = torch.optim.Adam(params, lr=args.lr)
    eval_frames = data.val_frames if len(data.val_frames) else data.train_frames
    val_before = evaluate(encoder, generator_net, data, eval_frames[: args.eval_frames]) if args.init_generator else None
    if val_before is not None:
        print(json.dumps({"val_before": val_before["r_all"]}), flush=True)
    r0, c0 = data.patch_origin
    h, w = data.colour.shape[2:]
    log, step, started = [], 0, time.time()
    budget_s = args.minutes * 60.0
    use_amp = device.type == "cuda"
    last_checkpoint = started
    while True:
        elapsed = time.time() - started
        progress = max(step / args.steps if args.steps else 0.0, elapsed / budget_s if budget_s else 0.0)
        if progress >= 1.0:
            break
        lr = args.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))
        if step < args.warmup_steps:  # fresh Adam moments on trained weights: ramp up instead of jolting them
            lr *= (step + 1) / args.warmup_steps
        for group in optimiser.param_groups:
            group["lr"] = lr
        frames = np_rng.choice(data.train_frames, size=args.batch)
        image, target, frames_t = make_batch(data, frames, rng)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            with torch.set_grad_enabled(not args.freeze_encoder):
                audio = audio_tensors(encoder, data, frames_t)
            out = generator_net(image, audio)
        out = out.float()
        loss_all = F.l1_loss(out, target)
        loss_mouth = F.l1_loss(out[:, :, r0 : r0 + h, c0 : c0 + w], target[:, :, r0 : r0 + h, c0 : c0 + w])
        loss = loss_all + args.mouth_weight * loss_mouth
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        step += 1
        if step % args.log_every == 0 or step == 1:
            entry = {"step": step, "seconds": round(time.time() - started, 1), "lr": lr,
                     "loss": float(loss), "loss_mouth": float(loss_mouth)}
            log.append(entry)
            print(json.dumps(entry), flush=True)
        if args.checkpoint_every and time.time() - last_checkpoint >= args.checkpoint_every:
            save_weights(generator_net, out_dir / "generator.pth")  # a run cut off still leaves recent weights
            if not args.freeze_encoder:
                save_weights(encoder, out_dir / "encoder.pth")
            (out_dir / "checkpoint.json").write_text(json.dumps({"step": step, "seconds": round(time.time() - started, 1)}))
            last_checkpoint = time.time()
    result = {
        "steps": step,
        "seconds": round(time.time() - started, 1),
        "device": str(torch.cuda.get_device_name(0)) if device.type == "cuda" else "cpu",
        "width": args.width,
        "batch": args.batch,
        "encoder_params": count_parameters(encoder),
        "generator_params": count_parameters(generator_net),
        "log": log,
    }
    if args.init_generator:
        result["finetune"] = {
            "init_encoder": Path(args.init_encoder).name if args.init_encoder else None,
            "init_generator": Path(args.init_generator).name,
            "encoder_frozen": bool(args.freeze_encoder),
            "lr": args.lr,
            "warmup_steps": args.warmup_steps,
            "reason": "the generator input's mask is now exactly the reference's (150x145 at 160 px, was 151x146)",
            "val_before": val_before,
        }
    result["val"] = evaluate(encoder, generator_net, data, eval_frames[: args.eval_frames])
    stride = max(1, len(data.train_frames) // args.eval_frames)
    result["train_subset"] = evaluate(encoder, generator_net, data, data.train_frames[::stride][: args.eval_frames])
    with torch.no_grad():  # the bug's symptom, measured here: feature ranges of trained vs initial weights
        windows = data.mel_windows(torch.arange(0, len(data.window_starts), 7, device=device))
        encoder.eval()
        trained_range = encoder(windows).float()
        fresh = AudioEncoderAVE().to(device).eval()
        fresh.load_state_dict(initial_encoder)
        initial_range = fresh(windows).float()
    result["features_trained"] = [float(trained_range.min()), float(trained_range.max()), float(trained_range.mean())]
    result["features_initial"] = [float(initial_range.min()), float(initial_range.max()), float(initial_range.mean())]
    save_weights(encoder, out_dir / "encoder.pth")
    torch.save(initial_encoder, out_dir / "encoder_initial.pth")
    save_weights(generator_net, out_dir / "generator.pth")
    (out_dir / "train_log.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "log"}), flush=True)
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--minutes", type=float, default=0.0, help="time budget (0: use --steps only)")
    parser.add_argument("--steps", type=int, default=0, help="step budget (0: use --minutes only)")
    parser.add_argument("--batch", type=int, default=64)  # the shipped bundle's
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--mouth-weight", type=float, default=4.0)
    parser.add_argument("--log-every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-frames", type=int, default=3000, help="at most this many frames per evaluation")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--init-encoder", default=None, help="start the encoder from this state dict")
    parser.add_argument("--init-generator", default=None, help="start the generator from this state dict (fine-tune)")
    parser.add_argument("--freeze-encoder", action="store_true", help="train the generator only; encoder in eval mode")
    parser.add_argument("--warmup-steps", type=int, default=0, help="linear learning-rate ramp over these steps")
    parser.add_argument("--checkpoint-every", type=float, default=0.0,
                        help="seconds between checkpoints of the weights in --out (0: only at the end)")
    args = parser.parse_args(argv)
    if not args.minutes and not args.steps:
        parser.error("give --minutes or --steps")
    return args


if __name__ == "__main__":
    train(parse_args())
