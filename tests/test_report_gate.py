"""The CI gate: Polygraphy-style tolerances per stage, exit codes 0/2/3, the least passing tolerance, and --clips.

Element-wise semantics are checked against a loop written here from Polygraphy's rule (an element fails only when
outside both atol and rtol); the printed "would pass with" values are checked by rerunning with them.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from core.errors import InputError
from pipeline.gate import Tolerances, check
from tests.builders.avatar import make_dataset
from tests.builders.onnx_models import make_encoder, make_generator

ROOT = Path(__file__).resolve().parents[1]


def app(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "app.py"), *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)


def _clip(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    envelope = np.interp(t, np.linspace(0, seconds, 12), rng.uniform(0, 1, 12))
    return (0.3 * envelope * np.sin(2 * np.pi * 150 * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("gate")
    sf.write(d / "speech.wav", _clip(2.0, 1), 16000, subtype="FLOAT")
    make_dataset(d / "avatar", frames=4, size=(320, 240), image_format="png")
    make_encoder(d / "enc.onnx", seed=0)
    make_encoder(d / "enc_fp16.onnx", seed=0, fp16=True)
    make_encoder(d / "enc_small.onnx", seed=0, scale=1 / 200)
    make_generator(d / "gen.onnx", size=160, seed=1)
    for name, encoder in (("fp16", "enc_fp16.onnx"), ("small", "enc_small.onnx")):
        (d / f"{name}.toml").write_text(
            f'audio = "speech.wav"\navatar = "avatar"\n\n[[lanes]]\nname = "reference"\nencoder = "enc.onnx"\n'
            f'generator = "gen.onnx"\n\n[[lanes]]\nname = "port"\nencoder = "{encoder}"\ngenerator = "gen.onnx"\n')
    return d


def _polygraphy_failures(a: np.ndarray, b: np.ndarray, atol: float, rtol: float) -> int:
    failures = 0
    for x, y in zip(a.ravel().tolist(), b.ravel().tolist()):
        absdiff = abs(x - y)
        reldiff = absdiff / abs(y) if y != 0 else (0.0 if absdiff == 0 else float("inf"))
        if absdiff > atol and reldiff > rtol:
            failures += 1
    return failures


def test_an_element_fails_only_outside_both_tolerances():
    rng = np.random.default_rng(0)
    b = rng.uniform(-2, 2, 500)
    b[:5] = 0.0
    a = b + rng.normal(0, 1e-3, b.size)
    for atol, rtol in ((1e-3, 0.0), (0.0, 1e-3), (5e-4, 2e-3), (1e-2, 1e-2)):
        tol = Tolerances.parse(atol=[str(atol)], rtol=[str(rtol)])
        result = check("features", a, b, tol)
        expected = _polygraphy_failures(a, b, atol, rtol)
        assert result.figures["failing_elements"] == expected
        assert result.passed == (expected == 0)


def test_the_least_passing_tolerances_pass_and_anything_less_fails():
    rng = np.random.default_rng(1)
    b = rng.uniform(0.5, 2, 300)
    a = b + rng.normal(0, 1e-2, b.size)
    failed = check("outputs", a, b, Tolerances.parse(atol=["1e-4"], rtol=["1e-4"]))
    assert not failed.passed
    least_atol, least_rtol = failed.minimal["atol"], failed.minimal["rtol"]
    assert check("outputs", a, b, Tolerances.parse(atol=[str(least_atol)], rtol=["1e-4"])).passed
    assert not check("outputs", a, b, Tolerances.parse(atol=[str(least_atol * 0.999)], rtol=["1e-4"])).passed
    assert check("outputs", a, b, Tolerances.parse(atol=["1e-4"], rtol=[str(least_rtol)])).passed
    assert not check("outputs", a, b, Tolerances.parse(atol=["1e-4"], rtol=[str(least_rtol * 0.999)])).passed


def test_per_stage_values_win_over_global_ones():
    tol = Tolerances.parse(atol=["1e-5", "features=1e-3"], psnr_min=["outputs=40"])
    assert tol.get("atol", "features") == 1e-3 and tol.get("atol", "mel") == 1e-5
    assert tol.get("psnr_min", "outputs") == 40 and tol.get("psnr_min", "features") is None


@pytest.mark.parametrize("flag, value", [("atol", "features=abc"), ("atol", "weights=1"), ("rtol", "-1"),
                                         ("cosine_min", "nan")])
def test_a_bad_tolerance_is_one_input_error(flag, value):
    with pytest.raises(InputError, match=re.escape("--" + flag.replace("_", "-"))):
        Tolerances.parse(**{flag: [value]})


def test_exit_3_past_tolerances_with_the_least_passing_one_printed_and_0_with_it(world):
    d = world
    common = ["--frames", "0:3", "--mouth-frames", "0", "--no-audio-check"]
    failed = app("report", d / "small.toml", *common, "--atol", "features=1e-3")
    assert failed.returncode == 3, failed.stderr
    match = re.search(r"would pass with --atol features=([0-9.eE+-]+)", failed.stdout)
    assert match, failed.stdout
    passed = app("report", d / "small.toml", *common, "--atol", f"features={match.group(1)}")
    assert passed.returncode == 0, passed.stdout + passed.stderr


def test_an_fp16_encoder_passes_a_cosine_floor_and_fails_a_tight_atol(world):
    d = world
    common = ["--frames", "0:3", "--mouth-frames", "0", "--no-audio-check"]
    ok = app("report", d / "fp16.toml", *common, "--cosine-min", "0.9999", "--psnr-min", "outputs=40")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    tight = app("report", d / "fp16.toml", *common, "--atol", "features=1e-7")
    assert tight.returncode == 3 and "would pass with --atol features=" in tight.stdout


def test_without_tolerances_an_fp16_encoder_is_precision_and_exits_0(world):
    result = app("report", world / "fp16.toml", "--frames", "0:3", "--mouth-frames", "0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[precision]" in result.stdout or "[match]" in result.stdout


def test_exit_2_for_a_malformed_tolerance(world):
    result = app("report", world / "small.toml", "--atol", "features=x")
    assert result.returncode == 2 and "--atol" in result.stderr


def test_clips_aggregates_every_clip_per_lane_and_stage(world, tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    for seed in range(3):
        sf.write(clips / f"clip{seed}.wav", _clip(1.6 + 0.2 * seed, seed + 10), 16000, subtype="FLOAT")
    result = app("report", world / "small.toml", "--clips", clips, "--frames", "0:2", "--atol", "features=1e-3",
                 "--json", tmp_path / "clips.json")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "Over 3 clip(s)" in result.stdout
    row = next(line for line in result.stdout.splitlines() if " features " in line)
    assert "3/3" in row and "clip0.wav" in row
    import json

    data = json.loads((tmp_path / "clips.json").read_text())
    assert len(data["clips"]) == 3
    features = next(r for r in data["aggregate"] if r["stage"] == "features")
    per_clip = [c["max_abs"] for clip in data["clips"] for c in clip["comparisons"] if c["stage"] == "features"]
    assert features["worst_max_abs"] == pytest.approx(max(per_clip))
    assert features["median_max_abs"] == pytest.approx(float(np.median(per_clip)))


def test_clips_that_match_nothing_is_an_input_error(world, tmp_path):
    result = app("report", world / "small.toml", "--clips", tmp_path / "none*.wav")
    assert result.returncode == 2 and "--clips" in result.stderr


def test_the_json_carries_the_documented_diagnosis_and_mouth_fields(world, tmp_path):
    import json

    out = tmp_path / "r.json"
    result = app("report", world / "small.toml", "--frames", "0:3", "--mouth-frames", "12", "--json", out)
    assert result.returncode == 3, result.stderr
    data = json.loads(out.read_text())
    (diagnosis,) = data["diagnosis"]
    assert set(diagnosis) >= {"lane", "first_divergent_stage", "kind", "explanation", "evidence", "also", "stages",
                              "passed", "mouth"}
    assert (diagnosis["first_divergent_stage"], diagnosis["kind"]) == ("features", "scale")
    assert diagnosis["evidence"]["correction"] == pytest.approx(200, rel=1e-4)
    assert [entry["lane"] for entry in data["mouth"]] == ["reference", "port"]
    assert set(data["mouth"][1]["metrics"]) == {"psnr", "ssim", "mad", "mouth_psnr", "mouth_ssim", "mouth_mad"}
    assert len(data["mouth"][0]["measure"]["opening"]) == len(data["mouth"][0]["measure"]["frames"])
