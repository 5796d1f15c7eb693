"""Training data and the demo clip: spoken clips, their mel spectrograms and mouth targets, the avatar's crops.

Everything the GPU needs travels as one compact .npz (mel in fp16, not the 5x larger overlapping windows; the mouth
drawings as a small table of layers), so the training machine needs only numpy and torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.crop import crop_box_from_landmarks, mask_crop, prepare_input
from pipeline.mel import melspectrogram
from pipeline.windows import num_windows, window_starts
from tools.demo import face
from tools.demo.speech import SAMPLE_RATE, Utterance, concatenate, silence, synthesize
from tools.demo.visemes import mouth_track

SIZE = 160
TRAIN_VOICES = ("en-us", "en", "en-us+f2", "en+m3", "en-us+f4", "en+m2", "en-029")
HELD_OUT_VOICE = "en-us+f3"  # neither trained on nor used for anything but validation and the demo clip
OPENING_STEPS = 21  # mouth layer table: openings 0, 0.05, .., 1
WIDTH_STEPS = 11  # widths 0, 0.1, .., 1
PATCH_ROWS = slice(36, 116)  # where the mouth can appear in the 160 px crop (checked when the table is built)
PATCH_COLS = slice(28, 132)

WORDS = (
    "apple mother baby father open wide bright moon blue boat water paper pepper summer window yellow "
    "table little people music happy after over under every evening morning orange coffee cheese "
    "about around again always answer beautiful because before better between bottle bubble butter "
    "cat dog fish bird house mouse road river mountain valley ocean island garden flower forest "
    "think thank three throw through free tree green queen sleep eat meet feet seat "
    "book look good food moon soon room too you who blue shoe two new view "
    "car star far are hard part start heart dark park arm farm "
    "fly high sky my eye why buy time line fine nine five "
    "go no show slow boat coat road home phone stone alone "
    "yes let red bed head bread friend said many any "
    "we will well wait way wet wood work world word"
).split()

DEMO_SENTENCES = (
    "Hello, and welcome to the lip sync comparison.",
    "Watch the mouth open wide, then close for the pause.",
    "Boats float on blue water, and people eat cheese.",
)
DEMO_WORDS_PER_MINUTE = 145
DEMO_PAUSES_S = (0.35, 0.8, 0.7, 0.5)  # before, between, and after the sentences


@dataclass
class Clip:
    utterance: Utterance
    voice: str
    words_per_minute: int


def random_clip(rng: np.random.Generator, voice: str) -> Clip:
    """One to three random-word sentences with pauses of 0.15-0.6 s, at 120-190 words per minute."""
    rate = int(rng.integers(120, 191))
    parts = [silence(float(rng.uniform(0.1, 0.4)))]
    for _ in range(int(rng.integers(1, 4))):
        words = rng.choice(WORDS, size=int(rng.integers(4, 10)))
        parts.append(synthesize(" ".join(words) + ".", voice, rate, pitch=int(rng.integers(35, 70))))
        parts.append(silence(float(rng.uniform(0.15, 0.6))))
    return Clip(concatenate(parts), voice, rate)


def demo_utterance() -> Utterance:
    parts = [silence(DEMO_PAUSES_S[0])]
    for sentence, pause in zip(DEMO_SENTENCES, DEMO_PAUSES_S[1:]):
        parts += [synthesize(sentence, HELD_OUT_VOICE, DEMO_WORDS_PER_MINUTE), silence(pause)]
    return concatenate(parts)


def clip_arrays(utterance: Utterance) -> tuple[np.ndarray, np.ndarray]:
    """(mel [T, 80], mouth target [N + 2, 2]): one target per output frame of the lane (frame i at t = i / 25)."""
    mel = melspectrogram(utterance.samples)
    frames = num_windows(mel.shape[0]) + 2
    return mel, mouth_track(utterance.phonemes, utterance.duration_s, frames=frames)


def crop_geometry(frame_index: int = 0) -> tuple[float, float, float]:
    """(mouth centre x, y, pixel scale) in the 160 px crop space of a template frame.

    The crop is resized from (x2 - x1) to 168 pixels with a 4-pixel margin; the mapping of pixel centres is
    (x + 0.5) * 168 / w - 0.5 - 4.
    """
    box = crop_box_from_landmarks(face.landmarks(frame_index))
    dx, dy = face.head_offset(frame_index)
    mx = face.FACE_CENTRE[0] + dx + face.MOUTH_OFFSET[0]
    my = face.FACE_CENTRE[1] + dy + face.MOUTH_OFFSET[1]
    sx = (SIZE + 8) / (box.x2 - box.x1)
    sy = (SIZE + 8) / (box.y2 - box.y1)
    return (mx - box.x1 + 0.5) * sx - 0.5 - 4, (my - box.y1 + 0.5) * sy - 0.5 - 4, sx


def mouth_table() -> tuple[np.ndarray, np.ndarray]:
    """(premultiplied BGR uint8 [S, h, w, 3], alpha uint8 [S, h, w]) for the grid of (opening, width) states.

    State s = opening_step * WIDTH_STEPS + width_step. Only the patch where the mouth can be is stored.
    """
    cx, cy, scale = crop_geometry(0)
    colours, alphas = [], []
    for o in np.linspace(0, 1, OPENING_STEPS):
        for w in np.linspace(0, 1, WIDTH_STEPS):
            premult, alpha = face.mouth_layer((SIZE, SIZE), (cx, cy), o, w, scale)
            outside = alpha[..., 0].copy()
            outside[PATCH_ROWS, PATCH_COLS] = 0
            if outside.max() > 0:
                raise RuntimeError("mouth layer leaves the stored patch: widen PATCH_ROWS / PATCH_COLS")
            colours.append(np.round(premult[PATCH_ROWS, PATCH_COLS]).astype(np.uint8))
            alphas.append(np.round(alpha[PATCH_ROWS, PATCH_COLS, 0] * 255).astype(np.uint8))
    return np.stack(colours), np.stack(alphas)


def state_index(track: np.ndarray) -> np.ndarray:
    """Nearest table state for each (opening, width) row."""
    o = np.clip(np.round(track[:, 0] * (OPENING_STEPS - 1)), 0, OPENING_STEPS - 1).astype(np.int64)
    w = np.clip(np.round(track[:, 1] * (WIDTH_STEPS - 1)), 0, WIDTH_STEPS - 1).astype(np.int64)
    return o * WIDTH_STEPS + w


def bare_crops(num_templates: int) -> np.ndarray:
    """[K, 160, 160, 3] uint8: each template frame without a mouth, through JPEG like the shipped frames, cropped."""
    crops = []
    for k in range(num_templates):
        ok, jpeg = cv2.imencode(".jpg", face.draw_face(k, mouth=None), [cv2.IMWRITE_JPEG_QUALITY, 90])
        frame = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)
        box = crop_box_from_landmarks(face.landmarks(k))
        crops.append(np.round(prepare_input(frame, box, SIZE).tensor[:3].transpose(1, 2, 0) * 255).astype(np.uint8))
    return np.stack(crops)


def mask_region() -> np.ndarray:
    """[160, 160] bool: True where pipeline.crop.mask_crop blacks out the masked half of the input."""
    probe = np.full((SIZE, SIZE, 3), 255, np.uint8)
    return mask_crop(probe, SIZE)[..., 0] == 0


def build_training_set(
    out_path: Path, num_clips: int, num_val_clips: int, num_templates: int, seed: int = 0
) -> dict[str, float]:
    """Write the .npz the training script reads; return a summary (clips, frames, seconds, megabytes)."""
    rng = np.random.default_rng(seed)
    mels, starts, targets, clip_frames, clip_windows, is_val, voices = [], [], [], [], [], [], []
    mel_offset = 0
    for c in range(num_clips + num_val_clips):
        val = c >= num_clips
        voice = HELD_OUT_VOICE if val else TRAIN_VOICES[c % len(TRAIN_VOICES)]
        clip = random_clip(rng, voice)
        mel, track = clip_arrays(clip.utterance)
        mels.append(mel.astype(np.float16))
        starts.append(window_starts(mel.shape[0]).astype(np.int64) + mel_offset)
        targets.append(track)
        clip_frames.append(len(track))
        clip_windows.append(len(starts[-1]))
        is_val.append(val)
        voices.append(voice)
        mel_offset += mel.shape[0]
    colours, alphas = mouth_table()
    np.savez_compressed(
        out_path,
        mel=np.concatenate(mels),
        window_starts=np.concatenate(starts).astype(np.int32),
        targets=np.concatenate(targets).astype(np.float32),
        target_states=state_index(np.concatenate(targets)).astype(np.int16),
        clip_frames=np.asarray(clip_frames, np.int32),
        clip_windows=np.asarray(clip_windows, np.int32),
        clip_is_val=np.asarray(is_val, bool),
        bare_crops=bare_crops(num_templates),
        mouth_colour=colours,
        mouth_alpha=alphas,
        patch_origin=np.asarray([PATCH_ROWS.start, PATCH_COLS.start], np.int32),
        table_steps=np.asarray([OPENING_STEPS, WIDTH_STEPS], np.int32),
        mask=mask_region(),
        mouth_centre=np.asarray(crop_geometry(0)[:2], np.float32),
        idle_state=np.asarray(state_index(np.asarray([face.IDLE_MOUTH], np.float32)), np.int32),
        meta=np.asarray(json.dumps({"voices": voices, "seed": seed, "sample_rate": SAMPLE_RATE})),
    )
    frames = int(sum(clip_frames))
    return {
        "clips": num_clips,
        "val_clips": num_val_clips,
        "frames": frames,
        "seconds": frames / 25.0,
        "megabytes": out_path.stat().st_size / 1e6,
    }
