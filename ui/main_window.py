"""The comparison window: lanes side by side, transport, timeline, live plots, per-lane scale.

The window builds widgets and forwards user input; the state lives in the Qt-free model (workspace/):
- ``Workspace`` holds the lanes, their scales, the reference and the session on disk;
- ``Transport`` holds the clock, the playhead, loop and speed, and schedules the render worker.
The window subscribes to their events and redraws. One QTimer tick asks the transport for the frame to show;
worker results reach this thread through a Qt signal (queued connection) and are applied by the transport.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PySide6.QtCore import QByteArray, QEventLoop, QObject, QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QActionGroup, QCloseEvent, QKeySequence
from PySide6.QtWidgets import (QApplication, QCheckBox, QComboBox, QDoubleSpinBox, QHBoxLayout, QLabel,
                               QMainWindow, QMessageBox, QProgressBar, QSplitter, QStyle, QTabWidget, QToolBar,
                               QVBoxLayout, QWidget)

from backends.registry import MODELS
from core.errors import InputError
from pipeline.lane import FailedLane, RenderedFrame
from pipeline.metrics import scale_problem
from pipeline.session import LaneSpec, Session
from ui.compare_view import CompareView
from ui.diagnostics_panel import install_diagnostics
from ui.export_actions import install_export_actions
from ui.help import HelpMixin
from ui.lane_view import LaneView
from ui.plots import FeaturePlots, PlotLane
from ui.session_files import SessionFilesMixin
from ui.timeline import LANE_COLOURS, Timeline
from workspace.clock import FPS, PlaybackClock
from workspace.frame_cache import FrameCache
from workspace.model import MAX_LANES, FitError, LaneState, RunnableLane, Workspace, frame_count_for
from workspace.playback_policy import AUTO, EVERY, REDUCED, SETTINGS as PREVIEW_SETTINGS, Decision
from workspace.render_worker import FrameFailed, FrameReady, RenderWorker
from workspace.transport import ClockFactory, Transport

__all__ = ["MainWindow", "LaneSlot", "frame_count_for", "MAX_LANES"]

log = logging.getLogger(__name__)

TICK_MS = 10  # the display timer: fine enough that a 40 ms frame is never shown late by more than a tick
TIMELINE_REFRESH_TICKS = 25
STUCK_AFTER_S = 10.0  # a lane call running this long is offered a Stop (slow machines take seconds per frame)
SHARED_Y_SETTING = "plots/sharedY"
PREVIEW_SETTING = "playback/previewRate"  # auto / every / reduced (workspace/playback_policy.py)
PRERENDER_FORMAT = "pre-rendering %p%"


@dataclass(frozen=True)
class LaneSlot:
    """A lane of the workspace with its column on screen (the model's state, the view, the lane's colour)."""

    state: LaneState
    view: LaneView
    colour: str

    @property
    def lane_id(self) -> int:
        return self.state.lane_id

    @property
    def spec(self) -> LaneSpec:
        return self.state.spec

    @property
    def scale(self) -> float:
        return self.state.scale

    @property
    def lane(self) -> RunnableLane | None:
        return self.state.lane

    @property
    def failure(self) -> str | None:
        return self.state.failure

    @property
    def features_only(self) -> bool:
        return self.state.features_only

    @property
    def raw_features(self) -> np.ndarray | None:
        return self.state.raw_features


class _WorkerBridge(QObject):
    """Carries worker results from the render thread onto the GUI thread (queued connection)."""

    delivered = Signal(object)


class MainWindow(HelpMixin, SessionFilesMixin, QMainWindow):
    """The application window. Tests drive it through its public methods and read its widgets."""

    def __init__(self, settings: QSettings | None = None, prefer_audio: bool = True,
                 audio_device: int | str | None = None, cache_bytes: int | None = None,
                 audio_options: dict[str, Any] | None = None, clock_factory: ClockFactory | None = None) -> None:
        super().__init__()
        self.settings = settings if settings is not None else QSettings("lipsync-compare", "lipsync-compare")
        self.setWindowTitle("lipsync-compare")
        self.setAcceptDrops(True)
        self.resize(1400, 900)

        self.workspace = Workspace(models=MODELS)
        self._bridge = _WorkerBridge()
        self.transport = Transport(self.workspace, FrameCache(cache_bytes) if cache_bytes else None,
                                   deliver=self._bridge.delivered.emit, clock_factory=clock_factory,
                                   prefer_audio=prefer_audio, audio_device=audio_device, audio_options=audio_options)
        self._bridge.delivered.connect(self.transport.apply_result, Qt.ConnectionType.QueuedConnection)
        self.views: dict[int, LaneView] = {}
        self._shown_reference: int | None = None
        self._tick_count = 0
        self._timeline_dirty = True

        self._build_widgets()
        self._build_actions()
        self._restore_layout()
        self._subscribe()

        self.timer = QTimer(self)
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(self._tick)
        self.timer.start()

    # ==========================================================================================================
    # the model, as the tests and the mixins read it
    # ==========================================================================================================
    @property
    def cache(self) -> FrameCache:
        return self.transport.cache

    @property
    def worker(self) -> RenderWorker:
        return self.transport.worker

    @property
    def clock(self) -> PlaybackClock | None:
        return self.transport.clock

    @property
    def session(self) -> Session | None:
        return self.workspace.session

    @property
    def samples(self) -> np.ndarray:
        return self.workspace.samples

    @property
    def num_frames(self) -> int:
        return self.workspace.num_frames

    @property
    def hidden_specs(self) -> list[LaneSpec]:
        return self.workspace.hidden_specs

    @property
    def reference_id(self) -> int | None:
        return self.workspace.reference_id

    @property
    def slots(self) -> list[LaneSlot]:
        return [LaneSlot(state, self.views[state.lane_id], self._colour(state.lane_id))
                for state in self.workspace.lanes if state.lane_id in self.views]

    def slot(self, lane_id: int) -> LaneSlot:
        return next(s for s in self.slots if s.lane_id == lane_id)

    @property
    def current_frame(self) -> int:
        return self.transport.current_frame

    @property
    def playing(self) -> bool:
        return self.transport.playing

    # ==========================================================================================================
    # construction
    # ==========================================================================================================
    def _build_widgets(self) -> None:
        self.lane_area = QWidget()
        self.lane_layout = QHBoxLayout(self.lane_area)
        self.lane_layout.setContentsMargins(4, 4, 4, 4)
        self.empty_label = QLabel(self.EMPTY_TEXT)
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_label.setWordWrap(True)
        self.lane_layout.addWidget(self.empty_label)
        self.compare_view = CompareView()
        self.tabs = QTabWidget()
        self.tabs.addTab(self.lane_area, "Side by side")
        self.tabs.addTab(self.compare_view, "Wipe / difference")
        self.tabs.currentChanged.connect(lambda _: self._refresh_compare())

        self.timeline = Timeline()
        self.timeline.seekRequested.connect(self.seek_frame)
        self.timeline.loop_region.sigRegionChangeFinished.connect(
            lambda _: self.transport.set_loop(self.timeline.loop()))
        self.plots = FeaturePlots()

        analysis = QWidget()  # the timeline keeps its height; the plots take what the splitter gives
        analysis_layout = QVBoxLayout(analysis)
        analysis_layout.setContentsMargins(0, 0, 0, 0)
        analysis_layout.addWidget(self.timeline)
        analysis_layout.addWidget(self.plots, 1)
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.addWidget(self.tabs)
        self.splitter.addWidget(analysis)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)
        self.setCentralWidget(self.splitter)

        self.frame_label = QLabel("frame – / –")
        self.frame_label.setMinimumWidth(190)
        self.speed_box = QComboBox()
        for speed in (1.0, 0.75, 0.5, 0.25):
            self.speed_box.addItem(f"{speed:g}×", speed)
        self.speed_box.setToolTip("Playback speed (slower playback lowers the pitch)")
        self.speed_box.currentIndexChanged.connect(
            lambda _: self.transport.set_speed(float(self.speed_box.currentData())))
        self.offset_box = QDoubleSpinBox()
        self.offset_box.setRange(-500, 500)
        self.offset_box.setDecimals(0)
        self.offset_box.setSingleStep(10)
        self.offset_box.setSuffix(" ms")
        self.offset_box.setToolTip("A/V offset: positive values delay the picture against the sound")
        self.offset_box.valueChanged.connect(lambda value: self.transport.set_av_offset(value / 1000.0))
        self.loop_box = QCheckBox("Loop")
        self.loop_box.setToolTip("Loop the highlighted region of the timeline (L)")
        self.loop_box.toggled.connect(self.transport.set_loop_on)

        self.clock_label = QLabel("")
        self.render_label = QLabel("")
        self.progress = QProgressBar()
        # Wide enough for its longest text ("pre-rendering 100%", "opening lanes 4 / 4"): it was clipped.
        longest = max(("pre-rendering 100%", "opening lanes 4 / 4"), key=self.progress.fontMetrics().horizontalAdvance)
        self.progress.setMinimumWidth(self.progress.fontMetrics().horizontalAdvance(longest) + 48)
        self.progress.setMaximumWidth(self.progress.minimumWidth() + 80)
        self.progress.setVisible(False)
        self.policy_label = QLabel("")  # how playback plays now, and why (workspace/playback_policy.py)
        self.statusBar().addWidget(self.clock_label, 1)
        self.statusBar().addPermanentWidget(self.policy_label)
        self.statusBar().addPermanentWidget(self.render_label)
        self.statusBar().addPermanentWidget(self.progress)

    EMPTY_TEXT = "Open a session (Ctrl+O) or drop a session, audio file or avatar folder here."

    def _action(self, text: str, slot, shortcut: str | QKeySequence | Qt.Key | None = None, tip: str = "",
                checkable: bool = False, icon: QStyle.StandardPixmap | None = None) -> QAction:
        action = QAction(text, self)
        if icon is not None:
            action.setIcon(self.style().standardIcon(icon))
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
            # Application-wide, so the transport keys work wherever the focus is in the app (a dock, the plots);
            # a text box that is being edited still gets its keys, and gives the focus back on Enter/Escape.
            action.setShortcutContext(Qt.ShortcutContext.ApplicationShortcut)
        action.setToolTip(tip or text)
        action.setCheckable(checkable)
        (action.toggled if checkable else action.triggered).connect(slot)
        self.addAction(action)
        return action

    def _build_actions(self) -> None:
        self.file_menu = menu = self.menuBar().addMenu("&File")
        menu.addAction(self._action("&Open session…", self.choose_session, QKeySequence.StandardKey.Open))
        menu.addAction(self._action("Open &audio…", self.choose_audio))
        menu.addAction(self._action("Open a&vatar folder…", self.choose_avatar))
        self.recent_menu = menu.addMenu("Recent sessions")
        self.reload_action = self._action("&Reload models", self.reload_models, "Ctrl+R",
                                          "Reopen the lanes whose model files changed on disk (and lanes that failed "
                                          "or were stopped); frames drawn by the old models are dropped")
        menu.addAction(self.reload_action)
        menu.addSeparator()
        menu.addAction(self._action("&Save session", self.save_current_session, QKeySequence.StandardKey.Save))
        menu.addAction(self._action("Save session &as…", self.choose_save_path, "Ctrl+Shift+S"))
        menu.addSeparator()
        self.exports = install_export_actions(self, menu)  # Export video… (Ctrl+E), Export picture… (Ctrl+Shift+E)
        menu.addSeparator()
        self.quit_action = self._action("&Quit", self.close, QKeySequence.StandardKey.Quit)
        menu.addAction(self.quit_action)
        self._refresh_recent_menu()

        lanes = self.menuBar().addMenu("&Lanes")
        lanes.addAction(self._action("&Add lane…", self.choose_new_lane, "Ctrl+N"))

        pixmap = QStyle.StandardPixmap
        self.play_action = self._action("Play", self.toggle_play, Qt.Key.Key_Space, "Play / pause (Space)",
                                        icon=pixmap.SP_MediaPlay)
        self.step_back_action = self._action("Step back", lambda: self.step(-1), Qt.Key.Key_Left,
                                             "Step back one frame and hear it (Left)", icon=pixmap.SP_MediaSeekBackward)
        self.step_action = self._action("Step", lambda: self.step(1), Qt.Key.Key_Right,
                                        "Step one frame and hear it (Right)", icon=pixmap.SP_MediaSeekForward)
        self.home_action = self._action("First frame", self.go_home, Qt.Key.Key_Home, "First frame (Home)",
                                        icon=pixmap.SP_MediaSkipBackward)
        self.end_action = self._action("Last frame", self.go_end, Qt.Key.Key_End, "Last frame (End)",
                                       icon=pixmap.SP_MediaSkipForward)
        self.loop_action = self._action("Toggle loop", lambda: self.loop_box.toggle(), Qt.Key.Key_L)
        playback = self.menuBar().addMenu("&Playback")
        for action in (self.play_action, self.step_back_action, self.step_action, self.home_action, self.end_action,
                       self.loop_action):
            playback.addAction(action)
        self.prerender_action = self._action("Pre-render whole clip before playing", self._on_prerender_toggled,
                                             tip="Render every frame first (with progress), then play smoothly",
                                             checkable=True)
        playback.addAction(self.prerender_action)
        preview = playback.addMenu("Preview rate")
        preview_group = QActionGroup(self)
        self.preview_actions: dict[str, QAction] = {}
        for setting, text, tip in (
                (AUTO, "Automatic", "Play every frame when the lanes keep up; otherwise render ahead, show every "
                                    "k-th frame or suggest pre-render, and say which in the status bar"),
                (EVERY, "Every frame", "Always ask for every frame (frames that come late are marked late)"),
                (REDUCED, "Reduced rate", "Show every k-th frame (at least every 2nd) while the audio plays on")):
            action = self._action(text, lambda on, s=setting: on and self.set_preview_setting(s), tip=tip,
                                  checkable=True)
            preview_group.addAction(action)
            preview.addAction(action)
            self.preview_actions[setting] = action

        self.view_menu = view = self.menuBar().addMenu("&View")
        self.crop_action = self._action("Show generator crop enlarged", lambda _: self._show_frame(force=True), "C",
                                        checkable=True)
        view.addAction(self.crop_action)
        self.shared_y_action = self._action("Shared y-range for the lanes' feature plots", self._on_shared_y,
                                            tip="One y-axis range for every lane's plot, so a lane 30x smaller "
                                                "looks 30x smaller", checkable=True)
        view.addAction(self.shared_y_action)
        group = QActionGroup(self)
        for index, name in enumerate(("Side by side", "Wipe / difference")):
            action = self._action(name, lambda _=False, i=index: self.tabs.setCurrentIndex(i), f"Ctrl+{index + 1}")
            group.addAction(action)
            view.addAction(action)

        self.diagnostics = install_diagnostics(self, view)  # View ▸ Diagnostics (Ctrl+D), Scale sweep (Ctrl+Shift+D)

        self._build_help_menu()

        toolbar = QToolBar("Transport")
        toolbar.setObjectName("transport")
        for action in (self.home_action, self.step_back_action, self.play_action, self.step_action, self.end_action):
            toolbar.addAction(action)
        toolbar.addSeparator()
        toolbar.addWidget(self.frame_label)
        toolbar.addWidget(QLabel(" Speed "))
        toolbar.addWidget(self.speed_box)
        toolbar.addWidget(QLabel("  A/V offset "))
        toolbar.addWidget(self.offset_box)
        toolbar.addWidget(self.loop_box)
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, toolbar)

        self.prerender_action.setChecked(self.settings.value("prerender", False, type=bool))
        self.transport.prerender = self.prerender_action.isChecked()
        preview_setting = str(self.settings.value(PREVIEW_SETTING, AUTO))
        self.preview_actions[preview_setting if preview_setting in PREVIEW_SETTINGS else AUTO].setChecked(True)
        # The A/V offset calibrates this machine's audio path (Bluetooth, HDMI), not a session: remember it.
        self.offset_box.setValue(self.settings.value("avOffsetMs", 0.0, type=float))
        self.offset_box.valueChanged.connect(lambda value: self.settings.setValue("avOffsetMs", value))
        self.shared_y_action.setChecked(self.settings.value(SHARED_Y_SETTING, True, type=bool))
        self.plots.set_shared_y(self.shared_y_action.isChecked())

    def _restore_layout(self) -> None:
        geometry = self.settings.value("window/geometry")
        if isinstance(geometry, QByteArray):
            self.restoreGeometry(geometry)
        state = self.settings.value("window/state")
        if isinstance(state, QByteArray):
            self.restoreState(state)
        splitter = self.settings.value("window/splitter")
        if isinstance(splitter, QByteArray):
            self.splitter.restoreState(splitter)

    def _subscribe(self) -> None:
        """The window follows the model: every redraw below is the answer to one of its events."""
        self.workspace.content_changed.connect(self._on_content)
        self.workspace.lanes_changed.connect(self._on_lanes_changed)
        self.workspace.scale_changed.connect(self._on_scale_changed)
        self.workspace.features_ready.connect(self._on_features_ready)
        self.workspace.dirty_changed.connect(self.setWindowModified)
        self.transport.frame_changed.connect(self._on_frame_changed)
        self.transport.playing_changed.connect(self._show_playing)
        self.transport.loop_changed.connect(self._on_loop_changed)
        self.transport.clock_changed.connect(self._on_clock_changed)
        self.transport.frame_ready.connect(self._on_frame_ready)
        self.transport.frame_failed.connect(self._on_frame_failed)
        self.transport.prerender_progress.connect(self._on_prerender_progress)
        self.transport.prerender_incomplete.connect(self._on_prerender_incomplete)
        self.transport.playback_mode_changed.connect(self._on_playback_mode)

    # ==========================================================================================================
    # content
    # ==========================================================================================================
    def open_session(self, path: str | Path) -> bool:
        """Load a session file and open its lanes; a broken session shows a message and changes nothing.

        Models load on this thread (seconds each for Core ML): the status bar and the empty lane area name the lane
        being opened and a progress bar counts the lanes, painted between lanes while user input waits.
        """
        path = Path(path)
        QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
        try:
            self.workspace.open_session(path, progress=self._show_opening)
        except InputError as error:
            self._complain(f"Cannot open {path.name}", str(error))
            return False
        finally:  # also on an unexpected error, or the cursor would stay busy for good
            QApplication.restoreOverrideCursor()
            self.progress.setVisible(False)
            self.empty_label.setText(self.EMPTY_TEXT)
        self.statusBar().clearMessage()
        self._say_hidden_lanes()
        self._remember_recent(path)
        return True

    def _show_opening(self, message: str, done: int, total: int) -> None:
        """Say what is loading and paint it now (at start-up nothing has been painted yet); user input waits,
        so no second open can start while this one runs."""
        self.empty_label.setText(message)  # not "Open a session…" while one is opening
        self.statusBar().showMessage(message)
        self.progress.setFormat("opening lanes %v / %m")
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        self.progress.setVisible(True)
        QApplication.processEvents(QEventLoop.ProcessEventsFlag.ExcludeUserInputEvents)

    def set_content(self, samples: np.ndarray, lanes: Sequence[RunnableLane | FailedLane], reference_index: int = 0,
                    session: Session | None = None, hidden_specs: Sequence[LaneSpec] = ()) -> None:
        """Show these lanes over this audio (Workspace.set_content: lanes beyond the fourth are kept, not shown)."""
        self.workspace.set_content(samples, lanes, reference_index=reference_index, session=session,
                                   hidden_specs=hidden_specs)
        self._say_hidden_lanes()

    def _say_hidden_lanes(self) -> None:
        hidden = len(self.workspace.hidden_specs)
        if hidden:
            shown = len(self.workspace.lanes)
            self.statusBar().showMessage(
                f"Showing the first {shown} of {shown + hidden} lanes; the other {hidden} are not opened, and saving "
                "keeps them after the shown ones.", 15000)

    def _on_content(self) -> None:
        for lane_id in list(self.views):
            self._drop_view(lane_id)
        self._shown_reference = None
        self.timeline.set_audio(self.workspace.samples, self.num_frames)
        session = self.workspace.session
        title = "" if session is None else session.title or (session.path.name if session.path else "")
        self.setWindowTitle(f"lipsync-compare — {title}[*]" if title else "lipsync-compare[*]")
        self.setWindowModified(self.workspace.dirty)
        self._on_lanes_changed()
        self._on_frame_changed(self.current_frame)

    def _colour(self, lane_id: int) -> str:
        return LANE_COLOURS[lane_id % len(LANE_COLOURS)]

    def _view_for(self, state: LaneState) -> LaneView:
        view = self.views.get(state.lane_id)
        if view is not None:
            return view
        view = LaneView(state.name)
        lane_id = state.lane_id
        view.scale_control.set_scale(state.scale)
        view.scale_control.scaleChanged.connect(lambda scale: self.set_lane_scale(lane_id, scale))
        view.scale_control.fitRequested.connect(lambda: self.fit_lane(lane_id))
        view.removeRequested.connect(lambda: self.remove_lane(lane_id))
        view.moveRequested.connect(lambda delta: self.move_lane(lane_id, delta))
        view.replaceEncoderRequested.connect(lambda: self.choose_replacement(lane_id, "encoder"))
        view.replaceGeneratorRequested.connect(lambda: self.choose_replacement(lane_id, "generator"))
        view.makeReferenceRequested.connect(lambda: self.set_reference(lane_id))
        view.stopRequested.connect(lambda: self.stop_lane(lane_id))
        self.views[lane_id] = view
        return view

    def _drop_view(self, lane_id: int) -> None:
        view = self.views.pop(lane_id)
        self.lane_layout.removeWidget(view)
        view.setParent(None)
        view.deleteLater()

    def _describe(self, slot: LaneSlot) -> None:
        provenance = "\n".join(f"{role}: {error}" if error is not None else f"{role}: {value.summary()}"
                               for role, value, error in slot.state.provenance() if value is not None or error)
        slot.view.set_description(slot.spec.describe_sources(), provenance, slot.lane_id == self.reference_id,
                                  slot.scale)

    def _on_lanes_changed(self) -> None:
        """Lanes were added, removed, moved, replaced or failed, or the reference changed: re-lay out the columns
        and everything that lists lanes."""
        current = {state.lane_id for state in self.workspace.lanes}
        for lane_id in [i for i in self.views if i not in current]:
            self._drop_view(lane_id)
        for state in self.workspace.lanes:
            self._view_for(state)
        if self._shown_reference is not None and self._shown_reference != self.reference_id:
            for view in self.views.values():  # an R² shown by a lane was measured against the old reference
                view.scale_control.show_fit(None)
        self._shown_reference = self.reference_id
        while self.lane_layout.count():
            self.lane_layout.takeAt(0)
        slots = self.slots
        self.empty_label.setVisible(not slots)
        if not slots:
            self.lane_layout.addWidget(self.empty_label)
        for index, slot in enumerate(slots):
            view = slot.view
            self.lane_layout.addWidget(view, 1)
            view.left_button.setEnabled(index > 0)
            view.right_button.setEnabled(index < len(slots) - 1)
            view.remove_button.setEnabled(len(slots) > 1)
            if slot.failure and view.error_text is None:
                view.show_error(slot.failure)
                view.setToolTip(slot.state.failure_details)
            if slot.failure:
                # Its features are plotted, so its scale (and Fit) still mean something: they move its plots.
                view.scale_control.setEnabled(slot.features_only)
            view.scale_control.fit_button.setEnabled(slot.lane_id != self.reference_id and slot.state.has_features)
            self._describe(slot)
        self.compare_view.set_lanes([(s.lane_id, s.spec.name) for s in slots])
        self._refresh_plots()
        self._timeline_dirty = True
        self._show_frame(force=True)

    # ==========================================================================================================
    # lanes: add, remove, reorder, replace, scale, fit (each forwards to the workspace)
    # ==========================================================================================================
    def add_lane(self, spec: LaneSpec) -> LaneSlot | None:
        """Open a new lane from a LaneSpec next to the others (at most four); a failure shows in its place."""
        try:
            state = self.workspace.add_lane(spec)
        except InputError as error:
            self._complain("Too many lanes", str(error))
            return None
        return self.slot(state.lane_id)

    def set_reference(self, lane_id: int) -> None:
        """The lane Fit and the scatter compare against (saved as the session's ``reference``)."""
        self.workspace.set_reference(lane_id)

    def remove_lane(self, lane_id: int) -> None:
        self.workspace.remove_lane(lane_id)

    def move_lane(self, lane_id: int, delta: int) -> None:
        self.workspace.move_lane(lane_id, delta)

    def replace_lane_source(self, lane_id: int, role: str, path: str | Path) -> LaneSlot:
        """Swap a lane's encoder or generator file; a model that will not load shows its reason in the lane."""
        return self.slot(self.workspace.replace_lane_source(lane_id, role, path).lane_id)

    def reload_models(self) -> list[str]:
        """File ▸ Reload models (Ctrl+R): reopen the lanes whose model files changed on disk, and lanes that failed
        or were stopped; frames drawn by the old models leave the cache. Returns the reloaded lanes' names."""
        QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
        try:
            reloaded = self.workspace.reload_models()
        finally:
            QApplication.restoreOverrideCursor()
        names = [state.name for state in reloaded]
        self.statusBar().showMessage(
            f"Reloaded {len(names)} lane{'s' if len(names) != 1 else ''}: {', '.join(names)}" if names else
            "No model file changed since the lanes were opened, and no lane failed: nothing to reload", 10000)
        return names

    def stop_lane(self, lane_id: int) -> None:
        """Stop a lane whose model does not return: the lane says it was stopped, the other lanes go on."""
        name = self.workspace.lane(lane_id).name
        running = self.transport.stop_lane(lane_id)
        self.statusBar().showMessage(f"Stopping {name}…" if running else f"{name} stopped", 10000)

    def _show_busy(self) -> None:
        """Offer Stop on the lane whose model call has run longer than STUCK_AFTER_S."""
        busy = self.transport.busy_lane()
        elapsed = time.monotonic() - busy.since if busy is not None else 0.0
        for lane_id, view in self.views.items():
            stuck = busy is not None and busy.lane_id == lane_id and elapsed >= STUCK_AFTER_S
            view.set_busy(elapsed if stuck else None)

    def set_lane_scale(self, lane_id: int, scale: float) -> None:
        """Apply a lane's scale: plots at once, the current frame rendered first."""
        view = self.views.get(lane_id)
        problem = scale_problem(scale, view.feature_peak if view is not None else None)
        if problem is not None:  # float32 cannot carry it for this lane's features: say so, keep the old scale
            if view is not None:
                view.scale_control.set_scale(self.workspace.lane(lane_id).scale)
            self.statusBar().showMessage(f"scale refused: {problem}", 10000)
            return
        if scale > 0:
            self.workspace.set_scale(lane_id, scale)

    def _on_features_ready(self, lane_id: int) -> None:
        view = self.views.get(lane_id)
        if view is not None:  # NaN/Inf count, the frames they reach, the peak the scale check needs
            view.set_features(self.workspace.lane(lane_id).raw_features)
        self._refresh_plots()

    def _on_scale_changed(self, lane_id: int, scale: float) -> None:
        view = self.views.get(lane_id)
        if view is None:
            return
        view.set_title_scale(scale)
        view.clear_frames()  # NaN/Inf pixel counts were for the old scale
        if abs(view.scale_control.scale - scale) > 1e-12:
            view.scale_control.set_scale(scale)
        self._refresh_plots()
        self._timeline_dirty = True
        self._show_frame(force=True)

    def fit_lane(self, lane_id: int) -> float | None:
        """Fit: multiply the lane's scale by the correction against the reference; shows the R² after."""
        try:
            fit = self.workspace.fit(lane_id)
        except FitError as error:
            if error.pending:
                self.statusBar().showMessage(str(error), 4000)
            else:
                self._complain("Cannot fit", str(error))
            return None
        self.views[lane_id].scale_control.show_fit(fit.r2)
        name = self.workspace.lane(lane_id).name
        message = (f"{name}: k {fit.k:.4g} (lane ≈ k × {fit.reference_name}); Fit applied the correction "
                   f"{fit.correction:.4g}, scale now {fit.scale:.4g}×, R² {fit.r2:.3f}")
        if fit.clamped:
            message += f" — the scale needed is beyond the slider's range, so it stops at {fit.scale:g}×"
        if fit.r2 < 0.5:
            message += "  — a poor fit: these features are not a scaled copy of the reference"
        self.statusBar().showMessage(message, 8000)
        return fit.scale

    # ==========================================================================================================
    # transport (each forwards to the model's transport)
    # ==========================================================================================================
    def play(self, prerender: bool = True) -> None:
        """Play from the paused frame; with the pre-render setting on, render the whole clip first."""
        self.transport.play(use_prerender=prerender)

    def pause(self) -> None:
        self.transport.pause()
        self.progress.setVisible(False)

    def toggle_play(self) -> None:
        self.transport.toggle_play()
        if not self.transport.prerender_pending:
            self.progress.setVisible(False)

    def seek_frame(self, frame: int) -> None:
        self.transport.seek(frame)

    def step(self, delta: int) -> None:
        """Pause, move one frame, and play that frame's 200 ms of audio."""
        self.transport.step(delta)

    def go_home(self) -> None:
        self.transport.seek(0)

    def go_end(self) -> None:
        self.transport.seek(self.num_frames - 1)

    def _show_playing(self, playing: bool) -> None:
        self.play_action.setText("Pause" if playing else "Play")
        self.play_action.setIcon(self.style().standardIcon(
            QStyle.StandardPixmap.SP_MediaPause if playing else QStyle.StandardPixmap.SP_MediaPlay))

    def _on_loop_changed(self, region: tuple[int, int] | None) -> None:
        self.timeline.set_loop(region)
        self.loop_box.blockSignals(True)
        self.loop_box.setChecked(region is not None)
        self.loop_box.blockSignals(False)

    def _on_clock_changed(self, description: str, lost: str | None) -> None:
        self.clock_label.setText(description)
        if lost:
            self.statusBar().showMessage(f"Audio output lost ({lost}); continuing on the wall clock.", 10000)

    def _on_prerender_toggled(self, on: bool) -> None:
        self.settings.setValue("prerender", on)
        self.transport.prerender = on
        self.transport.request_render()

    def set_preview_setting(self, setting: str) -> None:
        """Playback ▸ Preview rate: auto / every / reduced (remembered)."""
        self.settings.setValue(PREVIEW_SETTING, setting)
        if not self.preview_actions[setting].isChecked():
            self.preview_actions[setting].setChecked(True)
        self.transport.set_preview_setting(setting)
        self._on_playback_mode(self.transport.decision)

    def _on_playback_mode(self, decision: Decision) -> None:
        self.policy_label.setText(decision.reason)
        self.policy_label.setToolTip("How playback keeps up with the audio (Playback ▸ Preview rate)")

    def _on_shared_y(self, on: bool) -> None:
        self.settings.setValue(SHARED_Y_SETTING, on)
        self.plots.set_shared_y(on)

    def _on_prerender_progress(self, done: int, total: int) -> None:
        self.progress.setFormat(PRERENDER_FORMAT)
        self.progress.setRange(0, 100)
        self.progress.setValue(int(100 * done / max(1, total)))
        self.progress.setVisible(done < total)

    def _on_prerender_incomplete(self, done: int, total: int) -> None:
        self.progress.setVisible(False)
        self.statusBar().showMessage(
            f"The whole clip does not fit in the frame cache ({self.cache.budget_bytes / 2**20:.0f} MiB): "
            f"{done} of {total} frames are pre-rendered; playing anyway, later frames may be late.", 15000)

    # ==========================================================================================================
    # the tick: clock -> frame -> views
    # ==========================================================================================================
    def _tick(self) -> None:
        self._tick_count += 1
        self.transport.tick()
        if self._timeline_dirty and self._tick_count % TIMELINE_REFRESH_TICKS == 0:
            self._refresh_timeline()
        if self._tick_count % TIMELINE_REFRESH_TICKS == 0:
            self._show_busy()
            self.render_label.setText(f"rendered {self.worker.frames_rendered} frames · cache "
                                      f"{self.cache.bytes_used / 2**20:.0f} MiB")

    def _on_frame_changed(self, frame: int) -> None:
        if self.num_frames == 0:
            self.frame_label.setText("frame – / –")
            return
        self.frame_label.setText(f"frame {frame} / {self.num_frames - 1}   {frame / FPS:6.2f} s")
        self.timeline.set_playhead(frame)
        self.plots.set_frame(frame, immediately=not self.playing)
        self._show_frame()

    def _show_frame(self, force: bool = False) -> None:
        """Show each lane's frame for the playhead, or keep its latest one with the late marker."""
        frame = self.current_frame
        for slot in self.slots:
            if not slot.state.renders_frames:
                continue
            rendered = self.cache.get((slot.lane_id, slot.scale, frame))
            if rendered is not None:
                if force or slot.view.shown_index != frame or slot.view.is_late:
                    self._display(slot, rendered, frame, late=False)
            elif slot.view.failed_frame(frame) is not None:
                slot.view.show_failed_frame(frame)  # it will not come: say why instead of "late"
            elif slot.view.shown_index is not None:
                slot.view.set_late(True)
        self._refresh_compare()

    def _display(self, slot: LaneSlot, rendered: RenderedFrame, index: int, late: bool) -> None:
        picture = rendered.crop if self.crop_action.isChecked() else rendered.image
        slot.view.show_frame(picture, index, late, slot.scale)

    def _refresh_compare(self) -> None:
        """Feed the wipe/difference view the full frames on screen (BGR), only while it is visible."""
        if self.tabs.currentWidget() is not self.compare_view or self.crop_action.isChecked():
            return
        shown = {slot.lane_id: np.ascontiguousarray(slot.view.image.shown[..., ::-1])
                 for slot in self.slots if slot.view.image.shown is not None and not slot.failure}
        self.compare_view.update_frames(shown)

    def _on_frame_ready(self, result: FrameReady) -> None:
        slot = next((s for s in self.slots if s.lane_id == result.lane_id), None)
        if slot is None:
            return  # a lane removed while its frame was in flight
        self._timeline_dirty = True
        if result.scale == slot.scale:
            slot.view.note_frame(result.index, getattr(result.frame, "non_finite", 0))
        if result.scale == slot.scale and result.index == self.current_frame:
            self._display(slot, result.frame, result.index, late=False)
            self._show_frame()
        elif result.scale == slot.scale and self.playing and self._newer_than_shown(slot, result.index):
            # Rendering is behind the playhead: a frame that arrives too late still beats an older picture,
            # so the lane moves (marked late) instead of freezing on the last frame that arrived in time.
            self._display(slot, result.frame, result.index, late=True)

    def _on_frame_failed(self, result: FrameFailed) -> None:
        """One frame of a lane raised; the lane goes on. Marked in the lane and on the timeline like a NaN frame."""
        slot = next((s for s in self.slots if s.lane_id == result.lane_id), None)
        if slot is None or result.scale != slot.scale:
            return
        slot.view.note_failed_frame(result.index, result.message)
        self._timeline_dirty = True
        if result.index == self.current_frame:
            slot.view.show_failed_frame(result.index)

    def _newer_than_shown(self, slot: LaneSlot, index: int) -> bool:
        """A frame behind the playhead, but closer to it than the lane's picture (or the picture is ahead of the
        playhead, after a loop wrapped or a seek went back)."""
        shown = slot.view.shown_index
        return index < self.current_frame and (shown is None or shown < index or shown > self.current_frame)

    def _refresh_plots(self) -> None:
        # A lane whose generator failed may still have features: plot them, they often show why it failed.
        lanes = [PlotLane(s.lane_id, s.spec.name, s.colour, s.state.scaled_features()) for s in self.slots]
        self.plots.set_lanes(lanes, self.reference_id)
        self.plots.set_frame(self.current_frame)

    def _refresh_timeline(self) -> None:
        self._timeline_dirty = False
        slots = self.slots
        self.timeline.set_rendered(self.transport.rendered_rows()[:len(slots)], [s.colour for s in slots])
        self.timeline.set_non_finite([s.view.non_finite_frames(self.num_frames) for s in slots])

    # ==========================================================================================================
    # shutdown
    # ==========================================================================================================
    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        if not self._may_close():
            event.ignore()
            return
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/state", self.saveState())
        self.settings.setValue("window/splitter", self.splitter.saveState())
        self.shutdown()
        super().closeEvent(event)

    def _may_close(self) -> bool:
        """Unsaved changes (scales, lanes, reference): Save, Discard or Cancel before the window goes."""
        if not self.workspace.dirty or self.workspace.session is None:
            return True
        answer = self.ask_unsaved()
        if answer == "save":
            self.save_current_session()
            return not self.workspace.dirty  # a failed or cancelled save keeps the window
        return answer == "discard"

    def ask_unsaved(self) -> str:
        """'save', 'discard' or 'cancel'. Offscreen (tests, screenshots) nobody can answer: discard, and log it."""
        if QApplication.platformName() in ("offscreen", "minimal"):
            log.info("closing with unsaved changes (no one to ask on the %s platform)", QApplication.platformName())
            return "discard"
        buttons = QMessageBox.StandardButton
        answer = QMessageBox.question(
            self, "Unsaved changes", "The session has changes that are not saved (scales, lanes or the reference). "
            "Save them before closing?", buttons.Save | buttons.Discard | buttons.Cancel, buttons.Save)
        return {buttons.Save: "save", buttons.Discard: "discard"}.get(answer, "cancel")

    def shutdown(self) -> None:
        """Stop the timer, the audio and the render thread; safe to call twice."""
        self.timer.stop()
        self.diagnostics.shutdown()
        self.transport.shutdown()
