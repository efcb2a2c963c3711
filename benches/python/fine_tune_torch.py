"""graft's fine-tuning recipe in plain PyTorch + transformers, on the rows a graft run trained on.

    python fine_tune_torch.py --csv sample.csv --splits run/splits.csv --weights model.safetensors \
        --tokenizer tokenizer.json --layers 2|all [--objective classification|contrastive] ...

The recipe is graft's (crates/tune): masked mean pooling and L2 normalisation; a zero-initialised linear
head on it (classification, cross-entropy) or SetFit's cosine-similarity loss on drawn pairs (contrastive);
AdamW (betas 0.9/0.999, eps 1e-8) with layer-wise rates (top block at --lr, each block below ×--layer-decay,
the embeddings one step further), no decay on biases and layer norms, warm-up then linear decay, gradient
clipping at 1.0, dropout --dropout everywhere BERT puts it, batches of similar length. The bottom blocks
stay frozen (PyTorch recomputes them every step, as a user's script would). Prints one JSON line: the
epoch's seconds and the losses of the first steps.
"""

import argparse
import csv
import json
import random
import time

import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer
from transformers import BertConfig, BertModel


def args():
    p = argparse.ArgumentParser()
    p.add_argument("--csv", required=True)
    p.add_argument("--splits", required=True)
    p.add_argument("--weights", required=True)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--layers", default="2")
    p.add_argument("--objective", default="classification")
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--head-lr", type=float, default=1e-2)
    p.add_argument("--layer-decay", type=float, default=0.9)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--warmup", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--trace", help="graft's steps (tune_trace's JSON lines): train on their rows in their "
                   "batch order with dropout off, and print each step's loss beside graft's")
    return p.parse_args()


def main():
    a = args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = random.Random(a.seed)
    with open(a.csv, newline="") as f:
        data = list(csv.DictReader(f))
    with open(a.splits, newline="") as f:
        train_rows = [int(r["row"]) for r in csv.DictReader(f) if r["split"] == "train"]
    trace = None
    if a.trace:
        with open(a.trace) as f:
            trace = [json.loads(line) for line in f if line.strip()]
        traced = {r for step in trace for r in step["rows"]}
        train_rows = [r for r in train_rows if r in traced]
        a.dropout = 0.0
    classes = sorted({r["label"] for r in data})
    tokenizer = Tokenizer.from_file(a.tokenizer)
    tokenizer.no_padding()
    tokenizer.enable_truncation(a.max_length)
    texts = [data[i]["text"] for i in train_rows]
    ids = [e.ids for e in tokenizer.encode_batch(texts)]
    labels = [classes.index(data[i]["label"]) for i in train_rows]

    config = BertConfig(
        vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
        intermediate_size=1536, max_position_embeddings=512, type_vocab_size=2,
        hidden_act="gelu", layer_norm_eps=1e-12, hidden_dropout_prob=a.dropout,
        attention_probs_dropout_prob=a.dropout, attn_implementation="eager",
    )
    model = BertModel(config, add_pooling_layer=False)
    state = {k: v for k, v in load_file(a.weights).items() if not k.startswith("pooler.")}
    model.load_state_dict(state, strict=False)
    model.train()
    layers = config.num_hidden_layers
    trained = layers if a.layers == "all" else int(a.layers)
    for p in model.parameters():
        p.requires_grad_(False)
    groups = []

    def add(named, lr):
        decayed = [p for n, p in named if n.endswith("weight") and "LayerNorm" not in n]
        plain = [p for n, p in named if not (n.endswith("weight") and "LayerNorm" not in n)]
        for params, wd in ((decayed, a.weight_decay), (plain, 0.0)):
            for p in params:
                p.requires_grad_(True)
            if params:
                groups.append({"params": params, "lr": lr, "weight_decay": wd})

    for depth in range(trained):
        block = model.encoder.layer[layers - 1 - depth]
        add(list(block.named_parameters()), a.lr * a.layer_decay**depth)
    if trained == layers:
        add(list(model.embeddings.named_parameters()), a.lr * a.layer_decay**layers)
    head = None
    if a.objective == "classification":
        head = torch.nn.Linear(384, len(classes))
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.zeros_(head.bias)
        groups.append({"params": list(head.parameters()), "lr": a.head_lr, "weight_decay": 0.0})

    # Training units: rows, or SetFit's pairs (per row and iteration one same-class, one other-class).
    if a.objective == "classification":
        units = [(i,) for i in range(len(ids))]
    else:
        units = []
        for i in range(len(ids)):
            same = [j for j in range(len(ids)) if j != i and labels[j] == labels[i]]
            other = [j for j in range(len(ids)) if labels[j] != labels[i]]
            for k in range(2 * a.iterations):
                pool, target = (same, 1.0) if k % 2 == 0 else (other, 0.0)
                if pool:
                    units.append((i, rng.choice(pool), target))
    longest = [max(len(ids[u]) for u in unit[:2]) if len(unit) > 1 else len(ids[unit[0]]) for unit in units]
    order = list(range(len(units)))
    rng.shuffle(order)
    batches = []
    for w in range(0, len(order), a.batch_size * 16):
        window = sorted(order[w : w + a.batch_size * 16], key=lambda u: longest[u])
        batches += [window[s : s + a.batch_size] for s in range(0, len(window), a.batch_size)]
    rng.shuffle(batches)
    if trace is not None:
        position = {row: k for k, row in enumerate(train_rows)}
        batches = [[position[r] for r in step["rows"]] for step in trace]

    optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.999), eps=1e-8)
    warmup = int(-(-a.warmup * len(batches) // 1))
    peaks = [g["lr"] for g in optimizer.param_groups]

    def factor(step):
        if step < warmup:
            return (step + 1) / warmup
        return 1.0 - (step - warmup) / max(len(batches) - warmup, 1)

    def embed(rows):
        width = max(len(ids[r]) for r in rows)
        input_ids = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for k, r in enumerate(rows):
            input_ids[k, : len(ids[r])] = torch.tensor(ids[r])
            mask[k, : len(ids[r])] = 1
        states = model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(2).to(states.dtype)
        mean = (states * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return mean / (mean.pow(2).sum(1, keepdim=True) + 1e-12).sqrt()

    losses = []
    started = time.perf_counter()
    for step, batch in enumerate(batches):
        for g, peak in zip(optimizer.param_groups, peaks):
            g["lr"] = peak * factor(step)
        if a.objective == "classification":
            rows = [units[u][0] for u in batch]
            logits = head(embed(rows))
            loss = torch.nn.functional.cross_entropy(logits, torch.tensor([labels[r] for r in rows]))
        else:
            u = embed([units[b][0] for b in batch])
            v = embed([units[b][1] for b in batch])
            target = torch.tensor([units[b][2] for b in batch])
            loss = ((u * v).sum(1) - target).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
        optimizer.step()
        losses.append(loss.item())
    seconds = time.perf_counter() - started
    result = {"seconds": seconds, "steps": len(batches), "rows": len(ids), "units": len(units),
              "first_losses": losses[:20], "mean_loss": sum(losses) / len(losses)}
    if trace is not None:
        result["graft_losses"] = [step["loss"] for step in trace]
        result["largest_difference"] = max(abs(x - y) for x, y in zip(losses, result["graft_losses"]))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
