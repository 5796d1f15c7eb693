"""`report --html`: one self-contained page that a person who never runs the app can read, print or mail.

Everything is inside the file: the style sheet is inline, the plots and mouth pictures are PNGs embedded as
``data:`` URIs, and there is no script, font, link or image from anywhere else, so it opens the same offline, in a
mail client's preview, or years later. Plots are drawn here with numpy + cv2 (no plotting library, no Qt), on
shared axes across lanes: a lane whose features are 27x smaller than the reference's must *look* 27x smaller.

The page is built from the report's JSON form (``Report.to_json()``) plus the lanes themselves (for the feature
ranges and the mouth pictures), so verdict kinds, evidence and fields added to the report later are shown without
changes here: unknown diagnosis fields are listed under "evidence".
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import importlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from core.constants import SAMPLE_RATE, VIDEO_FPS
from core.errors import InputError
from pipeline.metrics import RowRanges, per_row_ranges

LANE_COLOURS = ["#1a73e8", "#d93025", "#188038", "#e37400", "#9334e6", "#007b83"]  # readable on white, in print
KEY_FRAMES = 4
CROP_DISPLAY = 176  # px: the 160 px generator crop, slightly enlarged
PLOT_SIZE = (1120, 190)


# -- small drawing kit ------------------------------------------------------------------------------------------
def _bgr(colour: str, lighten: float = 0.0) -> tuple[int, int, int]:
    r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    r, g, b = (int(c + (255 - c) * lighten) for c in (r, g, b))
    return (b, g, r)


def png_data_uri(image: np.ndarray) -> str:
    """A BGR uint8 picture as a ``data:image/png;base64,...`` URI (embedded, never a file beside the page)."""
    ok, data = cv2.imencode(".png", np.ascontiguousarray(image), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise InputError("html report: a picture could not be encoded as PNG")
    return "data:image/png;base64," + base64.b64encode(data.tobytes()).decode("ascii")


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 5 x 10^k steps) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step) * step
    ticks = []
    value = first
    while value <= hi + step * 1e-9:
        ticks.append(0.0 if abs(value) < step * 1e-9 else float(value))
        value += step
    return ticks


def _tick_label(value: float) -> str:
    return f"{value:.4g}"


@dataclass
class _Axes:
    width: int
    height: int
    x_range: tuple[float, float]
    y_range: tuple[float, float]
    left: int = 64
    right: int = 12
    top: int = 24
    bottom: int = 30

    def x(self, values: np.ndarray) -> np.ndarray:
        lo, hi = self.x_range
        return self.left + (np.asarray(values, np.float64) - lo) / max(hi - lo, 1e-12) * (self.width - self.left - self.right)

    def y(self, values: np.ndarray) -> np.ndarray:
        lo, hi = self.y_range
        span = max(hi - lo, 1e-12)
        return self.height - self.bottom - (np.asarray(values, np.float64) - lo) / span * (self.height - self.top - self.bottom)


def _blank_axes(axes: _Axes, title: str, colour: str, x_label: str) -> np.ndarray:
    canvas = np.full((axes.height, axes.width, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    grid, ink = (228, 228, 228), (90, 90, 90)
    for value in nice_ticks(*axes.y_range):
        y = int(round(float(axes.y(np.array([value]))[0])))
        cv2.line(canvas, (axes.left, y), (axes.width - axes.right, y), grid, 1)
        label = _tick_label(value)
        w = cv2.getTextSize(label, font, 0.38, 1)[0][0]
        cv2.putText(canvas, label, (axes.left - 6 - w, y + 4), font, 0.38, ink, 1, cv2.LINE_AA)
    x_lo, x_hi = axes.x_range
    for value in nice_ticks(x_lo / VIDEO_FPS, x_hi / VIDEO_FPS, 8):  # seconds on the x axis, frames underneath
        x = int(round(float(axes.x(np.array([value * VIDEO_FPS]))[0])))
        cv2.line(canvas, (x, axes.top), (x, axes.height - axes.bottom), grid, 1)
        label = f"{value:g} s"
        w = cv2.getTextSize(label, font, 0.38, 1)[0][0]
        cv2.putText(canvas, label, (x - w // 2, axes.height - axes.bottom + 14), font, 0.38, ink, 1, cv2.LINE_AA)
    cv2.rectangle(canvas, (axes.left, axes.top), (axes.width - axes.right, axes.height - axes.bottom), (170, 170, 170), 1)
    cv2.putText(canvas, _ascii(title), (axes.left, 16), font, 0.48, _bgr(colour), 1, cv2.LINE_AA)
    w = cv2.getTextSize(x_label, font, 0.36, 1)[0][0]
    cv2.putText(canvas, x_label, (axes.width - axes.right - w, axes.height - 3), font, 0.36, ink, 1, cv2.LINE_AA)
    return canvas


def _ascii(text: str) -> str:
    from pipeline.compose import ascii_text

    return ascii_text(text)


def _finite_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) runs where ``mask`` is true: NaN rows are drawn as gaps, not as lines through zero."""
    runs, start = [], None
    for i, ok in enumerate(mask):
        if ok and start is None:
            start = i
        elif not ok and start is not None:
            runs.append((start, i))
            start = None
    if start is not None:
        runs.append((start, len(mask)))
    return runs


