//! Seeded, stratified splitting.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::IngestError;

const SPLIT_NAMES: [&str; 3] = ["train", "validation", "test"];

/// Fractions of each class that go to train, validation and test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SplitRatios {
    parts: [f64; 3],
}

impl SplitRatios {
    /// Checks that every ratio is in `[0, 1]`, train is positive and they sum to one.
    pub fn new(train: f64, validation: f64, test: f64) -> Result<SplitRatios, IngestError> {
        let parts = [train, validation, test];
        for (name, value) in SPLIT_NAMES.iter().zip(parts) {
            if !(0.0..=1.0).contains(&value) {
                return Err(IngestError::InvalidRatios {
                    reason: format!("{name} = {value} is outside [0, 1]"),
                });
            }
        }
        if train <= 0.0 {
            return Err(IngestError::InvalidRatios {
                reason: "train must be greater than 0".to_owned(),
            });
        }
        let sum: f64 = parts.iter().sum();
        if (sum - 1.0).abs() > 1e-6 {
            return Err(IngestError::InvalidRatios {
                reason: format!("train + validation + test = {sum}, expected 1"),
            });
        }
        Ok(SplitRatios { parts })
    }

    /// Fraction for training.
    pub fn train(&self) -> f64 {
        self.parts[0]
    }

    /// Fraction for validation.
    pub fn validation(&self) -> f64 {
        self.parts[1]
    }

    /// Fraction for the final test.
    pub fn test(&self) -> f64 {
        self.parts[2]
    }
}

/// Row indices of each split, each list in ascending order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Split {
    /// Rows to train on.
    pub train: Vec<usize>,
    /// Rows for model selection and calibration.
    pub validation: Vec<usize>,
    /// Rows for the final, once-only evaluation.
    pub test: Vec<usize>,
}

/// Shares `n` items out by `weights` with the largest-remainder method, so each share is within one item of its
/// exact quota; ties go to the earlier share.
fn allocate(n: usize, weights: &[f64]) -> Vec<usize> {
    let total: f64 = weights.iter().sum();
    let quotas: Vec<f64> = weights.iter().map(|w| n as f64 * w / total).collect();
    let mut shares: Vec<usize> = quotas.iter().map(|q| q.floor() as usize).collect();
    let mut left = n - shares.iter().sum::<usize>();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|&a, &b| {
        let (fa, fb) = (quotas[a] - quotas[a].floor(), quotas[b] - quotas[b].floor());
        fb.total_cmp(&fa).then(a.cmp(&b))
    });
    for i in order {
        if left == 0 {
            break;
        }
        if weights[i] > 0.0 {
            shares[i] += 1;
            left -= 1;
        }
    }
    shares
}

/// Splits rows so that each class is shared out by `ratios` (within one row of its exact quota per split), with
/// a seeded shuffle inside each class.
///
/// Fails when a class is too small for every split with a positive ratio to receive at least one of its rows.
pub fn stratified_split(
    labels: &[usize],
    classes: &[String],
    ratios: SplitRatios,
    seed: u64,
) -> Result<Split, IngestError> {
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes.len()];
    for (row, &label) in labels.iter().enumerate() {
        by_class[label].push(row);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut parts: [Vec<usize>; 3] = Default::default();
    for (class, mut rows) in by_class.into_iter().enumerate() {
        let shares = allocate(rows.len(), &ratios.parts);
        if let Some(split) = (0..3).find(|&s| ratios.parts[s] > 0.0 && shares[s] == 0) {
            let needed = (rows.len()..)
                .find(|&n| {
                    let s = allocate(n, &ratios.parts);
                    (0..3).all(|i| ratios.parts[i] == 0.0 || s[i] > 0)
                })
                .expect("some size gives every split a row");
            return Err(IngestError::ClassTooSmall {
                class: classes[class].clone(),
                rows: rows.len(),
                split: SPLIT_NAMES[split],
                needed,
            });
        }
        rows.shuffle(&mut rng);
        let mut rest = rows.as_slice();
        for (part, share) in parts.iter_mut().zip(shares) {
            let (take, tail) = rest.split_at(share);
            part.extend_from_slice(take);
            rest = tail;
        }
    }
    let [mut train, mut validation, mut test] = parts;
    train.sort_unstable();
    validation.sort_unstable();
    test.sort_unstable();
    Ok(Split {
        train,
        validation,
        test,
    })
}

/// One round of k-fold cross-validation: the rows to train on and the held-out rows, each ascending.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fold {
    /// Rows to train on (every other fold).
    pub train: Vec<usize>,
    /// The held-out fold.
    pub held_out: Vec<usize>,
}

fn folds_from_assignment(fold_of: &[usize], k: usize) -> Vec<Fold> {
    (0..k)
        .map(|f| Fold {
            train: (0..fold_of.len()).filter(|&r| fold_of[r] != f).collect(),
            held_out: (0..fold_of.len()).filter(|&r| fold_of[r] == f).collect(),
        })
        .collect()
}

