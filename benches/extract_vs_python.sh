#!/usr/bin/env bash
# MR feature extraction, graft vs Python (onnxruntime 1.31.1 + tokenizers, length-sorted batches of 64,
# 2 threads), in one invocation on the same machine, alternating; prints rows/s and the ratio of the best of
# each. graft runs as users run it (the dev profile): `cargo xtask run` with an empty feature cache (one
# session, 2 threads), and `cargo xtask extract` with two single-threaded sessions.
set -euo pipefail
# ONNX Runtime's telemetry stays off in the Python peers too (graft keeps its own off).
export ORT_DISABLE_TELEMETRY=1
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${GRAFT_CACHE:-$root/.graft-cache}
rounds=${ROUNDS:-2}
# The model `cargo xtask extract` runs (the Python peer always runs the shipped int8 file): e.g.
# EXTRACT_MODEL=minilm-l6 for graft's own float32 graph (benches/README.md, "Leads for issue 27").
extract_model=${EXTRACT_MODEL:-minilm-l6-int8}
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
best_graft=0 best_python=0 best_extract=0
for round in $(seq "$rounds"); do
  rm -rf "$scratch/features" "$scratch/runs"
  cargo xtask run benches/extract_mr.toml --no-progress --cache-dir "$cache" --features-dir "$scratch/features" \
    --runs-dir "$scratch/runs" >/dev/null 2>&1
  graft=$(python3 -c "import json,glob; print(round(json.load(open(glob.glob('$scratch/runs/*/*/metrics.json')[0]))['extraction']['rows_per_second'], 1))")
  python=$("$venv/bin/python" benches/python/extract_mr.py "$cache")
  rm -rf "$scratch/mr.parquet" "$scratch/mr.parquet.json"
  cargo xtask extract --model "$extract_model" --input "$cache/datasets/mr/mr.csv" --text-column text \
    --output "$scratch/mr.parquet" --threads 2 --sessions 2 --no-progress \
    --cache-dir "$cache" >/dev/null 2>&1
  extract=$(python3 -c "import json; print(round(json.load(open('$scratch/mr.parquet.json'))['stats']['rows_per_second'], 1))")
  echo "round $round: graft run $graft rows/s, python $python rows/s, graft extract ($extract_model, 2 sessions) $extract rows/s"
  best_graft=$(python3 -c "print(max($best_graft, $graft))")
  best_python=$(python3 -c "print(max($best_python, $python))")
  best_extract=$(python3 -c "print(max($best_extract, $extract))")
done
python3 -c "print(f'best: python $best_python rows/s; graft run $best_graft rows/s ({$best_graft / $best_python:.2f}x); graft extract, 2 sessions, $best_extract rows/s ({$best_extract / $best_python:.2f}x)')"
