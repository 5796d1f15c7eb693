#!/usr/bin/env bash
# Sets up everything lipsync-compare needs, idempotently, then returns. Sourced by tools/run.sh and tools/test.sh.
#   bash tools/setup.sh          # runtime only
#   bash tools/setup.sh dev      # runtime + test/dev tools (pytest, librosa, torch CPU)
# A second run is quick: apt is touched only when a package is missing, pip only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
extras="${1:-}"

apt_packages=(
  libportaudio2            # sounddevice's audio output
  libegl1 libgl1 libxkbcommon0 libfontconfig1 libdbus-1-3 libglib2.0-0   # Qt
  libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxcb-shape0 libxkbcommon-x11-0 # Qt's xcb platform
)
if [ "$extras" = "dev" ]; then
  apt_packages+=(espeak-ng libespeak-ng1 jackd2 xvfb chromium)   # speech for test data, a real-time audio device, a virtual screen, a browser for the HTML report test
fi

if [ "$(uname -s)" = "Linux" ] && command -v apt-get >/dev/null 2>&1; then
  missing=()
  for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "setup: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "setup: Python 3.11 or newer is needed (found: $("$python" --version 2>&1)). Set PYTHON=/path/to/python3.11." >&2
  exit 2
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv

stamp=".venv/.installed-${extras:-runtime}"
want="$(cat pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing Python packages into .venv (${extras:-runtime})"
  .venv/bin/python -m pip install -q --upgrade pip
  if [ "$extras" = "dev" ]; then
    .venv/bin/python -m pip install -q -e ".[dev]"
  else
    .venv/bin/python -m pip install -q -e .
  fi
  echo "$want" > "$stamp"
fi
