"""The registry opens the right backend for each kind of file and turns every unusable path or option into an
InputError. Core ML and PyTorch modules are stood in for by fake modules, so these tests do not depend on whether
those backends exist yet."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from backends import registry
from pipeline.dumps import FeatureDump
from backends.onnx_backend import OnnxEncoder, OnnxGenerator
from backends.registry import KNOWN_OPTIONS, MODELS, open_encoder, open_generator
from pipeline.lane import open_encoder_source, open_generator_source
from core.errors import InputError
from tests.builders.onnx_models import make_encoder, make_generator, mel_windows_like


def test_onnx_files_open_onnx_backends_with_their_options(tmp_path: Path) -> None:
    reference = make_encoder(tmp_path / "enc.onnx", in_name="a", out_name="b")
    make_generator(tmp_path / "gen.onnx")
    options = {"provider": "cpu", "threads": 1, "input_name": "a", "image_input": "frame_pair",
               "compute_unit": "cpuOnly"}
    encoder = open_encoder(tmp_path / "enc.onnx", options)
    assert isinstance(encoder, OnnxEncoder)
    assert encoder.tensors.input.name == "a" and encoder.provenance.details["threads"] == "1"
    windows = mel_windows_like(2)
    np.testing.assert_allclose(encoder.encode(windows), reference(windows), atol=1e-5, rtol=0)
    generator = open_generator(tmp_path / "gen.onnx", options)
    assert isinstance(generator, OnnxGenerator) and generator.tensors.image.name == "frame_pair"


def test_suffix_is_case_insensitive(tmp_path: Path) -> None:
    make_encoder(tmp_path / "ENC.ONNX")
    assert isinstance(open_encoder(tmp_path / "ENC.ONNX", {}), OnnxEncoder)


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".bin"])
def test_dumps_open_as_feature_dumps(tmp_path: Path, suffix: str) -> None:
    features = np.arange(4 * 512, dtype=np.float32).reshape(4, 512)
    path = tmp_path / f"aud_ave{suffix}"
    if suffix == ".npy":
        np.save(path, features)
    elif suffix == ".npz":
        np.savez(path, aud_ave=features)
    else:
        path.write_bytes(features.astype("<f4").tobytes())
    assert isinstance(open_encoder_source(path, {}, MODELS), FeatureDump)
    dump = FeatureDump(path, num_windows=2)
    np.testing.assert_array_equal(dump.features, features)
    padded = FeatureDump(path, num_windows=4)
    assert padded.features.shape == (6, 512)
    with pytest.raises(InputError, match="expected a model file, found a dump"):
        open_encoder(path, {})


def test_unknown_options_are_listed_with_the_known_ones(tmp_path: Path) -> None:
    make_encoder(tmp_path / "e.onnx")
    with pytest.raises(InputError) as err:
        open_encoder(tmp_path / "e.onnx", {"provder": "cpu", "batch": 4})
    message = str(err.value)
    assert "unknown backend option(s) batch, provder" in message
    for key in KNOWN_OPTIONS:
        assert key in message


def test_missing_paths_directories_and_unknown_suffixes(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="encoder not found"):
        open_encoder(tmp_path / "nope.onnx", {})
    with pytest.raises(InputError, match="generator not found"):
        open_generator(tmp_path / "nope.mlpackage", {})
    (tmp_path / "folder").mkdir()
    with pytest.raises(InputError, match="expected a model file or an .mlpackage folder, found a folder"):
        open_encoder(tmp_path / "folder", {})
    (tmp_path / "model.tflite").write_bytes(b"x")
    with pytest.raises(InputError, match=r"expected one of \.onnx, \.mlpackage, \.mlmodel, \.pth, \.pt, \.npy, "
                                         r"\.npz, \.bin, found \.tflite"):
        open_encoder(tmp_path / "model.tflite", {})


def test_a_feature_dump_is_not_a_generator_but_an_output_dump_is(tmp_path: Path) -> None:
    np.save(tmp_path / "f.npy", np.zeros((3, 512), np.float32))
    with pytest.raises(InputError, match=r"expected raw generator outputs \[F,3,S,S\] .* found \[3, 512\]"):
        open_generator_source(tmp_path / "f.npy", {}, MODELS)
    np.save(tmp_path / "crops.npy", np.full((4, 3, 160, 160), 0.5, np.float32))
    dump = open_generator_source(tmp_path / "crops.npy", {}, MODELS)
    assert (dump.kind, dump.size, dump.num_frames) == ("outputs", 160, 4)
    np.save(tmp_path / "frames.npy", np.zeros((2, 240, 320, 3), np.uint8))
    dump = open_generator_source(tmp_path / "frames.npy", {}, MODELS)
    assert (dump.kind, dump.size, dump.num_frames) == ("frames", None, 2)
    (tmp_path / "raw.bin").write_bytes(b"\0" * 64)
    with pytest.raises(InputError, match=r"expected one of .*\.npy, \.npz, found \.bin"):
        open_generator_source(tmp_path / "raw.bin", {}, MODELS)


@pytest.mark.parametrize("name,module,label", [
    ("AudioEncoder.mlpackage", "backends.coreml_backend", "Core ML"),
    ("enc.mlmodel", "backends.coreml_backend", "Core ML"),
    ("audio_visual_encoder.pth", "backends.torch_backend", "PyTorch"),
    ("enc.pt", "backends.torch_backend", "PyTorch"),
])
def test_missing_lazy_backend_module_says_not_supported_yet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            name: str, module: str, label: str) -> None:
    path = tmp_path / name
    path.mkdir() if name.endswith(".mlpackage") else path.write_bytes(b"weights")
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail as if it did not exist
    with pytest.raises(InputError, match=f"^{label} models are not supported yet$"):
        open_encoder(path, {})
    with pytest.raises(InputError, match=f"^{label} models are not supported yet$"):
        open_generator(path, {})


def test_missing_dependency_of_a_lazy_backend_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_import(name: str) -> Any:
        raise ModuleNotFoundError("No module named 'coremltools'", name="coremltools")

    monkeypatch.setattr(registry.importlib, "import_module", failing_import)
    (tmp_path / "e.mlmodel").write_bytes(b"x")
    with pytest.raises(InputError, match="Core ML models need the Python package 'coremltools'"):
        open_encoder(tmp_path / "e.mlmodel", {})


class _Recorder:
    """Stands in for a backend class: remembers how the registry called it."""

    calls: list[tuple[str, Path, dict[str, Any]]] = []

    def __init__(self, path: Path, **kwargs: Any) -> None:
        _Recorder.calls.append((type(self).__name__, Path(path), kwargs))


def _fake_module(monkeypatch: pytest.MonkeyPatch, module: str, encoder: str, generator: str) -> None:
    fake = types.ModuleType(module)
    setattr(fake, encoder, type(encoder, (_Recorder,), {}))
    setattr(fake, generator, type(generator, (_Recorder,), {}))
    monkeypatch.setitem(sys.modules, module, fake)
    _Recorder.calls = []


def test_coreml_files_go_to_the_coreml_backend_with_meaningful_options(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_module(monkeypatch, "backends.coreml_backend", "CoreMLEncoder", "CoreMLGenerator")
    (tmp_path / "Enc.mlpackage").mkdir()
    options = {"compute_unit": "cpuOnly", "provider": "cuda", "threads": 2, "output_name": "var_242",
               "audio_input": "audio_input"}
    open_encoder(tmp_path / "Enc.mlpackage", options)
    open_generator(tmp_path / "Enc.mlpackage", options)
    assert _Recorder.calls == [
        ("CoreMLEncoder", tmp_path / "Enc.mlpackage",
         {"compute_unit": "cpuOnly", "output_name": "var_242", "threads": 2}),
        ("CoreMLGenerator", tmp_path / "Enc.mlpackage",
         {"compute_unit": "cpuOnly", "audio_input": "audio_input", "output_name": "var_242", "threads": 2}),
    ]


def test_torch_files_go_to_the_torch_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_module(monkeypatch, "backends.torch_backend", "TorchEncoder", "TorchGenerator")
    (tmp_path / "ave.pth").write_bytes(b"x")
    open_encoder(tmp_path / "ave.pth", {"threads": 2, "provider": "cpu"})
    assert _Recorder.calls == [("TorchEncoder", tmp_path / "ave.pth", {"threads": 2})]


def test_coreml_mode_and_precision_and_torch_size_and_width_reach_their_backends_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    options = {"mode": "emulated", "precision": "fp32", "size": 160, "width": 0.5}
    _fake_module(monkeypatch, "backends.coreml_backend", "CoreMLEncoder", "CoreMLGenerator")
    (tmp_path / "G.mlpackage").mkdir()
    open_generator(tmp_path / "G.mlpackage", options)
    assert _Recorder.calls == [("CoreMLGenerator", tmp_path / "G.mlpackage", {"mode": "emulated", "precision": "fp32"})]
    _fake_module(monkeypatch, "backends.torch_backend", "TorchEncoder", "TorchGenerator")
    (tmp_path / "g.pth").write_bytes(b"x")
    open_generator(tmp_path / "g.pth", options)
    assert _Recorder.calls == [("TorchGenerator", tmp_path / "g.pth", {"size": 160, "width": 0.5})]


def test_module_without_the_expected_class_is_not_supported_yet(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "backends.torch_backend", types.ModuleType("backends.torch_backend"))
    (tmp_path / "g.pt").write_bytes(b"x")
    with pytest.raises(InputError, match="PyTorch generators are not supported yet .*has no TorchGenerator"):
        open_generator(tmp_path / "g.pt", {})
