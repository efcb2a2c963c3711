//! `[meta_learning]`: prototypical networks (Snell et al., 2017) as meta-learning — a projection of the frozen
//! features trained by episodes on base classes — scored by N-way K-shot episodes on novel classes held out
//! from meta-training, against prototypes on the frozen features.

use crate::spanned::Spanned;
use graft_schema::techniques::RawMetaLearning;
use serde_json::json;

use super::Modality;
use crate::Diagnostic;
use crate::checker::Checker;

/// `[meta_learning]`, checked. Class names are checked against the data when it is read.
#[derive(Debug, Clone)]
pub struct MetaLearningPlan {
    /// Held-out classes by name; `None`: the second half of the classes.
    pub novel: Option<Vec<String>>,
    pub novel_span: Option<std::ops::Range<usize>>,
    pub ways: usize,
    pub shots: Vec<usize>,
    pub queries: usize,
    pub episodes: usize,
    pub train_episodes: usize,
    /// Width of the projection; `None`: the features' own, starting from the identity.
    pub dim: Option<usize>,
    pub learning_rate: f64,
    /// Base classes held out of meta-training to pick the kept projection; `None`: a quarter of the base
    /// classes (at least 2) when at least 2 remain to train on.
    pub validation_classes: Option<usize>,
    pub span: std::ops::Range<usize>,
}

impl MetaLearningPlan {
    pub fn json(&self) -> serde_json::Value {
        json!({
            "novel": self.novel, "ways": self.ways, "shots": self.shots, "queries": self.queries,
            "episodes": self.episodes, "train_episodes": self.train_episodes, "dim": self.dim,
            "learning_rate": self.learning_rate, "validation_classes": self.validation_classes,
        })
    }
}

pub(crate) fn check(
    c: &Checker<'_>,
    raw: Spanned<RawMetaLearning>,
    modality: Modality,
) -> Result<MetaLearningPlan, Diagnostic> {
    let span = raw.span();
    c.single_label(modality, span.clone(), "meta_learning")?;
    let r = raw.into_inner();
    let learning_rate = c.positive_number(
        &r.learning_rate,
        1e-5,
        "learning_rate",
        "Adam's step size for the projection, e.g. 1e-5 (it starts at the frozen space; large steps leave it at once)",
    )?;
    Ok(MetaLearningPlan {
        novel: r.novel.as_ref().map(|n| n.get_ref().clone()),
        novel_span: r.novel.as_ref().map(Spanned::span),
        ways: c.ways(&r.ways)?.unwrap_or(5),
        shots: c.shots(&r.shots, &[1, 5], "shots")?,
        queries: c.positive(
            &r.queries,
            15,
            "queries",
            "15 query rows per class is the usual choice",
        )?,
        episodes: c.positive(
            &r.episodes,
            600,
            "episodes",
            "a few hundred episodes give a tight interval",
        )?,
        train_episodes: c.positive(
            &r.train_episodes,
            2000,
            "train_episodes",
            "meta-training episodes on the base classes, e.g. 2000",
        )?,
        dim: match &r.dim {
            None => None,
            Some(_) => Some(c.positive(
                &r.dim,
                1,
                "dim",
                "the projection's width, e.g. 256; leave it out to keep the features' width",
            )?),
        },
        learning_rate,
        validation_classes: r.validation_classes.as_ref().map(|v| *v.get_ref()),
        span,
    })
}
