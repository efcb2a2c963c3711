//! Evidence of transfer: a learning curve. For K training examples per class (seeded draws from the
//! training split, several per K), the headline head on the frozen backbone's features and a from-scratch
//! baseline on the same rows — TF-IDF + logistic regression for text, logistic regression on raw pixels for
//! images — are both scored on the whole test split.

use graft_heads::{Fit, Logistic, ParamGuard, Predict, SparseRows, Targets, argmax_rows};
use ndarray::{Array2, ArrayView2, Axis};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::PipelineError;
use graft_config::HeadSpec;
use graft_report::{BaselineNeeds, DataEfficiency, LearningCurve, LearningPoint, Spread};

use crate::heads::train_head;
use graft_stdx::derive_seed;

/// Vocabulary size of the TF-IDF baseline.
pub(crate) const TFIDF_FEATURES: usize = 5000;

/// The inputs a from-scratch baseline learns from.
pub(crate) enum BaselineInputs<'a> {
    /// Texts: TF-IDF fitted on each draw's rows.
    Texts(&'a [String]),
    /// Raw pixels, one row per image, scaled to [0, 1].
    Pixels(&'a Array2<f32>),
}

fn accuracy(predicted: &[usize], truth: &[usize]) -> f64 {
    predicted.iter().zip(truth).filter(|(p, t)| p == t).count() as f64 / truth.len() as f64
}

/// Draws up to `k` rows per class from `train` (seeded).
pub(crate) fn draw(
    train: &[usize],
    labels: &[usize],
    n_classes: usize,
    k: usize,
    seed: u64,
) -> Vec<usize> {
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); n_classes];
    for &r in train {
        by_class[labels[r]].push(r);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut picked = Vec::new();
    for mut rows in by_class {
        rows.shuffle(&mut rng);
        picked.extend(rows.into_iter().take(k));
    }
    picked.sort_unstable();
    picked
}

/// Everything the curve reads from the run.
pub(crate) struct CurveData<'a> {
    pub features: ArrayView2<'a, f32>,
    pub labels: &'a [usize],
    pub n_classes: usize,
    pub train: &'a [usize],
    pub test: &'a [usize],
    pub baseline: BaselineInputs<'a>,
    /// Confidence level of the intervals over the draws.
    pub level: f64,
}

