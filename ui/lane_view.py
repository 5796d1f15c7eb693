"""One lane's column: title (sources, scale, provenance), the picture, a late-frame marker, errors, scale control,
and a red count of the NaN/Inf values the lane produced (features and generator pixels).

A lane that fails shows its reason here, in its own place, so the other lanes keep playing beside it. A lane with
NaN/Inf still plays (NaN pixels are drawn black), so the count is what tells it apart from a lane that matches.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QFrame, QHBoxLayout, QLabel, QMenu, QSizePolicy, QStackedWidget, QToolButton,
                               QVBoxLayout, QWidget)

from pipeline.metrics import feature_peak, frames_fed_non_finite
from ui.scale_control import ScaleControl


def bgr_to_display(image: np.ndarray) -> np.ndarray:
    """BGR uint8 [H, W, 3] -> RGB uint8 [H, W, 3], contiguous, for an ImageItem in row-major mode.

    cv2's channel swap gives the same bytes as a copy of image[..., ::-1] about 20x faster (every shown frame)."""
    import cv2

    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(image[..., ::-1])


class ImagePane(pg.GraphicsLayoutWidget):
    """A pyqtgraph view of one uint8 image: fixed levels (0..255), aspect locked, no mouse panning surprises."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setBackground("#202124")
        self.view = self.addViewBox(lockAspect=True, invertY=True, enableMouse=False)
        self.view.setMenuEnabled(False)
        self.item = pg.ImageItem(axisOrder="row-major")
        self.view.addItem(self.item)
        self.shown: np.ndarray | None = None  # the RGB array on screen (tests read it)
        self.setMinimumSize(160, 120)

    def show_rgb(self, rgb: np.ndarray) -> None:
        first = self.shown is None or self.shown.shape != rgb.shape
        self.shown = rgb
        self.item.setImage(rgb, autoLevels=False, levels=(0, 255))
        if first:
            self.view.autoRange(padding=0.0)

    def clear_image(self) -> None:
        self.shown = None
        self.item.clear()


class LaneView(QFrame):
    """Emits requests the window acts on; it holds no pipeline state of its own."""

    removeRequested = Signal()
    moveRequested = Signal(int)  # -1 left, +1 right
    replaceEncoderRequested = Signal()
    replaceGeneratorRequested = Signal()
    makeReferenceRequested = Signal()
    stopRequested = Signal()  # stop this lane: its model has not returned (shown after STUCK_AFTER_S)

    def __init__(self, name: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setObjectName("laneView")
        self.name = name
        self._is_reference = False
        self.shown_index: int | None = None  # frame index of the picture on screen
        self.is_late = False

        # Titles and sources wrap: a long lane name or file name must not set the width of the whole window.
        self.title = QLabel(f"<b>{name}</b>")
        self.title.setTextFormat(Qt.TextFormat.RichText)
        self.title.setWordWrap(True)
        self.sources = QLabel("")
        self.sources.setStyleSheet("color: #9aa0a6;")
        self.sources.setWordWrap(True)
        self.provenance = QLabel("")
        self.provenance.setStyleSheet("color: #9aa0a6;")
        self.provenance.setWordWrap(True)
        for label in (self.sources, self.provenance):
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        self.left_button = self._tool("◀", "Move this lane left", lambda: self.moveRequested.emit(-1))
        self.right_button = self._tool("▶", "Move this lane right", lambda: self.moveRequested.emit(1))
        self.menu_button = self._tool("⋯", "Lane actions", None)
        menu = QMenu(self)
        menu.addAction("Replace encoder…", self.replaceEncoderRequested.emit)
        menu.addAction("Replace generator…", self.replaceGeneratorRequested.emit)
        menu.addAction("Use as reference", self.makeReferenceRequested.emit)
        self.stop_action = menu.addAction("Stop this lane", self.stopRequested.emit)
        self.stop_action.setToolTip("Stop this lane's model (one that never returns); the other lanes go on")
        menu.addSeparator()
        menu.addAction("Remove lane", self.removeRequested.emit)
        self.menu_button.setMenu(menu)
        self.menu_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        self.remove_button = self._tool("✕", "Remove this lane", self.removeRequested.emit)

        header = QHBoxLayout()
        header.addWidget(self.title, 1)
        for button in (self.left_button, self.right_button, self.menu_button, self.remove_button):
            header.addWidget(button)

        self.image = ImagePane()
        self.status = QLabel("waiting for features…")
        self.status.setStyleSheet("color: #9aa0a6;")
        self.late_marker = QLabel("● late")
        self.late_marker.setStyleSheet("color: #f29900; font-weight: bold;")
        self.late_marker.setToolTip("Rendering is behind the playhead: this is the lane's latest frame")
        self.late_marker.setVisible(False)
        self.non_finite_marker = QLabel("")
        self.non_finite_marker.setStyleSheet("color: #f28b82; font-weight: bold;")
        self.non_finite_marker.setWordWrap(True)
        self.non_finite_marker.setVisible(False)
        self.non_finite_features = 0  # NaN/Inf among the lane's features (unscaled; a refused scale adds none)
        self.feature_peak: float | None = None  # largest finite |feature|: what the scale check needs
        self._feature_frames = np.zeros(0, dtype=bool)  # frames whose audio input holds a NaN/Inf feature
        self._pixel_counts: dict[int, int] = {}  # frame -> NaN/Inf values in its generator output, this scale
        self._failed_frames: dict[int, str] = {}  # frame -> why its backend raised, this scale
        # A model that has not returned for a while (an ONNX Loop without an end): say so, and offer Stop.
        self.busy_marker = QLabel("")
        self.busy_marker.setStyleSheet("color: #f29900; font-weight: bold;")
        self.busy_marker.setVisible(False)
        self.stop_button = QToolButton()
        self.stop_button.setText("■ Stop")
        self.stop_button.setToolTip("Stop this lane: its model has not returned. The other lanes go on.")
        self.stop_button.clicked.connect(self.stopRequested.emit)
        self.stop_button.setVisible(False)
        status_row = QHBoxLayout()
        status_row.addWidget(self.status, 1)
        status_row.addWidget(self.non_finite_marker)
        status_row.addWidget(self.late_marker)
        status_row.addWidget(self.busy_marker)
        status_row.addWidget(self.stop_button)

        self.error = QLabel("")
        self.error.setWordWrap(True)
        self.error.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.error.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.error.setStyleSheet("color: #f28b82; padding: 12px;")
        self.stack = QStackedWidget()
        self.stack.addWidget(self.image)
        self.stack.addWidget(self.error)
        self.stack.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

        self.scale_control = ScaleControl()

        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(header)
        layout.addWidget(self.sources)
        layout.addWidget(self.provenance)
        layout.addWidget(self.stack, 1)
        layout.addLayout(status_row)
        layout.addWidget(self.scale_control)

    def _tool(self, text: str, tip: str, slot) -> QToolButton:
        button = QToolButton()
        button.setText(text)
        button.setToolTip(tip)
        button.setAutoRaise(True)
        if slot is not None:
            button.clicked.connect(slot)
        return button

    def set_description(self, sources: str, provenance: str, is_reference: bool, scale: float) -> None:
        self._is_reference = is_reference
        self.set_title_scale(scale)
        self.sources.setText(sources)
        self.provenance.setText(provenance)

    def set_title_scale(self, scale: float) -> None:
        """The title carries the scale so a screenshot always says how a lane was scaled."""
        tagged = self._is_reference and "reference" not in self.name.lower()
        tag = "  <span style='color:#8ab4f8'>reference</span>" if tagged else ""
        scale_text = "" if scale == 1.0 else f"  <span style='color:#fdd663'>× {scale:.4g}</span>"
        self.title.setText(f"<b>{_escape(self.name)}</b>{scale_text}{tag}")

    def show_frame(self, image_bgr: np.ndarray, index: int, late: bool, scale: float) -> None:
        self.stack.setCurrentWidget(self.image)
        self.image.show_rgb(bgr_to_display(image_bgr))
        self.shown_index = index
        self.set_late(late)
        self.status.setText(f"frame {index} · scale {scale:g}×")

    # -- NaN/Inf -----------------------------------------------------------------------------------------------
    def set_features(self, raw_features: np.ndarray | None) -> None:
        """The lane's unscaled features arrived: count their NaN/Inf, note the frames they reach, and keep the
        largest |feature| (``feature_peak``), with which the window refuses scales float32 cannot carry for them."""
        if raw_features is None:
            self.non_finite_features, self.feature_peak = 0, None
            self._feature_frames = np.zeros(0, dtype=bool)
        else:
            values = np.asarray(raw_features)
            self.non_finite_features = int(values.size - np.count_nonzero(np.isfinite(values)))
            self.feature_peak = feature_peak(values)
            self._feature_frames = frames_fed_non_finite(values)
        self._show_non_finite()

    def note_frame(self, index: int, non_finite_pixels: int) -> None:
        """A frame rendered at the lane's current scale, with this many NaN/Inf values in its generator output."""
        if non_finite_pixels > 0:
            self._pixel_counts[int(index)] = int(non_finite_pixels)
            self._show_non_finite()
        elif self._pixel_counts.pop(int(index), None) is not None:
            self._show_non_finite()

    def clear_frames(self) -> None:
        """The scale changed: frames rendered before say nothing about the new ones."""
        self._pixel_counts.clear()
        self._failed_frames.clear()
        self._show_non_finite()

    def note_failed_frame(self, index: int, message: str) -> None:
        """The backend raised on this frame (the lane goes on with its others): marked like a NaN frame."""
        self._failed_frames[int(index)] = message
        self._show_non_finite()

    def failed_frame(self, index: int) -> str | None:
        """Why this frame could not be drawn at the lane's current scale, or None."""
        return self._failed_frames.get(int(index))

    def show_failed_frame(self, index: int) -> None:
        """The playhead is on a frame that failed: say so instead of waiting for it (no late marker)."""
        self.set_late(False)
        self.status.setText(f"frame {index} failed: {self._failed_frames.get(int(index), '')}")

    def set_busy(self, seconds: float | None) -> None:
        """The lane's model has been running for ``seconds`` without returning (None: it is not stuck)."""
        stuck = seconds is not None
        self.busy_marker.setText(f"⏳ no answer for {seconds:.0f} s" if stuck else "")
        self.busy_marker.setVisible(stuck)
        self.stop_button.setVisible(stuck)

    def non_finite_frames(self, num_frames: int) -> np.ndarray:
        """[num_frames] bool: frames fed a NaN/Inf feature or whose generator output held NaN/Inf (timeline row)."""
        row = np.zeros(num_frames, dtype=bool)
        count = min(num_frames, self._feature_frames.size)
        row[:count] = self._feature_frames[:count]
        for index in list(self._pixel_counts) + list(self._failed_frames):
            if 0 <= index < num_frames:
                row[index] = True
        return row

    @property
    def non_finite_pixels(self) -> int:
        """NaN/Inf values in the generator outputs rendered so far at this scale."""
        return sum(self._pixel_counts.values())

    def _show_non_finite(self) -> None:
        parts = []
        if self.non_finite_features:
            reach = np.flatnonzero(self._feature_frames)
            where = f" (frames {reach[0]}–{reach[-1]})" if reach.size else ""
            parts.append(f"{self.non_finite_features} NaN/Inf features{where}")
        if self._pixel_counts:
            first = min(self._pixel_counts)
            parts.append(f"{self.non_finite_pixels} NaN/Inf pixels in {len(self._pixel_counts)} frames "
                         f"(first {first})")
        if self._failed_frames:
            first = min(self._failed_frames)
            parts.append(f"{len(self._failed_frames)} frames failed (first {first}: {self._failed_frames[first]})")
        self.non_finite_marker.setText("⚠ " + " · ".join(parts) if parts else "")
        self.non_finite_marker.setToolTip(
            "This lane produced NaN or Inf values. NaN pixels are drawn black; the timeline marks the frames in red. "
            "`report` never calls such a lane a match." if parts else "")
        self.non_finite_marker.setVisible(bool(parts))

    def set_late(self, late: bool) -> None:
        self.is_late = late
        self.late_marker.setVisible(late)

    def show_error(self, message: str) -> None:
        self.error.setText(f"<b>This lane cannot render</b><br><br>{_escape(message)}")
        self.stack.setCurrentWidget(self.error)
        self.status.setText("stopped" if message.startswith("stopped") else "failed")
        self.set_late(False)
        self.set_busy(None)
        self.scale_control.setEnabled(False)

    @property
    def error_text(self) -> str | None:
        return self.error.text() if self.stack.currentWidget() is self.error else None


def _escape(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("\n", "<br>"))
