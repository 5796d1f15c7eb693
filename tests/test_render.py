"""`python app.py render`: the side-by-side MP4 with the session's audio, read back with PyAV (FFmpeg's decoders),
never with the code that wrote it.

The demo is rendered once (frames 10..49, 40 frames: short enough for two shared cores). The range does not start at
0 on purpose: an export that took its audio from the start of the clip instead of from frame 10 would be 0.4 s out
of sync, and the sync checks below would see it.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import soundfile as sf

from cli.main import run as cli_run
from cli.render import select_lanes
from core.errors import InputError
from pipeline.avatar import read_lms
from pipeline.crop import crop_box_from_landmarks
from pipeline.session import LaneSpec
from pipeline.lane import FailedLane
from pipeline.video_export import ExportCancelled, encode_video

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "resources" / "demo"
START, STOP = 10, 50
FPS = 25


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("render")
    out, png = folder / "demo.mp4", folder / "frame.png"
    code = cli_run(["render", str(DEMO / "demo.toml"), "--out", str(out), "--frames", f"{START}:{STOP}",
                    "--png", str(png), "--frame", str(open_frame())])
    assert code == 0
    return {"mp4": out, "png": png, "folder": folder}


def mouth_target() -> np.ndarray:
    """The demo's phoneme-derived mouth opening per output frame (0 closed .. 1 wide open)."""
    return np.load(DEMO / "demo_mouth_target.npy")[:, 0]


def open_frame() -> int:
    """The frame in the rendered range where the demo's speech opens the mouth widest."""
    return START + int(np.argmax(mouth_target()[START:STOP]))


def closed_frame() -> int:
    """A frame in the range inside a pause (mouth target 0): the audio there should be near silence."""
    target = mouth_target()[START:STOP]
    return START + int(np.flatnonzero(target == 0)[0])


def decode_video(path: Path) -> tuple[list[np.ndarray], av.video.stream.VideoStream]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="bgr24") for frame in container.decode(stream)]
        return frames, stream


def decode_audio(path: Path) -> tuple[np.ndarray, int, float]:
    """Mono samples from the file's start, their rate, and the stream's first timestamp in seconds."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        chunks = []
        start = None
        for frame in container.decode(stream):
            if start is None:
                start = float(frame.pts * frame.time_base)
            assert len(frame.layout.channels) == 1, "expected mono audio"
            chunks.append(frame.to_ndarray().reshape(-1))
        return np.concatenate(chunks), stream.rate, start or 0.0


def frame_rms(samples: np.ndarray, rate: int, j: int) -> float:
    """RMS of the audio heard while video frame j is on screen, [j/25, (j+1)/25) s."""
    per = rate // FPS
    piece = samples[j * per:(j + 1) * per]
    return float(np.sqrt(np.mean(piece.astype(np.float64) ** 2)))


def mouth_dark_pixels(picture: np.ndarray, frame: int) -> int:
    """Dark (mouth interior) pixels around the mouth of the reference lane's picture in an exported frame.

    Found independently of the composer: the template frame's upper part (above the generator's crop, which the
    generator never touches) is located in the left half of the picture by template matching; the mouth is the
    middle of the crop box's lower half (the crop box from the avatar's landmarks).
    """
    k = frame + 1  # the ping-pong order: output frame i uses template i + 1 while i < 99
    template = cv2.imread(str(DEMO / "avatar" / "full_body_img" / f"{k}.jpg"))
    box = crop_box_from_landmarks(read_lms(DEMO / "avatar" / "landmarks" / f"{k}.lms"))
    match = cv2.matchTemplate(picture[:, : picture.shape[1] // 2], template[: box.y1], cv2.TM_CCOEFF_NORMED)
    _, score, _, (x0, y0) = cv2.minMaxLoc(match)
    assert score > 0.95, f"the reference lane's frame was not found in the exported picture (match {score:.3f})"
    lane = picture[y0:y0 + template.shape[0], x0:x0 + template.shape[1]]
    w, h = box.x2 - box.x1, box.y2 - box.y1
    region = lane[box.y1 + int(0.5 * h): box.y1 + int(0.85 * h), box.x1 + int(0.3 * w): box.x1 + int(0.7 * w)]
    return int((region.max(axis=2) < 90).sum())


def test_video_has_the_frames_asked_for_at_25_fps_in_h264_yuv420p(rendered: dict[str, Path]) -> None:
    frames, stream = decode_video(rendered["mp4"])
    assert len(frames) == STOP - START
    assert stream.average_rate == FPS
    assert stream.codec_context.name == "h264"
    assert stream.codec_context.pix_fmt == "yuv420p"
    assert stream.width % 2 == 0 and stream.height % 2 == 0


def test_audio_stream_lasts_as_long_as_the_video_within_one_frame(rendered: dict[str, Path]) -> None:
    frames, _ = decode_video(rendered["mp4"])
    samples, rate, start = decode_audio(rendered["mp4"])
    with av.open(str(rendered["mp4"])) as container:
        assert container.streams.audio[0].codec_context.name == "aac"
    video_s = len(frames) / FPS
    audio_s = start + len(samples) / rate
    assert abs(audio_s - video_s) <= 1 / FPS, (audio_s, video_s)


def test_open_mouth_frame_is_where_the_audio_is_loud(rendered: dict[str, Path]) -> None:
    frames, _ = decode_video(rendered["mp4"])
    samples, rate, _ = decode_audio(rendered["mp4"])
    loud, quiet = open_frame(), closed_frame()
    # The picture: the reference lane's mouth is open at the loud frame and shut in the pause.
    assert mouth_dark_pixels(frames[loud - START], loud) > mouth_dark_pixels(frames[quiet - START], quiet) + 100
    # The sound at the same video frames: speech at the open mouth, near silence in the pause.
    assert frame_rms(samples, rate, loud - START) > 10 * frame_rms(samples, rate, quiet - START)


def test_audio_is_the_sessions_audio_for_the_same_frames(rendered: dict[str, Path]) -> None:
    """The exported loudness envelope lines up with the clip's own at lag 0 (not shifted by the range start)."""
    samples, rate, _ = decode_audio(rendered["mp4"])
    source, source_rate = sf.read(str(DEMO / "aud.wav"), dtype="float32")
    count = STOP - START
    exported = np.array([frame_rms(samples, rate, j) for j in range(count)])
    lags = range(-8, 9)
    scores = []
    for lag in lags:
        original = np.array([frame_rms(source, source_rate, START + j + lag) for j in range(count)])
        scores.append(np.corrcoef(exported, original)[0, 1])
    assert list(lags)[int(np.argmax(scores))] == 0, dict(zip(lags, np.round(scores, 3)))
    assert max(scores) > 0.99


