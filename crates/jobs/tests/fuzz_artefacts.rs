//! Property tests of the files graft reads back: a saved head (`heads/<head>.json` + `.safetensors`), the
//! float32 BERT weights fine-tuning reads (safetensors too), and the manifests of `extract` shards. Whatever
//! the edit, loading returns the artefact or an error that names the file — never a panic, nor an
//! allocation out of proportion to the file — and an edited shard manifest never merges into different bytes.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use graft_config::{ModelSource, Plan};
use graft_engine::{RunOptions, load_head, run};
use graft_jobs::{ExtractJob, Shard, extract, merge};
use graft_stdx::alloc_probe::{CountingAlloc, peak_during};
use proptest::prelude::*;

use common::{cache_dir, repo};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// A run of the tiny given-features pipeline (no model needed): its logistic head's two files.
fn saved_head() -> &'static (Vec<u8>, Vec<u8>) {
    static HEAD: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    HEAD.get_or_init(|| {
        let runs = tempfile::tempdir().unwrap();
        let plan = Plan::load(&repo().join("fixtures/pipelines/tiny-features.toml")).unwrap();
        let mut options = RunOptions::new(cache_dir(), runs.path());
        options.progress = false;
        let outcome = run(&plan, &options).unwrap();
        let heads = outcome.run_dir.join("heads");
        (
            std::fs::read(heads.join("logistic.json")).unwrap(),
            std::fs::read(heads.join("logistic.safetensors")).unwrap(),
        )
    })
}

/// Two shards of an extract of the tiny fixture with the tiny model, and their merge.
struct Shards {
    _dir: tempfile::TempDir,
    parts: PathBuf,
    merged: Vec<u8>,
}

fn shards() -> &'static Shards {
    static SHARDS: OnceLock<Shards> = OnceLock::new();
    SHARDS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let parts = dir.path().join("parts");
        for index in 0..2 {
            let mut job = ExtractJob::new(
                ModelSource::Files {
                    onnx: repo().join("fixtures/models/tiny-embedder.onnx"),
                    tokenizer: repo().join("fixtures/models/tiny-tokenizer.json"),
                    sha256: None,
                },
                repo().join("fixtures/data/tiny-sentiment.csv"),
                "text",
                &parts,
                cache_dir(),
            );
            job.backbone.chunk_rows = 8;
            job.backbone.threads = 1;
            job.progress = false;
            job.shard = Some(Shard { index, count: 2 });
            extract(&job).unwrap();
        }
        let merged_path = dir.path().join("merged.parquet");
        merge(&parts, &merged_path).unwrap();
        let merged = std::fs::read(&merged_path).unwrap();
        Shards {
            _dir: dir,
            parts,
            merged,
        }
    })
}

/// `bytes` with a few bytes replaced or inserted, then maybe cut.
fn edit(mut bytes: Vec<u8>, edits: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
    for &(at, b) in edits {
        let at = at % bytes.len();
        if at.is_multiple_of(2) {
            bytes[at] = b;
        } else {
            bytes.insert(at, b);
        }
    }
    if let Some(cut) = cut {
        bytes.truncate(cut % (bytes.len() + 1));
    }
    bytes
}

fn names(error: &dyn std::fmt::Display, files: &[&str]) -> bool {
    let text = error.to_string();
    files.iter().any(|f| text.contains(f))
}

/// Writes a head's two files into `dir`, returning the JSON's path.
fn write_head(dir: &Path, json: &[u8], weights: &[u8]) -> PathBuf {
    std::fs::write(dir.join("logistic.safetensors"), weights).unwrap();
    let path = dir.join("logistic.json");
    std::fs::write(&path, json).unwrap();
    path
}

/// One tensor entry of a safetensors header, as a hostile writer might declare it.
fn tensor_entry() -> impl Strategy<Value = serde_json::Value> {
    let dim = prop_oneof![
        4 => (0u64..5).prop_map(serde_json::Value::from),
        1 => prop::sample::select(vec![1u64 << 40, u64::MAX, 1 << 31]).prop_map(serde_json::Value::from),
        1 => Just(serde_json::Value::from(-1)),
    ];
    let offset = prop_oneof![
        4 => (0u64..64).prop_map(serde_json::Value::from),
        1 => prop::sample::select(vec![u64::MAX, 1 << 40]).prop_map(serde_json::Value::from),
    ];
    (
        prop::sample::select(vec!["F32", "F64", "I64", "U8", "BF16", "X"]),
        prop::collection::vec(dim, 0..4),
        prop::collection::vec(offset, 0..3),
    )
        .prop_map(|(dtype, shape, offsets)| {
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": offsets})
        })
}

