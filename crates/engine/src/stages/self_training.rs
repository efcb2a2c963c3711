//! `[self_training]`: pseudo-labelling (Yarowsky, 1995; Lee, 2013), with the semantics of scikit-learn's
//! `SelfTrainingClassifier`: K labelled rows per class are drawn from the training split and the rest of it
//! becomes the unlabelled pool (its labels are hidden from the head and used only to score the pseudo-labels).
//! Each round the headline head is trained on the labelled and pseudo-labelled rows, scored on the test
//! split, and labels the pool rows it predicts with probability ≥ `threshold`; rounds stop at `rounds` or when
//! nothing new clears the threshold.

use graft_heads::{Targets, argmax_rows};
use ndarray::Axis;
use serde_json::json;

use super::{RunData, accuracy, f4};
use crate::PipelineError;
use crate::heads::train_head;
use graft_config::techniques::SelfTrainingPlan;
use graft_report::TechniqueReport;
use graft_stdx::derive_seed;

pub(crate) fn run(p: &SelfTrainingPlan, d: &RunData<'_>) -> Result<TechniqueReport, PipelineError> {
    let clock = std::time::Instant::now();
    let n_classes = d.classes.len();
    let spec = d.headline.uncalibrated();
    let labelled = crate::curve::draw(
        d.train,
        d.labels,
        n_classes,
        p.labelled,
        derive_seed(d.seed, "self-training labelled"),
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
        curve: Vec::new(),
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