def _band(canvas: np.ndarray, axes: _Axes, x: np.ndarray, lo: np.ndarray, hi: np.ndarray,
          colour: tuple[int, int, int]) -> None:
    ok = np.isfinite(lo) & np.isfinite(hi)
    for a, b in _finite_runs(ok):
        xs = axes.x(x[a:b])
        top = np.stack([xs, axes.y(hi[a:b])], axis=1)
        bottom = np.stack([xs[::-1], axes.y(lo[a:b])[::-1]], axis=1)
        polygon = np.round(np.concatenate([top, bottom])).astype(np.int32)
        if b - a == 1:
            cv2.line(canvas, tuple(polygon[0]), tuple(polygon[1]), colour, 1)
        else:
            cv2.fillPoly(canvas, [polygon], colour, cv2.LINE_AA)


def _line(canvas: np.ndarray, axes: _Axes, x: np.ndarray, y: np.ndarray, colour: tuple[int, int, int],
          thickness: int = 1) -> None:
    for a, b in _finite_runs(np.isfinite(y)):
        points = np.round(np.stack([axes.x(x[a:b]), axes.y(y[a:b])], axis=1)).astype(np.int32)
        cv2.polylines(canvas, [points], False, colour, thickness, cv2.LINE_AA)


def feature_range_plots(series: Sequence[tuple[str, str, RowRanges]], size: tuple[int, int] = PLOT_SIZE) -> list[np.ndarray]:
    """One plot per lane of its feature range over time (min-max band, p1-p99 band, mean line), every plot on the
    same x and y axes so lanes compare by eye."""
    finite = [v for _, _, r in series for v in (r.min, r.max) if np.isfinite(v).any()]
    if finite:
        lo = float(min(np.nanmin(np.where(np.isfinite(v), v, np.nan)) for v in finite))
        hi = float(max(np.nanmax(np.where(np.isfinite(v), v, np.nan)) for v in finite))
    else:
        lo, hi = 0.0, 1.0
    if hi <= lo:
        hi = lo + 1.0
    pad = (hi - lo) * 0.04
    rows = max((len(r.mean) for _, _, r in series), default=1)
    plots = []
    for name, colour, ranges in series:
        axes = _Axes(size[0], size[1], (0.0, float(max(rows - 1, 1))), (lo - pad, hi + pad))
        canvas = _blank_axes(axes, f"{name}: features per frame (min-max, p1-p99, mean)", colour, "time (25 frames/s)")
        x = np.arange(len(ranges.mean), dtype=np.float64)
        _band(canvas, axes, x, np.asarray(ranges.min), np.asarray(ranges.max), _bgr(colour, 0.78))
        _band(canvas, axes, x, np.asarray(ranges.p1), np.asarray(ranges.p99), _bgr(colour, 0.5))
        _line(canvas, axes, x, np.asarray(ranges.mean), _bgr(colour), 2)
        if not np.isfinite(np.asarray(ranges.mean)).any():
            cv2.putText(canvas, "no finite features", (axes.left + 10, axes.top + 30), cv2.FONT_HERSHEY_SIMPLEX,
                        0.5, (40, 40, 200), 1, cv2.LINE_AA)
        plots.append(canvas)
    return plots


