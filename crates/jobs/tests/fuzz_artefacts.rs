//! Property tests of the files graft reads back: a saved head (`heads/<head>.json` + `.safetensors`) and
//! the manifests of `extract` shards. Whatever the edit, loading returns the artefact or an error that
//! names the file — never a panic — and an edited shard manifest never merges into different bytes.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use graft_config::{ModelSource, Plan};
use graft_engine::{RunOptions, load_head, run};
use graft_jobs::{ExtractJob, Shard, extract, merge};
use proptest::prelude::*;

use common::{cache_dir, repo};

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
