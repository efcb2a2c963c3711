//! The files a run leaves for each head: `heads/<name>.safetensors` (the kind's tensors and the transform's,
//! with `__metadata__` describing the head) and `heads/<name>.json` (graft-report's `HeadArtefact`), written
//! and read back with their checksums and classes checked.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use graft_headkit::{NamedTensor, TensorSource};
use graft_heads::{FittedTransform, HeadError, TemperatureScaling, TransformKind};
use ndarray::{Array1, Array2};

use graft_config::HeadSpec;
use graft_report::{
    BackboneRecord, HEAD_FORMAT, HeadArtefact, HeadExtra, MultiLabelRecord, TransformRecord,
};

use super::TrainedHead;
use crate::PipelineError;
use crate::io::write_atomic;

/// What an artefact records beside the weights: enough to refuse a mismatched backbone and to apply the
/// head exactly as trained.
#[derive(Debug, Clone, PartialEq)]
pub struct ArtefactInfo {
    /// Class names in output order.
    pub classes: Vec<String>,
    /// The backbone as the manifest records it (registry name, files, sha256, preprocessing).
    pub backbone: BackboneRecord,
    /// sha256 of the backbone's ONNX graph.
    pub backbone_sha256: String,
    /// Multi-label data: the separator joining a row's labels (used again in predictions).
    pub label_separator: Option<String>,
}

fn tensor_error(path: &Path, what: impl Into<String>) -> PipelineError {
    PipelineError::Artefact {
        path: path.to_path_buf(),
        problem: what.into(),
    }
}

/// Writes `<dir>/<name>.safetensors` and `<dir>/<name>.json` (each to a temporary name, then renamed).
pub fn save_head(
    dir: &Path,
    trained: &TrainedHead,
    info: &ArtefactInfo,
) -> Result<PathBuf, PipelineError> {
    save_head_as(dir, trained.spec.name(), trained, info)
}

/// [`save_head`] under another name (`heads/<name>.json`), for a second head of the same kind.
pub fn save_head_as(
    dir: &Path,
    name: &str,
    trained: &TrainedHead,
    info: &ArtefactInfo,
) -> Result<PathBuf, PipelineError> {
    // The head's own tensors, then the transform's. Standardisation is stored as mean and standard
    // deviation (scikit-learn's `mean_` and `scale_`), so a reader divides as StandardScaler does; whitening
    // as mean and the projection matrix. (safetensors orders tensors by name, whatever the order here.)
    let mut tensors = trained.head.tensors();
    let model_extra = trained.head.extra();
    let mut extra = HeadExtra {
        activation: model_extra.activation,
        fitted_temperature: model_extra.fitted_temperature,
        ..HeadExtra::default()
    };
    if let Some(t) = &trained.transform {
        tensors.push(NamedTensor::one("transform.mean", t.mean()));
        tensors.push(match t.kind() {
            TransformKind::Standardize => {
                NamedTensor::two("transform.std", &t.scale().mapv(|s| 1.0 / s))
            }
            TransformKind::PcaWhiten => NamedTensor::two("transform.projection", t.scale()),
        });
        extra.transform = Some(TransformRecord {
            kind: t.kind().name().to_owned(),
        });
    }
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|t| {
            let raw = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            (t.name, t.shape, raw)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(name, shape, raw)| {
            (
                name.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), raw)
                    .expect("shape matches the data"),
            )
        })
        .collect();
    let weights_path = dir.join(format!("{name}.safetensors"));
    // The weights describe themselves (the classes too: an edited description cannot relabel the outputs).
    let metadata = weights_metadata(trained, &extra, &info.classes);
    let serialized = safetensors::serialize(views, Some(metadata))
        .map(sorted_header)
        .map_err(|e| tensor_error(&weights_path, e.to_string()))?;
    let description = HeadArtefact {
        format: "graft-head".to_owned(),
        format_version: HEAD_FORMAT,
        graft_version: env!("CARGO_PKG_VERSION").to_owned(),
        head: trained.spec.settings(),
        weights: format!("{name}.safetensors"),
        weights_sha256: graft_stdx::sha256_hex(&serialized),
        classes: info.classes.clone(),
        input_dimension: trained.n_features(),
        temperature: trained.temperature.map(|t| t.temperature()),
        multi_label: trained.thresholds.as_ref().map(|t| MultiLabelRecord {
            thresholds: t.clone(),
            label_separator: info.label_separator.clone(),
        }),
        backbone: info.backbone.clone(),
        backbone_sha256: info.backbone_sha256.clone(),
        extra,
    };
    let json_path = dir.join(format!("{name}.json"));
    write_atomic(&weights_path, &serialized)?;
    write_atomic(
        &json_path,
        graft_report::to_json_text(&description).as_bytes(),
    )?;
    Ok(json_path)
}