def line_plot(series: Sequence[tuple[str, str, np.ndarray]], title: str, y_label: str,
              size: tuple[int, int] = (1120, 240), x: np.ndarray | None = None,
              frames: int | None = None) -> np.ndarray:
    """Several lanes' values on one plot (the mouth opening over time), with a legend. ``x`` holds the frame of
    each value (default 0, 1, 2, ...); ``frames`` the clip's length for the time axis."""
    values = [np.asarray(v, np.float64) for _, _, v in series]
    finite = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.zeros(0)
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1.0
    pad = (hi - lo) * 0.05
    rows = frames if frames is not None else max((len(v) for v in values), default=1)
    axes = _Axes(size[0], size[1], (0.0, float(max(rows - 1, 1))), (lo - pad, hi + pad))
    canvas = _blank_axes(axes, title, "#202124", "time (25 frames/s)")
    for (name, colour, _), v in zip(series, values):
        xs = np.arange(len(v), dtype=np.float64) if x is None else np.asarray(x, np.float64)
        _line(canvas, axes, xs, v, _bgr(colour), 2)
    right = axes.width - axes.right - 8
    font = cv2.FONT_HERSHEY_SIMPLEX
    for k, (name, colour, _) in enumerate(series if len(series) > 1 else []):  # legend, top right
        label = _ascii(name)
        w = cv2.getTextSize(label, font, 0.4, 1)[0][0]
        y = axes.top + 16 + 16 * k
        cv2.line(canvas, (right - w - 26, y - 4), (right - w - 8, y - 4), _bgr(colour), 3)
        cv2.putText(canvas, label, (right - w, y), font, 0.4, (50, 50, 50), 1, cv2.LINE_AA)
    cv2.putText(canvas, _ascii(y_label), (4, axes.top - 8), font, 0.36, (90, 90, 90), 1, cv2.LINE_AA)
    return canvas


# -- choosing what to show ----------------------------------------------------------------------------------------
def key_frames(samples: np.ndarray, total: int, count: int = KEY_FRAMES, min_gap: int = 12) -> list[int]:
    """Frames worth looking at: the loudest moments of the speech (an open mouth is expected there), spread at least
    ``min_gap`` frames apart, and the quietest one (a closed mouth is expected), in time order."""
    if total <= 0:
        return []
    per = SAMPLE_RATE // VIDEO_FPS
    samples = np.asarray(samples, np.float32).reshape(-1)
    padded = np.zeros(total * per, np.float32)
    piece = samples[: total * per]
    padded[: len(piece)] = piece
    loudness = np.sqrt(np.mean(padded.reshape(total, per).astype(np.float64) ** 2, axis=1))
    chosen: list[int] = []
    for i in np.argsort(-loudness, kind="stable"):
        if len(chosen) >= max(count - 1, 1):
            break
        if all(abs(int(i) - c) >= min_gap for c in chosen):
            chosen.append(int(i))
    quiet = [int(i) for i in np.argsort(loudness, kind="stable") if all(abs(int(i) - c) >= min_gap for c in chosen)]
    if quiet and count > 1:
        chosen.append(quiet[0])
    return sorted(chosen)


