"""A lane with NaN or Inf is never "a match", and scales float32 cannot carry are refused (issue 8).

Every case runs `python app.py report SESSION --json OUT` in a subprocess, as a CI script would, and asserts the
three things a script reads: the verdict, ``passed`` and the exit code (0 all match, 3 a lane does not, 2 input
error). The bad values are planted here, so their number and place are known independently of the code under test.
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
from tests.builders.onnx_models import make_encoder, make_generator

ROOT = Path(__file__).resolve().parents[1]
FLOAT32_MAX = (2 - 2**-23) * 2.0**127  # IEEE 754 binary32, written out rather than taken from the code under test
FLOAT32_TINY = 2.0**-126


def app(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "app.py"), *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, check=False)  # the exit code is what the tests read


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """Audio, an avatar, a tiny encoder and generator, and the reference's own feature and output dumps."""
    d = tmp_path_factory.mktemp("non_finite")
    sr = 16000
    t = np.arange(int(1.5 * sr)) / sr
    audio = 0.3 * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)) * np.sin(2 * np.pi * 150 * t)
    sf.write(d / "speech.wav", audio.astype(np.float32), sr, subtype="PCM_16")
    make_dataset(d / "avatar", frames=4, size=(320, 240))
    make_encoder(d / "enc.onnx")
    make_generator(d / "gen.onnx", size=160)
    base = ["--audio", d / "speech.wav", "--encoder", d / "enc.onnx", "--avatar", d / "avatar",
            "--generator", d / "gen.onnx", "--force"]
    for stage in ("features", "crops"):
        r = app("dump", *base, "--frames", "0:6", "--stage", stage, "--out", d / f"{stage}.npy")
        assert r.returncode == 0, r.stderr
    return d


def session(d: Path, name: str, lanes: list[dict[str, object]]) -> Path:
    text = 'audio = "speech.wav"\navatar = "avatar"\n'
    for lane in lanes:
        text += "[[lanes]]\n" + "".join(
            f"{key} = {value!r}\n" if isinstance(value, float) else f'{key} = "{value}"\n'
            for key, value in lane.items())
    path = d / f"{name}.toml"
    path.write_text(text)
    return path


REFERENCE = {"name": "reference", "encoder": "enc.onnx", "generator": "gen.onnx"}


def report(d: Path, name: str, lanes: list[dict[str, object]]) -> tuple[subprocess.CompletedProcess[str], dict]:
    out = d / f"{name}.json"
    r = app("report", session(d, name, lanes), "--frames", "0:6", "--json", out, "--force")
    data = json.loads(out.read_text()) if out.exists() else {}
    return r, data


def stages(data: dict, lane: str) -> dict[str, dict]:
    return {c["stage"]: c for c in data["comparisons"] if c["lane"] == lane}


def diagnosis(data: dict, lane: str) -> dict:
    return next(d for d in data["diagnosis"] if d["lane"] == lane)


def test_a_faithful_lane_matches_and_exits_0(world):
    r, data = report(world, "same", [REFERENCE, {"name": "copy", "encoder": "features.npy", "generator": "gen.onnx"}])
    assert r.returncode == 0, r.stdout + r.stderr
    assert all(c["passed"] and c["kind"] == "match" for c in stages(data, "copy").values())
    diag = diagnosis(data, "copy")
    assert (diag["first_divergent_stage"], diag["kind"], diag["passed"]) == (None, "match", True)
    assert diag["explanation"] == "matches the reference at every stage compared"


def test_a_feature_dump_with_one_nan_and_one_inf_is_not_a_match(world):
    features = np.load(world / "features.npy")
    bad = features.copy()
    bad[7, 100] = np.nan
    bad[11, 3] = np.inf
    np.save(world / "features_bad.npy", bad)
    r, data = report(world, "feat_bad", [REFERENCE, {"name": "port", "encoder": "features_bad.npy",
                                                     "generator": "gen.onnx"}])
    assert r.returncode == 3, r.stdout + r.stderr
    feat = stages(data, "port")["features"]
    assert not feat["passed"] and feat["kind"] == "non_finite"
    assert (feat["lane_non_finite"], feat["reference_non_finite"]) == (2, 0)
    assert feat["first_lane_non_finite_at"] == 7  # the first planted row
    assert "2 non-finite" in feat["verdict"] and "'port'" in feat["verdict"] and "row 7" in feat["verdict"]
    assert "1 NaN and 1 Inf" in feat["verdict"]
    # The per-lane statistics count the same two values, and the verdict and passed agree with them.
    stats = next(lane for lane in data["lanes"] if lane["name"] == "port")["features"]
    assert (stats["nan"], stats["inf"]) == (1, 1)
    diag = diagnosis(data, "port")
    assert not diag["passed"] and diag["kind"] == "non_finite" and diag["first_divergent_stage"] == "features"
    assert "matches" not in r.stdout and "FAILED port" in r.stdout


def test_generator_outputs_with_nan_pixels_in_every_frame_are_not_a_match(world):
    crops = np.load(world / "crops.npy")  # [6, 3, 160, 160]: frames 0..5 of the reference itself
    bad = crops.copy()
    rng = np.random.default_rng(3)
    for frame in range(len(bad)):
        flat = bad[frame].reshape(-1)
        flat[rng.choice(flat.size, size=100, replace=False)] = np.nan
    np.save(world / "crops_bad.npy", bad)
    r, data = report(world, "crops_bad", [REFERENCE, {"name": "port", "encoder": "enc.onnx",
                                                      "generator": "crops_bad.npy"}])
    assert r.returncode == 3, r.stdout + r.stderr
    by_stage = stages(data, "port")
    assert by_stage["mel"]["passed"] and by_stage["features"]["passed"]
    out = by_stage["outputs"]
    assert not out["passed"] and out["kind"] == "non_finite"
    assert out["lane_non_finite"] == 100 * 6 and out["first_lane_non_finite_at"] == 0
    assert "600 non-finite" in out["verdict"] and "output frame 0" in out["verdict"]
    # The finite pixels are the reference's own, so only the NaNs can fail this stage.
    assert out["max_abs"] == 0.0
    diag = diagnosis(data, "port")
    assert not diag["passed"] and diag["kind"] == "non_finite" and diag["first_divergent_stage"] == "outputs"


