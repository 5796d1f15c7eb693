"""The comparison window: lanes side by side, transport, timeline, live plots, per-lane scale.

The window owns three moving parts and keeps them apart:
- a clock (workspace/clock.py) that says which media time is heard; one QTimer tick turns it into the frame to show;
- the render worker (workspace/render_worker.py) that renders ahead of the playhead on its own thread and hands results
  back through a Qt signal (queued onto this thread);
- the widgets, which only display what the cache and the plots hold.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QByteArray, QEventLoop, QObject, QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import (QApplication, QCheckBox, QComboBox, QDoubleSpinBox, QHBoxLayout, QLabel,
                               QMainWindow, QProgressBar, QSplitter, QStyle, QTabWidget, QToolBar,
                               QVBoxLayout, QWidget)

from backends.registry import MODELS
from workspace.clock import FPS, FallbackWatcher, PlaybackClock, frame_at, open_clock
from ui.compare_view import CompareView
from workspace.frame_cache import FrameCache
from ui.lane_view import LaneView
from ui.plots import FeaturePlots, PlotLane
from workspace.render_worker import FeaturesReady, FrameReady, LaneFailed, LaneJob, RenderWorker
from ui.session_files import SessionFilesMixin
from ui.timeline import LANE_COLOURS, Timeline

log = logging.getLogger(__name__)

MAX_LANES = 4
TICK_MS = 10  # the display timer: fine enough that a 40 ms frame is never shown late by more than a tick
PLAY_LOOKAHEAD = 50  # frames rendered ahead while playing (2 s)
PAUSED_LOOKAHEAD = 10
TIMELINE_REFRESH_TICKS = 25


@dataclass
class LaneSlot:
    """The window's record of one lane; ``lane`` is None when it could not be opened."""

    lane_id: int
    spec: Any
    lane: Any | None
    view: LaneView
    scale: float
    colour: str
    failure: str | None = None
    features_only: bool = False  # the lane failed to draw, but its encoder runs: its features are still plotted
    raw_features: np.ndarray | None = None
    scaled: tuple[float, np.ndarray] | None = None

    def scaled_features(self) -> np.ndarray | None:
        """The lane's features times its scale, as the generator sees them (cached per scale for the plots)."""
        if self.raw_features is None:
            return None
        if self.scaled is None or self.scaled[0] != self.scale:
            self.scaled = (self.scale, self.raw_features * np.float32(self.scale))
        return self.scaled[1]


class _WorkerBridge(QObject):
    """Carries worker results from the render thread onto the GUI thread (queued connection)."""

    delivered = Signal(object)


