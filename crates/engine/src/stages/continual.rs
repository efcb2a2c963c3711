//! `[continual]`: class-incremental learning. The classes arrive in stages (a fixed number per stage, in
//! class order or, with `order = "seeded"`, a seeded random order as in iCaRL's protocol); after each stage every learner is scored on the test rows of all classes seen so far, choosing
//! among those classes only.
//!
//! Learners: the prototype head, which adds each new class's mean and never touches old ones
//! (nearest-class-mean, as in iCaRL's classifier, Rebuffi et al., 2017); an MLP fine-tuned on each stage's
//! rows alone (the naive baseline that forgets); the same MLP with rehearsal — each stage's rows plus a
//! bounded, class-balanced exemplar memory drawn at random from earlier stages (experience replay,
//! Chaudhry et al., 2019, "On tiny episodic memories in continual learning"); and, as the ceiling, the MLP
//! trained on all classes at once. Average forgetting follows Chaudhry et al. (2018): for each earlier
//! stage's classes, the best accuracy they ever had minus their accuracy after the last stage.

use graft_heads::{Fit, FittedMlp, FittedPrototype, Metric, Predict, Prototype, Targets};
use ndarray::{Array2, ArrayView2, Axis};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use super::{RunData, accuracy, f4};
use crate::PipelineError;
use graft_config::techniques::ContinualPlan;
use graft_report::TechniqueReport;
use graft_stdx::derive_seed;

/// Predictions among the seen classes only (dataset class indices).
fn predict_seen(proba: ArrayView2<'_, f32>, seen: &[usize]) -> Vec<usize> {
    graft_heads::argmax_rows(proba.select(Axis(1), seen).view())
        .into_iter()
        .map(|i| seen[i])
        .collect()
}

/// Learner `l`'s accuracy on every seen stage's test rows, weighted by rows, and on each stage alone.
fn seen_accuracy_of(
    l: usize,
    learners: (
        Option<&FittedPrototype>,
        Option<&FittedMlp>,
        Option<&FittedMlp>,
    ),
    test_by_stage: &[(Array2<f32>, Vec<usize>)],
    order: &[usize],
    seen: &[usize],
) -> Result<(f64, Vec<f64>), PipelineError> {
    let (mut right, mut total) = (0.0, 0usize);
    let mut on_each = Vec::with_capacity(test_by_stage.len());
    for (xt, yt) in test_by_stage {
        let a = accuracy(
            &predict_seen_classes(l, xt.view(), learners, order, seen)?,
            yt,
        );
        on_each.push(a);
        right += a * yt.len() as f64;
        total += yt.len();
    }
    Ok((right / total.max(1) as f64, on_each))
}

/// The table's last rows: average incremental accuracy and average forgetting per learner.
fn summary_rows(average: &[f64], forgetting: &[f64]) -> Vec<Vec<String>> {
    [
        ("average incremental accuracy", average),
        ("average forgetting", forgetting),
    ]
    .into_iter()
    .map(|(name, values)| {
        let mut row = vec![name.to_owned()];
        row.extend(values.iter().map(|&v| f4(v)));
        row.push("–".to_owned());
        row
    })
    .collect()
}

