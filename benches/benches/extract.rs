//! Text feature extraction on real MR sentences with MiniLM-L6 int8, 2 intra-op threads, batch 64.
//!
//! - `graft`: `TextBackbone::embed` — length-sorted batches, each padded to its own longest row.
//! - `baseline_fixed_padding`: the same model and tokenizer used as shipped — every text padded to 128 tokens,
//!   batches in file order — through a raw `ort` session with the same pooling.
//! - `raw_ort_presorted`: the practical limit — a raw `ort` session fed batches that were tokenized,
//!   length-sorted and padded before timing starts (only `Session::run` is timed).
//!
//! Run: `cargo bench -p graft-benches --bench extract` (fetches the model and data on first use).

use std::borrow::Cow;
use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use graft_backbone::{Runtime, TextBackbone, TextBackboneConfig};
use ndarray::{Array2, Axis};
use ort::session::{Session, SessionInputValue};
use ort::value::TensorRef;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

const ROWS: usize = 640;
const THREADS: usize = 2;
const BATCH: usize = 64;

fn cache() -> graft_assets::Cache {
    graft_assets::Cache::new(
        std::env::var_os(graft_assets::CACHE_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.graft-cache")),
    )
}

fn mr_texts(cache: &graft_assets::Cache) -> Vec<String> {
    // Read with the csv crate: polars would add minutes to the release build for one small file.
    let mut reader = csv::Reader::from_path(cache.dataset("mr").unwrap().table.path).unwrap();
    let text = reader
        .headers()
        .unwrap()
        .iter()
        .position(|h| h == "text")
        .unwrap();
    let texts: Vec<String> = reader
        .records()
        .map(|r| r.unwrap()[text].to_owned())
        .collect();
    // Every 16th row: both classes, the corpus's length mix.
    texts.into_iter().step_by(16).take(ROWS).collect()
}

/// Batches as graft forms them (tokenized without fixed padding, length-sorted, each padded to its longest
/// row), built once: the input of the raw-session limit.
fn presorted_batches(tokenizer_path: &std::path::Path, texts: &[String]) -> Vec<[Array2<i64>; 3]> {
    let mut tokenizer = Tokenizer::from_file(tokenizer_path).unwrap();
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: 256,
            ..TruncationParams::default()
        }))
        .unwrap();
    let mut encodings = tokenizer
        .encode_batch(texts.iter().map(String::as_str).collect(), true)
        .unwrap();
    encodings.sort_by_key(|e| std::cmp::Reverse(e.get_ids().len()));
    encodings
        .chunks(BATCH)
        .map(|batch| {
            let width = batch[0].get_ids().len();
            let mut ids = Array2::<i64>::zeros((batch.len(), width));
            let mut mask = Array2::<i64>::zeros((batch.len(), width));
            for (r, e) in batch.iter().enumerate() {
                for (t, (&id, &m)) in e.get_ids().iter().zip(e.get_attention_mask()).enumerate() {
                    ids[[r, t]] = i64::from(id);
                    mask[[r, t]] = i64::from(m);
                }
            }
            let types = Array2::<i64>::zeros((batch.len(), width));
            [ids, mask, types]
        })
        .collect()
}

/// Only `Session::run` over prepared batches; the output is touched so nothing is optimised away.
fn raw_ort(session: &mut Session, batches: &[[Array2<i64>; 3]]) -> f32 {
    let mut checksum = 0.0;
    for [ids, mask, types] in batches {
        let inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = vec![
            (
                "input_ids".into(),
                TensorRef::from_array_view(ids).unwrap().into(),
            ),
            (
                "attention_mask".into(),
                TensorRef::from_array_view(mask).unwrap().into(),
            ),
            (
                "token_type_ids".into(),
                TensorRef::from_array_view(types).unwrap().into(),
            ),
        ];
        let outputs = session.run(inputs).unwrap();
        let states = outputs["last_hidden_state"]
            .try_extract_array::<f32>()
            .unwrap();
        checksum += states[[0, 0, 0]];
    }
    checksum
}

