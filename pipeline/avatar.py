"""Avatar templates and the face geometry around the generator (PIPELINE.md stages 5 and 6).

The generator only ever sees a small square around the mouth. Which square, how it is resized, which part is
blacked out, and how the generated pixels go back into the full frame decide whether two ports can be compared at
all: the Swift port's paste-back that stretched over the whole crop box is the kind of divergence this module must
make visible, so every step here reproduces the SyncTalk_2D reference exactly, including its numpy slicing quirks.

Layouts a user holds (both accepted, either as the dataset folder itself or as a parent holding ``dataset/<name>/``):

- ``full_body_img/<i>.jpg|png`` with ``landmarks/<i>.lms`` (110 lines "x y"), the SyncTalk_2D training layout;
- ``full_body_img/<i>.jpg|png`` with ``cache/crop_rectangles.json`` ({"0": {"rect": [x1, y1, x2, y2]}, ...}),
  what ports write once so they need not ship landmarks.
"""

from __future__ import annotations

import json
import math
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from core import limits
from core.errors import InputError

NUM_LANDMARKS = 110
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# Margin the reference resizes around the model's square: 328 -> [4:324] for 320, 168 -> [4:164] for 160.
CROP_MARGIN = 4
# The reference masks with cv2.rectangle(img, (5, 5, w, h), ...): the (x, y, width, height) form, which fills exactly
# w x h pixels (x 5..4+w, y 5..4+h). The two-point form would fill one more column and row.
MASK_ORIGIN = 5
MASK_EXTENT = {320: (310, 305), 160: (150, 145)}
# The 320 ("328") model resizes with bicubic; the 160 reference passes its flag where cv2.resize expects `dst`, so
# the default bilinear applies. Paste-back uses the same interpolation as the way in.
INTERPOLATION = {320: cv2.INTER_CUBIC, 160: cv2.INTER_LINEAR}
DEFAULT_CACHE_FRAMES = 16
# Decoded templates kept per avatar: ping-pong playback visits all K templates in turn, so an LRU smaller than K
# decodes a JPEG for every frame (1-2 ms of the render path). Keep as many as fit this budget (a 100-frame 400x384
# template is 46 MB; 1280x720 frames give about 90), and never fewer than DEFAULT_CACHE_FRAMES.
TEMPLATE_CACHE_BYTES = 256 * 1024 * 1024


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


def read_lms(path: str | Path) -> np.ndarray:
    """Read a 110-point landmark file as int [110, 2] (x, y), with the reference's own dtype path.

    The reference parses each line with ``np.array(line.split(" "), dtype=np.float32)`` and then casts all of
    them with ``np.array(lms_list, dtype=np.int32)``; we make those same two calls. The float32 step matters: text
    such as "99.99999999" rounds to 100.0 in float32 and so becomes 100, where a float64 (or Python float) parse
    would truncate it to 99 and shift the crop box by a pixel. Tolerant where files in the field differ
    harmlessly (tabs or repeated spaces, which the reference's split(" ") would choke on, and trailing blank
    lines), strict about the number of points because the crop uses points 1, 31 and 52 by index, and about
    values the int32 cast cannot hold (the reference's cast of those is undefined).
    """
    path = Path(path)
    if path.exists() or path.is_symlink():  # a FIFO would block the read forever, a device stream without end
        limits.input_file(path, "landmarks", f"a file of {NUM_LANDMARKS} lines 'x y'")
        limits.check_size(path.stat().st_size, limits.MAX_TEXT_BYTES, f"landmarks {path}")
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise InputError(f"landmarks {path}: expected a file of {NUM_LANDMARKS} lines 'x y', found no file") from None
    except OSError as error:
        raise InputError(f"landmarks {path}: expected a readable file, found {error}") from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) != NUM_LANDMARKS:
        raise InputError(f"landmarks {path}: expected {NUM_LANDMARKS} lines 'x y', found {len(lines)}")
    fields = [line.split() for line in lines]
    values = None
    if all(len(pair) == 2 for pair in fields):
        try:
            # The reference's per-line np.array(..., dtype=np.float32), for all lines at once: numpy converts each
            # string on its own, so the values are the same. Text beyond float32's range becomes inf (no warning)
            # and is refused below.
            with np.errstate(over="ignore"):
                values = np.array(fields, dtype=np.float32)
        except ValueError:
            values = None
    if values is None or not _fits_int32(values):
        # Slow path: the same parse line by line, to name the first bad line.
        for number, pair in enumerate(fields):
            try:
                with np.errstate(over="ignore"):
                    row = np.array(pair, dtype=np.float32) if len(pair) == 2 else None
            except ValueError:
                row = None
            if row is None or not _fits_int32(row):
                raise InputError(
                    f"landmarks {path}: expected line {number + 1} to hold two numbers 'x y', found "
                    f"{lines[number].strip()!r} (finite pixel coordinates within the int32 range)"
                )
    # The reference's cast: float32 -> int32 truncates toward zero. int64 afterwards only so callers' arithmetic
    # (ymin + width) cannot wrap.
    return np.array(values, dtype=np.int32).astype(np.int64)


