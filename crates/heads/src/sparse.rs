//! Rows stored sparsely (compressed sparse rows), for features that are mostly zeros — TF-IDF vectors
//! of short texts hold a dozen non-zeros among thousands of terms. The logistic head trains on them
//! directly ([`crate::LogisticValidParams::fit_sparse`]): an evaluation then costs the non-zeros, not
//! rows × columns.

use crate::HeadError;

/// A matrix in compressed sparse row form: row `i`'s values are `values[indptr[i]..indptr[i + 1]]` at
/// columns `indices[…]` (each below `ncols`, increasing within a row).
///
/// ```
/// use graft_heads::SparseRows;
///
/// # fn main() -> Result<(), graft_heads::HeadError> {
/// // [[1, 0, 2],
/// //  [0, 3, 0]]
/// let x = SparseRows::new(vec![0, 2, 3], vec![0, 2, 1], vec![1.0, 2.0, 3.0], 3)?;
/// assert_eq!((x.nrows(), x.ncols()), (2, 3));
/// assert_eq!(x.to_dense()[[1, 1]], 3.0);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct SparseRows {
    indptr: Vec<usize>,
    indices: Vec<usize>,
    values: Vec<f32>,
    ncols: usize,
}

impl SparseRows {
    /// Checks the parts: `indptr` starts at 0, never decreases and ends at the number of values; every
    /// column is below `ncols` and increasing within its row; every value is finite.
    pub fn new(
        indptr: Vec<usize>,
        indices: Vec<usize>,
        values: Vec<f32>,
        ncols: usize,
    ) -> Result<SparseRows, HeadError> {
        let mismatch = |what, expected, got| HeadError::ShapeMismatch {
            what,
            expected,
            got,
        };
        if indices.len() != values.len() {
            return Err(mismatch("sparse values", indices.len(), values.len()));
        }
        if indptr.first() != Some(&0) {
            return Err(mismatch(
                "sparse row start",
                0,
                indptr.first().copied().unwrap_or(1),
            ));
        }
        if indptr.last() != Some(&values.len()) {
            return Err(mismatch(
                "sparse row end",
                values.len(),
                indptr.last().copied().unwrap_or(0),
            ));
        }
        for (row, bounds) in indptr.windows(2).enumerate() {
            if bounds[1] < bounds[0] {
                return Err(mismatch("sparse row start", bounds[0], bounds[1]));
            }
            let columns = &indices[bounds[0]..bounds[1]];
            for (at, &column) in columns.iter().enumerate() {
                if column >= ncols || (at > 0 && columns[at - 1] >= column) {
                    return Err(mismatch("sparse column", ncols, column));
                }
                if !values[bounds[0] + at].is_finite() {
                    return Err(HeadError::NonFinite { row, column });
                }
            }
        }
        Ok(SparseRows {
            indptr,
            indices,
            values,
            ncols,
        })
    }

    /// Rows.
    pub fn nrows(&self) -> usize {
        self.indptr.len() - 1
    }

    /// Columns.
    pub fn ncols(&self) -> usize {
        self.ncols
    }

    /// Row `i` as (columns, values).
    pub fn row(&self, i: usize) -> (&[usize], &[f32]) {
        let range = self.indptr[i]..self.indptr[i + 1];
        (&self.indices[range.clone()], &self.values[range])
    }

    /// The same matrix, dense.
    pub fn to_dense(&self) -> ndarray::Array2<f32> {
        let mut dense = ndarray::Array2::zeros((self.nrows(), self.ncols));
        for i in 0..self.nrows() {
            let (columns, values) = self.row(i);
            for (&j, &v) in columns.iter().zip(values) {
                dense[[i, j]] = v;
            }
        }
        dense
    }
}