pub(crate) fn run(p: &ContinualPlan, d: &RunData<'_>) -> Result<TechniqueReport, PipelineError> {
    let clock = std::time::Instant::now();
    let n_classes = d.classes.len();
    // The arrival order of the classes, then stages of `classes_per_stage` of them.
    let order = class_order(p, d)?;
    let stages: Vec<&[usize]> = order.chunks(p.classes_per_stage).collect();
    let mut stage_of_class = vec![0; n_classes];
    for (s, classes) in stages.iter().enumerate() {
        for &c in *classes {
            stage_of_class[c] = s;
        }
    }
    let stage_of = |class: usize| stage_of_class[class];
    let rows_of = |pool: &[usize], stage: usize| -> Vec<usize> {
        pool.iter()
            .copied()
            .filter(|&r| stage_of(d.labels[r]) == stage)
            .collect()
    };
    let settings = super::mlp_settings(d, p.epochs, "continual mlp")?;
    let select = |rows: &[usize]| -> (Array2<f32>, Vec<usize>) {
        (
            d.features.select(Axis(0), rows),
            rows.iter().map(|&r| d.labels[r]).collect(),
        )
    };
    let test_by_stage: Vec<(Array2<f32>, Vec<usize>)> = (0..stages.len())
        .map(|s| select(&rows_of(d.test, s)))
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(d.seed, "continual memory"));
    let mut prototype: Option<graft_heads::FittedPrototype> = None;
    let mut naive: Option<FittedMlp> = None;
    let mut rehearsal: Option<FittedMlp> = None;
    let mut memory: Vec<usize> = Vec::new();
    // accuracy[learner][after stage][on stage's classes]
    let mut per_stage = vec![vec![vec![f64::NAN; stages.len()]; stages.len()]; 3];
    let mut seen_accuracy = vec![Vec::new(); 3];
    let mut table = Vec::new();
    for (s, classes) in stages.iter().enumerate() {
        let stage_rows = rows_of(d.train, s);
        let (x, y) = select(&stage_rows);
        // Prototype head: fitted on the first stage's classes, then one new mean per class, old ones
        // untouched; its class i is order[i].
        update_prototype(&mut prototype, d, classes, &stage_rows, x.view(), &y)?;
        let targets = Targets::new(&y, n_classes)?;
        naive = Some(match &naive {
            None => settings.fit(x.view(), &targets)?,
            Some(start) => settings.fit_from(x.view(), &targets, start)?,
        });
        // Rehearsal: this stage's rows plus the memory, then the memory is rebalanced over the seen classes.
        let replay: Vec<usize> = stage_rows.iter().chain(&memory).copied().collect();
        let (xr, yr) = select(&replay);
        let replay_targets = Targets::new(&yr, n_classes)?;
        rehearsal = Some(match &rehearsal {
            None => settings.fit(xr.view(), &replay_targets)?,
            Some(start) => settings.fit_from(xr.view(), &replay_targets, start)?,
        });
        let seen: Vec<usize> = stages[..=s].concat();
        memory = rebalance(
            &memory,
            &stage_rows,
            &seen,
            s,
            &stage_of_class,
            p.memory,
            d.labels,
            &mut rng,
        );

        let mut row = vec![stage_label(s, classes, d.classes)];
        for l in 0..3 {
            let learners = (prototype.as_ref(), naive.as_ref(), rehearsal.as_ref());
            let (a, on_each) = seen_accuracy_of(l, learners, &test_by_stage[..=s], &order, &seen)?;
            per_stage[l][s][..=s].copy_from_slice(&on_each);
            seen_accuracy[l].push(a);
            row.push(f4(a));
        }
        row.push(memory.len().to_string());
        table.push(row);
    }
    let last = stages.len() - 1;
    let forgetting: Vec<f64> = per_stage.iter().map(|acc| forgetting(acc, last)).collect();
    let average: Vec<f64> = seen_accuracy
        .iter()
        .map(|a| a.iter().sum::<f64>() / a.len() as f64)
        .collect();
    table.extend(summary_rows(&average, &forgetting));
    // The ceiling: all classes at once, same MLP settings.
    let (x_all, y_all) = select(d.train);
    let joint = settings.fit(x_all.view(), &Targets::new(&y_all, n_classes)?)?;
    let y_test: Vec<usize> = d.test.iter().map(|&r| d.labels[r]).collect();
    let joint_accuracy = accuracy(
        &joint.predict(d.features.select(Axis(0), d.test).view())?,
        &y_test,
    );
    let learners = ["prototype", "mlp_fine_tune", "mlp_rehearsal"];
    let finding = finding(p, &seen_accuracy, &forgetting, joint_accuracy);
    Ok(TechniqueReport {
        curve: Vec::new(),
        technique: "continual".to_owned(),
        title: "Continual (class-incremental) learning".to_owned(),
        method: method(p, stages.len()),
        finding,
        columns: vec![
            "after stage (new classes)".to_owned(),
            "prototype".to_owned(),
            "MLP fine-tuned".to_owned(),
            "MLP + rehearsal".to_owned(),
            "memory rows".to_owned(),
        ],
        rows: table,
        details: json!({
            "stages": stages
                .iter()
                .map(|r| r.iter().map(|&c| d.classes[c].clone()).collect::<Vec<_>>())
                .collect::<Vec<_>>(),
            "learners": learners,
            "seen_accuracy": seen_accuracy,
            "accuracy_matrix": per_stage,
            "average_incremental_accuracy": average,
            "average_forgetting": forgetting,
            "joint_accuracy": joint_accuracy,
            "memory": p.memory,
        }),
        seconds: clock.elapsed().as_secs_f64(),
    })
}

