"""The inference graphs issue 27 asked to try, built from the float32 MiniLM-L6 weights with onnx.helper and
timed against graft's own graph on the same rows: ONNX Runtime's fused CPU operators (com.microsoft) and
int8 weights quantised here (signed, per output channel). Each prints rows/s (length-sorted batches of 64,
2 threads, as benches/python/extract_mr.py) and the per-row cosine of its embeddings to graft's float32
graph. benches/README.md, "A graph written for speed", has the numbers and what they decided.

Usage: graph_variants.py <cache dir> [rows=3000]   (needs numpy, onnx, onnxruntime, tokenizers)
"""

import csv
import json
import os
import struct
import sys
import tempfile
import time

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

MS = "com.microsoft"
HEADS, HIDDEN, EPS = 12, 384, 1e-12


def read_safetensors(path):
    raw = open(path, "rb").read()
    size = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + size])
    out = {}
    for name, v in header.items():
        if name == "__metadata__" or v["dtype"] != "F32":
            continue
        start, end = v["data_offsets"]
        data = np.frombuffer(raw[8 + size + start : 8 + size + end], np.float32).reshape(v["shape"])
        out[name.removeprefix("bert.")] = data
    return out


def per_channel_int8(w_t):
    """`[in, out]` weights as int8 with one scale per output column (symmetric, full range)."""
    scale = np.abs(w_t).max(axis=0) / 127.0
    scale[scale == 0] = 1.0
    return np.clip(np.round(w_t / scale), -127, 127).astype(np.int8), scale.astype(np.float32)


class Builder:
    def __init__(self):
        self.nodes, self.inits = [], []

    def init(self, name, array):
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op, inputs, output, domain="", **attrs):
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, domain=domain, **attrs))
        return output


def build(w, quantise=(), qattention=False, rounded_only=()):
    """The encoder with fused operators; `quantise` names the dense kinds (qkv, out, up, down) that run
    as DynamicQuantizeMatMul (QAttention for qkv when `qattention`); `rounded_only` rounds those kinds'
    weights to int8 and back, keeping float32 arithmetic (the weight rounding's share of the error)."""
    w = dict(w)
    for kind in rounded_only:
        for name in list(w):
            if dense_kind(name) == kind:
                q, s = per_channel_int8(w[name].T)
                w[name] = (q * s).T.astype(np.float32)
    b = Builder()
    for name, to in [("input_ids", "ids"), ("token_type_ids", "types"), ("attention_mask", "mask")]:
        b.node("Cast", [name], to, to=TensorProto.INT32)
    e = "embeddings."
    x = b.node(
        "EmbedLayerNormalization",
        ["ids", "types", b.init("we", w[e + "word_embeddings.weight"]),
         b.init("pe", w[e + "position_embeddings.weight"]), b.init("te", w[e + "token_type_embeddings.weight"]),
         b.init("eg", w[e + "LayerNorm.weight"]), b.init("eb", w[e + "LayerNorm.bias"]), "mask"],
        "emb", domain=MS, epsilon=EPS,
    )
    b.nodes[-1].output.append("mask_index")
    layer = 0
    while f"encoder.layer.{layer}.attention.self.query.weight" in w:
        x = block(b, w, layer, x, set(quantise), qattention)
        layer += 1
    b.node("Identity", [x], "last_hidden_state")
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"])
              for n in ("input_ids", "attention_mask", "token_type_ids")]
    outputs = [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", HIDDEN])]
    graph = helper.make_graph(b.nodes, "variant", inputs, outputs, b.inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)],
                             ir_version=8)


def dense_kind(name):
    if not name.startswith("encoder.") or not name.endswith(".weight"):
        return None
    for suffix, kind in [("query.weight", "qkv"), ("key.weight", "qkv"), ("value.weight", "qkv"),
                         ("attention.output.dense.weight", "out"), ("intermediate.dense.weight", "up")]:
        if name.endswith(suffix):
            return kind
    return "down" if name.endswith("output.dense.weight") else None


