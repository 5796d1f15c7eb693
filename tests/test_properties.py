"""Property-based tests of the parsers a user's files go through (issue 13): for any input, a parser either returns
what the file says or raises InputError with a message naming the file; it never crashes, and what it accepts
round-trips. Examples are few (the machine is shared) and there is no deadline: no test depends on speed.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import tomli_w
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from core.errors import InputError

_FIXTURES = [HealthCheck.function_scoped_fixture]  # tmp_path is reused across examples: each writes its own file
SETTINGS = settings(max_examples=60, deadline=None, database=None, suppress_health_check=_FIXTURES)
FAST = settings(max_examples=200, deadline=None, database=None, suppress_health_check=_FIXTURES)


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# --- session TOML ---------------------------------------------------------------------------------------------

toml_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                         st.text(max_size=12))
path_text = st.one_of(st.sampled_from(["a.wav", "e.onnx", "g.pth", "m.npy", "x", "", " ", "~/e.onnx",
                                       "~nobody_here/e.onnx", "../e.onnx", "dir/", "e.mlpackage", "e.ONNX"]),
                      st.text(max_size=10))
lane = st.fixed_dictionaries(
    {"name": st.one_of(st.text(max_size=6), toml_scalars)},
    optional={"encoder": st.one_of(path_text, toml_scalars), "generator": st.one_of(path_text, toml_scalars),
              "mel": path_text, "scale": st.one_of(st.floats(), st.integers(-5, 5), st.text(max_size=3)),
              "options": st.one_of(st.dictionaries(st.sampled_from(["provider", "threads", "size", "bogus"]),
                                                   toml_scalars, max_size=3), toml_scalars),
              "extra": toml_scalars})
session_dicts = st.fixed_dictionaries(
    {},
    optional={"audio": st.one_of(path_text, toml_scalars), "avatar": st.one_of(path_text, toml_scalars),
              "pad_mode": st.one_of(st.sampled_from(["constant", "reflect", "wrap"]), toml_scalars),
              "reference": st.one_of(st.text(max_size=6), toml_scalars), "title": toml_scalars,
              "lanes": st.one_of(st.lists(lane, max_size=3), toml_scalars), "unknown": toml_scalars})


def _toml_safe(value):
    """tomli_w cannot write None: drop those keys (a missing key is what a user's file would have)."""
    if isinstance(value, dict):
        return {k: _toml_safe(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_toml_safe(v) for v in value if v is not None]
    return value


@SETTINGS
@given(data=session_dicts, check=st.booleans())
def test_any_session_table_loads_or_names_its_problems(tmp_path, data, check):
    from pipeline.session import Session, load_session

    path = tmp_path / "s.toml"
    path.write_text(tomli_w.dumps(_toml_safe(data)), encoding="utf-8")
    try:
        session = load_session(path, check_files=check)
    except InputError as error:
        assert str(path) in str(error)
        return
    assert isinstance(session, Session) and session.lanes
    assert all(lane.scale > 0 and math.isfinite(lane.scale) for lane in session.lanes)


@SETTINGS
@given(text=st.text(max_size=300))
def test_any_text_as_a_session_is_a_session_or_a_message(tmp_path, text):
    from pipeline.session import load_session

    path = tmp_path / "s.toml"
    path.write_text(text, encoding="utf-8")
    try:
        load_session(path, check_files=False)
    except InputError as error:
        assert str(path) in str(error)


@SETTINGS
@given(names=st.lists(st.text(alphabet="abcdefgh _-é", min_size=1, max_size=8), min_size=1, max_size=3, unique=True),
       scales=st.lists(st.floats(0.01, 1000), min_size=3, max_size=3))
def test_a_valid_session_round_trips_through_save(tmp_path, names, scales):
    from pipeline.session import load_session, save_session, session_from_dict

    assume(all(n.strip() for n in names))
    for name in ("a.wav", "e.onnx", "g.onnx"):
        (tmp_path / name).write_bytes(b"x")
    data = {"audio": "a.wav", "lanes": [{"name": n, "encoder": "e.onnx", "generator": "g.onnx", "scale": s}
                                        for n, s in zip(names, scales)]}
    session = session_from_dict(data, base_dir=tmp_path)
    saved = save_session(session, tmp_path / "s.toml")
    again = load_session(tmp_path / "s.toml")
    def facts(lanes):
        return [(lane.name, lane.encoder, lane.generator, lane.scale) for lane in lanes]

    assert facts(again.lanes) == facts(saved.lanes)


# --- landmarks (.lms) -----------------------------------------------------------------------------------------

coordinate = st.floats(-1e5, 1e5, allow_nan=False, width=32)


@SETTINGS
@given(points=st.lists(st.tuples(coordinate, coordinate), min_size=110, max_size=110),
       separator=st.sampled_from([" ", "\t", "  "]), trailing=st.sampled_from(["", "\n", "\n\n  \n"]))
def test_lms_of_110_points_read_as_the_references_float32_int32_cast(tmp_path, points, separator, trailing):
    from pipeline.avatar import read_lms

    text = "\n".join(f"{x!r}{separator}{y!r}" for x, y in points) + trailing
    lms = read_lms(_write(tmp_path, "0.lms", text.encode()))
    expected = np.array([[np.float32(x), np.float32(y)] for x, y in points], dtype=np.float32).astype(np.int32)
    assert lms.shape == (110, 2)
    np.testing.assert_array_equal(lms, expected)


@SETTINGS
@given(data=st.binary(max_size=2000))
def test_any_bytes_as_lms_are_points_or_a_message(tmp_path, data):
    from pipeline.avatar import read_lms
    from pipeline.crop import crop_box_from_landmarks

    path = _write(tmp_path, "0.lms", data)
    try:
        lms = read_lms(path)
    except InputError as error:
        assert str(path) in str(error)
        return
    assert lms.shape == (110, 2) and np.abs(lms).max() < 2**31
    crop_box_from_landmarks(lms)


# --- crop_rectangles.json -------------------------------------------------------------------------------------

json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=4)),
                           lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                   st.dictionaries(st.text(max_size=3), inner, max_size=4)),
                           max_leaves=12)


