//! Hot kernels of the heads on fixed synthetic features (5,000 × 384, 5 classes): a logistic fit, one MLP
//! epoch, kNN and prototype prediction. `cargo bench -p graft-benches --bench heads`.

use criterion::{Criterion, criterion_group, criterion_main};
use graft_heads::{Fit, Knn, Logistic, Mlp, Predict, Prototype, Targets};
use ndarray::Array2;

/// Deterministic features: class means on a few axes plus a cheap hash-based noise.
fn data(rows: usize, dim: usize, classes: usize) -> (Array2<f32>, Vec<usize>) {
    let labels: Vec<usize> = (0..rows).map(|i| (i * 7 + i / 3) % classes).collect();
    let x = Array2::from_shape_fn((rows, dim), |(i, j)| {
        let h = (i as u64 * 0x9E37_79B9 + j as u64 * 0x85EB_CA6B).wrapping_mul(0xC2B2_AE35) >> 40;
        let noise = h as f32 / (1u64 << 24) as f32 - 0.5;
        noise + if j % classes == labels[i] { 0.3 } else { 0.0 }
    });
    (x, labels)
}

fn heads(c: &mut Criterion) {
    let (x, y) = data(5_000, 384, 5);
    let t = Targets::new(&y, 5).unwrap();
    let mut group = c.benchmark_group("heads_5000x384");
    group.sample_size(10);
    group.bench_function("logistic_fit", |b| {
        b.iter(|| Logistic::params().tol(1e-4).fit(x.view(), &t).unwrap())
    });
    group.bench_function("mlp_one_epoch", |b| {
        let params = Mlp::params().hidden(&[256]).max_epochs(1).patience(None);
        b.iter(|| params.fit(x.view(), &t).unwrap())
    });
    let knn = Knn::params().k(10).fit(x.view(), &t).unwrap();
    let queries = x.slice(ndarray::s![..1000, ..]);
    group.bench_function("knn_predict_1000", |b| {
        b.iter(|| knn.predict_proba(queries).unwrap())
    });
    let prototype = Prototype::params().fit(x.view(), &t).unwrap();
    group.bench_function("prototype_predict_5000", |b| {
        b.iter(|| prototype.predict_proba(x.view()).unwrap())
    });
    group.finish();
}

criterion_group!(benches, heads);
criterion_main!(benches);
