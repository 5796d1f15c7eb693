"""The command line is a contract: shapes, dtypes, JSON keys and exit codes that scripts rely on.

Every test runs `python app.py ...` in a subprocess, exactly as a user or a CI script would, on tiny ONNX models
with non-standard tensor names and a synthetic avatar built here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.builders.avatar import make_dataset
from tests.builders.onnx_models import make_encoder, make_generator, make_wrong_shape_model

ROOT = Path(__file__).resolve().parents[1]


def app(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "app.py"), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=300,
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """Speech-like audio, an avatar, and models whose tensor names no detector could guess."""
    d = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(7)
    sr = 22050
    t = np.arange(int(2.3 * sr)) / sr
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)  # syllable-rate amplitude modulation
    voiced = np.sin(2 * np.pi * 140 * t) + 0.5 * np.sin(2 * np.pi * 280 * t) + 0.3 * np.sin(2 * np.pi * 1100 * t)
    audio = 0.3 * envelope * voiced + 0.01 * rng.standard_normal(t.size)
    sf.write(d / "speech.wav", np.stack([audio, audio * 0.8], axis=1).astype(np.float32), sr, subtype="PCM_16")
    make_dataset(d / "avatar", frames=5, size=(320, 240))
    ref = make_encoder(d / "enc_a.onnx", in_name="melz", out_name="embedding", batch="dynamic")
    make_encoder(d / "enc_small.onnx", in_name="x.1", out_name="y", batch=1, scale=1 / 200)
    make_generator(d / "gen.onnx", size=160, names={"image": "pic", "audio": "snd", "output": "mouthpix"})
    make_wrong_shape_model(d / "classifier.onnx")
    (d / "session.toml").write_text(
        """
audio = "speech.wav"
avatar = "avatar"

[[lanes]]
name = "reference"
encoder = "enc_a.onnx"
generator = "gen.onnx"

