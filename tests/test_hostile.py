"""Hostile and broken inputs, full disks and endless models (issue 13): the app says what is wrong and stays safe.

Each test names the defect it pins. Most run `python app.py ...` in a subprocess, as a user does; the few that need
a fault injected (a full disk) call the same entry point in-process with the fault monkeypatched in. Hangs are caught
with a generous subprocess timeout (the assertion is that the process ended with the right message, never a speed).
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import stat
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from core import limits, safe_write
from core.errors import InputError
from tests.builders.onnx_models import make_endless_encoder

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "resources" / "demo"
AUDIO = DEMO / "aud.wav"
ENCODER = DEMO / "models" / "audio_encoder.onnx"
GENERATOR = DEMO / "models" / "generator.onnx"
HANG_TIMEOUT = 120  # seconds: far beyond what a refused input takes, even on a loaded machine


def app(*args: str | Path, cwd: Path, umask: int | None = None, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", XDG_STATE_HOME=str(cwd / "state"))

    def _umask() -> None:
        if umask is not None:
            os.umask(umask)

    return subprocess.run([sys.executable, str(ROOT / "app.py"), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env=env, preexec_fn=_umask)


def run_inprocess(argv: list[str], capsys) -> tuple[int, str]:
    from cli.main import run

    code = run(argv)
    return code, capsys.readouterr().err


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The message a user sees: exit 2, one 'error:' line, no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 2, f"expected exit 2, found {result.returncode}: {result.stderr}"
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def dump_mel(cwd: Path, *extra: str | Path, audio: str | Path = AUDIO) -> subprocess.CompletedProcess[str]:
    return app("dump", "--audio", audio, "--stage", "mel", *extra, cwd=cwd)


def session_file(folder: Path, lanes: str, audio: str | Path = AUDIO, name: str = "s.toml") -> Path:
    path = folder / name
    path.write_text(f'audio = "{audio}"\n' + textwrap.dedent(lanes), encoding="utf-8")
    return path


# --- writes ------------------------------------------------------------------------------------------------------

def test_dump_force_replaces_a_symlink_itself_and_never_writes_into_its_target(tmp_path):
    target = tmp_path / "precious.npy"
    target.write_bytes(b"keep me")
    (tmp_path / "link.npy").symlink_to(target)
    result = dump_mel(tmp_path, "--out", "link.npy", "--force")
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == b"keep me"
    assert not (tmp_path / "link.npy").is_symlink()
    assert np.load(tmp_path / "link.npy").shape[1] == 80


def test_json_force_replaces_a_symlink_itself(tmp_path):
    target = tmp_path / "precious.json"
    target.write_text("{}")
    (tmp_path / "out.json").symlink_to(target)
    result = app("inspect", ENCODER, "--json", "out.json", "--force", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert target.read_text() == "{}"
    assert not (tmp_path / "out.json").is_symlink()
    assert json.loads((tmp_path / "out.json").read_text())["format"]


def test_a_symlink_without_force_is_refused_naming_the_link(tmp_path):
    (tmp_path / "link.npy").symlink_to(tmp_path / "elsewhere.npy")
    line = one_error_line(dump_mel(tmp_path, "--out", "link.npy"))
    assert "symbolic link" in line and "link.npy" in line
    assert not (tmp_path / "elsewhere.npy").exists()


def test_a_device_is_never_replaced_even_with_force():
    # mknod needs privileges a test must not assume; /dev/null is a character device every POSIX system has.
    with pytest.raises(InputError, match="found a character device"):
        safe_write.check_output_path("/dev/null", force=True, what="--out")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_a_fifo_as_out_is_refused_with_force_and_named(tmp_path):
    os.mkfifo(tmp_path / "pipe.npy")
    line = one_error_line(dump_mel(tmp_path, "--out", "pipe.npy", "--force"))
    assert "FIFO" in line and "pipe.npy" in line
    assert stat.S_ISFIFO(os.lstat(tmp_path / "pipe.npy").st_mode)


def test_new_output_files_get_the_umask_mode_not_0600(tmp_path):
    result = app("dump", "--audio", AUDIO, "--stage", "mel", "--out", "new.npy", cwd=tmp_path, umask=0o022)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(os.stat(tmp_path / "new.npy").st_mode) == 0o644


def test_force_keeps_an_existing_files_mode(tmp_path):
    out = tmp_path / "old.json"
    out.write_text("{}")
    out.chmod(0o640)
    result = app("inspect", ENCODER, "--json", "old.json", "--force", cwd=tmp_path, umask=0o077)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o640
    assert json.loads(out.read_text())["format"]


@pytest.mark.parametrize("option", ["--out", "--json"])
def test_an_existing_folder_as_output_with_force_is_a_message(tmp_path, option):
    (tmp_path / "x.npy").mkdir()
    (tmp_path / "x.json").mkdir()
    if option == "--out":
        result = dump_mel(tmp_path, "--out", "x.npy", "--force")
    else:
        result = app("inspect", ENCODER, "--json", "x.json", "--force", cwd=tmp_path)
    line = one_error_line(result)
    assert "found a folder" in line


def test_output_is_checked_before_any_input_is_read(tmp_path):
    # The audio does not exist: if the output were checked only after the work, the message would be the audio's.
    (tmp_path / "exists.npy").write_bytes(b"old")
    line = one_error_line(app("dump", "--audio", "missing.wav", "--stage", "mel", "--out", "exists.npy", cwd=tmp_path))
    assert "exists.npy already exists" in line
    (tmp_path / "exists.json").write_text("{}")
    line = one_error_line(app("report", "missing.toml", "--json", "exists.json", cwd=tmp_path))
    assert "exists.json already exists" in line


def _enospc(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_during_dump_leaves_the_old_file_and_no_partial_file(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out.npy"
    out.write_bytes(b"the old dump")

    def full_save(handle, array, *args, **kwargs):
        handle.write(b"\x93NUMPY partial")
        _enospc()

    monkeypatch.setattr(np, "save", full_save)
    code, err = run_inprocess(["dump", "--audio", str(AUDIO), "--stage", "mel", "--out", str(out), "--force"], capsys)
    assert code == 2, err
    assert "disk is full" in err and str(out) in err
    assert out.read_bytes() == b"the old dump"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.npy"]


def test_full_disk_during_report_json_is_a_message(tmp_path, monkeypatch, capsys):
    session = session_file(tmp_path, f"""
        [[lanes]]
        name = "a"
        encoder = "{ENCODER}"
        """)
    monkeypatch.setattr(pathlib.Path, "write_text", _enospc)
    code, err = run_inprocess(["report", str(session), "--json", str(tmp_path / "r.json")], capsys)
    assert code == 2, err
    assert "disk is full" in err and "r.json" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.toml"]


# --- crashes that must be messages ----------------------------------------------------------------------------

def test_a_symlink_loop_named_in_a_session_is_a_message(tmp_path):
    (tmp_path / "loop.wav").symlink_to(tmp_path / "loop.wav")
    session = session_file(tmp_path, f"""
        [[lanes]]
        name = "a"
        encoder = "{ENCODER}"
        """, audio="loop.wav")
    line = one_error_line(app("report", session, cwd=tmp_path))
    assert "loop.wav" in line and "symbolic link loop" in line


def test_an_audio_path_that_is_not_utf8_is_read(tmp_path):
    name = os.fsdecode(b"\xff\xfespeech.wav")
    (tmp_path / name).write_bytes(AUDIO.read_bytes())
    result = subprocess.run([sys.executable, str(ROOT / "app.py"), "dump", "--audio", name, "--stage", "mel",
                             "--out", "m.npy"], capture_output=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert np.load(tmp_path / "m.npy").shape[1] == 80


def test_a_npy_whose_header_declares_1e11_rows_is_a_message(tmp_path):
    header = {"descr": "<f4", "fortran_order": False, "shape": (10**11, 512)}
    with open(tmp_path / "huge.npy", "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        handle.write(bytes(4096))
    line = one_error_line(app("dump", "--audio", AUDIO, "--encoder", "huge.npy", "--stage", "features",
                              "--out", "f.npy", cwd=tmp_path))
    assert "huge.npy" in line and "10^11" not in line and "100000000000" in line


@pytest.mark.parametrize("options, model, message", [
    ('threads = "many"', ENCODER, "threads"),
    ('threads = "many"', DEMO / "models" / "audio_visual_encoder.pth", "threads"),
    ('size = "abc"', DEMO / "models" / "audio_visual_encoder.pth", "size"),
    ("threads = 1.5", ENCODER, "threads"),
    ('provider = 3', ENCODER, "provider"),
])
def test_option_values_of_the_wrong_type_fail_the_lane_with_a_message(tmp_path, options, model, message):
    pytest.importorskip("torch")
    session = session_file(tmp_path, f"""
        [[lanes]]
        name = "ok"
        encoder = "{ENCODER}"

        [[lanes]]
        name = "bad"
        encoder = "{model}"
        [lanes.options]
        {options}
        """)
    result = app("report", session, cwd=tmp_path)
    assert "Traceback" not in result.stderr and result.returncode == 2, result.stderr
    assert f"{message} = " in result.stdout + result.stderr


# --- hangs ----------------------------------------------------------------------------------------------------

def test_a_fifo_as_audio_is_refused_up_front(tmp_path):
    os.mkfifo(tmp_path / "speech.wav")
    result = app("dump", "--audio", "speech.wav", "--stage", "mel", "--out", "m.npy", cwd=tmp_path,
                 timeout=HANG_TIMEOUT)
    line = one_error_line(result)
    assert "speech.wav" in line and "found a FIFO (named pipe)" in line


def test_a_fifo_as_the_session_is_refused_up_front(tmp_path):
    os.mkfifo(tmp_path / "s.toml")
    line = one_error_line(app("report", "s.toml", cwd=tmp_path, timeout=HANG_TIMEOUT))
    assert "s.toml" in line and "found a FIFO (named pipe)" in line


def test_a_fifo_named_as_audio_in_a_session_is_named(tmp_path):
    os.mkfifo(tmp_path / "speech.wav")
    session = session_file(tmp_path, f"""
        [[lanes]]
        name = "a"
        encoder = "{ENCODER}"
        """, audio="speech.wav")
    line = one_error_line(app("report", session, cwd=tmp_path, timeout=HANG_TIMEOUT))
    assert "found a FIFO (named pipe)" in line and "directory" not in line


def test_time_limit_stops_an_endless_onnx_model_with_a_message(tmp_path):
    make_endless_encoder(tmp_path / "endless.onnx")
    result = app("dump", "--audio", AUDIO, "--encoder", "endless.onnx", "--stage", "features", "--out", "f.npy",
                 "--time-limit", "2", cwd=tmp_path, timeout=HANG_TIMEOUT)
    line = one_error_line(result)
    assert "--time-limit 2" in line and "stopped" in line
    assert not (tmp_path / "f.npy").exists()


def test_time_limit_must_be_a_positive_number(tmp_path):
    result = dump_mel(tmp_path, "--out", "m.npy", "--time-limit", "soon")
    assert result.returncode == 2 and "--time-limit" in result.stderr and "Traceback" not in result.stderr


# --- unbounded resources --------------------------------------------------------------------------------------

def _wav_header(rate: int, frames: int, channels: int = 1) -> bytes:
    data_bytes = frames * channels * 2
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVEfmt " +
            struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * channels * 2, channels * 2, 16) +
            b"data" + struct.pack("<I", data_bytes))


def test_a_wav_whose_header_says_1_hz_is_refused_before_decoding(tmp_path):
    (tmp_path / "one_hz.wav").write_bytes(_wav_header(1, 16000) + bytes(32000))
    line = one_error_line(dump_mel(tmp_path, "--out", "m.npy", audio="one_hz.wav"))
    assert "one_hz.wav" in line and "1 Hz" in line and "core/limits.py" in line


def test_audio_longer_than_the_limit_is_refused_naming_the_limit(tmp_path, monkeypatch):
    from pipeline.audio import load_audio

    sf.write(tmp_path / "a.wav", np.zeros(16000, np.float32), 16000)
    monkeypatch.setattr(limits, "MAX_AUDIO_SECONDS", 0.5)
    with pytest.raises(limits.LimitError, match=r"a\.wav.*more than the limit of 0\.000138889 hours"):
        load_audio(tmp_path / "a.wav")


def test_a_20000x20000_png_template_is_refused_from_its_header(tmp_path):
    from pipeline.avatar import Avatar
    from tests.builders.avatar import make_dataset

    make_dataset(tmp_path / "avatar", frames=2, size=(64, 48))
    image = tmp_path / "avatar" / "full_body_img" / "1.jpg"
    image.unlink()
    (image.parent / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + struct.pack(">II", 20000, 20000)
                                         + b"\x08\x02\x00\x00\x00" + bytes(4))
    with pytest.raises(limits.LimitError, match=r"1\.png: 20000x20000 is 400 megapixels.*limit of 40 megapixels"):
        Avatar.open(tmp_path / "avatar")


def test_a_zip_member_that_inflates_beyond_the_limit_is_refused(tmp_path, monkeypatch):
    from pipeline.dumps import load_mel_dump

    np.savez_compressed(tmp_path / "mel.npz", mel=np.zeros((4000, 80), np.float32))
    monkeypatch.setattr(limits, "MAX_ARRAY_BYTES", 1000)
    with pytest.raises(limits.LimitError, match="mel.npz"):
        load_mel_dump(tmp_path / "mel.npz")


def test_a_truncated_npy_is_named_before_allocating(tmp_path):
    from pipeline.dumps import load_mel_dump

    np.save(tmp_path / "mel.npy", np.zeros((100, 80), np.float32))
    data = (tmp_path / "mel.npy").read_bytes()
    (tmp_path / "mel.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"mel\.npy.*declares \[100, 80\].*32000 bytes.*found 1\d\d\d\d"):
        load_mel_dump(tmp_path / "mel.npy")


# --- messages -------------------------------------------------------------------------------------------------

def test_devices_are_not_called_a_directory(tmp_path):
    from core.filekinds import file_kind

    with pytest.raises(InputError, match="found a character device"):
        file_kind("/dev/null", "encoder")
    line = one_error_line(app("dump", "--audio", "/dev/zero", "--stage", "mel", "--out", "m.npy", cwd=tmp_path,
                              timeout=HANG_TIMEOUT))
    assert "found a character device" in line


def test_a_symlinked_model_takes_its_kind_from_the_links_name(tmp_path):
    # The Hugging Face cache: snapshots/<rev>/enc.onnx -> ../../blobs/<hash>, a target without a suffix.
    (tmp_path / "blobs").mkdir()
    (tmp_path / "snap").mkdir()
    (tmp_path / "blobs" / "9f2c01ab").write_bytes(ENCODER.read_bytes())
    (tmp_path / "snap" / "enc.onnx").symlink_to("../blobs/9f2c01ab")
    session = session_file(tmp_path, """
        [[lanes]]
        name = "hf"
        encoder = "snap/enc.onnx"
        """)
    result = app("report", session, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "no extension" not in result.stderr


def test_pth_errors_are_one_line_without_torchs_advice(tmp_path):
    torch = pytest.importorskip("torch")

    torch.save({"weights": pathlib.PurePosixPath("any class at all")}, tmp_path / "pickle.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    for name, expected in (("pickle.pth", "refused"), ("empty.pth", "empty file")):
        line = one_error_line(app("dump", "--audio", AUDIO, "--encoder", name, "--stage", "features",
                                  "--out", "f.npy", cwd=tmp_path))
        assert name in line and expected in line, line
        assert "weights_only" not in line and not line.rstrip().endswith("found:")


def test_a_huge_landmark_is_not_printed_as_int64_min(tmp_path):
    from pipeline.avatar import read_lms

    lines = [f"{100 + i} {200 + i}" for i in range(110)]
    lines[31] = "1e30 231"
    (tmp_path / "0.lms").write_text("\n".join(lines))
    with pytest.raises(InputError, match="0.lms") as error:
        read_lms(tmp_path / "0.lms")
    assert "9223372036854775808" not in str(error.value)


def test_frames_out_of_range_are_refused_naming_the_clips_frames(tmp_path):
    line = one_error_line(app("dump", "--audio", AUDIO, "--stage", "tensors", "--encoder", DEMO / "aud_ave.npy",
                              "--frames", "0:99999", "--out", "t.npy", cwd=tmp_path))
    assert "0:99999" in line and "0..322" in line


def test_frames_with_a_negative_start_work_without_the_equals_form(tmp_path):
    result = app("dump", "--audio", AUDIO, "--stage", "tensors", "--encoder", DEMO / "aud_ave.npy",
                 "--frames", "-5:", "--out", "t.npy", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert np.load(tmp_path / "t.npy").shape == (5, 32, 16, 16)


def test_a_mel_dump_that_disagrees_with_the_audio_is_refused(tmp_path):
    np.save(tmp_path / "short.npy", np.zeros((200, 80), np.float32))
    line = one_error_line(app("dump", "--audio", AUDIO, "--mel", "short.npy", "--stage", "windows", "--out", "w.npy",
                              cwd=tmp_path))
    assert "short.npy" in line and "200" in line and "1037" in line


def test_a_home_folder_that_cannot_be_expanded_is_a_session_problem(tmp_path):
    # Found by tools/fuzz (session target): "~g.pth" asks for user g's home, and pathlib raised RuntimeError.
    from pipeline.session import load_session

    session = session_file(tmp_path, f"""
        [[lanes]]
        name = "a"
        encoder = "{ENCODER}"
        generator = "~no_such_user_here/g.pth"
        """)
    with pytest.raises(InputError,
                       match=r"lanes\[0\] \(a\)\.generator = '~no_such_user_here/g.pth': expected a usable path"):
        load_session(session)


# --- the crash log --------------------------------------------------------------------------------------------

def test_an_unexpected_failure_writes_a_crash_log_and_names_it(tmp_path, monkeypatch, capsys):
    import cli.dump

    def broken(*_args, **_kwargs):
        raise ZeroDivisionError("a bug of ours")

    monkeypatch.setattr(cli.dump, "load_audio", broken)
    monkeypatch.setenv("LIPSYNC_COMPARE_LOG_DIR", str(tmp_path / "logs"))
    code, err = run_inprocess(["dump", "--audio", str(AUDIO), "--stage", "mel", "--out", str(tmp_path / "m.npy")],
                              capsys)
    assert code == 1
    logs = list((tmp_path / "logs").iterdir())
    assert len(logs) == 1 and str(logs[0]) in err
    text = logs[0].read_text()
    assert "ZeroDivisionError: a bug of ours" in text
    for name in ("Python: 3.", "onnxruntime: ", "numpy: "):
        assert name in text, f"{logs[0]}: expected a line '{name}...', found:\n{text}"


def test_the_crash_log_goes_to_the_platforms_log_folder(tmp_path, monkeypatch):
    platformdirs = pytest.importorskip("platformdirs")
    from core import crash_log

    monkeypatch.delenv("LIPSYNC_COMPARE_LOG_DIR", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))  # Linux; macOS ignores it (~/Library/Logs)
    assert crash_log.log_dir() == Path(platformdirs.user_log_dir("lipsync-compare", appauthor=False))
    if sys.platform.startswith("linux"):
        assert crash_log.log_dir().is_relative_to(tmp_path)


# --- found by the property tests (tests/test_properties.py) ----------------------------------------------------

def test_a_npy_header_numpy_cannot_tokenize_is_a_message(tmp_path):
    from pipeline.dumps import load_feature_dump

    # numpy parses the header with tokenize, which raised TokenError (neither ValueError nor OSError).
    (tmp_path / "f.npy").write_bytes(b"\x93NUMPY\x01\x00v\x00" + bytes(117) + b"{")
    with pytest.raises(InputError,
                       match=r"f\.npy: not a NumPy \.npy file: expected a \.npy header, found one that cannot be read"):
        load_feature_dump(tmp_path / "f.npy")


def test_a_npy_saved_under_an_npz_name_is_a_message_for_a_generator_dump(tmp_path):
    from pipeline.dumps import OutputDump

    # np.load goes by the magic bytes and returned an array, which `with` then refused (TypeError).
    np.save(tmp_path / "out.npy", np.zeros((2, 3, 8, 8), np.float32))
    (tmp_path / "out.npy").rename(tmp_path / "out.npz")
    with pytest.raises(InputError, match=r"out\.npz: not a NumPy \.npz archive"):
        OutputDump(tmp_path / "out.npz")


def test_a_fifo_named_as_an_onnx_model_is_named_not_called_a_directory(tmp_path):
    from backends.onnx_backend import OnnxEncoder

    os.mkfifo(tmp_path / "enc.onnx")
    with pytest.raises(InputError, match=r"enc\.onnx: expected an \.onnx file, found a FIFO \(named pipe\)"):
        OnnxEncoder(tmp_path / "enc.onnx")


@pytest.mark.parametrize("command", [["inspect", "missing.onnx"], ["diff-weights", "missing.onnx", "other.onnx"]])
def test_inspect_and_diff_weights_check_json_before_reading_models(tmp_path, command):
    (tmp_path / "exists.json").write_text("{}")
    line = one_error_line(app(*command, "--json", "exists.json", cwd=tmp_path))
    assert "exists.json already exists" in line


# --- avatar files that are not files, and text nested without end ---------------------------------------------

@pytest.mark.parametrize("which", ["landmarks/1.lms", "full_body_img/1.jpg"])
def test_a_fifo_inside_an_avatar_is_named_instead_of_blocking(tmp_path, which):
    from tests.builders.avatar import make_dataset

    make_dataset(tmp_path / "avatar", frames=2, size=(64, 48))
    (tmp_path / "avatar" / which).unlink()
    os.mkfifo(tmp_path / "avatar" / which)
    script = ("import sys; sys.path.insert(0, sys.argv[1]); from pipeline.avatar import Avatar; from core.errors "
              "import InputError\ntry:\n    Avatar.open(sys.argv[2])\nexcept InputError as e:\n    print(e)")
    result = subprocess.run([sys.executable, "-c", script, str(ROOT), str(tmp_path / "avatar")], capture_output=True,
                            text=True, timeout=HANG_TIMEOUT)
    assert Path(which).name in result.stdout and "found a FIFO (named pipe)" in result.stdout, result.stderr


def test_json_rectangles_nested_without_end_are_a_message(tmp_path):
    from pipeline.avatar import _boxes_from_rectangles

    (tmp_path / "crop_rectangles.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(InputError, match="crop_rectangles.json: expected JSON"):
        _boxes_from_rectangles(tmp_path / "crop_rectangles.json", 1)


def test_a_session_nested_without_end_is_a_message(tmp_path):
    from pipeline.session import load_session

    (tmp_path / "s.toml").write_text("a = " + "[" * 5000 + "]" * 5000)
    with pytest.raises(InputError, match="s.toml: not valid TOML: nested too deeply"):
        load_session(tmp_path / "s.toml")


# --- found by the fuzzers (tools/fuzz) ---------------------------------------------------------------------------

def test_a_png_header_cut_inside_ihdr_is_unreadable_not_a_crash(tmp_path):
    from pipeline.avatar import image_size

    # struct.error: the 16-byte signature and IHDR tag were there, the width and height were not.
    (tmp_path / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x01\x00\x00")
    assert image_size(tmp_path / "0.png") is None


def test_an_onnx_model_with_a_dimension_name_that_is_not_utf8_is_a_message(tmp_path):
    from backends.onnx_backend import OnnxEncoder

    # The fuzzer's file: the tiny seed encoder with one byte of a dim_param flipped to 0xa6; onnxruntime loads it
    # and then raised UnicodeDecodeError from get_inputs().
    (tmp_path / "enc.onnx").write_bytes(bytes.fromhex(
        "08083aad010a140a036d656c1204666c61742207466c617474656e0a260a04666c61740a067374617274730a04656e64"
        "730a04617865731203656d622205536c696365120474696e792a0f080110073a010042067374617274732a0e08011007"
        "3a0280044204656e64732a0d080110073a01014204617865735a1e0a036d656c12170a15080112110a031201a60a0208"
        "010a0208500802081062170a03656d6212100a0e0801120a0a0312010a420308800442040a00100d"))
    with pytest.raises(InputError, match=r"enc\.onnx: expected tensor and dimension names in UTF-8"):
        OnnxEncoder(tmp_path / "enc.onnx")


def test_an_empty_npy_declaring_a_huge_axis_is_a_message(tmp_path):
    from pipeline.dumps import load_feature_dump

    # Found by tools/fuzz (dumps): shape (0, 10**54) is 0 bytes, but numpy's int64 size arithmetic overflowed.
    with open(tmp_path / "f.npy", "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": "<f4", "fortran_order": False, "shape": (0, 10**54)})
    with pytest.raises(limits.LimitError, match=r"f\.npy: declares shape \[0, 1000000000000000000000000000000000000"):
        load_feature_dump(tmp_path / "f.npy")
