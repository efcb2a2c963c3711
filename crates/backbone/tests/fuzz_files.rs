//! The JSON files of a model folder on damaged and hostile input: `tokenizer.json` (edited bytes, and values
//! of the wrong kind put where the tokenizer expects others) and sentence-transformers' `modules.json`,
//! `1_Pooling/config.json` and `sentence_bert_config.json`. Whatever they hold, opening returns the tokenizer
//! or folder, or an error that names the file — never a panic — and a tokenizer that opens also encodes.

use std::path::{Path, PathBuf};

use graft_backbone::{ModelFolder, TextTokenizer};
use graft_stdx::alloc_probe::{CountingAlloc, peak_during};
use proptest::prelude::*;
use serde_json::Value;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/models")
        .join(name)
}

/// Any JSON value, a few levels deep, with the numbers that break careless readers.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop::sample::select(vec![0i64, 1, -1, 2, 256, i64::MAX, i64::MIN, 1 << 40])
            .prop_map(Value::from),
        prop::sample::select(vec![0.5f64, -1e300, 1e300]).prop_map(Value::from),
        "[a-z_.#]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,24}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every path to a value inside `v`, as JSON pointers.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                out.push(p.clone());
                pointers(child, p, out);
            }
        }
        Value::Array(a) => {
            // A few entries of long arrays (the vocabulary's merges) are enough.
            for (i, child) in a.iter().enumerate().take(4) {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(child, p, out);
            }
        }
        _ => {}
    }
}

/// `base` with up to three of its values replaced by `replacements`.
fn replaced(base: &Value, picks: &[(usize, Value)]) -> Value {
    let mut all = Vec::new();
    pointers(base, String::new(), &mut all);
    let mut v = base.clone();
    for (i, new) in picks {
        if let Some(target) = v.pointer_mut(&all[i % all.len()]) {
            *target = new.clone();
        }
    }
    v
}

fn names(e: &dyn std::fmt::Display, path: &Path) -> bool {
    e.to_string().contains(&path.display().to_string())
}

/// Opens `bytes` as a tokenizer; one that opens must encode.
fn open_tokenizer(bytes: &[u8]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, bytes).unwrap();
    let (result, peak) = peak_during(|| {
        TextTokenizer::open(&path, 16).and_then(|t| t.encode(&["a wonderful film", ""]).map(drop))
    });
    if let Err(e) = result {
        prop_assert!(names(&e, &path), "{e}");
    }
    // A vocabulary of a few dozen words: nothing in a damaged copy justifies a large allocation.
    prop_assert!(
        peak <= 64 * bytes.len() + (4 << 20),
        "{} bytes, peak {peak}",
        bytes.len()
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn an_edited_tokenizer_opens_or_is_refused_by_name(
        edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in any::<Option<usize>>(),
    ) {
        let mut bytes = std::fs::read(fixture("tiny-tokenizer.json")).unwrap();
        for (at, b) in edits {
            let at = at % bytes.len();
            bytes[at] = b;
        }
        if let Some(cut) = cut {
            bytes.truncate(cut % (bytes.len() + 1));
        }
        open_tokenizer(&bytes)?;
    }

    #[test]
    fn a_tokenizer_with_values_of_the_wrong_kind_opens_or_is_refused_by_name(
        picks in prop::collection::vec((any::<usize>(), json()), 1..4),
    ) {
        let text = std::fs::read_to_string(fixture("tiny-tokenizer.json")).unwrap();
        let base: Value = serde_json::from_str(&text).unwrap();
        open_tokenizer(&serde_json::to_vec(&replaced(&base, &picks)).unwrap())?;
    }

    #[test]
    fn a_folder_s_settings_files_are_read_or_refused_by_name(
        modules in prop_oneof![json(), json().prop_map(|v| serde_json::json!([
            {"path": "", "type": "sentence_transformers.models.Transformer"},
            {"path": v, "type": "sentence_transformers.models.Pooling"},
        ]))],
        pooling in json(),
        config in json(),
        which in 0usize..3,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("model");
        std::fs::create_dir_all(d.join("1_Pooling")).unwrap();
        std::fs::copy(fixture("tiny-embedder.onnx"), d.join("model.onnx")).unwrap();
        std::fs::copy(fixture("tiny-tokenizer.json"), d.join("tokenizer.json")).unwrap();
        // One file hostile, the others as sentence-transformers writes them.
        let files = [
            ("modules.json", modules, serde_json::json!([
                {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}
            ])),
            ("1_Pooling/config.json", pooling, serde_json::json!({"pooling_mode_mean_tokens": true})),
            ("sentence_bert_config.json", config, serde_json::json!({"max_seq_length": 128})),
        ];
        for (i, (name, hostile, good)) in files.iter().enumerate() {
            let v = if i == which { hostile } else { good };
            std::fs::write(d.join(name), serde_json::to_vec(v).unwrap()).unwrap();
        }
        match ModelFolder::open(&d) {
            Ok(folder) => {
                let _ = folder.pooling_or(None);
                prop_assert!(folder.max_length.is_none_or(|n| n >= 2));
            }
            Err(e) => prop_assert!(
                e.to_string().contains(files[which].0) || e.to_string().contains("modules.json"),
                "{e}"
            ),
        }
    }
}

#[test]
fn the_untouched_tokenizer_opens_and_encodes() {
    let tokenizer = TextTokenizer::open(&fixture("tiny-tokenizer.json"), 16).unwrap();
    assert_eq!(tokenizer.encode(&["a wonderful film"]).unwrap().len(), 1);
    let err = TextTokenizer::open(&fixture("tiny-embedder.onnx"), 16)
        .err()
        .unwrap();
    assert!(err.to_string().contains("tiny-embedder.onnx"), "{err}");
}

/// Found by `an_edited_tokenizer_opens_or_is_refused_by_name`: a template naming a special token the file
/// does not define parses, then the tokenizers library panics at the first text (an `expect`).
#[test]
fn a_template_naming_an_undefined_special_token_is_refused_by_name() {
    let text = std::fs::read_to_string(fixture("tiny-tokenizer.json")).unwrap();
    let mut v: Value = serde_json::from_str(&text).unwrap();
    v["post_processor"]["single"][0]["SpecialToken"]["id"] = Value::from("[CLX]");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
    let err = TextTokenizer::open(&path, 16).expect_err("refused");
    assert!(names(&err, &path), "{err}");
    assert!(err.to_string().contains("`[CLX]`"), "{err}");
}

/// Found by `an_edited_tokenizer_opens_or_is_refused_by_name` in CI: one byte of `"decoder": null` changed
/// makes the file invalid JSON there, and the tokenizers library panics (an `expect` in its decoder's
/// deserializer) instead of returning its parse error.
#[test]
fn a_decoder_value_that_is_not_json_is_refused_at_its_line() {
    let text = std::fs::read_to_string(fixture("tiny-tokenizer.json")).unwrap();
    let damaged = text.replacen("\"decoder\": null", "\"decoder\": nu!l", 1);
    assert_ne!(damaged, text, "the fixture's decoder line moved");
    let line = 1 + damaged[..damaged.find("nu!l").unwrap()]
        .matches('\n')
        .count();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, damaged).unwrap();
    let err = TextTokenizer::open(&path, 16).expect_err("refused");
    assert!(names(&err, &path), "{err}");
    assert!(err.to_string().contains(&format!("line {line}")), "{err}");
}
