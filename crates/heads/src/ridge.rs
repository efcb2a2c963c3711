//! Ridge classification: least squares on ±1 class indicators with an L2 penalty, solved in closed form.

use faer::linalg::solvers::Solve;
use ndarray::{Array1, Array2, ArrayView2, Axis};

use crate::{
    Fit, HeadError, ParamGuard, Predict, Targets, check_features, check_training, softmax_rows,
};

/// scikit-learn's `RidgeClassifier`: each class is a ridge regression onto +1 (the class) and −1 (any
/// other), `min ‖Y − XW − b‖² + α‖W‖²`, solved exactly — centred rows, then a Cholesky solve of
/// `(XᵀX + αI) W = XᵀY` in f64. The class is the largest decision value (for two classes, the sign of
/// scikit-learn's single decision column: the two columns here are its negation and itself).
/// Probabilities are the softmax of the decision values: they rank like the decisions but are not
/// calibrated (a pipeline's `calibrate = true` fits a temperature on the validation rows).
///
/// ```
/// use graft_heads::{Fit, Predict, Ridge, Targets};
/// use ndarray::array;
///
/// # fn main() -> Result<(), graft_heads::HeadError> {
/// let x = array![[0.0f32, 1.0], [0.2, 0.9], [1.0, 0.1], [0.9, 0.0]];
/// let head = Ridge::params().alpha(0.1).fit(x.view(), &Targets::new(&[0, 0, 1, 1], 2)?)?;
/// assert_eq!(head.predict(x.view())?, vec![0, 0, 1, 1]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Ridge;

impl Ridge {
    /// Default hyperparameters (scikit-learn's: `alpha = 1`, an intercept), ready for the setters.
    pub fn params() -> RidgeParams {
        RidgeParams(RidgeValidParams {
            alpha: 1.0,
            fit_intercept: true,
        })
    }
}

/// Unchecked hyperparameters of [`Ridge`].
#[derive(Debug, Clone, PartialEq)]
pub struct RidgeParams(RidgeValidParams);

/// Validated hyperparameters of [`Ridge`].
#[derive(Debug, Clone, PartialEq)]
pub struct RidgeValidParams {
    alpha: f64,
    fit_intercept: bool,
}

impl RidgeParams {
    /// Penalty strength α (scikit-learn's `alpha`). Default `1.0`; finite and above 0.
    pub fn alpha(mut self, alpha: f64) -> Self {
        self.0.alpha = alpha;
        self
    }

    /// Fit a bias per class (on centred rows). Default `true`.
    pub fn fit_intercept(mut self, fit_intercept: bool) -> Self {
        self.0.fit_intercept = fit_intercept;
        self
    }
}

impl ParamGuard for RidgeParams {
    type Checked = RidgeValidParams;

    fn check(self) -> Result<RidgeValidParams, HeadError> {
        if !(self.0.alpha.is_finite() && self.0.alpha > 0.0) {
            return Err(HeadError::InvalidParameter {
                name: "alpha",
                value: self.0.alpha.to_string(),
                expected: "a finite number above 0, e.g. 1.0",
            });
        }
        Ok(self.0)
    }
}

impl RidgeValidParams {
    /// Penalty strength α.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// Whether a bias is fitted.
    pub fn fit_intercept(&self) -> bool {
        self.fit_intercept
    }
}

impl Fit for RidgeParams {
    type Fitted = FittedRidge;

    fn fit(&self, x: ArrayView2<'_, f32>, targets: &Targets<'_>) -> Result<FittedRidge, HeadError> {
        self.clone().check()?.fit(x, targets)
    }
}

impl Fit for RidgeValidParams {
    type Fitted = FittedRidge;

