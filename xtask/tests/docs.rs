//! The documentation holds together: every relative link and `#anchor` in the README, the guide under
//! `docs/`, ARCHITECTURE.md and benches/README.md resolves, the guide's table of contents lists every
//! chapter, and every key of the pipeline schema is documented somewhere in the guide.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Markdown files whose links are checked.
fn documents() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "the guide's chapters were not found");
    files.extend(["README.md", "ARCHITECTURE.md", "benches/README.md"].map(|f| root().join(f)));
    files
}

/// Text outside fenced code blocks and inline code spans (a link inside code is an example, not a link).
fn prose(text: &str) -> String {
    let mut out = String::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            out.push('\n');
            continue;
        }
        if !fenced {
            let mut in_code = false;
            for part in line.split('`') {
                if !in_code {
                    out.push_str(part);
                }
                in_code = !in_code;
            }
        }
        out.push('\n');
    }
    out
}

/// A heading's anchor as GitHub and mdBook write it: lower case, punctuation dropped, spaces as hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown file's headings (outside code blocks).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced && line.starts_with('#') {
            let heading = line.trim_start_matches('#');
            if heading.starts_with(' ') {
                out.insert(slug(&heading.replace('`', "")));
            }
        }
    }
    out
}

/// Every `[text](target)` of the prose.
fn link_targets(text: &str) -> Vec<String> {
    let text = prose(text);
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        if let Some(end) = rest.find(')') {
            out.push(rest[..end].to_owned());
        }
    }
    out
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let mut broken = Vec::new();
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        for target in link_targets(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = match target.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor)),
                None => (target.as_str(), None),
            };
            let file = if path.is_empty() {
                doc.clone()
            } else {
                doc.parent().unwrap().join(path)
            };
            if !file.exists() {
                broken.push(format!("{}: `{target}`: no such file", doc.display()));
                continue;
            }
            if let Some(anchor) = anchor {
                let headings = anchors(&std::fs::read_to_string(&file).unwrap_or_default());
                if !headings.contains(anchor) {
                    broken.push(format!(
                        "{}: `{target}`: no heading with anchor `{anchor}` in {}",
                        doc.display(),
                        file.display()
                    ));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_table_of_contents_lists_every_chapter() {
    let summary = std::fs::read_to_string(root().join("docs/SUMMARY.md")).unwrap();
    let index = std::fs::read_to_string(root().join("docs/README.md")).unwrap();
    for doc in documents()
        .iter()
        .filter(|d| d.parent().unwrap().ends_with("docs"))
    {
        let name = doc.file_name().unwrap().to_string_lossy();
        let link = format!("]({name})");
        if name != "SUMMARY.md" {
            assert!(
                summary.contains(&link),
                "docs/SUMMARY.md does not list {name}"
            );
        }
        if name != "README.md" && name != "SUMMARY.md" {
            assert!(index.contains(&link), "docs/README.md does not list {name}");
        }
    }
}

/// Every key the pipeline schema allows, tables included (`logistic` of `[head.logistic]`).
fn schema_keys(value: &serde_json::Value, out: &mut BTreeSet<String>) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::Object(properties)) = map.get("properties") {
                out.extend(properties.keys().cloned());
            }
            map.values().for_each(|v| schema_keys(v, out));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| schema_keys(v, out)),
        _ => {}
    }
}

/// Whether the guide shows `key` as a key: in code (`` `key` ``, `` `key = …` ``, `` `[table] key = …` ``),
/// as a TOML line (`key = …`, commented or not) or as (part of) a table name (`[head.key]`).
fn documented(key: &str, guide: &str) -> bool {
    let patterns = [
        format!("`{key}`"),
        format!("`{key} ="),
        format!(" {key} = "),
        format!("[{key}]"),
        format!("[{key}."),
        format!(".{key}]"),
        format!(".{key}."),
    ];
    patterns.iter().any(|p| guide.contains(p.as_str()))
        || guide.lines().any(|line| {
            let line = line.trim_start().trim_start_matches('#').trim_start();
            line.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
}

#[test]
fn every_pipeline_key_is_documented_in_the_guide() {
    let schema: serde_json::Value =
        serde_json::from_str(&graft_schema::pipeline_schema_json()).unwrap();
    let mut keys = BTreeSet::new();
    schema_keys(&schema, &mut keys);
    assert!(
        keys.len() > 50,
        "the schema's keys were not found: {keys:?}"
    );
    let guide: String = documents()
        .iter()
        .filter(|d| d.parent().unwrap().ends_with("docs"))
        .map(|d| std::fs::read_to_string(d).unwrap())
        .collect();
    let missing: Vec<&String> = keys.iter().filter(|k| !documented(k, &guide)).collect();
    assert!(
        missing.is_empty(),
        "pipeline keys the guide under docs/ never mentions: {missing:?}"
    );
}
