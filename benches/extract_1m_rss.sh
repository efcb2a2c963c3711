#!/usr/bin/env bash
# Peak memory of a 1,000,000-row `cargo xtask extract` (MiniLM-L6, one thread, default 4,096-row chunks),
# measured with /usr/bin/time -v. Takes about an hour on a 2-core machine. ROWS=100000 for a quicker look;
# EXTRACT_MODEL=minilm-l6-int8 for the shipped int8 file instead of graft's float32 graph.
set -euo pipefail
# ONNX Runtime's telemetry stays off in the Python peers too (graft keeps its own off).
export ORT_DISABLE_TELEMETRY=1
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${GRAFT_CACHE:-$root/.graft-cache}
rows=${ROWS:-1000000}
model=${EXTRACT_MODEL:-minilm-l6}
cd "$root"
cargo xtask fetch >/dev/null
cargo build --quiet -p xtask
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
python3 benches/python/make_short_corpus.py "$cache/datasets/mr/mr.csv" "$scratch/corpus.csv" "$rows"
/usr/bin/time -v target/debug/xtask extract --model "$model" --input "$scratch/corpus.csv" \
  --text-column text --id-column id --output "$scratch/embeddings.parquet" --threads 1 --no-progress \
  --cache-dir "$cache" 2>&1 | grep -E "rows →|Maximum resident|Elapsed"
