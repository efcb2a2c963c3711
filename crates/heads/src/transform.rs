//! Feature transforms fitted on training rows and applied before a head.

use ndarray::{Array1, Array2, ArrayView2, Axis};

use crate::{HeadError, check_features};

/// A fitted transform: `(x − mean) · projection`, the one shape both transforms take, so both export to
/// ONNX as a `Sub` and a `MatMul` (or `Mul` for standardisation).
///
/// ```
/// use graft_heads::FittedTransform;
/// use ndarray::array;
///
/// # fn main() -> Result<(), graft_heads::HeadError> {
/// let train = array![[1.0f32, 10.0], [3.0, 30.0], [5.0, 20.0]];
/// let standardize = FittedTransform::standardize(train.view())?;
/// let z = standardize.transform(array![[3.0f32, 20.0]].view())?;
/// assert!(z.iter().all(|v| v.abs() < 1e-6));
/// let whiten = FittedTransform::pca_whiten(train.view(), Some(1), 1e-5)?;
/// assert_eq!(whiten.transform(train.view())?.ncols(), 1);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct FittedTransform {
    kind: TransformKind,
    mean: Array1<f32>,
    /// Standardisation: per-feature 1/σ (length d). Whitening: d × components.
    scale: Array2<f32>,
}

/// Which transform was fitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransformKind {
    /// Per-feature zero mean, unit variance.
    Standardize,
    /// PCA whitening: projection on the principal axes, each scaled to unit variance.
    PcaWhiten,
}

impl TransformKind {
    /// The name used in pipeline files.
    pub fn name(self) -> &'static str {
        match self {
            TransformKind::Standardize => "standardize",
            TransformKind::PcaWhiten => "pca_whiten",
        }
    }
}

fn check_rows(x: ArrayView2<'_, f32>) -> Result<(), HeadError> {
    check_features(x, None)?;
    if x.nrows() < 2 {
        return Err(HeadError::Degenerate {
            rows: x.nrows(),
            classes: 0,
        });
    }
    Ok(())
}

impl FittedTransform {
    /// Per-feature standardisation; a constant feature keeps scale 1 (it becomes 0, not NaN).
    pub fn standardize(x: ArrayView2<'_, f32>) -> Result<FittedTransform, HeadError> {
        check_rows(x)?;
        let x64 = x.mapv(f64::from);
        let mean = x64.mean_axis(Axis(0)).expect("rows checked");
        let std = x64.std_axis(Axis(0), 0.0);
        let scale = std.mapv(|s| if s > 1e-12 { (1.0 / s) as f32 } else { 1.0 });
        Ok(FittedTransform {
            kind: TransformKind::Standardize,
            mean: mean.mapv(|v| v as f32),
            scale: scale.insert_axis(Axis(0)),
        })
    }

    /// PCA whitening (`components` leading axes, or all): eigenvectors of the training covariance, each
    /// divided by √(eigenvalue + `epsilon`); `epsilon` keeps near-zero directions from exploding.
    pub fn pca_whiten(
        x: ArrayView2<'_, f32>,
        components: Option<usize>,
        epsilon: f64,
    ) -> Result<FittedTransform, HeadError> {
        check_rows(x)?;
        let d = x.ncols();
        let components = components.unwrap_or(d);
        if components == 0 || components > d {
            return Err(HeadError::InvalidParameter {
                name: "components",
                value: components.to_string(),
                expected: "between 1 and the feature count",
            });
        }
        if !(epsilon.is_finite() && epsilon >= 0.0) {
            return Err(HeadError::InvalidParameter {
                name: "epsilon",
                value: epsilon.to_string(),
                expected: "a finite number of at least 0",
            });
        }
        let x64 = x.mapv(f64::from);
        let mean = x64.mean_axis(Axis(0)).expect("rows checked");
        let centred = &x64 - &mean;
        let cov = centred.t().dot(&centred) / (x.nrows() - 1) as f64;
        let (values, vectors) = symmetric_eigen(cov);
        let mut order: Vec<usize> = (0..d).collect();
        order.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
        let mut scale = Array2::<f32>::zeros((d, components));
        for (out, &axis) in order.iter().take(components).enumerate() {
            let mut v = vectors.column(axis).to_owned();
            // Fix each axis's sign (largest component positive) so the result is reproducible.
            let pivot = v
                .iter()
                .fold(0.0f64, |m, &a| if a.abs() > m.abs() { a } else { m });
            if pivot < 0.0 {
                v.mapv_inplace(|a| -a);
            }
            let factor = 1.0 / (values[axis].max(0.0) + epsilon).sqrt();
            scale
                .column_mut(out)
                .assign(&v.mapv(|a| (a * factor) as f32));
        }
        Ok(FittedTransform {
            kind: TransformKind::PcaWhiten,
            mean: mean.mapv(|v| v as f32),
            scale,
        })
    }

