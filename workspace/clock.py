"""Playback clocks: the audio device is the master clock; a wall clock stands in when there is no device.

Qt-free on purpose, so the timing logic is unit-tested without a window. The window's timer only asks a clock
``position_s()`` and turns it into a frame with :func:`frame_at`.

The audio clock follows DESIGN.md: one sounddevice OutputStream whose callback copies the next block of a
preloaded array (already resampled to the device rate and the playback speed) and records which sample went to
the DAC at which stream time. The callback does nothing else: no locks, no allocation beyond the copy, no Python
objects bigger than a tuple, so a slow UI or render thread can never make the audio stutter.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np

FPS = 25
STEP_SNIPPET_S = 0.2  # stepping a frame plays this much audio: long enough to hear a phoneme
MIN_SPEED, MAX_SPEED = 0.25, 1.0


def frame_at(position_s: float, num_frames: int, av_offset_s: float = 0.0, fps: int = FPS) -> int:
    """The video frame to show while the audio at ``position_s`` is heard.

    A positive A/V offset delays the picture (shows an earlier frame), which is what a user dials in when the
    mouth moves before the sound. Clamped to the clip so the window never asks for a frame that does not exist.
    """
    if num_frames <= 0:
        return 0
    index = math.floor((position_s - av_offset_s) * fps + 1e-9)
    return max(0, min(num_frames - 1, index))


def heard_sample(anchor_sample: int, anchor_dac_time: float, now: float, rate: float) -> float:
    """The sample position being heard at stream time ``now``, extrapolated from the last callback's anchor.

    The anchor says: sample ``anchor_sample`` reaches the DAC at stream time ``anchor_dac_time``. Before that
    moment (the block is still queued) the heard position lies behind the anchor, after it ahead.
    """
    return anchor_sample + (now - anchor_dac_time) * rate


class PlaybackClock(Protocol):
    """What the window needs from a clock; both clocks below implement it."""

    kind: str  # "audio" or "wall"
    description: str  # for the status bar

    @property
    def playing(self) -> bool: ...

    @property
    def failure(self) -> str | None: ...  # set when an audio device disappeared during playback

    def play(self) -> None: ...

    def pause(self) -> None: ...

    def seek(self, position_s: float) -> None: ...

    def position_s(self) -> float: ...

    def set_speed(self, speed: float) -> None: ...

    def play_snippet(self, start_s: float, duration_s: float = STEP_SNIPPET_S) -> None: ...

    def close(self) -> None: ...


def _clamp_speed(speed: float) -> float:
    if not (MIN_SPEED <= speed <= MAX_SPEED):
        raise ValueError(f"playback speed: expected {MIN_SPEED} to {MAX_SPEED}, found {speed}")
    return float(speed)


class WallClock:
    """Media time from the monotonic clock: the fallback when no audio device exists (silent playback)."""

    kind = "wall"

    def __init__(self, duration_s: float, description: str = "wall clock (no audio device)",
                 now: Callable[[], float] = time.monotonic) -> None:
        self.duration_s = float(duration_s)
        self.description = description
        self._now = now
        self._speed = 1.0
        self._base_position = 0.0
        self._started_at: float | None = None  # monotonic time of the last play(); None while paused

    @property
    def playing(self) -> bool:
        return self._started_at is not None and self.position_s() < self.duration_s

    @property
    def failure(self) -> str | None:
        return None

    def position_s(self) -> float:
        if self._started_at is None:
            return self._base_position
        elapsed = (self._now() - self._started_at) * self._speed
        return min(self.duration_s, self._base_position + elapsed)

    def play(self) -> None:
        if self._started_at is None:
            if self._base_position >= self.duration_s:
                self._base_position = 0.0
            self._started_at = self._now()

    def pause(self) -> None:
        self._base_position = self.position_s()
        self._started_at = None

    def seek(self, position_s: float) -> None:
        self._base_position = max(0.0, min(self.duration_s, float(position_s)))
        if self._started_at is not None:
            self._started_at = self._now()

    def set_speed(self, speed: float) -> None:
        position = self.position_s()
        self._speed = _clamp_speed(speed)
        self._base_position = position
        if self._started_at is not None:
            self._started_at = self._now()

    def play_snippet(self, start_s: float, duration_s: float = STEP_SNIPPET_S) -> None:
        """Nothing to hear without a device; stepping still moves the picture."""

    def close(self) -> None:
        self._started_at = None


@dataclass(frozen=True)
class BlockRecord:
    """One callback: ``first_sample`` (in the speed-stretched buffer) reached the DAC at ``dac_time``.

    ``frames`` is how many buffer samples the block carried; ``snippet`` marks a step's 200 ms preview.
    """

    first_sample: int
    frames: int
    dac_time: float
    snippet: bool = False


class AudioClock:
    """Plays preloaded audio on a sounddevice OutputStream and derives media time from the DAC timestamps.

    The buffer the callback reads is the clip resampled to ``device_rate / speed``: at half speed it holds twice
    as many samples, so sample ``k`` of the buffer is media time ``k * speed / device_rate``. Slower playback
    therefore lowers the pitch, like a tape; that keeps the callback a plain copy.
    """

    kind = "audio"

    def __init__(self, samples_16k: np.ndarray, *, device: int | str | None = None,
                 samplerate: float | None = None, blocksize: int = 0, record_blocks: bool = False) -> None:
        import sounddevice as sd  # imported here so the wall clock works where PortAudio is missing

        self._sd = sd
        self._source = np.ascontiguousarray(samples_16k, dtype=np.float32)
        self.duration_s = len(self._source) / 16000.0
        info = sd.query_devices(device, "output")
        self.rate = float(samplerate or info["default_samplerate"])
        self.description = f"audio: {info['name']} @ {self.rate:g} Hz"
        self._speed = 1.0
        self._buffer = self._resampled(self._speed)
        self._cursor = 0  # next buffer sample the callback copies
        self._playing = False
        self._pending_seek: int | None = None  # set by the UI thread, applied by the callback
        self._snippet: tuple[int, int] | None = None  # (next, end) buffer samples to play while paused
        self._anchor: tuple[int, float] | None = None  # (buffer sample, DAC time) of the last played block
        self._failure: str | None = None
        self.blocks: list[BlockRecord] | None = [] if record_blocks else None  # for tests: every played block
        self._stream = sd.OutputStream(samplerate=self.rate, channels=1, dtype="float32", device=device,
                                       blocksize=blocksize, callback=self._callback,
                                       finished_callback=self._on_finished)
        self._stream.start()

    # -- the audio thread ------------------------------------------------------------------------------------
    def _callback(self, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        pending = self._pending_seek
        if pending is not None:
            self._pending_seek = None
            self._cursor = pending
            self._anchor = None
        buffer = self._buffer
        if self._playing:
            start = self._cursor
            chunk = buffer[start:start + frames]
            outdata[: len(chunk), 0] = chunk
            outdata[len(chunk):, 0] = 0.0
            self._cursor = start + len(chunk)
            self._anchor = (start, time_info.outputBufferDacTime)
            if self.blocks is not None:
                self.blocks.append(BlockRecord(start, len(chunk), time_info.outputBufferDacTime))
            if len(chunk) < frames:
                self._playing = False  # end of clip: hold the last position
            return
        snippet = self._snippet
        if snippet is not None:
            start, end = snippet
            chunk = buffer[start:min(end, start + frames)]
            outdata[: len(chunk), 0] = chunk
            outdata[len(chunk):, 0] = 0.0
            self._snippet = (start + len(chunk), end) if start + len(chunk) < end else None
            if self.blocks is not None:
                self.blocks.append(BlockRecord(start, len(chunk), time_info.outputBufferDacTime, snippet=True))
            return
        outdata.fill(0.0)

    def _on_finished(self) -> None:
        if self._playing:
            self._failure = "the audio device stopped during playback"

    # -- the UI thread ---------------------------------------------------------------------------------------
    def _resampled(self, speed: float) -> np.ndarray:
        import soxr

        target_rate = self.rate / speed
        if abs(target_rate - 16000.0) < 1e-6:
            return self._source.copy()
        return soxr.resample(self._source, 16000, target_rate, quality="HQ").astype(np.float32)

    @property
    def playing(self) -> bool:
        return self._playing

    @property
    def failure(self) -> str | None:
        if self._failure is None and self._playing and not self._stream.active:
            self._failure = "the audio device went away"
        return self._failure

    def _buffer_rate(self) -> float:
        """Buffer samples per second of media time."""
        return self.rate / self._speed

    def position_s(self) -> float:
        cursor_pos = (self._pending_seek if self._pending_seek is not None else self._cursor) / self._buffer_rate()
        anchor = self._anchor
        if not self._playing or anchor is None:
            return min(self.duration_s, cursor_pos)
        sample, dac_time = anchor
        heard = heard_sample(sample, dac_time, self._stream.time, self.rate)
        # Never report beyond what has been handed to the device, nor before the last anchor's block began
        # minus the output latency: both would mean a wrong stream time, and a jump of the picture.
        heard = max(0.0, min(float(self._cursor), heard))
        return min(self.duration_s, heard / self._buffer_rate())

    def play(self) -> None:
        if self._cursor >= len(self._buffer) and self._pending_seek is None:
            self._pending_seek = 0
        self._snippet = None
        self._playing = True

    def pause(self) -> None:
        position = self.position_s()
        self._playing = False
        self._pending_seek = int(round(position * self._buffer_rate()))
        self._anchor = None

    def seek(self, position_s: float) -> None:
        position_s = max(0.0, min(self.duration_s, float(position_s)))
        self._pending_seek = int(round(position_s * self._buffer_rate()))
        self._anchor = None

    def set_speed(self, speed: float) -> None:
        speed = _clamp_speed(speed)
        if speed == self._speed:
            return
        was_playing = self._playing
        position = self.position_s()
        self._playing = False
        self._speed = speed
        self._buffer = self._resampled(speed)
        self.seek(position)
        self._playing = was_playing

    def play_snippet(self, start_s: float, duration_s: float = STEP_SNIPPET_S) -> None:
        if self._playing:
            return
        start = int(round(max(0.0, start_s) * self._buffer_rate()))
        end = min(len(self._buffer), start + int(round(duration_s * self._buffer_rate())))
        self._snippet = (start, end) if end > start else None

    def close(self) -> None:
        """Stop and release the stream. After a device failure this happens on a throw-away thread: PortAudio's
        abort can block for good on a vanished device (a JACK server that died), and the UI must not freeze."""
        self._playing = False
        if self._failure is not None:
            threading.Thread(target=self._release_stream, name="release-failed-audio", daemon=True).start()
        else:
            self._release_stream()

    def _release_stream(self) -> None:
        try:
            self._stream.abort()
            self._stream.close()
        except Exception:  # the device may already be gone; closing must never raise
            pass


def open_clock(samples_16k: np.ndarray, *, prefer_audio: bool = True,
               device: int | str | None = None, **audio_kwargs: Any) -> tuple[PlaybackClock, str | None]:
    """An audio clock when an output device opens, else a wall clock plus the reason (for the status bar)."""
    duration_s = len(samples_16k) / 16000.0
    if not prefer_audio:
        return WallClock(duration_s, "wall clock (audio output off)"), None
    try:
        return AudioClock(samples_16k, device=device, **audio_kwargs), None
    except Exception as error:  # PortAudioError, missing library, no default device: all mean "no sound"
        reason = f"no audio output ({type(error).__name__}: {error})"
        return WallClock(duration_s, f"wall clock — {reason}"), reason


class FallbackWatcher:
    """Swaps a failed audio clock for a wall clock that continues from the same position.

    Kept apart from the window so the hand-over is tested without Qt: the window calls ``check()`` every tick.
    """

    def __init__(self, clock: PlaybackClock) -> None:
        self.clock = clock
        self._lock = threading.Lock()

    def check(self) -> str | None:
        """Returns the reason when it switched to the wall clock on this call, else None."""
        with self._lock:
            failure = self.clock.failure
            if failure is None or self.clock.kind != "audio":
                return None
            position = self.clock.position_s()
            duration = getattr(self.clock, "duration_s", position)
            self.clock.close()
            wall = WallClock(duration, f"wall clock — {failure}")
            wall.seek(position)
            wall.play()  # a failure is only reported during playback, so playback goes on
            self.clock = wall
            return failure
