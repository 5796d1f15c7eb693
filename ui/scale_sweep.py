"""The scale sweep: one lane's mouth at the current frame, at nine scales from 1x to 1000x, side by side (two rows).

A person picks the scale by eye in one look (the mouth opens with the speech, or stays shut, or blows out), and a
click on a tile applies that scale to the lane. The widget only shows tiles and forwards clicks; the Diagnostics
dock (ui/diagnostics_panel.py) renders the tiles on its worker thread (workspace/diagnostics.render_sweep) and sets
the scale through the window, so the session's changed flag and the quit prompt follow.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon, QImage, QPixmap
from PySide6.QtWidgets import (QComboBox, QGridLayout, QHBoxLayout, QLabel, QPushButton, QScrollArea, QSizePolicy,
                               QToolButton, QVBoxLayout, QWidget)

from ui.lane_view import bgr_to_display
from workspace.diagnostics import SweepResult

TILE_PX = 88  # the mouth region is about 80 x 100 px of a 160 px crop
TILE_COLUMNS = 5  # 9 tiles in two rows fit the dock's width without scrolling


def _pixmap(bgr: np.ndarray, size: int) -> QPixmap:
    rgb = np.ascontiguousarray(bgr_to_display(bgr))
    height, width = rgb.shape[:2]
    image = QImage(rgb.data, width, height, 3 * width, QImage.Format.Format_RGB888).copy()  # owns its bytes
    return QPixmap.fromImage(image).scaled(size, size, Qt.AspectRatioMode.KeepAspectRatio,
                                           Qt.TransformationMode.SmoothTransformation)


def scale_text(scale: float) -> str:
    return f"{scale:.4g}×"  # 1×, 2.371× … 1000× (no 1e+03)


class ScaleSweep(QWidget):
    """``sweepRequested(lane_id)`` asks for a sweep; ``scaleChosen(lane_id, scale)`` when a tile is clicked."""

    sweepRequested = Signal(int)
    scaleChosen = Signal(int, float)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.lane_box = QComboBox()
        self.lane_box.setToolTip("The lane whose mouth is swept over scales")
        self.sweep_button = QPushButton("Sweep at this frame")
        self.sweep_button.setToolTip("Render this lane's mouth at the current frame at 9 scales, 1× to 1000× "
                                     "(Ctrl+Shift+D); click a mouth to apply its scale")
        self.sweep_button.clicked.connect(self._request)
        self.message = QLabel("Pick a lane and sweep: a click on a mouth applies its scale.")
        self.message.setWordWrap(True)
        self.message.setStyleSheet("color: #9aa0a6;")
        self.tiles: list[QToolButton] = []
        self.result: SweepResult | None = None
        self._current_scale: float | None = None

        self._strip = QWidget()
        self._strip_layout = QGridLayout(self._strip)
        self._strip_layout.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self._strip)
        scroll.setMinimumHeight(2 * (TILE_PX + 48))
        scroll.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Minimum)

        row = QHBoxLayout()
        row.addWidget(QLabel("Lane"))
        row.addWidget(self.lane_box, 1)
        row.addWidget(self.sweep_button)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(scroll)
        layout.addWidget(self.message)
        layout.addStretch(1)

    # -- lanes ------------------------------------------------------------------------------------------------
    def set_lanes(self, lanes: list[tuple[int, str]], preferred: int | None = None) -> None:
        """The lanes that can be swept; keeps the chosen one when it is still there, else ``preferred``."""
        chosen = self.lane_id
        self.lane_box.blockSignals(True)
        self.lane_box.clear()
        for lane_id, name in lanes:
            self.lane_box.addItem(name, lane_id)
        ids = [lane_id for lane_id, _ in lanes]
        keep = chosen if chosen in ids else preferred if preferred in ids else (ids[0] if ids else None)
        if keep is not None:
            self.lane_box.setCurrentIndex(ids.index(keep))
        self.lane_box.blockSignals(False)
        self.sweep_button.setEnabled(bool(ids))
        if self.result is not None and self.result.lane_id not in ids:
            self.clear("")

    @property
    def lane_id(self) -> int | None:
        data = self.lane_box.currentData() if self.lane_box.count() else None
        return int(data) if data is not None else None

    def select_lane(self, lane_id: int) -> None:
        index = self.lane_box.findData(lane_id)
        if index >= 0:
            self.lane_box.setCurrentIndex(index)

    def _request(self) -> None:
        if self.lane_id is not None:
            self.sweepRequested.emit(self.lane_id)

    # -- tiles ------------------------------------------------------------------------------------------------
    def clear(self, message: str) -> None:
        for tile in self.tiles:
            self._strip_layout.removeWidget(tile)
            tile.setParent(None)
            tile.deleteLater()
        self.tiles = []
        self.result = None
        self.message.setText(message)

    def show_busy(self, name: str, frame: int) -> None:
        self.message.setText(f"Rendering {name}'s mouth at frame {frame} at 9 scales…")

    def show_result(self, result: SweepResult, current_scale: float | None = None) -> None:
        self.clear("")
        self.result = result
        for tile in result.tiles:
            button = QToolButton()
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextUnderIcon)
            button.setAutoRaise(True)
            button.setCheckable(True)
            if tile.mouth is not None:
                button.setIcon(QIcon(_pixmap(tile.mouth, TILE_PX)))
                button.setIconSize(QSize(TILE_PX, TILE_PX))
                button.setText(f"{scale_text(tile.scale)}\n{tile.opening:.1f} px open")
                button.setToolTip(f"Apply scale {tile.scale:.4g}× to {result.name} (the mouth opening measured on "
                                  f"this crop: {tile.opening:.1f} px)")
            else:
                button.setText(f"{scale_text(tile.scale)}\n—")
                button.setToolTip(f"{scale_text(tile.scale)}: {tile.error}")
                button.setEnabled(False)
            button.clicked.connect(lambda _=False, s=tile.scale: self.scaleChosen.emit(result.lane_id, s))
            self._strip_layout.addWidget(button, len(self.tiles) // TILE_COLUMNS, len(self.tiles) % TILE_COLUMNS)
            self.tiles.append(button)
        self.message.setText(f"{result.name} at frame {result.frame}: click a mouth to apply its scale.")
        self.mark_scale(current_scale)

    def mark_scale(self, scale: float | None) -> None:
        """Check the tile whose scale the lane has now (if any)."""
        self._current_scale = scale
        if self.result is None:
            return
        for button, tile in zip(self.tiles, self.result.tiles):
            button.setChecked(scale is not None and abs(tile.scale - scale) <= 1e-9 * max(1.0, scale))
