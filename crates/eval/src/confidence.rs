//! How sure a score is: seeded bootstrap confidence intervals, and paired tests for two heads scored on the
//! same rows (McNemar's exact test and a paired bootstrap of the accuracy difference).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::EvalError;

/// A point estimate with a percentile bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct Interval {
    /// The statistic on all rows.
    pub estimate: f64,
    /// Lower bound.
    pub lower: f64,
    /// Upper bound.
    pub upper: f64,
    /// Confidence level, e.g. 0.95.
    pub level: f64,
    /// Bootstrap resamples drawn.
    pub resamples: usize,
}

/// Bootstrap settings: how many resamples, at what level, from which seed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bootstrap {
    /// Resamples (1,000 by default).
    pub resamples: usize,
    /// Confidence level (0.95 by default).
    pub level: f64,
    /// Seed of the resampling (ChaCha8, so the same on every platform).
    pub seed: u64,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Bootstrap {
            resamples: 1000,
            level: 0.95,
            seed: 0,
        }
    }
}

/// The `q` quantile of sorted values (linear interpolation, as NumPy's default).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let position = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (position.floor() as usize, position.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (position - lo as f64)
}

impl Bootstrap {
    fn check(&self, rows: usize) -> Result<(), EvalError> {
        if rows == 0 {
            return Err(EvalError::Empty);
        }
        if self.resamples < 2 || !(self.level > 0.0 && self.level < 1.0) {
            return Err(EvalError::InvalidSetting(format!(
                "bootstrap needs at least 2 resamples and a level in (0, 1); got {} and {}",
                self.resamples, self.level
            )));
        }
        Ok(())
    }

    /// Resamples `rows` row indices with replacement `resamples` times and returns the statistic of each.
    fn replicate(&self, rows: usize, statistic: impl Fn(&[usize]) -> f64) -> Vec<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let mut sample = vec![0usize; rows];
        (0..self.resamples)
            .map(|_| {
                sample
                    .iter_mut()
                    .for_each(|i| *i = rng.random_range(0..rows));
                statistic(&sample)
            })
            .collect()
    }

    /// Percentile interval of `statistic` (which scores the rows whose indices it is given).
    ///
    /// ```
    /// use graft_eval::Bootstrap;
    ///
    /// # fn main() -> Result<(), graft_eval::EvalError> {
    /// let correct = [true, true, false, true, true, false, true, true, true, false];
    /// let accuracy = |rows: &[usize]| rows.iter().filter(|&&r| correct[r]).count() as f64 / rows.len() as f64;
    /// let ci = Bootstrap::default().interval(correct.len(), accuracy)?;
    /// assert_eq!(ci.estimate, 0.7);
    /// assert!(ci.lower < 0.7 && ci.upper > 0.7);
    /// # Ok(())
    /// # }
    /// ```
    pub fn interval(
        &self,
        rows: usize,
        statistic: impl Fn(&[usize]) -> f64,
    ) -> Result<Interval, EvalError> {
        self.check(rows)?;
        let all: Vec<usize> = (0..rows).collect();
        let estimate = statistic(&all);
        let values = self.replicate(rows, statistic);
        Ok(self.percentiles(estimate, values))
    }

    /// The percentile interval of bootstrap `values` around `estimate`.
    fn percentiles(&self, estimate: f64, mut values: Vec<f64>) -> Interval {
        values.sort_by(f64::total_cmp);
        let tail = (1.0 - self.level) / 2.0;
        Interval {
            estimate,
            lower: quantile(&values, tail),
            upper: quantile(&values, 1.0 - tail),
            level: self.level,
            resamples: self.resamples,
        }
    }

    /// Paired bootstrap of the accuracy difference `a − b` on the same rows: the interval, and a two-sided
    /// p-value (twice the share of resamples on the far side of zero, at most 1).
    pub fn paired_accuracy(
        &self,
        y_true: &[usize],
        pred_a: &[usize],
        pred_b: &[usize],
    ) -> Result<PairedBootstrap, EvalError> {
        same_lengths(y_true, pred_a, pred_b)?;
        self.check(y_true.len())?;
        let gain: Vec<f64> = y_true
            .iter()
            .zip(pred_a.iter().zip(pred_b))
            .map(|(t, (a, b))| f64::from(u8::from(a == t)) - f64::from(u8::from(b == t)))
            .collect();
        let mean = |rows: &[usize]| rows.iter().map(|&r| gain[r]).sum::<f64>() / rows.len() as f64;
        let estimate = gain.iter().sum::<f64>() / gain.len() as f64;
        let values = self.replicate(gain.len(), mean);
        let at_or_below = values.iter().filter(|&&v| v <= 0.0).count() as f64;
        let at_or_above = values.iter().filter(|&&v| v >= 0.0).count() as f64;
        let p_value = (2.0 * at_or_below.min(at_or_above) / values.len() as f64).min(1.0);
        Ok(PairedBootstrap {
            interval: self.percentiles(estimate, values),
            p_value,
        })
    }
}

