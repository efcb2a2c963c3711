//! Which rows share an inference call.
//!
//! Rows come in length order (longest first). Cutting that order every `batch_size` rows pads each batch to
//! its first row; cutting where the length changes gives batches of exactly one length, which need no padding
//! and ran 6–7% faster on MR with MiniLM-L6 (benches/README.md, "A graph written for speed"), but leaves small
//! batches at the end of each length. [`plan_batches`] picks the cuts that minimise padded tokens plus a
//! small fixed cost per call, by dynamic programming over the order: exact batches where a length has many
//! rows, padded ones where lengths are sparse (long documents).

use std::ops::Range;

/// What one inference call costs beyond its tokens, in padded tokens: enough that a length with a handful
/// of rows joins its neighbours instead of making calls of one or two rows.
pub const CALL_COST_TOKENS: usize = 16;

/// Cuts rows `0..lengths.len()`, taken in the given order, into consecutive batches of at most `batch_size`
/// rows (`batch_size` 0 counts as 1) that minimise `Σ rows × longest + CALL_COST_TOKENS` over the batches.
/// Ties go to fewer, larger batches. The result covers every row once, in order; it depends only on
/// `lengths` and `batch_size`.
///
/// ```
/// use graft_backbone::plan_batches;
/// // Three rows of 20 tokens, then three of 3: the short rows do not ride with the long ones.
/// assert_eq!(plan_batches(&[20, 20, 20, 3, 3, 3], 6), vec![0..3, 3..6]);
/// // Lengths that all differ: padding is cheaper than one call per row.
/// assert_eq!(plan_batches(&[9, 8, 7, 6], 4), vec![0..4]);
/// ```
pub fn plan_batches(lengths: &[usize], batch_size: usize) -> Vec<Range<usize>> {
    let n = lengths.len();
    let batch_size = batch_size.max(1);
    // best[j]: the least cost of rows 0..j; start[j]: where the last batch of that plan starts.
    let mut best = vec![0usize; n + 1];
    let mut start = vec![0usize; n + 1];
    for j in 1..=n {
        let mut cost = usize::MAX;
        let mut longest = 0;
        // Batches i..j from the shortest (i = j - 1) to the largest; `<=` keeps the largest of equal cost.
        for i in (j.saturating_sub(batch_size)..j).rev() {
            longest = longest.max(lengths[i]);
            let c = best[i]
                .saturating_add((j - i).saturating_mul(longest))
                .saturating_add(CALL_COST_TOKENS);
            if c <= cost {
                cost = c;
                start[j] = i;
            }
        }
        best[j] = cost;
    }
    let mut batches = Vec::new();
    let mut j = n;
    while j > 0 {
        batches.push(start[j]..j);
        j = start[j];
    }
    batches.reverse();
    batches
}

/// A run of consecutive batches of a plan as the span of positions it covers and its batches relative to
/// that span's start: what [`TextBackbone::embed_batches`](crate::TextBackbone::embed_batches) takes for
/// `&order[span]`, to run a long plan a few batches at a time.
///
/// ```
/// assert_eq!(graft_backbone::rebase(&[4..6, 6..9]), (4..9, vec![0..2, 2..5]));
/// ```
pub fn rebase(group: &[Range<usize>]) -> (Range<usize>, Vec<Range<usize>>) {
    let start = group.first().map_or(0, |b| b.start);
    let end = group.last().map_or(start, |b| b.end);
    let batches = group
        .iter()
        .map(|b| b.start - start..b.end - start)
        .collect();
    (start..end, batches)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The plan's cost, as [`plan_batches`] counts it.
    fn cost(lengths: &[usize], plan: &[Range<usize>]) -> usize {
        plan.iter()
            .map(|b| b.len() * lengths[b.clone()].iter().max().unwrap() + CALL_COST_TOKENS)
            .sum()
    }

    #[test]
    fn many_rows_of_one_length_make_full_exact_batches() {
        let mut lengths = vec![20; 130];
        lengths.extend([19; 64]);
        let plan = plan_batches(&lengths, 64);
        // Which batch of the 20s holds the two left over is a tie; every batch is of one length.
        assert_eq!(plan.len(), 4, "{plan:?}");
        assert_eq!(plan[3], 130..194);
        for b in &plan {
            assert!(
                lengths[b.clone()].iter().all(|&l| l == lengths[b.start]),
                "{plan:?}"
            );
        }
    }

    #[test]
    fn nothing_to_plan_and_batch_size_zero() {
        assert!(plan_batches(&[], 8).is_empty());
        assert_eq!(plan_batches(&[5, 4], 0), vec![0..1, 1..2]);
    }

    /// Every split of a short order into batches, as lists of batch lengths.
    fn all_plans(n: usize, batch_size: usize) -> Vec<Vec<Range<usize>>> {
        if n == 0 {
            return vec![vec![]];
        }
        let mut out = Vec::new();
        for last in 1..=batch_size.min(n) {
            for mut p in all_plans(n - last, batch_size) {
                p.push(n - last..n);
                out.push(p);
            }
        }
        out
    }

    proptest! {
        #[test]
        fn the_plan_covers_every_row_in_order_and_costs_the_least(
            mut lengths in prop::collection::vec(1usize..40, 0..9),
            batch_size in 1usize..5,
        ) {
            lengths.sort_unstable_by(|a, b| b.cmp(a));
            let plan = plan_batches(&lengths, batch_size);
            let mut next = 0;
            for b in &plan {
                prop_assert_eq!(b.start, next);
                prop_assert!(!b.is_empty() && b.len() <= batch_size);
                next = b.end;
            }
            prop_assert_eq!(next, lengths.len());
            let least = all_plans(lengths.len(), batch_size)
                .iter()
                .map(|p| cost(&lengths, p))
                .min()
                .unwrap();
            prop_assert_eq!(cost(&lengths, &plan), least);
        }
    }
}