[[lanes]]
name = "small"
encoder = "enc_small.onnx"
generator = "gen.onnx"
"""
    )
    return {"dir": d, "ref": ref}  # type: ignore[dict-item]


def test_report_finds_the_scale_error_and_writes_the_documented_json(world):
    d = world["dir"]
    result = app("report", d / "session.toml", "--json", d / "report.json", "--frames", "0:6", "--force")
    assert result.returncode == 3, result.stderr  # a lane that does not match: exit 3 (README, report)
    assert "FAILED" in result.stdout and "scaled copy" in result.stdout
    data = json.loads((d / "report.json").read_text())
    lane_names = [lane["name"] for lane in data["lanes"]]
    assert lane_names == ["reference", "small"]
    for lane in data["lanes"]:
        assert set(lane["features"]) >= {"min", "max", "mean", "std", "median", "p1", "p99", "nan", "inf"}
        assert lane["provenance"]["encoder"]["runtime"] == "onnxruntime"
    by_stage = {c["stage"]: c for c in data["comparisons"]}
    assert set(by_stage) == {"mel", "features", "outputs"}
    for c in data["comparisons"]:
        assert set(c) >= {"lane", "reference", "stage", "max_abs", "mean_abs", "cosine", "scale", "r2"}
    assert by_stage["mel"]["max_abs"] == 0.0 and by_stage["mel"]["passed"]
    # The small encoder is relu(x/200) of the reference's relu(x): exactly 1/200 of it.
    assert by_stage["features"]["scale"] == pytest.approx(1 / 200, rel=1e-4)
    assert by_stage["features"]["r2"] == pytest.approx(1.0, abs=1e-6)
    assert by_stage["features"]["correction"] == pytest.approx(200, rel=1e-4)
    assert by_stage["outputs"]["frames"] == [0, 1, 2, 3, 4, 5]
    assert data["diagnosis"][0]["first_divergent_stage"] == "features"


def test_dump_writes_every_stage_with_the_documented_shapes_and_dtypes(world):
    d = world["dir"]
    common = ["--audio", d / "speech.wav", "--encoder", d / "enc_a.onnx", "--avatar", d / "avatar",
              "--generator", d / "gen.onnx", "--force"]
    info = sf.info(str(d / "speech.wav"))
    samples_16k = int(np.ceil(info.frames * 16000 / info.samplerate))
    T = 1 + samples_16k // 200
    N = int((T - 16) / 80 * 25) + 2
    shapes = {}
    for stage in ("mel", "windows", "features", "tensors"):
        out = d / f"{stage}.npy"
        r = app("dump", *common, "--stage", stage, "--out", out)
        assert r.returncode == 0, r.stderr
        shapes[stage] = np.load(out)
        assert shapes[stage].dtype == np.float32
    assert shapes["mel"].shape == (T, 80)
    assert shapes["windows"].shape == (N, 1, 80, 16)
    assert shapes["features"].shape == (N + 2, 512)
    assert shapes["tensors"].shape == (N + 2, 32, 16, 16)
    # Features are the tiny model's numpy reference applied to the windows, padded by repeating first/last rows.
    expected = world["ref"](shapes["windows"])
    np.testing.assert_allclose(shapes["features"][1:-1], expected, atol=1e-4)
    np.testing.assert_array_equal(shapes["features"][0], shapes["features"][1])
    np.testing.assert_array_equal(shapes["features"][-1], shapes["features"][-2])
    # Tensor i holds feature rows i-8..i+7 (zeros outside), reshaped row-major.
    i = 3
    rows = np.zeros((16, 512), np.float32)
    for r_, src in enumerate(range(i - 8, i + 8)):
        if 0 <= src < N + 2:
            rows[r_] = shapes["features"][src]
    np.testing.assert_array_equal(shapes["tensors"][i], rows.reshape(32, 16, 16))

    for stage, shape, dtype in (("inputs", (4, 6, 160, 160), np.float32), ("crops", (4, 3, 160, 160), np.float32),
                                ("frames", (4, 240, 320, 3), np.uint8)):
        out = d / f"{stage}.npy"
        r = app("dump", *common, "--stage", stage, "--frames", "2:6", "--out", out)
        assert r.returncode == 0, r.stderr
        arr = np.load(out)
        assert arr.shape == shape and arr.dtype == dtype, (stage, arr.shape, arr.dtype)


def test_a_feature_dump_replaces_the_encoder_and_gives_identical_downstream_stages(world):
    d = world["dir"]
    base = ["--audio", d / "speech.wav", "--avatar", d / "avatar", "--generator", d / "gen.onnx", "--force"]
    assert app("dump", *base, "--encoder", d / "enc_a.onnx", "--stage", "features", "--out", d / "f.npy").returncode == 0
    feats = np.load(d / "f.npy")
    feats[1:-1].astype("<f4").tofile(d / "f_unpadded.bin")  # a Go port's raw dump: [N,512], no header
    a = app("dump", *base, "--encoder", d / "enc_a.onnx", "--stage", "crops", "--frames", "0:3", "--out", d / "c1.npy")
    b = app("dump", *base, "--encoder", d / "f_unpadded.bin", "--stage", "crops", "--frames", "0:3", "--out", d / "c2.npy")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    np.testing.assert_array_equal(np.load(d / "c1.npy"), np.load(d / "c2.npy"))


def _bad_inputs(d: Path) -> dict[str, tuple[list, str]]:
    (d / "empty.wav").write_bytes(b"")
    sf.write(d / "zero.wav", np.zeros((0,), np.float32), 16000)
    sf.write(d / "short.wav", np.zeros((1600,), np.float32), 16000)  # 100 ms: shorter than one 16-frame mel window
    (d / "noise.wav").write_bytes(b"this is not audio at all" * 100)
    np.save(d / "narrow.npy", np.ones((40, 256), np.float32))
    audio = ["--audio", d / "speech.wav"]
    return {
        "missing audio": (["--audio", d / "nope.wav", "--stage", "mel"], "nope.wav"),
        "empty file": (["--audio", d / "empty.wav", "--stage", "mel"], "empty.wav"),
        "zero-length wav": (["--audio", d / "zero.wav", "--stage", "mel"], "zero.wav"),
        "shorter than a window": (["--audio", d / "short.wav", "--stage", "mel"], "short.wav"),
        "non-audio bytes": (["--audio", d / "noise.wav", "--stage", "mel"], "noise.wav"),
        "wrong model shape": ([*audio, "--encoder", d / "classifier.onnx", "--stage", "features"], "[1,3,224,224]"),
        "dump of the wrong width": ([*audio, "--encoder", d / "narrow.npy", "--stage", "features"], "512"),
        "missing model": ([*audio, "--encoder", d / "gone.onnx", "--stage", "features"], "gone.onnx"),
        "stage needs encoder": ([*audio, "--stage", "features"], "--encoder"),
    }


@pytest.mark.parametrize(
    "case",
    ["missing audio", "empty file", "zero-length wav", "shorter than a window", "non-audio bytes",
     "wrong model shape", "dump of the wrong width", "missing model", "stage needs encoder"],
)
def test_bad_input_exits_2_with_a_message_that_names_it(world, case):
    d = world["dir"]
    args, needle = _bad_inputs(d)[case]
    result = app("dump", *args, "--out", d / f"bad_{case.replace(' ', '_')}.npy")
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert result.stderr.startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    assert needle in result.stderr, result.stderr
    assert not (d / f"bad_{case.replace(' ', '_')}.npy").exists()


def test_dump_never_replaces_an_existing_file_without_force(world):
    d = world["dir"]
    target = d / "precious.npy"
    target.write_bytes(b"user data")
    r = app("dump", "--audio", d / "speech.wav", "--stage", "mel", "--out", target)
    assert r.returncode == 2 and "already exists" in r.stderr
    assert target.read_bytes() == b"user data"


def test_report_on_a_session_with_a_broken_lane_reports_the_rest_and_exits_2(world):
    d = world["dir"]
    (d / "broken.toml").write_text(
        'audio = "speech.wav"\n[[lanes]]\nname = "ok"\nencoder = "enc_a.onnx"\n'
        '[[lanes]]\nname = "wrong"\nencoder = "classifier.onnx"\n'
    )
    r = app("report", d / "broken.toml")
    assert r.returncode == 2
    assert "wrong" in r.stdout and "FAILED" in r.stdout and "224" in r.stdout
    assert "ok" in r.stdout


def test_usage_errors_exit_2(world):
    assert app("dump").returncode == 2
    assert app("dump", "--audio", "x.wav", "--stage", "nonsense", "--out", "y.npy").returncode == 2
    r = app("no_such_session.toml")
    assert r.returncode == 2 and "not found" in r.stderr
    bad = world["dir"] / "bad.toml"
    bad.write_text('audio = "nope.wav"\n')
    r = app("report", bad)
    assert r.returncode == 2 and "nope.wav" in r.stderr and "lanes" in r.stderr


def test_a_ports_generator_dumps_stand_in_for_the_generator_and_are_compared(world):
    """Raw outputs [F,3,S,S] and final frames [F,H,W,3] from another program replace the generator stage."""
    d = world["dir"]
    base = ["--audio", d / "speech.wav", "--encoder", d / "enc_a.onnx", "--avatar", d / "avatar",
            "--generator", d / "gen.onnx", "--force"]
    assert app("dump", *base, "--stage", "crops", "--out", d / "port_crops.npy").returncode == 0
    assert app("dump", *base, "--stage", "frames", "--out", d / "port_frames.npy").returncode == 0
    frames = np.load(d / "port_frames.npy")
    tampered = frames.copy()
    tampered[5] = 255 - tampered[5]  # a port that got one frame wrong
    np.save(d / "port_frames_bad.npy", tampered)
    (d / "ports.toml").write_text(
        'audio = "speech.wav"\navatar = "avatar"\n'
        '[[lanes]]\nname = "reference"\nencoder = "enc_a.onnx"\ngenerator = "gen.onnx"\n'
        '[[lanes]]\nname = "port crops"\nencoder = "enc_a.onnx"\ngenerator = "port_crops.npy"\n'
        '[[lanes]]\nname = "port frames"\nencoder = "enc_a.onnx"\ngenerator = "port_frames.npy"\n'
        '[[lanes]]\nname = "bad frames"\nencoder = "enc_a.onnx"\ngenerator = "port_frames_bad.npy"\n'
    )
    r = app("report", d / "ports.toml", "--frames", "0:8", "--json", d / "ports.json", "--force")
    assert r.returncode == 3, r.stdout + r.stderr  # "bad frames" does not match
    data = json.loads((d / "ports.json").read_text())
    last = {(c["lane"], c["stage"]): c for c in data["comparisons"]}
    assert last[("port crops", "outputs")]["max_abs"] == 0.0 and last[("port crops", "outputs")]["passed"]
    assert last[("port frames", "frames")]["max_abs"] == 0.0 and last[("port frames", "frames")]["passed"]
    assert not last[("bad frames", "frames")]["passed"] and last[("bad frames", "frames")]["max_abs"] > 100
    assert [d_["first_divergent_stage"] for d_ in data["diagnosis"]] == [None, None, "frames"]