def test_png_shows_the_same_picture_as_the_video_frame(rendered: dict[str, Path]) -> None:
    frames, _ = decode_video(rendered["mp4"])
    png = cv2.imread(str(rendered["png"]))
    video_frame = frames[open_frame() - START]
    assert png.shape == video_frame.shape
    assert np.abs(png.astype(np.int16) - video_frame).mean() < 3.0  # H.264 at CRF 18 on the same picture


def test_refuses_to_overwrite_without_force_and_leaves_the_file(tmp_path: Path, capsys) -> None:
    out = tmp_path / "exists.mp4"
    out.write_bytes(b"keep me")
    code = cli_run(["render", str(DEMO / "demo.toml"), "--out", str(out), "--frames", "0:2"])
    assert code == 2
    assert "already exists" in capsys.readouterr().err
    assert out.read_bytes() == b"keep me"


def test_refuses_a_missing_folder_before_rendering(tmp_path: Path, capsys) -> None:
    code = cli_run(["render", "--out", str(tmp_path / "no" / "such" / "x.mp4")])
    assert code == 2
    assert "expected an existing folder" in capsys.readouterr().err


def _pictures(count: int, stop_after: int | None = None, exc: BaseException | None = None):
    for i in range(count):
        if stop_after is not None and i == stop_after:
            raise exc  # type: ignore[misc]
        yield np.full((64, 96, 3), i * 10 % 255, np.uint8)


def test_cancel_leaves_no_file_and_keeps_an_old_one(tmp_path: Path) -> None:
    out = tmp_path / "cancelled.mp4"
    out.write_bytes(b"old")
    done: list[int] = []
    with pytest.raises(ExportCancelled):
        encode_video(out, _pictures(20), 20, None, force=True, progress=lambda d, t: done.append(d),
                     cancelled=lambda: len(done) >= 5)
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cancelled.mp4"]  # no .part left behind


def test_ctrl_c_inside_the_encoder_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "interrupted.mp4"
    with pytest.raises(KeyboardInterrupt):
        encode_video(out, _pictures(20, 5, KeyboardInterrupt()), 20, None)
    assert list(tmp_path.iterdir()) == []


