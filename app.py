"""lipsync-compare: the single entry point.

    python app.py                      open the window on the demo session shipped in resources/demo/
    python app.py SESSION.toml         open the window on that session
    python app.py report [SESSION]     compare every lane with the first, headless
    python app.py dump ...             write one stage of one lane to .npy, headless
    python app.py inspect MODEL        describe a model file
    python app.py diff-weights A B     compare the weights of two files of one network

Exit codes: 0 ok, 2 usage or input error (message on stderr), 1 unexpected failure.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a headless subcommand or open the window; returns the process exit code."""
    # The checkout's packages first: `.venv/bin/lipsync-compare` (an editable install) maps only the packages that
    # existed when it was installed, so a package added since would be missing without this.
    root = os.path.dirname(os.path.abspath(__file__))
    if root not in sys.path:
        sys.path.insert(0, root)
    from cli.main import run

    return run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
