//! The learning curve as metrics.json records it: transfer vs a from-scratch baseline at K per class.

use serde::{Deserialize, Serialize};

/// Mean, spread and a t-interval over the repeats of one point (accuracies: the interval is clipped to
/// [0, 1]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// Mean test accuracy over the draws.
    pub mean: f64,
    /// Sample standard deviation (0 for one draw).
    pub std: f64,
    /// Confidence interval of the mean at `level` (Student's t over the draws, clipped to [0, 1]; the
    /// mean itself for one draw).
    pub lower: f64,
    /// Upper end.
    pub upper: f64,
    /// Each draw's test accuracy.
    pub values: Vec<f64>,
    /// Confidence level of the interval.
    #[serde(default = "default_level")]
    pub level: f64,
}

fn default_level() -> f64 {
    0.95
}

impl Spread {
    /// [`Spread::at_level`] 0.95.
    pub fn of(values: Vec<f64>) -> Spread {
        Spread::at_level(values, 0.95)
    }

    /// Mean, sample standard deviation and the `level` t-interval of the mean (statrs' Student's t
    /// quantile with n − 1 degrees of freedom), clipped to [0, 1] since the values are accuracies.
    pub fn at_level(values: Vec<f64>, level: f64) -> Spread {
        Spread::within(values, level, (0.0, 1.0))
    }

    /// [`Spread::at_level`] of differences between two accuracies (paired draws), clipped to [−1, 1].
    pub fn of_differences(values: Vec<f64>, level: f64) -> Spread {
        Spread::within(values, level, (-1.0, 1.0))
    }

    fn within(values: Vec<f64>, level: f64, (low, high): (f64, f64)) -> Spread {
        use statrs::distribution::{ContinuousCDF, StudentsT};
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let std = if values.len() > 1 {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
        } else {
            0.0
        };
        let half = match values.len() {
            0 | 1 => 0.0,
            _ => {
                let t = StudentsT::new(0.0, 1.0, n - 1.0)
                    .expect("n − 1 ≥ 1 degrees of freedom")
                    .inverse_cdf(1.0 - (1.0 - level) / 2.0);
                t * std / n.sqrt()
            }
        };
        Spread {
            mean,
            std,
            lower: (mean - half).clamp(low, high),
            upper: (mean + half).clamp(low, high),
            values,
            level,
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
