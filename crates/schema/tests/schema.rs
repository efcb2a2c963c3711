//! The JSON Schema of the pipeline file: the committed copy is what the types derive today, every shipped
//! pipeline names it on its first line and validates against it, and it catches the mistakes editors should
//! underline (an unknown key, a wrong type, a misspelt head).

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn validator() -> jsonschema::Validator {
    let schema: serde_json::Value =
        serde_json::from_str(&graft_schema::pipeline_schema_json()).unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

/// A pipeline file as the JSON document editors validate.
fn as_json(path: &Path) -> serde_json::Value {
    let value: toml::Value = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    serde_json::to_value(value).unwrap()
}

fn pipelines(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn the_committed_schema_is_the_derived_one() {
    let committed = std::fs::read_to_string(repo().join("pipelines/graft.schema.json")).unwrap();
    assert!(
        committed == graft_schema::pipeline_schema_json(),
        "pipelines/graft.schema.json is stale: `cargo xtask schema --output pipelines/graft.schema.json`"
    );
}

#[test]
fn every_shipped_pipeline_names_the_schema_and_validates() {
    let validator = validator();
    let mut checked = 0;
    for dir in ["pipelines", "fixtures/pipelines"] {
        for path in pipelines(dir) {
            let text = std::fs::read_to_string(&path).unwrap();
            if dir == "pipelines" {
                assert_eq!(
                    text.lines().next(),
                    Some("#:schema ./graft.schema.json"),
                    "{}",
                    path.display()
                );
            }
            let errors: Vec<String> = validator
                .iter_errors(&as_json(&path))
                .map(|e| format!("{} at {}", e, e.instance_path))
                .collect();
            assert!(errors.is_empty(), "{}: {errors:?}", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 30, "{checked} pipelines");
}

#[test]
fn the_schema_catches_what_an_editor_should_underline() {
    let validator = validator();
    for (name, pointer) in [
        ("unknown-key", "/data"),
        ("wrong-type", "/backbone/threads"),
        ("misspelt-head", "/head"),
        // values `check` refuses are refused by the schema too
        ("schema-version", "/schema"),
        ("fine-tune-layers-word", "/fine_tune/layers"),
    ] {
        let path = repo().join(format!("fixtures/pipelines/errors/{name}.toml"));
        let errors: Vec<String> = validator
            .iter_errors(&as_json(&path))
            .map(|e| e.instance_path.to_string())
            .collect();
        assert!(
            errors.iter().any(|p| p.starts_with(pointer)),
            "{name}: expected an error under {pointer}, got {errors:?}"
        );
    }
}