def _fits_int32(values: np.ndarray) -> bool:
    """True when every float32 value is finite and inside int32 (float32 holds +-2**31 exactly, so < is exact)."""
    return bool(np.isfinite(values).all() and (np.abs(values) < np.float32(2**31)).all())


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


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from a JPEG or PNG header without decoding, or None if the header is not readable.

    Opening a template of thousands of 1280x720 frames must not decode them all; reading headers still catches
    the usual damage (a truncated copy, an HTML error page saved as .jpg) and mixed frame sizes up front.
    """
    try:
        with open(path, "rb") as f:
            start = f.read(24)
            if start[:8] == b"\x89PNG\r\n\x1a\n" and start[12:16] == b"IHDR" and len(start) == 24:
                width, height = struct.unpack(">II", start[16:24])
                return int(width), int(height)
            if start[:2] != b"\xff\xd8":
                return None
            f.seek(2)
            while True:
                byte = f.read(1)
                if not byte:
                    return None
                if byte != b"\xff":
                    continue
                marker = f.read(1)
                while marker == b"\xff":
                    marker = f.read(1)
                if not marker:
                    return None
                code = marker[0]
                if code == 0x01 or 0xD0 <= code <= 0xD8:
                    continue  # markers without a length field
                if code in (0xD9, 0xDA):
                    return None  # end of image or start of scan before any frame header
                length_bytes = f.read(2)
                if len(length_bytes) < 2:
                    return None
                (length,) = struct.unpack(">H", length_bytes)
                if 0xC0 <= code <= 0xCF and code not in (0xC4, 0xC8, 0xCC):
                    header = f.read(5)
                    if len(header) < 5:
                        return None
                    height, width = struct.unpack(">HH", header[1:5])
                    return (int(width), int(height)) if width and height else None
                f.seek(length - 2, 1)
    except OSError:
        return None


def _find_dataset_folder(folder: Path) -> Path:
    """The folder that holds full_body_img/: the one given, or the single dataset/<name>/ (or <name>/) below it."""
    if not folder.exists():
        raise InputError(f"avatar {folder}: expected a dataset folder with full_body_img/, found no such folder")
    if not folder.is_dir():
        raise InputError(f"avatar {folder}: expected a dataset folder with full_body_img/, found a file")
    if (folder / "full_body_img").is_dir():
        return folder
    candidates = sorted(
        {p.parent for pattern in ("*/full_body_img", "dataset/*/full_body_img") for p in folder.glob(pattern) if p.is_dir()}
    )
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise InputError(
            f"avatar {folder}: expected full_body_img/ in it or in dataset/<name>/ below it, found neither"
        )
    names = ", ".join(str(c.relative_to(folder)) for c in candidates)
    raise InputError(f"avatar {folder}: expected one dataset below it, found {len(candidates)}: {names}")


def _index_images(image_dir: Path) -> list[Path]:
    """Template images by index, requiring 0..K-1 without gaps so that frame k really is the k-th frame."""
    by_index: dict[int, Path] = {}
    for path in image_dir.iterdir():
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.stem.isdigit():
            continue
        index = int(path.stem)
        if index in by_index:
            raise InputError(f"avatar {image_dir}: expected one image per index, found {by_index[index].name} and {path.name}")
        by_index[index] = path
    if not by_index:
        raise InputError(f"avatar {image_dir}: expected images named 0.jpg, 1.jpg, ... (or .png), found none")
    count = len(by_index)
    for index in range(count):
        if index not in by_index:
            raise InputError(
                f"avatar {image_dir}: expected images 0..{count - 1} without gaps, found no image {index} "
                f"(highest is {max(by_index)})"
            )
    return [by_index[i] for i in range(count)]


def _boxes_from_landmarks(landmark_dir: Path, count: int) -> list[CropBox]:
    present = {p.stem for p in landmark_dir.glob("*.lms")}
    for index in range(count):
        if str(index) not in present:
            raise InputError(
                f"avatar {landmark_dir}: expected {index}.lms for image {index} ({count} images), found no such file"
            )
    extra = sorted((int(s) for s in present if s.isdigit() and int(s) >= count))
    if extra:
        raise InputError(
            f"avatar {landmark_dir.parent}: expected as many landmark files as images ({count}), "
            f"found {count + len(extra)} landmark files; no image for {extra[0]}.lms"
        )
    return [crop_box_from_landmarks(read_lms(landmark_dir / f"{i}.lms")) for i in range(count)]


def _boxes_from_rectangles(path: Path, count: int) -> list[CropBox]:
    limits.input_file(path, "crop rectangles", "a JSON file")  # a FIFO would block the read forever
    limits.check_size(path.stat().st_size, limits.MAX_TEXT_BYTES, f"crop rectangles {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:  # "[[[[..." nests too deep
        raise InputError(f"crop rectangles {path}: expected JSON, found unreadable content ({error})") from None
    if not isinstance(data, dict):
        raise InputError(f"crop rectangles {path}: expected an object {{\"0\": {{\"rect\": [...]}}}}, found {type(data).__name__}")
    boxes = []
    for index in range(count):
        entry = data.get(str(index))
        if entry is None:
            raise InputError(f"crop rectangles {path}: expected key \"{index}\" for image {index} ({count} images), found none")
        rect = entry.get("rect") if isinstance(entry, dict) else None
        if rect is None:
            raise InputError(f"crop rectangles {path}: expected \"{index}\" to hold a \"rect\" key, found {entry!r}")
        if (
            not isinstance(rect, list)
            or len(rect) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in rect)
        ):
            raise InputError(f"crop rectangles {path}: expected \"{index}\".rect = [x1, y1, x2, y2] numbers, found {rect!r}")
        boxes.append(CropBox(*(int(v) for v in rect)))
    extra = sorted(int(k) for k in data if isinstance(k, str) and k.isdigit() and int(k) >= count)
    if extra:
        raise InputError(
            f"crop rectangles {path}: expected {count} rectangles (one per image), found one for {extra[0]} with no image"
        )
    return boxes


class Avatar:
    """A template video as indexed frames and crop boxes; frames decode lazily through a small LRU cache.

    ``frame(k)`` hands out read-only views of cached arrays: nobody downstream can corrupt the template that
    every lane shares (writes raise ValueError; copy first to draw on a frame).
    """

    def __init__(
        self,
        folder: Path,
        images: list[Path],
        boxes: list[CropBox],
        frame_size: tuple[int, int],
        layout: str,
        cache_frames: int = DEFAULT_CACHE_FRAMES,
    ) -> None:
        self.folder = folder
        self.images = images
        self.boxes = boxes
        self.frame_size = frame_size  # (width, height)
        self.layout = layout  # "landmarks" or "rects"
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_frames = max(1, cache_frames)
        self._lock = threading.Lock()

    @classmethod
    def open(cls, folder: str | Path, cache_frames: int = DEFAULT_CACHE_FRAMES) -> Avatar:
        """Find and validate a template: images 0..K-1, one box each, one frame size, readable image headers.

        Landmarks win over cache/crop_rectangles.json when both exist, because the rectangles are derived from them.
        """
        root = _find_dataset_folder(Path(folder))
        images = _index_images(root / "full_body_img")
        landmark_dir = root / "landmarks"
        rect_file = root / "cache" / "crop_rectangles.json"
        if landmark_dir.is_dir():
            boxes, layout = _boxes_from_landmarks(landmark_dir, len(images)), "landmarks"
        elif rect_file.is_file():
            boxes, layout = _boxes_from_rectangles(rect_file, len(images)), "rects"
        else:
            raise InputError(
                f"avatar {root}: expected landmarks/<i>.lms or cache/crop_rectangles.json next to full_body_img/, "
                "found neither"
            )
        frame_size = None
        for path in images:
            limits.input_file(path, "avatar image", "a JPEG or PNG file")  # a FIFO would block the header read
            size = image_size(path)
            if size is None:
                raise InputError(f"avatar image {path}: expected a readable JPEG or PNG, found a damaged or unknown file")
            limits.check_image(size[0], size[1], f"avatar image {path}")  # before any frame is decoded
            if frame_size is None:
                frame_size = size
            elif size != frame_size:
                raise InputError(
                    f"avatar image {path}: expected {frame_size[0]}x{frame_size[1]} like {images[0].name}, "
                    f"found {size[0]}x{size[1]}"
                )
        assert frame_size is not None
        width, height = frame_size
        for index, box in enumerate(boxes):
            top, bottom, left, right = box.region(height, width)
            if bottom <= top or right <= left:
                raise InputError(
                    f"avatar {root}: expected crop box {index} {box.as_list()} to select pixels of the "
                    f"{width}x{height} frame, found an empty region (negative bounds count from the far edge)"
                )
        if cache_frames == DEFAULT_CACHE_FRAMES:  # not chosen by the caller: as many as the byte budget allows
            cache_frames = max(DEFAULT_CACHE_FRAMES, TEMPLATE_CACHE_BYTES // max(1, width * height * 3))
        return cls(root, images, boxes, frame_size, layout, cache_frames)

    @property
    def num_templates(self) -> int:
        return len(self.images)

    def _check_index(self, k: int) -> int:
        if not 0 <= k < len(self.images):
            raise IndexError(f"template frame {k} out of range 0..{len(self.images) - 1}")
        return int(k)

    def crop_box(self, k: int) -> CropBox:
        return self.boxes[self._check_index(k)]

    def frame(self, k: int) -> np.ndarray:
        """Template frame k as a read-only BGR uint8 view (decoded once, kept while recently used)."""
        k = self._check_index(k)
        with self._lock:
            cached = self._cache.get(k)
            if cached is not None:
                self._cache.move_to_end(k)
                return cached.view()
        decoded = self._decode(k)
        with self._lock:
            self._cache[k] = decoded
            self._cache.move_to_end(k)
            while len(self._cache) > self._cache_frames:
                self._cache.popitem(last=False)
        return decoded.view()

    def _decode(self, k: int) -> np.ndarray:
        path = self.images[k]
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise InputError(f"avatar image {path}: expected a decodable JPEG or PNG, found data cv2 cannot decode")
        width, height = self.frame_size
        if image.shape[:2] != (height, width):
            raise InputError(
                f"avatar image {path}: expected {width}x{height} after decoding, found {image.shape[1]}x{image.shape[0]} "
                "(an EXIF rotation?)"
            )
        image.setflags(write=False)
        return image

    def __repr__(self) -> str:
        return f"Avatar({str(self.folder)!r}, {self.num_templates} frames {self.frame_size[0]}x{self.frame_size[1]}, {self.layout})"
