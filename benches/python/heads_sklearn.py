"""scikit-learn's side of benches/heads_vs_sklearn.sh: the same .npy features, splits and settings as graft's
heads_vs_sklearn binary; prints one JSON line per model.

Usage: heads_sklearn.py <dir> <C> <mlp-epochs>
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier

d = Path(sys.argv[1])
c = float(sys.argv[2])
epochs = int(sys.argv[3])
x_train, y_train = np.load(d / "x_train.npy"), np.load(d / "y_train.npy")
x_val, y_val = np.load(d / "x_val.npy"), np.load(d / "y_val.npy")
x_test, y_test = np.load(d / "x_test.npy"), np.load(d / "y_test.npy")

# graft's C is scikit-learn's for 3+ classes; with two classes scikit-learn fits one weight vector, and its
# C is twice graft's (see graft_heads::Logistic).
sk_c = c * 2 if len(np.unique(y_train)) == 2 else c
start = time.perf_counter()
model = LogisticRegression(C=sk_c, tol=1e-4, max_iter=1000).fit(x_train, y_train)
seconds = time.perf_counter() - start
print(json.dumps({"library": "scikit-learn", "head": "logistic", "accuracy": round(model.score(x_test, y_test), 4),
                  "fit_seconds": round(seconds, 3), "iterations": int(np.max(model.n_iter_))}))

# The same network: one hidden layer of 256 ReLU units, Adam lr 1e-3, L2 1e-4, batches of 200, early stopping
# on a validation share with patience 10 (scikit-learn holds out its own 10%; graft gets x_val).
start = time.perf_counter()
mlp = MLPClassifier(hidden_layer_sizes=(256,), alpha=1e-4, batch_size=200, learning_rate_init=1e-3,
                    max_iter=epochs, early_stopping=True, n_iter_no_change=10, random_state=0)
mlp.fit(np.concatenate([x_train, x_val]), np.concatenate([y_train, y_val]))
seconds = time.perf_counter() - start
print(json.dumps({"library": "scikit-learn", "head": "mlp", "accuracy": round(mlp.score(x_test, y_test), 4),
                  "fit_seconds": round(seconds, 3), "iterations": int(mlp.n_iter_)}))
