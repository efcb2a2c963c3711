//! `[augmentation]`: the effect of training-time augmentation, measured. Augmented views are added to the
//! training rows only (validation and test rows stay as they are), and the headline head's settings are
//! trained with and without them on the same rows: the whole training split and seeded draws of K rows per
//! class (augmentation matters most when labels are few).
//!
//! Texts: Easy Data Augmentation's random swap and random deletion (Wei & Zou, 2019): per view, n = ⌈α·l⌉
//! swaps of two random words and then each word deleted with probability p (one word always kept), seeded
//! per row and view; the views are embedded by the backbone through the feature cache. Images: the views
//! `[backbone] augment` already extracted (flips and random resized crops).

use crate::spanned::Spanned;
use graft_schema::techniques::RawAugmentation;
use serde_json::json;

use super::Modality;
use crate::Diagnostic;
use crate::checker::Checker;

/// `[augmentation]`, checked.
#[derive(Debug, Clone)]
pub struct AugmentationPlan {
    /// Text views per training row (images: `[backbone] augment` sets them).
    pub views: usize,
    /// EDA random deletion probability p.
    pub deletion: f64,
    /// EDA random swap share α.
    pub swap: f64,
    pub per_class: Vec<usize>,
    pub repeats: usize,
    pub texts: bool,
    pub span: std::ops::Range<usize>,
}

impl AugmentationPlan {
    pub fn json(&self) -> serde_json::Value {
        if self.texts {
            json!({ "views": self.views, "deletion": self.deletion, "swap": self.swap,
                    "per_class": self.per_class, "repeats": self.repeats })
        } else {
            json!({ "views": "from [backbone] augment", "per_class": self.per_class, "repeats": self.repeats })
        }
    }
}

pub(crate) fn check(
    c: &Checker<'_>,
    raw: Spanned<RawAugmentation>,
    modality: Modality,
) -> Result<AugmentationPlan, Diagnostic> {
    let span = raw.span();
    c.single_label(modality, span.clone(), "augmentation")?;
    let r = raw.into_inner();
    if modality.images {
        if !modality.image_views {
            return Err(c
                .error(span, "`[augmentation]` on images compares training with and without the augmented views, but `[backbone]` makes none")
                .with_hint("add `augment = { horizontal_flip = true, crop_scale = [0.6, 1.0], views = 2 }` to `[backbone]`"));
        }
        if let Some(key) = [
            r.views.as_ref().map(Spanned::span),
            r.deletion.as_ref().map(Spanned::span),
            r.swap.as_ref().map(Spanned::span),
        ]
        .into_iter()
        .flatten()
        .next()
        {
            return Err(c
                .error(key, "`views`, `deletion` and `swap` are text augmentations")
                .with_hint("image views come from `[backbone] augment`; remove this key"));
        }
    } else if !modality.texts {
        return Err(c
            .error(span, "`[augmentation]` augments texts or images")
            .with_hint("given features have no raw rows to augment; remove `[augmentation]`"));
    }
    let probability = |v: &Option<Spanned<f64>>, default: f64, key: &str| match v {
        None => Ok(default),
        Some(p) if (0.0..1.0).contains(p.get_ref()) => Ok(*p.get_ref()),
        Some(p) => Err(c
            .error(
                p.span(),
                format!("`{key}` = {} must be in [0, 1)", p.get_ref()),
            )
            .with_hint("EDA's defaults are 0.1")),
    };
    let deletion = probability(&r.deletion, 0.1, "deletion")?;
    let swap = probability(&r.swap, 0.1, "swap")?;
    if modality.texts && deletion == 0.0 && swap == 0.0 {
        return Err(c
            .error(
                span,
                "`deletion = 0` and `swap = 0` leave every view equal to its text",
            )
            .with_hint("EDA's defaults are deletion = 0.1, swap = 0.1"));
    }
    Ok(AugmentationPlan {
        views: c.positive(
            &r.views,
            2,
            "views",
            "augmented copies of each training text, e.g. 2",
        )?,
        deletion,
        swap,
        per_class: c.shots(&r.per_class, &[8, 32], "per_class")?,
        repeats: c.positive(&r.repeats, 5, "repeats", "seeded draws per K, e.g. 5")?,
        texts: modality.texts,
        span,
    })
}
