"""Writes a CSV of N short texts (3-12 consecutive words of MR sentences, seeded) for the memory benchmark.

Usage: make_short_corpus.py <mr.csv> <out.csv> [rows=1000000]
"""

import csv
import random
import sys


def main():
    source, out = sys.argv[1], sys.argv[2]
    rows = int(sys.argv[3]) if len(sys.argv) > 3 else 1_000_000
    random.seed(7)
    sentences = [row["text"].split() for row in csv.DictReader(open(source, newline=""))]
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text"])
        for i in range(rows):
            words = random.choice(sentences)
            n = random.randint(3, 12)
            start = random.randint(0, max(0, len(words) - n))
            writer.writerow([i, " ".join(words[start : start + n])])


if __name__ == "__main__":
    main()
