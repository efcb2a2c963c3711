#!/usr/bin/env bash
# Fine-tuning's matrix products on their real shapes (MiniLM-L6, batches of 32 rows of ~32 tokens), graft's
# kernels (candle's `gemm`, and faer) against torch.mm / torch.bmm at the same thread count, one invocation.
#
#   benches/matmul_vs_torch.sh [threads]     # default 2
#
# The PyTorch side runs in the venv fine_tune_vs_torch.sh uses (in the cache; torch 2.15.0 from PyPI, its
# CUDA build, ~4 GB with the NVIDIA wheels; it runs on CPU here), installed from
# benches/python/fine_tune_requirements.txt: every package pinned by version and sha256.
set -euo pipefail
# ONNX Runtime's telemetry stays off in the Python peers too (graft keeps its own off).
export ORT_DISABLE_TELEMETRY=1
threads=${1:-2}
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${GRAFT_CACHE:-$root/.graft-cache}
venv=${BENCH_VENV:-$cache/bench-fine-tune}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir --require-hashes \
    -r "$root/benches/python/fine_tune_requirements.txt"
fi
cd "$root"
cargo build --quiet -p graft-benches --bin matmul_shapes
graft=$(./target/debug/matmul_shapes "$threads")
torch=$("$venv/bin/python" benches/python/matmul_torch.py "$threads")
python3 - "$graft" "$torch" <<'PY'
import json, sys
graft = [json.loads(l) for l in sys.argv[1].splitlines()]
torch = [json.loads(l) for l in sys.argv[2].splitlines()]
print(f"| shape ({graft[0]['threads']} threads) | candle GFLOP/s | faer GFLOP/s | torch GFLOP/s | candle / torch | faer / torch |")
print("|---|---:|---:|---:|---:|---:|")
for g, t in zip(graft, torch):
    c, f, p = g["candle_gflops"], g["faer_gflops"], t["torch_gflops"]
    print(f"| {g['shape']} | {c:.0f} | {f:.0f} | {p:.0f} | {c / p:.2f} | {f / p:.2f} |")
PY
