//! The checker: one pass from the raw serde mirror to a [`Plan`](crate::Plan), one file per section. Every
//! mistake becomes a [`Diagnostic`](crate::Diagnostic) pointing at its key.

mod backbone;
mod candidates;
mod data;
mod heads;
mod search;
mod tracking;

use std::path::Path;

use crate::spanned::Spanned;
use graft_assets::Registry;
use graft_ingest::SplitRatios;

use crate::ConfigError;
use crate::Diagnostic;
pub(crate) use crate::checker::Checker;
use crate::heads::{HeadKind, HeadSpec, TransformPlan};
use crate::plan::*;
use crate::schema::{
    RawEvaluation, RawLearningCurve, RawPipeline, RawSplit, RawTransform, SCHEMA_VERSION,
};
use crate::sources::{ModelSource, absolute};
use crate::techniques::TechniquesPlan;

impl Plan {
    /// Reads and checks a pipeline file.
    pub fn load(path: &Path) -> Result<Plan, ConfigError> {
        let file = absolute(path);
        let source = std::fs::read_to_string(&file).map_err(|source| ConfigError::File {
            path: path.to_path_buf(),
            source,
        })?;
        Plan::parse(&file, &source)
    }

    /// Checks pipeline text as if it were the file `file` (relative paths resolve against its folder).
    pub fn parse(file: &Path, source: &str) -> Result<Plan, ConfigError> {
        let raw = graft_schema::parse(file, source).map_err(ConfigError::Invalid)?;
        Checker { file, source }.check(raw)
    }
}