/// The naive use: fixed padding to 128 tokens, file order, mean pooling over the mask, L2 normalisation.
fn baseline(session: &mut Session, tokenizer: &Tokenizer, texts: &[String]) -> Array2<f32> {
    let mut out = Array2::<f32>::zeros((texts.len(), 384));
    for (b, chunk) in texts.chunks(BATCH).enumerate() {
        let encodings = tokenizer
            .encode_batch(chunk.iter().map(String::as_str).collect(), true)
            .unwrap();
        let width = encodings[0].get_ids().len();
        let ids = Array2::from_shape_fn((chunk.len(), width), |(r, t)| {
            i64::from(encodings[r].get_ids()[t])
        });
        let mask = Array2::from_shape_fn((chunk.len(), width), |(r, t)| {
            i64::from(encodings[r].get_attention_mask()[t])
        });
        let types = Array2::<i64>::zeros((chunk.len(), width));
        let inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = vec![
            (
                "input_ids".into(),
                TensorRef::from_array_view(&ids).unwrap().into(),
            ),
            (
                "attention_mask".into(),
                TensorRef::from_array_view(&mask).unwrap().into(),
            ),
            (
                "token_type_ids".into(),
                TensorRef::from_array_view(&types).unwrap().into(),
            ),
        ];
        let outputs = session.run(inputs).unwrap();
        let states = outputs["last_hidden_state"]
            .try_extract_array::<f32>()
            .unwrap();
        for r in 0..chunk.len() {
            let mut row = out.row_mut(b * BATCH + r);
            let mut n = 0.0;
            for t in 0..width {
                if mask[[r, t]] == 1 {
                    row += &states.index_axis(Axis(0), r).index_axis(Axis(0), t);
                    n += 1.0;
                }
            }
            row /= n;
            let norm = row.dot(&row).sqrt();
            row /= norm;
        }
    }
    out
}

fn extract(c: &mut Criterion) {
    let cache = cache();
    let runtime = Runtime::load(&cache.runtime("onnxruntime").unwrap().library.path).unwrap();
    let model = cache.model("minilm-l6-int8").unwrap();
    let tokenizer_path = model.tokenizer.as_ref().unwrap().path.clone();
    let texts = mr_texts(&cache);

    let config = TextBackboneConfig {
        batch_size: BATCH,
        intra_threads: THREADS,
        output: Some("last_hidden_state".into()),
        progress: false,
        ..TextBackboneConfig::default()
    };
    let mut graft = TextBackbone::load(
        &runtime,
        &model.onnx.as_ref().expect("an ONNX model").path,
        &tokenizer_path,
        config,
    )
    .unwrap();

    let mut tokenizer = Tokenizer::from_file(&tokenizer_path).unwrap();
    tokenizer.with_padding(Some(PaddingParams {
        strategy: PaddingStrategy::Fixed(128),
        ..PaddingParams::default()
    }));
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: 128,
            ..TruncationParams::default()
        }))
        .unwrap();
    let mut session = Session::builder(runtime.environment())
        .unwrap()
        .with_intra_threads(THREADS)
        .map_err(ort::Error::<()>::from)
        .unwrap()
        .commit_from_file(&model.onnx.as_ref().expect("an ONNX model").path)
        .unwrap();

    let batches = presorted_batches(&tokenizer_path, &texts);

    let mut group = c.benchmark_group(format!("extract_mr_{ROWS}_rows"));
    group.sample_size(10);
    group.bench_function("graft", |b| b.iter(|| graft.embed(&texts).unwrap()));
    group.bench_function("raw_ort_presorted", |b| {
        b.iter(|| raw_ort(&mut session, &batches))
    });
    group.bench_function("baseline_fixed_padding", |b| {
        b.iter(|| baseline(&mut session, &tokenizer, &texts))
    });
    group.finish();
}

criterion_group!(benches, extract);
criterion_main!(benches);
