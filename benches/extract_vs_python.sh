#!/usr/bin/env bash
# Feature extraction, graft vs Python (onnxruntime 1.31.1 + tokenizers, length-sorted batches, 2 threads, on
# the shipped int8 MiniLM-L6 file), in one invocation on the same machine, alternating; the Python peer gets
# its best batch size of PEER_BATCHES. graft runs as users run it (the dev profile) on its own float32 graph
# of the same model (`minilm-l6`): `cargo xtask run` with an empty feature cache and `cargo xtask extract`,
# both 2 sessions of 1 thread, batches of at most 16 cut where lengths change. Prints, last:
#   best: python P rows/s (batch B); graft run R rows/s (Rx); graft extract E rows/s (Ex)
#   long: python P rows/s (batch B); graft extract E rows/s (Ex)
#   accuracy: graft extract vs float32 graph min M mean A; python int8 file vs float32 graph min M mean A
# MR is 10,605 sentences; the long corpus is 800 documents of 12 MR sentences (most cut at 256 tokens).
# The accuracy lines compare per-row cosines with Python onnxruntime on the float32 graph (batches of 64).
set -euo pipefail
# ONNX Runtime's telemetry stays off in the Python peers too (graft keeps its own off).
export ORT_DISABLE_TELEMETRY=1
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${GRAFT_CACHE:-$root/.graft-cache}
rounds=${ROUNDS:-2}
peer_batches=${PEER_BATCHES:-16 32 64}
long_peer_batches=${LONG_PEER_BATCHES:-8 16 64}
extract_model=${EXTRACT_MODEL:-minilm-l6}
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
mr="$cache/datasets/mr/mr.csv"
"$venv/bin/python" benches/python/make_long_corpus.py "$mr" "$scratch/long.csv" 800
peer() { "$venv/bin/python" benches/python/extract_mr.py "$cache" "$@"; }
extract() { # input output → rows/s
  rm -rf "$2" "$2.json"
  cargo xtask extract --model "$extract_model" --input "$1" --text-column text --output "$2" \
    --threads 2 --sessions 2 --no-progress --cache-dir "$cache" >/dev/null 2>&1
  python3 -c "import json; print(round(json.load(open('$2.json'))['stats']['rows_per_second'], 1))"
}
max() { python3 -c "print(max($1, $2))"; }
peer_sweep() { # batches best_var batch_var label peer-args… : the peer at each batch size, keeping the best
  local batches=$1 label=$4 b py
  local -n best=$2 at=$3
  shift 4
  for b in $batches; do
    py=$(peer --batch "$b" "$@")
    echo "round $round: $label, python, batch $b: $py rows/s"
    if python3 -c "import sys; sys.exit(0 if $py > $best else 1)"; then best=$py at=$b; fi
  done
}
best_run=0 best_py=0 py_batch=- best_ext=0 best_long_py=0 long_batch=- best_long=0
for round in $(seq "$rounds"); do
  rm -rf "$scratch/features" "$scratch/runs"
  cargo xtask run benches/extract_mr.toml --no-progress --cache-dir "$cache" --features-dir "$scratch/features" \
    --runs-dir "$scratch/runs" >/dev/null 2>&1
  run=$(python3 -c "import json,glob; print(round(json.load(open(glob.glob('$scratch/runs/*/*/metrics.json')[0]))['extraction']['rows_per_second'], 1))")
  peer_sweep "$peer_batches" best_py py_batch MR --save "$scratch/int8.npy"
  ext=$(extract "$mr" "$scratch/mr.npy")
  echo "round $round: graft run $run rows/s, graft extract ($extract_model, 2 sessions) $ext rows/s"
  peer_sweep "$long_peer_batches" best_long_py long_batch "long documents" --texts "$scratch/long.csv"
  long=$(extract "$scratch/long.csv" "$scratch/long.npy")
  echo "round $round: long documents, graft extract $long rows/s"
  best_run=$(max "$best_run" "$run") best_ext=$(max "$best_ext" "$ext") best_long=$(max "$best_long" "$long")
done
fp32=$(ls "$cache"/models/minilm-l6/graft-bert-v*.onnx | tail -1)
peer --model "$fp32" --save "$scratch/fp32.npy" >/dev/null
ours=$("$venv/bin/python" benches/python/cosine_rows.py "$scratch/fp32.npy" "$scratch/mr.npy" "graft extract")
theirs=$("$venv/bin/python" benches/python/cosine_rows.py "$scratch/fp32.npy" "$scratch/int8.npy" "python int8 file")
python3 -c "print(f'best: python $best_py rows/s (batch $py_batch); graft run $best_run rows/s ({$best_run / $best_py:.2f}x); graft extract $best_ext rows/s ({$best_ext / $best_py:.2f}x)')"
python3 -c "print(f'long: python $best_long_py rows/s (batch $long_batch); graft extract $best_long rows/s ({$best_long / $best_long_py:.2f}x)')"
echo "accuracy: $ours vs float32 graph; $theirs vs float32 graph"
