"""torch.mm / torch.bmm on fine-tuning's shapes at a given thread count: the PyTorch side of
benches/matmul_vs_torch.sh (graft's side: benches/src/bin/matmul_shapes.rs, the same shapes and timing).

Usage: matmul_torch.py <threads>   (prints one JSON line per shape)
"""

import json, sys, time, torch
threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
torch.set_num_threads(threads)
shapes = [("qkv/out (BL×384)·(384×384)", 1, 1024, 384, 384),
          ("ffn up (BL×384)·(384×1536)", 1, 1024, 384, 1536),
          ("ffn down (BL×1536)·(1536×384)", 1, 1024, 1536, 384),
          ("weight grad (384×BL)·(BL×1536)", 1, 384, 1024, 1536),
          ("attention scores 384×(32×32)·(32×32)", 384, 32, 32, 32),
          ("attention mix 384×(32×32)·(32×32)", 384, 32, 32, 32)]
for name, b, m, k, n in shapes:
    a = torch.randn(b, m, k) if b > 1 else torch.randn(m, k)
    c = torch.randn(b, k, n) if b > 1 else torch.randn(k, n)
    f = (lambda: torch.bmm(a, c)) if b > 1 else (lambda: torch.mm(a, c))
    f()
    t = time.perf_counter(); calls = 0
    while time.perf_counter() - t < 1.0:
        f(); calls += 1
    s = (time.perf_counter() - t) / calls
    print(json.dumps({"shape": name, "threads": threads, "torch_gflops": round(2 * b * m * k * n / s / 1e9, 1)}, ensure_ascii=False))