fn check_folds(k: usize, rows: usize) -> Result<(), IngestError> {
    if k < 2 || k > rows {
        return Err(IngestError::InvalidRatios {
            reason: format!("k-fold needs 2 ≤ k ≤ rows ({rows}), got k = {k}"),
        });
    }
    Ok(())
}

/// Stratified k-fold (as scikit-learn's `StratifiedKFold(shuffle=True)`): each class's rows, shuffled with
/// the seed, are dealt round-robin over the folds, so every fold holds each class's share within one row.
/// A class with fewer rows than `k` leaves some folds without it (as scikit-learn, which warns).
///
/// ```
/// let labels = [0, 0, 0, 1, 1, 1, 0, 1, 0, 1];
/// let folds = graft_ingest::stratified_kfold(&labels, 2, 5, 7).unwrap();
/// assert_eq!(folds.len(), 5);
/// for f in &folds {
///     assert_eq!(f.held_out.len(), 2);
///     assert_eq!(f.held_out.iter().filter(|&&r| labels[r] == 1).count(), 1);
/// }
/// ```
pub fn stratified_kfold(
    labels: &[usize],
    n_classes: usize,
    k: usize,
    seed: u64,
) -> Result<Vec<Fold>, IngestError> {
    check_folds(k, labels.len())?;
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); n_classes];
    for (row, &label) in labels.iter().enumerate() {
        by_class[label].push(row);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut fold_of = vec![0usize; labels.len()];
    // Continue the round-robin across classes so fold sizes also stay within one row of each other.
    let mut next = 0;
    for mut rows in by_class {
        rows.shuffle(&mut rng);
        for row in rows {
            fold_of[row] = next % k;
            next += 1;
        }
    }
    Ok(folds_from_assignment(&fold_of, k))
}

/// Group k-fold: rows of one group (a speaker, a document, a patient) are never split between folds; groups
/// go, largest first, to the fold with the fewest rows so far (scikit-learn's `GroupKFold`), ties to the
/// lower fold.
pub fn group_kfold(groups: &[usize], k: usize) -> Result<Vec<Fold>, IngestError> {
    let n_groups = groups.iter().max().map_or(0, |&g| g + 1);
    let mut sizes = vec![0usize; n_groups];
    for &g in groups {
        sizes[g] += 1;
    }
    let present = sizes.iter().filter(|&&s| s > 0).count();
    if present < k {
        return Err(IngestError::InvalidRatios {
            reason: format!("group k-fold needs at least k = {k} groups, found {present}"),
        });
    }
    let mut order: Vec<usize> = (0..n_groups).filter(|&g| sizes[g] > 0).collect();
    order.sort_by(|&a, &b| sizes[b].cmp(&sizes[a]).then(a.cmp(&b)));
    let mut fold_rows = vec![0usize; k];
    let mut fold_of_group = vec![0usize; n_groups];
    for g in order {
        let f = (0..k).min_by_key(|&f| (fold_rows[f], f)).expect("k ≥ 1");
        fold_of_group[g] = f;
        fold_rows[f] += sizes[g];
    }
    let fold_of: Vec<usize> = groups.iter().map(|&g| fold_of_group[g]).collect();
    Ok(folds_from_assignment(&fold_of, k))
}

/// Picks `n` rows (all rows when there are fewer) keeping each class's share, seeded; indices ascending.
pub fn stratified_subsample(labels: &[usize], n_classes: usize, n: usize, seed: u64) -> Vec<usize> {
    if n >= labels.len() {
        return (0..labels.len()).collect();
    }
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); n_classes];
    for (row, &label) in labels.iter().enumerate() {
        by_class[label].push(row);
    }
    let weights: Vec<f64> = by_class.iter().map(|rows| rows.len() as f64).collect();
    let shares = allocate(n, &weights);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut picked = Vec::with_capacity(n);
    for (mut rows, share) in by_class.into_iter().zip(shares) {
        rows.shuffle(&mut rng);
        picked.extend_from_slice(&rows[..share]);
    }
    picked.sort_unstable();
    picked
}

#[cfg(test)]
mod kfold_tests {
    use super::*;

    #[test]
    fn stratified_folds_partition_the_rows_and_keep_class_shares() {
        let labels: Vec<usize> = (0..103).map(|i| usize::from(i % 3 == 0)).collect();
        let folds = stratified_kfold(&labels, 2, 5, 11).unwrap();
        let mut seen = vec![0; labels.len()];
        for f in &folds {
            for &r in &f.held_out {
                seen[r] += 1;
            }
            assert_eq!(f.train.len() + f.held_out.len(), labels.len());
            let positives = f.held_out.iter().filter(|&&r| labels[r] == 1).count();
            assert!((6..=7).contains(&positives), "{positives}");
            assert!((20..=21).contains(&f.held_out.len()));
        }
        assert!(
            seen.iter().all(|&c| c == 1),
            "every row held out exactly once"
        );
        assert_eq!(
            folds,
            stratified_kfold(&labels, 2, 5, 11).unwrap(),
            "seeded"
        );
        assert_ne!(folds, stratified_kfold(&labels, 2, 5, 12).unwrap());
        assert!(stratified_kfold(&labels, 2, 1, 0).is_err());
    }

