"""Reading Core ML files without coremltools' MLModel: the .mlpackage layout (Manifest.json -> root model item ->
Data/<path>, weights beside it) or a bare .mlmodel, the protobuf spec, and an ML Program's main function.

MLModel rewrites a package's Manifest.json when it is released; opening a user's model must never write into it.
coremltools is imported here only when a file is actually read (a translation-cache hit never gets here).
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

from core.errors import InputError


def _quiet_coremltools() -> Any:
    """Import coremltools without its Linux noise (missing native libs, untested torch version warnings)."""
    logging.getLogger("coremltools").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import coremltools

    return coremltools


def load_spec(path: str | Path) -> tuple[Any, Path | None]:
    """Read a .mlpackage / .mlmodel spec (and the package's weights folder) on any platform, strictly read-only.

    coremltools' MLModel opens a package through its ModelPackage class, which rewrites the package's Manifest.json
    when it is released: opening a user's model must never write into it, so the package layout (Manifest.json ->
    root model item -> Data/<path>, weights beside it) is read here directly and the protobuf parsed with
    coremltools' generated classes.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"Core ML model: expected an existing .mlpackage or .mlmodel, found no file at {path}")
    _quiet_coremltools()
    from coremltools.proto import Model_pb2

    if path.is_dir():
        model_file, weights_dir = _package_items(path)
    else:
        model_file, weights_dir = path, None
    spec = Model_pb2.Model()
    try:
        spec.ParseFromString(model_file.read_bytes())
    except Exception as error:  # protobuf raises DecodeError and friends for damaged files
        raise InputError(
            f"Core ML model {path.name}: expected a Core ML model specification, found unreadable data ({error})"
        ) from error
    if spec.WhichOneof("Type") is None:
        raise InputError(f"Core ML model {path.name}: expected a Core ML model specification, found an empty one")
    return spec, weights_dir


def _package_items(package: Path) -> tuple[Path, Path | None]:
    """The root model file and the weights folder of an .mlpackage, from its Manifest.json."""
    manifest_path = package / "Manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        entries = manifest["itemInfoEntries"]
        root = entries[manifest["rootModelIdentifier"]]
        model_file = package / "Data" / root["path"]
    except FileNotFoundError:
        raise InputError(f"Core ML package {package.name}: expected a Manifest.json inside, found none") from None
    except (ValueError, KeyError, TypeError) as error:
        raise InputError(
            f"Core ML package {package.name}: expected a Manifest.json naming the root model, found an unreadable "
            f"manifest ({error!r})"
        ) from None
    if not model_file.is_file():
        raise InputError(f"Core ML package {package.name}: the manifest names {root['path']}, which is missing")
    weights_dir = None
    for entry in entries.values():
        if isinstance(entry, dict) and entry.get("name") == "weights" and "path" in entry:
            weights_dir = package / "Data" / entry["path"]
    if weights_dir is None and (model_file.parent / "weights").is_dir():
        weights_dir = model_file.parent / "weights"
    return model_file, weights_dir


def load_mil_function(spec: Any, weights_dir: Path | None, label: str) -> Any:
    """The main function of an ML Program, with its weights read from the package (coremltools' milproto loader)."""
    _quiet_coremltools()
    from coremltools.converters.mil.frontend.milproto.load import load as load_milproto

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = load_milproto(spec, spec.specificationVersion, str(weights_dir or ""))
    except Exception as error:
        raise InputError(f"Core ML model {label}: the ML Program could not be read: {error}") from error
    return program.functions.get("main") or next(iter(program.functions.values()))
