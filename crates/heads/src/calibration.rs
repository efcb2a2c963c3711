//! Temperature scaling (Guo et al., 2017, "On Calibration of Modern Neural Networks").

use ndarray::{Array2, ArrayView2};

use crate::{HeadError, Targets, softmax_rows};

/// One temperature `T` fitted on validation rows: calibrated probabilities are `softmax(ln p / T)`, which
/// for a softmax head equals `softmax(z / T)` of its logits. The argmax never changes; only confidence does.
///
/// ```
/// use graft_heads::{Targets, TemperatureScaling};
/// use ndarray::array;
///
/// # fn main() -> Result<(), graft_heads::HeadError> {
/// // Validation probabilities that are 99% sure but right 3 times in 4.
/// let p = array![[0.99f32, 0.01], [0.99, 0.01], [0.99, 0.01], [0.99, 0.01]];
/// let t = TemperatureScaling::fit(p.view(), &Targets::new(&[0, 0, 0, 1], 2)?)?;
/// assert!((t.apply(p.view())[[0, 0]] - 0.75).abs() < 1e-4);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TemperatureScaling {
    temperature: f64,
}

/// Floor for probabilities before the logarithm, so heads that give exact zeros (kNN) stay finite.
const FLOOR: f32 = 1e-12;

impl TemperatureScaling {
    /// A known temperature (for a saved head).
    pub fn with_temperature(temperature: f64) -> Result<Self, HeadError> {
        if !(temperature.is_finite() && temperature > 0.0) {
            return Err(HeadError::InvalidParameter {
                name: "temperature",
                value: temperature.to_string(),
                expected: "a positive finite number",
            });
        }
        Ok(TemperatureScaling { temperature })
    }

    /// Fits `T` minimising the validation negative log-likelihood. The likelihood is convex in `1/T`, so a
    /// golden-section search over `ln(1/T)` in [−7, 7] finds it to ~1e-9.
    pub fn fit(proba: ArrayView2<'_, f32>, targets: &Targets<'_>) -> Result<Self, HeadError> {
        if proba.nrows() != targets.labels().len() {
            return Err(HeadError::ShapeMismatch {
                what: "validation label count",
                expected: proba.nrows(),
                got: targets.labels().len(),
            });
        }
        if proba.ncols() != targets.n_classes() {
            return Err(HeadError::ShapeMismatch {
                what: "probability columns",
                expected: targets.n_classes(),
                got: proba.ncols(),
            });
        }
        if proba.nrows() == 0 {
            return Err(HeadError::Degenerate {
                rows: 0,
                classes: 0,
            });
        }
        let logits = proba.mapv(|p| f64::from(p.max(FLOOR)).ln());
        let nll = |log_beta: f64| {
            let beta = log_beta.exp();
            let mut total = 0.0;
            for (row, &y) in logits.rows().into_iter().zip(targets.labels()) {
                let max = row.fold(f64::NEG_INFINITY, |m, &v| m.max(v * beta));
                let lse = max + row.iter().map(|v| (v * beta - max).exp()).sum::<f64>().ln();
                total += lse - row[y] * beta;
            }
            total
        };
        let golden = (5f64.sqrt() - 1.0) / 2.0;
        let (mut lo, mut hi) = (-7.0f64, 7.0f64);
        let mut a = hi - golden * (hi - lo);
        let mut b = lo + golden * (hi - lo);
        let (mut fa, mut fb) = (nll(a), nll(b));
        while hi - lo > 1e-9 {
            if fa <= fb {
                hi = b;
                b = a;
                fb = fa;
                a = hi - golden * (hi - lo);
                fa = nll(a);
            } else {
                lo = a;
                a = b;
                fa = fb;
                b = lo + golden * (hi - lo);
                fb = nll(b);
            }
        }
        Ok(TemperatureScaling {
            temperature: 1.0 / ((lo + hi) / 2.0).exp(),
        })
    }

    /// The fitted temperature.
    pub fn temperature(&self) -> f64 {
        self.temperature
    }

    /// Calibrated probabilities.
    pub fn apply(&self, proba: ArrayView2<'_, f32>) -> Array2<f32> {
        let beta = 1.0 / self.temperature;
        let mut out = proba.mapv(|p| f64::from(p.max(FLOOR)).ln() * beta);
        softmax_rows(&mut out);
        out.mapv(|v| v as f32)
    }
}

#[cfg(test)]
mod tests {
    use ndarray::array;

    use super::*;

    #[test]
    fn overconfident_probabilities_are_softened() {
        // Always 0.99 confident but right only 3 times in 4: the optimum confidence is 0.75.
        let p = array![[0.99f32, 0.01], [0.99, 0.01], [0.99, 0.01], [0.99, 0.01]];
        let y = [0, 0, 0, 1];
        let t = TemperatureScaling::fit(p.view(), &Targets::new(&y, 2).unwrap()).unwrap();
        assert!(t.temperature() > 1.0);
        let calibrated = t.apply(p.view());
        assert!((calibrated[[0, 0]] - 0.75).abs() < 1e-5, "{calibrated}");
        // The argmax is unchanged.
        assert!(calibrated[[0, 0]] > calibrated[[0, 1]]);
    }

    #[test]
    fn a_bad_temperature_is_named() {
        let err = TemperatureScaling::with_temperature(-1.0).unwrap_err();
        assert!(err.to_string().contains("`temperature`"));
    }
}