    /// Rebuilds a saved transform.
    pub fn from_parts(
        kind: TransformKind,
        mean: Array1<f32>,
        scale: Array2<f32>,
    ) -> Result<FittedTransform, HeadError> {
        let expected_rows = match kind {
            TransformKind::Standardize => 1,
            TransformKind::PcaWhiten => mean.len(),
        };
        if scale.nrows() != expected_rows {
            return Err(HeadError::ShapeMismatch {
                what: "transform scale rows",
                expected: expected_rows,
                got: scale.nrows(),
            });
        }
        if kind == TransformKind::Standardize && scale.ncols() != mean.len() {
            return Err(HeadError::ShapeMismatch {
                what: "transform scale columns",
                expected: mean.len(),
                got: scale.ncols(),
            });
        }
        Ok(FittedTransform { kind, mean, scale })
    }

    /// Which transform this is.
    pub fn kind(&self) -> TransformKind {
        self.kind
    }

    /// The training mean subtracted first.
    pub fn mean(&self) -> &Array1<f32> {
        &self.mean
    }

    /// Standardisation: 1 × d reciprocal standard deviations; whitening: d × components projection.
    pub fn scale(&self) -> &Array2<f32> {
        &self.scale
    }

    /// Features in.
    pub fn n_features(&self) -> usize {
        self.mean.len()
    }

    /// Features out.
    pub fn n_outputs(&self) -> usize {
        self.scale.ncols()
    }

    /// Applies the transform.
    pub fn transform(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>, HeadError> {
        check_features(x, Some(self.n_features()))?;
        let centred = &x - &self.mean;
        Ok(match self.kind {
            TransformKind::Standardize => centred * self.scale.row(0),
            TransformKind::PcaWhiten => centred.dot(&self.scale),
        })
    }
}

/// CORAL (Sun, Feng & Saenko, 2016, "Return of frustratingly easy domain adaptation"): the d × d matrix
/// `A = Cs^(-1/2) · Ct^(1/2)`, with `Cs`, `Ct` the source and target feature covariances plus `lambda`·I.
/// Source rows multiplied by `A` take the target's second-order statistics; a head trained on them is
/// applied to target rows unchanged. The paper uses `lambda = 1` on standardised features.
///
/// ```
/// use graft_heads::coral;
/// use ndarray::array;
///
/// # fn main() -> Result<(), graft_heads::HeadError> {
/// let source = array![[1.0f32, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]];
/// let target = source.mapv(|v| 3.0 * v);
/// let a = coral(source.view(), target.view(), 1.0)?;
/// // Aligned source rows have the target's spread along each axis.
/// let aligned = source.dot(&a);
/// assert!((aligned[[0, 0]] - ((6.0f32 + 1.0) / (2.0 / 3.0 + 1.0)).sqrt()).abs() < 1e-4);
/// # Ok(())
/// # }
/// ```
pub fn coral(
    source: ArrayView2<'_, f32>,
    target: ArrayView2<'_, f32>,
    lambda: f64,
) -> Result<Array2<f32>, HeadError> {
    check_rows(source)?;
    check_features(target, Some(source.ncols()))?;
    check_rows(target)?;
    if !(lambda.is_finite() && lambda > 0.0) {
        return Err(HeadError::InvalidParameter {
            name: "lambda",
            value: lambda.to_string(),
            expected: "a finite number above 0",
        });
    }
    // Symmetric matrix power V · diag(λ^p) · Vᵀ of cov(x) + lambda·I.
    let power = |x: ArrayView2<'_, f32>, p: f64| -> Array2<f64> {
        let x64 = x.mapv(f64::from);
        let mean = x64.mean_axis(Axis(0)).expect("rows checked");
        let centred = &x64 - &mean;
        let mut cov = centred.t().dot(&centred) / (x.nrows() - 1) as f64;
        cov.diag_mut().mapv_inplace(|v| v + lambda);
        let (values, vectors) = symmetric_eigen(cov);
        let scaled = &vectors * &values.mapv(|v| v.max(lambda).powf(p));
        scaled.dot(&vectors.t())
    };
    Ok(power(source, -0.5)
        .dot(&power(target, 0.5))
        .mapv(|v| v as f32))
}

/// Eigen-decomposition of a symmetric matrix: eigenvalues (ascending) and the eigenvectors as columns.
///
/// faer's self-adjoint solver (tridiagonalisation + divide and conquer), built without rayon so that it runs
/// sequentially and results do not depend on the core count. It replaced a hand-written cyclic Jacobi
/// solver that took minutes at 1280-d.
fn symmetric_eigen(a: Array2<f64>) -> (Array1<f64>, Array2<f64>) {
    let n = a.nrows();
    let matrix = faer::Mat::<f64>::from_fn(n, n, |i, j| a[[i, j]]);
    match matrix.self_adjoint_eigen(faer::Side::Lower) {
        Ok(evd) => {
            let values = Array1::from_shape_fn(n, |i| evd.S()[i]);
            let vectors = Array2::from_shape_fn((n, n), |(i, j)| evd.U()[(i, j)]);
            (values, vectors)
        }
        // The solver fails only on non-finite input; callers check their rows, so this is a NaN covariance.
        Err(_) => (
            Array1::from_elem(n, f64::NAN),
            Array2::from_elem((n, n), f64::NAN),
        ),
    }
}