/// A head loaded back from its artefact files.
#[derive(Debug, Clone)]
pub struct LoadedHead {
    /// The head, ready to predict.
    pub trained: TrainedHead,
    /// What the artefact records.
    pub info: ArtefactInfo,
}

/// The head's transform from its tensors: mean and standard deviation (standardisation) or mean and
/// projection (whitening); earlier files stored `transform.scale` (1/std, or the projection).
fn load_transform(
    d: &HeadArtefact,
    tensors: &Tensors<'_>,
    json_path: &Path,
) -> Result<Option<FittedTransform>, PipelineError> {
    let Some(kind) = d.extra.transform.as_ref().map(|t| t.kind.as_str()) else {
        return Ok(None);
    };
    let kind = match kind {
        "standardize" => TransformKind::Standardize,
        "pca_whiten" => TransformKind::PcaWhiten,
        other => {
            return Err(tensor_error(
                json_path,
                format!("unknown transform `{other}`"),
            ));
        }
    };
    let scale = match kind {
        _ if tensors.has("transform.scale") => tensors.two("transform.scale")?,
        TransformKind::Standardize => tensors.two("transform.std")?.mapv(|s| 1.0 / s),
        TransformKind::PcaWhiten => tensors.two("transform.projection")?,
    };
    FittedTransform::from_parts(kind, tensors.one("transform.mean")?, scale)
        .map(Some)
        .map_err(|e| tensor_error(tensors.path, e.to_string()))
}

/// The f32 tensors of a head's weights file, by name.
struct Tensors<'a> {
    path: &'a Path,
    arrays: HashMap<String, (Vec<usize>, Vec<f32>)>,
    /// The classes the weights were saved with (`None` for files written before they were stored).
    classes: Option<Vec<String>>,
}

/// The safetensors metadata key holding the head's classes (JSON list, output order); `graft.classes` in
/// files written before the metadata described the whole head.
const CLASSES_KEY: &str = "classes";
const OLD_CLASSES_KEY: &str = "graft.classes";

/// `__metadata__` of a head's weights: what a reader needs without graft (all values are strings, as the
/// format requires; lists and settings are JSON).
fn weights_metadata(
    trained: &TrainedHead,
    extra: &HeadExtra,
    classes: &[String],
) -> HashMap<String, String> {
    let json = |v: serde_json::Value| v.to_string();
    let mut m = HashMap::from([
        ("format".to_owned(), "graft-head".to_owned()),
        (
            "graft_version".to_owned(),
            env!("CARGO_PKG_VERSION").to_owned(),
        ),
        ("kind".to_owned(), trained.spec.name().to_owned()),
        (CLASSES_KEY.to_owned(), json(serde_json::json!(classes))),
        (
            "settings".to_owned(),
            serde_json::to_string(&trained.spec.settings()).expect("settings serialise"),
        ),
    ]);
    if let Some(a) = &extra.activation {
        m.insert("activation".to_owned(), a.clone());
    }
    if let Some(t) = trained
        .temperature
        .map(|t| t.temperature())
        .or(extra.fitted_temperature.map(f64::from))
    {
        m.insert("temperature".to_owned(), t.to_string());
    }
    if let Some(t) = &extra.transform {
        m.insert("transform".to_owned(), t.kind.clone());
    }
    if let Some(t) = &trained.thresholds {
        m.insert("thresholds".to_owned(), json(serde_json::json!(t)));
    }
    m
}

