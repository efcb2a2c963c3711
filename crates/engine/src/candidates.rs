//! `[backbones] candidates`: every candidate extracts the rows (through the feature cache), the headline
//! head trains on its training rows, and the candidates are ranked by validation accuracy. The winner becomes
//! the run's backbone (its features are the run's; nothing is extracted twice) and the report's "Backbones"
//! section gives each candidate's validation and test accuracy with intervals, a paired test against the
//! winner on the test rows, and its extraction cost.

use std::time::Instant;

use graft_assets::Cache;
use graft_config::{BackboneCandidate, Plan};
use graft_eval::{Bootstrap, Interval, PairedBootstrap, mcnemar};
use graft_heads::Targets;
use graft_report::TechniqueReport;
use graft_stdx::derive_seed;
use ndarray::{ArrayView2, Axis};
use serde_json::json;

use crate::PipelineError;
use crate::data::Ingested;
use crate::featurize::{Featurized, featurize};
use crate::options::RunOptions;

/// The ranking's outcome: the winner's plan and features, and the report section.
pub(crate) struct Ranked {
    pub(crate) plan: Plan,
    pub(crate) featurized: Featurized,
    pub(crate) report: TechniqueReport,
}

/// One candidate's scores.
struct Scored {
    label: String,
    validation: Interval,
    test: Interval,
    test_predicted: Vec<usize>,
    dimension: usize,
    rows_per_second: f64,
    extracted: usize,
    extract_seconds: f64,
}

/// Ranks the plan's candidates (none: `None`, the run goes on with `[backbone]`).
pub(crate) fn rank_backbones(
    plan: &Plan,
    options: &RunOptions,
    cache: &Cache,
    ingested: &mut Ingested,
) -> Result<Option<Ranked>, PipelineError> {
    if plan.backbone_candidates.is_empty() {
        return Ok(None);
    }
    let started = Instant::now();
    let refuse = |message: &str, hint: &str| {
        let span = plan.backbone_candidates[0].span.clone();
        PipelineError::from(plan.diagnostic(&Some(span), message).with_hint(hint))
    };
    if ingested.data.multi_label.is_some() {
        return Err(refuse(
            "`[backbones]` ranks single-label data",
            "rank backbones on a single-label copy of the data, or list one backbone",
        ));
    }
    if ingested.split.validation.is_empty() {
        return Err(refuse(
            "`[backbones]` ranks candidates on the validation split, which is empty",
            "give the split a validation share, e.g. [split.stratified] validation = 0.1",
        ));
    }
    let bootstrap = Bootstrap {
        // The ranking's intervals are its point: with `bootstrap = 0` (no intervals for the heads) it
        // still draws the default 1,000 resamples.
        resamples: if plan.evaluation.bootstrap == 0 {
            1000
        } else {
            plan.evaluation.bootstrap
        },
        level: plan.evaluation.level,
        seed: derive_seed(plan.seed, "backbones"),
    };
    let mut best: Option<(usize, Plan, Featurized)> = None;
    let mut scored = Vec::with_capacity(plan.backbone_candidates.len());
    for (i, candidate) in plan.backbone_candidates.iter().enumerate() {
        tracing::info!(candidate = %candidate.label, "extracting with a candidate backbone");
        let candidate_plan = plan_with(plan, candidate);
        let clock = Instant::now();
        let featurized = featurize(
            &candidate_plan,
            options,
            cache,
            &mut ingested.data,
            &ingested.split.train,
            &ingested.file,
        )?;
        let extract_seconds = clock.elapsed().as_secs_f64() - featurized.provision_seconds;
        let s = score(plan, ingested, &featurized, &bootstrap, candidate)?;
        let s = Scored {
            extract_seconds,
            ..s
        };
        let wins = best
            .as_ref()
            .is_none_or(|(b, _, _)| s.validation.estimate > scored_at(&scored, *b));
        scored.push(s);
        if wins {
            best = Some((i, candidate_plan, featurized));
        }
    }
    let (winner, plan, featurized) = best.expect("two or more candidates");
    let report = section(&scored, winner, &ingested_truth(ingested), &bootstrap)?;
    Ok(Some(Ranked {
        plan,
        featurized,
        report: TechniqueReport {
            seconds: started.elapsed().as_secs_f64(),
            ..report
        },
    }))
}

