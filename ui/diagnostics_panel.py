"""View ▸ Diagnostics (Ctrl+D): what `report` says about the lanes on screen, at the scales on screen.

A dock with tabs:
- **Verdicts**: per lane, the kind of divergence (pipeline/divergence.py's vocabulary), the first divergent stage,
  the explanation and the evidence behind it;
- **Stages**: per lane and stage, max abs, cosine, k, R² and whether it passed;
- **Mouth**: per lane, the mouth's range of motion, its correlation with the loudness and the best offset, and
  PSNR/SSIM of the mouth region against the reference (pipeline/mouth.py);
- **Weights**: diff-weights of each lane's model files against the reference's (workspace/weight_diff.py), where
  both sides are model files;
- **Scale sweep** (Ctrl+Shift+D): one lane's mouth at the current frame at nine scales; a click applies one.

The work runs on worker threads (workspace/diagnostics.LatestOnly): the window's thread snapshots the lanes and
their scales, the worker computes, and only the newest request's result is applied, on the window's thread. A
change of scale or lanes recomputes after a short pause (debounced) while the dock is visible; Refresh recomputes
now. The dock also feeds the timeline's mouth curves: each rendered frame's crop is measured (one narrow slice of
it, cheap) as it arrives.
"""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QDockWidget, QHBoxLayout, QHeaderView, QLabel, QMenu,
                               QPushButton, QTableWidget, QTableWidgetItem, QTabWidget, QTextBrowser, QVBoxLayout,
                               QWidget)

from core.errors import InputError
from ui.scale_sweep import ScaleSweep
from workspace.diagnostics import (DiagnosticsResult, LatestOnly, MouthTrack, SweepResult, WeightsCache, WorkFailed,
                                   compute, render_sweep, snapshot, sweep_request)

if TYPE_CHECKING:
    from ui.main_window import MainWindow
    from workspace.render_worker import FrameReady

TOGGLE_SHORTCUT = "Ctrl+D"
SWEEP_SHORTCUT = "Ctrl+Shift+D"
DEBOUNCE_MS = 700  # a slider drag ends before the report (seconds of work) starts
DOCK_WIDTH = 560  # wide enough for the stage table's figures and a verdict's sentence on a few lines
CURVES_MS = 250  # the timeline's mouth curves are redrawn at most this often

STAGE_COLUMNS = ("lane", "stage", "max abs", "cosine", "k", "R²", "passed", "kind")
MOUTH_COLUMNS = ("lane", "range (px)", "r with loudness", "best offset", "mouth PSNR", "mouth SSIM", "crop PSNR")
PASSING = ("match", "precision")


def _number(value: Any, spec: str = ".4g") -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return "–" if isinstance(value, float) and not math.isfinite(value) else format(value, spec)
    return str(value)


def evidence_text(evidence: dict[str, Any]) -> str:
    """The figures behind a verdict, one ``name: value`` each (nested records flattened one level)."""
    parts = []
    for key, value in evidence.items():
        if isinstance(value, dict):
            inner = ", ".join(f"{k} {_number(v)}" for k, v in value.items() if not isinstance(v, (dict, list)))
            parts.append(f"{key}: {inner}")
        elif isinstance(value, list):
            parts.append(f"{key}: {', '.join(_number(v) for v in value[:8])}{' …' if len(value) > 8 else ''}")
        else:
            parts.append(f"{key}: {_number(value)}")
    return "; ".join(parts)


def _table(columns: tuple[str, ...]) -> QTableWidget:
    """Figures, one line a row (sentences go in the rich-text views; a cell's tooltip holds what it cuts)."""
    table = QTableWidget(0, len(columns))
    table.setHorizontalHeaderLabels(list(columns))
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    table.setWordWrap(False)
    table.verticalHeader().setVisible(False)
    header = table.horizontalHeader()
    header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    header.setStretchLastSection(True)
    return table


def _fill(table: QTableWidget, rows: list[list[str]], tips: list[list[str]] | None = None) -> None:
    table.setRowCount(len(rows))
    for r, row in enumerate(rows):
        for c, text in enumerate(row):
            item = QTableWidgetItem(text)
            item.setToolTip((tips[r][c] if tips else "") or text)
            table.setItem(r, c, item)
    table.resizeRowsToContents()


def _browser() -> QTextBrowser:
    view = QTextBrowser()
    view.setOpenLinks(False)
    return view


