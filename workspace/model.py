"""The workspace: the lanes being compared, their scales and the reference, failures, and the session on disk.

Qt-free, so the window, the CLI, the benchmarks and the tests change lanes the same way. The window subscribes to
the events below and redraws; it never edits lane state itself.

The three numbers of a comparison have one name each, everywhere:
- **k**: the least-squares factor with lane ≈ k × reference (``pipeline.metrics.compare(...).scale``);
- **correction**: what Fit multiplies the lane's scale by so it matches the reference
  (``compare(...).correction``, about 1/k for a lane that is a scaled copy);
- **scale**: the factor the lane's encoder features are multiplied by (the session's ``scale``, the slider).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np

from core.errors import InputError
from core.interfaces import ModelOpener, Provenance
from pipeline.audio import Audio, load_audio
from pipeline.avatar import Avatar
from pipeline.lane import FailedLane, Lane
from pipeline.metrics import check_scale, compare, feature_peak
from pipeline.session import LaneSpec, Session, load_session, save_session
from pipeline.windows import num_windows
from workspace.events import Event
from workspace.render_worker import RenderableLane

MAX_LANES = 4  # more mouths side by side are too small to read; the rest of a session is kept, not shown
MIN_SCALE = 0.01
MAX_SCALE = 1000.0  # the bug this app exists for is 40x-200x; a dB slip is ~0.05x: five decades cover both
Progress = Callable[[str, int, int], None]  # (what is loading, lanes done, lanes in all)


class RunnableLane(RenderableLane, Protocol):
    """What the workspace needs of a lane (pipeline.lane.Lane, or a test's fake): the worker's calls and its spec."""

    spec: LaneSpec


class FitError(InputError):
    """Fit cannot run; ``pending`` is True when it only has to wait for features still being computed."""

    def __init__(self, message: str, pending: bool = False) -> None:
        super().__init__(message)
        self.pending = pending


@dataclass
class LaneState:
    """One lane of the workspace. ``lane`` is what runs: None when nothing of it opens; for a lane whose
    generator failed, the same lane without its generator (``features_only``), so its features are still
    plotted and its scale and Fit still mean something."""

    lane_id: int  # stable for the lane's life; never reused (the frame cache and the views key on it)
    spec: LaneSpec
    lane: RunnableLane | None
    scale: float
    failure: str | None = None
    failure_details: str = ""
    features_only: bool = False
    raw_features: np.ndarray | None = None
    peak: float | None = None  # largest finite |raw feature|: which scales float32 can carry for this lane
    _scaled: tuple[float, np.ndarray] | None = None
    sources: tuple = ()  # source_signature(spec) when the lane was opened: Reload models compares it
    failed_frames: dict[tuple[float, int], str] = field(default_factory=dict)  # (scale, frame) -> why it raised

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def renders_frames(self) -> bool:
        return self.lane is not None and self.failure is None

    @property
    def has_features(self) -> bool:
        """Its features exist or will: it renders, or it is a features-only lane."""
        return self.lane is not None and (self.failure is None or self.features_only)

    def scaled_features(self) -> np.ndarray | None:
        """The lane's features times its scale, as the generator sees them (cached per scale for the plots)."""
        if self.raw_features is None:
            return None
        if self._scaled is None or self._scaled[0] != self.scale:
            self._scaled = (self.scale, self.raw_features * np.float32(self.scale))
        return self._scaled[1]

    def provenance(self) -> list[tuple[str, Provenance | None, str | None]]:
        """(role, provenance, error) for the encoder and the generator; a lane that cannot say gives the reason."""
        parts: list[tuple[str, Provenance | None, str | None]] = []
        if self.lane is None:
            return parts
        for role, attribute in (("encoder", "encoder_provenance"), ("generator", "generator_provenance")):
            try:
                parts.append((role, getattr(self.lane, attribute, None), None))
            except Exception as error:  # provenance of a lane that cannot encode: show why, keep going
                parts.append((role, None, str(error)))
        return parts


@dataclass(frozen=True)
class FitResult:
    """What Fit did: ``k`` before, the ``correction`` applied, the new ``scale`` and the R² after."""

    lane_id: int
    reference_name: str
    k: float
    correction: float
    scale: float
    r2: float
    clamped: bool  # the scale the fit asked for was beyond MIN_SCALE..MAX_SCALE


def clamp_scale(scale: float) -> float:
    """The nearest scale the workspace accepts (MIN_SCALE..MAX_SCALE)."""
    return float(min(MAX_SCALE, max(MIN_SCALE, scale)))


def _stat_tree(path: Path) -> tuple[int, int, int, int]:
    """(files, bytes, newest mtime in ns, inode) of a file, or of the files in a folder (an .mlpackage)."""
    try:
        if path.is_dir():
            files = [p.stat() for p in sorted(path.rglob("*")) if p.is_file()]
            return (len(files), sum(f.st_size for f in files), max((f.st_mtime_ns for f in files), default=0),
                    path.stat().st_ino)
        info = path.stat()
        return (1, info.st_size, info.st_mtime_ns, info.st_ino)
    except OSError:
        return (0, 0, 0, 0)  # gone: differs from any file that was there, so a reload says why it fails


def source_signature(spec: LaneSpec) -> tuple:
    """What the lane's model and dump files are on disk now (size, mtime, inode): a file rewritten or replaced since
    the lane was opened gives another signature."""
    paths = [getattr(spec, name, None) for name in ("encoder", "generator", "mel", "tensors", "inputs")]
    return tuple((str(path),) + _stat_tree(Path(path)) for path in paths if path is not None)


def frame_count_for(samples: np.ndarray) -> int:
    """Output frames of a clip: N + 2 windows (PIPELINE.md stage 2-4), computed without running an encoder."""
    return int(num_windows(1 + len(samples) // 200)) + 2


class Workspace:
    """Lanes over one clip. Every change goes through a method here and is announced by an event:

    - ``content_changed()``: new audio or a new session (everything was replaced);
    - ``lanes_changed()``: a lane was added, removed, moved, replaced or failed, or the reference changed;
    - ``scale_changed(lane_id, scale)``; ``features_ready(lane_id)``;
    - ``dirty_changed(dirty)``: whether there are changes a save would keep.

    Reload models (``reload_models``) reopens lanes whose files changed on disk; a reloaded lane gets a new id, so the
    frame cache drops the old model's frames (the transport forgets the old id).
    """

    def __init__(self, models: ModelOpener | None = None) -> None:
        self.models = models
        self.session: Session | None = None
        self.samples = np.zeros(0, dtype=np.float32)
        self.num_frames = 0
        self.lanes: list[LaneState] = []
        self.hidden_specs: list[LaneSpec] = []  # session lanes beyond MAX_LANES: not opened, written back on save
        self.reference_id: int | None = None
        self.dirty = False
        self._next_lane_id = 0
        self._incoming: list[RunnableLane | FailedLane] = []
        self.content_changed = Event("content_changed")
        self.lanes_changed = Event("lanes_changed")
        self.scale_changed = Event("scale_changed")
        self.features_ready = Event("features_ready")
        self.dirty_changed = Event("dirty_changed")

    # -- queries ----------------------------------------------------------------------------------------------
    def lane(self, lane_id: int) -> LaneState:
        found = next((state for state in self.lanes if state.lane_id == lane_id), None)
        if found is None:
            raise KeyError(f"no lane with id {lane_id}; the workspace has {[s.lane_id for s in self.lanes]}")
        return found

    @property
    def reference(self) -> LaneState | None:
        return next((state for state in self.lanes if state.lane_id == self.reference_id), None)

    def current_specs(self) -> list[LaneSpec]:
        """The shown lanes' specs as they are now (order, sources and scales)."""
        return [dataclasses.replace(state.spec, scale=state.scale) for state in self.lanes]

    # -- content ----------------------------------------------------------------------------------------------
    def open_session(self, path: str | Path, progress: Progress | None = None) -> None:
        """Load a session and open its first MAX_LANES lanes; raises InputError (nothing changes) when the session,
        its audio or its avatar cannot be read. A lane whose model fails becomes a failed lane, not an error."""
        path = Path(path)
        report = progress or (lambda message, done, total: None)
        report(f"Opening {path.name}: reading the session, its audio and avatar…", 0, 1)
        session = load_session(path, check_files=False)
        self._open(session, session.lanes[:MAX_LANES], session.lanes[MAX_LANES:], session.reference_index,
                   lambda message, done, total: report(f"Opening {path.name}: {message}", done, total))

    def _open(self, session: Session, specs: Sequence[LaneSpec], hidden: Sequence[LaneSpec], reference: int,
              progress: Progress) -> None:
        """Read the session's audio and avatar (InputError: nothing changes), open these lanes over them, show."""
        audio = load_audio(session.audio)
        avatar = Avatar.open(session.avatar) if session.avatar is not None else None
        lanes: list[RunnableLane | FailedLane] = []
        shared_mels: dict[str, np.ndarray] = {}  # lanes of one session share the mel
        for number, spec in enumerate(specs):
            progress(f"lane {number + 1} of {len(specs)}, {spec.name}…", number, len(specs))
            lanes.append(self._lane_or_failure(spec, audio, avatar, session.pad_mode, shared_mels))
        self.set_content(audio.samples, lanes, reference_index=reference if reference < len(specs) else 0,
                         session=session, hidden_specs=hidden)

    def set_content(self, samples: np.ndarray, lanes: Sequence[RunnableLane | FailedLane], reference_index: int = 0,
                    session: Session | None = None, hidden_specs: Sequence[LaneSpec] = ()) -> None:
        """Show these lanes over this audio (a FailedLane shows its reason in its place).

        Lanes beyond MAX_LANES and ``hidden_specs`` are kept in ``hidden_specs``: saving writes them back after the
        shown lanes, so no lane is lost.
        """
        self.session = session
        self.samples = np.asarray(samples, dtype=np.float32)
        self.num_frames = frame_count_for(self.samples)
        self.lanes = []
        self._incoming = list(lanes)  # lets a failed first lane borrow the audio of a later, working one
        for lane in lanes[:MAX_LANES]:
            self.lanes.append(self._state_for(lane))
        self._incoming = []
        self.hidden_specs = [lane.spec for lane in lanes[MAX_LANES:]] + list(hidden_specs)
        self.reference_id = (self.lanes[min(max(0, reference_index), len(self.lanes) - 1)].lane_id
                             if self.lanes else None)
        self._set_dirty(False)
        self.content_changed.emit()

    def replace_input(self, key: str, path: Path) -> None:
        """Reopen the session with another ``audio`` file or ``avatar`` folder; lanes and scales stay.
        Raises InputError when there is no session or the new input cannot be read."""
        if self.session is None:
            raise InputError("no session is open; open a session first, then an audio file or avatar folder can "
                             "replace its own")
        if key not in ("audio", "avatar"):
            raise ValueError(f"key: expected 'audio' or 'avatar', found {key!r}")
        session = dataclasses.replace(self.session, **{key: path})
        index = next((i for i, state in enumerate(self.lanes) if state.lane_id == self.reference_id), 0)
        self._open(session, self.current_specs(), list(self.hidden_specs), index, lambda *progress: None)
        self._set_dirty(True)

    # -- lanes ------------------------------------------------------------------------------------------------
    def add_lane(self, spec: LaneSpec) -> LaneState:
        """Open a new lane beside the others (it shares their audio, avatar and mel); a model that fails shows its
        reason in the lane. Raises InputError when MAX_LANES are already shown."""
        if len(self.lanes) >= MAX_LANES:
            raise InputError(f"the window shows at most {MAX_LANES} lanes; remove one first")
        state = self._state_for(self._open_lane(spec))
        self.lanes.append(state)
        self._changed()
        return state

    def spec_for_new_lane(self, encoder: Path) -> LaneSpec:
        """A lane with this encoder (or feature dump), the first lane's generator and a name no lane has."""
        generator = next((s.spec.generator for s in self.lanes if s.spec.generator is not None), None)
        names = {s.spec.name for s in self.lanes} | {spec.name for spec in self.hidden_specs}
        name = Path(encoder).stem
        while name in names:
            name += "'"
        return LaneSpec(name=name, encoder=Path(encoder), generator=generator)

    def remove_lane(self, lane_id: int) -> None:
        """Remove a lane (the last one stays: a workspace with no lane has nothing to compare)."""
        if len(self.lanes) <= 1:
            return
        self.lanes.remove(self.lane(lane_id))
        if self.reference_id == lane_id:
            self.reference_id = self.lanes[0].lane_id
        self._changed()

    def move_lane(self, lane_id: int, delta: int) -> None:
        state = self.lane(lane_id)
        index = self.lanes.index(state)
        target = max(0, min(len(self.lanes) - 1, index + delta))
        if target == index:
            return
        self.lanes.insert(target, self.lanes.pop(index))
        self._changed()

    def replace_lane_source(self, lane_id: int, role: str, path: str | Path) -> LaneState:
        """Swap a lane's ``encoder`` or ``generator`` file; the new lane gets a new id (its frames differ)."""
        if role not in ("encoder", "generator"):
            raise ValueError(f"role: expected 'encoder' or 'generator', found {role!r}")
        old = self.lane(lane_id)
        spec = dataclasses.replace(old.spec, **{role: Path(path)}, scale=old.scale)
        new = self._state_for(self._open_lane(spec))
        self.lanes[self.lanes.index(old)] = new
        if self.reference_id == old.lane_id:
            self.reference_id = new.lane_id
        self._changed()
        return new

    def set_reference(self, lane_id: int) -> None:
        """The lane Fit and the scatter compare against (saved as the session's ``reference``)."""
        self.reference_id = self.lane(lane_id).lane_id
        self._changed()

    def set_scale(self, lane_id: int, scale: float) -> float:
        """Set a lane's scale, clamped to MIN_SCALE..MAX_SCALE; returns the scale set. Raises InputError for a
        scale float32 cannot carry for this lane's features (metrics.check_scale, the check every entry uses)."""
        state = self.lane(lane_id)
        check_scale(scale, where=f"lane {state.name}: scale")
        scale = clamp_scale(float(scale))
        check_scale(scale, where=f"lane {state.name}: scale", peak=state.peak)
        if scale != state.scale:
            state.scale = scale
            self._set_dirty(True)
            self.scale_changed.emit(lane_id, scale)
        return scale

    def fit(self, lane_id: int) -> FitResult:
        """Scale the lane so its features best match the reference's (least squares); raises FitError saying why
        it cannot (``pending`` when the features are only still being computed)."""
        state, reference = self.lane(lane_id), self.reference
        if reference is None or state is reference:
            raise FitError("this lane is the reference: fit another lane against it")
        mine, theirs = state.scaled_features(), reference.scaled_features()
        if mine is None or theirs is None:
            broken = next((s for s in (reference, state) if s.raw_features is None and not s.has_features), None)
            if broken is not None:  # its features will never come: say so instead of "still being computed"
                raise FitError(f"lane {broken.name} has no features (it failed: {broken.failure}); "
                               "pick another reference in a lane's ⋯ menu")
            raise FitError("Fit needs both lanes' features; they are still being computed.", pending=True)
        if mine.shape != theirs.shape:
            raise FitError(f"feature shapes differ: this lane {list(mine.shape)}, reference {list(theirs.shape)}")
        before = compare(mine, theirs)
        wanted = state.scale * float(before.correction)
        if not np.isfinite(wanted) or wanted <= 0:
            raise FitError(f"the correction is {before.correction}; a lane of all-zero features cannot be scaled "
                           "to match")
        try:
            scale = self.set_scale(lane_id, wanted)
        except InputError as error:
            raise FitError(str(error)) from None
        after = compare(state.scaled_features(), theirs)
        return FitResult(lane_id, reference.name, float(before.scale), float(before.correction), scale,
                         float(after.r2), clamped=scale != wanted)

    # -- results of the render worker (applied on the thread that owns the workspace) ------------------------
    def set_features(self, lane_id: int, raw_features: np.ndarray) -> None:
        state = next((s for s in self.lanes if s.lane_id == lane_id), None)
        if state is None:
            return  # a lane removed while its features were in flight
        state.raw_features = raw_features
        state.peak = feature_peak(raw_features)
        state._scaled = None
        self.features_ready.emit(lane_id)

    def set_frame_failed(self, lane_id: int, scale: float, index: int, message: str) -> None:
        """One frame of a lane raised (the render worker goes on with its other frames): remember why."""
        state = next((s for s in self.lanes if s.lane_id == lane_id), None)
        if state is not None:
            state.failed_frames[(float(scale), int(index))] = message

    # -- model files that changed on disk ---------------------------------------------------------------------
    def changed_lanes(self) -> list[LaneState]:
        """Lanes whose model or dump files differ on disk from when the lane was opened."""
        return [state for state in self.lanes if source_signature(state.spec) != state.sources]

    def reload_models(self, force: bool = False) -> list[LaneState]:
        """Reopen the lanes whose model or dump files changed on disk, and the lanes that failed or were stopped
        (every lane with ``force``). Order, scales and the reference stay; a reloaded lane gets a new id, so frames
        rendered from the old model are dropped from the frame cache and never shown again. Not a change to save.
        Returns the reloaded lanes' new states (a model that no longer loads shows its reason in its lane)."""
        changed = {state.lane_id for state in self.changed_lanes()}
        reloaded = []
        for old in list(self.lanes):
            if not (force or old.lane_id in changed or old.failure is not None):
                continue
            new = self._state_for(self._open_lane(dataclasses.replace(old.spec, scale=old.scale)))
            self.lanes[self.lanes.index(old)] = new
            if self.reference_id == old.lane_id:
                self.reference_id = new.lane_id
            reloaded.append(new)
        if reloaded:
            self.lanes_changed.emit()
        return reloaded

    def set_failed(self, lane_id: int, message: str, details: str = "") -> None:
        state = next((s for s in self.lanes if s.lane_id == lane_id), None)
        if state is None:
            return
        state.failure, state.failure_details = message, details
        self.lanes_changed.emit()

    # -- saving -----------------------------------------------------------------------------------------------
    def session_to_save(self, path: Path) -> Session:
        """The session as it is now: shown lanes (order, sources, scales), then the lanes not shown, unchanged."""
        if self.session is None:
            raise InputError("no session to save; open a session first")
        reference = self.reference.name if self.reference is not None else None
        return dataclasses.replace(self.session, lanes=self.current_specs() + list(self.hidden_specs),
                                   reference=reference, path=Path(path))

    def save(self, path: str | Path) -> Path:
        """Write the session atomically (pipeline.session.save_session); OSError when it cannot be written (the
        old file is left as it was). Returns the path written."""
        session = save_session(self.session_to_save(Path(path)), Path(path))
        self.session = session
        self._set_dirty(False)
        assert session.path is not None
        return session.path

    # -- internals --------------------------------------------------------------------------------------------
    def _changed(self) -> None:
        self._set_dirty(True)
        self.lanes_changed.emit()

    def _set_dirty(self, dirty: bool) -> None:
        if dirty != self.dirty:
            self.dirty = dirty
            self.dirty_changed.emit(dirty)

    def _state_for(self, lane: RunnableLane | FailedLane) -> LaneState:
        lane_id = self._next_lane_id
        self._next_lane_id += 1
        sources = source_signature(lane.spec)  # after opening: what the lane was opened from
        if isinstance(lane, FailedLane):
            features_lane = self._encoder_only_lane(lane.spec)
            return LaneState(lane_id, lane.spec, features_lane, float(lane.spec.scale), failure=lane.message,
                             features_only=features_lane is not None, sources=sources)
        return LaneState(lane_id, lane.spec, lane, float(lane.spec.scale), sources=sources)

    def _donor(self) -> Lane | None:
        """A real pipeline Lane of this workspace, whose audio, avatar and mel a new lane can share."""
        candidates = [state.lane for state in self.lanes] + list(self._incoming)
        return next((lane for lane in candidates if isinstance(lane, Lane)), None)

    def _open_lane(self, spec: LaneSpec) -> RunnableLane | FailedLane:
        donor = self._donor()
        if donor is None:
            return FailedLane(spec, "no working lane to borrow the audio and avatar from; open a session first")
        return self._lane_or_failure(spec, donor.audio, donor.avatar, donor.pad_mode, donor.shared_mels)

    def _lane_or_failure(self, spec: LaneSpec, audio: Audio, avatar: Avatar | None, pad_mode: str,
                         shared_mels: dict[str, np.ndarray]) -> Lane | FailedLane:
        """The one place the workspace opens a lane: a model that does not load becomes a FailedLane."""
        try:
            return Lane(spec, audio, avatar, pad_mode=pad_mode, shared_mels=shared_mels, models=self.models)
        except InputError as error:
            return FailedLane(spec, str(error))

    def _encoder_only_lane(self, spec: LaneSpec) -> Lane | None:
        """For a lane that failed to open: the same lane without its generator, if that opens (features only)."""
        donor = self._donor()
        if donor is None or spec.generator is None or spec.encoder is None:
            return None
        try:
            return Lane(dataclasses.replace(spec, generator=None), donor.audio, donor.avatar,
                        pad_mode=donor.pad_mode, shared_mels=donor.shared_mels, models=self.models)
        except InputError:
            return None  # the encoder is what fails: nothing to plot

