#!/usr/bin/env bash
# MR feature extraction, graft vs Python (onnxruntime 1.31.1 + tokenizers, length-sorted batches of 64,
# 2 threads), in one invocation on the same machine, alternating A B A B; prints rows/s and the ratio of the
# best of each. graft runs as users run it (`cargo xtask run`, the dev profile), with an empty feature cache.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${GRAFT_CACHE:-$root/.graft-cache}
rounds=${ROUNDS:-2}
cd "$root"
cargo xtask fetch benches/extract_mr.toml >/dev/null
venv="$cache/bench-python"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check onnxruntime==1.31.1 tokenizers numpy
fi
cargo build --quiet -p xtask
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
best_graft=0 best_python=0
for round in $(seq "$rounds"); do
  rm -rf "$scratch/features" "$scratch/runs"
  cargo xtask run benches/extract_mr.toml --no-progress --cache-dir "$cache" --features-dir "$scratch/features" \
    --runs-dir "$scratch/runs" >/dev/null 2>&1
  graft=$(python3 -c "import json,glob; print(round(json.load(open(glob.glob('$scratch/runs/*/*/metrics.json')[0]))['extraction']['rows_per_second'], 1))")
  python=$("$venv/bin/python" benches/python/extract_mr.py "$cache")
  echo "round $round: graft $graft rows/s, python $python rows/s"
  best_graft=$(python3 -c "print(max($best_graft, $graft))")
  best_python=$(python3 -c "print(max($best_python, $python))")
done
python3 -c "print(f'best: graft $best_graft rows/s, python $best_python rows/s, ratio {$best_graft / $best_python:.2f}x')"