fn scored_at(scored: &[Scored], i: usize) -> f64 {
    scored[i].validation.estimate
}

/// The plan with the candidate as its backbone; the candidate's errors point at the candidate.
fn plan_with(plan: &Plan, candidate: &BackboneCandidate) -> Plan {
    let mut chosen = plan.clone();
    chosen.backbone = Some(candidate.backbone.clone());
    chosen.spans.backbone = Some(candidate.span.clone());
    chosen.spans.backbone_model = Some(candidate.span.clone());
    chosen.backbone_candidates = Vec::new();
    chosen
}

/// The test rows' classes.
fn ingested_truth(ingested: &Ingested) -> Vec<usize> {
    ingested
        .split
        .test
        .iter()
        .map(|&r| ingested.data.labels[r])
        .collect()
}

/// The headline head (uncalibrated) trained on the candidate's training rows, scored on validation and test.
fn score(
    plan: &Plan,
    ingested: &Ingested,
    featurized: &Featurized,
    bootstrap: &Bootstrap,
    candidate: &BackboneCandidate,
) -> Result<Scored, PipelineError> {
    let (data, split) = (&ingested.data, &ingested.split);
    let x = featurized.features.view();
    let labels = |rows: &[usize]| rows.iter().map(|&r| data.labels[r]).collect::<Vec<_>>();
    let y_train = labels(&split.train);
    let (head, _) = crate::heads::train_head(
        &plan.heads[0].uncalibrated(),
        None,
        x.select(Axis(0), &split.train).view(),
        &Targets::new(&y_train, data.classes.len())?,
        None,
    )?;
    let predict = |rows: &[usize]| -> Result<Vec<usize>, PipelineError> {
        let part = x.select(Axis(0), rows);
        Ok(graft_heads::argmax_rows(
            head.predict_proba(ArrayView2::from(&part))?.view(),
        ))
    };
    let interval = |rows: &[usize], predicted: &[usize]| -> Result<Interval, PipelineError> {
        let truth = labels(rows);
        Ok(bootstrap.interval(truth.len(), |sample| {
            sample.iter().filter(|&&r| predicted[r] == truth[r]).count() as f64
                / sample.len() as f64
        })?)
    };
    let validation_predicted = predict(&split.validation)?;
    let test_predicted = predict(&split.test)?;
    Ok(Scored {
        label: candidate.label.clone(),
        validation: interval(&split.validation, &validation_predicted)?,
        test: interval(&split.test, &test_predicted)?,
        test_predicted,
        dimension: featurized.features.ncols(),
        rows_per_second: featurized.extraction.rows_per_second,
        extracted: featurized.extraction.extracted,
        extract_seconds: 0.0,
    })
}

