"""1,600 × 1,280 float32 features in 10 classes (a low-rank class signal plus correlated noise), written
as features.npy and labels.csv (label, split: 80/20 train/test), for the PCA-whitening comparison."""
import sys
import numpy as np

out = sys.argv[1]
rng = np.random.default_rng(15)
n, d, classes = 1600, 1280, 10
y = np.arange(n) % classes
centres = rng.normal(size=(classes, 64)) @ rng.normal(size=(64, d)) / 60
mixing = rng.normal(size=(d, d)) / np.sqrt(d)
x = centres[y] + rng.normal(size=(n, d)) @ mixing
x = x.astype(np.float32)
np.save(f"{out}/features.npy", x)
split = np.where(rng.random(n) < 0.8, "train", "test")
with open(f"{out}/labels.csv", "w") as f:
    f.write("label,split\n")
    for label, s in zip(y, split):
        f.write(f"c{label},{s}\n")
