"""Per-lane feature scale: a logarithmic slider (0.01x to 1000x), a numeric box, fit and reset.

Logarithmic because the scales a person tries span five decades (the Core ML bug needed about 40-200x, a dB slip
needs 0.05x); a linear slider would crowd everything below 10x into its first pixel. Changes while dragging are
coalesced by a short single-shot timer so the render worker sees at most one new scale per interval, and the
current frame is re-rendered first (the window submits it with the playhead as the first job).
"""

from __future__ import annotations

import math

from PySide6.QtCore import QEvent, QObject, Qt, QTimer, Signal
from PySide6.QtGui import QKeyEvent
from PySide6.QtWidgets import QDoubleSpinBox, QHBoxLayout, QLabel, QSlider, QToolButton, QWidget

from workspace.model import MAX_SCALE, MIN_SCALE
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
    """Emits ``scaleChanged(float)`` (coalesced while dragging), ``fitRequested()`` and shows the fit's R².

    Focus: the slider never takes the keyboard focus and the box gives it up on Enter or Escape, so after a
    scale is set Space, Left and Right drive playback again instead of editing the scale.
    """

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
        self.slider.setToolTip(f"Feature scale, logarithmic from {MIN_SCALE:g}× to {MAX_SCALE:g}×")
        self.slider.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # arrow keys step frames, not the slider
        self.box = QDoubleSpinBox()
        # Wider than the accepted range on purpose: a typed 5000 reaches _on_box and is clamped with the reason
        # shown, instead of being refused keystroke by keystroke without a word.
        self.box.setRange(0.0001, MAX_SCALE * 1000)
        self.box.setDecimals(4)
        self.box.setSuffix(" ×")
        self.box.setKeyboardTracking(False)
        self._box_tip = (f"Feature scale, {MIN_SCALE:g}× to {MAX_SCALE:g}× (type a value and press Enter; "
                         "Escape leaves it as it was)")
        self.box.setToolTip(self._box_tip)
        self.box.installEventFilter(self)
        # Tool buttons, not push buttons: styles give a push button a minimum width of about 80 px, and four lanes
        # side by side then squeezed the slider to nothing on a 1600 px window.
        self.fit_button = QToolButton()
        self.fit_button.setText("Fit")
        self.fit_button.setToolTip("Fit: multiply this lane's scale by the correction (about 1/k, where lane ≈ k × "
                                   "reference) that makes its features best match the reference lane's")
        self.reset_button = QToolButton()
        self.reset_button.setText("1×")
        self.reset_button.setToolTip("Reset the scale to 1")
        self.slider.setMinimumWidth(60)
        self.r2_label = QLabel("")
        self.limit_label = QLabel("")  # why a typed scale was changed (clamped to the slider's range)
        self.limit_label.setStyleSheet("color: #f29900;")

        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(QLabel("Scale"))
        layout.addWidget(self.slider, 1)
        layout.addWidget(self.box)
        layout.addWidget(self.fit_button)
        layout.addWidget(self.reset_button)
        layout.addWidget(self.r2_label)
        layout.addWidget(self.limit_label)

        self._show(self._scale)
        self.slider.valueChanged.connect(self._on_slider)
        self.box.valueChanged.connect(self._on_box)
        self.reset_button.clicked.connect(self._on_reset)
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
        """The R² of the last Fit; cleared by any other change of the scale, which it no longer describes."""
        self.r2_label.setText("" if r2 is None else f"R² {r2:.3f}")
        self.r2_label.setToolTip("" if r2 is None else "How well the fitted scale makes this lane's features match "
                                 "the reference's: near 1, a scale fixes the lane; low, no scale can")

    def show_limit(self, message: str | None) -> None:
        """Say why the scale shown is not the one asked for (or clear it)."""
        self.limit_label.setText("" if message is None else "clamped")
        self.limit_label.setToolTip(message or "")
        self.box.setToolTip(message or self._box_tip)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt's name)
        if watched is self.box and event.type() == QEvent.Type.KeyPress and isinstance(event, QKeyEvent):
            if event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
                self.box.interpretText()  # applies the typed value (valueChanged -> _on_box)
                self.box.clearFocus()
                return True
            if event.key() == Qt.Key.Key_Escape:
                self._show(self.scale)  # leave the scale as it was
                self.box.clearFocus()
                return True
        return super().eventFilter(watched, event)

    def _on_reset(self) -> None:
        self.show_fit(None)
        self.show_limit(None)
        self.set_scale(1.0, emit=True)

    def _show(self, scale: float) -> None:
        for widget in (self.slider, self.box):
            widget.blockSignals(True)
        self.slider.setValue(scale_to_slider(scale))
        self.box.setValue(scale)
        for widget in (self.slider, self.box):
            widget.blockSignals(False)

    def _on_slider(self, position: int) -> None:
        self.show_fit(None)
        self.show_limit(None)
        scale = slider_to_scale(position)
        self.box.blockSignals(True)
        self.box.setValue(scale)
        self.box.blockSignals(False)
        self._pending = scale
        if not self._coalesce.isActive():
            self._coalesce.start()

    def _on_box(self, value: float) -> None:
        self.show_fit(None)
        clamped = min(MAX_SCALE, max(MIN_SCALE, float(value)))
        self.show_limit(None if clamped == value else
                        f"{value:g}× is outside the slider's range ({MIN_SCALE:g}× to {MAX_SCALE:g}×): set to "
                        f"{clamped:g}×")
        self.set_scale(clamped, emit=True)

    def _flush(self) -> None:
        if self._pending is None:
            return
        self._scale, self._pending = self._pending, None
        self.scaleChanged.emit(self._scale)