/// The classes in arrival order (seeded when asked), refusing a plan with one stage or a memory too small
/// for one exemplar per class.
fn class_order(p: &ContinualPlan, d: &RunData<'_>) -> Result<Vec<usize>, PipelineError> {
    let n_classes = d.classes.len();
    let mut order: Vec<usize> = (0..n_classes).collect();
    if p.seeded_order {
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(derive_seed(
            d.seed,
            "continual class order",
        )));
    }
    if n_classes.div_ceil(p.classes_per_stage) < 2 {
        return Err(d
            .diagnostic(
                &Some(p.span.clone()),
                format!(
                    "`classes_per_stage = {}` puts all {n_classes} classes in one stage",
                    p.classes_per_stage
                ),
            )
            .with_hint(format!(
                "use at most {} so that classes arrive in two or more stages",
                n_classes.div_ceil(2).max(1)
            ))
            .into());
    }
    if p.memory < n_classes {
        return Err(d
            .diagnostic(
                &Some(p.span.clone()),
                format!(
                    "`memory = {}` cannot keep an exemplar of each of the {n_classes} classes",
                    p.memory
                ),
            )
            .with_hint(format!(
                "use `memory` ≥ {n_classes}; it is shared out evenly over the seen classes"
            ))
            .into());
    }
    Ok(order)
}

/// The prototype head: fitted on the first stage's classes, then one new mean per class, old ones untouched;
/// its class i is the i-th class to arrive.
fn update_prototype(
    prototype: &mut Option<FittedPrototype>,
    d: &RunData<'_>,
    classes: &[usize],
    stage_rows: &[usize],
    x: ArrayView2<'_, f32>,
    y: &[usize],
) -> Result<(), PipelineError> {
    match prototype {
        None => {
            let local: Vec<usize> = y
                .iter()
                .map(|c| classes.iter().position(|k| k == c).expect("a stage class"))
                .collect();
            *prototype = Some(
                Prototype::params()
                    .metric(Metric::Cosine)
                    .fit(x, &Targets::new(&local, classes.len())?)?,
            );
        }
        Some(head) => {
            for &class in classes {
                let class_rows: Vec<usize> = stage_rows
                    .iter()
                    .copied()
                    .filter(|&r| d.labels[r] == class)
                    .collect();
                head.add_class(d.features.select(Axis(0), &class_rows).view())?;
            }
        }
    }
    Ok(())
}

