#!/usr/bin/env bash
# Heads, graft vs scikit-learn, in one invocation on the same machine, on identical features and splits:
#   - synthetic: 60,000 × 1,280 float32 training rows, 10 classes (benches/python/make_head_data.py)
#   - mr: graft's MiniLM-L6 embeddings of MR (10,662 sentences, 384-d), split 80/10/10
# For each: graft's logistic (C = 1, tol 1e-4) and MLP (256 ReLU, Adam(W) 1e-3, batches of 200, early
# stopping with patience 10) vs LogisticRegression / MLPClassifier with the same settings. Prints accuracy
# and fit seconds per model and the logistic fit-time ratio.
set -euo pipefail
# ONNX Runtime's telemetry stays off in the Python peers too (graft keeps its own off).
export ORT_DISABLE_TELEMETRY=1
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${GRAFT_CACHE:-$root/.graft-cache}
epochs=${EPOCHS:-50}
cd "$root"
venv="$cache/bench-python"
if [ ! -x "$venv/bin/python" ]; then python3 -m venv "$venv"; fi
"$venv/bin/pip" install --quiet --disable-pip-version-check numpy==2.4.6 scikit-learn==1.9.1
cargo build --quiet --release -p graft-benches --bin heads_vs_sklearn
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"$venv/bin/python" benches/python/make_head_data.py synthetic "$scratch/synthetic"
cargo xtask fetch benches/extract_mr.toml >/dev/null
cargo xtask extract --model minilm-l6-int8 --input "$cache/datasets/mr/mr.csv" --text-column text \
  --output "$scratch/mr.npy" --no-progress --cache-dir "$cache" >/dev/null
"$venv/bin/python" benches/python/make_head_data.py mr "$scratch/mr.npy" "$cache/datasets/mr/mr.csv" "$scratch/mr"
for set in synthetic mr; do
  echo "== $set"
  target/release/heads_vs_sklearn "$scratch/$set" 1.0 "$epochs" | tee "$scratch/$set.graft"
  "$venv/bin/python" benches/python/heads_sklearn.py "$scratch/$set" 1.0 "$epochs" | tee "$scratch/$set.sklearn"
  python3 - "$scratch/$set.graft" "$scratch/$set.sklearn" <<'PY'
import json, sys
g = {r["head"]: r for r in map(json.loads, open(sys.argv[1]))}
s = {r["head"]: r for r in map(json.loads, open(sys.argv[2]))}
for head in ("logistic", "mlp"):
    print(f"{head}: accuracy graft {g[head]['accuracy']:.4f} vs scikit-learn {s[head]['accuracy']:.4f} "
          f"({100 * (g[head]['accuracy'] - s[head]['accuracy']):+.2f} points); fit {g[head]['fit_seconds']:.2f} s vs "
          f"{s[head]['fit_seconds']:.2f} s (graft {s[head]['fit_seconds'] / g[head]['fit_seconds']:.2f}x faster)")
PY
done
