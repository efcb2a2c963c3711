//! Nearest class mean: the few-shot head.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis};

use crate::{
    Fit, HeadError, ParamGuard, Predict, Targets, check_features, check_training, softmax_rows,
};

/// How a row is compared with a class mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Cosine similarity; rows and means are L2-normalised first.
    Cosine,
    /// Negative squared Euclidean distance, as prototypical networks use (Snell et al., 2017).
    Euclidean,
}

impl Metric {
    /// The name used in pipeline files.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::Euclidean => "euclidean",
        }
    }
}

/// One prototype per class, the mean of its training rows (Snell et al., 2017, "Prototypical Networks for
/// Few-shot Learning"). Probabilities are a softmax of the similarities divided by `temperature`.
/// Classes can be added to a fitted head later ([`FittedPrototype::add_class`]) without touching the others.
///
/// ```
/// use graft_heads::{Fit, Metric, Predict, Prototype, Targets};
/// use ndarray::array;
///
/// # fn main() -> Result<(), graft_heads::HeadError> {
/// // One example per class is enough to start (1-shot).
/// let x = array![[1.0f32, 0.0], [0.0, 1.0]];
/// let mut head = Prototype::params().metric(Metric::Cosine).fit(x.view(), &Targets::new(&[0, 1], 2)?)?;
/// // A third class arrives later; the first two prototypes are untouched.
/// let new_class = head.add_class(array![[-1.0f32, -1.0]].view())?;
/// assert_eq!(new_class, 2);
/// assert_eq!(head.predict(array![[0.9f32, 0.1], [-0.5, -0.6]].view())?, vec![0, 2]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Prototype;

impl Prototype {
    /// Default hyperparameters, ready for the setters.
    pub fn params() -> PrototypeParams {
        PrototypeParams(PrototypeValidParams {
            metric: Metric::Cosine,
            temperature: None,
        })
    }
}

/// Unchecked hyperparameters of [`Prototype`].
#[derive(Debug, Clone, PartialEq)]
pub struct PrototypeParams(PrototypeValidParams);

/// Validated hyperparameters of [`Prototype`].
#[derive(Debug, Clone, PartialEq)]
pub struct PrototypeValidParams {
    metric: Metric,
    temperature: Option<f64>,
}

impl PrototypeParams {
    /// Similarity. Default [`Metric::Cosine`].
    pub fn metric(mut self, metric: Metric) -> Self {
        self.0.metric = metric;
        self
    }

    /// Softmax temperature over similarities. Default `0.05` for cosine (similarities lie in [−1, 1]) and
    /// `1.0` for Euclidean; must be positive.
    pub fn temperature(mut self, temperature: f64) -> Self {
        self.0.temperature = Some(temperature);
        self
    }
}

impl ParamGuard for PrototypeParams {
    type Checked = PrototypeValidParams;

    fn check(self) -> Result<PrototypeValidParams, HeadError> {
        let mut p = self.0;
        let t = p.temperature.unwrap_or(match p.metric {
            Metric::Cosine => 0.05,
            Metric::Euclidean => 1.0,
        });
        if !(t.is_finite() && t > 0.0) {
            return Err(HeadError::InvalidParameter {
                name: "temperature",
                value: t.to_string(),
                expected: "a positive finite number",
            });
        }
        p.temperature = Some(t);
        Ok(p)
    }
}

impl PrototypeValidParams {
    /// Similarity.
    pub fn metric(&self) -> Metric {
        self.metric
    }
    /// Softmax temperature.
    pub fn temperature(&self) -> f64 {
        self.temperature.expect("set by check")
    }

    /// Cosine class means that start from a prior vector per class (e.g. the embedding of the class's
    /// description), which counts as `weight` examples: prototype = unit(weight · p̂_c + Σ x̂_i). With no rows
    /// at all this is a zero-shot classifier. `labels` index the rows of `prior`; every class with a prior
    /// (`weight` > 0) can be predicted even without rows.
    pub fn fit_with_prior(
        &self,
        x: ArrayView2<'_, f32>,
        labels: &[usize],
        prior: ArrayView2<'_, f32>,
        weight: f32,
    ) -> Result<FittedPrototype, HeadError> {
        if self.metric != Metric::Cosine {
            return Err(HeadError::InvalidParameter {
                name: "metric",
                value: self.metric.name().to_owned(),
                expected: "cosine (a prior direction has no Euclidean scale)",
            });
        }
        if !(weight.is_finite() && weight >= 0.0) {
            return Err(HeadError::InvalidParameter {
                name: "weight",
                value: weight.to_string(),
                expected: "a finite number of at least 0",
            });
        }
        check_features(x, Some(prior.ncols()))?;
        if labels.len() != x.nrows() {
            return Err(HeadError::ShapeMismatch {
                what: "label count",
                expected: x.nrows(),
                got: labels.len(),
            });
        }
        let k = prior.nrows();
        if let Some(&bad) = labels.iter().find(|&&l| l >= k) {
            return Err(HeadError::ShapeMismatch {
                what: "class index (prior rows)",
                expected: k,
                got: bad + 1,
            });
        }
        let mut sums = Array2::<f32>::zeros(prior.raw_dim());
        let mut counts = vec![0; k];
        for (c, mut sum) in sums.rows_mut().into_iter().enumerate() {
            sum.scaled_add(weight, &unit(prior.row(c)));
        }
        for (row, &label) in x.rows().into_iter().zip(labels) {
            let mut sum = sums.row_mut(label);
            sum += &unit(row);
            counts[label] += 1;
        }
        for mut row in sums.rows_mut() {
            let u = unit(row.view());
            row.assign(&u);
        }
        if weight > 0.0 {
            // A count of 0 masks a class; one known from its prior can be predicted.
            counts.iter_mut().for_each(|n| *n = (*n).max(1));
        }
        Ok(FittedPrototype {
            prototypes: sums,
            counts,
            metric: Metric::Cosine,
            temperature: self.temperature() as f32,
        })
    }
}

