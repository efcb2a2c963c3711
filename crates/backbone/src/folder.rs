//! Hugging Face–style model folders: the ONNX graph, `tokenizer.json`, and sentence-transformers' settings
//! when the folder carries them.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{BackboneError, Pooling};

/// A model folder as Hugging Face's exporters lay it out: `model.onnx` (or `onnx/model.onnx`) beside
/// `tokenizer.json`, and for a sentence-transformers model `modules.json`, `1_Pooling/config.json` and
/// `sentence_bert_config.json`, whose pooling, normalisation and sequence length become the defaults.
///
/// ```no_run
/// let folder = graft_backbone::ModelFolder::open("all-MiniLM-L6-v2".as_ref())?;
/// println!("{} pooled {:?}", folder.onnx.display(), folder.pooling);
/// # Ok::<(), graft_backbone::BackboneError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ModelFolder {
    /// The graph.
    pub onnx: PathBuf,
    /// The tokenizer.
    pub tokenizer: PathBuf,
    /// Pooling named by the folder's pooling module (`None`: the folder does not say).
    pub pooling: Option<Pooling>,
    /// Whether the folder's modules end in a `Normalize` module (`None`: no `modules.json`).
    pub normalize: Option<bool>,
    /// `max_seq_length` of `sentence_bert_config.json`.
    pub max_length: Option<usize>,
    /// A pooling module graft does not have: its config file and why (see [`ModelFolder::pooling_or`]).
    refused_pooling: Option<(PathBuf, String)>,
}

#[derive(Deserialize)]
struct Module {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: String,
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pooling_mode_lasttoken: bool,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

fn model_error(path: &Path, message: String) -> BackboneError {
    BackboneError::Model {
        path: path.to_path_buf(),
        message,
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, BackboneError> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| model_error(path, format!("cannot read: {e}")))?;
    serde_json::from_str(&text).map(Some).map_err(|e| {
        model_error(
            path,
            format!("not the JSON sentence-transformers writes: {e}"),
        )
    })
}

impl ModelFolder {
    /// Finds the graph and tokenizer of `dir` and reads the sentence-transformers settings it carries.
    pub fn open(dir: &Path) -> Result<ModelFolder, BackboneError> {
        let onnx = [dir.join("model.onnx"), dir.join("onnx/model.onnx")]
            .into_iter()
            .find(|p| p.is_file())
            .ok_or_else(|| {
                let others: Vec<String> = std::fs::read_dir(dir.join("onnx"))
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".onnx"))
                    .collect();
                model_error(
                    dir,
                    format!(
                        "the folder has neither model.onnx nor onnx/model.onnx{}",
                        if others.is_empty() {
                            " (export one with `optimum-cli export onnx --model <name> <folder>`)"
                                .to_owned()
                        } else {
                            format!(
                                "; onnx/ holds {}: name one with `onnx = \"…\"` and `tokenizer`",
                                others.join(", ")
                            )
                        }
                    ),
                )
            })?;
        let tokenizer = dir.join("tokenizer.json");
        if !tokenizer.is_file() {
            return Err(BackboneError::MissingFile {
                what: "tokenizer (tokenizer.json in the model folder)",
                path: tokenizer,
            });
        }
        let modules_path = dir.join("modules.json");
        let modules: Option<Vec<Module>> = read_json(&modules_path)?;
        let (mut pooling, mut refused_pooling) = (None, None);
        if let Some(module) = modules
            .iter()
            .flatten()
            .find(|m| m.kind.ends_with(".Pooling"))
        {
            let path = inside(dir, &module.path, &modules_path)?.join("config.json");
            if let Some(config) = read_json::<PoolingConfig>(&path)? {
                match folder_pooling(&config) {
                    Ok(p) => pooling = Some(p),
                    Err(why) => refused_pooling = Some((path, why)),
                }
            }
        }
        let normalize = modules
            .as_ref()
            .map(|m| m.iter().any(|m| m.kind.ends_with(".Normalize")));
        let config_path = dir.join("sentence_bert_config.json");
        let max_length =
            read_json::<SentenceBertConfig>(&config_path)?.and_then(|c| c.max_seq_length);
        if let Some(n @ (0 | 1)) = max_length {
            return Err(model_error(
                &config_path,
                format!(
                    "`max_seq_length` is {n}, and a text needs at least 2 tokens (its start and end markers)"
                ),
            ));
        }
        Ok(ModelFolder {
            onnx,
            tokenizer,
            pooling,
            normalize,
            max_length,
            refused_pooling,
        })
    }

    /// The pooling to embed with: `explicit` when given (a pipeline's `pooling`, `--pooling`), else the
    /// folder's. An error only when the folder names a pooling graft does not have and none is given.
    pub fn pooling_or(&self, explicit: Option<Pooling>) -> Result<Option<Pooling>, BackboneError> {
        match (explicit, &self.refused_pooling) {
            (Some(p), _) => Ok(Some(p)),
            (None, Some((path, why))) => Err(model_error(
                path,
                format!(
                    "{why}\n  hint: set `pooling = \"mean\"` or `\"cls\"` in [backbone] (--pooling on the command \
                     line, pooling= in Python) to pool another way"
                ),
            )),
            (None, None) => Ok(self.pooling),
        }
    }
}

