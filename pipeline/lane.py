"""A lane: one backend combination run over the shared audio and avatar, stage by stage.

The CLI, the tests and the window all render through this class, so a frame on screen is the same array that
`python app.py dump` writes. Each stage is computed once and cached; only the scale-dependent stages (audio tensors,
generator outputs, frames) are recomputed when the scale changes, which is what makes the scale slider live.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.constants import HOP_LENGTH, SAMPLE_RATE
from core.filekinds import file_kind
from core.interfaces import Encoder, Generator, ModelOpener, Provenance
from pipeline.dumps import FeatureDump, OutputDump, StageDump, load_mel_dump
from pipeline.audio import Audio, load_audio
from pipeline.avatar import Avatar
from pipeline.crop import GeneratorInput, output_to_uint8, paste_mouth, ping_pong_index, prepare_input
from core.errors import InputError
from pipeline.features import audio_tensors
from pipeline.input_cache import inputs_for
from pipeline.metrics import check_scale, feature_peak
from pipeline.streaming import features_from_mel, streamed_melspectrogram
from pipeline.session import LaneSpec, Session
from pipeline.windows import mel_windows, num_windows, window_starts


RENDER_BATCH = 16  # frames per generator call in Lane.frames (pre-render, exports)


@dataclass(frozen=True)
class RenderedFrame:
    """One output frame of a lane: the full frame with the mouth pasted back, and the generator's own crop."""

    image: np.ndarray  # [H, W, 3] uint8 BGR, the template frame with the generated mouth pasted back
    crop: np.ndarray  # [S, S, 3] uint8 BGR, the generator output as drawn (truncated to uint8)
    template_index: int
    non_finite: int = 0  # NaN/Inf values in the generator output (drawn as 0 in ``crop``): the window counts them


@dataclass(frozen=True)
class FailedLane:
    """A lane that could not be opened; the window shows ``message`` in the lane's place."""

    spec: LaneSpec
    message: str

    @property
    def name(self) -> str:
        return self.spec.name