def verdicts_html(diagnosis: list[Any], reference: str) -> str:
    """Per lane: its kind (green when it passes), the first divergent stage, the explanation and the evidence."""
    if not diagnosis:
        return "<p>No lane to compare with the reference.</p>"
    parts = []
    for d in diagnosis:
        colour = "#81c995" if d.kind in PASSING else "#f28b82"
        kind = html.escape(d.kind + (f" (or {', '.join(d.also)})" if d.also else ""))
        stage = html.escape(d.first_divergent_stage or "none")
        parts.append(f"<p><b>{html.escape(d.lane)}</b> — <b style='color:{colour}'>{kind}</b>, first divergent "
                     f"stage: <b>{stage}</b><br>{html.escape(d.explanation)}")
        if d.mouth:
            parts.append(f"<br><i>mouth:</i> {html.escape(d.mouth)}")
        if d.evidence:
            parts.append(f"<br><span style='color:#9aa0a6'>evidence: {html.escape(evidence_text(d.evidence))}</span>")
        parts.append("</p>")
    return f"<p style='color:#9aa0a6'>against {html.escape(reference)}</p>" + "".join(parts)


def weights_html(entries: list[Any]) -> str:
    if not entries:
        return ("<p>No lane has model files of its own to compare with the reference's (a feature or output dump "
                "has no weights; a lane with the reference's own file is not compared with itself).</p>")
    parts = []
    for w in entries:
        head = f"<b>{html.escape(w.lane)}</b>, {html.escape(w.role)}"
        if w.error is not None:
            parts.append(f"<p>{head}: the weights could not be compared: {html.escape(w.error)}</p>")
            continue
        untrained = (f"<b style='color:#f28b82'>looks untrained</b> ({w.untrained_layers} of {w.layers} layers at "
                     "PyTorch's default initialisation)" if w.untrained else
                     f"trained ({w.untrained_layers} of {w.layers} layers at default initialisation)")
        parts.append(f"<p>{head}: {untrained}; {w.differing} of {w.layers} paired layers differ from the "
                     f"reference's<br><span style='color:#9aa0a6'>{html.escape(w.lane_path)} against "
                     f"{html.escape(w.reference_path)}</span><br>{html.escape(w.verdict)}</p>")
    return "".join(parts)


class _Bridge(QObject):
    """Worker thread -> window thread (queued): (generation, result)."""

    report = Signal(int, object)
    sweep = Signal(int, object)


