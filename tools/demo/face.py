"""A procedurally drawn face with idle motion, written as a SyncTalk_2D dataset folder, and its mouth renderer.

Why drawn: the project must ship an avatar it may redistribute, and a drawn face makes the training targets exact
(a mouth drawn from (opening, width)). The head moves by whole pixels only, so the landmark crop (points 1, 31, 52)
follows it exactly and the mouth sits at the same place in every crop; blinks and the fixed background change
from frame to frame. The same ``mouth_layer`` draws the mouth in the full frame and in the 160 px crop, so the
training targets and the avatar share one drawing.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

FRAME_WIDTH = 384
FRAME_HEIGHT = 400
FPS = 25
NUM_LANDMARKS = 110

FACE_CENTRE = (192, 190)  # centre of the jaw ellipse at rest
JAW_AXES = (85, 115)  # the lower half of the face: point 1 to point 31 spans about 170 px
SKULL_AXES = (88, 125)
MOUTH_OFFSET = (0, 65)  # mouth centre relative to FACE_CENTRE
NOSE_BRIDGE_TOP = -30  # landmarks 51..54, relative to FACE_CENTRE's y
NOSE_BRIDGE_STEP = 12
EYE_OFFSETS = ((-36, -28), (36, -28))

SKIN = (150, 180, 225)
SKIN_SHADE = (125, 155, 200)
LIP = (90, 85, 175)
MOUTH_INSIDE = (45, 28, 60)
TEETH = (235, 240, 245)
IDLE_MOUTH = (0.0, 0.5)  # the templates' own mouth: closed, neutral width

SUPERSAMPLE = 4


def head_offset(frame_index: int) -> tuple[int, int]:
    """Whole-pixel idle head motion: two slow sines of different periods, at most 3 px across and 2 px up/down."""
    t = frame_index / FPS
    return (int(round(3 * math.sin(2 * math.pi * t / 3.1))), int(round(2 * math.sin(2 * math.pi * t / 2.3 + 1.0))))


def eye_openness(frame_index: int) -> float:
    """1 open, 0 shut: a blink of 5 frames every 2.2 s, starting 0.7 s in."""
    period, start = int(2.2 * FPS), int(0.7 * FPS)
    phase = (frame_index - start) % period
    return {0: 0.5, 1: 0.1, 2: 0.0, 3: 0.3, 4: 0.7}.get(phase, 1.0) if frame_index >= start else 1.0


def mouth_size(opening: float, width: float, scale: float = 1.0) -> tuple[float, float]:
    """(half width, interior height) in pixels: the one definition that both the drawing and the measure use."""
    half_width = (22.0 + 14.0 * float(np.clip(width, 0, 1))) * scale
    height = (2.0 + 30.0 * float(np.clip(opening, 0, 1))) * scale
    return half_width, height


def mouth_layer(
    shape_hw: tuple[int, int], centre_xy: tuple[float, float], opening: float, width: float, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """A mouth drawn on a transparent layer: (premultiplied BGR float32 [H,W,3], alpha float32 [H,W,1]).

    Drawn at SUPERSAMPLE times the resolution and averaged down, which gives smooth, sub-pixel placed edges.
    """
    height, width_px = shape_hw
    big = (height * SUPERSAMPLE, width_px * SUPERSAMPLE)
    colour = np.zeros((*big, 3), np.uint8)
    alpha = np.zeros(big, np.uint8)
    s = SUPERSAMPLE
    cx, cy = (centre_xy[0] + 0.5) * s - 0.5, (centre_xy[1] + 0.5) * s - 0.5
    half_w, inner_h = mouth_size(opening, width, scale)
    centre = (int(round(cx)), int(round(cy)))

    def ellipse(target: np.ndarray, axes: tuple[float, float], value, dy: float = 0.0) -> None:  # noqa: ANN001
        c = (centre[0], int(round(centre[1] + dy * s)))
        cv2.ellipse(target, c, (max(1, int(round(axes[0] * s))), max(1, int(round(axes[1] * s)))), 0, 0, 360,
                    value, -1, cv2.LINE_AA)

    lip_axes = (half_w + 4 * scale, inner_h / 2 + 5 * scale)
    ellipse(colour, lip_axes, LIP)
    ellipse(alpha, lip_axes, 255)
    if inner_h > 3 * scale:
        ellipse(colour, (half_w, inner_h / 2), MOUTH_INSIDE)
        if inner_h > 8 * scale:  # upper teeth: a light band just under the upper lip
            teeth = np.zeros_like(alpha)
            ellipse(teeth, (half_w * 0.75, inner_h * 0.16), 255, dy=-inner_h * 0.36)
            inside = np.zeros_like(alpha)
            ellipse(inside, (half_w, inner_h / 2), 255)
            colour[(teeth > 0) & (inside > 0)] = TEETH
    else:  # closed: the line between the lips
        y = centre[1]
        cv2.line(colour, (int(centre[0] - half_w * s), y), (int(centre[0] + half_w * s), y), MOUTH_INSIDE,
                 max(1, int(round(1.5 * scale * s))), cv2.LINE_AA)
    premultiplied = colour.astype(np.float32) * (alpha[..., None].astype(np.float32) / 255.0)
    premultiplied = cv2.resize(premultiplied, (width_px, height), interpolation=cv2.INTER_AREA)
    alpha_small = cv2.resize(alpha.astype(np.float32) / 255.0, (width_px, height), interpolation=cv2.INTER_AREA)
    return premultiplied.reshape(height, width_px, 3), alpha_small.reshape(height, width_px, 1)


def composite(image: np.ndarray, layer: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Layer over a uint8 BGR image (new array)."""
    premultiplied, alpha = layer
    out = image.astype(np.float32) * (1.0 - alpha) + premultiplied
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _background() -> np.ndarray:
    """A fixed vertical gradient with a soft vignette: it does not move with the head, so crops differ a little."""
    y = np.linspace(0, 1, FRAME_HEIGHT)[:, None, None]
    x = np.linspace(-1, 1, FRAME_WIDTH)[None, :, None]
    top, bottom = np.array([120, 100, 70], np.float32), np.array([70, 60, 45], np.float32)
    image = top * (1 - y) + bottom * y
    image = image * (1.0 - 0.15 * x**2)
    return np.clip(image, 0, 255).astype(np.uint8)