class Lane:
    """Runs one lane's pipeline lazily: mel -> windows -> features -> (x scale) -> tensors -> generator -> frame.

    Backends are opened in the constructor, so a model that will not load fails here with an InputError that names
    the file. A lock serialises the cached stages so a worker thread and the main thread can share a lane.
    """

    def __init__(
        self,
        spec: LaneSpec,
        audio: Audio,
        avatar: Avatar | None = None,
        pad_mode: str = "constant",
        shared_mels: dict[str, np.ndarray] | None = None,
        models: ModelOpener | None = None,
    ) -> None:
        self.spec = spec
        self.audio = audio
        self.avatar = avatar
        self.pad_mode = pad_mode
        self._lock = threading.RLock()
        self._mel: np.ndarray | None = None
        self._windows: np.ndarray | None = None
        self._raw_features: np.ndarray | None = None
        self._scaled: tuple[float, np.ndarray] | None = None
        # Lanes of one session share the audio, so the computed mel is shared too (keyed by padding mode).
        self._shared_mels = shared_mels if shared_mels is not None else {}
        # A lane without an encoder can still produce the mel, windows and generator inputs (the dump command).
        self.encoder: Encoder | FeatureDump | None = (
            open_encoder_source(spec.encoder, spec.options, models) if spec.encoder is not None else None
        )
        # A generator may also be an OutputDump: another program's raw outputs or final frames for every frame.
        self.generator: Generator | OutputDump | None = (
            open_generator_source(spec.generator, spec.options, models) if spec.generator is not None else None
        )
        # Audio tensors and generator inputs may come from another program too; the stages after them run from them.
        self.tensor_dump = StageDump(spec.tensors, "tensors") if spec.tensors is not None else None
        self.input_dump = StageDump(spec.inputs, "inputs") if spec.inputs is not None else None
        self.models = models  # kept so a check can rerun this lane's models on other audio (pipeline/mouth.py)

    @property
    def shared_mels(self) -> dict[str, np.ndarray]:
        """The mel cache this lane shares with the other lanes of its session (hand it to lanes added later)."""
        return self._shared_mels

    # -- identity ---------------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def encoder_provenance(self) -> Provenance:
        return self._require_encoder().provenance

    @property
    def generator_provenance(self) -> Provenance | None:
        return self.generator.provenance if self.generator is not None else None

    # -- audio stages -----------------------------------------------------------------------------------------
    def mel(self) -> np.ndarray:
        """[T, 80] float32: from the lane's mel dump if it has one, else computed from the shared audio."""
        with self._lock:
            if self._mel is None:
                if self.spec.mel is not None:
                    self._mel = _checked_mel_dump(self.spec.mel, self.audio)
                else:
                    mel = self._shared_mels.get(self.pad_mode)
                    if mel is None:
                        # In chunks: bit-identical to melspectrogram, without an hour's float64 STFT in memory.
                        mel = streamed_melspectrogram(self.audio.samples, pad_mode=self.pad_mode)
                        mel.setflags(write=False)
                        self._shared_mels[self.pad_mode] = mel
                    self._mel = mel
            return self._mel

    def windows(self) -> np.ndarray:
        """[N, 1, 80, 16] float32 encoder inputs, one per video frame."""
        with self._lock:
            if self._windows is None:
                self._windows = mel_windows(self.mel())
            return self._windows

    @property
    def num_windows(self) -> int:
        return num_windows(self.mel().shape[0])

    def raw_features(self) -> np.ndarray:
        """[N+2, 512] float32 padded features before the lane's scale: computed once, then cached."""
        with self._lock:
            if self._raw_features is None:
                encoder = self._require_encoder()
                if isinstance(encoder, Encoder):
                    # Windows go to the encoder in batches cut from the mel (never all N at once: 460 MB for an
                    # hour); the padded result equals pad_features(encoder.encode(self.windows())).
                    try:
                        self._raw_features = features_from_mel(encoder.encode, self.mel())
                    except InputError as error:
                        raise InputError(f"encoder {self.spec.encoder.name}: {error}") from error
                else:
                    # A feature dump: reopen it knowing N, so a [N, 512] dump is padded and any other row count is
                    # reported against this audio's expectation.
                    self.encoder = FeatureDump(encoder.path, num_windows=self.num_windows)
                    self._raw_features = self.encoder.features
                self._raw_features.setflags(write=False)
            return self._raw_features

    def features(self, scale: float | None = None) -> np.ndarray:
        """[N+2, 512] features multiplied by ``scale`` (the lane's own scale when None); cached for the last scale."""
        scale = self.spec.scale if scale is None else float(scale)
        with self._lock:
            if self._scaled is None or self._scaled[0] != scale:
                raw = self.raw_features()
                if scale != 1.0:  # refuse a product float32 cannot carry (Inf, or every feature 0/denormal)
                    check_scale(scale, f"lane {self.name!r}: scale", feature_peak(raw))
                scaled = raw if scale == 1.0 else (raw * np.float32(scale)).astype(np.float32)
                self._scaled = (scale, scaled)
            return self._scaled[1]

    @property
    def num_frames(self) -> int:
        """Output frames: one per padded feature row (N + 2)."""
        if self._raw_features is None and self.draws_before_features:
            return self.num_windows + 2  # what features_from_mel will return, without waiting for it
        return int(self.raw_features().shape[0])

    @property
    def draws_before_features(self) -> bool:
        """True when frame i can be drawn before the whole clip's features exist, from just the windows its 16
        feature rows come from (an encoder model; not a feature or tensor dump)."""
        return isinstance(self.encoder, Encoder) and self.tensor_dump is None

    def features_near(self, i: int) -> np.ndarray:
        """Padded feature rows max(0, i-8) .. min(N+2, i+8) - 1, unscaled: the rows frame i's audio tensor holds,
        encoded from just the windows they come from (padded row r is window clamp(r - 1, 0, N - 1)). Equal bit for
        bit to raw_features()[max(0, i-8):min(N+2, i+8)] (tests/test_playback_policy.py)."""
        with self._lock:
            if self._raw_features is not None:
                return self._raw_features[max(0, i - 8):min(self._raw_features.shape[0], i + 8)]
        encoder = self._require_encoder()
        mel = self.mel()
        count = num_windows(mel.shape[0])
        low, high = max(0, i - 8), min(count + 2, i + 8)
        needed = np.clip(np.arange(low, high) - 1, 0, count - 1)
        unique = np.unique(needed)
        starts = window_starts(mel.shape[0])[unique]
        windows = mel[starts[:, None] + np.arange(16)[None, :]]  # as mel_windows gathers them
        windows = np.ascontiguousarray(windows.transpose(0, 2, 1)[:, None, :, :], dtype=np.float32)
        try:
            encoded = np.asarray(encoder.encode(windows), dtype=np.float32)
        except InputError as error:
            raise InputError(f"encoder {self.spec.encoder.name}: {error}") from error
        return encoded[np.searchsorted(unique, needed)]

    def audio_tensors(self, frames: range | None = None, scale: float | None = None) -> np.ndarray:
        """[F, 32, 16, 16] generator audio inputs for the given output frames (from the lane's tensor dump if any)."""
        frames = range(self.num_frames) if frames is None else frames
        if self.tensor_dump is not None:
            # Another program's tensors are fixed numbers: the scale applies to features this program computes.
            return np.stack([self.tensor_dump.item(i) for i in frames]).astype(np.float32, copy=False)
        return audio_tensors(self.features(scale), np.asarray(list(frames), dtype=np.int64))

    # -- image stages -----------------------------------------------------------------------------------------
    def _require_encoder(self):
        if self.encoder is None:
            raise InputError(f"lane {self.name!r}: features need an encoder model or a feature dump, but none is given")
        return self.encoder

    def _require_avatar(self) -> Avatar:
        if self.avatar is None:
            raise InputError(f"lane {self.name!r}: frames need an avatar folder, but the session names none")
        return self.avatar

    def _require_generator(self) -> Generator:
        if self.generator is None:
            raise InputError(f"lane {self.name!r}: frames need a generator model, but the lane names none")
        return self.generator

    @property
    def image_size(self) -> int:
        generator = self._require_generator()
        if generator.size is None:  # a dump of final frames has no generator crop size
            raise InputError(f"lane {self.name!r}: {generator.path.name} holds final frames, not generator crops")
        return int(generator.size)

    @property
    def shows_dumped_frames(self) -> bool:
        """True when the lane's frames come whole from another program's dump (nothing is generated here)."""
        return isinstance(self.generator, OutputDump) and self.generator.kind == "frames"

    def template_index(self, i: int) -> int:
        """Which template frame output frame i is drawn on (ping-pong order)."""
        return int(ping_pong_index(i, self._require_avatar().num_templates))

    def generator_input(self, i: int, size: int | None = None) -> GeneratorInput:
        """The prepared 6-channel input (and resized crop) for output frame i; cached per template frame and shared
        with the other lanes on this Avatar, so its arrays are read-only (copy before writing).

        With an input dump the tensor is the dump's row for frame i; the resized crop (what paste-back writes into)
        is still this program's, since a dump of inputs says nothing about the frame around them.
        """
        avatar = self._require_avatar()
        if size is None:
            size = self.input_dump.size if self.input_dump is not None else self.image_size
        if self.input_dump is not None:
            tensor = self.input_dump.item(i)
            if tensor.shape[-1] != size:
                raise InputError(f"lane {self.name!r}: {self.input_dump.path.name} holds {tensor.shape[-1]} px inputs, "
                                 f"expected {size} px")
            computed = self._prepared(avatar, self.template_index(i), size)
            return GeneratorInput(tensor=np.asarray(tensor, dtype=np.float32), resized_crop=computed.resized_crop)
        return self._prepared(avatar, self.template_index(i), size)

    def _prepared(self, avatar: Avatar, k: int, size: int) -> GeneratorInput:
        """Template k's prepared input at this size, from the one cache the Avatar's lanes share (keyed by
        (template index, size), bounded, read-only arrays: pipeline/input_cache.py)."""
        return inputs_for(avatar).get(k, size, lambda: prepare_input(avatar.frame(k), avatar.crop_box(k), size))

    def raw_output(self, i: int, scale: float | None = None) -> np.ndarray:
        """[3, S, S] float32 generator output for output frame i, as the model returns it."""
        self._check_frame(i)
        generator = self._require_generator()
        if isinstance(generator, OutputDump):
            if generator.kind == "frames":
                raise InputError(
                    f"lane {self.name!r}: {generator.path.name} holds final frames, so raw generator outputs are not "
                    "available (compare the frames instead)"
                )
            return generator.item(i)
        prepared = self.generator_input(i)
        audio = self._audio_tensor(i, scale)
        out = generator.generate(prepared.tensor[None], audio)
        return np.asarray(out, dtype=np.float32)[0]

    def _audio_tensor(self, i: int, scale: float | None) -> np.ndarray:
        """[1, 32, 16, 16]: equal to self.audio_tensors(range(i, i + 1), scale), but copies only the 16 rows it uses
        (audio_tensors pads a copy of all N+2 rows for each call: 184 MB per frame for an hour-long clip)."""
        if self.tensor_dump is not None:  # another program's tensors stand in for this stage (session key `tensors`)
            return np.asarray(self.tensor_dump.item(i), dtype=np.float32)[None]
        if self._raw_features is None and self.draws_before_features:
            # The whole clip's features are not computed yet (the first frame at start-up): encode only the windows
            # this frame needs, so the picture does not wait for the encoder over the whole clip.
            near = self.features_near(i)
            scale = self.spec.scale if scale is None else float(scale)
            if scale != 1.0:
                check_scale(scale, f"lane {self.name!r}: scale", feature_peak(near))
                near = (near * np.float32(scale)).astype(np.float32)
            rows = np.zeros((16, near.shape[1]), np.float32)
            low = max(0, i - 8)
            rows[low - (i - 8):low - (i - 8) + near.shape[0]] = near
            return rows.reshape(1, 32, 16, 16)
        features = self.features(scale)
        rows = np.zeros((16, features.shape[1]), np.float32)
        low, high = max(0, i - 8), min(features.shape[0], i + 8)
        rows[low - (i - 8):high - (i - 8)] = features[low:high]
        return rows.reshape(1, 32, 16, 16)

    def frame(self, i: int, scale: float | None = None) -> RenderedFrame:
        """Render output frame i: generator output pasted back into its template frame."""
        avatar = self._require_avatar()
        k = self.template_index(i)
        if self.shows_dumped_frames:
            return self._dumped_frame(i, avatar, k, self.generator)  # type: ignore[arg-type]
        out = self.raw_output(i, scale)
        prepared = self.generator_input(i)
        # One uint8 conversion serves the pasted frame and the crop view (paste_back would convert again).
        crop = output_to_uint8(out)  # contiguous HWC
        image = paste_mouth(avatar.frame(k), avatar.crop_box(k), prepared.resized_crop, crop)
        bad = _non_finite_count(out)
        return RenderedFrame(image=image, crop=crop, template_index=k, non_finite=bad)

    def frames(self, indices: list[int] | range, scale: float | None = None,
               batch: int = RENDER_BATCH) -> list[RenderedFrame]:
        """Render several output frames with one generator call per `batch` frames (pre-render and exports).

        A GPU generator is barely busy with one 320 px frame; 8-32 a call is where its throughput levels off. Each
        frame is pasted back exactly as frame() does; a model with a fixed batch of 1 still runs one frame a call.
        """
        indices = [int(i) for i in indices]
        if self.shows_dumped_frames or isinstance(self.generator, OutputDump):
            return [self.frame(i, scale) for i in indices]
        avatar = self._require_avatar()
        generator = self._require_generator()
        rendered: list[RenderedFrame] = []
        for start in range(0, len(indices), max(1, int(batch))):
            chunk = indices[start:start + max(1, int(batch))]
            for i in chunk:
                self._check_frame(i)
            prepared = [self.generator_input(i) for i in chunk]
            images = np.stack([p.tensor for p in prepared])
            audio = np.concatenate([self._audio_tensor(i, scale) for i in chunk])
            outputs = np.asarray(generator.generate(images, audio), dtype=np.float32)
            for i, p, out in zip(chunk, prepared, outputs):
                k = self.template_index(i)
                crop = output_to_uint8(out)
                image = paste_mouth(avatar.frame(k), avatar.crop_box(k), p.resized_crop, crop)
                bad = _non_finite_count(out)
                rendered.append(RenderedFrame(image=image, crop=crop, template_index=k, non_finite=bad))
        return rendered

    def _dumped_frame(self, i: int, avatar: Avatar, k: int, dump: OutputDump) -> RenderedFrame:
        """A final frame from a dump, shown as it is; its 'crop' is the crop box's region of that frame."""
        self._check_frame(i)
        image = np.asarray(dump.item(i))
        template = avatar.frame(k)
        if image.shape != template.shape:
            raise InputError(
                f"lane {self.name!r}: {dump.path.name} frame {i} is {list(image.shape)}, "
                f"expected the template frame size {list(template.shape)}"
            )
        y0, y1, x0, x1 = avatar.crop_box(k).region(*template.shape[:2])
        return RenderedFrame(image=image, crop=np.ascontiguousarray(image[y0:y1, x0:x1]), template_index=k)

    def _check_frame(self, i: int) -> None:
        if not 0 <= i < self.num_frames:
            raise InputError(f"lane {self.name!r}: frame {i} is out of range; expected 0..{self.num_frames - 1}")


