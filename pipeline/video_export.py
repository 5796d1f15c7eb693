"""Encoding exported pictures and the session's audio into an MP4 anyone can play: H.264 + AAC at 25 fps.

PyAV (FFmpeg's libraries, with libx264 and FFmpeg's AAC encoder in its wheels) does the encoding; nothing here is a
hand-written encoder. Choices, each for "plays in ordinary players":
- yuv420p (4:2:0, what browsers, QuickTime and phones decode), so width and height must be even;
- AAC-LC at 48 kHz mono (the clip's 16 kHz is resampled once with soxr, as the rest of the app does);
- ``+faststart``, so the index is at the front and a browser or a chat app can start playing before the end.

Frame i of the clip shows during [i/25, (i+1)/25) s (the window's ``frame = floor(time x 25)``), so video frame
j of an export of frames A..B is given the audio samples of [(A+j)/25, (A+j+1)/25): the mouth and its sound stay
together for any range. Audio past the end of the clip is silence, so both streams last exactly as long.

Qt-free: the CLI calls it with a terminal progress bar, the window from a worker thread with a Cancel button.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from core.constants import SAMPLE_RATE, VIDEO_FPS
from core.errors import InputError
from core.safe_write import atomic_output, check_output_path

OUTPUT_RATE = 48000
CRF = "18"  # visually lossless for these flat, synthetic frames; small files (a few MB per minute)
PRESET = "veryfast"  # exporting runs beside the window's renderer on small machines: favour speed over size


class ExportCancelled(Exception):
    """The user cancelled an export (the window's Cancel button); nothing was written."""


ProgressCallback = Callable[[int, int], None]


def audio_for_frames(samples: np.ndarray, start: int, stop: int, sample_rate: int = SAMPLE_RATE,
                     fps: int = VIDEO_FPS) -> np.ndarray:
    """The clip's samples heard while frames start..stop-1 are shown, padded with silence past the clip's end."""
    if stop <= start:
        raise InputError(f"audio for frames {start}..{stop - 1}: expected at least one frame")
    if sample_rate % fps:
        raise InputError(f"audio at {sample_rate} Hz: expected a rate that is a multiple of {fps} fps")
    per_frame = sample_rate // fps
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    out = np.zeros((stop - start) * per_frame, dtype=np.float32)
    piece = samples[start * per_frame: stop * per_frame]
    out[: len(piece)] = piece
    return out


def _resample(audio: np.ndarray, source_rate: int) -> np.ndarray:
    if source_rate == OUTPUT_RATE:
        return np.asarray(audio, dtype=np.float32)
    import soxr

    return np.asarray(soxr.resample(audio, source_rate, OUTPUT_RATE, quality="HQ"), dtype=np.float32)


def check_mp4_path(path: str | os.PathLike[str], force: bool, what: str = "--out") -> Path:
    """The checked output path (see core.safe_write), refusing a name that players would not open as MP4."""
    if Path(path).suffix.lower() not in (".mp4", ".m4v", ".mov"):
        raise InputError(f"{what} {path}: expected a file name ending in .mp4")
    return check_output_path(path, force, what)


def encode_video(
    path: str | os.PathLike[str],
    frames: Iterable[np.ndarray],
    count: int,
    audio: np.ndarray | None,
    sample_rate: int = SAMPLE_RATE,
    *,
    fps: int = VIDEO_FPS,
    force: bool = False,
    progress: ProgressCallback | None = None,
    cancelled: Callable[[], bool] | None = None,
    what: str = "--out",
) -> Path:
    """Encode ``count`` BGR uint8 pictures (all of one even size) and ``audio`` (mono float samples for exactly those
    frames, e.g. from :func:`audio_for_frames`) into ``path``, atomically.

    ``frames`` is consumed lazily, one picture per video frame, so rendering and encoding interleave and a long
    clip never sits in memory. ``progress(done, count)`` is called after each frame; ``cancelled()`` is asked before
    each one and, when true, stops with :class:`ExportCancelled`. A cancel, Ctrl+C, a full disk or any error leaves
    no file behind (and an existing file untouched); a full disk or unwritable folder is an InputError.
    """
    import av

    if count <= 0:
        raise InputError(f"{what} {path}: expected at least one frame to encode, found {count}")
    missing = [name for name in ("libx264", "aac") if name not in av.codecs_available]
    if missing:
        raise InputError(f"{what} {path}: this PyAV build (av {av.__version__}) lacks the {', '.join(missing)} "
                         "encoder(s); expected the PyPI wheel, which bundles FFmpeg with them (pip install av)")
    check_mp4_path(path, force, what)
    samples_per_frame = 0
    resampled = None
    if audio is not None:
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        if sample_rate * count % fps:
            raise InputError(f"audio at {sample_rate} Hz does not divide into {fps} fps frames")
        expected = sample_rate * count // fps
        if len(audio) != expected:
            raise InputError(f"audio for {count} frames: expected {expected} samples at {sample_rate} Hz, "
                             f"found {len(audio)}")
        resampled = _resample(np.clip(audio, -1.0, 1.0), sample_rate)
        samples_per_frame = OUTPUT_RATE // fps
        resampled = np.pad(resampled, (0, max(0, samples_per_frame * count - len(resampled))))[: samples_per_frame * count]

    with atomic_output(path, force, what) as tmp:
        # The temporary name ends in .part, so the container format is named, not guessed from the suffix.
        with av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
            video = None
            sound = None
            if resampled is not None:
                sound = container.add_stream("aac", rate=OUTPUT_RATE, layout="mono")
                sound.bit_rate = 128_000
            size: tuple[int, int] | None = None
            done = 0
            for picture in frames:
                if done >= count:
                    break
                if cancelled is not None and cancelled():
                    raise ExportCancelled(f"export of {Path(path).name} cancelled; nothing was written")
                picture = np.ascontiguousarray(picture)
                if picture.dtype != np.uint8 or picture.ndim != 3 or picture.shape[2] != 3:
                    raise InputError(f"{what}: expected BGR uint8 pictures [H, W, 3], found {picture.dtype} "
                                     f"{list(picture.shape)}")
                h, w = picture.shape[:2]
                if video is None:
                    if h % 2 or w % 2:
                        raise InputError(f"{what}: H.264 in yuv420p needs an even width and height, found {w}x{h}")
                    video = container.add_stream("libx264", rate=fps,
                                                 options={"crf": CRF, "preset": PRESET, "profile": "high"})
                    video.width, video.height = w, h
                    video.pix_fmt = "yuv420p"
                    video.codec_context.time_base = Fraction(1, fps)
                    size = (w, h)
                elif (w, h) != size:
                    raise InputError(f"{what}: every picture must be {size[0]}x{size[1]}, frame {done} is {w}x{h}")
                frame = av.VideoFrame.from_ndarray(picture, format="bgr24")
                frame.pts = done
                frame.time_base = Fraction(1, fps)
                container.mux(video.encode(frame.reformat(format="yuv420p")))
                if sound is not None:
                    chunk = resampled[done * samples_per_frame: (done + 1) * samples_per_frame]
                    aframe = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
                    aframe.sample_rate = OUTPUT_RATE
                    aframe.pts = done * samples_per_frame
                    aframe.time_base = Fraction(1, OUTPUT_RATE)
                    container.mux(sound.encode(aframe))
                done += 1
                if progress is not None:
                    progress(done, count)
            if done != count:
                raise InputError(f"{what}: expected {count} pictures to encode, the renderer gave {done}")
            container.mux(video.encode(None))
            if sound is not None:
                container.mux(sound.encode(None))
    return Path(path)
