"""The timeline: waveform, playhead (drag to scrub), loop region, which frames each lane has rendered, which
frames hold NaN/Inf (red marks over the top half of the lane's row), and each lane's mouth opening over the frames
rendered so far (a line in the lane's colour over the waveform).

The x axis is in video frames, so the playhead, the loop region and the rendered marks share one unit with the
transport and the plots.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Signal
from PySide6.QtWidgets import QWidget

from workspace.clock import FPS

RENDERED_ROW_HEIGHT = 0.25
NON_FINITE_COLOUR = (255, 64, 64, 255)  # a frame with NaN/Inf: red, whatever the lane's own colour
LANE_COLOURS = ["#8ab4f8", "#f28b82", "#81c995", "#fdd663", "#c58af9", "#78d9ec"]


def waveform_envelope(samples: np.ndarray, buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """Min and max of the samples in ``buckets`` equal slices: what a waveform of that many pixels can show."""
    buckets = max(1, min(buckets, len(samples)))
    usable = len(samples) - len(samples) % buckets
    if usable == 0:
        return np.zeros(1, np.float32), np.zeros(1, np.float32)
    sliced = samples[:usable].reshape(buckets, -1)
    return sliced.min(axis=1), sliced.max(axis=1)


class Timeline(pg.PlotWidget):
    """Emits ``seekRequested(frame)`` when the user drags the playhead or clicks on the waveform."""

    seekRequested = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setBackground("#202124")
        self.setMouseEnabled(x=False, y=False)
        self.hideButtons()
        self.setMenuEnabled(False)
        self.getAxis("left").hide()
        self.setLabel("bottom", "frame (25 fps)")
        # Frames are plain counts: no "(x0.001)" prefix, and no negative frames on the empty timeline before a
        # session is open.
        self.getAxis("bottom").enableAutoSIPrefix(False)
        self.setXRange(0, 100, padding=0.01)
        self.setFixedHeight(120)
        self.num_frames = 0
        self._lane_count = 0
        self._wave_min = pg.PlotDataItem(pen=pg.mkPen("#8ab4f8", width=1))
        self._wave_max = pg.PlotDataItem(pen=pg.mkPen("#8ab4f8", width=1))
        self._wave = pg.FillBetweenItem(self._wave_min, self._wave_max, brush=pg.mkBrush(138, 180, 248, 120))
        for item in (self._wave_min, self._wave_max, self._wave):
            self.addItem(item)
        self._rendered = pg.ImageItem(axisOrder="row-major")
        self.addItem(self._rendered)
        # Frames with NaN/Inf: a second, mostly transparent picture over the rendered rows, so the marks stay
        # visible whether or not the frame is rendered yet.
        self._non_finite = pg.ImageItem(axisOrder="row-major")
        self._non_finite.setZValue(1)
        self.addItem(self._non_finite)
        self.non_finite_rows: list[np.ndarray] = []  # one bool row per lane, as last set (tests read it)
        # The mouth-opening signal per lane over the frames rendered so far (ui/diagnostics_panel.py feeds it); each
        # line has a dark edge under it, so the first lane's blue stays apart from the waveform's.
        self._mouth_items: list[tuple[pg.PlotDataItem, pg.PlotDataItem]] = []
        self.mouth_curves: list[tuple[str, np.ndarray]] = []  # (colour, opening px per frame, NaN = not yet)
        self.loop_region = pg.LinearRegionItem(values=(0, 0), brush=pg.mkBrush(253, 214, 99, 50))
        self.loop_region.setZValue(-5)
        self.loop_region.setVisible(False)
        self.addItem(self.loop_region)
        self.playhead = pg.InfiniteLine(pos=0, angle=90, movable=True, pen=pg.mkPen("#fdd663", width=2))
        self.playhead.sigDragged.connect(lambda line: self.seekRequested.emit(int(round(line.value()))))
        self.addItem(self.playhead)
        self.scene().sigMouseClicked.connect(self._on_click)

    def set_audio(self, samples: np.ndarray, num_frames: int) -> None:
        self.num_frames = num_frames
        low, high = waveform_envelope(samples, 2000)
        peak = float(max(np.abs(low).max(), np.abs(high).max(), 1e-6))
        x = np.linspace(0, len(samples) / 16000.0 * FPS, len(low))
        self._wave_min.setData(x, low / peak)
        self._wave_max.setData(x, high / peak)
        self.setXRange(0, max(1, num_frames - 1), padding=0.01)
        self.playhead.setBounds((0, max(0, num_frames - 1)))
        self.loop_region.setBounds((0, max(0, num_frames - 1)))
        self._update_y_range()

    def _update_y_range(self) -> None:
        self.setYRange(-1.05 - RENDERED_ROW_HEIGHT * self._lane_count, 1.05, padding=0)

    def set_playhead(self, frame: int) -> None:
        if not self.playhead.moving:
            self.playhead.setValue(frame)

    def set_rendered(self, rows: list[np.ndarray], colours: list[str] | None = None) -> None:
        """One boolean row per lane (True = frame is rendered at the lane's current scale), drawn under the wave."""
        self._lane_count = len(rows)
        self._update_y_range()
        if not rows or self.num_frames == 0:
            self._rendered.clear()
            return
        colours = colours or LANE_COLOURS
        picture = np.zeros((len(rows), self.num_frames, 4), dtype=np.uint8)
        for r, row in enumerate(rows):
            colour = pg.mkColor(colours[r % len(colours)])
            picture[r, row[: self.num_frames]] = (colour.red(), colour.green(), colour.blue(), 230)
            picture[r, ~row[: self.num_frames]] = (60, 64, 67, 255)
        # Image row 0 is drawn at the lowest y (the plot's y axis points up): flip, so the first lane's row is on
        # top, in the same order as the lane columns read left to right.
        self._rendered.setImage(np.ascontiguousarray(picture[::-1]), autoLevels=False, levels=(0, 255))
        height = RENDERED_ROW_HEIGHT * len(rows)
        self._rendered.setRect(pg.QtCore.QRectF(-0.5, -1.05 - height, self.num_frames, height * 0.95))
        self._draw_non_finite()

    def set_non_finite(self, rows: list[np.ndarray]) -> None:
        """One boolean row per lane (True = the frame holds NaN/Inf: in its audio input or its generator output).

        Drawn in red over the top half of the lane's rendered row; rows are in lane order, like ``set_rendered``.
        """
        self.non_finite_rows = [np.asarray(row, dtype=bool) for row in rows]
        self._draw_non_finite()

    def _draw_non_finite(self) -> None:
        rows = self.non_finite_rows[: self._lane_count] if self._lane_count else []
        if not rows or self.num_frames == 0 or not any(row.any() for row in rows):
            self._non_finite.clear()
            return
        # Two image rows per lane: the top half red where the frame is bad, the bottom half transparent.
        picture = np.zeros((2 * len(rows), self.num_frames, 4), dtype=np.uint8)
        for r, row in enumerate(rows):
            bad = np.zeros(self.num_frames, dtype=bool)
            bad[: min(len(row), self.num_frames)] = row[: self.num_frames]
            picture[2 * r, bad] = NON_FINITE_COLOUR
        self._non_finite.setImage(np.ascontiguousarray(picture[::-1]), autoLevels=False, levels=(0, 255))
        height = RENDERED_ROW_HEIGHT * len(rows)
        self._non_finite.setRect(pg.QtCore.QRectF(-0.5, -1.05 - height, self.num_frames, height * 0.95))

    def set_mouth_curves(self, curves: list[tuple[str, np.ndarray]]) -> None:
        """One line per lane in the lane's colour: its mouth opening (px, NaN where not rendered yet) over the
        waveform, all on one scale (the largest opening of any lane reaches the top), so a mouth that barely moves
        is a flat line next to one that opens with the speech."""
        self.mouth_curves = [(colour, np.asarray(curve, dtype=np.float64)) for colour, curve in curves]
        while len(self._mouth_items) > len(self.mouth_curves):
            for item in self._mouth_items.pop():
                self.removeItem(item)
        while len(self._mouth_items) < len(self.mouth_curves):
            edge = pg.PlotDataItem(connect="finite", pen=pg.mkPen("#202124", width=5))
            line = pg.PlotDataItem(connect="finite")
            edge.setZValue(2)
            line.setZValue(3)
            self.addItem(edge)
            self.addItem(line)
            self._mouth_items.append((edge, line))
        finite = [c[np.isfinite(c)] for _, c in self.mouth_curves]
        top = max((float(c.max()) for c in finite if c.size), default=0.0)
        for (edge, line), (colour, curve) in zip(self._mouth_items, self.mouth_curves):
            x, y = np.arange(len(curve), dtype=np.float64), -1.0 + 2.0 * curve / max(top, 1.0)
            line.setPen(pg.mkPen(colour, width=2))
            edge.setData(x, y)
            line.setData(x, y)

    def set_loop(self, region: tuple[int, int] | None) -> None:
        self.loop_region.setVisible(region is not None)
        if region is not None:
            self.loop_region.setRegion(region)

    def loop(self) -> tuple[int, int] | None:
        if not self.loop_region.isVisible():
            return None
        start, end = self.loop_region.getRegion()
        return int(round(start)), int(round(end))

    def _on_click(self, event) -> None:
        if self.num_frames == 0 or event.button() != pg.QtCore.Qt.MouseButton.LeftButton:
            return
        point = self.plotItem.vb.mapSceneToView(event.scenePos())
        self.seekRequested.emit(int(max(0, min(self.num_frames - 1, round(point.x())))))