def frame_count_for(samples: np.ndarray) -> int:
    """Output frames of a clip: N + 2 windows (PIPELINE.md stage 2-4), computed without running an encoder."""
    from pipeline.windows import num_windows

    return int(num_windows(1 + len(samples) // 200)) + 2


class MainWindow(SessionFilesMixin, QMainWindow):
    """The application window. Tests drive it through its public methods and read its widgets."""

    def __init__(self, settings: QSettings | None = None, prefer_audio: bool = True,
                 audio_device: int | str | None = None, cache_bytes: int | None = None,
                 audio_options: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.audio_options = dict(audio_options or {})  # extra AudioClock arguments (samplerate, record_blocks)
        self.settings = settings if settings is not None else QSettings("lipsync-compare", "lipsync-compare")
        self.prefer_audio = prefer_audio
        self.audio_device = audio_device
        self.setWindowTitle("lipsync-compare")
        self.setAcceptDrops(True)
        self.resize(1400, 900)

        self.session: Any | None = None
        self.samples = np.zeros(0, dtype=np.float32)
        self.num_frames = 0
        self.slots: list[LaneSlot] = []
        self.hidden_specs: list[Any] = []  # session lanes beyond MAX_LANES: not shown, written back on save
        self.reference_id: int | None = None
        self._next_lane_id = 0
        self._current_frame = 0
        self._paused_frame = 0
        self._tick_count = 0
        self._timeline_dirty = True
        self._prerender_pending = False
        self.clock: PlaybackClock | None = None
        self.watcher: FallbackWatcher | None = None

        self.cache = FrameCache(cache_bytes) if cache_bytes else FrameCache()
        self._bridge = _WorkerBridge()
        self._bridge.delivered.connect(self._on_worker_result, Qt.ConnectionType.QueuedConnection)
        self.worker = RenderWorker(self.cache, self._bridge.delivered.emit)

        self._build_widgets()
        self._build_actions()
        self._restore_layout()

        self.timer = QTimer(self)
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(self._tick)
        self.timer.start()

    # ==========================================================================================================
    # construction
    # ==========================================================================================================
    def _build_widgets(self) -> None:
        self.lane_area = QWidget()
        self.lane_layout = QHBoxLayout(self.lane_area)
        self.lane_layout.setContentsMargins(4, 4, 4, 4)
        self.empty_label = QLabel("Open a session (Ctrl+O) or drop a session, audio file or avatar folder here.")
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.lane_layout.addWidget(self.empty_label)
        self.compare_view = CompareView()
        self.tabs = QTabWidget()
        self.tabs.addTab(self.lane_area, "Side by side")
        self.tabs.addTab(self.compare_view, "Wipe / difference")
        self.tabs.currentChanged.connect(lambda _: self._refresh_compare())

        self.timeline = Timeline()
        self.timeline.seekRequested.connect(self.seek_frame)
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
        self.speed_box.currentIndexChanged.connect(self._on_speed)
        self.offset_box = QDoubleSpinBox()
        self.offset_box.setRange(-500, 500)
        self.offset_box.setDecimals(0)
        self.offset_box.setSingleStep(10)
        self.offset_box.setSuffix(" ms")
        self.offset_box.setToolTip("A/V offset: positive values delay the picture against the sound")
        self.loop_box = QCheckBox("Loop")
        self.loop_box.setToolTip("Loop the highlighted region of the timeline (L)")
        self.loop_box.toggled.connect(self._on_loop_toggled)

        self.clock_label = QLabel("")
        self.render_label = QLabel("")
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(220)
        self.progress.setVisible(False)
        self.statusBar().addWidget(self.clock_label, 1)
        self.statusBar().addPermanentWidget(self.render_label)
        self.statusBar().addPermanentWidget(self.progress)

    def _action(self, text: str, slot, shortcut: str | QKeySequence | None = None, tip: str = "",
                checkable: bool = False, icon: QStyle.StandardPixmap | None = None) -> QAction:
        action = QAction(text, self)
        if icon is not None:
            action.setIcon(self.style().standardIcon(icon))
        if shortcut is not None:
            action.setShortcut(QKeySequence(shortcut))
            action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        action.setToolTip(tip or text)
        action.setCheckable(checkable)
        (action.toggled if checkable else action.triggered).connect(slot)
        self.addAction(action)
        return action

    def _build_actions(self) -> None:
        menu = self.menuBar().addMenu("&File")
        menu.addAction(self._action("&Open session…", self.choose_session, QKeySequence.StandardKey.Open))
        menu.addAction(self._action("Open &audio…", self.choose_audio))
        menu.addAction(self._action("Open a&vatar folder…", self.choose_avatar))
        self.recent_menu = menu.addMenu("Recent sessions")
        menu.addSeparator()
        menu.addAction(self._action("&Save session", self.save_current_session, QKeySequence.StandardKey.Save))
        menu.addAction(self._action("Save session &as…", self.choose_save_path, "Ctrl+Shift+S"))
        menu.addSeparator()
        menu.addAction(self._action("&Quit", self.close, QKeySequence.StandardKey.Quit))
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
        self._action("Toggle loop", lambda: self.loop_box.toggle(), Qt.Key.Key_L)
        playback = self.menuBar().addMenu("&Playback")
        for action in (self.play_action, self.step_back_action, self.step_action, self.home_action, self.end_action):
            playback.addAction(action)
        self.prerender_action = self._action("Pre-render whole clip before playing", self._on_prerender_toggled,
                                             tip="Render every frame first (with progress), then play smoothly",
                                             checkable=True)
        playback.addAction(self.prerender_action)

        view = self.menuBar().addMenu("&View")
        self.crop_action = self._action("Show generator crop enlarged", lambda _: self._show_frame(force=True), "C",
                                        checkable=True)
        view.addAction(self.crop_action)
        group = QActionGroup(self)
        for index, name in enumerate(("Side by side", "Wipe / difference")):
            action = self._action(name, lambda _=False, i=index: self.tabs.setCurrentIndex(i), f"Ctrl+{index + 1}")
            group.addAction(action)
            view.addAction(action)

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
        # The A/V offset calibrates this machine's audio path (Bluetooth, HDMI), not a session: remember it.
        self.offset_box.setValue(self.settings.value("avOffsetMs", 0.0, type=float))
        self.offset_box.valueChanged.connect(lambda value: self.settings.setValue("avOffsetMs", value))

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

    # ==========================================================================================================
    # content
    # ==========================================================================================================
    def open_session(self, path: str | Path) -> bool:
        """Load a session file and open its lanes; a broken session shows a message and changes nothing.

        Models load on this thread (seconds each for Core ML): the status bar names the lane being opened and a
        progress bar counts the lanes, painted between lanes while user input waits.
        """
        from pipeline.audio import load_audio
        from pipeline.avatar import Avatar
        from core.errors import InputError
        from pipeline.lane import open_lanes
        from pipeline.session import load_session

        path = Path(path)
        self._show_opening(f"Opening {path.name}: reading the session, its audio and avatar…", 0, 1)
        QApplication.setOverrideCursor(Qt.CursorShape.WaitCursor)
        try:
            session = load_session(path, check_files=False)
            # Only the lanes the window shows are opened; the rest are kept so saving never drops them.
            specs = list(session.lanes[:MAX_LANES])
            audio = load_audio(session.audio)
            avatar = Avatar.open(session.avatar) if session.avatar is not None else None
            lanes = []
            for number, spec in enumerate(specs):
                self._show_opening(f"Opening {path.name}: lane {number + 1} of {len(specs)}, {spec.name}…",
                                   number, len(specs))
                lanes += open_lanes(dataclasses.replace(session, lanes=[spec]), audio, avatar, models=MODELS)
        except InputError as error:
            self._complain(f"Cannot open {path.name}", str(error))
            return False
        finally:  # also on an unexpected error, or the cursor would stay busy for good
            QApplication.restoreOverrideCursor()
            self.progress.setVisible(False)
        self.statusBar().clearMessage()
        reference = session.reference_index if session.reference_index < MAX_LANES else 0
        self.set_content(audio.samples, lanes, reference_index=reference, session=session,
                         hidden_specs=session.lanes[MAX_LANES:])
        self._remember_recent(path)
        return True

    def _show_opening(self, message: str, done: int, total: int) -> None:
        """Say what is loading and paint it now (at start-up nothing has been painted yet); user input waits,
        so no second open can start while this one runs."""
        self.statusBar().showMessage(message)
        self.progress.setFormat("opening lanes %v / %m")
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        self.progress.setVisible(True)
        QApplication.processEvents(QEventLoop.ProcessEventsFlag.ExcludeUserInputEvents)

    def set_content(self, samples: np.ndarray, lanes: list[Any], reference_index: int = 0,
                    session: Any | None = None, hidden_specs: list[Any] | tuple[Any, ...] = ()) -> None:
        """Show these lanes over this audio. Lanes follow pipeline.lane's contract (FailedLane for a lane that failed).

        Lanes beyond the fourth, and ``hidden_specs`` (lanes of the session that were not opened), are not shown
        but kept in ``hidden_specs``: saving writes them back after the shown lanes, so no lane is lost.
        """
        self._stop_clock()
        for slot in list(self.slots):
            self._remove_slot(slot)
        self.session = session
        self.samples = np.asarray(samples, dtype=np.float32)
        self.num_frames = frame_count_for(self.samples)
        self._current_frame = -1
        self._paused_frame = 0
        self._incoming = list(lanes)  # lets a failed first lane borrow the audio of a later, working one
        for lane in lanes[:MAX_LANES]:
            self._add_slot(lane)
        self._incoming = []
        self.hidden_specs = [lane.spec for lane in lanes[MAX_LANES:]] + list(hidden_specs)
        if self.slots:
            self.reference_id = self.slots[min(max(0, reference_index), len(self.slots) - 1)].lane_id
        self.timeline.set_audio(self.samples, self.num_frames)
        self.timeline.set_loop(None)
        self.loop_box.setChecked(False)
        self.clock, reason = open_clock(self.samples, prefer_audio=self.prefer_audio, device=self.audio_device,
                                        **self.audio_options)
        self.watcher = FallbackWatcher(self.clock)
        self.clock.set_speed(float(self.speed_box.currentData()))
        self.clock_label.setText(self.clock.description)
        if reason:
            log.info("audio: %s", reason)
        title = getattr(session, "title", None) or (session.path.name if session is not None and session.path else "")
        self.setWindowTitle(f"lipsync-compare — {title}" if title else "lipsync-compare")
        self._lanes_changed()
        self._tick()
        if self.hidden_specs:
            self.statusBar().showMessage(
                f"Showing the first {len(self.slots)} of {len(self.slots) + len(self.hidden_specs)} lanes; "
                f"the other {len(self.hidden_specs)} are not opened, and saving keeps them after the shown ones.",
                15000)

    def _add_slot(self, lane: Any) -> LaneSlot:
        failure = getattr(lane, "message", None) if type(lane).__name__ == "FailedLane" else None
        spec = lane.spec
        lane_id = self._next_lane_id
        self._next_lane_id += 1
        view = LaneView(spec.name)
        features_lane = self._encoder_only_lane(spec) if failure else None
        slot = LaneSlot(lane_id, spec, features_lane if failure else lane, view, float(spec.scale),
                        LANE_COLOURS[lane_id % len(LANE_COLOURS)], failure, features_only=features_lane is not None)
        view.scale_control.set_scale(slot.scale)
        view.scale_control.scaleChanged.connect(lambda scale, s=slot: self.set_lane_scale(s.lane_id, scale))
        view.scale_control.fitRequested.connect(lambda s=slot: self.fit_lane(s.lane_id))
        view.removeRequested.connect(lambda s=slot: self.remove_lane(s.lane_id))
        view.moveRequested.connect(lambda delta, s=slot: self.move_lane(s.lane_id, delta))
        view.replaceEncoderRequested.connect(lambda s=slot: self.choose_replacement(s.lane_id, "encoder"))
        view.replaceGeneratorRequested.connect(lambda s=slot: self.choose_replacement(s.lane_id, "generator"))
        view.makeReferenceRequested.connect(lambda s=slot: self.set_reference(s.lane_id))
        if failure:
            view.show_error(failure)
            # Its features are plotted, so its scale (and Fit) still mean something: they move its plots.
            view.scale_control.setEnabled(slot.features_only)
        self.slots.append(slot)
        return slot

    def _remove_slot(self, slot: LaneSlot) -> None:
        self.slots.remove(slot)
        self.worker.forget_lane(slot.lane_id)
        self.lane_layout.removeWidget(slot.view)
        slot.view.setParent(None)
        slot.view.deleteLater()

    def slot(self, lane_id: int) -> LaneSlot:
        return next(s for s in self.slots if s.lane_id == lane_id)

    def _describe(self, slot: LaneSlot) -> None:
        spec = slot.spec
        describe = getattr(spec, "describe_sources", None)
        sources = describe() if callable(describe) else f"{Path(spec.encoder).name} → {Path(spec.generator).name}"
        provenance = ""
        if slot.lane is not None:
            parts = []
            for role, attribute in (("encoder", "encoder_provenance"), ("generator", "generator_provenance")):
                try:
                    value = getattr(slot.lane, attribute)
                except Exception as error:  # provenance of a lane that cannot encode: show why, keep going
                    value = None
                    parts.append(f"{role}: {error}")
                if value is not None:
                    parts.append(f"{role}: {value.summary()}")
            provenance = "\n".join(parts)
        slot.view.set_description(sources, provenance, slot.lane_id == self.reference_id, slot.scale)

    def _lanes_changed(self) -> None:
        """Re-lay out the lane columns and everything that lists lanes."""
        while self.lane_layout.count():
            self.lane_layout.takeAt(0)
        self.empty_label.setVisible(not self.slots)
        if not self.slots:
            self.lane_layout.addWidget(self.empty_label)
        for index, slot in enumerate(self.slots):
            self.lane_layout.addWidget(slot.view, 1)
            slot.view.left_button.setEnabled(index > 0)
            slot.view.right_button.setEnabled(index < len(self.slots) - 1)
            slot.view.remove_button.setEnabled(len(self.slots) > 1)
            slot.view.scale_control.fit_button.setEnabled(slot.lane_id != self.reference_id
                                                          and (slot.failure is None or slot.features_only))
            self._describe(slot)
        if self.slots and self.reference_id not in {s.lane_id for s in self.slots}:
            self.reference_id = self.slots[0].lane_id
            self._describe(self.slots[0])
        self.compare_view.set_lanes([(s.lane_id, s.spec.name) for s in self.slots])
        self._refresh_plots()
        self._timeline_dirty = True
        self._request_render()
        self._show_frame(force=True)

    # ==========================================================================================================
    # lanes: add, remove, reorder, replace, scale, fit
    # ==========================================================================================================
    def add_lane(self, spec: Any) -> LaneSlot | None:
        """Open a new lane from a LaneSpec next to the others (at most four); a failure shows in its place."""
        if len(self.slots) >= MAX_LANES:
            self._complain("Too many lanes", f"The window shows at most {MAX_LANES} lanes; remove one first.")
            return None
        slot = self._add_slot(self._open_lane(spec))
        self._lanes_changed()
        return slot

    def _donor(self) -> Any | None:
        """A real pipeline Lane of this window, whose audio and avatar a new lane can share."""
        candidates = [s.lane for s in self.slots] + list(getattr(self, "_incoming", []))
        return next((lane for lane in candidates if lane is not None and hasattr(lane, "audio")
                     and type(lane).__name__ != "FailedLane"), None)

    def _open_lane(self, spec: Any) -> Any:
        from core.errors import InputError
        from pipeline.lane import FailedLane, Lane

        donor = self._donor()
        if donor is None:
            return FailedLane(spec, "no working lane to borrow the audio and avatar from; open a session first")
        try:
            return Lane(spec, donor.audio, donor.avatar, pad_mode=donor.pad_mode, shared_mels=donor.shared_mels,
                        models=MODELS)
        except InputError as error:
            return FailedLane(spec, str(error))

    def _encoder_only_lane(self, spec: Any) -> Any | None:
        """For a lane that failed to open: the same lane without its generator, if that opens (features only)."""
        from core.errors import InputError
        from pipeline.lane import Lane

        donor = self._donor()
        if donor is None or getattr(spec, "generator", None) is None or getattr(spec, "encoder", None) is None:
            return None
        try:
            return Lane(dataclasses.replace(spec, generator=None), donor.audio, donor.avatar,
                        pad_mode=donor.pad_mode, shared_mels=donor.shared_mels, models=MODELS)
        except InputError:
            return None  # the encoder is what fails: nothing to plot

    def set_reference(self, lane_id: int) -> None:
        """The lane Fit and the scatter compare against (saved as the session's ``reference``)."""
        self.reference_id = self.slot(lane_id).lane_id
        for slot in self.slots:  # an R² shown by a lane was measured against the old reference
            slot.view.scale_control.show_fit(None)
        self._lanes_changed()

    def remove_lane(self, lane_id: int) -> None:
        if len(self.slots) <= 1:
            return
        self._remove_slot(self.slot(lane_id))
        self._lanes_changed()

    def move_lane(self, lane_id: int, delta: int) -> None:
        slot = self.slot(lane_id)
        index = self.slots.index(slot)
        target = max(0, min(len(self.slots) - 1, index + delta))
        self.slots.insert(target, self.slots.pop(index))
        self._lanes_changed()

    def replace_lane_source(self, lane_id: int, role: str, path: str | Path) -> LaneSlot:
        """Swap a lane's encoder or generator file; a model that will not load shows its reason in the lane."""
        old = self.slot(lane_id)
        spec = dataclasses.replace(old.spec, **{role: Path(path)}, scale=old.scale)
        index = self.slots.index(old)
        self._remove_slot(old)
        new = self._add_slot(self._open_lane(spec))
        self.slots.insert(index, self.slots.pop())
        if self.reference_id == old.lane_id:
            self.reference_id = new.lane_id
        self._lanes_changed()
        return new

    def set_lane_scale(self, lane_id: int, scale: float) -> None:
        """Apply a lane's scale: plots at once, the current frame rendered first."""
        slot = self.slot(lane_id)
        if scale <= 0 or scale == slot.scale:
            return
        slot.scale = float(scale)
        slot.view.set_title_scale(slot.scale)
        if abs(slot.view.scale_control.scale - slot.scale) > 1e-12:
            slot.view.scale_control.set_scale(slot.scale)
        self._refresh_plots()
        self._timeline_dirty = True
        self._request_render()
        self._show_frame(force=True)

    def fit_lane(self, lane_id: int) -> float | None:
        """Set the least-squares scale against the reference lane (metrics.compare's correction); shows R²."""
        from pipeline.metrics import compare

        slot, reference = self.slot(lane_id), self.slot(self.reference_id) if self.reference_id is not None else None
        if reference is None or slot is reference:
            return None
        mine, theirs = slot.scaled_features(), reference.scaled_features()
        if mine is None or theirs is None:
            broken = next((s for s in (reference, slot) if s.raw_features is None and s.failure
                           and not s.features_only), None)
            if broken is not None:  # its features will never come: say so instead of "still being computed"
                self._complain("Cannot fit", f"lane {broken.spec.name} has no features (it failed: {broken.failure}); "
                                             "pick another reference in a lane's ⋯ menu")
            else:
                self.statusBar().showMessage("Fit needs both lanes' features; they are still being computed.", 4000)
            return None
        if mine.shape != theirs.shape:
            self._complain("Cannot fit", f"feature shapes differ: this lane {list(mine.shape)}, "
                                         f"reference {list(theirs.shape)}")
            return None
        result = compare(mine, theirs)
        new_scale = slot.scale * float(result.correction)
        if not np.isfinite(new_scale) or new_scale <= 0:
            self._complain("Cannot fit", f"the least-squares factor is {result.correction}; "
                                         "a lane of all-zero features cannot be scaled to match")
            return None
        fitted = compare(mine * np.float32(result.correction), theirs)
        slot.view.scale_control.show_fit(float(fitted.r2))
        slot.view.scale_control.set_scale(new_scale)
        self.set_lane_scale(lane_id, new_scale)
        self.statusBar().showMessage(
            f"{slot.spec.name}: fitted scale {new_scale:.4g}× against {reference.spec.name}, R² {float(fitted.r2):.3f}"
            + ("  — a poor fit: these features are not a scaled copy of the reference" if fitted.r2 < 0.5 else ""),
            8000)
        return new_scale

    # ==========================================================================================================
    # transport
    # ==========================================================================================================
    @property
    def current_frame(self) -> int:
        return max(0, self._current_frame)

    @property
    def playing(self) -> bool:
        return self.clock is not None and self.clock.playing

    def play(self, prerender: bool = True) -> None:
        """Play from the paused frame; with the pre-render setting on, render the whole clip first."""
        if self.clock is None or self.num_frames == 0:
            return
        if prerender and self.prerender_action.isChecked() and not self._all_rendered():
            self._prerender_pending = True
            self._request_render()
            return
        if self._paused_frame >= self.num_frames - 1:
            self._paused_frame = 0
        self.clock.seek(self._position_of(self._paused_frame))
        self.clock.play()
        self._show_playing(True)

    def pause(self) -> None:
        self._prerender_pending = False
        if self.clock is not None and self.clock.playing:
            self.clock.pause()
        self._paused_frame = self.current_frame
        self._show_playing(False)
        self._request_render()

    def _show_playing(self, playing: bool) -> None:
        self.play_action.setText("Pause" if playing else "Play")
        self.play_action.setIcon(self.style().standardIcon(
            QStyle.StandardPixmap.SP_MediaPause if playing else QStyle.StandardPixmap.SP_MediaPlay))

    def toggle_play(self) -> None:
        if self.playing or self._prerender_pending:
            self.pause()
        else:
            self.play()

    def seek_frame(self, frame: int) -> None:
        frame = max(0, min(self.num_frames - 1, int(frame)))
        self._paused_frame = frame
        if self.clock is not None:
            self.clock.seek(self._position_of(frame))
        if not self.playing:
            self._set_frame(frame)
        self._request_render()

    def step(self, delta: int) -> None:
        """Pause, move one frame, and play that frame's 200 ms of audio."""
        if self.num_frames == 0:
            return
        if self.playing:
            self.pause()
        self.seek_frame(self.current_frame + delta)
        if self.clock is not None:  # the audio heard with this picture: the A/V offset applies here too
            self.clock.play_snippet(max(0.0, self.current_frame / FPS + self.offset_box.value() / 1000.0))

    def go_home(self) -> None:
        self.seek_frame(0)

    def go_end(self) -> None:
        self.seek_frame(self.num_frames - 1)

    def _position_of(self, frame: int) -> float:
        """Media time at the middle of a frame (plus the A/V offset), so rounding never lands on its neighbour."""
        return max(0.0, (frame + 0.5) / FPS + self.offset_box.value() / 1000.0)

    def _on_speed(self) -> None:
        if self.clock is not None:
            self.clock.set_speed(float(self.speed_box.currentData()))

    def _on_loop_toggled(self, on: bool) -> None:
        if on and self.num_frames:
            start = self.current_frame
            self.timeline.set_loop((start, min(self.num_frames - 1, start + 2 * FPS)))
        else:
            self.timeline.set_loop(None)
        self._request_render()

    def _on_prerender_toggled(self, on: bool) -> None:
        self.settings.setValue("prerender", on)
        self._request_render()

    # ==========================================================================================================
    # the tick: clock -> frame -> views
    # ==========================================================================================================
    def _tick(self) -> None:
        self._tick_count += 1
        if self.watcher is not None:
            reason = self.watcher.check()
            if reason:
                self.clock = self.watcher.clock
                self.clock_label.setText(self.clock.description)
                self.statusBar().showMessage(f"Audio output lost ({reason}); continuing on the wall clock.", 10000)
        if self.clock is not None and self.clock.playing:
            frame = frame_at(self.clock.position_s(), self.num_frames, self.offset_box.value() / 1000.0)
            loop = self.timeline.loop()
            if loop is not None and frame > loop[1]:
                frame = loop[0]
                self.clock.seek(self._position_of(frame))
            if frame != self._current_frame:
                self._set_frame(frame)
                self._request_render()
        elif self.clock is not None and self.play_action.text() == "Pause" and not self._prerender_pending:
            self._paused_frame = self.current_frame  # the clip ended by itself
            self._show_playing(False)
        if self._prerender_pending:
            self._update_prerender_progress()
        if self._timeline_dirty and self._tick_count % TIMELINE_REFRESH_TICKS == 0:
            self._refresh_timeline()
        if self._tick_count % TIMELINE_REFRESH_TICKS == 0:
            self.render_label.setText(f"rendered {self.worker.frames_rendered} frames · cache "
                                      f"{self.cache.bytes_used / 2**20:.0f} MiB")

    def _set_frame(self, frame: int) -> None:
        self._current_frame = frame
        self.frame_label.setText(f"frame {frame} / {self.num_frames - 1}   {frame / FPS:6.2f} s")
        self.timeline.set_playhead(frame)
        self.plots.set_frame(frame, immediately=not self.playing)
        self._show_frame()

    def _show_frame(self, force: bool = False) -> None:
        """Show each lane's frame for the playhead, or keep its latest one with the late marker."""
        frame = self.current_frame
        for slot in self.slots:
            if slot.lane is None or slot.failure:
                continue
            rendered = self.cache.get((slot.lane_id, slot.scale, frame))
            if rendered is not None:
                if force or slot.view.shown_index != frame or slot.view.is_late:
                    self._display(slot, rendered, frame, late=False)
            elif slot.view.shown_index is not None:
                slot.view.set_late(True)
        self._refresh_compare()

    def _display(self, slot: LaneSlot, rendered: Any, index: int, late: bool) -> None:
        picture = rendered.crop if self.crop_action.isChecked() else rendered.image
        slot.view.show_frame(picture, index, late, slot.scale)

    def _refresh_compare(self) -> None:
        """Feed the wipe/difference view the full frames on screen (BGR), only while it is visible."""
        if self.tabs.currentWidget() is not self.compare_view or self.crop_action.isChecked():
            return
        shown = {slot.lane_id: np.ascontiguousarray(slot.view.image.shown[..., ::-1])
                 for slot in self.slots if slot.view.image.shown is not None and not slot.failure}
        self.compare_view.update_frames(shown)

    def _request_render(self) -> None:
        jobs = [LaneJob(s.lane_id, s.lane, s.scale, render_frames=not s.failure) for s in self.slots
                if s.lane is not None and (not s.failure or (s.features_only and s.raw_features is None))]
        if not jobs or self.num_frames == 0:
            return
        if self._prerender_pending:
            self.worker.submit(0, jobs, self.num_frames, self.num_frames)
            return
        lookahead = PLAY_LOOKAHEAD if self.playing else PAUSED_LOOKAHEAD
        self.worker.submit(self.current_frame, jobs, lookahead, self.num_frames, self.timeline.loop())

    def _on_worker_result(self, result: object) -> None:
        slot = next((s for s in self.slots if s.lane_id == getattr(result, "lane_id", None)), None)
        if slot is None:
            return  # a lane removed while its frame was in flight
        if isinstance(result, FrameReady):
            self._timeline_dirty = True
            if result.scale == slot.scale and result.index == self.current_frame:
                self._display(slot, result.frame, result.index, late=False)
                self._show_frame()
            elif result.scale == slot.scale and self.playing and self._newer_than_shown(slot, result.index):
                # Rendering is behind the playhead: a frame that arrives too late still beats an older picture,
                # so the lane moves (marked late) instead of freezing on the last frame that arrived in time.
                self._display(slot, result.frame, result.index, late=True)
        elif isinstance(result, FeaturesReady):
            slot.raw_features = result.raw_features
            self._refresh_plots()
        elif isinstance(result, LaneFailed):
            slot.failure = result.message
            slot.view.show_error(result.message)
            slot.view.setToolTip(result.details)
            self._lanes_changed()

    def _newer_than_shown(self, slot: LaneSlot, index: int) -> bool:
        """A frame behind the playhead, but closer to it than the lane's picture (or the picture is ahead of the
        playhead, after a loop wrapped or a seek went back)."""
        shown = slot.view.shown_index
        return index < self.current_frame and (shown is None or shown < index or shown > self.current_frame)

    def _refresh_plots(self) -> None:
        # A lane whose generator failed may still have features: plot them, they often show why it failed.
        lanes = [PlotLane(s.lane_id, s.spec.name, s.colour, s.scaled_features()) for s in self.slots]
        self.plots.set_lanes(lanes, self.reference_id)
        self.plots.set_frame(self.current_frame)

    def _rendered_rows(self) -> list[np.ndarray]:
        rows = []
        for slot in self.slots:
            row = np.zeros(self.num_frames, dtype=bool)
            indices = [i for i in self.cache.keys_matching(slot.lane_id, slot.scale) if i < self.num_frames]
            row[indices] = True
            rows.append(row)
        return rows

    def _refresh_timeline(self) -> None:
        self._timeline_dirty = False
        self.timeline.set_rendered(self._rendered_rows(), [s.colour for s in self.slots])

    def _all_rendered(self) -> bool:
        rows = [row for row, slot in zip(self._rendered_rows(), self.slots) if slot.lane is not None and not slot.failure]
        return all(row.all() for row in rows)

    def _update_prerender_progress(self) -> None:
        rows = [row for row, slot in zip(self._rendered_rows(), self.slots) if slot.lane is not None and not slot.failure]
        total = max(1, sum(len(r) for r in rows))
        done = sum(int(r.sum()) for r in rows)
        self.progress.setVisible(True)
        self.progress.setRange(0, 100)
        self.progress.setFormat("pre-rendering %p%")
        self.progress.setValue(int(100 * done / total))
        if done >= total or not rows:
            self.progress.setVisible(False)
            self._prerender_pending = False
            self.play()
        elif self.worker.idle:
            # The worker went through the whole clip, but the frame cache could not hold it: waiting would never
            # end. Play what fits and say why the rest may be late.
            self.progress.setVisible(False)
            self._prerender_pending = False
            self.statusBar().showMessage(
                f"The whole clip does not fit in the frame cache ({self.cache.budget_bytes / 2**20:.0f} MiB): "
                f"{done} of {total} frames are pre-rendered; playing anyway, later frames may be late.", 15000)
            self.play(prerender=False)

    # ==========================================================================================================
    # shutdown
    # ==========================================================================================================
    def _stop_clock(self) -> None:
        if self.clock is not None:
            self.clock.close()
        self.clock = None
        self.watcher = None

    def closeEvent(self, event) -> None:  # noqa: N802
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/state", self.saveState())
        self.settings.setValue("window/splitter", self.splitter.saveState())
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Stop the timer, the audio and the render thread; safe to call twice."""
        self.timer.stop()
        self._stop_clock()
        self.worker.stop()
