"""The side-by-side picture that leaves the app: lanes in columns, each titled, with the frame number and time.

One function draws it for every export (the `render` command's video and PNG, the window's File > Export video, the
HTML report's key frames), so a picture someone takes to a meeting always says which lane is which, at what scale,
from which runtime, and at what moment of the clip. Plain numpy + cv2 (no Qt), so the CLI and the window share it.

Text is drawn with cv2.putText, whose Hershey fonts know ASCII only: names and provenance are transliterated
(``·`` -> ``|``, ``→`` -> ``->``, ``×`` -> ``x``) and anything else becomes ``?`` rather than a wrong glyph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import cv2
import numpy as np

from core.constants import VIDEO_FPS
from core.errors import InputError

BACKGROUND = (36, 33, 32)  # BGR, the window's dark grey
TEXT = (235, 235, 235)
MUTED = (166, 160, 154)
ACCENT = (80, 200, 255)  # amber-ish, for the reference badge and the difference panel
ERROR = (90, 90, 230)
GAP = 6  # pixels between columns
MARGIN = 8
FONT = cv2.FONT_HERSHEY_SIMPLEX
TITLE_SCALE, TITLE_THICK = 0.55, 1
SMALL_SCALE, SMALL_THICK = 0.4, 1
DEFAULT_DIFF_GAIN = 4.0

_TRANSLITERATE = {
    "·": "|", "→": "->", "×": "x", "²": "2", "≈": "~", "…": "...", "–": "-", "—": "-", "−": "-", "µ": "u",
    "‘": "'", "’": "'", "“": '"', "”": '"', "●": "*", "≤": "<=", "≥": ">=",
}


class FrameLike(Protocol):
    """What a lane renders (pipeline.lane.RenderedFrame): the full frame and the generator's crop, BGR uint8."""

    image: np.ndarray
    crop: np.ndarray


@dataclass(frozen=True)
class PanelLabel:
    """The words above one lane's column."""

    name: str
    scale: float = 1.0
    provenance: tuple[str, ...] = ()  # one line per role, e.g. "encoder: onnxruntime 1.22.0 | CPU | fp32"
    reference: bool = False


@dataclass(frozen=True)
class ComposeOptions:
    crop: bool = False  # add each lane's generator crop, enlarged to the column width, below its frame
    diff: bool = False  # add a column |reference - other| x gain (the first lane that is not the reference)
    diff_gain: float = DEFAULT_DIFF_GAIN
    title: str | None = None  # the session's title, top left
    fps: int = VIDEO_FPS


def ascii_text(text: str) -> str:
    """What cv2's Hershey fonts can draw: known symbols spelled out, anything else non-ASCII as '?'."""
    out = "".join(_TRANSLITERATE.get(ch, ch) for ch in str(text))
    return out.encode("ascii", errors="replace").decode("ascii")


def label_for_lane(lane: Any, scale: float | None = None, reference: bool = False) -> PanelLabel:
    """A PanelLabel from a pipeline Lane (or a FailedLane, which has a name and a message but no provenance).

    Provenance that cannot be read (a lane whose encoder failed) is written as the reason, because a title that
    silently omits it would look like a lane that has none.
    """
    spec = getattr(lane, "spec", None)
    lane_scale = float(scale if scale is not None else getattr(spec, "scale", 1.0))
    lines: list[str] = []
    if spec is not None and callable(getattr(spec, "describe_sources", None)):
        lines.append(spec.describe_sources())
    for role, attribute in (("encoder", "encoder_provenance"), ("generator", "generator_provenance")):
        if not hasattr(type(lane), attribute):
            continue
        try:
            value = getattr(lane, attribute)
        except Exception as exc:  # noqa: BLE001 - any reason a provenance is missing is worth showing
            lines.append(f"{role}: {exc}")
            continue
        if value is not None:
            lines.append(f"{role}: {value.summary()}")
    return PanelLabel(str(getattr(lane, "name", "lane")), lane_scale, tuple(lines), reference)


def _text_width(text: str, scale: float, thickness: int) -> int:
    return int(cv2.getTextSize(text, FONT, scale, thickness)[0][0])


def wrap_text(text: str, width: int, scale: float = SMALL_SCALE, thickness: int = SMALL_THICK,
              max_lines: int = 3) -> list[str]:
    """Greedy word wrap to ``width`` pixels; a word longer than a line is cut; the last line ends in '...' when
    the text does not fit in ``max_lines`` (a column must never grow with a long file name)."""
    words = ascii_text(text).split()
    lines: list[str] = []
    current = ""
    for word in words:
        candidate = f"{current} {word}".strip()
        if _text_width(candidate, scale, thickness) <= width:
            current = candidate
            continue
        if current:
            lines.append(current)
        current = word
        while _text_width(current, scale, thickness) > width and len(current) > 1:
            cut = len(current)
            while cut > 1 and _text_width(current[:cut], scale, thickness) > width:
                cut -= 1
            lines.append(current[:cut])
            current = current[cut:]
    if current:
        lines.append(current)
    if len(lines) > max_lines:
        last = lines[max_lines - 1]
        while last and _text_width(last + "...", scale, thickness) > width:
            last = last[:-1]
        lines = lines[: max_lines - 1] + [last + "..."]
    return lines