#[cfg(test)]
mod tests {
    use ndarray::array;

    use super::*;

    fn correlated() -> Array2<f32> {
        Array2::from_shape_fn((200, 3), |(i, j)| {
            let t = (i as f32 * 0.37).sin() * 3.0;
            let u = (i as f32 * 1.13).cos();
            let w = (i as f32 * 2.71).sin() * 0.5;
            [t + 5.0, 0.5 * t + u, -2.0 * u + w + 1.0][j]
        })
    }

    #[test]
    fn standardised_training_rows_have_zero_mean_unit_variance() {
        let x = correlated();
        let t = FittedTransform::standardize(x.view()).unwrap();
        let z = t.transform(x.view()).unwrap();
        for column in z.columns() {
            assert!(column.mean().unwrap().abs() < 1e-5);
            assert!((column.std(0.0) - 1.0).abs() < 1e-4);
        }
        let constant = array![[1.0f32, 2.0], [1.0, 3.0]];
        let z = FittedTransform::standardize(constant.view())
            .unwrap()
            .transform(constant.view())
            .unwrap();
        assert_eq!(z.column(0).to_vec(), vec![0.0, 0.0]);
    }

    #[test]
    fn whitened_training_rows_have_identity_covariance() {
        let x = correlated();
        let t = FittedTransform::pca_whiten(x.view(), None, 0.0).unwrap();
        let z = t.transform(x.view()).unwrap().mapv(f64::from);
        let cov = z.t().dot(&z) / (z.nrows() - 1) as f64;
        for ((i, j), v) in cov.indexed_iter() {
            let expected = if i == j { 1.0 } else { 0.0 };
            assert!((v - expected).abs() < 1e-3, "cov[{i},{j}] = {v}");
        }
        let reduced = FittedTransform::pca_whiten(x.view(), Some(2), 0.0).unwrap();
        assert_eq!(reduced.n_outputs(), 2);
        let err = FittedTransform::pca_whiten(x.view(), Some(4), 0.0).unwrap_err();
        assert!(err.to_string().contains("`components`"), "{err}");
    }

    /// Sample covariance of the rows.
    fn covariance(x: &Array2<f32>) -> Array2<f64> {
        let x = x.mapv(f64::from);
        let centred = &x - &x.mean_axis(Axis(0)).unwrap();
        centred.t().dot(&centred) / (x.nrows() - 1) as f64
    }

    #[test]
    fn coral_gives_source_rows_the_target_covariance() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        // Correlated 6-d source, differently correlated and scaled target.
        let mix_s = Array2::from_shape_fn((6, 6), |_| rng.random_range(-1.0f32..1.0));
        let mix_t = Array2::from_shape_fn((6, 6), |_| rng.random_range(-2.0f32..2.0));
        let source =
            Array2::from_shape_fn((4000, 6), |_| rng.random_range(-1.0f32..1.0)).dot(&mix_s);
        let target =
            Array2::from_shape_fn((4000, 6), |_| rng.random_range(-1.0f32..1.0)).dot(&mix_t);
        // A tiny lambda: the aligned covariance must match the target's.
        let a = coral(source.view(), target.view(), 1e-6).unwrap();
        let aligned = covariance(&source.dot(&a));
        let wanted = covariance(&target);
        let scale = wanted.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for (x, y) in aligned.iter().zip(wanted.iter()) {
            assert!((x - y).abs() < 1e-3 * scale, "{x} vs {y}");
        }
    }

    #[test]
    fn eigen_decomposition_recovers_a_known_spectrum() {
        // A = H·diag(1..n)·H with H = I − 2·vvᵀ/vᵀv (orthogonal, symmetric): eigenvalues 1..n exactly.
        let n = 300;
        let v = Array1::from_shape_fn(n, |i| ((i * 37 % 101) as f64 - 50.0) / 50.0);
        let h = Array2::<f64>::eye(n) - &(2.0 / v.dot(&v) * outer(&v, &v));
        let spectrum = Array1::from_shape_fn(n, |i| (i + 1) as f64);
        let a = (&h * &spectrum).dot(&h);
        let (values, vectors) = symmetric_eigen(a.clone());
        for (found, expected) in values.iter().zip(&spectrum) {
            assert!((found - expected).abs() < 1e-9, "{found} vs {expected}");
        }
        // A·U = U·Λ and UᵀU = I.
        let residual = a.dot(&vectors) - &(&vectors * &values);
        assert!(residual.iter().all(|r| r.abs() < 1e-9));
        let gram = vectors.t().dot(&vectors) - Array2::<f64>::eye(n);
        assert!(gram.iter().all(|g| g.abs() < 1e-9));
    }

    fn outer(a: &Array1<f64>, b: &Array1<f64>) -> Array2<f64> {
        Array2::from_shape_fn((a.len(), b.len()), |(i, j)| a[i] * b[j])
    }
}
