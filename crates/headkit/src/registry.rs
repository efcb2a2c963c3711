//! The registry: the one list of head kinds. Each kind is a variant holding its checked hyperparameters, and
//! every match here names every kind (no catch-all arm), so a new kind is added here and in its module.

use graft_heads::{
    KnnValidParams, LogisticValidParams, MlpValidParams, PrototypeValidParams, RidgeValidParams,
};
use graft_schema::Diagnostic;
use graft_schema::pipeline::RawHeads;
use graft_schema::resolved::HeadKindSettings;
use graft_schema::spanned::Spanned;

use crate::model::Head;
use crate::spec::{CheckContext, HeadSpec};
use crate::{knn, logistic, mlp, prototype, ridge};

/// One head's kind with its checked hyperparameters.
#[derive(Debug, Clone, PartialEq)]
pub enum HeadKind {
    /// Multinomial logistic regression.
    Logistic(LogisticValidParams),
    /// Multilayer perceptron.
    Mlp(MlpValidParams),
    /// Nearest class mean.
    Prototype(PrototypeValidParams),
    /// k-nearest neighbours.
    Knn(KnnValidParams),
    /// Ridge classifier.
    Ridge(RidgeValidParams),
}

/// Every kind's table name, in the order the pipeline schema lists them (for hints).
pub const HEAD_KINDS: [&str; 5] = ["logistic", "mlp", "prototype", "knn", "ridge"];

impl HeadKind {
    /// The kind's behaviour.
    pub fn head(&self) -> &dyn Head {
        match self {
            HeadKind::Logistic(p) => p,
            HeadKind::Mlp(p) => p,
            HeadKind::Prototype(p) => p,
            HeadKind::Knn(p) => p,
            HeadKind::Ridge(p) => p,
        }
    }

    /// The kind a record names, checked again.
    pub fn from_settings(s: &HeadKindSettings) -> Result<HeadKind, String> {
        match s {
            HeadKindSettings::Logistic(o) => logistic::from_settings(o),
            HeadKindSettings::Mlp(o) => mlp::from_settings(o),
            HeadKindSettings::Prototype(o) => prototype::from_settings(o),
            HeadKindSettings::Knn(o) => knn::from_settings(o),
            HeadKindSettings::Ridge(o) => ridge::from_settings(o),
        }
    }
}

/// Every `[head.*]` table checked, in the order the file lists them; an invalid hyperparameter points at its
/// own line.
pub fn check_heads(
    raw: Spanned<RawHeads>,
    ctx: &CheckContext<'_>,
) -> Result<Vec<HeadSpec>, Diagnostic> {
    let section = raw.span();
    let RawHeads {
        logistic,
        mlp,
        prototype,
        knn,
        ridge,
    } = raw.into_inner();
    // (position in the file, head)
    let mut heads: Vec<(usize, HeadSpec)> = Vec::new();
    if let Some(h) = logistic {
        heads.push((h.span().start, logistic::check(h, ctx)?));
    }
    if let Some(h) = mlp {
        heads.push((h.span().start, mlp::check(h, ctx)?));
    }
    if let Some(h) = prototype {
        heads.push((h.span().start, prototype::check(h, ctx)?));
    }
    if let Some(h) = knn {
        heads.push((h.span().start, knn::check(h, ctx)?));
    }
    if let Some(h) = ridge {
        heads.push((h.span().start, ridge::check(h, ctx)?));
    }
    if heads.is_empty() {
        let tables: Vec<String> = HEAD_KINDS.iter().map(|k| format!("`[head.{k}]`")).collect();
        return Err(ctx
            .error(section, "`[head]` names no head")
            .with_hint(format!("add at least one of {}", tables.join(", "))));
    }
    heads.sort_by_key(|(at, _)| *at);
    Ok(heads.into_iter().map(|(_, h)| h).collect())
}
