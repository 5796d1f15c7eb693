"""Per-lane feature scale: a logarithmic slider (0.01x to 1000x), a numeric box, fit and reset.

Logarithmic because the scales a person tries span five decades (the Core ML bug needed about 40-200x, a dB slip
needs 0.05x); a linear slider would crowd everything below 10x into its first pixel. Changes while dragging are
coalesced by a short single-shot timer so the render worker sees at most one new scale per interval, and the
current frame is re-rendered first (the window submits it with the playhead as the first job).
"""

from __future__ import annotations

import math

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import QDoubleSpinBox, QHBoxLayout, QLabel, QSlider, QToolButton, QWidget

MIN_SCALE = 0.01
MAX_SCALE = 1000.0
SLIDER_STEPS_PER_DECADE = 1000
SLIDER_MAX = int(round(math.log10(MAX_SCALE / MIN_SCALE) * SLIDER_STEPS_PER_DECADE))  # 5000
DRAG_COALESCE_MS = 40  # ~25 updates a second: one per video frame


def slider_to_scale(position: int) -> float:
    """Slider position 0..SLIDER_MAX -> scale 0.01..1000, evenly spaced in log10."""
    position = max(0, min(SLIDER_MAX, int(position)))
    return float(MIN_SCALE * 10.0 ** (position / SLIDER_STEPS_PER_DECADE))


def scale_to_slider(scale: float) -> int:
    """Inverse of slider_to_scale, clamped to the slider's ends (a fitted 5000x shows the slider at its end)."""
    if not math.isfinite(scale) or scale <= 0:
        return 0
    position = math.log10(scale / MIN_SCALE) * SLIDER_STEPS_PER_DECADE
    return max(0, min(SLIDER_MAX, int(round(position))))


class ScaleControl(QWidget):
    """Emits ``scaleChanged(float)`` (coalesced while dragging), ``fitRequested()`` and shows the fit's R²."""

    scaleChanged = Signal(float)
    fitRequested = Signal()

    def __init__(self, scale: float = 1.0, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._scale = float(scale)
        self._pending: float | None = None
        self._coalesce = QTimer(self)
        self._coalesce.setSingleShot(True)
        self._coalesce.setInterval(DRAG_COALESCE_MS)
        self._coalesce.timeout.connect(self._flush)

        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, SLIDER_MAX)
        self.slider.setPageStep(SLIDER_STEPS_PER_DECADE // 10)
        self.slider.setToolTip("Feature scale, logarithmic from 0.01x to 1000x")
        self.box = QDoubleSpinBox()
        self.box.setRange(MIN_SCALE, MAX_SCALE * 100)  # a fit may land beyond the slider's end
        self.box.setDecimals(4)
        self.box.setSuffix(" ×")
        self.box.setKeyboardTracking(False)
        self.box.setToolTip("Feature scale (type a value and press Enter)")
        # Tool buttons, not push buttons: styles give a push button a minimum width of about 80 px, and four lanes
        # side by side then squeezed the slider to nothing on a 1600 px window.
        self.fit_button = QToolButton()
        self.fit_button.setText("Fit")
        self.fit_button.setToolTip("Least-squares scale that makes this lane's features best match the reference lane")
        self.reset_button = QToolButton()
        self.reset_button.setText("1×")
        self.reset_button.setToolTip("Reset the scale to 1")
        self.slider.setMinimumWidth(60)
        self.r2_label = QLabel("")

        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel("Scale"))
        layout.addWidget(self.slider, 1)
        layout.addWidget(self.box)
        layout.addWidget(self.fit_button)
        layout.addWidget(self.reset_button)
        layout.addWidget(self.r2_label)

        self._show(self._scale)
        self.slider.valueChanged.connect(self._on_slider)
        self.box.valueChanged.connect(self._on_box)
        self.reset_button.clicked.connect(lambda: self.set_scale(1.0, emit=True))
        self.fit_button.clicked.connect(self.fitRequested)

    @property
    def scale(self) -> float:
        return self._pending if self._pending is not None else self._scale

    def set_scale(self, scale: float, emit: bool = False) -> None:
        """Set from code (fit, reset, session load); ``emit`` applies it at once without coalescing."""
        self._pending = None
        self._coalesce.stop()
        self._scale = float(scale)
        self._show(self._scale)
        if emit:
            self.scaleChanged.emit(self._scale)

    def show_fit(self, r2: float | None) -> None:
        self.r2_label.setText("" if r2 is None else f"R² {r2:.3f}")

    def _show(self, scale: float) -> None:
        for widget in (self.slider, self.box):
            widget.blockSignals(True)
        self.slider.setValue(scale_to_slider(scale))
        self.box.setValue(scale)
        for widget in (self.slider, self.box):
            widget.blockSignals(False)

    def _on_slider(self, position: int) -> None:
        scale = slider_to_scale(position)
        self.box.blockSignals(True)
        self.box.setValue(scale)
        self.box.blockSignals(False)
        self._pending = scale
        if not self._coalesce.isActive():
            self._coalesce.start()

    def _on_box(self, value: float) -> None:
        self.set_scale(value, emit=True)

    def _flush(self) -> None:
        if self._pending is None:
            return
        self._scale, self._pending = self._pending, None
        self.scaleChanged.emit(self._scale)