def _line_height(scale: float) -> int:
    return int(round(30 * scale)) + 4


def _put(canvas: np.ndarray, text: str, x: int, y: int, scale: float, colour: tuple[int, int, int],
         thickness: int) -> None:
    cv2.putText(canvas, text, (x, y), FONT, scale, colour, thickness, cv2.LINE_AA)


def _header_lines(label: PanelLabel, width: int) -> list[tuple[str, float, tuple[int, int, int], int]]:
    lines: list[tuple[str, float, tuple[int, int, int], int]] = []
    for line in wrap_text(label.name, width, TITLE_SCALE, TITLE_THICK, max_lines=2):
        lines.append((line, TITLE_SCALE, TEXT, TITLE_THICK))
    badge = [f"scale {label.scale:g}x"]
    if label.reference:
        badge.append("reference")
    lines.append(("  |  ".join(badge), SMALL_SCALE, ACCENT if label.reference else MUTED, SMALL_THICK))
    for prov in label.provenance:
        for line in wrap_text(prov, width, SMALL_SCALE, SMALL_THICK, max_lines=2):
            lines.append((line, SMALL_SCALE, MUTED, SMALL_THICK))
    return lines


def _draw_lines(canvas: np.ndarray, lines: list[tuple[str, float, tuple[int, int, int], int]], x: int, y: int) -> int:
    for text, scale, colour, thickness in lines:
        y += _line_height(scale)
        _put(canvas, text, x, y - 6, scale, colour, thickness)
    return y


def _lines_height(lines: list[tuple[str, float, tuple[int, int, int], int]]) -> int:
    return sum(_line_height(scale) for _, scale, _, _ in lines)