/// A paired bootstrap comparison.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct PairedBootstrap {
    /// Accuracy of A minus accuracy of B, with its interval.
    pub interval: Interval,
    /// Two-sided p-value for "no difference".
    pub p_value: f64,
}

/// McNemar's test on two classifiers' predictions of the same rows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct McNemar {
    /// Rows A got right and B wrong.
    pub a_only: usize,
    /// Rows B got right and A wrong.
    pub b_only: usize,
    /// Exact two-sided p-value (binomial, p = ½, on the discordant rows).
    pub p_value: f64,
}

fn same_lengths(y_true: &[usize], a: &[usize], b: &[usize]) -> Result<(), EvalError> {
    for p in [a, b] {
        if p.len() != y_true.len() {
            return Err(EvalError::LengthMismatch {
                truth: y_true.len(),
                predicted: p.len(),
            });
        }
    }
    if y_true.is_empty() {
        return Err(EvalError::Empty);
    }
    Ok(())
}

/// McNemar's exact test: under "A and B are equally accurate" the discordant rows split as a fair coin.
///
/// ```
/// use graft_eval::mcnemar;
///
/// # fn main() -> Result<(), graft_eval::EvalError> {
/// let t = mcnemar(&[0, 1, 1, 0, 1], &[0, 1, 1, 0, 1], &[1, 0, 1, 0, 1])?;
/// assert_eq!((t.a_only, t.b_only), (2, 0));
/// assert_eq!(t.p_value, 0.5); // 2 · (½)²
/// # Ok(())
/// # }
/// ```
pub fn mcnemar(y_true: &[usize], pred_a: &[usize], pred_b: &[usize]) -> Result<McNemar, EvalError> {
    same_lengths(y_true, pred_a, pred_b)?;
    let (mut a_only, mut b_only) = (0, 0);
    for (t, (a, b)) in y_true.iter().zip(pred_a.iter().zip(pred_b)) {
        match (a == t, b == t) {
            (true, false) => a_only += 1,
            (false, true) => b_only += 1,
            _ => {}
        }
    }
    let n = a_only + b_only;
    let k = a_only.min(b_only);
    // P(X ≤ k) for X ~ Binomial(n, ½), summed in log space so large n cannot overflow.
    let mut log_choose = 0.0f64; // ln C(n, 0)
    let log_half_n = n as f64 * 0.5f64.ln();
    let mut tail = 0.0;
    for i in 0..=k {
        tail += (log_choose + log_half_n).exp();
        log_choose += ((n - i) as f64).ln() - ((i + 1) as f64).ln();
    }
    Ok(McNemar {
        a_only,
        b_only,
        p_value: if n == 0 { 1.0 } else { (2.0 * tail).min(1.0) },
    })
}