/// `dir/relative`, refused unless it stays inside `dir`: a module path from `modules.json` is the folder's
/// own sub-folder, never an absolute path or one that climbs out (which would read another model's files).
fn inside(dir: &Path, relative: &str, named_in: &Path) -> Result<PathBuf, BackboneError> {
    use std::path::Component;
    let escapes = Path::new(relative)
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
    let path = dir.join(relative);
    // A symbolic link inside the folder may still point out of it.
    let resolved_outside = match (path.canonicalize(), dir.canonicalize()) {
        (Ok(p), Ok(d)) => !p.starts_with(d),
        _ => false,
    };
    if escapes || resolved_outside {
        return Err(model_error(
            named_in,
            format!(
                "module path {relative:?} leads outside the model folder; a module's path is a sub-folder of it \
                 (such as \"1_Pooling\")"
            ),
        ));
    }
    Ok(path)
}

/// graft pools by masked mean or the first token; other modes are refused rather than approximated.
fn folder_pooling(config: &PoolingConfig) -> Result<Pooling, String> {
    let modes = [
        ("cls_token", config.pooling_mode_cls_token),
        ("mean_tokens", config.pooling_mode_mean_tokens),
        ("max_tokens", config.pooling_mode_max_tokens),
        (
            "mean_sqrt_len_tokens",
            config.pooling_mode_mean_sqrt_len_tokens,
        ),
        (
            "weightedmean_tokens",
            config.pooling_mode_weightedmean_tokens,
        ),
        ("lasttoken", config.pooling_mode_lasttoken),
    ];
    let on: Vec<&str> = modes.iter().filter(|m| m.1).map(|m| m.0).collect();
    match on.as_slice() {
        ["cls_token"] => Ok(Pooling::Cls),
        ["mean_tokens"] => Ok(Pooling::Mean),
        [] => Err("no pooling mode is on".to_owned()),
        other => Err(format!(
            "pooling mode {} is not one graft has (mean_tokens or cls_token alone)",
            other.join(" + ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn finds_the_graph_and_reads_the_sentence_transformers_settings() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(d, "onnx/model.onnx", "graph");
        write(d, "tokenizer.json", "{}");
        let plain = ModelFolder::open(d).unwrap();
        assert_eq!(plain.onnx, d.join("onnx/model.onnx"));
        assert_eq!(
            (plain.pooling, plain.normalize, plain.max_length),
            (None, None, None)
        );

        write(
            d,
            "modules.json",
            r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
                {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"},
                {"idx":2,"name":"2","path":"2_Normalize","type":"sentence_transformers.models.Normalize"}]"#,
        );
        write(
            d,
            "1_Pooling/config.json",
            r#"{"word_embedding_dimension":384,"pooling_mode_cls_token":true,"pooling_mode_mean_tokens":false}"#,
        );
        write(
            d,
            "sentence_bert_config.json",
            r#"{"max_seq_length":128,"do_lower_case":false}"#,
        );
        let st = ModelFolder::open(d).unwrap();
        assert_eq!(
            (st.pooling, st.normalize, st.max_length),
            (Some(Pooling::Cls), Some(true), Some(128))
        );

        write(
            d,
            "1_Pooling/config.json",
            r#"{"pooling_mode_max_tokens":true}"#,
        );
        let max = ModelFolder::open(d).unwrap();
        let err = max.pooling_or(None).unwrap_err().to_string();
        assert!(
            err.contains("pooling mode max_tokens is not one graft has")
                && err.contains("1_Pooling/config.json")
                && err.contains("set `pooling = \"mean\"`"),
            "{err}"
        );
        // The hint's advice works: an explicit pooling is taken.
        assert_eq!(
            max.pooling_or(Some(Pooling::Mean)).unwrap(),
            Some(Pooling::Mean)
        );
        assert_eq!(st.pooling_or(None).unwrap(), Some(Pooling::Cls));
    }

    #[test]
    fn a_module_path_stays_inside_the_folder() {
        let outer = tempfile::tempdir().unwrap();
        let d = &outer.path().join("model");
        write(d, "model.onnx", "graph");
        write(d, "tokenizer.json", "{}");
        write(
            outer.path(),
            "other/config.json",
            r#"{"pooling_mode_cls_token":true}"#,
        );
        let other = outer.path().join("other");
        for path in [other.display().to_string(), "../other".to_owned()] {
            let modules = serde_json::json!([
                {"path": path, "type": "sentence_transformers.models.Pooling"}
            ]);
            write(d, "modules.json", &modules.to_string());
            let err = ModelFolder::open(d).unwrap_err().to_string();
            assert!(
                err.contains("modules.json") && err.contains("leads outside the model folder"),
                "{path}: {err}"
            );
        }
        std::os::unix::fs::symlink(&other, d.join("1_Pooling")).unwrap();
        write(
            d,
            "modules.json",
            r#"[{"path":"1_Pooling","type":"sentence_transformers.models.Pooling"}]"#,
        );
        let err = ModelFolder::open(d).unwrap_err().to_string();
        assert!(err.contains("leads outside the model folder"), "{err}");
    }

    #[test]
    fn a_sequence_length_below_two_is_refused_by_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(d, "model.onnx", "graph");
        write(d, "tokenizer.json", "{}");
        write(d, "sentence_bert_config.json", r#"{"max_seq_length":0}"#);
        let err = ModelFolder::open(d).unwrap_err().to_string();
        assert!(
            err.contains("sentence_bert_config.json") && err.contains("`max_seq_length` is 0"),
            "{err}"
        );
    }

    #[test]
    fn a_folder_without_a_graph_or_tokenizer_says_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "onnx/model_quantized.onnx", "graph");
        let err = ModelFolder::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("onnx/ holds model_quantized.onnx"), "{err}");
        write(dir.path(), "model.onnx", "graph");
        let err = ModelFolder::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("tokenizer.json"), "{err}");
    }
}
