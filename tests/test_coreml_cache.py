"""The translated Core ML program is cached by the package's content, and a cache hit imports no coremltools/torch.

Opening the demo's Core ML lane cost 3.9 s (19 s with a CUDA torch) because coremltools imports torch; a second
start must read the stored translation instead. The cache must never serve a stale translation: the key is the
package's bytes, the precision and the translator's source.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backends.coreml_backend import CoreMLEncoder
from backends import coreml_emulator
from backends.coreml_emulator import CACHE_ENV, cache_dir, content_key, translate_cached, translator_sources

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "resources" / "demo" / "models" / "AudioEncoder_untrained.mlpackage"

pytestmark = pytest.mark.skipif(not PACKAGE.is_dir(), reason="the demo bundle's Core ML encoder is missing")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache" / "coreml"


def _windows(count: int = 5) -> np.ndarray:
    return np.random.default_rng(0).uniform(-4, 4, (count, 1, 80, 16)).astype(np.float32)


def test_second_open_reads_the_cache_and_computes_the_same(cache: Path) -> None:
    first = CoreMLEncoder(PACKAGE, mode="emulated")
    assert first.provenance.details["translation"] == "fresh"
    assert cache_dir() == cache
    assert sorted(p.suffix for p in cache.iterdir()) == [".json", ".onnx"]
    second = CoreMLEncoder(PACKAGE, mode="emulated")
    assert second.provenance.details["translation"] == "cached"
    assert second.provenance.version == first.provenance.version  # the coremltools version is recorded
    assert second.precision == first.precision
    assert np.array_equal(second.encode(_windows()), first.encode(_windows()))


def test_a_cache_hit_imports_neither_coremltools_nor_torch(cache: Path) -> None:
    translate_cached(PACKAGE)  # warm the cache in this process
    script = (
        "import sys; import numpy as np\n"
        "from backends.coreml_backend import CoreMLEncoder\n"
        f"encoder = CoreMLEncoder({str(PACKAGE)!r}, mode='emulated')\n"
        "encoder.encode(np.zeros((2, 1, 80, 16), np.float32))\n"
        "print(encoder.provenance.details['translation'], 'coremltools' in sys.modules, 'torch' in sys.modules)\n"
    )
    env = {**os.environ, CACHE_ENV: str(cache.parent)}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["cached", "False", "False"]


def test_other_content_or_precision_is_another_key(cache: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(PACKAGE, tmp_path / "copy.mlpackage"))
    assert content_key(copy, "as_stored") == content_key(PACKAGE, "as_stored")  # content, not the path
    assert content_key(PACKAGE, "fp16") != content_key(PACKAGE, "as_stored")
    weights = next(p for p in copy.rglob("weight.bin"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert content_key(copy, "as_stored") != content_key(PACKAGE, "as_stored")
    translate_cached(PACKAGE)
    assert translate_cached(copy).details["translation"] == "fresh"  # the edited model is never served stale


def test_every_translator_module_is_part_of_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The translator is split over several modules: a change in any of them must invalidate cached translations."""
    backends_dir = ROOT / "backends"
    not_translator = {"coreml_backend.py", "coreml_inspection.py"}
    expected = {p for p in backends_dir.glob("coreml_*.py") if p.name not in not_translator}
    sources = translator_sources()
    assert {p.resolve() for p in sources} == {p.resolve() for p in expected}
    copies = [Path(shutil.copy(source, tmp_path / source.name)) for source in sources]
    monkeypatch.setattr(coreml_emulator, "translator_sources", lambda: copies)
    base = content_key(PACKAGE, "as_stored")
    for copy in copies:
        original = copy.read_bytes()
        copy.write_bytes(original + b"\n# edited\n")
        assert content_key(PACKAGE, "as_stored") != base, copy.name
        copy.write_bytes(original)
    assert content_key(PACKAGE, "as_stored") == base


def test_a_damaged_entry_is_translated_again(cache: Path) -> None:
    translate_cached(PACKAGE)
    key = content_key(PACKAGE, "as_stored")
    (cache / f"{key}.onnx").write_bytes(b"truncated")
    assert translate_cached(PACKAGE).details["translation"] == "fresh"
    meta = json.loads((cache / f"{key}.json").read_text())
    assert meta["onnx_size"] == (cache / f"{key}.onnx").stat().st_size
    assert translate_cached(PACKAGE).details["translation"] == "cached"


def test_an_unwritable_cache_costs_speed_not_the_lane(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv(CACHE_ENV, str(blocker))
    encoder = CoreMLEncoder(PACKAGE, mode="emulated")
    assert encoder.encode(_windows(2)).shape == (2, 512)


ONNX_GENERATOR = ROOT / "resources" / "demo" / "models" / "generator.onnx"


@pytest.mark.skipif(not ONNX_GENERATOR.is_file(), reason="the demo bundle's ONNX generator is missing")
def test_a_second_start_opens_onnx_models_without_importing_onnx(cache: Path, tmp_path: Path) -> None:
    """The onnx package (its ml_dtypes import: seconds on a busy machine) is needed only to read a file's opset and
    precision the first time; they are remembered by path, size and modification time."""
    from backends.onnx_backend import OnnxGenerator

    first = OnnxGenerator(ONNX_GENERATOR, threads=1)
    script = (
        "import sys\n"
        "from backends.onnx_backend import OnnxGenerator\n"
        f"generator = OnnxGenerator({str(ONNX_GENERATOR)!r}, threads=1)\n"
        "print(generator.provenance.details['opset'], generator.provenance.precision, 'onnx' in sys.modules)\n"
    )
    env = {**os.environ, CACHE_ENV: str(cache.parent)}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [first.provenance.details["opset"], first.provenance.precision, "False"]
    copy = tmp_path / "generator.onnx"
    copy.write_bytes(ONNX_GENERATOR.read_bytes()[:1000])  # another file (and a broken one): read, not remembered
    from core.errors import InputError

    with pytest.raises(InputError, match="not an ONNX model"):
        OnnxGenerator(copy)