/// The safetensors file with its header's keys in sorted order: the crate writes its metadata map in hash
/// order, and the bytes of a head must not vary from run to run. Offsets are relative to the data, so only
/// the header (padded with spaces to 8 bytes, as the format does) is rewritten.
fn sorted_header(bytes: Vec<u8>) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8-byte length")) as usize;
    let header: std::collections::BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).expect("safetensors wrote a JSON header");
    let sorted: std::collections::BTreeMap<String, serde_json::Value> = header
        .into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::Object(map) => {
                let inner: std::collections::BTreeMap<_, _> = map.into_iter().collect();
                (k, serde_json::to_value(inner).expect("a map serialises"))
            }
            other => (k, other),
        })
        .collect();
    let mut text = serde_json::to_vec(&sorted).expect("a map serialises");
    text.resize(text.len().div_ceil(8) * 8, b' ');
    let mut out = Vec::with_capacity(8 + text.len() + bytes.len() - 8 - n);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(&bytes[8 + n..]);
    out
}

impl<'a> Tensors<'a> {
    fn read(path: &'a Path, bytes: &[u8]) -> Result<Tensors<'a>, PipelineError> {
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| tensor_error(path, e.to_string()))?;
        let mut arrays = HashMap::new();
        for (name, view) in st.tensors() {
            if view.dtype() != safetensors::Dtype::F32 {
                return Err(tensor_error(path, format!("tensor `{name}` is not f32")));
            }
            let data = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            arrays.insert(name, (view.shape().to_vec(), data));
        }
        let (_, metadata) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| tensor_error(path, e.to_string()))?;
        let classes = match metadata
            .metadata()
            .as_ref()
            .and_then(|m| m.get(CLASSES_KEY).or_else(|| m.get(OLD_CLASSES_KEY)))
        {
            Some(text) => Some(serde_json::from_str(text).map_err(|e| {
                tensor_error(
                    path,
                    format!("`{CLASSES_KEY}` metadata is not a list of names: {e}"),
                )
            })?),
            None => None,
        };
        Ok(Tensors {
            path,
            arrays,
            classes,
        })
    }

    fn has(&self, name: &str) -> bool {
        self.arrays.contains_key(name)
    }

    fn get(&self, name: &str) -> Result<&(Vec<usize>, Vec<f32>), PipelineError> {
        self.arrays
            .get(name)
            .ok_or_else(|| tensor_error(self.path, format!("tensor `{name}` is missing")))
    }

    fn one(&self, name: &str) -> Result<Array1<f32>, PipelineError> {
        Ok(Array1::from_vec(self.get(name)?.1.clone()))
    }

    fn two(&self, name: &str) -> Result<Array2<f32>, PipelineError> {
        let (shape, data) = self.get(name)?;
        if shape.len() != 2 {
            return Err(tensor_error(
                self.path,
                format!("tensor `{name}` is not 2-D"),
            ));
        }
        Ok(Array2::from_shape_vec((shape[0], shape[1]), data.clone()).expect("shape from header"))
    }
}

/// A kind's module reads its tensors through this (errors become messages; the caller names the file).
impl TensorSource for Tensors<'_> {
    fn one(&self, name: &str) -> Result<Array1<f32>, String> {
        Tensors::one(self, name).map_err(problem)
    }

    fn two(&self, name: &str) -> Result<Array2<f32>, String> {
        Tensors::two(self, name).map_err(problem)
    }

    fn has(&self, name: &str) -> bool {
        Tensors::has(self, name)
    }
}

/// The problem an artefact error states, without the file (the caller names it again).
fn problem(e: PipelineError) -> String {
    match e {
        PipelineError::Artefact { problem, .. } => problem,
        other => other.to_string(),
    }
}

