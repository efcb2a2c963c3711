//! The one checker: every check of a pipeline file, the plan's sections (`check/`) and the technique tables
//! (`techniques/`), builds its located errors and reads its values through these helpers.

use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::spanned::Spanned;

use crate::sources::absolute;
use crate::sources::{OtherBackbone, RawBackboneRef};
use crate::{Diagnostic, did_you_mean};

/// What the data and backbone of the pipeline are, for checks that depend on them.
#[derive(Debug, Clone, Copy)]
pub struct Modality {
    /// Rows are texts embedded by a text backbone.
    pub texts: bool,
    /// Rows are images.
    pub images: bool,
    /// Multi-label data.
    pub multi_label: bool,
    /// `[backbone] augment` makes augmented views of the training images.
    pub image_views: bool,
    /// `[backbone] prompt` is set.
    pub prompted: bool,
    /// Number of `[head.*]` tables.
    pub heads: usize,
    /// For a registered backbone, whether it is published with float32 weights (`None`: the user's own
    /// files): what `[fine_tune]` can train.
    pub registered_weights: Option<bool>,
}

/// Checks a pipeline file: errors point at the offending text of `source`, paths resolve from `file`'s folder.
pub(crate) struct Checker<'a> {
    pub(crate) file: &'a Path,
    pub(crate) source: &'a str,
}

