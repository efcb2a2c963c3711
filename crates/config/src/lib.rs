//! graft's pipeline file: the public contract users write.
//!
//! Two layers, as ruff does: [`schema`] is the serde mirror of the TOML (externally tagged enums such as
//! `[head.logistic]`, `deny_unknown_fields` everywhere, a `schema` version key, `toml::Spanned` on values
//! checked later); [`Plan::load`] checks it into a [`Plan`] with defaults from the registry, absolute paths
//! and validated values before any work starts. Every mistake is a [`Diagnostic`] with the file, line,
//! column, the offending text and a hint. The technique tables live in [`techniques`], whose [`STAGES`]
//! is the one list of technique stages.
//!
//! ```
//! let source = r#"
//! schema = 1
//! name = "features"
//! [data]
//! features = "../../fixtures/data/tiny-features.parquet"
//! label_column = "label"
//! [split.stratified]
//! train = 0.5
//! validation = 0.25
//! test = 0.25
//! [head.logistic]
//! c = -1.0
//! "#;
//! let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("example.toml");
//! let err = graft_config::Plan::parse(&file, source).unwrap_err().to_string();
//! assert!(err.contains("example.toml:12:5"), "{err}");
//! ```

mod check;
mod checker;
mod heads;
mod plan;
mod sources;
pub mod techniques;

use std::path::PathBuf;

/// The pipeline file as written (graft-schema's types).
pub use graft_schema::pipeline as schema;
pub use graft_schema::{Diagnostic, SCHEMA_VERSION, did_you_mean, resolved, spanned};
pub use heads::{HeadKind, HeadSpec, Threshold, TransformPlan};
pub use plan::{
    BackboneCandidate, BackbonePlan, CurvePlan, DataPlan, DataSource, EvaluationPlan, ImagePlan,
    ModelSource, Plan, SearchPlan, Selection, SplitPlan, TrackingPlan, absolute, apply_prompt,
    apply_registry_defaults, image_preprocess, other_text_backbone,
};
pub use techniques::{STAGES, Stage, StagePlan, TechniquesPlan};

/// A pipeline file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read pipeline file {}: {source}", path.display())]
    File {
        /// The path given.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A mistake located in the file.
    #[error("{0}")]
    Invalid(Diagnostic),
}
