#!/usr/bin/env bash
# Sets up (idempotent, with the dev extras), checks the declared layering, then runs the whole test suite offscreen.
# Arguments go to pytest. A broken import-linter contract (pyproject.toml, [tool.importlinter]) fails the command
# before any test runs: Qt outside ui/, pipeline importing backends, or a lower layer importing a higher one.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash tools/setup.sh dev
.venv/bin/lint-imports --no-logo --no-cache
export QT_QPA_PLATFORM="${QT_QPA_PLATFORM:-offscreen}"
exec .venv/bin/python -m pytest -q "$@"