/// Loads `<json>` and the safetensors file it names, checking the weights' sha256.
pub fn load_head(json_path: &Path) -> Result<LoadedHead, PipelineError> {
    let bad = |what: String| tensor_error(json_path, what);
    let d = HeadArtefact::read(json_path)?;
    let weights_name = d.weights.as_str();
    // The weights sit beside the JSON: a bare file name, never a path elsewhere.
    if weights_name.is_empty()
        || weights_name.contains(['/', '\\'])
        || weights_name.starts_with('.')
    {
        return Err(bad(format!(
            "`weights` = {weights_name:?} is not the name of a file beside it"
        )));
    }
    let weights_path = json_path.with_file_name(weights_name);
    let bytes = std::fs::read(&weights_path).map_err(|e| {
        bad(format!(
            "cannot read its weights file {}: {e}",
            weights_path.display()
        ))
    })?;
    if d.weights_sha256 != graft_stdx::sha256_hex(&bytes) {
        return Err(tensor_error(
            &weights_path,
            "sha256 differs from the one its .json records; the files do not belong together",
        ));
    }
    let tensors = Tensors::read(&weights_path, &bytes)?;
    let spec = HeadSpec::from_settings(&d.head).map_err(bad)?;
    let head_error = |e: HeadError| tensor_error(&weights_path, e.to_string());
    let transform = load_transform(&d, &tensors, json_path)?;
    let classes = d.classes.clone();
    if let Some(stored) = &tensors.classes
        && *stored != classes
    {
        return Err(bad(format!(
            "lists the classes {classes:?} but its weights {} were trained for {stored:?}; the files do not belong together",
            weights_path.display()
        )));
    }
    let multi_label = spec.multi_label.is_some();
    let head = spec
        .kind
        .head()
        .load(&tensors, classes.len(), multi_label)
        .map_err(|e| tensor_error(&weights_path, e))?;
    let temperature = match d.temperature {
        Some(t) => Some(TemperatureScaling::with_temperature(t).map_err(head_error)?),
        None => None,
    };
    let thresholds = if multi_label {
        let t: Vec<f32> = d
            .multi_label
            .as_ref()
            .map(|m| m.thresholds.clone())
            .ok_or_else(|| bad("`multi_label.thresholds` missing for a multi-label head".into()))?;
        if t.len() != classes.len() {
            return Err(bad(format!(
                "{} thresholds for {} labels",
                t.len(),
                classes.len()
            )));
        }
        Some(t)
    } else {
        None
    };
    let trained = TrainedHead {
        spec,
        transform,
        head,
        temperature,
        thresholds,
    };
    if trained.n_classes() != classes.len() {
        return Err(bad(format!(
            "{} classes listed but the weights give {}",
            classes.len(),
            trained.n_classes()
        )));
    }
    Ok(LoadedHead {
        trained,
        info: ArtefactInfo {
            classes,
            label_separator: d.multi_label.and_then(|m| m.label_separator),
            backbone: d.backbone,
            backbone_sha256: d.backbone_sha256,
        },
    })
}

#[cfg(test)]
mod tests {
    use graft_heads::{Knn, Logistic, Mlp, ParamGuard, Prototype, Ridge};
    use ndarray::Array2;

    use super::*;
    use crate::heads::{train_head, train_multi_label_head};
    use graft_config::{HeadKind, Threshold, TransformPlan};
    use graft_heads::{LabelSets, Targets};

    /// An artefact record for heads trained on plain arrays (no backbone).
    fn test_info(classes: &[&str]) -> ArtefactInfo {
        ArtefactInfo {
            classes: classes.iter().map(|c| c.to_string()).collect(),
            backbone: BackboneRecord {
                files: graft_report::ModelRecord::default(),
                settings: None,
            },
            backbone_sha256: "0".repeat(64),
            label_separator: None,
        }
    }

