//! Scores with intervals: every head on train, validation and test (test once), cross-validation, the
//! learning curve.

use graft_config::{HeadSpec, Plan};
use graft_eval::{
    Bootstrap, classification_report, mcnemar, multi_label_report, probability_report,
};
use graft_heads::argmax_rows;
use graft_ingest::Split;
use graft_report::{
    Comparison, CvScores, HeadMetrics, LearningCurve, SplitIntervals, SplitMetrics,
};
use graft_stdx::derive_seed;
use ndarray::{Array2, Axis};

use crate::PipelineError;
use crate::curve::{BaselineInputs, CurveData};
use crate::data::{Inputs, Labelled, raw_pixels};
use crate::heads::TrainedHead;
use crate::train::{SplitRows, TrainedHeads, cross_validate};

/// Bootstrap intervals of accuracy and macro-F1 on the rows scored.
pub fn split_intervals(
    bootstrap: &Bootstrap,
    y: &[usize],
    predicted: &[usize],
    n_classes: usize,
) -> Result<SplitIntervals, PipelineError> {
    let accuracy = bootstrap.interval(y.len(), |rows| {
        rows.iter().filter(|&&r| y[r] == predicted[r]).count() as f64 / rows.len() as f64
    })?;
    let macro_f1 = bootstrap.interval(y.len(), |rows| {
        let (t, p): (Vec<usize>, Vec<usize>) = rows.iter().map(|&r| (y[r], predicted[r])).unzip();
        classification_report(&t, &p, n_classes).map_or(f64::NAN, |r| r.macro_f1)
    })?;
    Ok(SplitIntervals { accuracy, macro_f1 })
}

/// k-fold cross-validation of every head over the training and validation rows (never test): stratified,
/// or group k-fold when the data names a group column. Multi-label data is not cross-validated.
pub(crate) fn cross_validation(
    plan: &Plan,
    features: &Array2<f32>,
    data: &Labelled,
    split: &Split,
    specs: &[HeadSpec],
) -> Result<Vec<CvScores>, PipelineError> {
    let (Some(k), None) = (plan.evaluation.cv, &data.multi_label) else {
        return Ok(Vec::new());
    };
    let mut rows: Vec<usize> = split
        .train
        .iter()
        .chain(&split.validation)
        .copied()
        .collect();
    rows.sort_unstable();
    let x = features.select(Axis(0), &rows);
    let y: Vec<usize> = rows.iter().map(|&i| data.labels[i]).collect();
    let groups: Option<Vec<usize>> = data
        .groups
        .as_ref()
        .map(|g| rows.iter().map(|&i| g[i]).collect());
    let specs: Vec<HeadSpec> = specs.iter().map(HeadSpec::uncalibrated).collect();
    let per_head = cross_validate(
        plan,
        &specs,
        &x,
        &y,
        groups.as_deref(),
        data.classes.len(),
        k,
    )?;
    Ok(per_head
        .iter()
        .map(|per_fold| CvScores::of(per_fold, groups.is_some()))
        .collect())
}

/// One head's scores on one split, its predicted classes (empty for multi-label heads) and probabilities.
fn score_split(
    head: &TrainedHead,
    data: &Labelled,
    x: &Array2<f32>,
    y: &[usize],
    rows: &[usize],
) -> Result<(SplitMetrics, Vec<usize>, Array2<f32>), PipelineError> {
    let proba = head.predict_proba(x.view())?;
    if let (Some(m), Some(thresholds)) = (&data.multi_label, &head.thresholds) {
        let predicted = graft_heads::threshold_rows(proba.view(), thresholds);
        let truth: Vec<Vec<usize>> = rows.iter().map(|&i| m.sets[i].clone()).collect();
        let metrics = SplitMetrics::from_multi_label(
            multi_label_report(&truth, &predicted, m.names.len())?,
            &m.names,
        );
        return Ok((metrics, Vec::new(), proba));
    }
    let predicted = argmax_rows(proba.view());
    let metrics = SplitMetrics::new(
        classification_report(y, &predicted, data.classes.len())?,
        &data.classes,
    );
    Ok((metrics, predicted, proba))
}

/// Every head scored: train and validation for reference, test once, with probability scores, bootstrap
/// intervals and a paired comparison with the headline (the first head) on the same test rows.
pub(crate) struct Evaluated {
    pub(crate) heads: Vec<HeadMetrics>,
    /// Every head's test predictions (class names, or label sets joined), for predictions.csv.
    pub(crate) test_predictions: Vec<(String, Vec<String>)>,
}

