//! Fine-tuning's real parts: the float32 MiniLM-L6 graph graft writes from safetensors agrees with
//! graft-tune's own forward pass (the one training runs) on the same weights, on MR sentences.

mod common;

use graft_assets::Cache;
use graft_backbone::{Pooling, Runtime, TextBackbone, TextBackboneConfig};
use graft_engine::provision::text_model;
use graft_tune::BertWeights;

use common::cache_dir;

fn mr_sentences(cache: &Cache, n: usize) -> Vec<String> {
    let table = cache.dataset("mr").unwrap().table.path;
    let mut reader = csv::Reader::from_path(table).unwrap();
    let headers = reader.headers().unwrap().clone();
    let text = headers.iter().position(|h| h == "text").unwrap();
    // Every 97th row: both classes, short and long sentences.
    reader
        .records()
        .step_by(97)
        .take(n)
        .map(|r| r.unwrap()[text].to_owned())
        .collect()
}

#[test]
fn the_written_minilm_graph_agrees_with_graft_tune_on_mr_sentences() {
    let cache = Cache::new(cache_dir());
    let (files, onnx) = text_model(&cache, "minilm-l6").unwrap();
    let weights = BertWeights::read_safetensors(&files.weights.unwrap().path, 12).unwrap();
    assert_eq!(weights.config().layers, 6);
    let runtime = Runtime::load(&cache.runtime("onnxruntime").unwrap().library.path).unwrap();
    let config = TextBackboneConfig {
        pooling: Pooling::Mean,
        normalize: true,
        intra_threads: 2,
        output: Some("last_hidden_state".to_owned()),
        progress: false,
        ..TextBackboneConfig::default()
    };
    let tokenizer = files.tokenizer.unwrap().path;
    let mut backbone = TextBackbone::load(&runtime, &onnx.path, &tokenizer, config).unwrap();
    let texts = mr_sentences(&cache, 48);
    let (ort, _) = backbone.embed(&texts).unwrap();
    let encoded = backbone.tokenizer().encode(&texts).unwrap();
    let ids: Vec<&[u32]> = (0..texts.len()).map(|i| encoded.ids(i)).collect();
    let tuned = graft_tune::encode(&weights, &ids, 16).unwrap();
    let worst = ort
        .rows()
        .into_iter()
        .zip(tuned.rows())
        .map(|(a, b)| a.dot(&b) / (a.dot(&a) * b.dot(&b)).sqrt())
        .fold(f32::INFINITY, f32::min);
    eprintln!(
        "lowest cosine between ONNX Runtime and graft-tune over {} MR sentences: {worst}",
        texts.len()
    );
    assert!(worst >= 0.9999, "lowest cosine {worst}");
}

/// fixtures/models/tiny-bert.{safetensors,onnx}: graft-tune's seeded tiny BERT over the tiny tokenizer's
/// vocabulary, and the graph graft-onnx writes from it. `GRAFT_BLESS=1` rewrites them; otherwise the committed
/// bytes must be exactly what graft writes today.
#[test]
fn the_tiny_bert_fixture_is_what_graft_writes() {
    let models = common::repo().join("fixtures/models");
    let tokenizer: serde_json::Value =
        serde_json::from_slice(&std::fs::read(models.join("tiny-tokenizer.json")).unwrap())
            .unwrap();
    let vocab = tokenizer["model"]["vocab"].as_object().unwrap().len();
    let weights = graft_tune::tiny_bert(2, vocab);
    let safetensors = weights.to_safetensors().unwrap();
    let graph = graft_engine::provision::bert_graph(&weights, 2, "last_hidden_state").unwrap();
    for (name, bytes) in [
        ("tiny-bert.safetensors", &safetensors),
        ("tiny-bert.onnx", &graph),
    ] {
        let path = models.join(name);
        if std::env::var_os("GRAFT_BLESS").is_some() {
            std::fs::write(&path, bytes).unwrap();
        }
        let committed = std::fs::read(&path).unwrap_or_default();
        assert!(
            committed == *bytes,
            "{} differs from what graft writes; rerun with GRAFT_BLESS=1 and commit it",
            path.display()
        );
    }
    let read = BertWeights::read_safetensors(&models.join("tiny-bert.safetensors"), 2).unwrap();
    assert_eq!(read, weights);
}
