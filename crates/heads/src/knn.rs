//! Exact k-nearest neighbours.

use ndarray::{Array1, Array2, ArrayView2, Axis, s};
use rayon::prelude::*;

use crate::prototype::Metric;
use crate::{Fit, HeadError, ParamGuard, Predict, Targets, check_features, check_training};

/// How neighbours' votes are weighted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weighting {
    /// One vote each.
    Uniform,
    /// Votes weighted by `1 / distance` (cosine distance `1 − cos`, or Euclidean distance), as
    /// scikit-learn's `weights="distance"`; an exact match takes all the weight.
    Distance,
}

impl Weighting {
    /// The name used in pipeline files.
    pub fn name(self) -> &'static str {
        match self {
            Weighting::Uniform => "uniform",
            Weighting::Distance => "distance",
        }
    }
}

/// Exact k-nearest-neighbour classification: every query is compared with every training row (blocked
/// matrix products, query blocks in parallel with rayon). Probabilities are the weighted vote shares.
/// Ties in distance go to the earlier training row, so results do not depend on thread count.
///
/// ```
/// use graft_heads::{Fit, Knn, Metric, Predict, Targets, Weighting};
/// use ndarray::array;
///
/// # fn main() -> Result<(), graft_heads::HeadError> {
/// let x = array![[0.0f32], [1.0], [2.0], [10.0], [11.0]];
/// let head = Knn::params()
///     .k(3)
///     .metric(Metric::Euclidean)
///     .weighting(Weighting::Distance)
///     .fit(x.view(), &Targets::new(&[0, 0, 1, 1, 1], 2)?)?;
/// assert_eq!(head.predict(array![[0.4f32], [10.5]].view())?, vec![0, 1]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Knn;

impl Knn {
    /// Default hyperparameters, ready for the setters.
    pub fn params() -> KnnParams {
        KnnParams(KnnValidParams {
            k: 5,
            metric: Metric::Cosine,
            weighting: Weighting::Uniform,
        })
    }
}

/// Unchecked hyperparameters of [`Knn`].
#[derive(Debug, Clone, PartialEq)]
pub struct KnnParams(KnnValidParams);

/// Validated hyperparameters of [`Knn`].
#[derive(Debug, Clone, PartialEq)]
pub struct KnnValidParams {
    k: usize,
    metric: Metric,
    weighting: Weighting,
}

impl KnnParams {
    /// Neighbours consulted. Default `5`; at least 1 (and capped at the training rows when predicting).
    pub fn k(mut self, k: usize) -> Self {
        self.0.k = k;
        self
    }
    /// Distance. Default [`Metric::Cosine`].
    pub fn metric(mut self, metric: Metric) -> Self {
        self.0.metric = metric;
        self
    }
    /// Vote weighting. Default [`Weighting::Uniform`].
    pub fn weighting(mut self, weighting: Weighting) -> Self {
        self.0.weighting = weighting;
        self
    }
}

impl ParamGuard for KnnParams {
    type Checked = KnnValidParams;

    fn check(self) -> Result<KnnValidParams, HeadError> {
        if self.0.k == 0 {
            return Err(HeadError::InvalidParameter {
                name: "k",
                value: "0".to_owned(),
                expected: "at least 1",
            });
        }
        Ok(self.0)
    }
}

impl KnnValidParams {
    /// Neighbours consulted.
    pub fn k(&self) -> usize {
        self.k
    }
    /// Distance.
    pub fn metric(&self) -> Metric {
        self.metric
    }
    /// Vote weighting.
    pub fn weighting(&self) -> Weighting {
        self.weighting
    }
}

/// A fitted [`Knn`] head: the training rows themselves.
#[derive(Debug, Clone, PartialEq)]
pub struct FittedKnn {
    /// Training rows (unit length for cosine).
    points: Array2<f32>,
    /// Their squared norms (Euclidean).
    norms: Array1<f32>,
    labels: Vec<usize>,
    n_classes: usize,
    params: KnnValidParams,
}

fn normalise_rows(x: &mut Array2<f32>) {
    for mut row in x.rows_mut() {
        let norm = row.dot(&row).sqrt();
        if norm > 0.0 {
            row /= norm;
        }
    }
}

impl FittedKnn {
    /// The stored training rows (unit length for cosine).
    pub fn points(&self) -> &Array2<f32> {
        &self.points
    }
    /// Their labels.
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }
    /// The hyperparameters.
    pub fn params(&self) -> &KnnValidParams {
        &self.params
    }

    /// Rebuilds a head from saved points (already normalised for cosine) and labels.
    pub fn from_parts(
        points: Array2<f32>,
        labels: Vec<usize>,
        n_classes: usize,
        params: KnnValidParams,
    ) -> Result<FittedKnn, HeadError> {
        let targets = Targets::new(&labels, n_classes)?;
        check_training(points.view(), &targets)?;
        let norms = points.map_axis(Axis(1), |r| r.dot(&r));
        Ok(FittedKnn {
            points,
            norms,
            labels,
            n_classes,
            params,
        })
    }
}

