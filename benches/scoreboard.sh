#!/usr/bin/env bash
# Every speed comparison of issue 15 in one invocation on one machine, printed as one table of ratios.
#
#   benches/scoreboard.sh          # short mode (default): one round each, a 20,000-row memory check
#   MODE=full benches/scoreboard.sh  # two extraction rounds, 100,000-row memory check
#
# graft runs as users run it (the dev profile, `cargo xtask …`); the baselines run in a venv in the cache
# with pinned wheels (numpy 2.4.6, scikit-learn 1.9.1, onnxruntime 1.31.1, tokenizers 0.23.3).
set -euo pipefail
# ONNX Runtime's telemetry stays off in the Python peers too (graft keeps its own off).
export ORT_DISABLE_TELEMETRY=1
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${GRAFT_CACHE:-$root/.graft-cache}
mode=${MODE:-short}
cd "$root"
venv="$cache/bench-python"
if [ ! -x "$venv/bin/python" ]; then python3 -m venv "$venv"; fi
"$venv/bin/pip" install --quiet --disable-pip-version-check numpy==2.4.6 scikit-learn==1.9.1 \
  onnxruntime==1.31.1 tokenizers==0.23.3
export GRAFT_CACHE="$cache"
cargo build --quiet -p xtask
cargo xtask fetch >/dev/null
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
board="$scratch/board.jsonl"
row() { # name graft baseline unit ratio goal met
  python3 -c 'import json,sys; print(json.dumps(dict(zip(["name","graft","baseline","unit","ratio","goal","met"], sys.argv[1:]))))' "$@" >> "$board"
}
seconds_of() { python3 -c "import json,glob; print(round(json.load(open(glob.glob('$1/*/*/metrics.json')[0]))['timings_seconds']['total'], 2))"; }

echo "== 1. PCA whitening of 1,600 × 1,280 features + logistic (graft run vs PCA(whiten=True) + LogisticRegression)" >&2
mkdir -p "$scratch/pca"
"$venv/bin/python" benches/python/make_pca_data.py "$scratch/pca"
cp benches/pca_whiten.toml "$scratch/pca/"
start=$(date +%s.%N)
cargo xtask run "$scratch/pca/pca_whiten.toml" --no-progress --runs-dir "$scratch/pca/runs" >/dev/null
graft=$(python3 -c "print(round($(date +%s.%N) - $start, 2))")
sk=$("$venv/bin/python" benches/python/pca_sklearn.py "$scratch/pca" | python3 -c "import json,sys; print(round(json.load(sys.stdin)['seconds'], 2))")
row "PCA whitening 1600×1280 + logistic (whole graft process vs scikit-learn fit+predict)" "$graft" "$sk" s \
  "$(python3 -c "print(f'{$graft / $sk:.2f}× scikit-learn')")" "≤ 3× scikit-learn" "$(python3 -c "print('yes' if $graft <= 3 * $sk else 'no')")"

echo "== 1b. fusion.toml and domain-adaptation.toml with cached features" >&2
for p in fusion domain-adaptation; do
  cargo xtask run "pipelines/$p.toml" --no-progress --runs-dir "$scratch/$p-warm" >/dev/null
  cargo xtask run "pipelines/$p.toml" --no-progress --runs-dir "$scratch/$p" >/dev/null
  s=$(seconds_of "$scratch/$p")
  row "pipelines/$p.toml, cached features" "$s" "-" s "-" "< 10 s" "$(python3 -c "print('yes' if $s < 10 else 'no')")"
done

