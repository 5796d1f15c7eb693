"""Synthetic avatar templates for tests: a drawn face whose mouth opens and closes, with matching landmarks.

Other areas' tests (CLI, window, lanes) open these through pipeline.avatar.Avatar, so the builder writes exactly the
on-disk layouts users hold and stays fast (a 6-frame 320x240 template takes a few milliseconds).
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

NUM_LANDMARKS = 110


def landmarks_for(size: tuple[int, int], frame: int = 0, frames: int = 6) -> np.ndarray:
    """110 PFLD-style points [110, 2] int for a face centred in a (width, height) frame.

    Jaw 0-32 on a U below the eyes, nose bridge 51-54 down the middle, outer lips 90-101 and inner lips 102-109
    around a mouth whose opening follows the frame index. Points 1 and 31 sit at the face's sides and point 52
    on the nose bridge, so the reference crop (x: lms[1]..lms[31], y: lms[52] down by the same width) is a square
    that fits inside the frame with a margin below the chin.
    """
    width, height = size
    side = int(0.55 * min(width, height))
    cx = width // 2
    top = height - side - max(2, height // 20)  # ymin of the crop box = y of point 52
    points = np.zeros((NUM_LANDMARKS, 2), dtype=np.float64)
    # Jaw: a half ellipse from the left temple (0) through the chin (16) to the right temple (32).
    angles = np.linspace(np.pi, 0.0, 33)
    points[0:33, 0] = cx + 0.5 * side / abs(np.cos(angles[1])) * np.cos(angles)
    points[0:33, 1] = top + 0.1 * side + 0.8 * side * np.sin(angles)
    points[1, 0], points[31, 0] = cx - side // 2, cx - side // 2 + side
    # Eyebrows and eyes (33-50, 55-89): rough rows above the crop, only for plausibility.
    points[33:51, 0] = np.linspace(cx - 0.4 * side, cx + 0.4 * side, 18)
    points[33:51, 1] = top - 0.25 * side
    points[55:90, 0] = np.linspace(cx - 0.35 * side, cx + 0.35 * side, 35)
    points[55:90, 1] = top - 0.1 * side
    # Nose bridge 51-54: point 52 fixes the crop's top edge.
    points[51:55, 0] = cx
    points[51:55, 1] = top + np.array([-0.1, 0.0, 0.1, 0.2]) * side
    # Lips: outer ring 90-101, inner ring 102-109, opening with the frame (a slow open-close cycle).
    opening = 0.5 - 0.5 * np.cos(2 * np.pi * frame / max(frames, 2))
    mouth_y = top + 0.55 * side
    ring = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    points[90:102, 0] = cx + 0.22 * side * np.cos(ring)
    points[90:102, 1] = mouth_y + (0.04 + 0.1 * opening) * side * np.sin(ring)
    ring = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    points[102:110, 0] = cx + 0.15 * side * np.cos(ring)
    points[102:110, 1] = mouth_y + (0.01 + 0.08 * opening) * side * np.sin(ring)
    return np.round(points).astype(np.int64)


def draw_face(size: tuple[int, int], lms: np.ndarray, frame: int = 0) -> np.ndarray:
    """A BGR uint8 frame with a textured background, a face, eyes, a nose and the mouth the landmarks describe.

    Texture and colour gradients make interpolation choices (bicubic against bilinear) show up in pixel values.
    """
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[..., 0] = (60 + 40 * np.sin(xx / 7.0 + frame)).astype(np.uint8)
    image[..., 1] = (90 + 50 * np.cos(yy / 5.0)).astype(np.uint8)
    image[..., 2] = ((xx * 3 + yy * 2) % 256).astype(np.uint8)
    jaw = lms[0:33].astype(np.int32)
    face_centre = (int(jaw[16, 0]), int(lms[52, 1]))
    axes = (max(1, int((jaw[31, 0] - jaw[1, 0]) // 2)), max(1, int(jaw[16, 1] - lms[52, 1])))
    cv2.ellipse(image, face_centre, axes, 0, 0, 360, (120, 160, 215), -1)
    cv2.ellipse(image, face_centre, axes, 0, 0, 360, (40, 70, 120), 2)
    for x, y in lms[[60, 84]]:
        cv2.circle(image, (int(x), int(y)), max(2, axes[0] // 8), (40, 30, 20), -1)
    cv2.line(image, tuple(int(v) for v in lms[51]), tuple(int(v) for v in lms[54]), (70, 100, 160), 2)
    cv2.fillPoly(image, [lms[90:102].astype(np.int32)], (60, 60, 170))
    cv2.fillPoly(image, [lms[102:110].astype(np.int32)], (30, 20, 50))
    return image


def write_lms(path: str | Path, lms: np.ndarray) -> None:
    """Write landmarks the way SyncTalk_2D stores them: one 'x y' line of integers per point."""
    Path(path).write_text("".join(f"{int(x)} {int(y)}\n" for x, y in lms), encoding="utf-8")


def crop_rectangle(lms: np.ndarray) -> list[int]:
    """[x1, y1, x2, y2] as ports cache it: the reference's landmark square, written out independently here."""
    x1, x2, y1 = int(lms[1][0]), int(lms[31][0]), int(lms[52][1])
    return [x1, y1, x2, y1 + x2 - x1]


def make_dataset(
    folder: str | Path,
    frames: int = 6,
    size: tuple[int, int] = (320, 240),
    layout: str = "landmarks",
    image_format: str = "jpg",
) -> Path:
    """Write a synthetic template into ``folder`` (created if missing) and return the folder.

    layout "landmarks": full_body_img/<i>.jpg + landmarks/<i>.lms; "rects": full_body_img/<i>.jpg +
    cache/crop_rectangles.json. size is (width, height). image_format "png" gives lossless frames, useful where a
    test compares pixels exactly.
    """
    if layout not in ("landmarks", "rects"):
        raise ValueError(f"layout must be 'landmarks' or 'rects', got {layout!r}")
    if image_format not in ("jpg", "png"):
        raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    folder = Path(folder)
    image_dir = folder / "full_body_img"
    image_dir.mkdir(parents=True, exist_ok=True)
    rectangles = {}
    if layout == "landmarks":
        (folder / "landmarks").mkdir(exist_ok=True)
    for index in range(frames):
        lms = landmarks_for(size, index, frames)
        cv2.imwrite(str(image_dir / f"{index}.{image_format}"), draw_face(size, lms, index))
        if layout == "landmarks":
            write_lms(folder / "landmarks" / f"{index}.lms", lms)
        else:
            rectangles[str(index)] = {"rect": crop_rectangle(lms)}
    if layout == "rects":
        (folder / "cache").mkdir(exist_ok=True)
        (folder / "cache" / "crop_rectangles.json").write_text(json.dumps(rectangles, indent=1), encoding="utf-8")
    return folder
