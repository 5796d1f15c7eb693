#!/usr/bin/env bash
# Sets up (idempotent) and starts the app. Any arguments go to app.py: bash tools/run.sh my_session.toml
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash tools/setup.sh
exec .venv/bin/python app.py "$@"
