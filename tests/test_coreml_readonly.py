"""Opening a user's Core ML package must not write into it ("nothing of the user's is overwritten")."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest

from backends.coreml_backend import CoreMLEncoder
from core.errors import InputError

DEMO_ENCODER = Path(__file__).resolve().parents[1] / "resources" / "demo" / "models" / "AudioEncoder.mlpackage"


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


@pytest.mark.skipif(not DEMO_ENCODER.exists(), reason="the demo bundle is not built")
def test_opening_and_running_a_package_leaves_every_file_untouched(tmp_path):
    package = tmp_path / "AudioEncoder.mlpackage"
    shutil.copytree(DEMO_ENCODER, package)
    old = 1_000_000_000 * 10**9  # an mtime far in the past, so any rewrite shows even within the same second
    for p in package.rglob("*"):
        os.utime(p, ns=(old, old))
    before = _snapshot(package)
    encoder = CoreMLEncoder(package, mode="emulated")
    out = encoder.encode(np.zeros((2, 1, 80, 16), np.float32))
    del encoder
    assert out.shape == (2, 512)
    assert _snapshot(package) == before
    from backends.inspection import describe  # inspect and diff-weights read packages too

    assert len(describe(package).layers) == 13
    assert _snapshot(package) == before


def test_a_package_without_a_manifest_or_with_a_bad_one_is_an_input_error(tmp_path):
    package = tmp_path / "Broken.mlpackage"
    package.mkdir()
    with pytest.raises(InputError, match="Manifest.json"):
        CoreMLEncoder(package, mode="emulated")
    (package / "Manifest.json").write_text("{not json")
    with pytest.raises(InputError, match="manifest"):
        CoreMLEncoder(package, mode="emulated")
    (package / "Manifest.json").write_text('{"itemInfoEntries": {"a": {"path": "x/model.mlmodel"}}, "rootModelIdentifier": "a"}')
    with pytest.raises(InputError, match="missing"):
        CoreMLEncoder(package, mode="emulated")
    (package / "Data" / "x").mkdir(parents=True)
    (package / "Data" / "x" / "model.mlmodel").write_bytes(b"\x00garbage\xff" * 10)
    with pytest.raises(InputError, match="Core ML"):
        CoreMLEncoder(package, mode="emulated")
    assert stat.S_ISDIR(package.stat().st_mode)
