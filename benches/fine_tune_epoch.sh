#!/usr/bin/env bash
# One fine-tuning epoch on 1,600 MR rows, two ways, in one invocation: the top 2 blocks from the frozen
# blocks' cached states (graft's default) against back-propagation through every block and the embeddings
# (`layers = "all"`). Prints each run's epoch seconds from metrics.json and their ratio.
#
#   benches/fine_tune_epoch.sh
set -euo pipefail
# ONNX Runtime's telemetry stays off in the Python peers too (graft keeps its own off).
export ORT_DISABLE_TELEMETRY=1
cd "$(dirname "$0")/.."
runs=$(mktemp -d)
trap 'rm -rf "$runs"' EXIT
epoch_seconds() {
  local layers=$1
  sed -e "s/^layers = 2 .*/layers = $layers/" -e 's/^epochs = 2/epochs = 1/' -e 's/^patience = 1 .*//' \
      -e 's/^name = "fine-tune"/name = "fine-tune-epoch"/' -e 's/^dataset = "mr"/dataset = "mr"\nsample = 2000/' \
      pipelines/fine-tune.toml > "$runs/pipeline.toml"
  cargo xtask run "$runs/pipeline.toml" --no-progress --runs-dir "$runs" > /dev/null
  python3 - "$runs" <<'PY'
import glob, json, sys
path = sorted(glob.glob(sys.argv[1] + "/fine-tune-epoch/*/metrics.json"))[-1]
d = next(t for t in json.load(open(path))["techniques"] if t["technique"] == "fine_tune")["details"]
print(d["epochs"][0]["seconds"], d["training_rows"], d["trainable_blocks"])
PY
  rm -rf "$runs/fine-tune-epoch"
}
read -r cached rows blocks < <(epoch_seconds 2)
read -r full _ all_blocks < <(epoch_seconds '"all"')
python3 - "$cached" "$full" "$rows" "$blocks" "$all_blocks" <<'PY'
import sys
cached, full, rows = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
print(f"| epoch over {rows} MR rows | seconds | rows/s |\n|---|---|---|")
print(f"| top {sys.argv[4]} blocks from cached states | {cached:.1f} | {rows / cached:.0f} |")
print(f"| all {sys.argv[5]} blocks + embeddings (full back-propagation) | {full:.1f} | {rows / full:.0f} |")
print(f"cached states: {full / cached:.2f}x faster per epoch")
PY