def _fit(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``image`` resized to exactly width x height (aspect kept, letterboxed on the background colour)."""
    image = _as_bgr(image)
    h, w = image.shape[:2]
    factor = min(width / w, height / h)
    new_w, new_h = max(1, int(round(w * factor))), max(1, int(round(h * factor)))
    interpolation = cv2.INTER_NEAREST if factor >= 2 else cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    out = np.empty((height, width, 3), np.uint8)
    out[:] = BACKGROUND
    y0, x0 = (height - new_h) // 2, (width - new_w) // 2
    out[y0:y0 + new_h, x0:x0 + new_w] = resized
    return out


def _as_bgr(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise InputError(f"compose: expected uint8 pictures, found {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"compose: expected [H, W, 3] BGR pictures, found {list(image.shape)}")
    return image


def _message_panel(message: str, width: int, height: int) -> np.ndarray:
    panel = np.empty((height, width, 3), np.uint8)
    panel[:] = (48, 44, 44)
    if not message:
        return panel  # a placeholder (the crop row of a lane without a picture)
    y = MARGIN
    _put(panel, "cannot render:", MARGIN, y + 16, TITLE_SCALE, ERROR, TITLE_THICK)
    y += 26
    for line in wrap_text(message, width - 2 * MARGIN, SMALL_SCALE, SMALL_THICK, max_lines=12):
        y += _line_height(SMALL_SCALE)
        _put(panel, line, MARGIN, y, SMALL_SCALE, TEXT, SMALL_THICK)
    return panel


def difference(a: np.ndarray, b: np.ndarray, gain: float) -> tuple[np.ndarray, int]:
    """|a - b| x gain as a picture, and the largest raw difference in grey levels (what the window's Difference
    view shows). Pictures of different sizes are compared after fitting b to a's size."""
    a, b = _as_bgr(a), _as_bgr(b)
    if a.shape != b.shape:
        b = cv2.resize(b, (a.shape[1], a.shape[0]), interpolation=cv2.INTER_AREA)
    raw = cv2.absdiff(a, b)
    scaled = np.clip(raw.astype(np.float32) * float(gain), 0, 255).astype(np.uint8)
    return scaled, int(raw.max()) if raw.size else 0


def frame_time_text(frame: int, total: int, fps: int = VIDEO_FPS) -> str:
    """'frame 29 / 322   1.16 s': the same words as the window's frame label."""
    return f"frame {frame} / {max(total - 1, 0)}   {frame / fps:.2f} s"


def compose_frame(
    frames: Sequence[FrameLike | str | None],
    labels: Sequence[PanelLabel],
    frame: int,
    total: int,
    options: ComposeOptions = ComposeOptions(),
) -> np.ndarray:
    """One exported picture, BGR uint8 with even width and height (what H.264 in yuv420p needs).

    ``frames[k]`` is lane k's RenderedFrame for ``frame``, or a message (str) saying why that lane has no picture;
    ``labels[k]`` titles its column. All pictures are shown at the first picture's height, so lanes whose frames
    come from another program's dump at another size still line up.
    """
    if len(frames) != len(labels):
        raise InputError(f"compose: {len(frames)} pictures for {len(labels)} lane titles")
    if not frames:
        raise InputError("compose: expected at least one lane to draw, found none")
    pictures = [f for f in frames if f is not None and not isinstance(f, str)]
    if pictures:
        ref_h, ref_w = _as_bgr(pictures[0].image).shape[:2]
    else:
        ref_h, ref_w = 400, 384
    columns: list[tuple[list, np.ndarray, np.ndarray | None]] = []
    widths: list[int] = []
    for item, label in zip(frames, labels):
        if item is None or isinstance(item, str):
            width = ref_w
            body = _message_panel(item or "no picture for this frame", width, ref_h)
            crop = _message_panel("", width, width) if options.crop else None
        else:
            h, w = item.image.shape[:2]
            width = max(1, int(round(w * ref_h / h)))
            body = _fit(item.image, width, ref_h)
            crop = _fit(item.crop, width, width) if options.crop else None
        widths.append(width)
        columns.append((_header_lines(label, width - 2 * MARGIN), body, crop))

    if options.diff:
        columns.append(_diff_column(frames, labels, ref_w, ref_h, options))
        widths.append(ref_w)

    header_h = max(_lines_height(lines) for lines, _, _ in columns) + MARGIN
    top_h = 34
    crop_h = max((c.shape[0] for _, _, c in columns if c is not None), default=0)
    body_h = ref_h + (crop_h + GAP if options.crop else 0)
    width = sum(widths) + GAP * (len(widths) + 1)
    height = top_h + header_h + body_h + GAP
    width += width % 2
    height += height % 2
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = BACKGROUND

    title = ascii_text(options.title or "lipsync-compare")
    stamp = frame_time_text(frame, total, options.fps)
    stamp_w = _text_width(stamp, TITLE_SCALE, TITLE_THICK)
    title_lines = wrap_text(title, max(40, width - stamp_w - 4 * MARGIN), TITLE_SCALE, TITLE_THICK, max_lines=1)
    _put(canvas, title_lines[0] if title_lines else "", MARGIN, 23, TITLE_SCALE, TEXT, TITLE_THICK)
    _put(canvas, stamp, width - stamp_w - MARGIN, 23, TITLE_SCALE, ACCENT, TITLE_THICK)

    x = GAP
    for (lines, body, crop), col_w in zip(columns, widths):
        _draw_lines(canvas, lines, x + MARGIN // 2, top_h)
        y = top_h + header_h
        canvas[y:y + body.shape[0], x:x + col_w] = body
        if crop is not None:
            y += ref_h + GAP
            canvas[y:y + crop.shape[0], x:x + col_w] = crop
        x += col_w + GAP
    return canvas


def _diff_column(frames: Sequence[FrameLike | str | None], labels: Sequence[PanelLabel], width: int, height: int,
                 options: ComposeOptions) -> tuple[list, np.ndarray, np.ndarray | None]:
    """|reference - first other lane| x gain, titled with both names and the largest raw difference."""
    ref_index = next((k for k, label in enumerate(labels) if label.reference), 0)
    other_index = next((k for k in range(len(labels)) if k != ref_index), None)
    crop = None
    if other_index is None:
        message = "a difference needs two lanes"
        lines = [("difference", TITLE_SCALE, ACCENT, TITLE_THICK)]
        return lines, _message_panel(message, width, height), (_message_panel("", width, width) if options.crop else None)
    a, b = frames[ref_index], frames[other_index]
    names = f"{labels[ref_index].name} vs {labels[other_index].name}"
    lines = [(line, TITLE_SCALE, ACCENT, TITLE_THICK)
             for line in wrap_text(f"|difference| x{options.diff_gain:g}", width - 2 * MARGIN, TITLE_SCALE, TITLE_THICK, 1)]
    lines += [(line, SMALL_SCALE, MUTED, SMALL_THICK) for line in wrap_text(names, width - 2 * MARGIN, max_lines=2)]
    if a is None or b is None or isinstance(a, str) or isinstance(b, str):
        body = _message_panel("both lanes need a picture for a difference", width, height)
        if options.crop:
            crop = _message_panel("", width, width)
        return lines, body, crop
    picture, largest = difference(a.image, b.image, options.diff_gain)
    lines.append((f"largest difference {largest} grey levels (of 255)", SMALL_SCALE, MUTED, SMALL_THICK))
    body = _fit(picture, width, height)
    if options.crop:
        crop_picture, _ = difference(a.crop, b.crop, options.diff_gain)
        crop = _fit(crop_picture, width, width)
    return lines, body, crop