    fn fit(&self, x: ArrayView2<'_, f32>, targets: &Targets<'_>) -> Result<FittedRidge, HeadError> {
        check_training(x, targets)?;
        let (n, d, k) = (x.nrows(), x.ncols(), targets.n_classes());
        let x = x.mapv(f64::from);
        let mut y = Array2::<f64>::from_elem((n, k), -1.0);
        for (row, &label) in targets.labels().iter().enumerate() {
            y[[row, label]] = 1.0;
        }
        let (x_mean, y_mean) = if self.fit_intercept {
            let means = (
                x.mean_axis(Axis(0)).expect("rows"),
                y.mean_axis(Axis(0)).expect("rows"),
            );
            (means.0, means.1)
        } else {
            (Array1::zeros(d), Array1::zeros(k))
        };
        let xc = &x - &x_mean;
        let yc = &y - &y_mean;
        let mut gram = xc.t().dot(&xc);
        gram.diag_mut().mapv_inplace(|v| v + self.alpha);
        let rhs = xc.t().dot(&yc);
        let gram = faer::Mat::<f64>::from_fn(d, d, |i, j| gram[[i, j]]);
        let rhs = faer::Mat::<f64>::from_fn(d, k, |i, j| rhs[[i, j]]);
        // XᵀX + αI is symmetric positive definite for α > 0 and finite rows.
        let solution = gram
            .llt(faer::Side::Lower)
            .map_err(|_| HeadError::InvalidParameter {
                name: "alpha",
                value: self.alpha.to_string(),
                expected: "a penalty that keeps XᵀX + αI positive definite (check the features are finite)",
            })?
            .solve(&rhs);
        let weights = Array2::from_shape_fn((d, k), |(i, j)| solution[(i, j)]);
        let bias = &y_mean - &x_mean.dot(&weights);
        Ok(FittedRidge {
            weights: weights.mapv(|v| v as f32),
            bias: bias.mapv(|v| v as f32),
        })
    }
}

/// A trained [`Ridge`] head.
#[derive(Debug, Clone, PartialEq)]
pub struct FittedRidge {
    /// features × classes
    weights: Array2<f32>,
    bias: Array1<f32>,
}

impl FittedRidge {
    /// The weights, features × classes.
    pub fn weights(&self) -> &Array2<f32> {
        &self.weights
    }

    /// One bias per class.
    pub fn bias(&self) -> &Array1<f32> {
        &self.bias
    }

    /// A head from saved parts (weights features × classes, one bias per class), checked.
    pub fn from_parts(weights: Array2<f32>, bias: Array1<f32>) -> Result<FittedRidge, HeadError> {
        if weights.ncols() != bias.len() {
            return Err(HeadError::ShapeMismatch {
                what: "bias length",
                expected: weights.ncols(),
                got: bias.len(),
            });
        }
        if weights.ncols() < 2 {
            return Err(HeadError::ShapeMismatch {
                what: "classes (weight columns, at least)",
                expected: 2,
                got: weights.ncols(),
            });
        }
        check_features(weights.view(), None)?;
        check_features(bias.view().insert_axis(Axis(0)), None)?;
        Ok(FittedRidge { weights, bias })
    }

    /// The decision values, rows × classes (scikit-learn's `decision_function`; for two classes its single
    /// column is the second here).
    pub fn decision_function(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>, HeadError> {
        check_features(x, Some(self.weights.nrows()))?;
        Ok(x.dot(&self.weights) + &self.bias)
    }
}

impl Predict for FittedRidge {
    fn n_features(&self) -> usize {
        self.weights.nrows()
    }

    fn n_classes(&self) -> usize {
        self.weights.ncols()
    }

    fn predict_proba(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>, HeadError> {
        let mut scores = self.decision_function(x)?;
        softmax_rows(&mut scores);
        Ok(scores)
    }
}

#[cfg(test)]
mod tests {
    use ndarray::array;

    use super::*;

    fn blobs() -> (Array2<f32>, Vec<usize>) {
        let x = Array2::from_shape_fn((30, 4), |(i, j)| {
            ((i * 7 + j * 3) % 11) as f32 * 0.3 + if j == i % 3 { 2.0 } else { 0.0 }
        });
        (x, (0..30).map(|i| i % 3).collect())
    }

