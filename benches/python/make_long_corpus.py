"""Writes a CSV of long documents for the extraction benchmark: each joins 12 consecutive MR sentences
(most reach the 256-token limit), as `benches` batch_spread does.

Usage: make_long_corpus.py <mr.csv> <out.csv> [documents=800]
"""

import csv
import sys

SENTENCES_PER_DOCUMENT = 12


def main():
    source, out = sys.argv[1], sys.argv[2]
    documents = int(sys.argv[3]) if len(sys.argv) > 3 else 800
    sentences = [row["text"] for row in csv.DictReader(open(source, newline=""))]
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text"])
        for d in range(documents):
            start = (d * SENTENCES_PER_DOCUMENT) % len(sentences)
            writer.writerow([d, " ".join(sentences[start : start + SENTENCES_PER_DOCUMENT])])


if __name__ == "__main__":
    main()