def mouth_pictures(lanes: Sequence[Any], frames: Sequence[int]) -> list[list[str | np.ndarray]]:
    """[frame][lane]: each lane's generator crop at each key frame (BGR), or the reason it has none."""
    grid: list[list[str | np.ndarray]] = []
    for i in frames:
        row: list[str | np.ndarray] = []
        for lane in lanes:
            if getattr(lane, "message", None) is not None and not hasattr(lane, "frame"):
                row.append(str(lane.message))
                continue
            try:
                crop = lane.frame(i).crop
                row.append(cv2.resize(crop, (CROP_DISPLAY, CROP_DISPLAY), interpolation=cv2.INTER_LINEAR))
            except InputError as exc:
                row.append(str(exc))
        grid.append(row)
    return grid


MOUTH_PLOT_POINTS = 160  # frames measured per lane for the mouth plot: every frame of a short clip, a stride beyond


def mouth_opening_series(lanes: Sequence[Any], total: int) -> tuple[list[int], list[tuple[str, np.ndarray]]] | None:
    """Each lane's mouth opening (pipeline/mouth.py's measure on its generated crops) over the clip, or None when
    that module is not there. Long clips are measured at a stride so the page stays quick to build."""
    try:
        mouth = importlib.import_module("pipeline.mouth")
    except ModuleNotFoundError:
        return None
    measure = getattr(mouth, "mouth_opening", None)
    if not callable(measure) or total <= 0:
        return None
    stride = max(1, math.ceil(total / MOUTH_PLOT_POINTS))
    frames = list(range(0, total, stride))
    series = []
    for lane in lanes:
        if not hasattr(lane, "frame"):
            continue
        try:
            crops = np.stack([lane.frame(i).crop for i in frames])
            series.append((lane.name, np.asarray(measure(crops), np.float64).reshape(-1)))
        except InputError:
            continue
    return (frames, series) if series else None


def _mouth_section(lanes: Sequence[Any], total: int, samples: np.ndarray | None, colours: dict[str, str],
                   measures: list[dict[str, Any]]) -> str:
    opening = mouth_opening_series(lanes, total)
    if opening is None:
        return ""
    frames, values = opening
    parts = ["<h2>Mouth opening over time</h2><p class=\"muted small\">The height in pixels of the open mouth's "
             "interior in each lane's generated crop (pipeline/mouth.py), frame by frame"
             + (f" (one frame in {frames[1] - frames[0]})" if len(frames) > 1 and frames[1] - frames[0] > 1 else "")
             + ", above the loudness of the audio the generator hears: a mouth that follows the speech rises "
             "where the audio is loud.</p>"]
    series = [(name, colours.get(name, _colour(k)), v) for k, (name, v) in enumerate(values)]
    parts.append(_img(png_data_uri(line_plot(series, "Mouth opening (px)", "px", x=np.asarray(frames), frames=total)),
                      "mouth opening over time", "plot"))
    mouth = importlib.import_module("pipeline.mouth")
    envelope = getattr(mouth, "loudness_envelope", None)
    if samples is not None and callable(envelope):
        loud = np.asarray(envelope(samples, frames), np.float64)
        parts.append(_img(png_data_uri(line_plot([("audio loudness", "#5f6368", loud)], "Audio loudness (dB)", "dB",
                                                  size=(PLOT_SIZE[0], 150), x=np.asarray(frames), frames=total)),
                          "audio loudness over time", "plot"))
    summaries = [m for m in measures if isinstance(m, dict) and m.get("summary")]
    if summaries:
        parts.append("<ul>" + "".join(f"<li><b>{_e(m.get('lane'))}</b>: {_e(m.get('summary'))}</li>"
                                      for m in summaries) + "</ul>")
    return "\n".join(parts)


