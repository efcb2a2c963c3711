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
        let modules: Option<Vec<Module>> = read_json(&dir.join("modules.json"))?;
        let mut pooling = None;
        if let Some(module) = modules
            .iter()
            .flatten()
            .find(|m| m.kind.ends_with(".Pooling"))
        {
            let path = dir.join(&module.path).join("config.json");
            if let Some(config) = read_json::<PoolingConfig>(&path)? {
                pooling = Some(folder_pooling(&config).map_err(|m| model_error(&path, m))?);
            }
        }
        let normalize = modules
            .as_ref()
            .map(|m| m.iter().any(|m| m.kind.ends_with(".Normalize")));
        let max_length = read_json::<SentenceBertConfig>(&dir.join("sentence_bert_config.json"))?
            .and_then(|c| c.max_seq_length);
        Ok(ModelFolder {
            onnx,
            tokenizer,
            pooling,
            normalize,
            max_length,
        })
    }
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
            "pooling mode {} is not one graft has (mean_tokens or cls_token alone); set `pooling` in [backbone] \
             to override",
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
        let err = ModelFolder::open(d).unwrap_err().to_string();
        assert!(
            err.contains("pooling mode max_tokens is not one graft has"),
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