def landmarks(frame_index: int) -> np.ndarray:
    """[110, 2] integer landmarks in the SyncTalk_2D (PFLD) layout for this frame's head position."""
    dx, dy = head_offset(frame_index)
    return _rest_landmarks() + np.array([dx, dy], np.int64)


def _rest_landmarks() -> np.ndarray:
    """Landmarks of the head at rest, rounded once, so a moved head's landmarks are an exact whole-pixel shift."""
    cx, cy = FACE_CENTRE
    points = np.zeros((NUM_LANDMARKS, 2), np.float64)
    for j in range(33):  # 0-32 jaw: from the left, under the chin, to the right
        phi = math.pi - math.pi * j / 32
        points[j] = (cx + JAW_AXES[0] * math.cos(phi), cy + JAW_AXES[1] * math.sin(phi))
    for j in range(18):  # 33-50 eyebrows
        side = -1 if j < 9 else 1
        u = (j % 9) / 8
        points[33 + j] = (cx + side * (18 + 40 * u), cy - 48 - 8 * math.sin(math.pi * u))
    for j in range(4):  # 51-54 nose bridge, top to bottom
        points[51 + j] = (cx, cy + NOSE_BRIDGE_TOP + NOSE_BRIDGE_STEP * j)
    for j in range(5):  # 55-59 nose bottom
        points[55 + j] = (cx - 14 + 7 * j, cy + 28)
    for eye, (ex, ey) in enumerate(EYE_OFFSETS):  # 60-75 eye contours
        for j in range(8):
            a = 2 * math.pi * j / 8
            points[60 + 8 * eye + j] = (cx + ex + 14 * math.cos(a), cy + ey + 7 * math.sin(a))
    for j in range(14):  # 76-89 cheeks and pupils (unused by the crop rule, kept plausible)
        side = -1 if j < 7 else 1
        points[76 + j] = (cx + side * (45 + 3 * (j % 7)), cy + 10 + 6 * (j % 7))
    mx, my = cx + MOUTH_OFFSET[0], cy + MOUTH_OFFSET[1]
    half_w, inner_h = mouth_size(*IDLE_MOUTH)
    for j in range(12):  # 90-101 outer lips
        a = 2 * math.pi * j / 12
        points[90 + j] = (mx - (half_w + 4) * math.cos(a), my - (inner_h / 2 + 5) * math.sin(a))
    for j in range(8):  # 102-109 inner lips
        a = 2 * math.pi * j / 8
        points[102 + j] = (mx - half_w * math.cos(a), my - inner_h / 2 * math.sin(a))
    return np.round(points).astype(np.int64)


