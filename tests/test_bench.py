"""The speed work of issue 12, as behaviour: the benchmark runs and reports every figure, the faster render path
draws exactly the pixels the plain composition draws, and lanes of one model share one ONNX Runtime session.

Nothing here times anything: the targets live in `python app.py bench` (cli/bench.py), never in tests.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from backends.registry import MODELS
from pipeline.audio import load_audio
from pipeline.avatar import Avatar
from pipeline.crop import paste_back, ping_pong_index, prepare_input
from pipeline.features import audio_tensors, pad_features
from pipeline.lane import Lane, open_lanes
from pipeline.mel import melspectrogram
from pipeline.session import demo_session_path, load_session
from pipeline.windows import mel_windows

DEMO = demo_session_path()
needs_demo = pytest.mark.skipif(not DEMO.exists(), reason="the demo bundle is missing")

REQUIRED_KEYS = ("render_ratio", "scale_change_ms", "generator_call_ms", "startup_s", "startup_baseline_s",
                 "features_60min_peak_mb", "features_60min_s", "features_1min_s", "gpu_frames_per_s")


@needs_demo
def test_quick_bench_writes_every_figure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    from cli.main import run

    monkeypatch.setenv("LIPSYNC_COMPARE_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "bench.json"
    code = run(["bench", "--quick", "--frames", "3", "--repeats", "1", "--short-minutes", "0.05",
                "--long-minutes", "0.1", "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    figures = json.loads(out.read_text())
    for key in REQUIRED_KEYS:
        assert key in figures, key
    measured = ("render_ratio", "render_app_ms", "render_raw_ms", "generator_call_ms", "scale_change_ms",
                "startup_s", "startup_baseline_s", "startup_ratio", "features_short_s", "features_long_s",
                "features_long_peak_mb", "features_linearity")
    for key in measured:  # measured in quick mode: positive and finite
        assert isinstance(figures[key], (int, float)) and math.isfinite(figures[key]) and figures[key] > 0, key
    # Quick clips are not 1 and 60 minutes long, so those figures are null rather than mislabelled.
    assert figures["features_60min_s"] is None and figures["features_1min_s"] is None
    assert figures["gpu_frames_per_s"] is None or figures["gpu_frames_per_s"] > 0
    assert len(figures["machine"]["load_average"]) == 3
    for name in ("render", "scale change", "start-up", "long clip", "peak memory", "GPU"):
        assert name in printed
    assert "ratio" in printed and "target" in printed


@needs_demo
def test_lanes_of_one_model_share_one_session_and_other_options_do_not() -> None:
    session = load_session(DEMO, check_files=False)
    lanes = [lane for lane in open_lanes(session, models=MODELS) if isinstance(lane, Lane)]
    generators = [lane.generator for lane in lanes]
    assert len(generators) >= 2 and generators[0].provenance.source == generators[1].provenance.source
    assert generators[0]._model.session is generators[1]._model.session
    other = MODELS.open_generator(generators[0].provenance.source, {"threads": 1})
    assert other._model.session is not generators[0]._model.session


@needs_demo
def test_the_render_path_draws_what_the_plain_composition_draws() -> None:
    """Lane.frame (one uint8 conversion, 16-row audio tensor, cached templates) against the stages written out."""
    session = load_session(DEMO, check_files=False)
    lane = next(lane for lane in open_lanes(session, models=MODELS) if isinstance(lane, Lane))
    audio = load_audio(session.audio)
    avatar = Avatar.open(session.avatar, cache_frames=1)
    features = pad_features(lane.encoder.encode(mel_windows(melspectrogram(audio.samples))))
    assert np.array_equal(lane.raw_features(), features)
    last = lane.num_frames - 1
    for i in (0, 1, 7, 8, 9, last - 1, last):  # the zero-filled context at both ends, and the middle
        for scale in (1.0, 2.5):
            scaled = features if scale == 1.0 else (features * np.float32(scale)).astype(np.float32)
            k = ping_pong_index(i, avatar.num_templates)
            prepared = prepare_input(avatar.frame(k), avatar.crop_box(k), lane.image_size)
            out = lane.generator.generate(prepared.tensor[None], audio_tensors(scaled, [i]))
            expected = paste_back(avatar.frame(k), avatar.crop_box(k), prepared.resized_crop, out)
            rendered = lane.frame(i, scale)
            assert np.array_equal(rendered.image, expected), (i, scale)
            crop = (np.clip(np.nan_to_num(out[0], nan=0.0), 0.0, 1.0) * 255.0).astype(np.uint8).transpose(1, 2, 0)
            assert np.array_equal(rendered.crop, crop) and rendered.crop.flags["C_CONTIGUOUS"]


def test_torch_lanes_take_a_device_and_show_it(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from backends.torch_backend import available_devices, resolve_device
    from backends.torch_models import UNetGenerator
    from core.errors import InputError

    path = tmp_path / "generator.pth"
    torch.save(UNetGenerator(size=160, width=0.125).state_dict(), path)
    best = available_devices()[0]
    assert resolve_device("auto") == best and resolve_device(None) == best
    generator = MODELS.open_generator(path, {"device": "cpu"})
    assert generator.provenance.provider == "cpu" and generator.provenance.details["device requested"] == "cpu"
    auto = MODELS.open_generator(path, {})
    assert auto.provenance.provider.startswith(best) and auto.provenance.details["device requested"] == "auto"
    image = np.random.default_rng(0).random((5, 6, 160, 160), dtype=np.float32)
    audio = np.random.default_rng(1).random((5, 32, 16, 16), dtype=np.float32)
    assert generator.generate(image, audio).shape == (5, 3, 160, 160)
    with pytest.raises(InputError, match="expected one of auto, cuda, mps, cpu"):
        resolve_device("tpu")
    if "cuda" not in available_devices():
        with pytest.raises(InputError, match="not available"):
            MODELS.open_generator(path, {"device": "cuda"})


@needs_demo
def test_frames_in_batches_are_the_frames_one_by_one() -> None:
    session = load_session(DEMO, check_files=False)
    lane = next(lane for lane in open_lanes(session, models=MODELS) if isinstance(lane, Lane))
    indices = [0, 1, 2, 5, 40, lane.num_frames - 1]
    batched = lane.frames(indices, 1.5, batch=4)
    assert [f.template_index for f in batched] == [lane.template_index(i) for i in indices]
    for i, frame in zip(indices, batched):
        single = lane.frame(i, 1.5)
        assert np.array_equal(frame.image, single.image) and np.array_equal(frame.crop, single.crop)


def test_exit_after_first_frame_waits_for_every_lane_or_its_error() -> None:
    """The start-up figure ends when each lane shows its first frame or its error, never before, never after."""
    from types import SimpleNamespace as NS

    from ui.first_frame import lanes_settled

    painted = NS(lane=object(), failure=None, view=NS(shown_index=0))
    pending = NS(lane=object(), failure=None, view=NS(shown_index=None))
    failed = NS(lane=object(), failure="generator x.onnx: cannot load", view=NS(shown_index=None))
    unopened = NS(lane=None, failure=None, view=NS(shown_index=None))
    assert lanes_settled(NS(slots=[painted, pending])) is None
    assert lanes_settled(NS(slots=[painted, failed, unopened])) == (1, 2)
    assert lanes_settled(NS(slots=[])) == (0, 0)