impl Checker<'_> {
    pub(crate) fn error(&self, span: Range<usize>, message: impl Into<String>) -> Diagnostic {
        Diagnostic::at(self.file, self.source, Some(span), message)
    }

    /// A name missing from the registry: suggest the closest one and list them all.
    pub(crate) fn unknown(
        &self,
        name: &Spanned<String>,
        what: &str,
        plural: &str,
        known: &[&str],
    ) -> Diagnostic {
        let list = format!("registered {plural}: {}", known.join(", "));
        let hint = match did_you_mean(name.get_ref(), known.iter().copied()) {
            Some(best) => format!("did you mean `{best}`? {list}"),
            None => list,
        };
        self.error(name.span(), format!("unknown {what} `{}`", name.get_ref()))
            .with_hint(hint)
    }

    /// Resolves a path key against the pipeline's folder; a diagnostic at the key when no such file exists.
    pub(crate) fn existing_file(
        &self,
        path: &Spanned<String>,
        what: &str,
    ) -> Result<PathBuf, Diagnostic> {
        let resolved = self.resolve(path.get_ref());
        if resolved.is_file() {
            return Ok(resolved);
        }
        Err(self
            .error(
                path.span(),
                format!("{what} not found: {}", resolved.display()),
            )
            .with_hint("relative paths are resolved from the folder of the pipeline file"))
    }

    pub(crate) fn resolve(&self, path: &str) -> PathBuf {
        absolute(&self.file.parent().unwrap_or(Path::new(".")).join(path))
    }

    /// A positive count, or the default.
    pub(crate) fn positive(
        &self,
        value: &Option<Spanned<usize>>,
        default: usize,
        key: &str,
        hint: &str,
    ) -> Result<usize, Diagnostic> {
        match value {
            None => Ok(default),
            Some(v) if *v.get_ref() > 0 => Ok(*v.get_ref()),
            Some(v) => Err(self
                .error(v.span(), format!("`{key}` must be at least 1"))
                .with_hint(hint.to_owned())),
        }
    }

    /// A finite number above 0, or the default.
    pub(crate) fn positive_number(
        &self,
        value: &Option<Spanned<f64>>,
        default: f64,
        key: &str,
        hint: &str,
    ) -> Result<f64, Diagnostic> {
        match value {
            None => Ok(default),
            Some(v) if v.get_ref().is_finite() && *v.get_ref() > 0.0 => Ok(*v.get_ref()),
            Some(v) => Err(self
                .error(
                    v.span(),
                    format!("`{key}` = {} must be a positive number", v.get_ref()),
                )
                .with_hint(hint.to_owned())),
        }
    }

    /// Classes per episode (`ways`): at least 2, when given.
    pub(crate) fn ways(&self, value: &Option<Spanned<usize>>) -> Result<Option<usize>, Diagnostic> {
        match value {
            Some(w) if *w.get_ref() < 2 => Err(self
                .error(w.span(), "`ways` must be at least 2")
                .with_hint("an episode tells N ≥ 2 classes apart, e.g. `ways = 5`")),
            w => Ok(w.as_ref().map(|w| *w.get_ref())),
        }
    }

    /// A list of positive counts, sorted and deduplicated, or the default.
    pub(crate) fn shots(
        &self,
        value: &Option<Spanned<Vec<usize>>>,
        default: &[usize],
        key: &str,
    ) -> Result<Vec<usize>, Diagnostic> {
        let mut shots = match value {
            None => default.to_vec(),
            Some(s) if s.get_ref().is_empty() || s.get_ref().contains(&0) => {
                return Err(self
                    .error(
                        s.span(),
                        format!("`{key}` must list positive numbers of examples per class"),
                    )
                    .with_hint(format!("e.g. `{key} = [1, 5, 10]`")));
            }
            Some(s) => s.get_ref().clone(),
        };
        shots.sort_unstable();
        shots.dedup();
        Ok(shots)
    }

    /// A probability strictly between 0 and 1, or the default.
    pub(crate) fn fraction(
        &self,
        value: &Option<Spanned<f64>>,
        default: f64,
        key: &str,
        hint: &str,
    ) -> Result<f64, Diagnostic> {
        match value {
            None => Ok(default),
            Some(v) if *v.get_ref() > 0.0 && *v.get_ref() < 1.0 => Ok(*v.get_ref()),
            Some(v) => Err(self
                .error(
                    v.span(),
                    format!("`{key}` = {} must be between 0 and 1", v.get_ref()),
                )
                .with_hint(hint.to_owned())),
        }
    }

    /// A second text backbone named by a stage: registered, or ONNX + tokenizer files.
    pub(crate) fn text_backbone(
        &self,
        raw: &Spanned<RawBackboneRef>,
    ) -> Result<OtherBackbone, Diagnostic> {
        let registry = graft_assets::Registry::builtin();
        let text_models: Vec<&str> = registry
            .models
            .iter()
            .filter(|(_, m)| m.modality == "text")
            .map(|(n, _)| n.as_str())
            .collect();
        let hint = format!(
            "registered text backbones: {}; or give files: {{ onnx = \"model.onnx\", tokenizer = \"tokenizer.json\" }}",
            text_models.join(", ")
        );
        match raw.get_ref() {
            RawBackboneRef::Name(name) => match registry.models.get(name) {
                Some(m) if m.modality == "text" => Ok(OtherBackbone::Registry(name.clone())),
                Some(_) => Err(self
                    .error(raw.span(), format!("`{name}` is not a text backbone"))
                    .with_hint(hint)),
                None => Err(self
                    .error(raw.span(), format!("unknown backbone `{name}`"))
                    .with_hint(hint)),
            },
            RawBackboneRef::Files(files) => {
                let mut paths = Vec::new();
                for (what, path) in [("ONNX model", &files.onnx), ("tokenizer", &files.tokenizer)] {
                    let resolved = self.resolve(path);
                    if !resolved.is_file() {
                        return Err(self
                            .error(
                                raw.span(),
                                format!("{what} not found: {}", resolved.display()),
                            )
                            .with_hint(
                                "relative paths are resolved from the folder of the pipeline file",
                            ));
                    }
                    paths.push(resolved);
                }
                let tokenizer = paths.pop().expect("two paths");
                let onnx = paths.pop().expect("two paths");
                Ok(OtherBackbone::Files { onnx, tokenizer })
            }
        }
    }

    /// Refuses a stage on multi-label data.
    pub(crate) fn single_label(
        &self,
        modality: Modality,
        span: Range<usize>,
        table: &str,
    ) -> Result<(), Diagnostic> {
        if modality.multi_label {
            return Err(self
                .error(span, format!("`[{table}]` applies to single-label data"))
                .with_hint("remove it, or drop `label_separator` from `[data]`"));
        }
        Ok(())
    }
}
