"""The `setfit` library's training on the rows a graft SetFit run learnt from.

    python setfit_peer.py --csv sample.csv --splits run/splits.csv --model <sentence-transformers folder>

SetFit 1.2's defaults where graft's pipelines/setfit.toml follows them: num_iterations 20 (40 pairs per
row), 1 epoch, batch 16, body learning rate 2e-5, warm-up 10%; then its LogisticRegression head. Prints one
JSON line: the seconds of `trainer.train()` (pairs, body and head) and the test accuracy.
"""

import argparse
import csv
import json
import time

import torch
from datasets import Dataset
from setfit import SetFitModel, Trainer, TrainingArguments


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--csv", required=True)
    p.add_argument("--splits", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=42)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    with open(a.csv, newline="") as f:
        data = list(csv.DictReader(f))
    with open(a.splits, newline="") as f:
        splits = list(csv.DictReader(f))
    classes = sorted({r["label"] for r in data})

    def part(name):
        rows = [int(r["row"]) for r in splits if r["split"] == name]
        return Dataset.from_dict({
            "text": [data[i]["text"] for i in rows],
            "label": [classes.index(data[i]["label"]) for i in rows],
        })

    train, test = part("train"), part("test")
    model = SetFitModel.from_pretrained(a.model)
    model.model_body.max_seq_length = 256
    arguments = TrainingArguments(
        batch_size=16, num_epochs=1, num_iterations=20, body_learning_rate=2e-5,
        warmup_proportion=0.1, seed=a.seed, report_to="none", eval_strategy="no", save_strategy="no",
    )
    trainer = Trainer(model=model, args=arguments, train_dataset=train)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    predicted = model.predict(test["text"])
    accuracy = sum(int(p) == t for p, t in zip(predicted, test["label"])) / len(test)
    print(json.dumps({"seconds": seconds, "rows": len(train), "test_rows": len(test), "accuracy": accuracy}))


if __name__ == "__main__":
    main()