def test_nan_in_the_reference_is_reported_as_the_references(world):
    bad = np.load(world / "features.npy").copy()
    bad[4, 0] = np.nan
    np.save(world / "features_ref_bad.npy", bad)
    r, data = report(world, "ref_bad", [{"name": "broken reference", "encoder": "features_ref_bad.npy"},
                                        {"name": "onnx", "encoder": "enc.onnx"}])
    assert r.returncode == 3, r.stdout + r.stderr
    feat = stages(data, "onnx")["features"]
    assert not feat["passed"] and feat["kind"] == "non_finite"
    assert (feat["lane_non_finite"], feat["reference_non_finite"]) == (0, 1)
    assert feat["first_reference_non_finite_at"] == 4
    assert "reference lane 'broken reference' itself produced 1 non-finite" in feat["verdict"]
    assert not diagnosis(data, "onnx")["passed"]


@pytest.mark.parametrize("scale, limit", [(1e308, "3.403e+38"), (1e-320, "1.175e-38")])
def test_scales_float32_cannot_carry_are_refused_by_the_session(world, scale, limit):
    r, data = report(world, f"scale_{scale:g}", [REFERENCE, {"name": "scaled", "encoder": "enc.onnx",
                                                             "scale": scale}])
    assert r.returncode == 2, r.stdout + r.stderr
    assert "scale" in r.stderr and "float32" in r.stderr and limit in r.stderr
    assert data == {}  # no report at all, so nothing to read as a match
    assert "PASSED" not in r.stdout and "matches" not in r.stdout


@pytest.mark.parametrize("scale", ["1e308", "1e-320"])
def test_dump_refuses_the_same_scales(world, scale):
    out = world / "never.npy"
    r = app("dump", "--audio", world / "speech.wav", "--encoder", world / "enc.onnx", "--stage", "features",
            "--scale", scale, "--out", out)
    assert r.returncode == 2 and "--scale" in r.stderr and "float32" in r.stderr
    assert not out.exists()


def test_dump_refuses_a_scale_that_overflows_this_lanes_features(world):
    peak = float(np.abs(np.load(world / "features.npy")).max())
    scale = 4 * FLOAT32_MAX / peak  # fits float32 on its own
    out = world / "never.npy"
    r = app("dump", "--audio", world / "speech.wav", "--encoder", world / "enc.onnx", "--stage", "tensors",
            "--scale", repr(scale), "--out", out)
    assert r.returncode == 2 and "above float32's largest" in r.stderr
    assert not out.exists()


def test_a_scale_that_overflows_this_lanes_features_is_refused_and_the_lane_never_matches(world):
    peak = float(np.abs(np.load(world / "features.npy")).max())
    scale = 4 * FLOAT32_MAX / peak  # a normal float32 on its own; times the largest feature it is Inf
    assert FLOAT32_TINY < scale < FLOAT32_MAX
    r, data = report(world, "overflow", [REFERENCE, {"name": "huge", "encoder": "enc.onnx", "generator": "gen.onnx",
                                                     "scale": scale}])
    assert r.returncode == 2, r.stdout + r.stderr
    assert any("'huge'" in e and "above float32's largest" in e for e in data["errors"])
    diag = diagnosis(data, "huge")
    assert not diag["passed"] and diag["kind"] == "error" and diag["first_divergent_stage"] == "features"
    assert all(c["stage"] == "mel" for c in data["comparisons"] if c["lane"] == "huge")
    assert "matches" not in r.stdout


def test_a_scale_that_zeroes_every_feature_is_refused(world):
    small = np.load(world / "features.npy") * np.float32(1e-3)
    np.save(world / "features_small.npy", small)
    peak = float(np.abs(small).max())
    scale = FLOAT32_TINY / peak / 4  # normal on its own; every feature times it is denormal or 0
    assert FLOAT32_TINY < scale
    r, data = report(world, "underflow", [REFERENCE, {"name": "tiny", "encoder": "features_small.npy",
                                                      "scale": scale}])
    assert r.returncode == 2, r.stdout + r.stderr
    assert any("'tiny'" in e and "every non-zero feature" in e for e in data["errors"])
    diag = diagnosis(data, "tiny")
    assert not diag["passed"] and diag["kind"] == "error"


def test_tolerances_for_another_stage_never_let_nan_features_pass(world):
    # A CI gate with tolerances only for the outputs holds nothing against the features stage: its NaN must still
    # fail it (the features dump of the first test: one NaN, one Inf).
    if not (world / "features_bad.npy").exists():
        bad = np.load(world / "features.npy").copy()
        bad[7, 100], bad[11, 3] = np.nan, np.inf
        np.save(world / "features_bad.npy", bad)
    path = session(world, "gated", [REFERENCE, {"name": "port", "encoder": "features_bad.npy"}])
    out = world / "gated.json"
    r = app("report", path, "--atol", "outputs=0.5", "--json", out, "--force")
    assert r.returncode == 3, r.stdout + r.stderr
    feat = stages(json.loads(out.read_text()), "port")["features"]
    assert not feat["passed"] and feat["kind"] == "non_finite"
    assert not diagnosis(json.loads(out.read_text()), "port")["passed"]