def block(b, w, layer, x, quantise, qattention):
    p = f"encoder.layer.{layer}."
    g = lambda s: w[p + s]  # noqa: E731
    n = lambda s: f"l{layer}_{s}"  # noqa: E731

    def dense(a, name, weight, bias):
        if name.split("_")[-1] in quantise:
            q, s = per_channel_int8(weight.T)
            return b.node("DynamicQuantizeMatMul", [a, b.init(n(name + "_q"), q), b.init(n(name + "_s"), s),
                          b.init(n(name + "_z"), np.zeros(q.shape[1], np.int8)), b.init(n(name + "_b"), bias)],
                          n(name), domain=MS)
        product = b.node("MatMul", [a, b.init(n(name + "_w"), weight.T.copy())], n(name + "_mm"))
        return b.node("Add", [product, b.init(n(name + "_b"), bias)], n(name))

    wqkv = np.concatenate([g(f"attention.self.{k}.weight").T for k in ("query", "key", "value")], 1)
    bqkv = np.concatenate([g(f"attention.self.{k}.bias") for k in ("query", "key", "value")])
    if "qkv" in quantise and qattention:
        xq = b.node("DynamicQuantizeLinear", [x], n("xq"))
        b.nodes[-1].output.extend([n("xs"), n("xz")])
        q, s = per_channel_int8(wqkv)
        ctx = b.node("QAttention", [xq, b.init(n("wqkv"), q), b.init(n("bqkv"), bqkv), n("xs"),
                     b.init(n("sqkv"), s), "mask_index", n("xz")], n("ctx"), domain=MS, num_heads=HEADS)
    else:
        ctx = b.node("Attention", [x, b.init(n("wqkv"), wqkv), b.init(n("bqkv"), bqkv), "mask_index"],
                     n("ctx"), domain=MS, num_heads=HEADS)
    out = dense(ctx, "att_out", g("attention.output.dense.weight"), g("attention.output.dense.bias"))
    x1 = b.node("SkipLayerNormalization", [out, x, b.init(n("g1"), g("attention.output.LayerNorm.weight")),
                b.init(n("b1"), g("attention.output.LayerNorm.bias"))], n("x1"), domain=MS, epsilon=EPS)
    up = dense(x1, "ffn_up", g("intermediate.dense.weight"), np.zeros(4 * HIDDEN, np.float32))
    up = b.node("BiasGelu", [up, b.init(n("bu"), g("intermediate.dense.bias"))], n("gelu"), domain=MS)
    down = dense(up, "ffn_down", g("output.dense.weight"), g("output.dense.bias"))
    return b.node("SkipLayerNormalization", [down, x1, b.init(n("g2"), g("output.LayerNorm.weight")),
                  b.init(n("b2"), g("output.LayerNorm.bias"))], n("x2"), domain=MS, epsilon=EPS)


def embed(path, encodings):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    order = sorted(range(len(encodings)), key=lambda i: -len(encodings[i].ids))
    out = np.zeros((len(encodings), HIDDEN), np.float32)
    started = time.perf_counter()
    for start in range(0, len(order), 64):
        batch = order[start : start + 64]
        width = max(len(encodings[i].ids) for i in batch)
        ids = np.zeros((len(batch), width), np.int64)
        mask = np.zeros_like(ids)
        for r, i in enumerate(batch):
            ids[r, : len(encodings[i].ids)] = encodings[i].ids
            mask[r, : len(encodings[i].ids)] = 1
        states = session.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask,
                                                     "token_type_ids": np.zeros_like(ids)})[0]
        pooled = (states * mask[:, :, None]).sum(1) / mask.sum(1, keepdims=True)
        out[batch] = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    return len(encodings) / (time.perf_counter() - started), out


def main():
    cache = sys.argv[1]
    rows = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
    texts = [r["text"] for r in csv.DictReader(open(f"{cache}/datasets/mr/mr.csv", newline=""))][:rows]
    tokenizer = Tokenizer.from_file(f"{cache}/models/minilm-l6/tokenizer.json")
    tokenizer.no_padding()
    tokenizer.enable_truncation(256)
    encodings = tokenizer.encode_batch(texts)
    weights = read_safetensors(f"{cache}/models/minilm-l6/model.safetensors")
    graft_graph = sorted(p for p in os.listdir(f"{cache}/models/minilm-l6") if p.startswith("graft-bert-v"))[-1]
    scratch = tempfile.mkdtemp()
    variants = {
        "graft's float32 graph (standard operators)": f"{cache}/models/minilm-l6/{graft_graph}",
        "the shipped int8 file (weight-only int8)": f"{cache}/models/minilm-l6-int8/model.onnx",
        "fused float32 (EmbedLayerNorm, Attention, SkipLayerNorm, BiasGelu)": build(weights),
        "fused, int8 weights rounded, float32 arithmetic": build(weights, rounded_only=("qkv", "out", "up", "down")),
        "fused + DynamicQuantizeMatMul, FFN up only": build(weights, quantise=("up",)),
        "fused + DynamicQuantizeMatMul, FFN up + down": build(weights, quantise=("up", "down")),
        "fused + DynamicQuantizeMatMul, every dense but Q/K/V": build(weights, quantise=("out", "up", "down")),
        "fused + QAttention + DynamicQuantizeMatMul, every dense": build(
            weights, quantise=("qkv", "out", "up", "down"), qattention=True),
    }
    reference = None
    print(f"{'graph':70s} {'rows/s':>8s} {'cos min':>9s} {'cos mean':>9s}")
    for name, model in variants.items():
        path = model
        if not isinstance(model, str):
            path = os.path.join(scratch, "variant.onnx")
            onnx.save(model, path)
        rate, out = embed(path, encodings)
        if reference is None:
            reference = out
        cos = (out.astype(np.float64) * reference).sum(1)
        print(f"{name:70s} {rate:8.1f} {cos.min():9.5f} {cos.mean():9.5f}", flush=True)


if __name__ == "__main__":
    main()