# -- the page -----------------------------------------------------------------------------------------------------
_STYLE = """
body { font: 15px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: #202124;
       margin: 0; background: #f6f7f9; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 48px; background: #fff; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 19px; margin: 32px 0 10px; border-bottom: 1px solid #dadce0;
     padding-bottom: 4px; } h3 { font-size: 16px; margin: 18px 0 6px; }
.muted { color: #5f6368; } .small { font-size: 13px; }
table { border-collapse: collapse; width: 100%; margin: 8px 0; font-size: 13px; }
th, td { border: 1px solid #dadce0; padding: 4px 7px; text-align: left; vertical-align: top; }
th { background: #f1f3f4; font-weight: 600; }
table.evidence th { font-weight: normal; color: #5f6368; } td.num { text-align: right; font-variant-numeric: tabular-nums;
     white-space: nowrap; }
.pass { color: #137333; font-weight: 600; } .fail { color: #c5221f; font-weight: 600; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600;
         background: #e8eaed; }
.badge.pass { background: #e6f4ea; } .badge.fail { background: #fce8e6; }
.verdict { border: 1px solid #dadce0; border-left: 5px solid #dadce0; border-radius: 4px; padding: 8px 12px;
           margin: 10px 0; } .verdict.v-pass { border-left-color: #188038; }
.verdict.v-fail { border-left-color: #d93025; }
.verdict p { margin: 4px 0; font-weight: normal; color: #202124; }
.swatch { display: inline-block; width: 11px; height: 11px; border-radius: 2px; margin-right: 6px; }
img.plot { display: block; max-width: 100%; margin: 6px 0; border: 1px solid #e8eaed; }
table.mouths td { text-align: center; } table.mouths img { display: block; margin: 0 auto; }
code { font: 12px/1.3 ui-monospace, Menlo, Consolas, monospace; background: #f1f3f4; padding: 0 3px;
       word-break: break-all; }
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _num(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return _e(value)
        return f"{value:.4g}"
    return _e(value)


def _colour(index: int) -> str:
    return LANE_COLOURS[index % len(LANE_COLOURS)]


def _provenance_line(prov: dict[str, Any] | None) -> str:
    if not prov:
        return "–"
    parts = [f"{prov.get('runtime', '')} {prov.get('version', '')}".strip(), prov.get("provider", ""),
             prov.get("precision", "")]
    text = " · ".join(_e(p) for p in parts if p)
    details = prov.get("details") or {}
    extra = ", ".join(f"{_e(k)}={_e(v)}" for k, v in details.items())
    source = prov.get("source")
    lines = [text]
    if source:
        lines.append(f'<span class="muted small">from <code>{_e(Path(str(source)).name)}</code></span>')
    if extra:
        lines.append(f'<span class="muted small">{extra}</span>')
    return "<br>".join(lines)


def _img(uri: str, alt: str, css: str = "", width: int | None = None) -> str:
    size = f' width="{width}"' if width else ""
    return f'<img class="{css}" src="{uri}" alt="{_e(alt)}"{size}>'


def _value_text(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{_e(k)}: {_value_text(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_value_text(v) for v in value)
    return _num(value)


def _evidence_rows(entry: dict[str, Any], known: set[str], per_row: int = 3) -> str:
    """Every other field of a verdict (its evidence, the per-stage status, other explanations, the mouth summary),
    figures three to a row, so kinds and figures added to the report later appear without changes here."""
    lines: list[str] = []
    pairs: list[tuple[str, str]] = []
    for key, value in entry.items():
        if key in known or value in (None, "", [], {}):
            continue
        label = key.replace("_", " ")
        if key == "stages" and isinstance(value, dict):
            lines.append("<b>stages</b>: " + " → ".join(f"{_e(k)}: {_value_text(v)}" for k, v in value.items()))
        elif isinstance(value, dict):
            pairs.extend((str(sub).replace("_", " "), _value_text(item)) for sub, item in value.items()
                         if item not in (None, "", [], {}))
        elif isinstance(value, str) and len(value) > 40:
            lines.append(f"<b>{_e(label)}</b>: {_e(value)}")
        else:
            pairs.append((label, _value_text(value)))
    out = "".join(f'<p class="small">{line}</p>' for line in lines)
    if pairs:
        rows = []
        for start in range(0, len(pairs), per_row):
            chunk = pairs[start:start + per_row]
            cells = "".join(f"<th>{_e(k)}</th><td class=\"num\">{v}</td>" for k, v in chunk)
            cells += "<th></th><td></td>" * (per_row - len(chunk))
            rows.append(f"<tr>{cells}</tr>")
        out += f'<table class="small evidence">{"".join(rows)}</table>'
    return out


def build_html(
    report: Any,
    lanes: Sequence[Any],
    *,
    title: str | None = None,
    session_path: Path | str | None = None,
    audio: Any = None,
    avatar_path: Path | str | None = None,
    command: str | None = None,
    frames: Sequence[int] | None = None,
) -> str:
    """The whole page as one string. ``report`` is a ``pipeline.report.Report`` (or its JSON dict), ``lanes`` the
    session's lanes in the report's order (Lane or FailedLane), ``audio`` the session's ``Audio``; ``frames`` the key
    frames for mouth pictures (default: the loudest moments and the quietest, see :func:`key_frames`)."""
    data = report.to_json() if hasattr(report, "to_json") else dict(report)
    lane_entries: list[dict[str, Any]] = list(data.get("lanes") or [])
    reference = data.get("reference")
    colours = {entry.get("name"): _colour(k) for k, entry in enumerate(lane_entries)}
    working = [lane for lane in lanes if hasattr(lane, "frame")]
    total = 0
    for lane in working:
        try:
            total = int(lane.num_frames)
            break
        except InputError:
            continue
    samples = getattr(audio, "samples", None)
    if samples is None and working:
        samples = getattr(working[0].audio, "samples", None)

    parts: list[str] = []
    page_title = title or "lipsync-compare report"
    generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts.append(f"<h1>{_e(page_title)}</h1>")
    facts = [f"generated {generated} by lipsync-compare"]
    if command:
        facts.append(f"<code>{_e(command)}</code>")
    parts.append(f'<p class="muted small">{" · ".join(facts)}</p>')

    # -- the session
    rows = []
    if session_path is not None:
        rows.append(("session", f"<code>{_e(session_path)}</code>"))
    if audio is not None:
        source = getattr(audio, "path", None)
        duration = len(np.asarray(audio.samples)) / SAMPLE_RATE
        rate = getattr(audio, "source_rate", None)
        channels = getattr(audio, "source_channels", None)
        described = f"{duration:.2f} s"
        if rate:
            described += f", recorded at {rate} Hz" + (f", {channels} channel(s)" if channels else "")
        rows.append(("audio", (f"<code>{_e(source)}</code> — " if source else "") + _e(described)))
    if avatar_path is not None:
        rows.append(("avatar", f"<code>{_e(avatar_path)}</code>"))
    if total:
        rows.append(("video frames", f"{total} at {VIDEO_FPS} frames/s ({total / VIDEO_FPS:.2f} s)"))
    rows.append(("reference lane", _e(reference)))
    if data.get("frames"):
        fr = data["frames"]
        rows.append(("generator compared on", f"{len(fr)} frames: {_e(', '.join(str(f) for f in fr))}"))
    parts.append("<h2>Session</h2><table>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
                 + "</table>")

    # -- verdicts first: what a reader came for
    parts.append("<h2>Verdicts</h2>")
    diagnosis = list(data.get("diagnosis") or [])
    if not diagnosis:
        parts.append('<p class="muted">No lane was compared with the reference (see Errors).</p>')
    known = {"lane", "first_divergent_stage", "explanation", "kind", "passed"}
    for entry in diagnosis:
        passed = entry.get("passed")
        if passed is None:
            passed = entry.get("first_divergent_stage") is None
        css = "pass" if passed else "fail"
        kind = entry.get("kind") or ("match" if passed else "diverges")
        stage = entry.get("first_divergent_stage")
        colour = colours.get(entry.get("lane"), "#888888")
        head = (f'<span class="swatch" style="background:{colour}"></span><b>{_e(entry.get("lane"))}</b> '
                f'<span class="badge {css}">{"MATCHES" if passed else "DIFFERS"} · {_e(kind)}</span>')
        if stage:
            head += f' <span class="muted small">first divergent stage: <b>{_e(stage)}</b></span>'
        parts.append(f'<div class="verdict v-{css}">{head}<p>{_e(entry.get("explanation"))}</p>'
                     f"{_evidence_rows(entry, known)}</div>")

    # -- lanes and provenance
    parts.append("<h2>Lanes and where their numbers come from</h2><table><tr><th>lane</th><th>scale</th>"
                 "<th>encoder</th><th>generator</th></tr>")
    for entry in lane_entries:
        name = entry.get("name")
        prov = entry.get("provenance") or {}
        badge = ' <span class="badge">reference</span>' if name == reference else ""
        if entry.get("error"):
            parts.append(f'<tr><td><span class="swatch" style="background:{colours.get(name)}"></span>{_e(name)}'
                         f'{badge}</td><td colspan="3" class="fail">cannot run: {_e(entry["error"])}</td></tr>')
            continue
        enc_file = Path(str(entry.get("encoder"))).name if entry.get("encoder") else "–"
        gen_file = Path(str(entry.get("generator"))).name if entry.get("generator") else "–"
        parts.append(
            f'<tr><td><span class="swatch" style="background:{colours.get(name)}"></span><b>{_e(name)}</b>{badge}</td>'
            f'<td class="num">{_num(entry.get("scale"))}×</td>'
            f"<td><code>{_e(enc_file)}</code><br>{_provenance_line(prov.get('encoder'))}</td>"
            f"<td><code>{_e(gen_file)}</code><br>{_provenance_line(prov.get('generator'))}</td></tr>")
    parts.append("</table>")

    # -- feature statistics
    stat_keys = ("min", "max", "mean", "std", "p1", "p99", "nan", "inf")
    parts.append("<h3>Encoder features after each lane's scale</h3><table><tr><th>lane</th>"
                 + "".join(f"<th>{k}</th>" for k in stat_keys) + "</tr>")
    for entry in lane_entries:
        feats = entry.get("features")
        if not feats:
            continue
        parts.append(f"<tr><td>{_e(entry.get('name'))}</td>"
                     + "".join(f'<td class="num">{_num(feats.get(k))}</td>' for k in stat_keys) + "</tr>")
    parts.append("</table>")

    # -- per-stage comparisons
    comparisons = list(data.get("comparisons") or [])
    parts.append(f"<h2>Stage by stage, against “{_e(reference)}”</h2>")
    if comparisons:
        cols = ("max_abs", "mean_abs", "cosine", "scale", "r2")
        heads = ("max abs", "mean abs", "cosine", "best scale", "R²")
        parts.append("<table><tr><th>lane</th><th>stage</th><th>result</th><th>kind</th>"
                     + "".join(f"<th>{h}</th>" for h in heads) + "<th>what it means</th></tr>")
        for c in comparisons:
            css = "pass" if c.get("passed") else "fail"
            parts.append(
                f"<tr><td>{_e(c.get('lane'))}</td><td>{_e(c.get('stage'))}</td>"
                f'<td class="{css}">{"PASSED" if c.get("passed") else "FAILED"}</td><td>{_e(c.get("kind", ""))}</td>'
                + "".join(f'<td class="num">{_num(c.get(k))}</td>' for k in cols)
                + f"<td>{_e(c.get('verdict'))}</td></tr>")
        parts.append("</table>")
    else:
        parts.append('<p class="muted">Nothing was compared.</p>')

    # -- feature ranges on shared axes
    series = []
    for k, lane in enumerate(lanes):
        if not hasattr(lane, "features"):
            continue
        try:
            series.append((lane.name, colours.get(lane.name, _colour(k)), per_row_ranges(lane.features())))
        except InputError:
            continue
    if series:
        parts.append("<h2>Encoder features over time</h2><p class=\"muted small\">Each lane's 512 features per "
                     "video frame: the light band is min-max, the darker band p1-p99, the line the mean. Every plot "
                     "has the same axes, so a lane whose features are too small or too large shows it at a glance."
                     "</p>")
        for (name, _, _), plot in zip(series, feature_range_plots(series)):
            parts.append(_img(png_data_uri(plot), f"feature range over time: {name}", "plot"))

    # -- mouth opening over time (pipeline/mouth.py, when present)
    parts.append(_mouth_section(working, total, samples, colours, list(data.get("mouth") or [])))

    # -- mouth pictures at key frames
    if working and total:
        chosen = list(frames) if frames is not None else (key_frames(samples, total) if samples is not None else [])
        chosen = [i for i in chosen if 0 <= i < total]
        grid = mouth_pictures(lanes, chosen) if chosen else []
        if grid and all(isinstance(cell, str) for row in grid for cell in row):
            parts.append("<h2>Mouths at key frames</h2><p class=\"muted\">No lane can draw frames: "
                         + _e(grid[0][0]) + "</p>")
            grid = []
        if grid:
            per = SAMPLE_RATE // VIDEO_FPS
            parts.append("<h2>Mouths at key frames</h2><p class=\"muted small\">The generator's own crop for each "
                         "lane at the loudest moments of the speech (the mouth should be open) and the quietest one "
                         "(it should be closed).</p><table class=\"mouths\"><tr><th>frame</th>"
                         + "".join(f'<th><span class="swatch" style="background:{colours.get(lane.name)}"></span>'
                                   f"{_e(lane.name)}</th>" for lane in lanes) + "</tr>")
            for i, row in zip(chosen, grid):
                loud = ""
                if samples is not None:
                    piece = np.asarray(samples, np.float64)[i * per:(i + 1) * per]
                    rms = float(np.sqrt(np.mean(piece ** 2))) if piece.size else 0.0
                    loud = f'<br><span class="muted small">audio RMS {rms:.3f}</span>'
                cells = []
                for lane, cell in zip(lanes, row):
                    if isinstance(cell, str):
                        cells.append(f'<td class="fail small">{_e(cell)}</td>')
                    else:
                        cells.append("<td>" + _img(png_data_uri(cell), f"{lane.name}, frame {i}", "mouth",
                                                   CROP_DISPLAY) + "</td>")
                parts.append(f"<tr><th>{i}<br><span class=\"muted small\">{i / VIDEO_FPS:.2f} s</span>{loud}</th>"
                             + "".join(cells) + "</tr>")
            parts.append("</table>")

    # -- errors
    if data.get("errors"):
        parts.append("<h2>Errors</h2><ul>" + "".join(f"<li>{_e(e)}</li>" for e in data["errors"]) + "</ul>")

    body = "\n".join(parts)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>{_e(page_title)}</title><style>{_STYLE}</style></head>\n<body><main>\n{body}\n</main></body></html>\n"
    )


def write_html_report(path: str | Path, report: Any, lanes: Sequence[Any], session: Any, force: bool,
                      command: str | None = None, what: str = "--html") -> Path:
    """Build the page for a session's report and write it atomically (core.safe_write: never over a file without
    ``force``, nothing partial on a full disk)."""
    from core import safe_write

    if Path(path).suffix.lower() not in (".html", ".htm"):
        raise InputError(f"{what} {path}: expected a file name ending in .html")
    audio = next((getattr(lane, "audio", None) for lane in lanes if getattr(lane, "audio", None) is not None), None)
    page = build_html(report, lanes, title=getattr(session, "title", None) or "lipsync-compare report",
                      session_path=getattr(session, "path", None), audio=audio,
                      avatar_path=getattr(session, "avatar", None), command=command)
    return safe_write.write_text(path, page, force, what)