/// A trained [`Prototype`] head.
#[derive(Debug, Clone, PartialEq)]
pub struct FittedPrototype {
    /// classes × features; for cosine, unit length.
    prototypes: Array2<f32>,
    /// Training rows behind each prototype.
    counts: Vec<usize>,
    metric: Metric,
    temperature: f32,
}

fn unit(row: ArrayView1<'_, f32>) -> Array1<f32> {
    let norm = row.dot(&row).sqrt();
    if norm > 0.0 {
        &row / norm
    } else {
        row.to_owned()
    }
}

impl FittedPrototype {
    /// The class prototypes, classes × features (unit length for cosine).
    pub fn prototypes(&self) -> &Array2<f32> {
        &self.prototypes
    }

    /// Training rows per class.
    pub fn counts(&self) -> &[usize] {
        &self.counts
    }

    /// The similarity.
    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// The softmax temperature.
    pub fn temperature(&self) -> f32 {
        self.temperature
    }

    /// Rebuilds a head from saved prototypes.
    pub fn from_parts(
        prototypes: Array2<f32>,
        counts: Vec<usize>,
        metric: Metric,
        temperature: f32,
    ) -> Result<FittedPrototype, HeadError> {
        if counts.len() != prototypes.nrows() {
            return Err(HeadError::ShapeMismatch {
                what: "prototype counts",
                expected: prototypes.nrows(),
                got: counts.len(),
            });
        }
        Ok(FittedPrototype {
            prototypes,
            counts,
            metric,
            temperature,
        })
    }

    /// Adds a new class from its example rows; it gets the next class index, which is returned. Existing
    /// prototypes are untouched, so earlier predictions among old classes keep their ranking.
    pub fn add_class(&mut self, examples: ArrayView2<'_, f32>) -> Result<usize, HeadError> {
        check_features(examples, Some(self.prototypes.ncols()))?;
        if examples.nrows() == 0 {
            return Err(HeadError::Degenerate {
                rows: 0,
                classes: 0,
            });
        }
        let prototype = class_mean(examples, self.metric);
        self.prototypes
            .push_row(prototype.view())
            .expect("width checked above");
        self.counts.push(examples.nrows());
        Ok(self.prototypes.nrows() - 1)
    }

    /// Similarities (logits before the temperature), rows × classes.
    pub fn similarities(&self, x: ArrayView2<'_, f32>) -> Array2<f32> {
        match self.metric {
            Metric::Cosine => {
                let mut unit_rows = x.to_owned();
                for mut row in unit_rows.rows_mut() {
                    let u = unit(row.view());
                    row.assign(&u);
                }
                unit_rows.dot(&self.prototypes.t())
            }
            Metric::Euclidean => {
                // −‖x − μ‖² = 2x·μ − ‖x‖² − ‖μ‖²
                let cross = x.dot(&self.prototypes.t());
                let xn = x.map_axis(Axis(1), |r| r.dot(&r));
                let mn = self.prototypes.map_axis(Axis(1), |r| r.dot(&r));
                Array2::from_shape_fn(cross.raw_dim(), |(i, c)| {
                    2.0 * cross[[i, c]] - xn[i] - mn[c]
                })
            }
        }
    }
}

fn class_mean(rows: ArrayView2<'_, f32>, metric: Metric) -> Array1<f32> {
    match metric {
        Metric::Cosine => {
            let mut sum = Array1::<f32>::zeros(rows.ncols());
            for row in rows.rows() {
                sum += &unit(row);
            }
            unit(sum.view())
        }
        Metric::Euclidean => rows.mean_axis(Axis(0)).expect("at least one row"),
    }
}

impl Fit for PrototypeParams {
    type Fitted = FittedPrototype;

    fn fit(
        &self,
        x: ArrayView2<'_, f32>,
        targets: &Targets<'_>,
    ) -> Result<FittedPrototype, HeadError> {
        self.clone().check()?.fit(x, targets)
    }
}

impl Fit for PrototypeValidParams {
    type Fitted = FittedPrototype;