def _non_finite_count(out: np.ndarray) -> int:
    """NaN/Inf values in a generator output. A sum is finite only when every value is (a NaN or Inf anywhere makes
    it NaN or Inf), so the usual all-finite frame costs one reduction instead of a boolean array and a count."""
    if np.isfinite(out.sum(dtype=np.float64)):
        return 0
    return int(out.size - np.count_nonzero(np.isfinite(out)))


def open_encoder_source(path: Path, options: dict[str, Any], models: ModelOpener | None) -> Encoder | FeatureDump:
    """A feature dump (read here) or a model (opened by ``models``, the backends' registry)."""
    if file_kind(path, "encoder") == "dump":
        return FeatureDump(path)
    return _require_opener(models, path).open_encoder(path, dict(options))


def open_generator_source(path: Path, options: dict[str, Any], models: ModelOpener | None) -> Generator | OutputDump:
    """Another program's outputs or frames (read here) or a model (opened by ``models``)."""
    if file_kind(path, "generator") == "dump":
        return OutputDump(path)
    return _require_opener(models, path).open_generator(path, dict(options))


MEL_DUMP_TOLERANCE = 4  # mel frames (50 ms): what STFT centring and padding conventions move T by


def _checked_mel_dump(path: Path, audio: Audio) -> np.ndarray:
    """A lane's mel dump, refused when its length disagrees with the session's audio: the frames would be drawn
    against the wrong sound, and the clip length would silently come from the dump instead of --audio."""
    mel = load_mel_dump(path)
    expected = 1 + audio.samples.shape[0] // HOP_LENGTH
    if abs(mel.shape[0] - expected) > MEL_DUMP_TOLERANCE:
        source = f"the audio {audio.path.name}" if audio.path is not None else "the audio"
        raise InputError(
            f"mel dump {path}: expected about {expected} frames (the mel of {source}, {audio.duration_s:.2f} s), "
            f"found {mel.shape[0]} frames ({mel.shape[0] * HOP_LENGTH / SAMPLE_RATE:.2f} s): a dump of other audio? "
            f"(differences up to {MEL_DUMP_TOLERANCE} frames are accepted)"
        )
    return mel