class DiagnosticsPanel(QDockWidget):
    """The dock; ``install_diagnostics`` builds it into the window and its View menu."""

    def __init__(self, window: MainWindow) -> None:
        super().__init__("Diagnostics", window)
        self.setObjectName("diagnostics")
        self.window_ = window
        self.workspace = window.workspace
        self.result: DiagnosticsResult | None = None
        self._stale = True
        self._weights_cache = WeightsCache()
        self.track = MouthTrack()
        self._curves_dirty = False

        self._bridge = _Bridge()
        self.reports = LatestOnly("diagnostics-report",
                                  lambda request, stop: compute(request, self._weights_cache, stop),
                                  self._bridge.report.emit)
        self.sweeps = LatestOnly("diagnostics-sweep", render_sweep, self._bridge.sweep.emit)
        self._bridge.report.connect(self._apply_report, Qt.ConnectionType.QueuedConnection)
        self._bridge.sweep.connect(self._apply_sweep, Qt.ConnectionType.QueuedConnection)

        self.status = QLabel("Open a session to see its diagnostics.")
        self.status.setWordWrap(True)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.setToolTip("Recompute the report on the lanes at their current scales")
        self.refresh_button.clicked.connect(self.refresh)
        self.audio_check = QCheckBox("Audio check")
        self.audio_check.setToolTip("Rerun lanes whose features diverge on silence and on the reversed clip "
                                    "(names audio_ignored; slower)")
        self.audio_check.toggled.connect(lambda _: self.schedule())
        self.verdicts = _browser()
        self.stages = _table(STAGE_COLUMNS)
        self.mouth = _table(MOUTH_COLUMNS)
        self.mouth_summary = QLabel("")
        self.mouth_summary.setWordWrap(True)
        self.mouth_summary.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        mouth_tab = QWidget()
        mouth_layout = QVBoxLayout(mouth_tab)
        mouth_layout.setContentsMargins(0, 0, 0, 0)
        mouth_layout.addWidget(self.mouth, 1)
        mouth_layout.addWidget(self.mouth_summary)
        self.weights = _browser()
        self.sweep = ScaleSweep()
        self.sweep.sweepRequested.connect(lambda lane_id: self.run_sweep(lane_id))
        self.sweep.scaleChosen.connect(self._choose_scale)
        self.tabs = QTabWidget()
        for widget, name in ((self.verdicts, "Verdicts"), (self.stages, "Stages"), (mouth_tab, "Mouth"),
                             (self.weights, "Weights"), (self.sweep, "Scale sweep")):
            self.tabs.addTab(widget, name)

        top = QHBoxLayout()
        top.addWidget(self.status, 1)
        top.addWidget(self.audio_check)
        top.addWidget(self.refresh_button)
        body = QWidget()
        layout = QVBoxLayout(body)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(top)
        layout.addWidget(self.tabs, 1)
        self.setWidget(body)

        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(DEBOUNCE_MS)
        self._debounce.timeout.connect(self.refresh)
        self._curve_timer = QTimer(self)
        self._curve_timer.setInterval(CURVES_MS)
        self._curve_timer.timeout.connect(self._draw_curves)
        self._curve_timer.start()
        self.visibilityChanged.connect(self._on_visibility)

        self.workspace.content_changed.connect(self._on_content)
        self.workspace.lanes_changed.connect(self._on_lanes)
        self.workspace.scale_changed.connect(self._on_scale)
        window.transport.frame_ready.connect(self._on_frame_ready)

    # -- requests -------------------------------------------------------------------------------------------
    def schedule(self) -> None:
        """A change of lanes or scales: recompute after a pause while the dock shows, else when it is shown."""
        self._stale = True
        if self.isVisible():
            self._debounce.start()

    def refresh(self) -> int | None:
        """Recompute now on the lanes as they are (supersedes a computation in flight); returns its generation."""
        self._debounce.stop()
        request = snapshot(self.workspace, audio_check=self.audio_check.isChecked())
        if request is None:
            self.reports.cancel()
            self._stale = False
            return None
        self._stale = False
        self.status.setText(f"Computing the report on {len(request.lanes)} lanes at their current scales…")
        return self.reports.submit(request)

    @property
    def computing(self) -> bool:
        return not self.reports.idle or self._debounce.isActive()

    def _on_visibility(self, visible: bool) -> None:
        if visible and self._stale:
            self.refresh()

    def _on_content(self) -> None:
        self.track.reset(self.workspace.num_frames)
        self.window_.timeline.set_mouth_curves([])
        self.sweep.clear("Pick a lane and sweep: a click on a mouth applies its scale.")
        self._on_lanes()

    def _on_lanes(self) -> None:
        states = self.workspace.lanes
        self.track.forget_other_lanes({s.lane_id for s in states})
        drawable = [(s.lane_id, s.name) for s in states if s.renders_frames]
        preferred = next((i for i, _ in drawable if i != self.workspace.reference_id), None)
        self.sweep.set_lanes(drawable, preferred)
        self._curves_dirty = True
        self.schedule()

    def _on_scale(self, lane_id: int, scale: float) -> None:
        if self.sweep.result is not None and self.sweep.result.lane_id == lane_id:
            self.sweep.mark_scale(scale)
        self._curves_dirty = True
        self.schedule()

    # -- results ----------------------------------------------------------------------------------------------
    def _apply_report(self, generation: int, result: DiagnosticsResult | WorkFailed) -> None:
        if generation != self.reports.generation:
            return  # superseded while it crossed threads
        if isinstance(result, WorkFailed):
            self.status.setText(f"The report failed: {result.message}")
            self.status.setToolTip(result.details)
            return
        self.result = result
        if result.report is None:
            self.status.setText(f"Nothing to compare: {result.error}")
            for table in (self.stages, self.mouth):
                table.setRowCount(0)
            for view in (self.verdicts, self.weights):
                view.setHtml(f"<p>{html.escape(str(result.error))}</p>")
            self.mouth_summary.setText("")
            return
        report = result.report
        frames = report.frames
        self.status.setText(
            f"Against {report.reference}, on {len(frames)} frame{'s' if len(frames) != 1 else ''}"
            + (f" ({frames[0]}–{frames[-1]})" if frames else "") + " at the lanes' current scales"
            + (f"; {len(report.errors)} error(s): " + "; ".join(report.errors) if report.errors else ""))
        self.status.setToolTip("\n".join(report.errors))
        self.verdicts.setHtml(verdicts_html(report.diagnosis, report.reference))
        _fill(self.stages,
              [[c.lane, c.stage, _number(c.max_abs), _number(c.cosine, ".5f"), _number(c.scale), _number(c.r2, ".3f"),
                _number(c.passed), c.kind] for c in report.comparisons],
              [[c.verdict, "", "", "", "lane ≈ k × reference", "", "", c.verdict] for c in report.comparisons])
        rows, tips, summaries = [], [], []
        for entry in report.mouth:
            measure, metrics = entry["measure"], entry.get("metrics") or {}
            rows.append([entry["lane"], _number(measure["range_px"], ".1f"),
                         _number(measure["best_correlation"], ".2f"), f"{measure['best_offset']:+d} frames",
                         _number(metrics.get("mouth_psnr"), ".1f"), _number(metrics.get("mouth_ssim"), ".3f"),
                         _number(metrics.get("psnr"), ".1f")])
            tips.append([measure["summary"]] * len(MOUTH_COLUMNS))
            summaries.append(f"<b>{html.escape(entry['lane'])}</b>: {html.escape(measure['summary'])}")
        _fill(self.mouth, rows, tips)
        self.mouth_summary.setText("<br>".join(summaries) + (
            f"<br><span style='color:#9aa0a6'>on {len(report.mouth[0]['measure']['frames'])} frames spread over the "
            "clip; PSNR/SSIM against the reference, mouth region and whole crop</span>" if report.mouth else ""))
        self.weights.setHtml(weights_html(result.weights))

    def verdict(self, lane_name: str) -> Any:
        """The lane's LaneDiagnosis from the last result (None before one arrived or for the reference)."""
        if self.result is None or self.result.report is None:
            return None
        return next((d for d in self.result.report.diagnosis if d.lane == lane_name), None)

    # -- the scale sweep --------------------------------------------------------------------------------------
    def run_sweep(self, lane_id: int | None = None) -> int | None:
        """Sweep a lane's mouth over scales at the current frame (the sweep tab's lane when None)."""
        lane_id = self.sweep.lane_id if lane_id is None else lane_id
        if lane_id is None:
            self.sweep.clear("No lane draws frames: nothing to sweep.")
            return None
        self.sweep.select_lane(lane_id)
        frame = self.window_.current_frame
        try:
            request = sweep_request(self.workspace.lane(lane_id), frame)
        except (InputError, KeyError) as error:
            self.sweep.clear(str(error))
            return None
        self.sweep.show_busy(request.name, frame)
        return self.sweeps.submit(request)

    def show_sweep(self) -> None:
        """Ctrl+Shift+D: show the dock on the sweep tab and sweep the chosen lane at the current frame."""
        self.show()
        self.raise_()
        self.tabs.setCurrentWidget(self.sweep)
        self.run_sweep()

    def _apply_sweep(self, generation: int, result: SweepResult | WorkFailed) -> None:
        if generation != self.sweeps.generation:
            return
        if isinstance(result, WorkFailed):
            self.sweep.clear(f"The sweep failed: {result.message}")
            return
        current = next((s.scale for s in self.workspace.lanes if s.lane_id == result.lane_id), None)
        if current is None:
            return  # the lane went while its sweep rendered
        self.sweep.show_result(result, current)

    def _choose_scale(self, lane_id: int, scale: float) -> None:
        """A tile was clicked: the lane takes that scale, through the window (changed flag, quit prompt)."""
        if any(s.lane_id == lane_id for s in self.workspace.lanes):
            self.window_.set_lane_scale(lane_id, scale)
            self.sweep.mark_scale(self.workspace.lane(lane_id).scale)

    # -- the timeline's mouth curves ---------------------------------------------------------------------------
    def _on_frame_ready(self, result: FrameReady) -> None:
        crop = getattr(result.frame, "crop", None)
        if crop is not None:
            self.track.note(result.lane_id, result.scale, result.index, crop)
            self._curves_dirty = True

    def _draw_curves(self) -> None:
        if not self._curves_dirty:
            return
        self._curves_dirty = False
        curves = []
        for slot in self.window_.slots:
            curve = self.track.curve(slot.lane_id, slot.scale)
            if curve is not None:
                curves.append((slot.colour, curve))
        self.window_.timeline.set_mouth_curves(curves)

    def shutdown(self) -> None:
        self._debounce.stop()
        self._curve_timer.stop()
        self.reports.stop()
        self.sweeps.stop()


def install_diagnostics(window: MainWindow, view_menu: QMenu) -> DiagnosticsPanel:
    """The dock (hidden until View ▸ Diagnostics, Ctrl+D) and its actions."""
    panel = DiagnosticsPanel(window)
    window.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, panel)
    window.resizeDocks([panel], [DOCK_WIDTH], Qt.Orientation.Horizontal)
    panel.hide()
    toggle = panel.toggleViewAction()
    toggle.setText("&Diagnostics")
    toggle.setShortcut(TOGGLE_SHORTCUT)
    toggle.setShortcutContext(Qt.ShortcutContext.ApplicationShortcut)
    toggle.setToolTip("Show the report on the lanes at their current scales: verdicts, stages, mouth, weights "
                      f"({TOGGLE_SHORTCUT})")
    window.addAction(toggle)
    view_menu.addSeparator()
    view_menu.addAction(toggle)
    sweep = window._action("Scale &sweep at this frame", panel.show_sweep, SWEEP_SHORTCUT,
                           "One lane's mouth at 9 scales from 1× to 1000× at the current frame; click one to apply it")
    view_menu.addAction(sweep)
    panel.toggle_action = toggle
    panel.sweep_action = sweep
    return panel