@SETTINGS
@given(rects=st.lists(st.lists(st.integers(-10**6, 10**6), min_size=4, max_size=4), min_size=1, max_size=5))
def test_valid_rectangles_are_read_as_written(tmp_path, rects):
    from pipeline.avatar import _boxes_from_rectangles

    path = _write(tmp_path, "crop_rectangles.json",
                  json.dumps({str(i): {"rect": r} for i, r in enumerate(rects)}).encode())
    assert [box.as_list() for box in _boxes_from_rectangles(path, len(rects))] == rects


rect_entries = st.one_of(json_values, st.fixed_dictionaries({"rect": json_values}))


@SETTINGS
@given(data=st.one_of(json_values, st.dictionaries(st.sampled_from(["0", "1", "2", "x"]), rect_entries, max_size=4)),
       count=st.integers(1, 3))
def test_any_json_as_rectangles_is_boxes_or_a_message(tmp_path, data, count):
    from pipeline.avatar import _boxes_from_rectangles

    path = _write(tmp_path, "crop_rectangles.json", json.dumps(data).encode())
    try:
        boxes = _boxes_from_rectangles(path, count)
    except InputError as error:
        assert str(path) in str(error)
        return
    assert len(boxes) == count


# --- dump loaders ---------------------------------------------------------------------------------------------

@SETTINGS
@given(array=hnp.arrays(st.sampled_from([np.float32, np.float16, np.float64]),
                        st.tuples(st.integers(1, 6), st.just(512)),
                        elements=st.floats(-1e4, 1e4, width=16)),
       suffix=st.sampled_from([".npy", ".npz", ".bin"]))
def test_feature_dumps_load_what_was_saved(tmp_path, array, suffix):
    from pipeline.dumps import load_feature_dump

    path = tmp_path / f"f{suffix}"
    if suffix == ".npy":
        np.save(path, array)
    elif suffix == ".npz":
        np.savez(path, features=array)
    else:
        array.astype("<f4").tofile(path)
    np.testing.assert_array_equal(load_feature_dump(path), array.astype(np.float32))


