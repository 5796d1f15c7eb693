"""Wipe and difference views between any two lanes, as in A/B video tools.

The wipe shows lane A left of a movable split and lane B right of it; the difference shows |A - B| times a gain,
so a one-level difference becomes visible. Both are pixel operations on the frames already on screen.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QSlider, QVBoxLayout, QWidget

from ui.lane_view import ImagePane, bgr_to_display

MODES = ("Wipe", "Difference")


def wipe(a: np.ndarray, b: np.ndarray, fraction: float) -> np.ndarray:
    """A left of ``fraction`` of the width, B right of it."""
    split = int(round(max(0.0, min(1.0, fraction)) * a.shape[1]))
    out = b.copy()
    out[:, :split] = a[:, :split]
    return out


def difference(a: np.ndarray, b: np.ndarray, gain: float) -> np.ndarray:
    """|A - B| x gain, clipped to uint8."""
    delta = np.abs(a.astype(np.int16) - b.astype(np.int16)).astype(np.float32) * float(gain)
    return np.clip(delta, 0, 255).astype(np.uint8)


class CompareView(QWidget):
    """Pick lanes A and B and a mode; ``update_frames`` is called with each lane's frame on screen."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.lane_a = QComboBox()
        self.lane_b = QComboBox()
        self.mode = QComboBox()
        self.mode.addItems(MODES)
        self.amount = QSlider(Qt.Orientation.Horizontal)
        self.amount_label = QLabel("")
        self.message = QLabel("")
        self.message.setStyleSheet("color: #9aa0a6;")
        self.image = ImagePane()
        self._frames: dict[int, np.ndarray] = {}

        row = QHBoxLayout()
        for label, widget in (("A", self.lane_a), ("B", self.lane_b), ("Mode", self.mode)):
            row.addWidget(QLabel(label))
            row.addWidget(widget)
        row.addWidget(self.amount, 1)
        row.addWidget(self.amount_label)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.image, 1)
        layout.addWidget(self.message)

        self.mode.currentIndexChanged.connect(self._on_mode)
        for widget in (self.lane_a, self.lane_b):
            widget.currentIndexChanged.connect(lambda _: self.refresh())
        self.amount.valueChanged.connect(lambda _: self.refresh())
        self._on_mode()

    def set_lanes(self, lanes: list[tuple[int, str]]) -> None:
        """(lane id, name) pairs; keeps the current choices where they still exist, else A=first, B=second."""
        for index, combo in enumerate((self.lane_a, self.lane_b)):
            current = combo.currentData()
            combo.blockSignals(True)
            combo.clear()
            for lane_id, name in lanes:
                combo.addItem(name, lane_id)
            found = combo.findData(current)
            combo.setCurrentIndex(found if found >= 0 else min(index, combo.count() - 1))
            combo.blockSignals(False)
        self.refresh()

    def update_frames(self, frames: dict[int, np.ndarray]) -> None:
        self._frames = frames
        if self.isVisible():
            self.refresh()

    def _on_mode(self) -> None:
        self.amount.blockSignals(True)
        if self.mode.currentText() == "Wipe":
            self.amount.setRange(0, 100)
            self.amount.setValue(50)
            self.amount.setToolTip("Where the split between A and B lies")
        else:
            self.amount.setRange(1, 64)
            self.amount.setValue(8)
            self.amount.setToolTip("Gain applied to |A - B|")
        self.amount.blockSignals(False)
        self.refresh()

    def refresh(self) -> None:
        if self.mode.currentText() == "Wipe":
            self.amount_label.setText(f"split {self.amount.value()} %")
        else:
            self.amount_label.setText(f"gain {self.amount.value()}×")
        a, b = self._frames.get(self.lane_a.currentData()), self._frames.get(self.lane_b.currentData())
        if a is None or b is None:
            self.message.setText("Both lanes need a rendered frame (a failed lane has none).")
            return
        if a.shape != b.shape:
            self.message.setText(f"Frames differ in size: A {a.shape[1]}×{a.shape[0]}, B {b.shape[1]}×{b.shape[0]}.")
            return
        if self.mode.currentText() == "Wipe":
            shown = wipe(a, b, self.amount.value() / 100.0)
            self.message.setText("A left, B right")
        else:
            shown = difference(a, b, self.amount.value())
            self.message.setText(f"|A − B| × {self.amount.value()}   (max raw difference "
                                 f"{int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())})")
        self.image.show_rgb(bgr_to_display(shown))