echo "== 2. text extraction (graft run and extract on its float32 graph vs Python onnxruntime on the int8 file)" >&2
rounds=1; [ "$mode" = full ] && rounds=2
ROUNDS=$rounds benches/extract_vs_python.sh > "$scratch/extract.txt"
python3 - "$scratch/extract.txt" >> "$board" <<'PY'
import json, re, sys
text = open(sys.argv[1]).read()
best = re.search(r"best: python ([0-9.]+) rows/s \(batch (\d+)\); graft run ([0-9.]+) rows/s .*graft extract ([0-9.]+) rows/s", text)
long = re.search(r"long: python ([0-9.]+) rows/s \(batch (\d+)\); graft extract ([0-9.]+) rows/s", text)
acc = re.search(r"accuracy: graft extract: min ([0-9.]+) mean ([0-9.]+).*python int8 file: min ([0-9.]+) mean ([0-9.]+)", text)
note = f"cosine to the float32 graph: graft min {acc[1]} mean {acc[2]}; the int8 file min {acc[3]} mean {acc[4]}"
def row(name, graft, base, batch):
    g, b = float(graft), float(base)
    print(json.dumps({"name": f"{name} (Python's best batch: {batch}; {note})", "graft": graft, "baseline": base,
                      "unit": "rows/s", "ratio": f"{g / b:.2f}×", "goal": "≥ 1.2×", "met": "yes" if g >= 1.2 * b else "no"}))
row("MR extraction, cargo xtask run", best[3], best[1], best[2])
row("MR extraction, cargo xtask extract, 2 sessions", best[4], best[1], best[2])
row("long documents (800 × 12 MR sentences, 256 tokens), cargo xtask extract", long[3], long[1], long[2])
PY

echo "== 3. logistic head at 60k × 1280 (and MR) vs LogisticRegression" >&2
EPOCHS=5 benches/heads_vs_sklearn.sh > "$scratch/heads.txt"
python3 - "$scratch/heads.txt" >> "$board" <<'PY'
import json, re, sys
current = None
for line in open(sys.argv[1]):
    if line.startswith("== "):
        current = line[3:].strip()
    m = re.match(r"logistic: accuracy graft ([0-9.]+) vs scikit-learn ([0-9.]+) .*fit ([0-9.]+) s vs ([0-9.]+) s", line)
    if m:
        g, s = float(m[3]), float(m[4])
        goal = "≥ 3×" if current == "synthetic" else "-"
        print(json.dumps({"name": f"logistic fit, {current} (accuracy {m[1]} vs {m[2]})", "graft": m[3],
                          "baseline": m[4], "unit": "s", "ratio": f"{s / g:.2f}× faster", "goal": goal,
                          "met": ("yes" if s >= 3 * g else "no") if goal != "-" else "-"}))
PY

echo "== 4. the quickstart's learning curve vs the same protocol in scikit-learn" >&2
cargo xtask run pipelines/quickstart.toml --no-progress --runs-dir "$scratch/quickstart" >/dev/null
run_dir=$(ls -d "$scratch"/quickstart/quickstart/*/)
curve=$(python3 -c "import json; print(round(json.load(open('$run_dir/metrics.json'))['learning_curve']['seconds'], 2))")
cargo xtask extract --model minilm-l6 --input "$cache/datasets/mr/mr.csv" --text-column text \
  --output "$scratch/mr.npy" --no-progress >/dev/null
sk=$("$venv/bin/python" benches/python/curve_sklearn.py "$scratch/mr.npy" "$cache/datasets/mr/mr.csv" \
  "$run_dir/splits.csv" | python3 -c "import json,sys; print(round(json.load(sys.stdin)['seconds'], 2))")
row "learning curve, quickstart protocol (9 shots × 5 draws + whole split)" "$curve" "$sk" s \
  "$(python3 -c "print(f'{$sk / $curve:.2f}× faster')")" "≥ 2×" "$(python3 -c "print('yes' if $sk >= 2 * $curve else 'no')")"

echo "== 5. extraction memory (quick mode of extract_1m_rss.sh)" >&2
rows=20000; [ "$mode" = full ] && rows=100000
rss=$(ROWS=$rows benches/extract_1m_rss.sh | sed -n 's/.*Maximum resident set size (kbytes): //p')
row "extract of $rows rows, peak RSS" "$((rss / 1024))" "-" MiB "-" "flat in rows" "-"

python3 - "$board" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| comparison | graft | baseline | unit | ratio | goal | met |")
print("|---|---:|---:|---|---|---|---|")
for r in rows:
    print(f"| {r['name']} | {r['graft']} | {r['baseline']} | {r['unit']} | {r['ratio']} | {r['goal']} | {r['met']} |")
PY