def _require_opener(models: ModelOpener | None, path: Path) -> ModelOpener:
    if models is None:
        raise InputError(f"{path}: a model file needs a backend registry, and this lane was opened without one")
    return models


def open_lanes(session: Session, audio: Audio | None = None, avatar: Avatar | None = None,
               models: ModelOpener | None = None) -> list[Lane | FailedLane]:
    """Open every lane of a session; a lane that fails becomes a FailedLane carrying the reason.

    The audio and avatar are loaded once and shared (a failure there is the session's, so it raises). ``models``
    opens model files (``backends.registry.MODELS``); without it only dumps can be lanes.
    """
    audio = load_audio(session.audio) if audio is None else audio
    if avatar is None and session.avatar is not None:
        avatar = Avatar.open(session.avatar)
    lanes: list[Lane | FailedLane] = []
    shared_mels: dict[str, np.ndarray] = {}
    for spec in session.lanes:
        try:
            lanes.append(Lane(spec, audio, avatar, pad_mode=session.pad_mode, shared_mels=shared_mels, models=models))
        except InputError as exc:
            lanes.append(FailedLane(spec, str(exc)))
    return lanes


def parse_frame_range(text: str | None, total: int) -> range:
    """Parse 'A:B' (Python slice semantics, B exclusive, either side optional, negatives from the end)."""
    if text is None or text == "":
        return range(total)
    if ":" not in text:
        raise InputError(f"--frames {text!r}: expected A:B (for example 0:25), found no ':'")
    left, right = text.split(":", 1)
    try:
        start = int(left) if left.strip() else None
        stop = int(right) if right.strip() else None
    except ValueError:
        raise InputError(f"--frames {text!r}: expected integers A:B (for example 0:25)") from None
    # Python's slice would clamp 0:99999 to the clip without a word; a bound past the clip is the user's mistake.
    for bound in (start, stop):
        if bound is not None and not -total <= bound <= total:
            raise InputError(f"--frames {text!r}: expected bounds within the clip's frames 0..{total - 1} "
                             f"(or -{total}..-1 from the end), found {bound}")
    frames = range(total)[slice(start, stop)]
    if len(frames) == 0:
        raise InputError(f"--frames {text!r}: selects no frame; the clip has frames 0..{total - 1}")
    return frames


def resolve_path(path: str | Path) -> Path:
    """Absolute path of a user-given path (CLI arguments resolve against the working directory)."""
    return Path(path).expanduser().resolve()
