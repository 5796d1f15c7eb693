"""Run one fuzz target under atheris (libFuzzer): python tools/fuzz/fuzz.py TARGET [CORPUS_DIR] [libFuzzer flags].

Targets are in tools/fuzz/targets.py; a crash writes crash-<hash> in the working folder, which replays with
`python tools/fuzz/fuzz.py TARGET crash-<hash>`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

with atheris.instrument_imports(include=["core", "pipeline", "backends"]):
    import targets  # noqa: E402
    import core.limits, pipeline.session, pipeline.avatar, pipeline.dumps, pipeline.lane, pipeline.audio  # noqa: E401,E402,F401
    import backends.onnx_backend, backends.torch_backend  # noqa: E401,E402,F401


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in targets.TARGETS:
        sys.exit(f"usage: fuzz.py TARGET [libFuzzer args]; targets: {', '.join(targets.TARGETS)}")
    target = targets.TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0]] + sys.argv[2:], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
