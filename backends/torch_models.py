"""PyTorch definitions of the SyncTalk_2D audio encoder (AVE) and its U-Net generator family.

Written from the published layer facts (PIPELINE.md stages 3 and 5) so that, at width 1.0, real SyncTalk_2D
checkpoints load *strictly* into these modules: the attribute names below are chosen to reproduce the state-dict
keys of those checkpoints ("0.conv_block.0.weight", "audio_model.conv1.conv.0.weight", "down1.maxpool_conv.0...").
A width multiplier shrinks every image-path and audio-branch channel count so the demo bundle can ship a generator
that runs in real time on a laptop CPU while keeping the same topology.

torch is imported at module level on purpose: this module is only imported where torch is wanted (the torch
backend, the demo build), never by the Qt-free core that must run without torch.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

ENCODER_PREFIX = "audio_encoder."
AUDIO_TENSOR_CHANNELS = 32  # stage 4: 16 feature rows x 512 reshaped to [32, 16, 16]
PUBLISHED_CHANNELS = (32, 64, 128, 256, 512)
SUPPORTED_SIZES = (160, 320)


# ---------------------------------------------------------------------------------------------------------------
# Stage 3: the AVE audio encoder
# ---------------------------------------------------------------------------------------------------------------


class AveConvBlock(nn.Module):
    """conv(bias) -> BatchNorm -> (+ input) -> ReLU; the attribute name ``conv_block`` fixes the checkpoint keys."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int | tuple[int, int],
        padding: int,
        residual: bool = False,
    ) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=True),
            nn.BatchNorm2d(out_channels),
        )
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return F.relu(out)


# (cin, cout, kernel, stride, padding, residual) for the 13 blocks of PIPELINE.md stage 3.
AVE_LAYOUT: tuple[tuple[int, int, int, int | tuple[int, int], int, bool], ...] = (
    (1, 32, 3, 1, 1, False),
    (32, 32, 3, 1, 1, True),
    (32, 32, 3, 1, 1, True),
    (32, 64, 3, (3, 1), 1, False),
    (64, 64, 3, 1, 1, True),
    (64, 64, 3, 1, 1, True),
    (64, 128, 3, 3, 1, False),
    (128, 128, 3, 1, 1, True),
    (128, 128, 3, 1, 1, True),
    (128, 256, 3, (3, 2), 1, False),
    (256, 256, 3, 1, 1, True),
    (256, 512, 3, 1, 0, False),
    (512, 512, 1, 1, 0, False),
)


