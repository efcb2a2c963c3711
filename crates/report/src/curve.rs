//! The learning curve as metrics.json records it: transfer vs a from-scratch baseline at K per class.

use serde::{Deserialize, Serialize};

/// Mean, spread and a 95% t-interval over the repeats of one point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// Mean test accuracy over the draws.
    pub mean: f64,
    /// Sample standard deviation (0 for one draw).
    pub std: f64,
    /// 95% confidence interval of the mean (Student's t over the draws; the mean itself for one draw).
    pub lower: f64,
    /// Upper end.
    pub upper: f64,
    /// Each draw's test accuracy.
    pub values: Vec<f64>,
}

/// Two-sided 97.5% quantiles of Student's t for 1–30 degrees of freedom.
const T975: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
];

impl Spread {
    pub fn of(values: Vec<f64>) -> Spread {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let std = if values.len() > 1 {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        } else {
            0.0
        };
        let half = match values.len() {
            0 | 1 => 0.0,
            k => T975.get(k - 2).copied().unwrap_or(1.96) * std / n.sqrt(),
        };
        Spread {
            mean,
            std,
            lower: mean - half,
            upper: mean + half,
            values,
        }
    }
}

/// One point of the curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearningPoint {
    /// Training examples per class (`None`: the whole training split).
    pub per_class: Option<usize>,
    /// Training rows actually drawn (smaller classes give what they have).
    pub rows: usize,
    /// The transfer head's test accuracy.
    pub transfer: Spread,
    /// The from-scratch baseline's.
    pub baseline: Spread,
    /// With `[fine_tune]`: the same head on features of a backbone fine-tuned on the drawn rows alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tuned: Option<Spread>,
}

/// How many examples per class the baseline needs to match transfer at K.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataEfficiency {
    /// Examples per class given to the transfer head.
    pub per_class: usize,
    /// Its mean test accuracy.
    pub transfer: f64,
    /// The smallest point of the curve at which the baseline's mean reaches it.
    pub baseline_needs: BaselineNeeds,
}

/// Where the baseline catches up with transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BaselineNeeds {
    /// At this many examples per class.
    PerClass(usize),
    /// Only with the whole training split.
    WholeTrainingSplit,
    /// Not even with the whole training split.
    Never,
}

impl BaselineNeeds {
    /// For reports: "256 per class", "the whole training split", ….
    pub fn describe(self) -> String {
        match self {
            BaselineNeeds::PerClass(k) => format!("{k} per class"),
            BaselineNeeds::WholeTrainingSplit => "the whole training split".to_owned(),
            BaselineNeeds::Never => "more than the whole training split".to_owned(),
        }
    }
}

/// The learning curve, as `metrics.json` records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LearningCurve {
    /// The transfer head (the headline's settings, without transform or calibration).
    pub transfer: String,
    /// The baseline.
    pub baseline: String,
    /// With `[fine_tune]`: how the tuned line was drawn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tuned: Option<String>,
    /// Draws per point (one for the whole split).
    pub repeats: usize,
    /// The points, smallest K first, the whole split last.
    pub points: Vec<LearningPoint>,
    /// Data-efficiency gain at each K.
    pub efficiency: Vec<DataEfficiency>,
    /// Seconds for the whole curve.
    pub seconds: f64,
}
