"""Rebuild the demo bundle (resources/demo/) from nothing: speech, avatar, training data, training, exports.

    python tools/build_demo.py                      # everything; trains here (a GPU is strongly advised)
    python tools/build_demo.py --stage prepare      # data only -> .demo_work/train.npz (carry it to a GPU box)
    python tools/build_demo.py --stage train        # on the GPU (needs only torch, numpy and this repo)
    python tools/build_demo.py --stage export       # exports from .demo_work/trained into resources/demo
    python tools/build_demo.py --smoke              # a few CPU steps and every export, into a temporary folder
    python tools/build_demo.py --stage finetune     # the shipped generator, encoder frozen -> .demo_work/finetuned
    python tools/build_demo.py --stage export-generator   # only the generator's files (+ aud_ave.npy, manifest)

Needs the dev extra (torch, coremltools) and libespeak-ng. docs/DEMO.md says how long each stage takes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

WORK = ROOT / ".demo_work"
BUNDLE = ROOT / "resources" / "demo"
FULL = {"clips": 84, "val_clips": 6, "templates": 100, "minutes": 7.0, "steps": 0, "batch": 64, "eval_frames": 3000}
SMOKE = {"clips": 2, "val_clips": 1, "templates": 6, "minutes": 0.0, "steps": 2, "batch": 2, "eval_frames": 8}
# Fine-tune of the shipped generator (issue 8: its input mask lost one column and one row). On a GPU: 2 minutes.
FINETUNE = {"minutes": 2.0, "steps": 0, "batch": 64, "lr": 2e-4, "warmup_steps": 50, "eval_frames": 3000,
            "checkpoint_every": 20.0}
WIDTH = 0.5  # 3.09 M parameters, about 15 ms per frame with 2 threads on a 2-core laptop CPU


def run_prepare(work: Path, sizes: dict) -> dict:
    from tools.demo.dataset import build_training_set  # here, so the train stage needs only torch and numpy

    work.mkdir(parents=True, exist_ok=True)
    return build_training_set(work / "train.npz", sizes["clips"], sizes["val_clips"], sizes["templates"])


def run_train(work: Path, sizes: dict, device: str) -> dict:
    from tools.demo.train import parse_args, resolve_device, train

    if resolve_device(device).type == "cpu" and sizes["minutes"] >= 1:
        print(f"[build_demo] training on the CPU: {sizes['minutes']:g} minutes give far fewer steps than on a GPU "
              "(3,653 on one H100), so the lip sync of this bundle will be weaker", file=sys.stderr, flush=True)
    argv = ["--data", str(work / "train.npz"), "--out", str(work / "trained"), "--batch", str(sizes["batch"]),
            "--width", str(WIDTH), "--eval-frames", str(sizes["eval_frames"]), "--device", device,
            "--minutes", str(sizes["minutes"]), "--steps", str(sizes["steps"])]
    return train(parse_args(argv))


def run_finetune(work: Path, bundle: Path, settings: dict, device: str) -> dict:
    """Generator from bundle/models/generator.pth, encoder frozen at bundle/models/audio_visual_encoder.pth."""
    from tools.demo.train import parse_args, train

    models = bundle / "models"
    argv = ["--data", str(work / "train.npz"), "--out", str(work / "finetuned"), "--batch", str(settings["batch"]),
            "--width", str(WIDTH), "--eval-frames", str(settings["eval_frames"]), "--device", device,
            "--minutes", str(settings["minutes"]), "--steps", str(settings["steps"]), "--lr", str(settings["lr"]),
            "--warmup-steps", str(settings["warmup_steps"]), "--checkpoint-every", str(settings["checkpoint_every"]),
            "--init-encoder", str(models / "audio_visual_encoder.pth"), "--init-generator",
            str(models / "generator.pth"), "--freeze-encoder"]
    return train(parse_args(argv))


def run_export_generator(work: Path, bundle: Path) -> dict:
    from tools.demo.export import export_generator

    log_path = work / "finetuned" / "train_log.json"
    return export_generator(work / "finetuned", bundle, WIDTH, json.loads(log_path.read_text()))


def run_export(work: Path, bundle: Path, sizes: dict) -> dict:
    from tools.demo.export import export_bundle

    log_path = work / "trained" / "train_log.json"
    log = json.loads(log_path.read_text()) if log_path.exists() else None
    return export_bundle(work / "trained", bundle, WIDTH, sizes["templates"], log)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=("all", "prepare", "train", "export", "finetune", "export-generator"),
                        default="all")
    parser.add_argument("--smoke", action="store_true", help="tiny data, 2 CPU steps, all exports, temp folder")
    parser.add_argument("--work", type=Path, default=None, help=f"working folder (default {WORK})")
    parser.add_argument("--out", type=Path, default=None, help=f"bundle folder (default {BUNDLE})")
    parser.add_argument("--minutes", type=float, default=None, help="training time budget")
    parser.add_argument("--device", default="auto", help="torch device for training (auto: cuda if present)")
    parser.add_argument("--steps", type=int, default=None, help="finetune: step budget (0: the time budget only)")
    parser.add_argument("--batch", type=int, default=None, help=f"finetune: batch (default {FINETUNE['batch']})")
    parser.add_argument("--lr", type=float, default=None, help=f"finetune: peak learning rate ({FINETUNE['lr']})")
    parser.add_argument("--warmup-steps", type=int, default=None, help="finetune: learning-rate ramp")
    parser.add_argument("--eval-frames", type=int, default=None, help="finetune: frames per evaluation")
    args = parser.parse_args(argv)
    sizes = dict(SMOKE if args.smoke else FULL)
    if args.minutes is not None:
        sizes["minutes"] = args.minutes
    finetune = dict(FINETUNE)
    if args.smoke:
        finetune.update(minutes=0.0, steps=2, batch=2, eval_frames=8, warmup_steps=0, checkpoint_every=0.0)
    for key in ("minutes", "steps", "batch", "lr", "warmup_steps", "eval_frames"):
        if getattr(args, key) is not None:
            finetune[key] = getattr(args, key)
    temp = tempfile.TemporaryDirectory(prefix="demo_smoke_") if args.smoke and not args.work else None
    work = args.work or (Path(temp.name) / "work" if temp else WORK)
    bundle = args.out or (Path(temp.name) / "bundle" if temp else BUNDLE)
    stages = ("prepare", "train", "export") if args.stage == "all" else (args.stage,)
    report: dict = {"work": str(work), "bundle": str(bundle), "stages": {}}
    for stage in stages:
        started = time.time()
        if stage == "prepare":
            result = run_prepare(work, sizes)
        elif stage == "train":
            result = {k: v for k, v in run_train(work, sizes, args.device).items() if k != "log"}
        elif stage == "finetune":
            result = {k: v for k, v in run_finetune(work, bundle, finetune, args.device).items() if k != "log"}
        elif stage == "export-generator":
            result = run_export_generator(work, bundle)
        else:
            result = run_export(work, bundle, sizes)
        report["stages"][stage] = {"seconds": round(time.time() - started, 1), "result": result}
        print(f"[build_demo] {stage}: {report['stages'][stage]['seconds']} s", flush=True)
    print(json.dumps(report, default=str))
    if temp is not None:
        temp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
