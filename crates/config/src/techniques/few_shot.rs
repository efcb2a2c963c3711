//! `[few_shot]`: N-way K-shot episodic evaluation on the frozen features.
//!
//! The protocol of Vinyals et al. (2016) and Snell et al. (2017): each episode draws N classes, K support and
//! Q query rows per class from the test split (rows no head was trained on); a head is fitted on the support
//! rows alone and scored on the queries. Two heads: nearest class mean (prototypical networks, cosine) and
//! logistic regression on the frozen embedding (Tian et al., 2020, "Rethinking few-shot image
//! classification: a good embedding is all you need"). Mean accuracy over the episodes with a 95% interval.

use crate::spanned::Spanned;
use graft_schema::techniques::RawFewShot;
use serde_json::json;

use super::Modality;
use crate::Diagnostic;
use crate::checker::Checker;

/// `[few_shot]`, checked.
#[derive(Debug, Clone)]
pub struct FewShotPlan {
    /// Classes per episode (`None`: min(5, classes)).
    pub ways: Option<usize>,
    pub shots: Vec<usize>,
    pub queries: usize,
    pub episodes: usize,
    pub span: std::ops::Range<usize>,
}

impl FewShotPlan {
    pub fn json(&self) -> serde_json::Value {
        json!({ "ways": self.ways, "shots": self.shots, "queries": self.queries, "episodes": self.episodes })
    }
}

pub(crate) fn check(
    c: &Checker<'_>,
    raw: Spanned<RawFewShot>,
    modality: Modality,
) -> Result<FewShotPlan, Diagnostic> {
    let span = raw.span();
    c.single_label(modality, span.clone(), "few_shot")?;
    let r = raw.into_inner();
    Ok(FewShotPlan {
        ways: c.ways(&r.ways)?,
        shots: c.shots(&r.shots, &[1, 5], "shots")?,
        queries: c.positive(
            &r.queries,
            15,
            "queries",
            "15 query rows per class is the usual choice",
        )?,
        episodes: c.positive(
            &r.episodes,
            200,
            "episodes",
            "a few hundred episodes give a tight interval",
        )?,
        span,
    })
}