    /// scikit-learn 1.9.1's `RidgeClassifier(alpha=0.5).fit(X, y)` on the same rows: `coef_.T`, `intercept_`
    /// and `decision_function(X[:2])`.
    #[test]
    fn three_classes_match_scikit_learn() {
        let (x, y) = blobs();
        let head = Ridge::params()
            .alpha(0.5)
            .fit(x.view(), &Targets::new(&y, 3).unwrap())
            .unwrap();
        let coef = array![
            [0.2819106494, -0.1716415322, -0.1102691171],
            [-0.2866127940, 0.4405684508, -0.1539556568],
            [-0.2572000693, -0.1192502150, 0.3764502843],
            [-0.2780652256, 0.2167402445, 0.0613249811]
        ];
        let intercept = array![0.6358436405, -0.9963934353, -0.6394502052];
        let decision = array![
            [-0.2720228093, -0.5726166209, -0.1553605698],
            [-0.7766258458, 1.0995618387, -1.3229359929]
        ];
        let close = |a: &Array2<f32>, b: &Array2<f64>| {
            a.iter()
                .zip(b)
                .all(|(a, b)| (f64::from(*a) - b).abs() < 1e-5)
        };
        assert!(close(head.weights(), &coef), "{}", head.weights());
        assert!(
            head.bias()
                .iter()
                .zip(&intercept)
                .all(|(a, b)| (f64::from(*a) - b).abs() < 1e-5)
        );
        let d = head
            .decision_function(x.slice(ndarray::s![..2, ..]))
            .unwrap();
        assert!(close(&d, &decision), "{d}");
        // Softmax keeps the decisions' order: the predicted class is the largest decision.
        assert_eq!(
            head.predict(x.view()).unwrap(),
            crate::argmax_rows(head.decision_function(x.view()).unwrap().view())
        );
    }

    /// `RidgeClassifier(alpha=2.0, fit_intercept=False)` on "class 0 or not": its single decision column is
    /// the second column here, and the first is its negation.
    #[test]
    fn two_classes_are_scikit_learns_single_column() {
        let (x, y) = blobs();
        let y: Vec<usize> = y.iter().map(|&c| usize::from(c == 0)).collect();
        let head = Ridge::params()
            .alpha(2.0)
            .fit_intercept(false)
            .fit(x.view(), &Targets::new(&y, 2).unwrap())
            .unwrap();
        let coef = [0.3492888812, -0.2016805267, -0.1676028206, -0.2072782954];
        for (j, c) in coef.iter().enumerate() {
            assert!((f64::from(head.weights()[[j, 1]]) - c).abs() < 1e-5);
            assert!((f64::from(head.weights()[[j, 0]]) + c).abs() < 1e-5);
        }
        let d = head
            .decision_function(x.slice(ndarray::s![..3, ..]))
            .unwrap();
        for (row, expected) in [-0.3442711863, -0.6863751186, -0.8985817007]
            .iter()
            .enumerate()
        {
            assert!((f64::from(d[[row, 1]]) - expected).abs() < 1e-5, "{d}");
        }
    }

    #[test]
    fn bad_settings_and_parts_are_refused_by_name() {
        for alpha in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let err = Ridge::params()
                .alpha(alpha)
                .check()
                .unwrap_err()
                .to_string();
            assert!(err.contains("`alpha`"), "{err}");
        }
        assert!(FittedRidge::from_parts(Array2::zeros((3, 2)), Array1::zeros(3)).is_err());
        let nan = Array2::from_elem((3, 2), f32::NAN);
        assert!(FittedRidge::from_parts(nan, Array1::zeros(2)).is_err());
        let head = FittedRidge::from_parts(Array2::zeros((3, 2)), Array1::zeros(2)).unwrap();
        assert!(head.predict_proba(Array2::zeros((1, 4)).view()).is_err());
    }
}