def draw_face(frame_index: int, mouth: tuple[float, float] | None = IDLE_MOUTH) -> np.ndarray:
    """One BGR frame: background, neck, head, eyes (blinking), brows, nose, and the mouth (None: bare skin)."""
    image = _background()
    dx, dy = head_offset(frame_index)
    cx, cy = FACE_CENTRE[0] + dx, FACE_CENTRE[1] + dy
    cv2.rectangle(image, (cx - 45, cy + 60), (cx + 45, FRAME_HEIGHT), SKIN_SHADE, -1)
    cv2.ellipse(image, (cx, cy), SKULL_AXES, 0, 180, 360, SKIN, -1, cv2.LINE_AA)
    cv2.ellipse(image, (cx, cy), JAW_AXES, 0, 0, 180, SKIN, -1, cv2.LINE_AA)
    cv2.ellipse(image, (cx, cy - 70), (92, 60), 0, 180, 360, (40, 50, 70), -1, cv2.LINE_AA)  # hair
    openness = eye_openness(frame_index)
    for side, (ex, ey) in zip((-1, 1), EYE_OFFSETS):
        centre = (cx + ex, cy + ey)
        cv2.line(image, (centre[0] - 16, cy - 48 + 2 * side * 0), (centre[0] + 16, cy - 50), (50, 60, 80), 4,
                 cv2.LINE_AA)
        if openness > 0.15:
            cv2.ellipse(image, centre, (14, max(1, int(round(8 * openness)))), 0, 0, 360, (245, 245, 245), -1,
                        cv2.LINE_AA)
            cv2.circle(image, centre, max(1, int(round(5 * min(1.0, openness + 0.3)))), (80, 60, 30), -1,
                       cv2.LINE_AA)
        cv2.ellipse(image, centre, (15, max(1, int(round(9 * openness)))), 0, 180, 360, (60, 80, 110), 2,
                    cv2.LINE_AA)
    nose = np.array([[cx, cy - 25], [cx - 6, cy + 22], [cx, cy + 28], [cx + 6, cy + 22]], np.int32)
    cv2.polylines(image, [nose], False, SKIN_SHADE, 2, cv2.LINE_AA)
    for side in (-1, 1):
        cv2.ellipse(image, (cx + side * 9, cy + 27), (4, 2), 0, 0, 360, (90, 110, 150), -1, cv2.LINE_AA)
    if mouth is not None:
        centre = (cx + MOUTH_OFFSET[0], cy + MOUTH_OFFSET[1])
        image = composite(image, mouth_layer(image.shape[:2], centre, mouth[0], mouth[1]))
    return image


def write_dataset(folder: Path, num_frames: int, jpeg_quality: int = 90) -> Path:
    """SyncTalk_2D layout: full_body_img/<i>.jpg (0-based, no padding) and landmarks/<i>.lms ("x y" per line)."""
    (folder / "full_body_img").mkdir(parents=True, exist_ok=True)
    (folder / "landmarks").mkdir(parents=True, exist_ok=True)
    for i in range(num_frames):
        cv2.imwrite(str(folder / "full_body_img" / f"{i}.jpg"), draw_face(i),
                    [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
        lines = "\n".join(f"{x} {y}" for x, y in landmarks(i))
        (folder / "landmarks" / f"{i}.lms").write_text(lines + "\n", encoding="ascii")
    return folder
