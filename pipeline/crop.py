"""The face geometry around the generator, reference-exact (PIPELINE.md stages 5 and 6).

The generator only ever sees a small square around the mouth. Which square, how it is resized, which part is
blacked out, and how the generated pixels go back into the full frame decide whether two ports can be compared at
all: the Swift port's paste-back that stretched over the whole crop box is the kind of divergence this module must
make visible, so every step here reproduces the SyncTalk_2D reference exactly, including its numpy slicing quirks.

Finding a template on disk, parsing its landmark or rectangle files and caching its decoded frames is
pipeline/avatar.py (``Avatar``); this module is the numerics only.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from core.errors import InputError

NUM_LANDMARKS = 110
# Margin the reference resizes around the model's square: 328 -> [4:324] for 320, 168 -> [4:164] for 160.
CROP_MARGIN = 4
# The reference masks with cv2.rectangle(img, (5, 5, w, h), ...): the (x, y, width, height) form, which fills exactly
# w x h pixels (x 5..4+w, y 5..4+h). The two-point form would fill one more column and row.
MASK_ORIGIN = 5
MASK_EXTENT = {320: (310, 305), 160: (150, 145)}
# The 320 ("328") model resizes with bicubic; the 160 reference passes its flag where cv2.resize expects `dst`, so
# the default bilinear applies. Paste-back uses the same interpolation as the way in.
INTERPOLATION = {320: cv2.INTER_CUBIC, 160: cv2.INTER_LINEAR}


@dataclass(frozen=True)
class CropBox:
    """The reference's crop box, as the slice ``img[y1:y2, x1:x2]`` (bounds may lie outside the frame)."""

    x1: int
    y1: int
    x2: int
    y2: int

    def region(self, height: int, width: int) -> tuple[int, int, int, int]:
        """The pixels ``img[y1:y2, x1:x2]`` really selects in a height x width frame, as (top, bottom, left, right).

        numpy follows Python slice rules: a stop past the border clips to it, and a *negative* bound counts from the
        far edge (x1 = -5 on a 320-wide frame means column 315), so a box that starts left of the frame usually
        selects nothing at all, and one with both bounds negative selects a strip at the right edge. The reference
        crops with exactly that slice, so we reproduce it rather than "fixing" it; an empty selection is reported by
        the callers as an InputError (the reference would crash inside cv2.resize).
        """
        top, bottom, _ = slice(self.y1, self.y2).indices(height)
        left, right, _ = slice(self.x1, self.x2).indices(width)
        return top, max(top, bottom), left, max(left, right)

    def as_list(self) -> list[int]:
        return [self.x1, self.y1, self.x2, self.y2]


def _effective_region(frame: np.ndarray, box: CropBox) -> tuple[int, int, int, int]:
    top, bottom, left, right = box.region(frame.shape[0], frame.shape[1])
    if bottom <= top or right <= left:
        raise InputError(
            f"crop box [x1={box.x1}, y1={box.y1}, x2={box.x2}, y2={box.y2}]: expected a non-empty region of the "
            f"{frame.shape[1]}x{frame.shape[0]} frame, found an empty one (img[y1:y2, x1:x2] counts negative bounds "
            "from the far edge, as the reference's numpy slice does)"
        )
    return top, bottom, left, right


def crop_box_from_landmarks(lms: np.ndarray) -> CropBox:
    """The reference's square: x from jaw point 1 to jaw point 31, y from nose-bridge point 52 down by the width."""
    lms = np.asarray(lms)
    if lms.ndim != 2 or lms.shape[0] != NUM_LANDMARKS or lms.shape[1] < 2:
        raise InputError(f"landmarks: expected an array of shape [{NUM_LANDMARKS}, 2], found {list(lms.shape)}")
    xmin, xmax, ymin = int(lms[1, 0]), int(lms[31, 0]), int(lms[52, 1])
    return CropBox(xmin, ymin, xmax, ymin + (xmax - xmin))


def ping_pong_index(i: int, num_templates: int) -> int:
    """Template frame for output frame i: 1, 2, .., K-1, K-2, .., 0, 1, .. (the reference starts at index 1).

    Bouncing instead of wrapping keeps the head motion continuous when the audio is longer than the template.
    """
    if num_templates < 1:
        raise InputError(f"avatar: expected at least one template frame, found {num_templates}")
    if i < 0:
        raise ValueError(f"output frame index must be >= 0, got {i}")
    if num_templates == 1:
        return 0
    period = 2 * (num_templates - 1)
    phase = (i + 1) % period
    return phase if phase < num_templates else period - phase


def ping_pong_indices(frames: int | np.ndarray, num_templates: int) -> np.ndarray:
    """Vectorised ping_pong_index: for an int F, the indices of output frames 0..F-1; for an array, elementwise."""
    if num_templates < 1:
        raise InputError(f"avatar: expected at least one template frame, found {num_templates}")
    i = np.arange(frames) if np.isscalar(frames) else np.asarray(frames, dtype=np.int64)
    if i.size and i.min() < 0:
        raise ValueError("output frame indices must be >= 0")
    if num_templates == 1:
        return np.zeros(i.shape, dtype=np.int64)
    period = 2 * (num_templates - 1)
    phase = (i + 1) % period
    return np.where(phase < num_templates, phase, period - phase).astype(np.int64)


@dataclass(frozen=True)
class GeneratorInput:
    """What the generator needs for one frame, plus the resized crop that paste-back writes the mouth into."""

    tensor: np.ndarray  # [6, S, S] float32 BGR / 255: 0-2 the reference crop, 3-5 the masked crop
    resized_crop: np.ndarray  # [S+8, S+8, 3] uint8, the crop resized with the margin the reference keeps

    @property
    def size(self) -> int:
        return int(self.tensor.shape[-1])


