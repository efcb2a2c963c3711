"""scikit-learn's side of the PCA-whitening comparison: PCA(whiten=True) + LogisticRegression(C=1) fitted
on the train rows of labels.csv, scored on its test rows. Prints one JSON line (fit+predict seconds)."""
import csv, json, sys, time
import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression

folder = sys.argv[1]
x = np.load(f"{folder}/features.npy")
rows = list(csv.DictReader(open(f"{folder}/labels.csv")))
y = np.array([r["label"] for r in rows])
train = np.array([r["split"] == "train" for r in rows])
started = time.perf_counter()
pca = PCA(whiten=True).fit(x[train])
head = LogisticRegression(C=1.0, max_iter=1000).fit(pca.transform(x[train]), y[train])
accuracy = float((head.predict(pca.transform(x[~train])) == y[~train]).mean())
seconds = time.perf_counter() - started
print(json.dumps({"accuracy": accuracy, "seconds": seconds}))
