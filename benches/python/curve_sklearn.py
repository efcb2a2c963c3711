"""scikit-learn's side of the learning-curve comparison: the quickstart's protocol on the same rows.

Usage: curve_sklearn.py <embeddings.npy> <mr.csv> <splits.csv>. For K in 1…256 examples per class (5 seeded
draws each) and the whole training split: LogisticRegression(C=1, tol=1e-6) on graft's MiniLM features and
TfidfVectorizer(max_features=5000) + LogisticRegression(C=1, tol=1e-4) on the texts, each scored on the
test rows. Prints one JSON line with the seconds for the whole curve (what a careful user would write:
one process, scikit-learn's defaults otherwise)."""
import csv, json, sys, time
import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

x = np.load(sys.argv[1])
texts = [r["text"] for r in csv.DictReader(open(sys.argv[2]))]
splits = list(csv.DictReader(open(sys.argv[3])))
rows = np.array([int(r["row"]) for r in splits])
labels = np.array([r["label"] for r in splits])
train = rows[[r["split"] == "train" for r in splits]]
test = rows[[r["split"] == "test" for r in splits]]
label_of = dict(zip(rows, labels))
y = np.array([label_of.get(i, "") for i in range(len(texts))])
started = time.perf_counter()
rng = np.random.default_rng(0)
classes = sorted(set(y[train]))
points = []
for k in [1, 2, 4, 8, 16, 32, 64, 128, 256, None]:
    for _ in range(5 if k else 1):
        if k:
            drawn = np.concatenate([rng.choice(train[y[train] == c], k, replace=False) for c in classes])
        else:
            drawn = train
        transfer = LogisticRegression(C=1.0, max_iter=1000, tol=1e-6).fit(x[drawn], y[drawn])
        tfidf = TfidfVectorizer(max_features=5000)
        baseline = LogisticRegression(C=1.0, max_iter=1000, tol=1e-4).fit(
            tfidf.fit_transform([texts[i] for i in drawn]), y[drawn])
        points.append((float((transfer.predict(x[test]) == y[test]).mean()),
                       float((baseline.predict(tfidf.transform([texts[i] for i in test])) == y[test]).mean())))
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "whole_split": points[-1]}))