/// The report section: candidates by validation accuracy, each against the winner on the test rows.
fn section(
    scored: &[Scored],
    winner: usize,
    truth: &[usize],
    bootstrap: &Bootstrap,
) -> Result<TechniqueReport, PipelineError> {
    let mut order: Vec<usize> = (0..scored.len()).collect();
    // Best first; ties keep the listed order (the earlier candidate wins a tie).
    order.sort_by(|&a, &b| {
        scored[b]
            .validation
            .estimate
            .total_cmp(&scored[a].validation.estimate)
            .then(a.cmp(&b))
    });
    let best = &scored[winner];
    let mut rows = Vec::new();
    let mut details = Vec::new();
    let mut runner_up: Option<(usize, PairedBootstrap, f64)> = None;
    for (rank, &i) in order.iter().enumerate() {
        let s = &scored[i];
        let versus = if i == winner {
            None
        } else {
            let paired =
                bootstrap.paired_accuracy(truth, &s.test_predicted, &best.test_predicted)?;
            let test = mcnemar(truth, &s.test_predicted, &best.test_predicted)?;
            if runner_up.is_none() {
                runner_up = Some((i, paired, test.p_value));
            }
            Some((paired, test.p_value))
        };
        let speed = if s.extracted == 0 {
            "cached".to_owned()
        } else {
            format!("{:.0}", s.rows_per_second)
        };
        rows.push(vec![
            (rank + 1).to_string(),
            s.label.clone(),
            s.dimension.to_string(),
            interval_text(&s.validation),
            interval_text(&s.test),
            versus.map_or_else(
                || "winner".to_owned(),
                |(p, mc)| format!("{} (McNemar p = {mc:.3})", difference(&p)),
            ),
            speed,
            format!("{:.1}", s.extract_seconds),
        ]);
        details.push(json!({
            "rank": rank + 1,
            "backbone": s.label,
            "dimension": s.dimension,
            "validation_accuracy": interval_json(&s.validation),
            "test_accuracy": interval_json(&s.test),
            "test_versus_winner": versus.map(|(p, mc)| json!({
                "difference": interval_json(&p.interval),
                "bootstrap_p_value": p.p_value,
                "mcnemar_p_value": mc,
            })),
            "rows_per_second": (s.extracted > 0).then_some(s.rows_per_second),
            "rows_extracted": s.extracted,
            "extract_seconds": s.extract_seconds,
        }));
    }
    let finding = match runner_up {
        Some((r, p, mc)) => format!(
            "{} ranks first on the validation split ({:.4}) and is the run's backbone; on the test rows it \
             scores {:.4} against {:.4} for {} (difference {}, McNemar p = {mc:.3}: {})",
            best.label,
            best.validation.estimate,
            best.test.estimate,
            scored[r].test.estimate,
            scored[r].label,
            difference(&p),
            if p.interval.upper < 0.0 {
                "the winner is better"
            } else if p.interval.lower > 0.0 {
                "the runner-up is better on test"
            } else {
                "no measurable difference"
            }
        ),
        None => format!("{} is the only candidate", best.label),
    };
    Ok(TechniqueReport {
        technique: "backbones".to_owned(),
        title: "Backbones ranked on the validation split".to_owned(),
        method: "Each candidate extracts every row (through the feature cache); the headline head \
                 (uncalibrated, no transform) trains on its training rows; candidates are ranked by \
                 validation accuracy and the first becomes the run's backbone. Test accuracy and the paired \
                 comparison with the winner (bootstrap interval of the difference, McNemar's test) are on \
                 the test rows, which took no part in choosing."
            .to_owned(),
        finding,
        columns: [
            "rank",
            "backbone",
            "width",
            "validation accuracy",
            "test accuracy",
            "test: minus the winner",
            "rows/s",
            "extract s",
        ]
        .map(str::to_owned)
        .to_vec(),
        rows,
        details: json!({ "winner": best.label, "candidates": details }),
        curve: Vec::new(),
        seconds: 0.0,
    })
}

/// `0.7670 [0.7406, 0.7925]` style.
fn interval_text(i: &Interval) -> String {
    format!("{:.4} [{:.4}, {:.4}]", i.estimate, i.lower, i.upper)
}

fn interval_json(i: &Interval) -> serde_json::Value {
    json!({ "estimate": i.estimate, "lower": i.lower, "upper": i.upper, "level": i.level })
}

/// A paired difference: `+0.0123 [+0.0010, +0.0240]`.
fn difference(p: &PairedBootstrap) -> String {
    format!(
        "{:+.4} [{:+.4}, {:+.4}]",
        p.interval.estimate, p.interval.lower, p.interval.upper
    )
}
