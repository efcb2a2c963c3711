//! How much one row's embedding depends on the rows that share its batch (issue 14, defect 8).
//!
//! Dynamic int8 quantisation picks activation scales per batch, so a row's embedding moves slightly with its
//! batch mates; an fp32 graph should not. For each model, probe rows (MR sentences, then "documents" of 12
//! sentences, past the truncation) are embedded alone and in several batches with other, seeded-random
//! rows (one inference call per batch); printed are the cosine of each batched embedding to the row's own,
//! the largest element difference, and how many probes came out bit-identical in every batch.
//!
//! Usage: batch_spread <cache-dir> (models and MR fetched by `cargo xtask fetch` / any run).

use std::path::Path;

use graft_assets::Cache;
use graft_backbone::{Pooling, Runtime, TextBackbone, TextBackboneConfig};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// (probes, compositions per probe, batch size) for sentences and for long documents (slower to embed).
const SENTENCES: (usize, usize, usize) = (40, 6, 64);
const DOCUMENTS: (usize, usize, usize) = (8, 3, 32);
/// MR sentences joined into one "long document" (past the 256-token truncation), for the second pass.
const SENTENCES_PER_DOCUMENT: usize = 12;

fn mr_texts(cache: &Cache) -> Vec<String> {
    let table = cache.dataset("mr").expect("MR in the cache").table.path;
    let mut reader = csv::Reader::from_path(&table).expect("MR table");
    reader
        .records()
        .map(|r| r.expect("MR row")[1].to_owned())
        .collect()
}

fn cosine(a: ndarray::ArrayView1<f32>, b: ndarray::ArrayView1<f32>) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn measure(
    runtime: &Runtime,
    cache: &Cache,
    name: &str,
    texts: &[String],
    corpus: &str,
    (probes, compositions, batch_size): (usize, usize, usize),
) {
    let model = cache.model(name).expect("model in the cache");
    let entry = &model.entry;
    let config = TextBackboneConfig {
        pooling: if entry.pooling == "cls" {
            Pooling::Cls
        } else {
            Pooling::Mean
        },
        normalize: entry.normalize,
        max_length: entry.max_length,
        batch_size,
        output: Some(entry.output.clone()),
        progress: false,
        ..TextBackboneConfig::default()
    };
    let threads = config.intra_threads;
    let mut backbone = TextBackbone::load(
        runtime,
        &model.onnx.as_ref().expect("an ONNX model").path,
        &model.tokenizer.as_ref().expect("a text model").path,
        config,
    )
    .expect("backbone loads");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(14);
    let mut cosines = Vec::new();
    let mut max_diff = 0f32;
    let mut identical = 0usize;
    for _ in 0..probes {
        let probe = rng.random_range(0..texts.len());
        let (alone, _) = backbone.embed(&[&texts[probe]]).expect("embeds");
        let mut same_everywhere = true;
        for _ in 0..compositions {
            let mut batch: Vec<&str> = (0..batch_size - 1)
                .map(|_| texts[rng.random_range(0..texts.len())].as_str())
                .collect();
            batch.push(&texts[probe]);
            batch.shuffle(&mut rng);
            let at = batch
                .iter()
                .position(|t| *t == texts[probe])
                .expect("probe in batch");
            let (embedded, _) = backbone.embed(&batch).expect("embeds");
            let row = embedded.row(at);
            cosines.push(cosine(alone.row(0), row));
            let diff = alone
                .row(0)
                .iter()
                .zip(row)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            same_everywhere &= diff == 0.0;
            max_diff = max_diff.max(diff);
        }
        identical += usize::from(same_everywhere);
    }
    cosines.sort_by(f64::total_cmp);
    let quantile = |q: f64| cosines[((cosines.len() - 1) as f64 * q).round() as usize];
    println!(
        "{{\"model\":\"{name}\",\"corpus\":\"{corpus}\",\"threads\":{threads},\"probes\":{probes},\"compositions\":{compositions},\"batch\":{batch_size},\
         \"cosine_min\":{:.6},\"cosine_p01\":{:.6},\"cosine_median\":{:.6},\"max_abs_diff\":{max_diff:.6},\
         \"rows_bit_identical_in_every_batch\":{identical}}}",
        quantile(0.0),
        quantile(0.01),
        quantile(0.5)
    );
}

fn main() {
    let cache_dir = std::env::args()
        .nth(1)
        .expect("usage: batch_spread <cache-dir>");
    let cache = Cache::new(Path::new(&cache_dir));
    let runtime = Runtime::load(&cache.runtime("onnxruntime").expect("runtime").library.path)
        .expect("runtime loads");
    let sentences = mr_texts(&cache);
    let documents: Vec<String> = sentences
        .chunks(SENTENCES_PER_DOCUMENT)
        .map(|c| c.join(" "))
        .collect();
    for name in ["minilm-l6-int8", "minilm-l3"] {
        measure(
            &runtime,
            &cache,
            name,
            &sentences,
            "MR sentences",
            SENTENCES,
        );
        measure(
            &runtime,
            &cache,
            name,
            &documents,
            "MR documents",
            DOCUMENTS,
        );
    }
}
