#!/usr/bin/env bash
# MR feature extraction from Python (graft.Embedder, release wheel) vs the `graft extract` command (release
# binary), alternating in one invocation: same model (MiniLM-L6 int8), 2 threads, batch 64, 4,096-row
# chunks. Prints rows/s of each round and the ratio of the best of each; the embeddings are compared too.
set -euo pipefail
# ONNX Runtime's telemetry stays off in the Python peers too (graft keeps its own off).
export ORT_DISABLE_TELEMETRY=1
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${GRAFT_CACHE:-$root/.graft-cache}
rounds=${ROUNDS:-3}
cd "$root"
cargo xtask fetch benches/extract_mr.toml >/dev/null
venv="$cache/bench-python-wheel"
if [ ! -x "$venv/bin/maturin" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --require-hashes \
    -r bindings/python/requirements/build.txt
  "$venv/bin/pip" install --quiet --disable-pip-version-check numpy==2.2.6
fi
cargo build --quiet --release -p graft
rm -rf target/bench-wheel
"$venv/bin/maturin" build --quiet --release -m bindings/python/Cargo.toml -o target/bench-wheel -i "$venv/bin/python"
"$venv/bin/pip" install --quiet --disable-pip-version-check --force-reinstall --no-deps target/bench-wheel/*.whl
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
export GRAFT_CACHE="$cache"
best_cli=0 best_py=0
for round in $(seq "$rounds"); do
  rm -f "$scratch/mr.npy" "$scratch/mr.npy.json"
  ./target/release/graft extract --model minilm-l6-int8 --input "$cache/datasets/mr/mr.csv" --text-column text \
    --output "$scratch/mr.npy" --threads 2 --no-progress >/dev/null 2>&1
  cli=$(python3 -c "import json; print(round(json.load(open('$scratch/mr.npy.json'))['stats']['rows_per_second'], 1))")
  py=$("$venv/bin/python" - "$cache/datasets/mr/mr.csv" "$scratch/mr.npy" <<'PY'
import csv, sys, time
import numpy as np
import graft
with open(sys.argv[1], newline="", encoding="utf-8") as f:
    texts = [r["text"] for r in csv.DictReader(f)]
embedder = graft.Embedder(model="minilm-l6-int8", threads=2)
started = time.perf_counter()
x = embedder.embed(texts)
seconds = time.perf_counter() - started
assert np.array_equal(x, np.load(sys.argv[2])), "the Python embeddings differ from graft extract's"
print(round(len(texts) / seconds, 1))
PY
)
  echo "round $round: graft extract $cli rows/s, graft.Embedder $py rows/s (identical embeddings)"
  best_cli=$(python3 -c "print(max($best_cli, $cli))")
  best_py=$(python3 -c "print(max($best_py, $py))")
done
python3 -c "print(f'best: graft extract $best_cli rows/s; graft.Embedder $best_py rows/s ({$best_py / $best_cli:.2f}x)')"
