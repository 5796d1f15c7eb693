#!/usr/bin/env bash
# Fuzz every target in turn, niced, for SECONDS each (default 300), with a memory cap so a finding cannot take the
# machine down: bash tools/fuzz/run_all.sh [SECONDS] [TARGET...]. Corpora and findings (crash-*, oom-*, timeout-*)
# land in $FUZZ_OUT/<target>/ (default /tmp/lipsync-fuzz).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
root=$(pwd)
seconds=${1:-300}; shift || true
targets=("$@"); [ ${#targets[@]} -gt 0 ] || targets=(session lms rects dumps frames audio image_header onnx pth)
out=${FUZZ_OUT:-/tmp/lipsync-fuzz}
mkdir -p "$out/corpus"
"$root/.venv/bin/python" "$root/tools/fuzz/targets.py" "$out/corpus"
for t in "${targets[@]}"; do
  mkdir -p "$out/$t"
  echo "== $t for ${seconds}s (from $(date -u +%H:%M:%S))"
  ( ulimit -v 6000000; cd "$out/$t" && nice -n 19 "$root/.venv/bin/python" "$root/tools/fuzz/fuzz.py" "$t" \
      "$out/corpus/$t" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=3000 -max_len=4096 \
      -artifact_prefix="$out/$t/" -print_final_stats=1 ) 2>&1 | grep -v "^#[0-9]" | tail -40
done