/// A safetensors file: an 8-byte header length (honest or not), a JSON header of tensors under the names
/// graft's readers look for (and metadata of any kind), then data bytes.
fn safetensors_file() -> impl Strategy<Value = Vec<u8>> {
    let name = prop::sample::select(vec![
        "weight",
        "bias",
        "embeddings.word_embeddings.weight",
        "embeddings.position_embeddings.weight",
        "encoder.layer.0.attention.self.query.weight",
        "__metadata__",
    ]);
    (
        prop::collection::btree_map(name, tensor_entry(), 0..5),
        prop::option::of(prop::collection::btree_map("[a-z_.]{1,12}", "[a-z0-9{}\\[\\]\":,]{0,16}", 0..4)),
        prop_oneof![6 => Just(None), 1 => any::<u64>().prop_map(Some), 1 => (0u64..16).prop_map(Some)],
        prop::collection::vec(any::<u8>(), 0..96),
    )
        .prop_map(|(tensors, metadata, declared, data)| {
            let mut header = serde_json::Map::new();
            for (name, entry) in tensors {
                header.insert(name.to_owned(), entry);
            }
            if let Some(m) = metadata {
                header.insert("__metadata__".to_owned(), serde_json::json!(m));
            }
            let text = serde_json::to_vec(&header).unwrap();
            let mut bytes = declared.unwrap_or(text.len() as u64).to_le_bytes().to_vec();
            bytes.extend(text);
            bytes.extend(data);
            bytes
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn an_edited_head_json_loads_or_is_refused_by_name(
        edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..5),
        cut in any::<Option<usize>>(),
    ) {
        let (json, weights) = saved_head();
        let dir = tempfile::tempdir().unwrap();
        let path = write_head(dir.path(), &edit(json.clone(), &edits, cut), weights);
        if let Err(e) = load_head(&path) {
            prop_assert!(names(&e, &["logistic.json", "logistic.safetensors"]), "{e}");
        }
    }

    #[test]
    fn edited_weights_with_a_matching_checksum_load_or_are_refused_by_name(
        edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..5),
        cut in any::<Option<usize>>(),
    ) {
        // The weights' checksum is rewritten to match, so the safetensors parser itself is exercised.
        let (json, weights) = saved_head();
        let weights = edit(weights.clone(), &edits, cut);
        let mut record: serde_json::Value = serde_json::from_slice(json).unwrap();
        record["weights_sha256"] = graft_stdx::sha256_hex(&weights).into();
        let dir = tempfile::tempdir().unwrap();
        let path = write_head(dir.path(), &serde_json::to_vec(&record).unwrap(), &weights);
        if let Err(e) = load_head(&path) {
            prop_assert!(names(&e, &["logistic.json", "logistic.safetensors"]), "{e}");
        }
    }

    #[test]
    fn a_hostile_safetensors_header_loads_or_is_refused_by_name(weights in safetensors_file()) {
        // As a head's weights (checksum rewritten to match, so the parser is reached) …
        let (json, _) = saved_head();
        let mut record: serde_json::Value = serde_json::from_slice(json).unwrap();
        record["weights_sha256"] = graft_stdx::sha256_hex(&weights).into();
        let dir = tempfile::tempdir().unwrap();
        let path = write_head(dir.path(), &serde_json::to_vec(&record).unwrap(), &weights);
        let (loaded, peak) = peak_during(|| load_head(&path));
        if let Err(e) = loaded {
            prop_assert!(names(&e, &["logistic.json", "logistic.safetensors"]), "{e}");
        }
        prop_assert!(peak <= 8 * weights.len() + (1 << 20), "{} bytes, peak {peak}", weights.len());
        // … and as the float32 encoder fine-tuning reads.
        let encoder = dir.path().join("model.safetensors");
        std::fs::write(&encoder, &weights).unwrap();
        let (read, peak) = peak_during(|| graft_tune::BertWeights::read_safetensors(&encoder, 2));
        if let Err(e) = read {
            prop_assert!(names(&e, &["model.safetensors"]), "{e}");
        }
        prop_assert!(peak <= 8 * weights.len() + (1 << 20), "{} bytes, peak {peak}", weights.len());
    }

    #[test]
    fn an_edited_shard_manifest_merges_the_same_bytes_or_is_refused_by_name(
        part in 0usize..2,
        edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..4),
        cut in any::<Option<usize>>(),
    ) {
        let shards = shards();
        let dir = tempfile::tempdir().unwrap();
        let parts = dir.path().join("parts");
        std::fs::create_dir(&parts).unwrap();
        let mut manifests = Vec::new();
        for entry in std::fs::read_dir(&shards.parts).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), parts.join(entry.file_name())).unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".json") {
                manifests.push(name);
            }
        }
        manifests.sort();
        let target = parts.join(&manifests[part]);
        let edited = edit(std::fs::read(&target).unwrap(), &edits, cut);
        std::fs::write(&target, edited).unwrap();
        let output = dir.path().join("merged.parquet");
        match merge(&parts, &output) {
            Ok(_) => prop_assert_eq!(&std::fs::read(&output).unwrap(), &shards.merged),
            Err(e) => {
                prop_assert!(names(&e, &[&manifests[part], "parts"]), "{e}");
                prop_assert!(!output.exists(), "no output from a refused merge");
            }
        }
    }
}