class AudioEncoderAVE(nn.Sequential):
    """Mel window [B, 1, 80, 16] -> features [B, 512] (all >= 0: the last block ends in a ReLU).

    A plain nn.Sequential so the state-dict keys carry no prefix, exactly like audio_visual_encoder.pth.
    """

    def __init__(self) -> None:
        super().__init__(*(AveConvBlock(*spec) for spec in AVE_LAYOUT))

    def forward(self, mel_windows: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        features = super().forward(mel_windows)
        return features.flatten(1)  # [B, 512, 1, 1] -> [B, 512]


def load_encoder_state(model: AudioEncoderAVE, state_dict: Mapping[str, torch.Tensor]) -> AudioEncoderAVE:
    """Load an AVE checkpoint strictly, with or without the reference code's "audio_encoder." prefix.

    A partial load is exactly the bug this project exists to expose (a Core ML conversion that filtered keys by a
    prefix they did not have and loaded with strict=False kept random weights), so any missing or unexpected key
    is an error that names the keys.
    """
    from core.errors import InputError

    if any(key.startswith(ENCODER_PREFIX) for key in state_dict):
        state_dict = {
            (key[len(ENCODER_PREFIX):] if key.startswith(ENCODER_PREFIX) else key): value
            for key, value in state_dict.items()
        }
    expected = set(model.state_dict().keys())
    found = set(state_dict.keys())
    missing = sorted(expected - found)
    unexpected = sorted(found - expected)
    if missing or unexpected:
        raise InputError(
            "AVE encoder checkpoint: expected the 13-block keys '0.conv_block.0.weight' ... "
            f"'12.conv_block.1.num_batches_tracked' ({len(expected)} keys), found {len(found)} keys; "
            f"missing {len(missing)}: {_preview(missing)}; unexpected {len(unexpected)}: {_preview(unexpected)}"
        )
    try:
        model.load_state_dict(dict(state_dict), strict=True)
    except RuntimeError as error:  # shape mismatches: same keys, different tensors
        raise InputError(f"AVE encoder checkpoint: tensors do not fit the AVE layout: {error}") from error
    return model


def _preview(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(repr(k) for k in keys[:limit])
    return f"[{shown}{', ...' if len(keys) > limit else ''}]"


# ---------------------------------------------------------------------------------------------------------------
# Stage 5: the MobileNetV2 inverted-residual U-Net generator
# ---------------------------------------------------------------------------------------------------------------


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand -> 3x3 depthwise (stride) -> 1x1 project, BN after each, optional skip."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, residual: bool, expand_ratio: int = 2):
        super().__init__()
        hidden = in_channels * expand_ratio
        self.use_res_connect = residual
        # Indices 0..7 of this Sequential are the checkpoint keys "conv.0.weight" ... "conv.7.running_var".
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1, 1, 0, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_channels, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_res_connect else out


class DoubleConvDW(nn.Module):
    """Two inverted residuals: the first changes channels (and may stride), the second refines with a skip."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.double_conv = nn.Sequential(
            InvertedResidual(in_channels, out_channels, stride, residual=False),
            InvertedResidual(out_channels, out_channels, 1, residual=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.double_conv(x)


class InConvDW(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.inconv = nn.Sequential(InvertedResidual(in_channels, out_channels, 1, residual=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inconv(x)


class Down(nn.Module):
    """Halves the resolution with a strided depthwise block (the reference names it maxpool_conv, without a pool)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.maxpool_conv = nn.Sequential(DoubleConvDW(in_channels, out_channels, stride=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool_conv(x)


class Up(nn.Module):
    """Bilinear x2 upsampling (align_corners=True), concatenation with the skip, then a DoubleConvDW."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = DoubleConvDW(in_channels, out_channels, stride=1)

    def forward(self, below: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        below = F.interpolate(below, scale_factor=2.0, mode="bilinear", align_corners=True)
        return self.conv(torch.cat([below, skip], dim=1))


class OutConv(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class AudioConvAve(nn.Module):
    """Audio tensor [B, 32, 16, 16] -> [B, c4, 10, 10], matching the image bottleneck of both sizes."""

    def __init__(self, ch: tuple[int, int, int, int, int]) -> None:
        super().__init__()
        self.conv1 = InvertedResidual(AUDIO_TENSOR_CHANNELS, ch[1], 1, residual=False)
        self.conv2 = InvertedResidual(ch[1], ch[2], 1, residual=False)
        self.conv3 = nn.Conv2d(ch[2], ch[3], kernel_size=3, padding=1, stride=1)
        self.bn3 = nn.BatchNorm2d(ch[3])
        self.conv4 = InvertedResidual(ch[3], ch[3], 1, residual=True)
        # 16 + 2*3 - 3 = 19, /2 + 1 = 10: the padding of 3 is what makes 16x16 meet the 10x10 bottleneck.
        self.conv5 = nn.Conv2d(ch[3], ch[4], kernel_size=3, padding=3, stride=2)
        self.bn5 = nn.BatchNorm2d(ch[4])
        self.conv6 = InvertedResidual(ch[4], ch[4], 1, residual=True)
        self.conv7 = InvertedResidual(ch[4], ch[4], 1, residual=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.conv1(x))
        x = F.relu(self.bn3(self.conv3(x)))
        x = self.conv4(x)
        x = F.relu(self.bn5(self.conv5(x)))
        return self.conv7(self.conv6(x))


def scaled_channels(width: float) -> tuple[int, int, int, int, int]:
    """The five channel counts at a width multiplier (1.0 gives the published 32/64/128/256/512).

    Rounded to even numbers so the halved up-path widths (c3 // 2 ...) stay whole, and never below 4.
    """
    if width <= 0:
        raise ValueError(f"width multiplier: expected > 0, found {width}")
    return tuple(max(4, int(round(c * width / 2.0)) * 2) for c in PUBLISHED_CHANNELS)  # type: ignore[return-value]


class UNetGenerator(nn.Module):
    """SyncTalk_2D generator: image [B, 6, S, S] + audio [B, 32, 16, 16] -> image [B, 3, S, S] in [0, 1].

    size 160 has four down/up stages (the Ultralight "unet.py" layout); size 320 has five (the "unet_328.py"
    layout, whose first Down keeps c0 channels and whose extra Up ends at c0 // 2). Both reach a 10x10 bottleneck
    where the audio branch is concatenated.
    """

    def __init__(self, size: int = 160, width: float = 1.0, image_channels: int = 6) -> None:
        super().__init__()
        if size not in SUPPORTED_SIZES:
            raise ValueError(f"generator size: expected one of {SUPPORTED_SIZES}, found {size}")
        self.size = size
        self.width = width
        ch = scaled_channels(width)
        self.audio_model = AudioConvAve(ch)
        self.fuse_conv = nn.Sequential(
            DoubleConvDW(ch[4] * 2, ch[4], stride=1),
            DoubleConvDW(ch[4], ch[3], stride=1),
        )
        self.inc = InConvDW(image_channels, ch[0])
        if size == 160:
            down_channels = [(ch[0], ch[1]), (ch[1], ch[2]), (ch[2], ch[3]), (ch[3], ch[4])]
            up_channels = [(ch[4], ch[3] // 2), (ch[3], ch[2] // 2), (ch[2], ch[1] // 2), (ch[1], ch[0])]
            out_in = ch[0]
        else:
            down_channels = [(ch[0], ch[0]), (ch[0], ch[1]), (ch[1], ch[2]), (ch[2], ch[3]), (ch[3], ch[4])]
            up_channels = [
                (ch[4], ch[3] // 2),
                (ch[3], ch[2] // 2),
                (ch[2], ch[1] // 2),
                (ch[1], ch[0]),
                (ch[1], ch[0] // 2),
            ]
            out_in = ch[0] // 2
        # Registered as down1.., up1.. (not a ModuleList) because those are the checkpoint key names.
        self.num_levels = len(down_channels)
        for level, (cin, cout) in enumerate(down_channels, start=1):
            setattr(self, f"down{level}", Down(cin, cout))
        for level, (cin, cout) in enumerate(up_channels, start=1):
            setattr(self, f"up{level}", Up(cin, cout))
        self.outc = OutConv(out_in, 3)

    def forward(self, image: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        skips = [self.inc(image)]
        for level in range(1, self.num_levels + 1):
            skips.append(getattr(self, f"down{level}")(skips[-1]))
        bottleneck = torch.cat([skips.pop(), self.audio_model(audio)], dim=1)
        x = self.fuse_conv(bottleneck)
        for level in range(1, self.num_levels + 1):
            x = getattr(self, f"up{level}")(x, skips.pop())
        return torch.sigmoid(self.outc(x))


def count_parameters(model: nn.Module) -> int:
    """Trainable parameter count (BatchNorm running statistics are buffers, not parameters)."""
    return sum(p.numel() for p in model.parameters())
