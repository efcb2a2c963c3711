//! `[self_training]`: pseudo-labelling (Yarowsky, 1995; Lee, 2013), with the semantics of scikit-learn's
//! `SelfTrainingClassifier`: K labelled rows per class are drawn from the training split and the rest of it
//! becomes the unlabelled pool (its labels are hidden from the head and used only to score the pseudo-labels).
//! Each round the headline head is trained on the labelled and pseudo-labelled rows, scored on the test
//! split, and labels the pool rows it predicts with probability ≥ `threshold`; rounds stop at `rounds` or when
//! nothing new clears the threshold.

use graft_heads::{Targets, argmax_rows};
use ndarray::Axis;
use serde::Deserialize;
use serde_json::json;
use toml::Spanned;

use super::{Check, Modality, RunData, TechniqueReport, accuracy, f4};
use crate::heads::train_head;
use crate::run::derive_seed;
use crate::{Diagnostic, PipelineError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSelfTraining {
    pub labelled: Option<Spanned<usize>>,
    pub threshold: Option<Spanned<f64>>,
    pub rounds: Option<Spanned<usize>>,
}

/// `[self_training]`, checked.
#[derive(Debug, Clone)]
pub(crate) struct SelfTrainingPlan {
    /// Labelled rows per class.
    pub labelled: usize,
    pub threshold: f64,
    pub rounds: usize,
}

impl SelfTrainingPlan {
    pub(crate) fn json(&self) -> serde_json::Value {
        json!({ "labelled": self.labelled, "threshold": self.threshold, "rounds": self.rounds })
    }
}

pub(crate) fn check(
    c: &Check<'_>,
    raw: Spanned<RawSelfTraining>,
    modality: Modality,
) -> Result<SelfTrainingPlan, Diagnostic> {
    c.single_label(modality, raw.span(), "self_training")?;
    let r = raw.into_inner();
    Ok(SelfTrainingPlan {
        labelled: c.positive(
            &r.labelled,
            10,
            "labelled",
            "labelled rows per class, e.g. 10; the rest of the training split is the unlabelled pool",
        )?,
        threshold: c.fraction(
            &r.threshold,
            0.9,
            "threshold",
            "the probability a prediction needs to become a pseudo-label, e.g. 0.9",
        )?,
        rounds: c.positive(&r.rounds, 5, "rounds", "e.g. 5 rounds of pseudo-labelling")?,
    })
}

pub(crate) fn run(p: &SelfTrainingPlan, d: &RunData<'_>) -> Result<TechniqueReport, PipelineError> {
    let clock = std::time::Instant::now();
    let n_classes = d.classes.len();
    let spec = d.headline.uncalibrated();
    let labelled = crate::curve::draw(
        d.train,
        d.labels,
        n_classes,
        p.labelled,
        derive_seed(d.plan.seed, "self-training labelled"),
    );
    let mut pool: Vec<usize> = d
        .train
        .iter()
        .copied()
        .filter(|r| labelled.binary_search(r).is_err())
        .collect();
    let y_test: Vec<usize> = d.test.iter().map(|&r| d.labels[r]).collect();
    let x_test = d.features.select(Axis(0), d.test);
    // (row, pseudo-label) pairs added so far.
    let mut pseudo: Vec<(usize, usize)> = Vec::new();
    let mut rounds = Vec::new();
    let mut table = Vec::new();
    for round in 0..=p.rounds {
        let rows: Vec<usize> = labelled
            .iter()
            .copied()
            .chain(pseudo.iter().map(|&(r, _)| r))
            .collect();
        let y: Vec<usize> = labelled
            .iter()
            .map(|&r| d.labels[r])
            .chain(pseudo.iter().map(|&(_, l)| l))
            .collect();
        let x = d.features.select(Axis(0), &rows);
        let (head, _) = train_head(&spec, None, x.view(), &Targets::new(&y, n_classes)?, None)?;
        let test_accuracy = accuracy(
            &argmax_rows(head.predict_proba(x_test.view())?.view()),
            &y_test,
        );
        let pseudo_accuracy = (!pseudo.is_empty()).then(|| {
            pseudo.iter().filter(|&&(r, l)| d.labels[r] == l).count() as f64 / pseudo.len() as f64
        });
        table.push(vec![
            round.to_string(),
            labelled.len().to_string(),
            pseudo.len().to_string(),
            pseudo_accuracy.map_or("–".to_owned(), f4),
            f4(test_accuracy),
        ]);
        rounds.push(json!({ "round": round, "labelled": labelled.len(), "pseudo_labelled": pseudo.len(),
                            "pseudo_label_accuracy": pseudo_accuracy, "test_accuracy": test_accuracy }));
        if round == p.rounds || pool.is_empty() {
            break;
        }
        let proba = head.predict_proba(d.features.select(Axis(0), &pool).view())?;
        let mut kept = Vec::new();
        for (i, best) in argmax_rows(proba.view()).into_iter().enumerate() {
            if f64::from(proba[[i, best]]) >= p.threshold {
                pseudo.push((pool[i], best));
            } else {
                kept.push(pool[i]);
            }
        }
        if kept.len() == pool.len() {
            break;
        }
        pool = kept;
    }
    // The ceiling: every training row with its true label.
    let y_all: Vec<usize> = d.train.iter().map(|&r| d.labels[r]).collect();
    let (all, _) = train_head(
        &spec,
        None,
        d.features.select(Axis(0), d.train).view(),
        &Targets::new(&y_all, n_classes)?,
        None,
    )?;
    let ceiling = accuracy(
        &argmax_rows(all.predict_proba(x_test.view())?.view()),
        &y_test,
    );
    let start = rounds[0]["test_accuracy"].as_f64().unwrap_or(f64::NAN);
    let last = rounds.last().expect("round 0 always runs");
    let end = last["test_accuracy"].as_f64().unwrap_or(f64::NAN);
    Ok(TechniqueReport {
        technique: "self_training".to_owned(),
        title: "Self-training (pseudo-labelling)".to_owned(),
        method: format!(
            "{} labelled rows per class drawn from the training split (seeded); its other {} rows form the \
             unlabelled pool. Each round trains {} on labelled + pseudo-labelled rows and adds the pool rows it \
             predicts with probability ≥ {} under their predicted class (Lee, 2013; scikit-learn's \
             SelfTrainingClassifier), for at most {} rounds. The pool's true labels only score the pseudo-labels.",
            p.labelled,
            d.train.len() - labelled.len(),
            spec.label(),
            p.threshold,
            p.rounds
        ),
        finding: format!(
            "test accuracy {start:.4} with {} labelled rows → {end:.4} after {} round(s) adding {} pseudo-labels \
             ({} correct); all {} training labels give {ceiling:.4}",
            labelled.len(),
            rounds.len() - 1,
            last["pseudo_labelled"],
            last["pseudo_label_accuracy"]
                .as_f64()
                .map_or("none".to_owned(), |a| format!("{:.1}%", 100.0 * a)),
            d.train.len()
        ),
        columns: vec![
            "round".to_owned(),
            "labelled".to_owned(),
            "pseudo-labelled".to_owned(),
            "pseudo-label accuracy".to_owned(),
            "test accuracy".to_owned(),
        ],
        rows: table,
        details: json!({ "rounds": rounds, "all_labels_accuracy": ceiling }),
        seconds: clock.elapsed().as_secs_f64(),
    })
}
