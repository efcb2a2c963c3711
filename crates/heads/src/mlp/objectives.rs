//! The objectives the output layer is trained against: softmax cross-entropy over classes, a sigmoid per
//! label, a softmax per task block, and distillation's blend of hard labels and a teacher's probabilities.

use ndarray::{Array2, ArrayView2, Axis};
use num_traits::Float;

use crate::{argmax_rows, softmax_rows};
use ndarray::{LinalgScalar, ScalarOperand};

/// What the output layer is trained against: one class per row (softmax cross-entropy) or 0/1 label
/// indicators (one sigmoid and binary cross-entropy per label).
#[derive(Debug, Clone)]
pub(crate) enum Outputs<'a, A> {
    Classes(&'a [usize], usize),
    Sets(ArrayView2<'a, A>),
    /// Several single-label tasks side by side: one-hot blocks of these widths (an all-zero block: the row
    /// has no label for that task), a softmax per block.
    Tasks(ArrayView2<'a, A>, &'a [usize]),
    /// Knowledge distillation: hard labels, the teacher's probabilities at `temperature`, and `alpha`, the
    /// weight of the soft term.
    Soft(&'a [usize], ArrayView2<'a, A>, A, A),
}

/// A batch's targets, owned.
pub(crate) enum BatchOutputs<'a, A> {
    Classes(Vec<usize>, usize),
    Sets(Array2<A>),
    Tasks(Array2<A>, &'a [usize]),
    Soft(Vec<usize>, Array2<A>, A, A),
}

impl<A: Copy> BatchOutputs<'_, A> {
    pub(crate) fn as_outputs(&self) -> Outputs<'_, A> {
        match self {
            BatchOutputs::Classes(labels, k) => Outputs::Classes(labels, *k),
            BatchOutputs::Sets(y) => Outputs::Sets(y.view()),
            BatchOutputs::Tasks(y, widths) => Outputs::Tasks(y.view(), widths),
            BatchOutputs::Soft(labels, soft, t, alpha) => {
                Outputs::Soft(labels, soft.view(), *t, *alpha)
            }
        }
    }
}

impl<'a, A: Clone> Outputs<'a, A> {
    pub(crate) fn width(&self) -> usize {
        match self {
            Outputs::Classes(_, k) => *k,
            Outputs::Sets(y) | Outputs::Tasks(y, _) | Outputs::Soft(_, y, _, _) => y.ncols(),
        }
    }

    pub(crate) fn rows(&self, rows: &[usize]) -> BatchOutputs<'a, A> {
        match self {
            Outputs::Classes(labels, k) => {
                BatchOutputs::Classes(rows.iter().map(|&i| labels[i]).collect(), *k)
            }
            Outputs::Sets(y) => BatchOutputs::Sets(y.select(Axis(0), rows)),
            Outputs::Tasks(y, widths) => BatchOutputs::Tasks(y.select(Axis(0), rows), widths),
            Outputs::Soft(labels, soft, t, alpha) => BatchOutputs::Soft(
                rows.iter().map(|&i| labels[i]).collect(),
                soft.select(Axis(0), rows),
                t.clone(),
                alpha.clone(),
            ),
        }
    }
}

/// Softmax within each block of columns (`widths` wide, left to right) of every row.
pub(crate) fn softmax_blocks<A: Real>(z: &mut Array2<A>, widths: &[usize]) {
    let mut start = 0;
    for &w in widths {
        let mut block = z.slice_mut(ndarray::s![.., start..start + w]).to_owned();
        softmax_rows(&mut block);
        z.slice_mut(ndarray::s![.., start..start + w])
            .assign(&block);
        start += w;
    }
}

/// Per block of a multitask output: the labelled class of each row (`None` for an all-zero block).
pub(crate) fn block_labels<A: Real>(
    y: ArrayView2<'_, A>,
    widths: &[usize],
) -> Vec<Vec<Option<usize>>> {
    let mut start = 0;
    let mut out = Vec::new();
    for &w in widths {
        out.push(
            y.rows()
                .into_iter()
                .map(|row| (0..w).find(|&k| row[start + k] > A::zero()))
                .collect(),
        );
        start += w;
    }
    out
}

/// Mean cross-entropy and accuracy of probabilities against labels.
pub(crate) fn loss_and_accuracy(proba: &Array2<f32>, labels: &[usize]) -> (f64, f64) {
    let mut loss = 0.0;
    let mut correct = 0;
    for ((row, &y), predicted) in proba
        .rows()
        .into_iter()
        .zip(labels)
        .zip(argmax_rows(proba.view()))
    {
        loss -= f64::from(row[y].max(1e-12)).ln();
        correct += usize::from(predicted == y);
    }
    let n = labels.len().max(1) as f64;
    (loss / n, correct as f64 / n)
}

/// Float types the network runs in: f32 for training, f64 for the gradient check.
pub(crate) trait Real:
    Float + LinalgScalar + ScalarOperand + std::ops::AddAssign + std::ops::MulAssign + std::fmt::Debug
{
}
impl<T> Real for T where
    T: Float
        + LinalgScalar
        + ScalarOperand
        + std::ops::AddAssign
        + std::ops::MulAssign
        + std::fmt::Debug
{
}

pub(crate) fn cast<A: Real>(v: f64) -> A {
    A::from(v).expect("representable constant")
}
