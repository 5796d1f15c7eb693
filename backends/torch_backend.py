"""PyTorch encoder and generator: SyncTalk_2D .pth checkpoints in the project's own definitions of the networks.

Loading is strict on purpose. The bug this project was started for was a conversion that loaded a checkpoint with
strict=False after filtering its keys by a prefix they did not have, and so kept random weights without a word; here
any key left unmatched, on either side, is an InputError that names the keys. The generator's size (160 or 320) and
width multiplier are read from the tensors' shapes, so the user does not have to know them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from core.errors import InputError

from core.constants import FEATURE_WIDTH
from core.interfaces import Provenance, checked_generator_inputs, checked_windows

ENCODER_BATCH = 256
GENERATOR_BATCH = 4  # CPU: images are 6x320x320 floats, keep peaks modest
GPU_GENERATOR_BATCH = 16  # a GPU is far from busy with 4 frames; 16 a call is where throughput levels off
DEVICES = ("auto", "cuda", "mps", "cpu")
NESTED_STATE_KEYS = ("state_dict", "model", "net", "generator")
DATA_PARALLEL_PREFIX = "module."


def _torch() -> Any:
    try:
        import torch
    except ImportError as error:
        raise InputError("PyTorch checkpoints need the optional 'torch' extra: pip install -e '.[torch]'") from error
    return torch


def load_state_dict(path: str | Path) -> dict[str, Any]:
    """The tensors of a .pth/.pt file: a plain state dict, or one nested under a usual key ("state_dict", ...)."""
    torch = _torch()
    path = Path(path)
    if not path.is_file():
        raise InputError(f"PyTorch checkpoint: expected a .pth/.pt file, found nothing at {path}")
    size = path.stat().st_size
    if size == 0:
        raise InputError(f"PyTorch checkpoint {path}: expected a state dict saved with torch.save, found an empty file "
                         "(0 bytes)")
    try:
        loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:
        raise InputError(f"PyTorch checkpoint {path}: expected a state dict of tensors saved with torch.save, found "
                         f"{_describe_load_error(error, size)}") from error
    if isinstance(loaded, Mapping):
        for key in NESTED_STATE_KEYS:
            if isinstance(loaded.get(key), Mapping):
                loaded = loaded[key]
                break
    if not isinstance(loaded, Mapping) or not loaded or not all(hasattr(v, "shape") for v in loaded.values()):
        raise InputError(f"PyTorch checkpoint {path.name}: expected a mapping of tensor names to tensors, found {type(loaded).__name__}")
    state = dict(loaded)
    if all(k.startswith(DATA_PARALLEL_PREFIX) for k in state):  # saved from nn.DataParallel
        state = {k[len(DATA_PARALLEL_PREFIX):]: v for k, v in state.items()}
    return state


def _describe_load_error(error: Exception, size: int) -> str:
    """torch.load's error as one line for a user: its first sentence, without the advice to unpickle arbitrary code
    (weights_only=False), which is exactly what this app refuses to do with a file it did not make."""
    text = str(error).strip()
    if "weights_only" in text or "Weights only load failed" in text or "Unsupported global" in text:
        # The pickle names a class or function; loading it would run code from the file.
        detail = next((line.strip() for line in text.splitlines() if "GLOBAL" in line or "Unsupported" in line), "")
        detail = detail.split(" which ")[0].split(". ")[0].rstrip(".")
        return ("a pickle that needs Python code to load (refused: only tensors are read" +
                (f"; {detail}" if detail else "") + ")")
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if not first:
        first = type(error).__name__
    return f"{size} bytes torch cannot read as a checkpoint ({first[:200]})"


def infer_generator_layout(state: Mapping[str, Any]) -> tuple[int, float]:
    """(size, width) of a generator state dict: 320 has a fifth down stage, width is the first conv's channels / 32.

    inc.inconv.0.conv.6.weight is the first block's projection [c0, hidden, 1, 1]; c0 is 32 at full width.
    """
    key = "inc.inconv.0.conv.6.weight"
    if key not in state:
        raise InputError(
            f"generator checkpoint: expected SyncTalk_2D U-Net keys such as {key!r}, found "
            f"{_preview(sorted(state))}"
        )
    size = 320 if any(k.startswith("down5.") for k in state) else 160
    width = int(state[key].shape[0]) / 32.0
    return size, width


def is_encoder_state(state: Mapping[str, Any]) -> bool:
    return any(k.endswith("0.conv_block.0.weight") for k in state)


def build_encoder(state: Mapping[str, Any]) -> Any:
    """An AudioEncoderAVE holding exactly these weights (the "audio_encoder." prefix is accepted), in eval mode."""
    from .torch_models import AudioEncoderAVE, load_encoder_state

    return load_encoder_state(AudioEncoderAVE(), state).eval()


def build_generator(state: Mapping[str, Any], size: int | None = None, width: float | None = None) -> Any:
    """A UNetGenerator of the size and width the tensors say (or those given), loaded strictly, in eval mode."""
    from .torch_models import UNetGenerator

    inferred_size, inferred_width = infer_generator_layout(state)
    size = int(size or inferred_size)
    width = float(width or inferred_width)
    try:
        model = UNetGenerator(size=size, width=width)
    except ValueError as error:
        raise InputError(f"generator checkpoint: {error}") from error
    expected = set(model.state_dict())
    found = set(state)
    missing, unexpected = sorted(expected - found), sorted(found - expected)
    if missing or unexpected:
        raise InputError(
            f"generator checkpoint (size {size}, width {width:g}): expected {len(expected)} keys, found {len(found)}; "
            f"missing {len(missing)}: {_preview(missing)}; unexpected {len(unexpected)}: {_preview(unexpected)}"
        )
    try:
        model.load_state_dict(dict(state), strict=True)
    except RuntimeError as error:
        raise InputError(f"generator checkpoint (size {size}, width {width:g}): tensors do not fit: {error}") from error
    return model.eval()


def _preview(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(repr(k) for k in keys[:limit])
    return f"[{shown}{', ...' if len(keys) > limit else ''}]"


def available_devices() -> list[str]:
    """The devices this torch build can run on here, best first: cuda, mps, cpu."""
    torch = _torch()
    found = []
    if torch.cuda.is_available():
        found.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    return found + ["cpu"]


def resolve_device(device: str | None) -> str:
    """'auto' (or None) -> the best device present; 'cuda' / 'mps' / 'cpu' when present, else an InputError."""
    wanted = "auto" if device is None else str(device).strip().lower()
    if wanted not in DEVICES:
        raise InputError(f"PyTorch device: expected one of {', '.join(DEVICES)}, found {device!r}")
    available = available_devices()
    if wanted == "auto":
        return available[0]
    if wanted not in available:
        raise InputError(f"PyTorch device {wanted!r} is not available with this torch build on this machine; "
                         f"expected one of {', '.join(available + ['auto'])}")
    return wanted


def describe_device(device: str) -> str:
    """'cuda (NVIDIA H200)', 'mps', 'cpu': what the provenance shows."""
    if device == "cuda":
        return f"cuda ({_torch().cuda.get_device_name(0)})"
    return device


def _provenance(path: Path, details: dict[str, str], device: str = "cpu", requested: str | None = None
                ) -> Provenance:
    torch = _torch()
    details = {**details, "device requested": requested or "auto"}
    return Provenance("torch", torch.__version__.split("+")[0], describe_device(device), "fp32", str(path), details)


def _set_threads(threads: int | None) -> None:
    if threads:
        _torch().set_num_threads(int(threads))


class TorchEncoder:
    """Mel windows [B,1,80,16] -> features [B,512] with the AVE encoder of a .pth checkpoint."""

    def __init__(self, path: str | Path, threads: int | None = None, device: str | None = None) -> None:
        self.path = Path(path)
        _set_threads(threads)
        self.device = resolve_device(device)
        state = load_state_dict(self.path)
        if not is_encoder_state(state) and "inc.inconv.0.conv.6.weight" in state:
            raise InputError(f"encoder {self.path.name}: expected an AVE encoder checkpoint, found a generator checkpoint")
        self.model = build_encoder(state).to(self.device)
        self.provenance = _provenance(self.path, {"architecture": "AudioEncoderAVE"}, self.device, device)

    def encode(self, windows: np.ndarray) -> np.ndarray:
        torch = _torch()
        windows = np.ascontiguousarray(checked_windows(windows, f"encoder {self.path.name}"), dtype=np.float32)
        parts = []
        with torch.inference_mode():
            for start in range(0, len(windows), ENCODER_BATCH):
                batch = torch.from_numpy(windows[start:start + ENCODER_BATCH]).to(self.device)
                parts.append(self.model(batch).cpu().numpy())
        return np.concatenate(parts) if parts else np.zeros((0, FEATURE_WIDTH), np.float32)


class TorchGenerator:
    """Image [B,6,S,S] + audio [B,32,16,16] -> image [B,3,S,S] with the U-Net of a .pth checkpoint."""

    def __init__(self, path: str | Path, threads: int | None = None, size: int | None = None,
                 width: float | None = None, device: str | None = None) -> None:
        self.path = Path(path)
        _set_threads(threads)
        self.device = resolve_device(device)
        state = load_state_dict(self.path)
        if is_encoder_state(state):
            raise InputError(f"generator {self.path.name}: expected a U-Net generator checkpoint, found an AVE encoder checkpoint")
        self.model = build_generator(state, size, width).to(self.device)
        self.size = int(self.model.size)
        # Pre-render and exports hand over many frames at once: on a GPU they go through in calls of 16.
        self.batch = GENERATOR_BATCH if self.device == "cpu" else GPU_GENERATOR_BATCH
        self.provenance = _provenance(self.path, {"architecture": f"UNetGenerator size {self.size} width {self.model.width:g}"},
                                      self.device, device)

    def generate(self, image: np.ndarray, audio: np.ndarray) -> np.ndarray:
        torch = _torch()
        s = self.size
        image, audio = checked_generator_inputs(image, audio, s, f"generator {self.path.name}")
        # Lanes hand over their shared, read-only prepared inputs; torch.from_numpy wants writable memory (it warns
        # otherwise), so a read-only batch is copied (0.6 MB a 160 px frame) rather than shared with the model.
        image = np.require(image, np.float32, ["C_CONTIGUOUS", "WRITEABLE"])
        audio = np.require(audio, np.float32, ["C_CONTIGUOUS", "WRITEABLE"])
        parts = []
        with torch.inference_mode():
            for start in range(0, len(image), self.batch):
                stop = start + self.batch
                images = torch.from_numpy(image[start:stop]).to(self.device)
                audios = torch.from_numpy(audio[start:stop]).to(self.device)
                parts.append(self.model(images, audios).cpu().numpy())
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _options(options: Mapping[str, Any] | None, allowed: tuple[str, ...], role: str) -> dict[str, Any]:
    options = {k: v for k, v in dict(options or {}).items() if v is not None}
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise InputError(f"PyTorch {role} options: expected some of {', '.join(allowed)}, found {', '.join(unknown)}")
    return options


def open_torch_encoder(path: str | Path, options: Mapping[str, Any] | None = None) -> TorchEncoder:
    """Registry entry point for .pth/.pt encoders."""
    return TorchEncoder(path, **_options(options, ("threads", "device"), "encoder"))


def open_torch_generator(path: str | Path, options: Mapping[str, Any] | None = None) -> TorchGenerator:
    """Registry entry point for .pth/.pt generators; options may fix size and width instead of inferring them."""
    return TorchGenerator(path, **_options(options, ("threads", "size", "width", "device"), "generator"))
