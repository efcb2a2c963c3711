"""Per-row cosine between two embedding files (.npy, row i = text i).

Usage: cosine_rows.py <reference.npy> <other.npy> [name]
Prints one line: `<name>: min X mean Y` of the cosine of each row pair.
"""

import sys

import numpy as np


def main():
    ref, other = np.load(sys.argv[1]), np.load(sys.argv[2])
    name = sys.argv[3] if len(sys.argv) > 3 else sys.argv[2]
    if ref.shape != other.shape:
        sys.exit(f"{name}: shapes differ: {ref.shape} vs {other.shape}")
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    cos = (unit(ref.astype(np.float64)) * unit(other.astype(np.float64))).sum(1)
    print(f"{name}: min {cos.min():.6f} mean {cos.mean():.6f} rows {len(cos)}")


if __name__ == "__main__":
    main()