    /// A head's weights read without graft: `__metadata__` names the kind, classes, settings, temperature and
    /// transform; standardisation is mean and standard deviation (x − mean) / std, as scikit-learn's
    /// StandardScaler applies `mean_` and `scale_`; the header's keys are sorted so the bytes never vary. A
    /// file in the earlier layout (`graft.classes`, `transform.scale` = 1/std) still loads.
    #[test]
    fn weights_describe_themselves_and_the_earlier_layout_still_loads() {
        let x = Array2::from_shape_fn((24, 3), |(i, j)| {
            ((i * 5 + j * 7) % 9) as f32 * 0.5 + j as f32
        });
        let y: Vec<usize> = (0..24).map(|i| i % 2).collect();
        let t = Targets::new(&y, 2).unwrap();
        let transform = TransformPlan::Standardize.fit(x.view()).unwrap();
        let xt = transform.transform(x.view()).unwrap();
        let spec = HeadSpec {
            kind: HeadKind::Logistic(Logistic::params().check().unwrap()),
            calibrate: true,
            multi_label: None,
        };
        let (trained, _) = train_head(
            &spec,
            Some(&transform),
            xt.view(),
            &t,
            Some((xt.view(), &t)),
        )
        .unwrap();
        let info = test_info(&["no", "yes"]);
        let dir = tempfile::tempdir().unwrap();
        let path = save_head(dir.path(), &trained, &info).unwrap();
        let weights = dir.path().join("logistic.safetensors");
        let bytes = std::fs::read(&weights).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let meta = header.metadata().clone().unwrap();
        assert_eq!(meta["format"], "graft-head");
        assert_eq!(meta["kind"], "logistic");
        assert_eq!(meta["classes"], r#"["no","yes"]"#);
        assert_eq!(meta["transform"], "standardize");
        assert_eq!(meta["graft_version"], env!("CARGO_PKG_VERSION"));
        let temperature: f64 = meta["temperature"].parse().unwrap();
        assert_eq!(
            Some(temperature),
            trained.temperature.map(|t| t.temperature())
        );
        assert!(
            meta["settings"].contains("\"logistic\""),
            "{}",
            meta["settings"]
        );
        // (x − mean) / std with the stored tensors is the head's own transform.
        let floats = |name: &str| -> Vec<f32> {
            st.tensor(name)
                .unwrap()
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect()
        };
        let (mean, std) = (floats("transform.mean"), floats("transform.std"));
        assert!(st.tensor("transform.scale").is_err());
        for (row, expected) in x.rows().into_iter().zip(xt.rows()) {
            for j in 0..3 {
                let z = (row[j] - mean[j]) / std[j];
                assert!((z - expected[j]).abs() < 1e-5, "{z} vs {}", expected[j]);
            }
        }
        // Sorted header keys: saving again gives the same bytes.
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header_text = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
        assert!(
            header_text.find("\"classes\"").unwrap() < header_text.find("\"temperature\"").unwrap()
        );
        for _ in 0..3 {
            save_head(dir.path(), &trained, &info).unwrap();
            assert_eq!(std::fs::read(&weights).unwrap(), bytes);
        }
        // The earlier layout: classes under `graft.classes`, reciprocal standard deviations as `transform.scale`.
        let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = st
            .tensors()
            .into_iter()
            .map(|(name, view)| {
                if name == "transform.std" {
                    let scale: Vec<u8> = floats("transform.std")
                        .iter()
                        .flat_map(|s| (1.0 / s).to_le_bytes())
                        .collect();
                    ("transform.scale".to_owned(), view.shape().to_vec(), scale)
                } else {
                    (name, view.shape().to_vec(), view.data().to_vec())
                }
            })
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
            .iter()
            .map(|(n, shape, data)| {
                let view = safetensors::tensor::TensorView::new(
                    safetensors::Dtype::F32,
                    shape.clone(),
                    data,
                );
                (n.clone(), view.unwrap())
            })
            .collect();
        let old_meta = HashMap::from([(OLD_CLASSES_KEY.to_owned(), r#"["no","yes"]"#.to_owned())]);
        let old = safetensors::serialize(views, Some(old_meta)).unwrap();
        std::fs::write(&weights, &old).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let sha = graft_stdx::sha256_hex(&bytes);
        std::fs::write(&path, text.replace(&sha, &graft_stdx::sha256_hex(&old))).unwrap();
        let loaded = load_head(&path).unwrap();
        let (a, b) = (
            loaded.trained.predict_proba(x.view()).unwrap(),
            trained.predict_proba(x.view()).unwrap(),
        );
        assert!(a.iter().zip(&b).all(|(a, b)| (a - b).abs() < 1e-6));
    }

    #[test]
    fn save_then_load_predicts_identically_for_every_head() {
        let x = Array2::from_shape_fn((30, 4), |(i, j)| {
            ((i * 7 + j * 3) % 11) as f32 * 0.3 + if j == i % 3 { 2.0 } else { 0.0 }
        });
        let y: Vec<usize> = (0..30).map(|i| i % 3).collect();
        let t = Targets::new(&y, 3).unwrap();
        let transform = TransformPlan::PcaWhiten {
            components: Some(3),
            epsilon: 1e-5,
        }
        .fit(x.view())
        .unwrap();
        let xt = transform.transform(x.view()).unwrap();
        let specs = [
            HeadKind::Logistic(Logistic::params().balanced(true).check().unwrap()),
            HeadKind::Mlp(Mlp::params().hidden(&[5]).max_epochs(5).check().unwrap()),
            HeadKind::Prototype(Prototype::params().check().unwrap()),
            HeadKind::Knn(Knn::params().k(3).check().unwrap()),
            HeadKind::Ridge(Ridge::params().alpha(0.5).check().unwrap()),
        ];
        let dir = tempfile::tempdir().unwrap();
        let info = test_info(&["a", "b", "c"]);
        for kind in specs {
            let spec = HeadSpec {
                kind,
                calibrate: true,
                multi_label: None,
            };
            let (trained, _) = train_head(
                &spec,
                Some(&transform),
                xt.view(),
                &t,
                Some((xt.view(), &t)),
            )
            .unwrap();
            let path = save_head(dir.path(), &trained, &info).unwrap();
            let loaded = load_head(&path).unwrap();
            assert_eq!(
                loaded.trained.predict_proba(x.view()).unwrap(),
                trained.predict_proba(x.view()).unwrap(),
                "{}",
                spec.name()
            );
            assert_eq!(loaded.info, info);
        }
        // Classes reversed in the description: the weights carry the classes they were trained for. (On main
        // this predicted with every label inverted.)
        let description = dir.path().join("logistic.json");
        let text = std::fs::read_to_string(&description).unwrap();
        let reversed = text
            .replacen("\"a\",", "\"c\",", 1)
            .replacen("\"c\"\n", "\"a\"\n", 1);
        assert_ne!(text, reversed);
        std::fs::write(&description, reversed).unwrap();
        let err = load_head(&description).unwrap_err().to_string();
        assert!(
            err.contains("were trained for [\"a\", \"b\", \"c\"]"),
            "{err}"
        );
        // A weights file that does not belong to its description is refused.
        std::fs::write(dir.path().join("knn.safetensors"), b"not the weights").unwrap();
        let err = load_head(&dir.path().join("knn.json")).unwrap_err();
        assert!(err.to_string().contains("sha256 differs"), "{err}");

        // Multi-label heads keep their thresholds and separator.
        let sets: Vec<Vec<usize>> = (0..30)
            .map(|i| (0..3).filter(|l| (i + l) % 2 == 0).collect())
            .collect();
        let targets = LabelSets::new(&sets, 3).unwrap();
        let info = ArtefactInfo {
            label_separator: Some(";".to_owned()),
            ..info
        };
        for (kind, threshold) in [
            (
                HeadKind::Logistic(Logistic::params().check().unwrap()),
                Threshold::Tuned,
            ),
            (
                HeadKind::Mlp(Mlp::params().hidden(&[5]).max_epochs(5).check().unwrap()),
                Threshold::Fixed(0.4),
            ),
        ] {
            let spec = HeadSpec {
                kind,
                calibrate: false,
                multi_label: Some(threshold),
            };
            let (trained, _) = train_multi_label_head(
                &spec,
                Some(&transform),
                xt.view(),
                &targets,
                Some((xt.view(), &targets)),
            )
            .unwrap();
            let path = save_head(dir.path(), &trained, &info).unwrap();
            let loaded = load_head(&path).unwrap();
            assert_eq!(loaded.trained.spec, spec);
            assert_eq!(loaded.trained.thresholds, trained.thresholds);
            assert_eq!(
                loaded.trained.predict_sets(x.view()).unwrap(),
                trained.predict_sets(x.view()).unwrap()
            );
            assert_eq!(loaded.info, info);
        }
    }
}
