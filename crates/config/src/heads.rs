//! The transform a pipeline declares, checked: what the engine fits before the heads. The heads themselves
//! are graft-headkit's (re-exported here).

use graft_heads::{FittedTransform, HeadError};
use ndarray::ArrayView2;

use crate::resolved::TransformSettings;

pub use graft_headkit::{HeadKind, HeadSpec, Threshold};

/// The feature transform fitted before the heads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TransformPlan {
    /// Per-feature standardisation.
    Standardize,
    /// PCA whitening.
    PcaWhiten {
        /// Leading components kept (all when `None`).
        components: Option<usize>,
        /// Added to each eigenvalue before the square root.
        epsilon: f64,
    },
}

impl TransformPlan {
    /// As recorded in manifests.
    pub fn settings(&self) -> TransformSettings {
        match *self {
            TransformPlan::Standardize => TransformSettings::Standardize {},
            TransformPlan::PcaWhiten {
                components,
                epsilon,
            } => TransformSettings::PcaWhiten {
                components,
                epsilon,
            },
        }
    }

    /// Fits the transform on training rows.
    pub fn fit(&self, x: ArrayView2<'_, f32>) -> Result<FittedTransform, HeadError> {
        match *self {
            TransformPlan::Standardize => FittedTransform::standardize(x),
            TransformPlan::PcaWhiten {
                components,
                epsilon,
            } => FittedTransform::pca_whiten(x, components, epsilon),
        }
    }
}
