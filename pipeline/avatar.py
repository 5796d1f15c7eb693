"""Avatar templates on disk: dataset discovery, landmark and rectangle files, and decoded-frame caching.

The face geometry the generator sees (crop box, resize, mask, paste-back, ping-pong order) is pipeline/crop.py;
this module finds the template frames and their crop boxes and hands out the frames.

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
from pathlib import Path

import cv2
import numpy as np

from core import limits
from core.errors import InputError
from pipeline.crop import NUM_LANDMARKS, CropBox, crop_box_from_landmarks

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
DEFAULT_CACHE_FRAMES = 16
# Decoded templates kept per avatar: ping-pong playback visits all K templates in turn, so an LRU smaller than K
# decodes a JPEG for every frame (1-2 ms of the render path). Keep as many as fit this budget (a 100-frame 400x384
# template is 46 MB; 1280x720 frames give about 90), and never fewer than DEFAULT_CACHE_FRAMES.
TEMPLATE_CACHE_BYTES = 256 * 1024 * 1024


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