@SETTINGS
@given(frames=st.integers(1, 200).filter(lambda t: t != 80), transposed=st.booleans())
def test_mel_dumps_load_as_t_by_80_either_way_round(tmp_path, frames, transposed):
    from pipeline.dumps import load_mel_dump

    mel = np.arange(frames * 80, dtype=np.float32).reshape(frames, 80)
    np.save(tmp_path / "m.npy", mel.T if transposed else mel)
    np.testing.assert_array_equal(load_mel_dump(tmp_path / "m.npy"), mel)


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@SETTINGS
@given(data=st.one_of(st.binary(max_size=600),
                      st.builds(lambda cut, extra: _npy_bytes(np.zeros((4, 512), np.float32))[:cut] + extra,
                                st.integers(0, 9000), st.binary(max_size=20)),
                      st.builds(lambda shape, extra: (b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': "
                                                      b"False, 'shape': " + repr(tuple(shape)).encode() + b", }")
                                .ljust(128 - 1, b" ") + b"\n" + extra,
                                st.lists(st.integers(0, 10**12), max_size=3), st.binary(max_size=64))),
       suffix=st.sampled_from([".npy", ".npz", ".bin"]))
def test_any_bytes_as_a_dump_are_an_array_or_a_message(tmp_path, data, suffix):
    from pipeline.dumps import FeatureDump, OutputDump, open_mel_dump

    path = _write(tmp_path, "d" + suffix, data)
    for load in (lambda: FeatureDump(path), lambda: FeatureDump(path, num_windows=2), lambda: open_mel_dump(path),
                 lambda: OutputDump(path)):
        try:
            load()
        except InputError as error:
            assert str(path) in str(error) or path.name in str(error)


# --- --frames -------------------------------------------------------------------------------------------------

bound = st.one_of(st.none(), st.integers(-300, 300))


@FAST
@given(start=bound, stop=bound, total=st.integers(1, 250))
def test_frames_are_pythons_slice_when_in_range_and_a_message_otherwise(start, stop, total):
    from pipeline.lane import parse_frame_range

    text = f"{'' if start is None else start}:{'' if stop is None else stop}"
    in_range = all(b is None or -total <= b <= total for b in (start, stop))
    expected = range(total)[slice(start, stop)]
    if in_range and len(expected):
        assert parse_frame_range(text, total) == expected
    else:
        with pytest.raises(InputError, match=f"--frames '{text}'.*0..{total - 1}"):
            parse_frame_range(text, total)


@FAST
@given(text=st.text(max_size=12), total=st.integers(0, 50))
def test_any_frames_text_is_a_range_or_a_message(text, total):
    from pipeline.lane import parse_frame_range

    try:
        frames = parse_frame_range(text, total)
    except InputError as error:
        assert "--frames" in str(error)
        return
    assert all(0 <= i < total for i in frames)


@FAST
@given(start=st.integers(1, 999), stop=st.one_of(st.none(), st.integers(-999, 999)), other=st.text(max_size=6))
def test_negative_frame_ranges_reach_the_parser_without_the_equals_form(start, stop, other):
    from cli.main import join_negative_values

    value = f"-{start}:{'' if stop is None else stop}"
    assert join_negative_values(["dump", "--frames", value, "--out", "x.npy"]) == \
        ["dump", f"--frames={value}", "--out", "x.npy"]
    if not other.startswith("-"):  # anything else is left to argparse as it was
        assert join_negative_values(["dump", "--frames", other]) == ["dump", "--frames", other]
    assert join_negative_values(["dump", "--out", value]) == ["dump", "--out", value]


# --- audio headers --------------------------------------------------------------------------------------------

@SETTINGS
@given(rate=st.integers(1, 2_000_000), channels=st.integers(1, 8), frames=st.integers(0, 4000))
def test_any_wav_header_rate_gives_audio_or_a_message_naming_the_limit(tmp_path, rate, channels, frames):
    import struct

    from core import limits
    from pipeline.audio import load_audio

    data = bytes(frames * channels * 2)
    header = (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt " +
              struct.pack("<IHHIIHH", 16, 1, channels, rate, (rate * channels * 2) & 0xFFFFFFFF, channels * 2, 16) +
              b"data" + struct.pack("<I", len(data)))
    path = _write(tmp_path, "a.wav", header + data)
    try:
        audio = load_audio(path)
    except InputError as error:
        assert str(path) in str(error)
        if not limits.MIN_SAMPLE_RATE <= rate <= limits.MAX_SAMPLE_RATE:
            assert f"found {rate} Hz" in str(error) and "core/limits.py" in str(error)
        return
    assert limits.MIN_SAMPLE_RATE <= rate <= limits.MAX_SAMPLE_RATE
    assert audio.samples.dtype == np.float32 and audio.samples.ndim == 1
