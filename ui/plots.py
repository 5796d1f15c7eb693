"""Live feature plots: per-lane range over time, a histogram of the current window, a scatter against the reference.

All statistics come from pipeline.metrics (the same functions the CLI report uses); this module only draws them.
Plots take the lane's *scaled* features, so moving a scale slider moves its band, its histogram and its scatter.
"""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QComboBox, QGridLayout, QLabel, QVBoxLayout, QWidget

from pipeline.metrics import RowRanges, compare, histogram, per_row_ranges


HISTOGRAM_BINS = 48
FRAME_PLOTS_INTERVAL_MS = 100  # histogram and scatter follow playback at up to 10 Hz: enough to read, cheap to draw
_INVISIBLE = (0, 0, 0, 0)  # band edges: FillBetweenItem needs drawn curves, so not pen=None
WINDOW_HALF = 8  # the generator sees rows [i-8, i+8) of the padded features (PIPELINE.md stage 4)


@dataclass
class PlotLane:
    """What the plots need of a lane: a name, a colour, and its scaled features (None until computed)."""

    lane_id: int
    name: str
    colour: str
    features: np.ndarray | None


class RangePlot(pg.PlotWidget):
    """One lane's feature range per frame: min-max band, p1-p99 band, mean line, and a playhead."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setBackground("#202124")
        self.setMouseEnabled(x=True, y=False)
        self.setMenuEnabled(False)
        self.showGrid(x=False, y=True, alpha=0.2)
        self.getAxis("left").setWidth(44)  # equal axis widths keep the stacked plots' frames aligned
        self.setMinimumHeight(90)
        self.title_item = pg.TextItem("", color="#e8eaed", anchor=(0, 0))
        self.title_item.setParentItem(self.plotItem.vb)
        self.title_item.setPos(4, 2)
        self._min = pg.PlotDataItem()
        self._max = pg.PlotDataItem()
        self._p1 = pg.PlotDataItem()
        self._p99 = pg.PlotDataItem()
        self._band = pg.FillBetweenItem(self._min, self._max)
        self._inner = pg.FillBetweenItem(self._p1, self._p99)
        self.mean_curve = pg.PlotDataItem()
        for item in (self._min, self._max, self._p1, self._p99, self._band, self._inner, self.mean_curve):
            self.addItem(item)
        self.playhead = pg.InfiniteLine(pos=0, angle=90, pen=pg.mkPen("#fdd663", width=1))
        self.addItem(self.playhead)
        self.y_range: tuple[float, float] | None = None  # this lane's own data range (None: no features yet)
        self.shown_y_range: tuple[float, float] | None = None  # what the axis shows: own or shared range

    def set_lane(self, name: str, colour: str, ranges: RowRanges | None) -> None:
        self.title_item.setText(name)
        qcolour = pg.mkColor(colour)
        band = pg.mkColor(colour)
        band.setAlpha(60)
        inner = pg.mkColor(colour)
        inner.setAlpha(110)
        self._band.setBrush(pg.mkBrush(band))
        self._inner.setBrush(pg.mkBrush(inner))
        self.mean_curve.setPen(pg.mkPen(qcolour, width=1.5))
        if ranges is None:
            for item in (self._min, self._max, self._p1, self._p99, self.mean_curve):
                item.setData([], [])
            self.y_range = None
            self.shown_y_range = None
            return
        low, high = np.asarray(ranges.min, np.float64), np.asarray(ranges.max, np.float64)
        x = np.arange(len(low))
        self._min.setData(x, low, pen=_INVISIBLE)
        self._max.setData(x, high, pen=_INVISIBLE)
        self._p1.setData(x, ranges.p1, pen=_INVISIBLE)
        self._p99.setData(x, ranges.p99, pen=_INVISIBLE)
        self.mean_curve.setData(x, ranges.mean)
        finite_high = high[np.isfinite(high)]
        finite_low = low[np.isfinite(low)]
        top = float(finite_high.max()) if finite_high.size else 1.0
        bottom = float(min(0.0, finite_low.min())) if finite_low.size else 0.0
        self.y_range = (bottom, top if top > bottom else bottom + 1.0)
        self.show_y_range(self.y_range)
        self.setXRange(0, max(1, len(low) - 1), padding=0.0)

    def show_y_range(self, y_range: tuple[float, float]) -> None:
        self.shown_y_range = y_range
        self.setYRange(*y_range, padding=0.05)


class FeaturePlots(QWidget):
    """Range plots (one per lane), a histogram of the current window and a scatter against the reference."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._lanes: list[PlotLane] = []
        self._reference_id: int | None = None
        self.shared_y = True
        self._frame = 0
        self._ranges: dict[tuple[int, int], RowRanges] = {}  # (lane id, id of its features array) -> per-row ranges
        self._frame_plots_timer = QTimer(self)  # coalesces frame changes during playback
        self._frame_plots_timer.setSingleShot(True)
        self._frame_plots_timer.setInterval(FRAME_PLOTS_INTERVAL_MS)
        self._frame_plots_timer.timeout.connect(self._update_frame_plots)

        self.range_box = QWidget()
        self.range_layout = QVBoxLayout(self.range_box)
        self.range_layout.setContentsMargins(0, 0, 0, 0)
        self.range_layout.setSpacing(2)
        self.range_plots: list[RangePlot] = []
        # Each lane's own y-range hides the very gap this app exists to show (a lane 27x smaller looks the same);
        # a shared range shows it. The label says which is on.
        self.y_mode_label = QLabel("")
        self.y_mode_label.setStyleSheet("color: #9aa0a6;")
        self.range_layout.addWidget(self.y_mode_label)

        self.histogram = pg.PlotWidget()
        self.histogram.setBackground("#202124")
        self.histogram.setTitle("features, current window (shared bins)", color="#e8eaed", size="9pt")
        self.histogram.addLegend(offset=(-5, 5), labelTextSize="8pt")
        self.histogram.setMenuEnabled(False)
        self.histogram_curves: dict[int, pg.PlotDataItem] = {}

        self.scatter = pg.PlotWidget()
        self.scatter.setBackground("#202124")
        self.scatter.setMenuEnabled(False)
        self.scatter.setLabel("bottom", "reference")
        # A short, fixed y label: a lane's name (tens of characters) ran past the plot's height and was cut off;
        # the name is in the lane picker above and in the caption below.
        self.scatter.setLabel("left", "lane")
        self.scatter.getAxis("left").setWidth(52)
        self.scatter_points = pg.ScatterPlotItem(size=4, pen=_INVISIBLE)
        self.fit_line = pg.PlotDataItem(pen=pg.mkPen("#fdd663", width=1.5))
        self.identity_line = pg.PlotDataItem(pen=pg.mkPen("#5f6368", width=1, style=pg.QtCore.Qt.PenStyle.DashLine))
        for item in (self.identity_line, self.scatter_points, self.fit_line):
            self.scatter.addItem(item)
        self.scatter_lane = QComboBox()
        self.scatter_lane.setToolTip("Which lane to plot against the reference lane")
        self.scatter_lane.currentIndexChanged.connect(lambda _: self._update_frame_plots())
        self.fit_label = QLabel("")
        self.fit_label.setStyleSheet("color: #fdd663;")
        self.fit_label.setWordWrap(True)
        self.fit_k: float | None = None  # k at this frame: lane ≈ k × reference (least squares through 0)

        scatter_box = QWidget()
        scatter_layout = QVBoxLayout(scatter_box)
        scatter_layout.setContentsMargins(0, 0, 0, 0)
        scatter_layout.addWidget(self.scatter_lane)
        scatter_layout.addWidget(self.scatter, 1)
        scatter_layout.addWidget(self.fit_label)

        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.addWidget(self.range_box, 0, 0)
        grid.addWidget(self.histogram, 0, 1)
        grid.addWidget(scatter_box, 0, 2)
        grid.setColumnStretch(0, 3)
        grid.setColumnStretch(1, 2)
        grid.setColumnStretch(2, 2)

    # -- inputs -----------------------------------------------------------------------------------------------
    def set_lanes(self, lanes: list[PlotLane], reference_id: int | None) -> None:
        """Called when lanes, their scales or their features change; recomputes only what changed."""
        self._lanes = lanes
        self._reference_id = reference_id
        while len(self.range_plots) < len(lanes):
            plot = RangePlot()
            if self.range_plots:
                plot.setXLink(self.range_plots[0])
            self.range_plots.append(plot)
            self.range_layout.addWidget(plot)
        while len(self.range_plots) > len(lanes):
            plot = self.range_plots.pop()
            self.range_layout.removeWidget(plot)
            plot.deleteLater()
        live_keys = set()
        for plot, lane in zip(self.range_plots, lanes):
            ranges = None
            if lane.features is not None:
                key = (lane.lane_id, id(lane.features))
                live_keys.add(key)
                if key not in self._ranges:
                    self._ranges[key] = per_row_ranges(lane.features)
                ranges = self._ranges[key]
            suffix = "  (reference)" if lane.lane_id == reference_id and "reference" not in lane.name.lower() else ""
            plot.set_lane(lane.name + suffix, lane.colour, ranges)
        self._ranges = {k: v for k, v in self._ranges.items() if k in live_keys}
        self._apply_y_mode()

        current = self.scatter_lane.currentData()
        self.scatter_lane.blockSignals(True)
        self.scatter_lane.clear()
        for lane in lanes:
            if lane.lane_id != reference_id:
                self.scatter_lane.addItem(f"{lane.name} vs reference", lane.lane_id)
        index = self.scatter_lane.findData(current)
        self.scatter_lane.setCurrentIndex(index if index >= 0 else 0)
        self.scatter_lane.blockSignals(False)
        self._update_frame_plots()

    def set_shared_y(self, shared: bool) -> None:
        """One y-range for every lane's plot (magnitudes comparable at a glance) or each lane its own."""
        self.shared_y = bool(shared)
        self._apply_y_mode()

    def _apply_y_mode(self) -> None:
        ranges = [plot.y_range for plot in self.range_plots if plot.y_range is not None]
        shared = (min(r[0] for r in ranges), max(r[1] for r in ranges)) if ranges else None
        for plot in self.range_plots:
            if plot.y_range is not None:
                plot.show_y_range(shared if self.shared_y and shared is not None else plot.y_range)
        self.y_mode_label.setText("y-axis: one range shared by every lane (View ▸ Shared y-range)" if self.shared_y
                                  else "y-axis: each lane its own range (View ▸ Shared y-range)")

    def set_frame(self, frame: int, immediately: bool = True) -> None:
        """Move the playheads now; redraw histogram and scatter now, or within 100 ms while playing."""
        self._frame = frame
        for plot in self.range_plots:
            plot.playhead.setValue(frame)
        if immediately:
            self._frame_plots_timer.stop()
            self._update_frame_plots()
        elif not self._frame_plots_timer.isActive():
            self._frame_plots_timer.start()

    # -- frame-dependent plots --------------------------------------------------------------------------------
    def _update_frame_plots(self) -> None:
        self._update_histogram()
        self._update_scatter()

    def _window(self, features: np.ndarray) -> np.ndarray:
        start, stop = max(0, self._frame - WINDOW_HALF), min(len(features), self._frame + WINDOW_HALF)
        return features[start:stop]

    def _update_histogram(self) -> None:
        ready = [lane for lane in self._lanes if lane.features is not None]
        for lane_id in list(self.histogram_curves):
            if lane_id not in {lane.lane_id for lane in ready}:
                self.histogram.removeItem(self.histogram_curves.pop(lane_id))
        if not ready:
            return
        shared = histogram([self._window(lane.features) for lane in ready], HISTOGRAM_BINS)
        for lane, lane_counts in zip(ready, shared.counts):
            curve = self.histogram_curves.get(lane.lane_id)
            if curve is None:
                curve = pg.PlotDataItem(stepMode="center", name=lane.name)
                self.histogram.addItem(curve)
                self.histogram_curves[lane.lane_id] = curve
            curve.setPen(pg.mkPen(lane.colour, width=1.5))
            curve.setData(shared.edges, lane_counts)

    def _update_scatter(self) -> None:
        lanes = {lane.lane_id: lane for lane in self._lanes}
        reference = lanes.get(self._reference_id) if self._reference_id is not None else None
        lane = lanes.get(self.scatter_lane.currentData())
        if reference is None or lane is None or reference.features is None or lane.features is None:
            self.scatter_points.clear()
            self.fit_line.setData([], [])
            self.identity_line.setData([], [])
            self.fit_label.setText("waiting for features…" if lane is not None else "add a second lane to compare")
            self.fit_k = None
            return
        row = min(self._frame, len(lane.features) - 1, len(reference.features) - 1)
        x = np.asarray(reference.features[row], dtype=np.float64)
        y = np.asarray(lane.features[row], dtype=np.float64)
        result = compare(y, x)
        self.fit_k = float(result.scale)
        self.scatter_points.setData(x, y, brush=pg.mkBrush(lane.colour))
        top = float(np.nanmax(x)) if x.size else 1.0
        self.fit_line.setData([0.0, top], [0.0, self.fit_k * top])
        self.identity_line.setData([0.0, top], [0.0, top])
        self.fit_label.setText(f"frame {row}: k {self.fit_k:.4g} ({lane.name} ≈ k × reference)  "
                               f"R² {float(result.r2):.3f}  cos {float(result.cosine):.3f}   (dashed: equal values)")
        self.fit_label.setToolTip("k: the least-squares factor at this frame; Fit sets the lane's scale so k "
                                  "becomes 1 over the whole clip")