/// The rehearsal memory after stage `s`: at most `capacity` rows shared evenly over the seen classes, new
/// classes' exemplars drawn at random from the stage, old ones kept.
#[allow(clippy::too_many_arguments)] // the memory's state at one stage
fn rebalance(
    memory: &[usize],
    stage_rows: &[usize],
    seen: &[usize],
    s: usize,
    stage_of_class: &[usize],
    capacity: usize,
    labels: &[usize],
    rng: &mut ChaCha8Rng,
) -> Vec<usize> {
    let per_class = capacity / seen.len();
    let mut kept = Vec::new();
    for &class in seen {
        let pool = if stage_of_class[class] == s {
            stage_rows
        } else {
            memory
        };
        let mut candidates: Vec<usize> = pool
            .iter()
            .copied()
            .filter(|&r| labels[r] == class)
            .collect();
        if stage_of_class[class] == s {
            candidates.shuffle(rng);
        }
        kept.extend(candidates.into_iter().take(per_class));
    }
    kept
}

/// Average forgetting (Chaudhry et al., 2018): over the earlier stages, best-ever minus final accuracy on
/// their classes; `acc[after][on]`.
fn forgetting(acc: &[Vec<f64>], last: usize) -> f64 {
    (0..last)
        .map(|j| {
            let best = (j..last).map(|s| acc[s][j]).fold(f64::MIN, f64::max);
            best - acc[last][j]
        })
        .sum::<f64>()
        / last as f64
}

/// What the stage does, with its sources.
fn method(p: &ContinualPlan, n_stages: usize) -> String {
    format!(
        "{} stages of {} classes in {}. After each stage every learner is scored on the test rows \
         of all classes seen so far. Prototype: one cosine class mean added per new class (old ones \
         untouched; Rebuffi et al., 2017). MLP ({} epochs per stage, warm-started from the previous stage): \
         fine-tuned on the new stage's rows alone, or with rehearsal of at most {} exemplars kept \
         class-balanced at random from earlier stages (Chaudhry et al., 2019). Forgetting: mean over earlier \
         stages of best-ever minus final accuracy on their classes (Chaudhry et al., 2018).",
        n_stages,
        p.classes_per_stage,
        if p.seeded_order {
            "a seeded random class order"
        } else {
            "class order"
        },
        p.epochs,
        p.memory
    )
}

/// "2 (sandal, shirt)": a stage and its new classes.
fn stage_label(s: usize, classes: &[usize], names: &[String]) -> String {
    let names: Vec<&str> = classes.iter().map(|&c| names[c].as_str()).collect();
    format!("{} ({})", s + 1, names.join(", "))
}

/// Learner `l`'s predictions among the seen classes: 0 prototype, 1 fine-tuned MLP, 2 rehearsal MLP.
fn predict_seen_classes(
    l: usize,
    x: ArrayView2<'_, f32>,
    (prototype, naive, rehearsal): (
        Option<&FittedPrototype>,
        Option<&FittedMlp>,
        Option<&FittedMlp>,
    ),
    order: &[usize],
    seen: &[usize],
) -> Result<Vec<usize>, PipelineError> {
    let mlp = match l {
        0 => {
            let local = prototype.expect("trained").predict(x)?;
            return Ok(local.into_iter().map(|i| order[i]).collect());
        }
        1 => naive,
        _ => rehearsal,
    };
    Ok(predict_seen(
        mlp.expect("trained").predict_proba(x)?.view(),
        seen,
    ))
}

/// The comparison in one sentence: final accuracy of each learner, forgetting, and the joint ceiling.
fn finding(
    p: &ContinualPlan,
    seen_accuracy: &[Vec<f64>],
    forgetting: &[f64],
    joint_accuracy: f64,
) -> String {
    let last = seen_accuracy[0].len() - 1;
    format!(
        "after {} stages, accuracy over all classes: prototype {:.4}, MLP fine-tuned per stage {:.4} (forgetting \
         {:.4}), MLP with a {}-exemplar memory {:.4} (forgetting {:.4}); the MLP trained on all classes at once \
         {:.4}",
        seen_accuracy[0].len(),
        seen_accuracy[0][last],
        seen_accuracy[1][last],
        forgetting[1],
        p.memory,
        seen_accuracy[2][last],
        forgetting[2],
        joint_accuracy
    )
}