impl FittedKnn {
    /// Vote shares of the `k` nearest training rows for each query row.
    fn vote(&self, q: ArrayView2<'_, f32>, k: usize) -> Array2<f32> {
        let mut out = Array2::<f32>::zeros((q.nrows(), self.n_classes));
        let dots = q.dot(&self.points.t());
        let mut candidates: Vec<(f32, usize)> = Vec::with_capacity(self.points.nrows());
        let by_distance =
            |a: &(f32, usize), b: &(f32, usize)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
        for (i, dot_row) in dots.rows().into_iter().enumerate() {
            let qn = q.row(i).dot(&q.row(i));
            candidates.clear();
            candidates.extend(dot_row.iter().enumerate().map(|(j, &d)| {
                let distance = match self.params.metric {
                    Metric::Cosine => (1.0 - d).max(0.0),
                    Metric::Euclidean => (qn + self.norms[j] - 2.0 * d).max(0.0).sqrt(),
                };
                (distance, j)
            }));
            if k < candidates.len() {
                candidates.select_nth_unstable_by(k - 1, by_distance);
            }
            let nearest = &mut candidates[..k];
            nearest.sort_by(by_distance);
            let exact = nearest.iter().any(|(d, _)| *d == 0.0);
            let mut row = out.row_mut(i);
            for &(distance, j) in nearest.iter() {
                let weight = match self.params.weighting {
                    Weighting::Uniform => 1.0,
                    Weighting::Distance if exact => f32::from(u8::from(distance == 0.0)),
                    Weighting::Distance => 1.0 / distance,
                };
                row[self.labels[j]] += weight;
            }
            let total = row.sum();
            row /= total;
        }
        out
    }
}

impl Fit for KnnParams {
    type Fitted = FittedKnn;

    fn fit(&self, x: ArrayView2<'_, f32>, targets: &Targets<'_>) -> Result<FittedKnn, HeadError> {
        self.clone().check()?.fit(x, targets)
    }
}

impl Fit for KnnValidParams {
    type Fitted = FittedKnn;

    fn fit(&self, x: ArrayView2<'_, f32>, targets: &Targets<'_>) -> Result<FittedKnn, HeadError> {
        check_training(x, targets)?;
        let mut points = x.to_owned();
        if self.metric == Metric::Cosine {
            normalise_rows(&mut points);
        }
        let norms = points.map_axis(Axis(1), |r| r.dot(&r));
        Ok(FittedKnn {
            points,
            norms,
            labels: targets.labels().to_vec(),
            n_classes: targets.n_classes(),
            params: self.clone(),
        })
    }
}

/// Query rows per parallel work item.
const QUERY_BLOCK: usize = 256;

impl Predict for FittedKnn {
    fn n_features(&self) -> usize {
        self.points.ncols()
    }

    fn n_classes(&self) -> usize {
        self.n_classes
    }

    fn predict_proba(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>, HeadError> {
        check_features(x, Some(self.n_features()))?;
        let mut queries = x.to_owned();
        if self.params.metric == Metric::Cosine {
            normalise_rows(&mut queries);
        }
        let k = self.params.k.min(self.points.nrows());
        let blocks: Vec<Array2<f32>> = (0..queries.nrows().div_ceil(QUERY_BLOCK))
            .into_par_iter()
            .map(|block| {
                let start = block * QUERY_BLOCK;
                let end = (start + QUERY_BLOCK).min(queries.nrows());
                self.vote(queries.slice(s![start..end, ..]), k)
            })
            .collect();
        let mut proba = Array2::<f32>::zeros((0, self.n_classes));
        for block in blocks {
            proba.append(Axis(0), block.view()).expect("same width");
        }
        Ok(proba)
    }
}

#[cfg(test)]
mod tests {
    use ndarray::array;

    use super::*;
    use crate::tests_support::blobs;

    #[test]
    fn votes_of_the_nearest_rows() {
        let x = array![[0.0f32], [1.0], [2.0], [10.0], [11.0]];
        let y = [0, 0, 1, 1, 1];
        let t = Targets::new(&y, 2).unwrap();
        let head = Knn::params()
            .k(3)
            .metric(Metric::Euclidean)
            .fit(x.view(), &t)
            .unwrap();
        let p = head.predict_proba(array![[0.4f32], [10.5]].view()).unwrap();
        assert_eq!(p, array![[2.0 / 3.0, 1.0 / 3.0], [0.0, 1.0]]);
        let weighted = Knn::params()
            .k(3)
            .metric(Metric::Euclidean)
            .weighting(Weighting::Distance)
            .fit(x.view(), &t)
            .unwrap();
        // Distances 0.5, 0.5, 1.5 → weights 2, 2, 2/3.
        let p = weighted.predict_proba(array![[0.5f32]].view()).unwrap();
        assert!((p[[0, 0]] - 4.0 / (4.0 + 2.0 / 3.0)).abs() < 1e-6);
        // An exact match takes the whole vote.
        let p = weighted.predict_proba(array![[2.0f32]].view()).unwrap();
        assert_eq!(p, array![[0.0, 1.0]]);
    }

    #[test]
    fn one_neighbour_recovers_the_training_labels() {
        let (x, y) = blobs();
        let head = Knn::params()
            .k(1)
            .fit((&x + 10.0).view(), &Targets::new(&y, 3).unwrap())
            .unwrap();
        assert_eq!(head.predict((&x + 10.0).view()).unwrap(), y);
    }

    #[test]
    fn zero_k_is_named() {
        let err = Knn::params().k(0).check().unwrap_err();
        assert_eq!(err.to_string(), "invalid value for `k`: 0 (at least 1)");
    }
}
