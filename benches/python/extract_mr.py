"""Python baseline for feature extraction: onnxruntime 1.31.1 + tokenizers, the practice of
sentence-transformers users: batches formed from length-sorted rows, each padded to its longest row,
2 intra-op threads, masked mean pooling and L2 normalisation.

Usage: extract_mr.py <cache dir> [--texts CSV] [--batch N] [--model ONNX] [--save NPY]
  --texts  a CSV with a `text` column (default: the cached MR set)
  --batch  rows per call (default 64)
  --model  the graph (default: the shipped int8 MiniLM-L6 file)
  --save   write the embeddings, row i = text i, as float32 .npy (after the timing)
Prints rows/s (run by benches/extract_vs_python.sh).
"""

import argparse
import csv
import os
import time

# ONNX Runtime's telemetry off, as graft keeps it (read when the runtime initialises: set before the import).
os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("cache")
    parser.add_argument("--texts")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--model")
    parser.add_argument("--save")
    args = parser.parse_args()
    cache = args.cache
    source = args.texts or f"{cache}/datasets/mr/mr.csv"
    model = args.model or f"{cache}/models/minilm-l6-int8/model.onnx"
    texts = [row["text"] for row in csv.DictReader(open(source, newline=""))]
    tokenizer = Tokenizer.from_file(f"{cache}/models/minilm-l6-int8/tokenizer.json")
    tokenizer.no_padding()
    tokenizer.enable_truncation(256)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    started = time.perf_counter()
    encodings = tokenizer.encode_batch(texts)
    order = sorted(range(len(encodings)), key=lambda i: -len(encodings[i].ids))
    out = np.zeros((len(texts), 384), np.float32)
    for start in range(0, len(order), args.batch):
        batch = order[start : start + args.batch]
        width = max(len(encodings[i].ids) for i in batch)
        ids = np.zeros((len(batch), width), np.int64)
        mask = np.zeros_like(ids)
        for r, i in enumerate(batch):
            n = len(encodings[i].ids)
            ids[r, :n] = encodings[i].ids
            mask[r, :n] = 1
        states = session.run(
            ["last_hidden_state"],
            {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
        )[0]
        pooled = (states * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)
        out[batch] = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    seconds = time.perf_counter() - started
    if args.save:
        np.save(args.save, out)
    print(f"{len(texts) / seconds:.1f}")


if __name__ == "__main__":
    main()
