//! The dependency rules of ARCHITECTURE.md, checked: leaf crates stand alone, only `pipeline` composes them,
//! and `xtask` talks to `pipeline` alone.

use std::path::Path;

fn graft_dependencies(manifest: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(manifest).unwrap();
    let doc: toml::Table = text.parse().unwrap();
    doc.get("dependencies")
        .and_then(|d| d.as_table())
        .map(|deps| {
            deps.keys()
                .filter(|k| k.starts_with("graft-"))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn leaf_crates_do_not_depend_on_each_other() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates");
    for leaf in [
        "ingest", "backbone", "heads", "eval", "assets", "features", "onnx",
    ] {
        let deps = graft_dependencies(&crates.join(leaf).join("Cargo.toml"));
        assert!(deps.is_empty(), "graft-{leaf} depends on {deps:?}");
    }
}

#[test]
fn only_pipeline_composes_and_xtask_only_calls_pipeline() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut pipeline = graft_dependencies(&root.join("crates/pipeline/Cargo.toml"));
    pipeline.sort();
    assert_eq!(
        pipeline,
        [
            "graft-assets",
            "graft-backbone",
            "graft-eval",
            "graft-features",
            "graft-heads",
            "graft-ingest",
            "graft-onnx"
        ]
    );
    assert_eq!(
        graft_dependencies(&root.join("xtask/Cargo.toml")),
        ["graft-pipeline"]
    );
}