def test_full_disk_is_one_clear_message_and_nothing_partial(tmp_path: Path) -> None:
    out = tmp_path / "full.mp4"
    with pytest.raises(InputError, match="disk is full"):
        encode_video(out, _pictures(20, 3, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))), 20, None)
    assert list(tmp_path.iterdir()) == []


def test_force_replaces_an_existing_file_with_a_playable_video(tmp_path: Path) -> None:
    out = tmp_path / "replace.mp4"
    out.write_bytes(b"old")
    audio = np.sin(np.linspace(0, 400 * np.pi, 16000 * 6 // FPS)).astype(np.float32) * 0.3
    encode_video(out, _pictures(6), 6, audio, force=True)
    frames, stream = decode_video(out)
    assert len(frames) == 6 and stream.width == 96 and stream.height == 64


def test_odd_picture_size_is_refused_before_encoding(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="even width and height"):
        encode_video(tmp_path / "odd.mp4", iter([np.zeros((63, 96, 3), np.uint8)]), 1, None)
    assert list(tmp_path.iterdir()) == []


def test_lanes_are_chosen_by_name_or_number_in_the_order_given() -> None:
    lanes = [FailedLane(LaneSpec(name, None), "x") for name in ("a", "b, c", "d")]
    assert select_lanes(lanes, None) == [0, 1, 2]
    assert select_lanes(lanes, "d,1") == [2, 0]
    with pytest.raises(InputError, match="expected one of the session's lanes"):
        select_lanes(lanes, "zz")
    with pytest.raises(InputError, match="named twice"):
        select_lanes(lanes, "a,1")


@pytest.mark.slow
def test_ctrl_c_exits_130_and_leaves_no_partial_file(tmp_path: Path) -> None:
    out = tmp_path / "sigint.mp4"
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "app.py"), "render", "--out", str(out)],
        cwd=tmp_path, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        # Wait for the first progress line: models are open and frames are being encoded into a .part file.
        assert process.stderr is not None
        line = process.stderr.readline()
        while line and "frames" not in line:
            line = process.stderr.readline()
        assert "frames" in line, "the render never reported progress"
        assert any(p.name.endswith(".part") for p in tmp_path.iterdir())
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, err
    assert "not written" in err
    assert list(tmp_path.iterdir()) == []


class _Picture:
    """A stand-in for a lane's RenderedFrame: a full frame and a generator crop."""

    def __init__(self, value: int, size: tuple[int, int] = (400, 384), crop: int = 160) -> None:
        self.image = np.full((*size, 3), value, np.uint8)
        self.crop = np.full((crop, crop, 3), value, np.uint8)


def test_composed_picture_has_even_size_a_column_per_lane_and_optional_rows() -> None:
    from pipeline.compose import ComposeOptions, PanelLabel, compose_frame

    labels = [PanelLabel("reference", 1.0, ("encoder: onnxruntime · CPU · fp32",), True),
              PanelLabel("a lane with a very long name that must wrap rather than widen its column", 200.0)]
    plain = compose_frame([_Picture(10), _Picture(200)], labels, 5, 100)
    with_crop = compose_frame([_Picture(10), _Picture(200)], labels, 5, 100, ComposeOptions(crop=True))
    with_diff = compose_frame([_Picture(10), _Picture(200)], labels, 5, 100, ComposeOptions(diff=True))
    for picture in (plain, with_crop, with_diff):
        assert picture.dtype == np.uint8 and picture.shape[0] % 2 == 0 and picture.shape[1] % 2 == 0
    assert 2 * 384 <= plain.shape[1] < 3 * 384  # two columns, not widened by the long name
    assert with_crop.shape[0] >= plain.shape[0] + 384  # the crop, enlarged to the column width, below each frame
    assert with_diff.shape[1] >= plain.shape[1] + 384  # a third column
    # The difference column shows |10 - 200| x4, clipped: white where both pictures are flat.
    assert (with_diff[-10, -100] == 255).all()


def test_a_lane_without_a_picture_shows_its_reason_and_the_others_still_draw() -> None:
    from pipeline.compose import PanelLabel, compose_frame

    picture = compose_frame([_Picture(90), "generator.onnx: expected [B,6,S,S]"],
                            [PanelLabel("ok"), PanelLabel("broken")], 0, 10)
    assert picture.shape[1] >= 2 * 384
    with pytest.raises(InputError, match="at least one lane"):
        compose_frame([], [], 0, 10)
