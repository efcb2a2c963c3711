//! Property tests of the pipeline parser: whatever the text, `Plan::parse` returns a plan or an error — it
//! never panics — and every error names the file. Inputs are the shipped and fixture pipelines with random
//! edits (bytes replaced, lines dropped or repeated), so they stay close to what people really write.

use std::path::{Path, PathBuf};

use graft_config::Plan;
use proptest::prelude::*;

fn pipelines() -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut out = Vec::new();
    for dir in [
        "pipelines",
        "fixtures/pipelines",
        "fixtures/pipelines/errors",
    ] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let text = std::fs::read_to_string(&path).unwrap();
                out.push((path, text));
            }
        }
    }
    out.sort();
    out
}

/// One edit of a pipeline's text.
#[derive(Debug, Clone)]
enum Edit {
    /// Replace the byte at a position (modulo the length) by another printable or control byte.
    Byte(usize, u8),
    /// Drop a line.
    DropLine(usize),
    /// Repeat a line.
    RepeatLine(usize),
    /// Cut the text at a position.
    Truncate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Byte(i, b)),
        any::<usize>().prop_map(Edit::DropLine),
        any::<usize>().prop_map(Edit::RepeatLine),
        any::<usize>().prop_map(Edit::Truncate),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for e in edits {
        match *e {
            Edit::Byte(i, b) if !bytes.is_empty() => {
                let at = i % bytes.len();
                bytes[at] = b;
            }
            Edit::DropLine(i) | Edit::RepeatLine(i) => {
                let lossy = String::from_utf8_lossy(&bytes).into_owned();
                let mut lines: Vec<&str> = lossy.lines().collect();
                if !lines.is_empty() {
                    let at = i % lines.len();
                    if matches!(e, Edit::DropLine(_)) {
                        lines.remove(at);
                    } else {
                        lines.insert(at, lines[at]);
                    }
                }
                bytes = lines.join("\n").into_bytes();
            }
            Edit::Truncate(i) => {
                let at = i % (bytes.len() + 1);
                bytes.truncate(at);
            }
            Edit::Byte(..) => {}
        }
    }
    // The parser takes text: invalid UTF-8 is the file reader's error, tested elsewhere.
    String::from_utf8_lossy(&bytes).into_owned()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn any_edit_of_a_pipeline_parses_or_is_a_located_error(
        which in any::<usize>(),
        edits in prop::collection::vec(edit(), 1..4),
    ) {
        let all = pipelines();
        let (path, text) = &all[which % all.len()];
        let edited = apply(text, &edits);
        if let Err(e) = Plan::parse(path, &edited) {
            let message = e.to_string();
            let name = path.file_name().unwrap().to_string_lossy();
            prop_assert!(message.contains(name.as_ref()), "no file named in: {message}");
        }
    }
}
