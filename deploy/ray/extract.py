#!/usr/bin/env python3
"""Embed a table's texts on a Ray cluster with graft: one graft.Embedder per actor, rows in input order.

    pip install 'graft-ml[ray]'            # or the wheel `cargo xtask test` builds, plus ray[data]
    python deploy/ray/extract.py --input reviews.csv --text-column text --output reviews.npy

Without --address it starts a local Ray (``ray.init()`` on this machine). With --compare it checks the
result against a ``graft extract`` output of the same input (a .npy file) byte for byte and says so.

The dataset is cut into blocks of exactly --chunk-rows rows in file order, and each actor embeds whole
blocks: the chunks ``graft extract`` forms, so the bytes agree even for a graph whose operators depend on the
batch (DynamicQuantizeLinear quantises each batch's activations with one scale).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import ray

import graft.ray


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", required=True, help="a .csv table")
    p.add_argument("--text-column", default="text")
    p.add_argument("--model", default="minilm-l6-int8", help="registry name or model folder")
    p.add_argument("--output", required=True, help="a .npy file of embeddings, rows in input order")
    p.add_argument("--actors", type=int, default=2, help="Ray actors, each holding one embedder")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads (and Ray CPUs) per actor")
    p.add_argument(
        "--chunk-rows",
        type=int,
        default=graft.ray.CHUNK_ROWS,
        help="rows per block and batch: graft extract's --chunk-rows, whose output this reproduces",
    )
    p.add_argument("--address", default=None, help="an existing Ray cluster (default: start one here)")
    p.add_argument("--compare", default=None, help="a `graft extract` .npy of the same input to compare with")
    args = p.parse_args()

    started = time.perf_counter()
    if args.address:
        ray.init(address=args.address)
    else:
        # One CPU more than the actors hold, for the tasks that read and cut the table.
        ray.init(num_cpus=args.actors * args.threads + 1, include_dashboard=False)
    ray_up = time.perf_counter()
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # rows come back in input order

    ds = ray.data.read_csv(args.input)
    # Blocks of exactly --chunk-rows rows in file order (`strict`; the last one shorter): each becomes one batch.
    ds = ds.repartition(target_num_rows_per_block=args.chunk_rows, strict=True)
    ds = ds.map_batches(
        graft.ray.Embed,
        fn_constructor_kwargs={
            "model": args.model,
            "text_column": args.text_column,
            "threads": args.threads,
            "chunk_rows": args.chunk_rows,
        },
        batch_size=args.chunk_rows,
        concurrency=args.actors,
        num_cpus=args.threads,
    )
    batches = list(ds.iter_batches(batch_format="numpy", batch_size=None))
    embeddings = np.concatenate([b["embedding"] for b in batches])
    np.save(args.output, embeddings)
    done = time.perf_counter()
    print(
        f"{args.output}: {embeddings.shape[0]} rows × {embeddings.shape[1]} on {args.actors} Ray actors in "
        f"{done - started:.1f} s ({done - ray_up:.1f} s after Ray started)"
    )

    status = 0
    if args.compare:
        extracted = np.load(args.compare)
        if extracted.shape == embeddings.shape and np.array_equal(extracted, embeddings):
            print(f"identical to {args.compare} ({extracted.shape[0]} rows, every bit)")
        else:
            differing = (
                int(np.any(extracted != embeddings, axis=1).sum())
                if extracted.shape == embeddings.shape
                else "all"
            )
            print(f"DIFFERS from {args.compare}: {differing} rows", file=sys.stderr)
            status = 1
    ray.shutdown()
    return status


if __name__ == "__main__":
    sys.exit(main())
