"""Prepared generator inputs are shared by the lanes of a session (one cache per Avatar, pipeline/input_cache.py).

The soak found each lane kept its own copy of every template's prepared input: 100 templates x 4 lanes x 0.7 MB of
identical arrays. Lanes drawing on one Avatar now get the very same read-only arrays.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from backends.registry import MODELS
from pipeline.audio import load_audio
from pipeline.avatar import Avatar
from pipeline.input_cache import PreparedInputs, inputs_for
from pipeline.lane import Lane, open_lanes
from pipeline.session import LaneSpec, Session

try:  # prepare_input moves from pipeline.avatar to pipeline.crop
    from pipeline.crop import prepare_input
except ImportError:  # pragma: no cover - before the split
    from pipeline.avatar import prepare_input

DEMO = Path(__file__).resolve().parents[1] / "resources" / "demo"
MODELS_DIR = DEMO / "models"


@pytest.fixture(scope="module")
def lanes() -> list[Lane]:
    specs = [LaneSpec(name, MODELS_DIR / "audio_encoder.onnx", MODELS_DIR / "generator.onnx",
                      options={"provider": "cpu"}) for name in ("a", "b")]
    session = Session(audio=DEMO / "aud.wav", avatar=DEMO / "avatar", lanes=specs, path=None)
    opened = open_lanes(session, models=MODELS)
    assert all(isinstance(lane, Lane) for lane in opened), opened
    assert opened[0].avatar is opened[1].avatar
    return opened  # type: ignore[return-value]


def test_two_lanes_of_one_session_get_the_same_input_object(lanes: list[Lane]) -> None:
    a, b = lanes
    for i in (0, 1, 5):
        assert a.generator_input(i) is b.generator_input(i)
    k = a.template_index(3)
    period = 2 * (a.avatar.num_templates - 1)
    assert b.template_index(3 + period) == k
    assert a.generator_input(3) is b.generator_input(3 + period)  # keyed by template, not by output frame


def test_shared_inputs_are_read_only(lanes: list[Lane]) -> None:
    prepared = lanes[0].generator_input(2)
    assert not prepared.tensor.flags.writeable and not prepared.resized_crop.flags.writeable
    with pytest.raises(ValueError):
        prepared.tensor[0, 0, 0] = 1.0
    with pytest.raises(ValueError):
        prepared.resized_crop[0, 0, 0] = 0


def test_shared_inputs_equal_prepare_input_called_directly(lanes: list[Lane]) -> None:
    lane = lanes[1]
    avatar = lane.avatar
    for i in (0, 4, 7):
        k = lane.template_index(i)
        expected = prepare_input(avatar.frame(k), avatar.crop_box(k), lane.image_size)
        prepared = lane.generator_input(i)
        np.testing.assert_array_equal(prepared.tensor, expected.tensor)
        np.testing.assert_array_equal(prepared.resized_crop, expected.resized_crop)
        assert prepared.tensor.dtype == expected.tensor.dtype and prepared.resized_crop.dtype == np.uint8


def test_lanes_render_from_read_only_inputs(lanes: list[Lane]) -> None:
    a, b = lanes
    single = [a.frame(i) for i in (6, 7)]
    batched = b.frames([6, 7])
    for one, many in zip(single, batched):
        np.testing.assert_array_equal(one.image, many.image)
        np.testing.assert_array_equal(one.crop, many.crop)


def test_a_lane_of_another_avatar_has_its_own_cache(lanes: list[Lane]) -> None:
    other = Lane(lanes[0].spec, load_audio(DEMO / "aud.wav"), Avatar.open(DEMO / "avatar"), models=MODELS)
    assert inputs_for(other.avatar) is not inputs_for(lanes[0].avatar)
    assert other.generator_input(1) is not lanes[0].generator_input(1)
    np.testing.assert_array_equal(other.generator_input(1).tensor, lanes[0].generator_input(1).tensor)


def test_the_cache_is_bounded_in_bytes() -> None:
    avatar = Avatar.open(DEMO / "avatar")
    one = prepare_input(avatar.frame(0), avatar.crop_box(0), 160)
    per_entry = one.tensor.nbytes + one.resized_crop.nbytes
    cache = PreparedInputs(max_bytes=3 * per_entry)
    for k in range(5):
        cache.get(k, 160, lambda k=k: prepare_input(avatar.frame(k), avatar.crop_box(k), 160))
    assert len(cache) == 3 and cache.nbytes == 3 * per_entry
    calls = []
    cache.get(4, 160, lambda: calls.append(4))  # the most recent entry is kept: no preparation
    assert calls == []


def test_threads_preparing_one_key_share_one_object() -> None:
    avatar = Avatar.open(DEMO / "avatar")
    cache = PreparedInputs()
    start = threading.Barrier(4)
    results = []

    def work() -> None:
        start.wait()
        results.append(cache.get(1, 160, lambda: prepare_input(avatar.frame(1), avatar.crop_box(1), 160)))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and all(r is results[0] for r in results) and len(cache) == 1
