//! `[progressive]`: a new trainable column over the frozen backbone's per-layer sentence embeddings (the
//! lateral connections of progressive networks, Rusu et al., 2016, reduced to ELMo's learned scalar mix,
//! Peters et al., 2018), compared with the same head trained the same way on the last layer alone.

use crate::spanned::Spanned;
use graft_schema::techniques::{ProgressiveColumn, RawProgressive};
use serde_json::json;

use super::Modality;
use crate::Diagnostic;
use crate::checker::Checker;

/// `[progressive]`, checked.
#[derive(Debug, Clone)]
pub struct ProgressivePlan {
    pub column: ProgressiveColumn,
    /// Full-batch Adam steps.
    pub epochs: usize,
    pub learning_rate: f64,
    /// L2 penalty on the head's weights.
    pub alpha: f64,
    pub span: std::ops::Range<usize>,
}

impl ProgressivePlan {
    pub fn json(&self) -> serde_json::Value {
        json!({
            "column": format!("{:?}", self.column).to_lowercase(),
            "epochs": self.epochs,
            "learning_rate": self.learning_rate,
            "alpha": self.alpha,
        })
    }
}

pub(crate) fn check(
    c: &Checker<'_>,
    raw: Spanned<RawProgressive>,
    modality: Modality,
) -> Result<ProgressivePlan, Diagnostic> {
    let span = raw.span();
    if !modality.texts || modality.registered_weights != Some(true) {
        return Err(c
            .error(span, "`[progressive]` reads every layer of a registered text backbone with float32 weights")
            .with_hint("use `model = \"minilm-l6\"` in [backbone] (all-MiniLM-L6-v2 in float32)"));
    }
    c.single_label(modality, span.clone(), "progressive")?;
    let r = raw.into_inner();
    let number =
        |v: &Option<Spanned<f64>>, default: f64, key: &str, zero_ok: bool, hint: &str| match v {
            None => Ok(default),
            Some(x)
                if x.get_ref().is_finite()
                    && (*x.get_ref() > 0.0 || (zero_ok && *x.get_ref() == 0.0)) =>
            {
                Ok(*x.get_ref())
            }
            Some(x) => Err(c
                .error(
                    x.span(),
                    format!(
                        "`{key}` = {} must be a number {}",
                        x.get_ref(),
                        if zero_ok { "≥ 0" } else { "above 0" }
                    ),
                )
                .with_hint(hint.to_owned())),
        };
    Ok(ProgressivePlan {
        column: r
            .column
            .as_ref()
            .map_or(ProgressiveColumn::Mix, |c| *c.get_ref()),
        epochs: c.positive(&r.epochs, 300, "epochs", "full-batch Adam steps, e.g. 300")?,
        learning_rate: number(
            &r.learning_rate,
            0.05,
            "learning_rate",
            false,
            "Adam's step size, e.g. 0.05",
        )?,
        alpha: number(
            &r.alpha,
            1e-3,
            "alpha",
            true,
            "the L2 penalty on the head's weights, e.g. 1e-3",
        )?,
        span,
    })
}