impl Checker<'_> {
    pub(crate) fn check(&self, raw: RawPipeline) -> Result<Plan, ConfigError> {
        self.check_raw(raw).map_err(ConfigError::Invalid)
    }

    fn check_raw(&self, raw: RawPipeline) -> Result<Plan, Diagnostic> {
        self.check_header(&raw)?;
        let name = raw.name.get_ref();
        let mut spans = Spans {
            data: Some(raw.data.span()),
            backbone: raw.backbone.as_ref().map(Spanned::span),
            ..Spans::default()
        };
        let data = self.check_data(raw.data, &mut spans)?;
        let split = self.check_split(raw.split, &data, &mut spans)?;
        let given_features = matches!(data.source, DataSource::Features { .. });
        let backbone_candidates = match raw.backbones {
            Some(b) => self.check_candidates(
                b,
                raw.backbone.as_ref().map(Spanned::get_ref),
                given_features,
            )?,
            None => Vec::new(),
        };
        let backbone = match (raw.backbone, given_features) {
            (Some(b), true) => {
                return Err(self
                    .error(b.span(), "`[backbone]` does not apply: `[data] features` gives the features")
                    .with_hint("remove `[backbone]` to train on the given features, or `features` to extract them with the backbone"));
            }
            (None, true) => None,
            // With candidates, `[backbone]` holds only the keys they share: each candidate is checked whole.
            (_, false) if !backbone_candidates.is_empty() => {
                Some(backbone_candidates[0].backbone.clone())
            }
            (None, false) => {
                return Err(self
                    .error(0..0, "the pipeline has no `[backbone]`")
                    .with_hint("add `[backbone]` with `model = \"minilm-l6-int8\"` (or another registered backbone), or give features computed elsewhere with `[data] features = \"x.parquet\"`"));
            }
            (Some(b), false) => Some(self.check_backbone(b, &mut spans)?),
        };
        if let Some(backbone) = &backbone {
            self.check_modality(backbone, &data, &spans)?;
        }
        for candidate in &backbone_candidates {
            let spans = Spans {
                backbone: Some(candidate.span.clone()),
                ..spans.clone()
            };
            self.check_modality(&candidate.backbone, &data, &spans)?;
        }
        let tracking = raw.tracking.map(|t| self.check_tracking(t)).transpose()?;
        let seed = raw.seed.unwrap_or(42);
        let heads = self.check_heads(raw.head, seed, data.label_separator.is_some(), &mut spans)?;
        let dimension = backbone.as_ref().and_then(|b| match &b.source {
            ModelSource::Registry(name) => {
                Registry::builtin().models.get(name).map(|m| m.dimension)
            }
            _ => None,
        });
        let transform = raw
            .transform
            .map(|t| self.check_transform(t, dimension, &mut spans))
            .transpose()?;
        let evaluation = match raw.evaluation {
            None => EvaluationPlan::default(),
            Some(e) => self.check_evaluation(e.into_inner())?,
        };
        let search = match raw.search {
            None => None,
            Some(r) => {
                if data.label_separator.is_some() {
                    return Err(self
                        .error(r.span(), "`[search]` applies to single-label data")
                        .with_hint(
                            "multi-label heads are not searched yet; set their keys in `[head.*]`",
                        ));
                }
                Some(self.check_search(r, &heads, seed)?)
            }
        };
        let learning_curve = self.check_learning_curve(raw.learning_curve, &data)?;
        let techniques = crate::techniques::check(
            self,
            crate::techniques::RawTechniques {
                zero_shot: raw.zero_shot,
                few_shot: raw.few_shot,
                meta_learning: raw.meta_learning,
                self_training: raw.self_training,
                continual: raw.continual,
                domain_adaptation: raw.domain_adaptation,
                multitask: raw.multitask,
                distillation: raw.distillation,
                fusion: raw.fusion,
                augmentation: raw.augmentation,
                prompt_templates: raw.prompt_templates,
                fine_tune: raw.fine_tune,
                progressive: raw.progressive,
            },
            modality(backbone.as_ref(), &data, heads.len()),
        )?;
        self.check_prototype_prior(&techniques, &heads, transform.is_some())?;
        Ok(Plan {
            file: self.file.to_path_buf(),
            source: self.source.to_owned(),
            name: name.clone(),
            seed,
            data,
            split,
            backbone,
            backbone_candidates,
            tracking,
            transform,
            heads,
            evaluation,
            search,
            learning_curve,
            techniques,
            spans,
        })
    }

    /// The schema version this build reads, and a name that can be a folder.
    fn check_header(&self, raw: &RawPipeline) -> Result<(), Diagnostic> {
        if *raw.schema.get_ref() != SCHEMA_VERSION {
            return Err(self
                .error(
                    raw.schema.span(),
                    format!("unsupported schema version {}", raw.schema.get_ref()),
                )
                .with_hint(format!(
                    "this build of graft reads `schema = {SCHEMA_VERSION}`"
                )));
        }
        let name = raw.name.get_ref();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            || name.starts_with('.')
        {
            return Err(self
                .error(raw.name.span(), format!("invalid pipeline name `{name}`"))
                .with_hint(
                    "use letters, digits, `-`, `_` and `.`; the name becomes a folder under runs/",
                ));
        }
        Ok(())
    }

    /// The backbone embeds what the rows are (texts or images).
    fn check_modality(
        &self,
        backbone: &BackbonePlan,
        data: &DataPlan,
        spans: &Spans,
    ) -> Result<(), Diagnostic> {
        if backbone.image.is_some() != data.source.is_images() {
            let (model, rows) = if backbone.image.is_some() {
                ("an image backbone", "texts")
            } else {
                ("a text backbone", "images")
            };
            return Err(self
                .error(
                    spans
                        .backbone_model
                        .clone()
                        .or(spans.backbone.clone())
                        .expect("backbone span"),
                    format!("{model} cannot embed {rows}"),
                )
                .with_hint(format!(
                    "pick a backbone for the data's modality; registered backbones: {}",
                    Registry::builtin().model_names().join(", ")
                )));
        }
        Ok(())
    }

    fn check_evaluation(&self, raw: RawEvaluation) -> Result<EvaluationPlan, Diagnostic> {
        let mut plan = EvaluationPlan::default();
        if let Some(b) = &raw.bootstrap {
            if *b.get_ref() == 1 {
                return Err(self
                    .error(b.span(), "`bootstrap = 1` cannot make an interval")
                    .with_hint("use 1000 or more resamples (or 0 to turn intervals off)"));
            }
            plan.bootstrap = *b.get_ref();
        }
        if let Some(l) = &raw.level {
            let v = *l.get_ref();
            if !(v > 0.0 && v < 1.0) {
                return Err(self
                    .error(l.span(), format!("`level = {v}` must be between 0 and 1"))
                    .with_hint("e.g. 0.95 for 95% intervals"));
            }
            plan.level = v;
        }
        if let Some(b) = &raw.bins {
            if *b.get_ref() == 0 {
                return Err(self
                    .error(b.span(), "`bins` must be at least 1")
                    .with_hint("10 equal-width confidence bins is the usual choice"));
            }
            plan.bins = *b.get_ref();
        }
        if let Some(c) = &raw.cv {
            if *c.get_ref() < 2 {
                return Err(self
                    .error(c.span(), "`cv` must be at least 2 folds")
                    .with_hint(
                        "5 folds is the usual choice; leave `cv` out to skip cross-validation",
                    ));
            }
            plan.cv = Some(*c.get_ref());
        }
        Ok(plan)
    }

    /// The transform; `dimension` is the registered backbone's width, when known before extraction.
    fn check_transform(
        &self,
        raw: RawTransform,
        dimension: Option<usize>,
        spans: &mut Spans,
    ) -> Result<TransformPlan, Diagnostic> {
        Ok(match raw {
            RawTransform::Standardize(_) => TransformPlan::Standardize,
            RawTransform::PcaWhiten(t) => {
                let r = t.get_ref();
                spans.pca_components = Some(r.components.as_ref().map_or(t.span(), |c| c.span()));
                if let Some(c) = &r.components
                    && *c.get_ref() == 0
                {
                    return Err(self.error(c.span(), "`components` must be at least 1"));
                }
                if let (Some(c), Some(d)) = (&r.components, dimension)
                    && *c.get_ref() > d
                {
                    return Err(self
                        .error(
                            c.span(),
                            format!(
                                "`components = {}` is more than the backbone's {d} features",
                                c.get_ref()
                            ),
                        )
                        .with_hint(format!(
                            "keep at most {d} components, or leave `components` out to keep all"
                        )));
                }
                let epsilon = r.epsilon.as_ref().map_or(Ok(1e-5), |e| {
                    let v = *e.get_ref();
                    if v.is_finite() && v >= 0.0 {
                        Ok(v)
                    } else {
                        Err(self.error(e.span(), "`epsilon` must be a finite number of at least 0"))
                    }
                })?;
                TransformPlan::PcaWhiten {
                    components: r.components.as_ref().map(|c| *c.get_ref()),
                    epsilon,
                }
            }
        })
    }

    /// `[split.stratified]` ratios, or `[split.predefined]` with its validation share.
    fn check_split(
        &self,
        raw: RawSplit,
        data: &DataPlan,
        spans: &mut Spans,
    ) -> Result<SplitPlan, Diagnostic> {
        Ok(match raw {
            RawSplit::Stratified(s) => {
                spans.split = Some(s.span());
                let r = s.get_ref();
                let ratios = SplitRatios::new(r.train, r.validation, r.test).map_err(|e| {
                    self.error(s.span(), e.to_string())
                        .with_hint("for example train = 0.8, validation = 0.1, test = 0.1")
                })?;
                if ratios.test() == 0.0 {
                    return Err(self
                        .error(s.span(), "test = 0 leaves nothing to evaluate on")
                        .with_hint("give the test split a share, e.g. test = 0.1"));
                }
                if let Some(span) = &spans.split_column {
                    return Err(self
                        .error(span.clone(), "`split_column` assigns rows to splits, but the split is `[split.stratified]`")
                        .with_hint("use `[split.predefined]` to keep the column's train/validation/test, or remove `split_column`"));
                }
                SplitPlan::Stratified(ratios)
            }
            RawSplit::Predefined(s) => {
                spans.split = Some(s.span());
                if !matches!(data.source, DataSource::ImageRegistry(_))
                    && data.split_column.is_none()
                {
                    return Err(self
                        .error(s.span(), "`[split.predefined]` needs a data set with an official split or a split column")
                        .with_hint("registered image data sets (e.g. fashion-mnist) have one; for your own table name the column with `split_column = \"split\"` in `[data]` (values train, validation, test), or use `[split.stratified]`"));
                }
                let validation = s.get_ref().validation.unwrap_or(0.0);
                if !(0.0..1.0).contains(&validation) {
                    return Err(self
                        .error(
                            s.span(),
                            format!("validation = {validation} must be in [0, 1)"),
                        )
                        .with_hint(
                            "it is the share of the official training rows held out, e.g. 0.1",
                        ));
                }
                SplitPlan::Predefined { validation }
            }
        })
    }

    /// `[learning_curve]`: single-label data with raw inputs, positive shots, at least one repeat.
    fn check_learning_curve(
        &self,
        raw: Option<Spanned<RawLearningCurve>>,
        data: &DataPlan,
    ) -> Result<Option<CurvePlan>, Diagnostic> {
        Ok(match raw {
            None => None,
            Some(c) => {
                let span = c.span();
                if data.label_separator.is_some() {
                    return Err(self
                        .error(span, "`[learning_curve]` applies to single-label data")
                        .with_hint("remove it, or drop `label_separator`"));
                }
                if matches!(data.source, DataSource::Features { .. }) {
                    return Err(self
                        .error(span, "`[learning_curve]` needs the raw texts or images, for the from-scratch baseline")
                        .with_hint("given features have no raw inputs to train a baseline on; remove `[learning_curve]`"));
                }
                let c = c.into_inner();
                let mut shots = c
                    .shots
                    .as_ref()
                    .map_or_else(|| vec![1, 2, 4, 8, 16, 32, 64], |s| s.get_ref().clone());
                if let Some(s) = &c.shots
                    && (s.get_ref().is_empty() || s.get_ref().contains(&0))
                {
                    return Err(self
                        .error(s.span(), "`shots` must list positive numbers of examples per class")
                        .with_hint("e.g. `shots = [1, 2, 4, 8, 16, 32]`; the whole training split is always added"));
                }
                shots.sort_unstable();
                shots.dedup();
                let repeats = c.repeats.as_ref().map_or(5, |r| *r.get_ref());
                if repeats == 0 {
                    return Err(self
                        .error(
                            c.repeats.as_ref().map_or(span, Spanned::span),
                            "`repeats` must be at least 1",
                        )
                        .with_hint("5 seeded draws per point give a usable interval"));
                }
                Some(CurvePlan { shots, repeats })
            }
        })
    }

    /// `[zero_shot] initialise_prototype` needs a cosine prototype head on untransformed features.
    fn check_prototype_prior(
        &self,
        techniques: &TechniquesPlan,
        heads: &[HeadSpec],
        transformed: bool,
    ) -> Result<(), Diagnostic> {
        if let Some(span) = techniques
            .zero_shot()
            .and_then(|z| z.initialise_prototype.clone())
        {
            let cosine_prototype = heads.iter().any(|h| {
                matches!(&h.kind, HeadKind::Prototype(p) if p.metric() == graft_heads::Metric::Cosine)
            });
            if !cosine_prototype {
                return Err(self
                    .error(
                        span,
                        "`initialise_prototype` needs a cosine `[head.prototype]`",
                    )
                    .with_hint("add `[head.prototype]` (metric = \"cosine\", the default)"));
            }
            if transformed {
                return Err(self
                    .error(span, "`initialise_prototype` mixes class descriptions into prototypes of transformed features")
                    .with_hint("the descriptions are embedded as the backbone gives them; remove `[transform.*]` or this key"));
            }
        }
        Ok(())
    }
}

/// What the technique tables may assume about the rows and the backbone.
fn modality(
    backbone: Option<&crate::BackbonePlan>,
    data: &crate::DataPlan,
    heads: usize,
) -> crate::techniques::Modality {
    crate::techniques::Modality {
        texts: backbone.is_some_and(|b| b.image.is_none()),
        images: data.source.is_images(),
        multi_label: data.label_separator.is_some(),
        image_views: backbone
            .and_then(|b| b.image.as_ref())
            .is_some_and(|i| i.augment.is_some()),
        prompted: backbone.is_some_and(|b| b.prompt.is_some()),
        heads,
        registered_weights: match backbone.map(|b| &b.source) {
            Some(crate::ModelSource::Registry(name)) => Some(
                graft_assets::Registry::builtin()
                    .models
                    .get(name)
                    .is_some_and(|m| {
                        m.weights
                            .as_ref()
                            .is_some_and(|w| w.architecture.trainable())
                    }),
            ),
            _ => None,
        },
    }
}
