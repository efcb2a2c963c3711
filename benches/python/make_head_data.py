"""Writes the feature sets benches/heads_vs_sklearn.sh compares heads on, as .npy files.

synthetic <out>: 60,000 train / 6,000 validation / 10,000 test rows of 1,280 float32 features in 10 classes
    (Gaussian classes around random means, some classes closer than others), seed 0.
mr <embeddings.npy> <mr.csv> <out>: graft's MR embeddings with their labels, split 80/10/10 stratified, seed 0.
"""
import csv
import sys
from pathlib import Path

import numpy as np


def save(out, parts):
    out.mkdir(parents=True, exist_ok=True)
    for name, (x, y) in parts.items():
        np.save(out / f"x_{name}.npy", x.astype(np.float32))
        np.save(out / f"y_{name}.npy", y.astype(np.int64))


def synthetic(out):
    rng = np.random.default_rng(0)
    k, d = 10, 1280
    means = rng.normal(size=(k, d)) * 0.06
    means[1] = means[0] + rng.normal(size=d) * 0.03  # two nearly confusable classes
    n = 76_000
    y = rng.integers(0, k, size=n)
    x = means[y] + rng.normal(size=(n, d)).astype(np.float32)
    save(out, {"train": (x[:60_000], y[:60_000]), "val": (x[60_000:66_000], y[60_000:66_000]),
               "test": (x[66_000:], y[66_000:])})


def mr(embeddings, table, out):
    x = np.load(embeddings)
    with open(table, newline="") as f:
        labels = [row["label"] for row in csv.DictReader(f)]
    classes = sorted(set(labels))
    y = np.array([classes.index(l) for l in labels])
    rng = np.random.default_rng(0)
    parts = {"train": [], "val": [], "test": []}
    for c in range(len(classes)):
        idx = rng.permutation(np.flatnonzero(y == c))
        a, b = int(len(idx) * 0.8), int(len(idx) * 0.9)
        parts["train"] += list(idx[:a]); parts["val"] += list(idx[a:b]); parts["test"] += list(idx[b:])
    save(out, {name: (x[sorted(i)], y[sorted(i)]) for name, i in parts.items()})


if __name__ == "__main__":
    if sys.argv[1] == "synthetic":
        synthetic(Path(sys.argv[2]))
    else:
        mr(sys.argv[2], sys.argv[3], Path(sys.argv[4]))