    #[test]
    fn group_folds_never_split_a_group() {
        let groups: Vec<usize> = (0..40).map(|i| i / 4).collect(); // 10 groups of 4
        let folds = group_kfold(&groups, 3).unwrap();
        for f in &folds {
            for &r in &f.held_out {
                assert!(f.train.iter().all(|&t| groups[t] != groups[r]));
            }
        }
        let sizes: Vec<usize> = folds.iter().map(|f| f.held_out.len()).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 40);
        assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 4);
        assert!(group_kfold(&groups, 11).is_err());
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("c{i}")).collect()
    }

    #[test]
    fn allocation_is_within_one_of_the_quota() {
        assert_eq!(allocate(10, &[0.8, 0.1, 0.1]), [8, 1, 1]);
        assert_eq!(allocate(9, &[0.8, 0.1, 0.1]), [7, 1, 1]);
        assert_eq!(allocate(5, &[0.8, 0.1, 0.1]), [4, 1, 0]);
        assert_eq!(allocate(7, &[1.0, 0.0, 0.0]), [7, 0, 0]);
    }

    #[test]
    fn class_too_small_names_the_class_and_what_it_needs() {
        let labels = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1];
        let err = stratified_split(
            &labels,
            &["big".into(), "rare".into()],
            SplitRatios::new(0.8, 0.1, 0.1).unwrap(),
            1,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "class `rare` has 5 row(s), too few for every split to get one (test would get none); it needs at least 7"
        );
    }

    #[test]
    fn ratios_are_checked() {
        let err = SplitRatios::new(0.8, 0.1, 0.2).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid split ratios: train + validation + test = 1.1, expected 1"
        );
        let err = SplitRatios::new(0.0, 0.5, 0.5).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid split ratios: train must be greater than 0"
        );
        let err = SplitRatios::new(1.2, -0.1, -0.1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid split ratios: train = 1.2 is outside [0, 1]"
        );
    }

    #[test]
    fn same_seed_same_split_other_seed_other_split() {
        let labels: Vec<usize> = (0..200).map(|i| i % 3).collect();
        let ratios = SplitRatios::new(0.8, 0.1, 0.1).unwrap();
        let a = stratified_split(&labels, &names(3), ratios, 42).unwrap();
        let b = stratified_split(&labels, &names(3), ratios, 42).unwrap();
        let c = stratified_split(&labels, &names(3), ratios, 43).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn subsample_keeps_class_shares() {
        let labels: Vec<usize> = (0..1000).map(|i| usize::from(i % 4 == 0)).collect();
        let picked = stratified_subsample(&labels, 2, 100, 7);
        assert_eq!(picked.len(), 100);
        assert_eq!(picked.iter().filter(|&&r| labels[r] == 1).count(), 25);
        assert!(picked.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(stratified_subsample(&labels, 2, 5000, 7).len(), 1000);
    }

    proptest! {
        #[test]
        fn split_is_a_partition_that_keeps_class_proportions(
            counts in prop::collection::vec(10usize..60, 2..6),
            train in 50u32..90,
            validation in 0u32..10,
            seed in any::<u64>(),
        ) {
            let test = 100 - train - validation;
            let ratios = SplitRatios::new(f64::from(train) / 100.0, f64::from(validation) / 100.0, f64::from(test) / 100.0).unwrap();
            let labels: Vec<usize> = counts.iter().enumerate().flat_map(|(c, &n)| std::iter::repeat_n(c, n)).collect();
            let split = match stratified_split(&labels, &names(counts.len()), ratios, seed) {
                Ok(split) => split,
                Err(IngestError::ClassTooSmall { .. }) => return Ok(()),
                Err(e) => panic!("{e}"),
            };
            // Every row in exactly one split.
            let mut seen = vec![0u8; labels.len()];
            for part in [&split.train, &split.validation, &split.test] {
                for &row in part.iter() {
                    seen[row] += 1;
                }
            }
            prop_assert!(seen.iter().all(|&s| s == 1));
            // Each class's share of each split is within one row of its exact quota; train has every class.
            for (class, &n) in counts.iter().enumerate() {
                for (part, ratio) in [&split.train, &split.validation, &split.test].into_iter().zip([ratios.train(), ratios.validation(), ratios.test()]) {
                    let got = part.iter().filter(|&&r| labels[r] == class).count() as f64;
                    prop_assert!((got - n as f64 * ratio).abs() < 1.0 + 1e-9, "class {class}: {got} vs {}", n as f64 * ratio);
                }
                prop_assert!(split.train.iter().any(|&r| labels[r] == class));
            }
        }
    }
}