/// Runs the curve; points and draws in parallel, each seeded by (seed, K, draw).
pub(crate) fn learning_curve(
    head: &HeadSpec,
    shots: &[usize],
    repeats: usize,
    seed: u64,
    d: &CurveData<'_>,
) -> Result<LearningCurve, PipelineError> {
    let clock = std::time::Instant::now();
    let spec = head.uncalibrated();
    let y_test: Vec<usize> = d.test.iter().map(|&r| d.labels[r]).collect();
    let x_test = d.features.select(Axis(0), d.test);
    // (K, draw); K = None for the whole training split (one draw: nothing to resample).
    let mut jobs: Vec<(Option<usize>, usize)> = Vec::new();
    for &k in shots {
        jobs.extend((0..repeats).map(|r| (Some(k), r)));
    }
    jobs.push((None, 0));
    // Every text tokenized once; each draw fits its own vocabulary from the token ids.
    let tokenized = match &d.baseline {
        BaselineInputs::Texts(texts) => Some(graft_ingest::TokenizedTexts::new(texts)),
        BaselineInputs::Pixels(_) => None,
    };
    let results: Vec<(usize, f64, f64)> = jobs
        .par_iter()
        .map(|&(k, r)| -> Result<(usize, f64, f64), PipelineError> {
            let rows = match k {
                Some(k) => draw(
                    d.train,
                    d.labels,
                    d.n_classes,
                    k,
                    derive_seed(seed, &format!("learning-curve {k} {r}")),
                ),
                None => d.train.to_vec(),
            };
            let y: Vec<usize> = rows.iter().map(|&r| d.labels[r]).collect();
            let targets = Targets::new(&y, d.n_classes)?;
            let x = d.features.select(Axis(0), &rows);
            let (transfer, _) = train_head(&spec, None, x.view(), &targets, None)?;
            let transfer_accuracy = accuracy(
                &argmax_rows(transfer.predict_proba(x_test.view())?.view()),
                &y_test,
            );
            let baseline = Logistic::params().c(1.0).max_iter(1000).tol(1e-4);
            let baseline_accuracy = match &d.baseline {
                BaselineInputs::Texts(_) => {
                    let tokenized = tokenized.as_ref().expect("texts are tokenized once");
                    let vocabulary = tokenized.fit(&rows, TFIDF_FEATURES);
                    let sparse = |rows: &[usize]| {
                        let t = tokenized.transform_sparse(&vocabulary, rows);
                        SparseRows::new(t.indptr, t.indices, t.values, t.columns)
                    };
                    // Trained and scored on sparse rows: a sentence holds a dozen of the 5,000 terms.
                    let model = baseline.check()?.fit_sparse(&sparse(&rows)?, &targets)?;
                    accuracy(&model.predict_sparse(&sparse(d.test)?)?, &y_test)
                }
                BaselineInputs::Pixels(pixels) => {
                    let model = baseline.fit(pixels.select(Axis(0), &rows).view(), &targets)?;
                    accuracy(
                        &model.predict(pixels.select(Axis(0), d.test).view())?,
                        &y_test,
                    )
                }
            };
            Ok((rows.len(), transfer_accuracy, baseline_accuracy))
        })
        .collect::<Result<_, _>>()?;
    let mut points = Vec::new();
    let mut at = 0;
    for k in shots.iter().map(|&k| Some(k)).chain([None]) {
        let n = if k.is_some() { repeats } else { 1 };
        let slice = &results[at..at + n];
        at += n;
        points.push(LearningPoint {
            tuned: None,
            per_class: k,
            rows: slice[0].0,
            transfer: Spread::at_level(slice.iter().map(|r| r.1).collect(), d.level),
            baseline: Spread::at_level(slice.iter().map(|r| r.2).collect(), d.level),
        });
    }
    let efficiency = points
        .iter()
        .filter_map(|p| p.per_class.map(|k| (k, p.transfer.mean)))
        .map(|(k, transfer)| DataEfficiency {
            per_class: k,
            transfer,
            baseline_needs: match points.iter().find(|q| q.baseline.mean >= transfer) {
                Some(q) => q
                    .per_class
                    .map_or(BaselineNeeds::WholeTrainingSplit, BaselineNeeds::PerClass),
                None => BaselineNeeds::Never,
            },
        })
        .collect();
    Ok(LearningCurve {
        tuned: None,
        transfer: format!("{} on the frozen features", spec.label()),
        baseline: match d.baseline {
            BaselineInputs::Texts(_) => format!(
                "TF-IDF ({TFIDF_FEATURES} most frequent terms of the drawn rows) + logistic regression (C = 1)"
            ),
            BaselineInputs::Pixels(_) => "logistic regression (C = 1) on raw pixels".to_owned(),
        },
        repeats,
        points,
        efficiency,
        seconds: clock.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_take_k_per_class_and_are_seeded() {
        let labels: Vec<usize> = (0..30).map(|i| i % 3).collect();
        let train: Vec<usize> = (0..24).collect();
        let a = draw(&train, &labels, 3, 2, 9);
        assert_eq!(a.len(), 6);
        for c in 0..3 {
            assert_eq!(a.iter().filter(|&&r| labels[r] == c).count(), 2);
        }
        assert!(a.iter().all(|r| train.contains(r)));
        assert_eq!(a, draw(&train, &labels, 3, 2, 9));
        assert_eq!(
            draw(&train, &labels, 3, 100, 9).len(),
            24,
            "small classes give what they have"
        );
    }

    /// Student's t quantiles pinned to scipy.stats.t.ppf: (0.975, 2) = 4.302652729911275 and
    /// (0.95, 2) = 2.919985580355516; intervals of accuracies stay inside [0, 1].
    #[test]
    fn spread_uses_students_t_at_the_level_and_stays_in_0_1() {
        let s = Spread::of(vec![0.6, 0.7, 0.8]);
        assert!((s.mean - 0.7).abs() < 1e-12);
        assert!((s.std - 0.1).abs() < 1e-12);
        assert!((s.upper - s.mean - 4.302652729911275 * 0.1 / 3f64.sqrt()).abs() < 1e-9);
        let s90 = Spread::at_level(vec![0.6, 0.7, 0.8], 0.90);
        assert!((s90.upper - s90.mean - 2.919985580355516 * 0.1 / 3f64.sqrt()).abs() < 1e-9);
        assert_eq!(s90.level, 0.90);
        assert_eq!(Spread::of(vec![0.5]).lower, 0.5);
        // An image run's draws once gave [-0.30, 1.13]: clipped, it is [0, 1].
        let wide = Spread::of(vec![0.1, 0.9, 0.5]);
        assert_eq!((wide.lower, wide.upper), (0.0, 1.0));
    }
}
