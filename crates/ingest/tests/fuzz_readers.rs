//! Property tests of the readers of user files: whatever the bytes, a reader returns rows or an error that
//! names the file — it never panics or hangs. Inputs are the fixture tables (CSV, JSONL, Parquet tables and
//! Parquet features) with random edits (bytes replaced or inserted — quotes and delimiters for CSV — and
//! cuts), and arbitrary bytes for `.npy` matrices.

use std::path::{Path, PathBuf};

use graft_ingest::{TextRowReader, count_rows, read_feature_matrix, read_table};
use proptest::prelude::*;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/data")
            .join(name),
    )
    .unwrap()
}

/// Random edits of a fixture: bytes (drawn from `byte`) replaced or inserted, then maybe a cut.
fn edits_of(name: &'static str, byte: impl Strategy<Value = u8>) -> impl Strategy<Value = Vec<u8>> {
    let base = fixture(name);
    (
        prop::collection::vec((any::<usize>(), byte), 1..6),
        any::<Option<usize>>(),
    )
        .prop_map(move |(edits, cut)| {
            let mut bytes = base.clone();
            for (at, b) in edits {
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
        })
}

/// Random edits of any file.
fn edited(name: &'static str) -> impl Strategy<Value = Vec<u8>> {
    edits_of(name, any::<u8>())
}

/// Reads every chunk of a streaming reader; an error must name the file (or the missing column).
fn stream_all(path: &Path, text: &str, id: Option<&str>) -> Result<(), TestCaseError> {
    match TextRowReader::open(path, text, id) {
        Ok(mut reader) => loop {
            match reader.next_chunk(7) {
                Ok(Some(_)) => {}
                Ok(None) => return Ok(()),
                Err(e) => {
                    prop_assert!(names_the_file(&e, path), "{e}");
                    return Ok(());
                }
            }
        },
        Err(e) => {
            prop_assert!(
                names_the_file(&e, path) || e.to_string().contains("column"),
                "{e}"
            );
            Ok(())
        }
    }
}

/// Random edits of a CSV, favouring the bytes CSV parsers care about (quotes, commas, line ends).
fn edited_csv() -> impl Strategy<Value = Vec<u8>> {
    let special = prop_oneof![
        Just(b'"'),
        Just(b','),
        Just(b'\n'),
        Just(b'\r'),
        Just(0xffu8),
        any::<u8>()
    ];
    edits_of("tiny-sentiment.csv", special)
}

fn names_the_file(error: &dyn std::fmt::Display, path: &Path) -> bool {
    error
        .to_string()
        .contains(path.file_name().unwrap().to_string_lossy().as_ref())
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn a_damaged_csv_is_read_or_refused_by_name(bytes in edited_csv()) {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "edited.csv", &bytes);
        if let Err(e) = count_rows(&path) {
            prop_assert!(names_the_file(&e, &path), "{e}");
        }
        if let Err(e) = read_table(&path) {
            prop_assert!(names_the_file(&e, &path) || e.to_string().contains("column"), "{e}");
        }
        stream_all(&path, "text", Some("id"))?;
    }

    #[test]
    fn a_damaged_parquet_table_is_read_or_refused_by_name(bytes in edited("tiny-sentiment.parquet")) {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "edited.parquet", &bytes);
        if let Err(e) = read_table(&path) {
            prop_assert!(names_the_file(&e, &path), "{e}");
        }
        stream_all(&path, "text", None)?;
    }

    #[test]
    fn damaged_parquet_features_are_read_or_refused_by_name(bytes in edited("tiny-features.parquet")) {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "edited.parquet", &bytes);
        if let Err(e) = read_feature_matrix(&path, "embedding") {
            prop_assert!(names_the_file(&e, &path) || e.to_string().contains("embedding"), "{e}");
        }
    }

    #[test]
    fn a_damaged_jsonl_file_is_read_or_refused_by_name(bytes in edited("tiny-sentiment.jsonl")) {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "edited.jsonl", &bytes);
        stream_all(&path, "text", Some("id"))?;
    }

    #[test]
    fn arbitrary_bytes_as_npy_are_refused_by_name(
        header in prop::sample::select(vec![&b"\x93NUMPY\x01\x00"[..], &b"\x93NUMPY"[..], &b""[..]]),
        body in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = header.to_vec();
        bytes.extend(body);
        let path = write(dir.path(), "random.npy", &bytes);
        if let Err(e) = read_feature_matrix(&path, "embedding") {
            prop_assert!(names_the_file(&e, &path), "{e}");
        }
    }
}
