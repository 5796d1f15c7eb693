"""The session file: relative paths, one message per problem, atomic save, round trip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.errors import InputError, SessionError
from pipeline.session import LaneSpec, Session, load_session, save_session


def _files(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "speech.wav").write_bytes(b"RIFF")
    (tmp_path / "avatar").mkdir()
    (tmp_path / "models" / "enc.onnx").write_bytes(b"x")
    (tmp_path / "models" / "gen.onnx").write_bytes(b"x")
    (tmp_path / "feats.npy").write_bytes(b"x")


GOOD = """
audio = "speech.wav"
avatar = "avatar"
reference = "dump"

[[lanes]]
name = "onnx"
encoder = "models/enc.onnx"
generator = "models/gen.onnx"
scale = 2.5
[lanes.options]
provider = "cpu"

[[lanes]]
name = "dump"
encoder = "feats.npy"
"""


def test_relative_paths_resolve_against_the_session_file_not_the_working_directory(tmp_path, monkeypatch):
    _files(tmp_path)
    (tmp_path / "s.toml").write_text(GOOD)
    monkeypatch.chdir("/")
    s = load_session(tmp_path / "s.toml")
    assert s.audio == (tmp_path / "speech.wav").resolve()
    assert s.avatar == (tmp_path / "avatar").resolve()
    assert s.lanes[0].encoder == (tmp_path / "models" / "enc.onnx").resolve()
    assert s.lanes[0].generator == (tmp_path / "models" / "gen.onnx").resolve()
    assert s.lanes[0].scale == 2.5
    assert s.lanes[0].options == {"provider": "cpu"}
    assert s.lanes[1].generator is None and s.lanes[1].scale == 1.0
    assert s.reference_index == 1


def test_every_problem_is_reported_at_once_with_key_value_and_expectation(tmp_path):
    _files(tmp_path)
    (tmp_path / "bad.toml").write_text(
        """
audio = "missing.wav"
pad_mode = "zeros"
colour = "blue"
[[lanes]]
name = "a"
encoder = "models/enc.onnx"
scale = -1
[[lanes]]
name = "a"
encoder = "weights.txt"
"""
    )
    with pytest.raises(SessionError) as info:
        load_session(tmp_path / "bad.toml")
    problems = info.value.problems
    text = "\n".join(problems)
    assert len(problems) == 6, text
    assert "audio = 'missing.wav'" in text and "expected an existing path" in text
    assert "pad_mode = 'zeros'" in text and "'constant'" in text
    assert "unknown key 'colour'" in text
    assert "scale = -1" in text and "> 0" in text
    assert "weights.txt" in text and ".onnx" in text


def test_duplicate_lane_names_are_rejected(tmp_path):
    _files(tmp_path)
    (tmp_path / "dup.toml").write_text(
        'audio = "speech.wav"\n[[lanes]]\nname = "x"\nencoder = "feats.npy"\n[[lanes]]\nname = "x"\nencoder = "feats.npy"\n'
    )
    with pytest.raises(SessionError) as info:
        load_session(tmp_path / "dup.toml")
    assert info.value.problems == ["lanes[1].name = 'x': expected a unique name, this one is used twice"]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("audio = \n", "not valid TOML"),
        ('audio = "speech.wav"\n', "lanes: missing"),
        ('audio = "speech.wav"\nlanes = []\n', "lanes: empty"),
        ('audio = "speech.wav"\nlanes = [1, 2]\n', "expected an array of tables"),
        ('audio = "speech.wav"\n[[lanes]]\nname = "a"\n', "lanes[0] (a).encoder: missing"),
        ('audio = "speech.wav"\nreference = "nope"\n[[lanes]]\nname = "a"\nencoder = "feats.npy"\n', "one of 'a'"),
        ('audio = "avatar"\n[[lanes]]\nname = "a"\nencoder = "feats.npy"\n', "expected a file, found a folder"),
    ],
)
def test_malformed_sessions_name_the_problem(tmp_path, text, needle):
    _files(tmp_path)
    (tmp_path / "s.toml").write_text(text)
    with pytest.raises(SessionError) as info:
        load_session(tmp_path / "s.toml")
    assert needle in str(info.value)


def test_missing_and_binary_session_files(tmp_path):
    with pytest.raises(SessionError, match="session file not found"):
        load_session(tmp_path / "nope.toml")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00\x01")
    with pytest.raises(SessionError, match="UTF-8"):
        load_session(tmp_path / "bin.toml")


def test_check_files_false_lets_the_window_open_a_session_with_a_missing_model(tmp_path):
    _files(tmp_path)
    (tmp_path / "s.toml").write_text('audio = "speech.wav"\n[[lanes]]\nname = "a"\nencoder = "gone.onnx"\n')
    with pytest.raises(SessionError):
        load_session(tmp_path / "s.toml")
    s = load_session(tmp_path / "s.toml", check_files=False)
    assert s.lanes[0].encoder == (tmp_path / "gone.onnx").resolve()


def test_save_round_trips_with_relative_paths_and_scales(tmp_path):
    _files(tmp_path)
    (tmp_path / "s.toml").write_text(GOOD)
    s = load_session(tmp_path / "s.toml")
    s.lanes[0].scale = 200.0
    out = tmp_path / "saved.toml"
    saved = save_session(s, out)
    text = out.read_text()
    assert 'encoder = "models/enc.onnx"' in text  # relative, so the folder can be moved or shared
    assert str(tmp_path) not in text
    again = load_session(out)
    assert again.lanes[0].scale == 200.0
    assert [lane.name for lane in again.lanes] == ["onnx", "dump"]
    assert again.reference == "dump" and saved.path == out.resolve()


def test_save_is_atomic_and_leaves_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    _files(tmp_path)
    target = tmp_path / "keep.toml"
    target.write_text("original")
    s = Session(audio=tmp_path / "speech.wav", lanes=[LaneSpec("a", tmp_path / "feats.npy")])

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(InputError, match="nothing was written"):
        save_session(s, target)
    assert target.read_text() == "original"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".keep")) == []