def _check_size(size: int) -> int:
    if size not in MASK_EXTENT:
        raise InputError(f"generator size: expected one of {sorted(MASK_EXTENT)}, found {size}")
    return int(size)


def _check_frame(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise InputError(f"frame: expected a BGR uint8 image [H, W, 3], found {frame.dtype} {list(frame.shape)}")
    return frame


def mask_crop(crop: np.ndarray, size: int) -> np.ndarray:
    """A copy of the crop with the reference's black rectangle: exactly w x h pixels, x in [5, 5+w) and y in [5, 5+h).

    The reference's call is ``cv2.rectangle(img, (5, 5, w, h), (0, 0, 0), -1)`` (a rect, not two corners); written
    as a slice so the extent is visible here.
    """
    width, height = MASK_EXTENT[_check_size(size)]
    masked = crop.copy()
    masked[MASK_ORIGIN : MASK_ORIGIN + height, MASK_ORIGIN : MASK_ORIGIN + width] = 0
    return masked


def prepare_input(frame: np.ndarray, box: CropBox, size: int) -> GeneratorInput:
    """Crop, resize with a 4-pixel margin, mask, and stack into the generator's 6-channel input.

    The reference feeds the same template frame's unmasked crop as the "reference" half, so a lane's generator
    sees exactly one template frame per output frame.
    """
    size = _check_size(size)
    frame = _check_frame(frame)
    top, bottom, left, right = _effective_region(frame, box)
    crop = frame[top:bottom, left:right]
    outer = size + 2 * CROP_MARGIN
    resized = cv2.resize(crop, (outer, outer), interpolation=INTERPOLATION[size])
    inner = resized[CROP_MARGIN : CROP_MARGIN + size, CROP_MARGIN : CROP_MARGIN + size]
    masked = mask_crop(inner, size)
    stacked = np.concatenate([inner, masked], axis=2).transpose(2, 0, 1)
    tensor = np.ascontiguousarray(stacked).astype(np.float32) / np.float32(255.0)
    return GeneratorInput(tensor=tensor, resized_crop=resized)


def output_to_uint8(output: np.ndarray) -> np.ndarray:
    """Generator output [3, S, S] in [0, 1] -> HWC uint8 by ``(x * 255).astype(np.uint8)`` in float32 (truncation).

    The reference casts without rounding, so 0.999 becomes 254. Values outside [0, 1] are clipped first (NaN -> 0,
    +inf -> 255): a broken backend's garbage must show up as a visibly wrong mouth, never as a crash or as the
    wrap-around that a raw cast of 1.2 or -0.1 would give. For sigmoid outputs this equals the reference exactly.
    """
    # fmax/fmin ignore NaN, so fmax(x, 0) maps NaN and -inf to 0 and fmin(x, 1) maps +inf to 1: the same values as
    # nan_to_num + clip in two passes instead of six (this runs for every frame of every lane).
    values = np.fmax(np.asarray(output, dtype=np.float32), np.float32(0.0))
    np.fmin(values, np.float32(1.0), out=values)
    values *= np.float32(255.0)
    planes = values.astype(np.uint8)
    if planes.ndim == 3 and planes.shape[0] == 3:
        return cv2.merge(list(planes))  # CHW -> contiguous HWC, ~15x faster than copying the transposed view
    return planes.transpose(1, 2, 0)


def paste_back(frame: np.ndarray, box: CropBox, resized_crop: np.ndarray, output: np.ndarray) -> np.ndarray:
    """Put the generated square back: into the resized crop's centre, resized to the crop, over a copy of the frame.

    Returns a new frame; the template and the resized crop are never modified. No blending, as in the reference.
    """
    output = np.asarray(output)
    if output.ndim == 4 and output.shape[0] == 1:
        output = output[0]
    if output.ndim != 3 or output.shape[0] != 3 or output.shape[1] != output.shape[2]:
        raise InputError(f"generator output: expected shape [3, S, S], found {list(output.shape)}")
    _check_size(output.shape[1])
    return paste_mouth(frame, box, resized_crop, output_to_uint8(output))


def paste_mouth(frame: np.ndarray, box: CropBox, resized_crop: np.ndarray, mouth: np.ndarray) -> np.ndarray:
    """paste_back for a mouth already converted by output_to_uint8 ([S, S, 3] uint8): the render path converts
    once and shows the same pixels as the lane's crop, instead of converting the output twice per frame."""
    frame = _check_frame(frame)
    mouth = np.asarray(mouth)
    if mouth.ndim != 3 or mouth.shape[2] != 3 or mouth.shape[0] != mouth.shape[1] or mouth.dtype != np.uint8:
        raise InputError(f"generated mouth: expected uint8 [S, S, 3], found {mouth.dtype} {list(mouth.shape)}")
    size = _check_size(mouth.shape[0])
    outer = size + 2 * CROP_MARGIN
    if resized_crop.shape != (outer, outer, 3) or resized_crop.dtype != np.uint8:
        raise InputError(
            f"resized crop: expected uint8 [{outer}, {outer}, 3] for a {size} generator, "
            f"found {resized_crop.dtype} {list(resized_crop.shape)}"
        )
    top, bottom, left, right = _effective_region(frame, box)
    patch = resized_crop.copy()
    patch[CROP_MARGIN : CROP_MARGIN + size, CROP_MARGIN : CROP_MARGIN + size] = mouth
    restored = cv2.resize(patch, (right - left, bottom - top), interpolation=INTERPOLATION[size])
    result = frame.copy()
    result[top:bottom, left:right] = restored
    return result
