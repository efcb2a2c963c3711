//! Fine-tuning's matrix products on their real shapes, in the kernels graft could train with: candle's (what
//! graft-tune uses now, through the `gemm` crate) and faer's. MiniLM-L6 with batches of 32 rows of about
//! 32 tokens: B·L = 1,024 token rows, hidden 384, feed-forward 1,536, 12 heads of 32. Prints GFLOP/s per shape
//! as JSON lines; `benches/matmul_vs_torch.sh` runs it beside `torch.mm` at the same thread count.
//!
//!   cargo run --release -p graft-benches --bin matmul_shapes -- <threads>

use std::time::Instant;

use candle_core::{Device, Tensor};

/// (name, batch, m, k, n): `batch` products of (m×k)·(k×n).
const SHAPES: [(&str, usize, usize, usize, usize); 6] = [
    ("qkv/out (BL×384)·(384×384)", 1, 1024, 384, 384),
    ("ffn up (BL×384)·(384×1536)", 1, 1024, 384, 1536),
    ("ffn down (BL×1536)·(1536×384)", 1, 1024, 1536, 384),
    ("weight grad (384×BL)·(BL×1536)", 1, 384, 1024, 1536),
    ("attention scores 384×(32×32)·(32×32)", 384, 32, 32, 32),
    ("attention mix 384×(32×32)·(32×32)", 384, 32, 32, 32),
];

fn seconds_per_call(mut call: impl FnMut()) -> f64 {
    call();
    let started = Instant::now();
    let mut calls = 0;
    while started.elapsed().as_secs_f64() < 1.0 {
        call();
        calls += 1;
    }
    started.elapsed().as_secs_f64() / f64::from(calls)
}

fn candle(batch: usize, m: usize, k: usize, n: usize) -> f64 {
    let device = Device::Cpu;
    let (a, b) = if batch == 1 {
        (
            Tensor::randn(0f32, 1.0, (m, k), &device).unwrap(),
            Tensor::randn(0f32, 1.0, (k, n), &device).unwrap(),
        )
    } else {
        (
            Tensor::randn(0f32, 1.0, (batch, m, k), &device).unwrap(),
            Tensor::randn(0f32, 1.0, (batch, k, n), &device).unwrap(),
        )
    };
    seconds_per_call(|| {
        std::hint::black_box(a.matmul(&b).unwrap());
    })
}

fn faer_matmul(batch: usize, m: usize, k: usize, n: usize, threads: usize) -> f64 {
    use faer::{Accum, Mat, Par};
    let a: Vec<Mat<f32>> = (0..batch)
        .map(|_| Mat::from_fn(m, k, |i, j| ((i * 7 + j * 3) % 11) as f32 / 11.0))
        .collect();
    let b: Vec<Mat<f32>> = (0..batch)
        .map(|_| Mat::from_fn(k, n, |i, j| ((i * 5 + j) % 13) as f32 / 13.0))
        .collect();
    let mut c: Vec<Mat<f32>> = (0..batch).map(|_| Mat::zeros(m, n)).collect();
    let par = if threads > 1 && batch == 1 {
        Par::rayon(threads)
    } else {
        Par::Seq
    };
    seconds_per_call(|| {
        if batch == 1 {
            faer::linalg::matmul::matmul(
                c[0].as_mut(),
                Accum::Replace,
                a[0].as_ref(),
                b[0].as_ref(),
                1.0,
                par,
            );
        } else {
            // Small products: one per task, as a fused attention kernel would run them.
            use rayon::prelude::*;
            c.par_iter_mut()
                .zip(a.par_iter().zip(&b))
                .for_each(|(c, (a, b))| {
                    faer::linalg::matmul::matmul(
                        c.as_mut(),
                        Accum::Replace,
                        a.as_ref(),
                        b.as_ref(),
                        1.0,
                        Par::Seq,
                    );
                });
        }
        std::hint::black_box(&c);
    })
}

fn main() {
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    // candle and faer both run on rayon's global pool.
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .expect("the first pool");
    for (name, batch, m, k, n) in SHAPES {
        let flops = 2.0 * (batch * m * k * n) as f64;
        let c = candle(batch, m, k, n);
        let f = faer_matmul(batch, m, k, n, threads);
        println!(
            "{{\"shape\": {name:?}, \"threads\": {threads}, \"candle_gflops\": {:.1}, \"faer_gflops\": {:.1}}}",
            flops / c / 1e9,
            flops / f / 1e9
        );
    }
}
