//! The run folder's typed model and its renderers.
//!
//! Everything graft writes into a run folder is a type here, written and read back through serde
//! ([`Metrics`] is `metrics.json`); nothing is read by string index. The renderers turn the model into the
//! printed summary, `report.md` and the self-contained `report.html`.
//!
//! ```
//! use graft_report::{RUN_FORMAT, Spread};
//!
//! let s = Spread::of(vec![0.70, 0.72, 0.74]);
//! assert!((s.mean - 0.72).abs() < 1e-12 && s.lower < s.mean && s.mean < s.upper);
//! assert_eq!(RUN_FORMAT, 1);
//! ```

mod artefacts;
mod curve;
mod evaluation;
mod html;
mod markdown;
mod metrics;
mod training;

pub use artefacts::{
    ArtefactError, BackboneRecord, DataRecord, FeatureCacheRecord, FileRecord, HEAD_FORMAT,
    HeadArtefact, HeadExtra, HostRecord, Manifest, ModelRecord, MultiLabelRecord, PipelineRecord,
    RUN_FORMAT, RuntimeRecord, TransformRecord, to_json_text,
};
pub use curve::{BaselineNeeds, DataEfficiency, LearningCurve, LearningPoint, Spread};
pub use evaluation::{EVALUATION_FORMAT, Evaluation};
pub use html::html;
pub use markdown::{Context, markdown, summary, thousands};
pub use metrics::{
    ClassScores, Comparison, CvScores, ExtractionFigures, HeadMetrics, Metrics, RowCounts,
    SearchCandidate, SearchReport, SplitIntervals, SplitMetrics, Timings,
};
pub use training::{CurvePoint, TechniqueReport, TrainingFigures};
