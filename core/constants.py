"""The numbers every stage agrees on (PIPELINE.md stages 1-4), in one place so no module keeps its own copy."""

from __future__ import annotations

SAMPLE_RATE = 16000  # Hz, after resampling
HOP_LENGTH = 200  # samples between mel frames: 80 mel frames a second
MEL_BANDS = 80
MEL_FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH
VIDEO_FPS = 25
WINDOW_FRAMES = 16  # mel frames per encoder window
FEATURE_WIDTH = 512  # encoder output per window
CONTEXT_ROWS = 8  # audio tensor of frame i: padded feature rows [i - 8, i + 8)
AUDIO_TENSOR_SHAPE = (32, 16, 16)