pub(crate) fn evaluate_heads(
    plan: &Plan,
    data: &Labelled,
    split: &Split,
    rows: &SplitRows,
    trained: &TrainedHeads,
    cross_validation: &[CvScores],
) -> Result<Evaluated, PipelineError> {
    let evaluation = plan.evaluation;
    let bootstrap = (evaluation.bootstrap > 0).then(|| Bootstrap {
        resamples: evaluation.bootstrap,
        level: evaluation.level,
        // One seed for every head: their intervals and comparisons resample the same rows.
        seed: derive_seed(plan.seed, "bootstrap"),
    });
    let y_test = &rows.y_test;
    let mut headline_test: Option<Vec<usize>> = None;
    let mut evaluated = Evaluated {
        heads: Vec::new(),
        test_predictions: Vec::new(),
    };
    for (index, (head, figures, fit_seconds)) in trained.heads.iter().enumerate() {
        let (mut test, test_predicted, test_proba) =
            score_split(head, data, &rows.x_test, y_test, &split.test)?;
        evaluated.test_predictions.push((
            head.spec.name().to_owned(),
            predicted_names(plan, data, head, &test_predicted, &test_proba),
        ));
        let mut versus_headline = None;
        if data.multi_label.is_none() {
            test.probabilities = Some(probability_report(
                y_test,
                test_proba.view(),
                evaluation.bins,
            )?);
            if let Some(b) = &bootstrap {
                test.intervals = Some(split_intervals(b, y_test, &test_predicted, rows.n_classes)?);
            }
            match &headline_test {
                None => headline_test = Some(test_predicted.clone()),
                Some(headline) => {
                    versus_headline = Some(Comparison {
                        mcnemar: mcnemar(y_test, &test_predicted, headline)?,
                        accuracy_difference: bootstrap
                            .as_ref()
                            .map(|b| b.paired_accuracy(y_test, &test_predicted, headline))
                            .transpose()?,
                    });
                }
            }
        }
        evaluated.heads.push(HeadMetrics {
            name: head.spec.name().to_owned(),
            label: head.spec.label(),
            train: score_split(head, data, &rows.x_train, &rows.y_train, &split.train)?.0,
            validation: if rows.y_validation.is_empty() {
                None
            } else {
                Some(
                    score_split(
                        head,
                        data,
                        &rows.x_validation,
                        &rows.y_validation,
                        &split.validation,
                    )?
                    .0,
                )
            },
            test,
            versus_headline,
            cross_validation: cross_validation.get(index).cloned(),
            training: figures.clone(),
            fit_seconds: *fit_seconds,
        });
    }
    Ok(evaluated)
}

/// A head's test predictions as predictions.csv writes them: class names, or label sets joined with the
/// data's separator.
fn predicted_names(
    plan: &Plan,
    data: &Labelled,
    head: &TrainedHead,
    predicted: &[usize],
    proba: &Array2<f32>,
) -> Vec<String> {
    match (&data.multi_label, &head.thresholds) {
        (Some(m), Some(thresholds)) => {
            let separator = plan.data.label_separator.as_deref().unwrap_or("|");
            graft_heads::threshold_rows(proba.view(), thresholds)
                .iter()
                .map(|set| {
                    set.iter()
                        .map(|&l| m.names[l].as_str())
                        .collect::<Vec<_>>()
                        .join(separator)
                })
                .collect()
        }
        _ => predicted.iter().map(|&c| data.classes[c].clone()).collect(),
    }
}

/// Evidence of transfer: the headline head vs a from-scratch baseline at K examples per class.
pub(crate) fn learning_curve(
    plan: &Plan,
    headline: &HeadSpec,
    features: &Array2<f32>,
    data: &Labelled,
    split: &Split,
) -> Result<Option<LearningCurve>, PipelineError> {
    let Some(c) = &plan.learning_curve else {
        return Ok(None);
    };
    tracing::info!("learning curve");
    let pixels;
    let baseline = match &data.inputs {
        Inputs::Texts(texts) => BaselineInputs::Texts(texts),
        Inputs::Images(images) => {
            pixels = raw_pixels(images)?;
            BaselineInputs::Pixels(&pixels)
        }
        Inputs::Features(_) => unreachable!("checked when the plan was loaded"),
    };
    let curve = crate::curve::learning_curve(
        headline,
        &c.shots,
        c.repeats,
        plan.seed,
        &CurveData {
            features: features.view(),
            labels: &data.labels,
            n_classes: data.classes.len(),
            train: &split.train,
            test: &split.test,
            baseline,
            level: plan.evaluation.level,
        },
    )?;
    Ok(Some(curve))
}

/// Adds `[fine_tune]`'s line (the backbone tuned per draw) to the learning curve, when the stage drew one.
pub(crate) fn add_tuned_line(
    curve: &mut Option<LearningCurve>,
    techniques: &[graft_report::TechniqueReport],
) {
    let (Some(curve), Some(stage)) = (
        curve.as_mut(),
        techniques.iter().find(|t| t.technique == "fine_tune"),
    ) else {
        return;
    };
    let Some(points) = stage.details["learning_curve"].as_array() else {
        return;
    };
    for point in points {
        let per_class = point["per_class"].as_u64().map(|k| k as usize);
        let tuned: Option<graft_report::Spread> =
            serde_json::from_value(point["tuned"].clone()).ok();
        if let Some(p) = curve.points.iter_mut().find(|p| p.per_class == per_class) {
            p.tuned = tuned;
        }
    }
    curve.tuned = Some(format!(
        "the backbone fine-tuned on each draw's rows alone ({}), then the same head on its features; the whole \
         split is the fine-tuning stage's result",
        stage.details["trainable_blocks"].as_u64().map_or_else(
            || "the top blocks".to_owned(),
            |k| format!("top {k} block{}", if k == 1 { "" } else { "s" })
        )
    ));
}