    /// Averages each class's rows. A class without rows gets a zero prototype and zero count, so label
    /// indices stay stable; [`FittedPrototype::add_class`] is the way to grow the class set later.
    fn fit(
        &self,
        x: ArrayView2<'_, f32>,
        targets: &Targets<'_>,
    ) -> Result<FittedPrototype, HeadError> {
        check_training(x, targets)?;
        let k = targets.n_classes();
        let mut prototypes = Array2::zeros((k, x.ncols()));
        let mut counts = vec![0; k];
        for (class, count) in counts.iter_mut().enumerate() {
            let rows: Vec<usize> = (0..x.nrows())
                .filter(|&i| targets.labels()[i] == class)
                .collect();
            *count = rows.len();
            if !rows.is_empty() {
                let mean = class_mean(x.select(Axis(0), &rows).view(), self.metric);
                prototypes.row_mut(class).assign(&mean);
            }
        }
        Ok(FittedPrototype {
            prototypes,
            counts,
            metric: self.metric,
            temperature: self.temperature() as f32,
        })
    }
}

impl Predict for FittedPrototype {
    fn n_features(&self) -> usize {
        self.prototypes.ncols()
    }

    fn n_classes(&self) -> usize {
        self.prototypes.nrows()
    }

    fn predict_proba(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>, HeadError> {
        check_features(x, Some(self.n_features()))?;
        let mut z = self.similarities(x);
        for (mut column, &count) in z.columns_mut().into_iter().zip(&self.counts) {
            // A class never seen cannot be predicted.
            if count == 0 {
                column.fill(f32::NEG_INFINITY);
            }
        }
        z /= self.temperature;
        softmax_rows(&mut z);
        Ok(z)
    }
}

#[cfg(test)]
mod tests {
    use ndarray::array;

    use super::*;
    use crate::tests_support::blobs;

    #[test]
    fn a_prior_counts_as_examples_of_its_class() {
        let x = array![[1.0f32, 0.0], [0.8, 0.6], [0.0, -1.0]];
        let y = [0, 0, 1];
        let prior = array![[0.0f32, 2.0], [-3.0, 0.0]];
        let params = Prototype::params().check().unwrap();
        // Weight 0: the plain cosine class means.
        let plain = params
            .fit_with_prior(x.view(), &y, prior.view(), 0.0)
            .unwrap();
        let fitted = params.fit(x.view(), &Targets::new(&y, 2).unwrap()).unwrap();
        assert!(
            (plain.prototypes() - fitted.prototypes())
                .iter()
                .all(|d| d.abs() < 1e-6)
        );
        assert_eq!(plain.counts(), &[2, 1]);
        // A prior worth one example against one row: halfway between the two directions.
        let half = params
            .fit_with_prior(x.view(), &y, prior.view(), 1.0)
            .unwrap();
        let h = std::f32::consts::FRAC_1_SQRT_2;
        assert!(
            (half.prototypes().row(1).to_owned() - array![-h, -h])
                .iter()
                .all(|d| d.abs() < 1e-6)
        );
        // No rows: the priors alone classify (zero-shot), and both classes can be predicted.
        let none = params
            .fit_with_prior(x.slice(ndarray::s![..0, ..]), &[], prior.view(), 1.0)
            .unwrap();
        assert_eq!(none.counts(), &[1, 1]);
        assert_eq!(none.predict(x.view()).unwrap(), vec![0, 0, 1]);
        let euclidean = Prototype::params()
            .metric(Metric::Euclidean)
            .check()
            .unwrap();
        assert!(
            euclidean
                .fit_with_prior(x.view(), &y, prior.view(), 1.0)
                .is_err()
        );
        assert!(
            params
                .fit_with_prior(x.view(), &[0, 0, 2], prior.view(), 1.0)
                .is_err()
        );
    }

    #[test]
    fn classifies_its_own_means_and_the_clusters() {
        let (x, y) = blobs();
        for metric in [Metric::Cosine, Metric::Euclidean] {
            // Shift away from the origin so cosine separates the clusters too.
            let shifted = &x + 10.0;
            let head = Prototype::params()
                .metric(metric)
                .fit(shifted.view(), &Targets::new(&y, 3).unwrap())
                .unwrap();
            assert_eq!(
                head.predict(head.prototypes().view()).unwrap(),
                vec![0, 1, 2]
            );
            if metric == Metric::Euclidean {
                assert_eq!(head.predict(shifted.view()).unwrap(), y);
            }
        }
    }

    #[test]
    fn a_class_added_later_leaves_the_others_alone() {
        let (x, y) = blobs();
        let mut head = Prototype::params()
            .metric(Metric::Euclidean)
            .fit(x.view(), &Targets::new(&y, 3).unwrap())
            .unwrap();
        let before = head.prototypes().clone();
        let new = head
            .add_class(array![[-4.0f32, -4.0], [-4.2, -3.8]].view())
            .unwrap();
        assert_eq!(new, 3);
        assert_eq!(head.prototypes().slice(ndarray::s![..3, ..]), before);
        assert_eq!(
            head.predict(array![[-4.0f32, -4.1], [4.0, 0.0]].view())
                .unwrap(),
            vec![3, 1]
        );
    }

    #[test]
    fn invalid_temperature_is_named() {
        let err = Prototype::params().temperature(0.0).check().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value for `temperature`: 0 (a positive finite number)"
        );
    }
}
