//! The printed summary and `report.md`.

use std::fmt::Write as _;

use crate::curve::BaselineNeeds;
use crate::metrics::*;

/// " (rows 3, 8, 12, …)": the first dropped rows, as splits.csv numbers them; empty when none.
fn dropped_rows(r: &RowCounts) -> String {
    if r.dropped_rows.is_empty() {
        return String::new();
    }
    let named: Vec<String> = r.dropped_rows.iter().map(usize::to_string).collect();
    let more = if r.dropped_null_text + r.dropped_null_label > named.len() {
        ", …"
    } else {
        ""
    };
    format!(" (rows {}{more})", named.join(", "))
}

pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Facts about the run shown in the summary and report beside the metrics.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub backbone: &'a str,
    pub data: &'a str,
    pub head: &'a str,
    pub run_dir: &'a str,
    pub data_sha256: &'a str,
    pub model_sha256: &'a str,
}

/// The short table printed at the end of a run.
pub fn summary(m: &Metrics, ctx: &Context<'_>) -> String {
    let mut s = String::new();
    summary_rows(&mut s, m, ctx);
    summary_scores(&mut s, m);
    summary_evidence(&mut s, m);
    summary_timings(&mut s, m, ctx);
    s
}

/// The heading, row counts, extraction and head lines.
fn summary_rows(s: &mut String, m: &Metrics, ctx: &Context<'_>) {
    let r = &m.rows;
    let e = &m.extraction;
    let t = &m.timings_seconds;
    let _ = writeln!(
        s,
        "graft · {} · {} on {}",
        m.pipeline, ctx.backbone, ctx.data
    );
    let _ = writeln!(
        s,
        "  rows        {} read · {} dropped{} · train {} · validation {} · test {}",
        thousands(r.read),
        thousands(r.dropped_null_text + r.dropped_null_label),
        dropped_rows(r),
        thousands(r.train),
        thousands(r.validation),
        thousands(r.test)
    );
    if e.unit == "features" {
        let _ = writeln!(
            s,
            "  features    {} rows × {} given with the data (no backbone)",
            thousands(e.rows),
            e.dimension
        );
    } else if e.extracted > 0 {
        // When chunking, the cache holds windows; the speed is still texts per second.
        let unit = if e.long_texts == "chunks" {
            "windows"
        } else {
            "rows"
        };
        let _ = writeln!(
            s,
            "  extraction  {} {unit} in {:.1} s ({:.0} rows/s) · {} thread(s) · {} · {} from the feature cache",
            thousands(e.extracted),
            t.extract,
            e.rows_per_second,
            e.threads,
            e.execution_provider,
            thousands(e.cache_hits)
        );
    } else {
        let _ = writeln!(
            s,
            "  extraction  none: all {} rows from the feature cache ({:.2} s)",
            thousands(e.cache_hits),
            t.extract
        );
    }
    if e.unit == "texts" && e.long_rows > 0 {
        let _ = if e.long_texts == "chunks" {
            writeln!(
                s,
                "  long texts  {} of {} longer than `max_length`: embedded as {} windows in all, pooled",
                thousands(e.long_rows),
                thousands(e.rows),
                thousands(e.sequences)
            )
        } else {
            writeln!(
                s,
                "  long texts  {} of {} longer than `max_length`: truncated (`long_texts = \"chunks\"` keeps them whole)",
                thousands(e.long_rows),
                thousands(e.rows)
            )
        };
    }
    let _ = writeln!(
        s,
        "  head        {} · {} iterations · {}",
        ctx.head, m.training.iterations, m.training.termination
    );
}

/// Scores per split, intervals and probability scores.
fn summary_scores(s: &mut String, m: &Metrics) {
    let multi = m.task == "multi-label";
    if multi {
        let _ = writeln!(
            s,
            "  task        multi-label: {} labels; accuracy = exact label-set match",
            m.classes.len()
        );
    }
    let _ = writeln!(s);
    if multi {
        let _ = writeln!(
            s,
            "  split         rows  accuracy  macro-F1  micro-F1  Hamming"
        );
    } else {
        let _ = writeln!(s, "  split         rows  accuracy  macro-F1");
    }
    let mut line = |name: &str, sm: &SplitMetrics| {
        let _ = write!(
            s,
            "  {name:<10} {:>7}  {:>8.4}  {:>8.4}",
            thousands(sm.rows),
            sm.accuracy,
            sm.macro_f1
        );
        if let (Some(micro), Some(hamming)) = (sm.micro_f1, sm.hamming_loss) {
            let _ = write!(s, "  {micro:>8.4}  {hamming:>7.4}");
        }
        let _ = writeln!(s);
    };
    line("train", &m.train);
    if let Some(v) = &m.validation {
        line("validation", v);
    }
    line("test", &m.test);
    if let Some(i) = &m.test.intervals {
        let _ = writeln!(
            s,
            "  test {:.0}% CI accuracy [{:.4}, {:.4}] · macro-F1 [{:.4}, {:.4}] ({} bootstrap resamples)",
            i.accuracy.level * 100.0,
            i.accuracy.lower,
            i.accuracy.upper,
            i.macro_f1.lower,
            i.macro_f1.upper,
            thousands(i.accuracy.resamples)
        );
    }
    if let Some(p) = &m.test.probabilities {
        let opt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.4}"));
        let _ = writeln!(
            s,
            "  test proba  ROC-AUC {} · PR-AUC {} · log loss {:.4} · Brier {:.4} · ECE {:.4}",
            opt(p.roc_auc),
            opt(p.pr_auc),
            p.log_loss,
            p.brier,
            p.ece
        );
    }
}

/// The learning curve, search, stages, cross-validation and other heads.
fn summary_evidence(s: &mut String, m: &Metrics) {
    if let Some(c) = &m.learning_curve {
        for e in c.efficiency.iter().filter(|e| e.per_class == 8) {
            let needs = match e.baseline_needs {
                BaselineNeeds::PerClass(k) => format!("{k} per class"),
                BaselineNeeds::WholeTrainingSplit => "the whole training split".to_owned(),
                BaselineNeeds::Never => "more than the whole training split".to_owned(),
            };
            let point = c
                .points
                .iter()
                .find(|p| p.per_class == Some(8))
                .expect("the point exists");
            let _ = writeln!(
                s,
                "  transfer    8 per class: {:.4} [{:.4}, {:.4}] vs baseline {:.4} [{:.4}, {:.4}]; the baseline needs {needs} to match",
                point.transfer.mean,
                point.transfer.lower,
                point.transfer.upper,
                point.baseline.mean,
                point.baseline.lower,
                point.baseline.upper
            );
        }
    }
    if let Some(r) = &m.search {
        let best = &r.candidates[r.best];
        let _ = writeln!(
            s,
            "  search      {} {}: {} candidates by {} in {:.1} s → {} ({:.4})",
            r.method,
            r.head,
            r.candidates.len(),
            r.selection,
            r.seconds,
            best.values,
            best.accuracy
        );
    }
    for t in &m.techniques {
        let _ = writeln!(s, "  {:<11} {}", t.technique, t.finding);
    }
    if let Some(cv) = m.heads[0].cross_validation.as_ref() {
        let per_head: Vec<String> = m
            .heads
            .iter()
            .filter_map(|h| {
                h.cross_validation
                    .as_ref()
                    .map(|c| format!("{} {:.4} ± {:.4}", h.name, c.accuracy_mean, c.accuracy_std))
            })
            .collect();
        let _ = writeln!(
            s,
            "  cv          {}-fold ({}) accuracy: {}",
            cv.folds,
            if cv.grouped { "grouped" } else { "stratified" },
            per_head.join(" · ")
        );
    }
    if m.heads.len() > 1 {
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "  head        validation acc  test acc  test macro-F1  fit s"
        );
        for h in &m.heads {
            let _ = writeln!(
                s,
                "  {:<10}  {:>14}  {:>8.4}  {:>13.4}  {:>5.2}",
                h.name,
                h.validation
                    .as_ref()
                    .map_or("-".to_owned(), |v| format!("{:.4}", v.accuracy)),
                h.test.accuracy,
                h.test.macro_f1,
                h.fit_seconds
            );
        }
    }
}

/// Seconds per stage and the run folder.
fn summary_timings(s: &mut String, m: &Metrics, ctx: &Context<'_>) {
    let t = &m.timings_seconds;
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "  seconds     ingest {:.2} · provision {:.2} · extract {:.2} · train {:.2} · evaluate {:.2}{} · total {:.2}",
        t.ingest,
        t.provision,
        t.extract,
        t.train,
        t.evaluate,
        if m.techniques.is_empty() {
            String::new()
        } else {
            format!(" · techniques {:.2}", t.techniques)
        },
        t.total
    );
    let _ = write!(s, "  run folder  {}", ctx.run_dir);
}

/// The human-readable `report.md`.
pub fn markdown(m: &Metrics, ctx: &Context<'_>) -> String {
    let mut s = String::new();
    header_section(&mut s, m, ctx);
    scores_section(&mut s, m);
    heads_section(&mut s, m);
    cross_validation_section(&mut s, m);
    training_curves_section(&mut s, m);
    learning_curve_section(&mut s, m);
    techniques_section(&mut s, m);
    search_section(&mut s, m);
    calibration_section(&mut s, m);
    per_class_section(&mut s, m);
    extraction_section(&mut s, m);
    s
}

/// The heading: data, backbone, head, rows, the stages' findings.
fn header_section(s: &mut String, m: &Metrics, ctx: &Context<'_>) {
    let _ = writeln!(s, "# graft run: {}\n", m.pipeline);
    let _ = writeln!(s, "- **Data:** {} (sha256 `{}`)", ctx.data, ctx.data_sha256);
    if m.extraction.unit == "features" {
        let _ = writeln!(
            s,
            "- **Backbone:** none; {}-d features given with the data",
            m.extraction.dimension
        );
    } else {
        let _ = writeln!(
            s,
            "- **Backbone:** {} (frozen; model sha256 `{}`), {}",
            ctx.backbone, ctx.model_sha256, m.extraction.execution_provider
        );
    }
    let _ = writeln!(s, "- **Head:** {}", ctx.head);
    if m.heads.len() > 1 {
        let others: Vec<&str> = m.heads[1..].iter().map(|h| h.label.as_str()).collect();
        let _ = writeln!(s, "- **Also trained:** {}", others.join("; "));
    }
    let r = &m.rows;
    let dropped = match m.extraction.unit.as_str() {
        "images" => String::new(),
        "features" => format!("{} dropped (null label), ", r.dropped_null_label),
        _ => format!(
            "{} dropped (null text), {} dropped (null label), ",
            r.dropped_null_text, r.dropped_null_label
        ),
    };

    let _ = writeln!(
        s,
        "- **Rows:** {} read, {dropped}{} not sampled{}; {} used: {} train / {} validation / {} test{}\n",
        r.read,
        r.not_sampled,
        if r.rare_class_rows > 0 {
            format!(
                ", {} left out with {} class(es) below `min_class_rows` ({})",
                r.rare_class_rows,
                r.rare_classes.len(),
                r.rare_classes.join(", ")
            )
        } else {
            String::new()
        },
        r.used,
        r.train,
        r.validation,
        r.test,
        if r.dropped_rows.is_empty() {
            String::new()
        } else {
            format!("; dropped{}", dropped_rows(r))
        }
    );
    for t in &m.techniques {
        let _ = writeln!(s, "- **{}:** {} (section below)", t.title, t.finding);
    }
    if !m.techniques.is_empty() {
        let _ = writeln!(s);
    }
}

/// Scores of the headline head per split, with intervals.
fn scores_section(s: &mut String, m: &Metrics) {
    let multi = m.task == "multi-label";
    let _ = writeln!(s, "## Scores\n");
    if multi {
        let _ = writeln!(
            s,
            "Multi-label: {} labels, one sigmoid each; a row's prediction is the set of labels at or above \
             their thresholds. Accuracy is the exact-set match rate (scikit-learn's subset accuracy).\n",
            m.classes.len()
        );
        let _ = writeln!(
            s,
            "| split | rows | subset accuracy | macro-F1 | micro-F1 | Hamming loss |\n|---|---:|---:|---:|---:|---:|"
        );
    } else {
        let _ = writeln!(
            s,
            "| split | rows | accuracy | macro-F1 |\n|---|---:|---:|---:|"
        );
    }
    let mut row = |name: &str, sm: &SplitMetrics| {
        let _ = write!(
            s,
            "| {name} | {} | {:.4} | {:.4} |",
            sm.rows, sm.accuracy, sm.macro_f1
        );
        if let (Some(micro), Some(hamming)) = (sm.micro_f1, sm.hamming_loss) {
            let _ = write!(s, " {micro:.4} | {hamming:.4} |");
        }
        let _ = writeln!(s);
    };
    row("train", &m.train);
    if let Some(v) = &m.validation {
        row("validation", v);
    }
    row("**test**", &m.test);
    let _ = writeln!(
        s,
        "\nThe test split is scored once, after training; nothing was tuned on it.\n"
    );
    if let Some(i) = &m.test.intervals {
        let _ = writeln!(
            s,
            "Test {:.0}% intervals (percentile bootstrap, {} resamples of the test rows, seeded by the pipeline): \
             accuracy {:.4} [{:.4}, {:.4}], macro-F1 {:.4} [{:.4}, {:.4}].\n",
            i.accuracy.level * 100.0,
            i.accuracy.resamples,
            i.accuracy.estimate,
            i.accuracy.lower,
            i.accuracy.upper,
            i.macro_f1.estimate,
            i.macro_f1.lower,
            i.macro_f1.upper
        );
    }
    if let (Some(b), Some(w)) = (m.test.balanced_accuracy, m.test.weighted_f1) {
        let _ = writeln!(s, "Test balanced accuracy {b:.4}, weighted F1 {w:.4}.\n");
    }
}

/// Every head side by side, with paired tests against the headline.
fn heads_section(s: &mut String, m: &Metrics) {
    let _ = writeln!(s, "## Heads side by side\n");
    let _ = writeln!(
        s,
        "| head | validation accuracy | test accuracy | test macro-F1 | fit seconds | temperature | training |\n|---|---:|---:|---:|---:|---:|---|"
    );
    for h in &m.heads {
        let _ = writeln!(
            s,
            "| {} | {} | {:.4} | {:.4} | {:.3} | {} | {} |",
            h.label,
            h.validation
                .as_ref()
                .map_or("-".to_owned(), |v| format!("{:.4}", v.accuracy)),
            h.test.accuracy,
            h.test.macro_f1,
            h.fit_seconds,
            h.training
                .temperature
                .map_or("-".to_owned(), |t| format!("{t:.3}")),
            h.training.termination
        );
    }
    let _ = writeln!(
        s,
        "\nAll heads train on the same features and splits. The per-class table and confusion matrix below are \
         the first head's.\n"
    );
    let compared: Vec<&HeadMetrics> = m
        .heads
        .iter()
        .filter(|h| h.versus_headline.is_some())
        .collect();
    if !compared.is_empty() {
        let _ = writeln!(
            s,
            "Against the headline ({}) on the same test rows:\n\n| head | test accuracy − headline's | interval | paired-bootstrap p | McNemar (only this right / only headline right) | McNemar p |\n|---|---:|---|---:|---|---:|",
            m.heads[0].name
        );
        for h in compared {
            let c = h.versus_headline.as_ref().expect("filtered");
            let (diff, interval, p) = match &c.accuracy_difference {
                Some(d) => (
                    format!("{:+.4}", d.interval.estimate),
                    format!("[{:+.4}, {:+.4}]", d.interval.lower, d.interval.upper),
                    format!("{:.3}", d.p_value),
                ),
                None => (
                    format!("{:+.4}", h.test.accuracy - m.heads[0].test.accuracy),
                    "-".to_owned(),
                    "-".to_owned(),
                ),
            };
            let _ = writeln!(
                s,
                "| {} | {diff} | {interval} | {p} | {} / {} | {:.3} |",
                h.name, c.mcnemar.a_only, c.mcnemar.b_only, c.mcnemar.p_value
            );
        }
        let _ = writeln!(s);
    }
}

/// Cross-validation of every head.
fn cross_validation_section(s: &mut String, m: &Metrics) {
    if let Some(cv) = m.heads[0].cross_validation.as_ref() {
        let _ = writeln!(
            s,
            "Cross-validation: {} folds over the training and validation rows ({}; the transform refitted on each \
             fold's training part):\n\n| head | accuracy (mean ± sd) | macro-F1 (mean) | per fold |\n|---|---:|---:|---|",
            cv.folds,
            if cv.grouped {
                "group k-fold: a group's rows stay in one fold"
            } else {
                "stratified by class"
            }
        );
        for h in &m.heads {
            if let Some(c) = &h.cross_validation {
                let folds: Vec<String> = c
                    .accuracy_per_fold
                    .iter()
                    .map(|a| format!("{a:.4}"))
                    .collect();
                let _ = writeln!(
                    s,
                    "| {} | {:.4} ± {:.4} | {:.4} | {} |",
                    h.name,
                    c.accuracy_mean,
                    c.accuracy_std,
                    c.macro_f1_mean,
                    folds.join(", ")
                );
            }
        }
        let _ = writeln!(s);
    }
}

/// Per-epoch training curves.
fn training_curves_section(s: &mut String, m: &Metrics) {
    for h in m.heads.iter().filter(|h| !h.training.curve.is_empty()) {
        let _ = writeln!(
            s,
            "### Training curve: {}\n\n| epoch | train loss | validation loss | validation accuracy |\n|---:|---:|---:|---:|",
            h.name
        );
        for p in &h.training.curve {
            let opt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.4}"));
            let _ = writeln!(
                s,
                "| {} | {:.4} | {} | {} |",
                p.epoch,
                p.train_loss,
                opt(p.validation_loss),
                opt(p.validation_accuracy)
            );
        }
        let _ = writeln!(s);
    }
}

/// The learning curve: transfer vs the from-scratch baseline.
fn learning_curve_section(s: &mut String, m: &Metrics) {
    if let Some(c) = &m.learning_curve {
        let level = c.points.first().map_or(0.95, |p| p.transfer.level) * 100.0;
        let _ = writeln!(
            s,
            "## Learning curve: transfer vs from scratch\n\nTest accuracy with K training examples per class \
             ({} seeded draws per K; mean, {level:.0}% t-interval over the draws, clipped to [0, 1]), for the \
             transfer head — {} — and the baseline — {} — trained on the same rows ({:.1} s).\n",
            c.repeats, c.transfer, c.baseline, c.seconds
        );
        if let Some(tuned) = &c.tuned {
            let _ = writeln!(s, "Fine-tuned line: {tuned}.\n");
        }
        let tuned_header = if c.tuned.is_some() {
            (" fine-tuned | interval |", "---:|---|")
        } else {
            ("", "")
        };
        let _ = writeln!(
            s,
            "| K per class | rows | transfer | interval | baseline | interval |{}\n|---:|---:|---:|---|---:|---|{}",
            tuned_header.0, tuned_header.1
        );
        for p in &c.points {
            // One draw (the whole split) has no interval: say so rather than print a zero-width one.
            let interval = |x: &crate::Spread| {
                if p.per_class.is_none() {
                    "– (one draw)".to_owned()
                } else {
                    format!("[{:.4}, {:.4}]", x.lower, x.upper)
                }
            };
            let tuned = match (&c.tuned, &p.tuned) {
                (Some(_), Some(t)) => format!(" {:.4} | {} |", t.mean, interval(t)),
                (Some(_), None) => " – | – |".to_owned(),
                _ => String::new(),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {:.4} | {} | {:.4} | {} |{tuned}",
                p.per_class.map_or("all".to_owned(), |k| k.to_string()),
                p.rows,
                p.transfer.mean,
                interval(&p.transfer),
                p.baseline.mean,
                interval(&p.baseline),
            );
        }
        let _ = writeln!(
            s,
            "\nData efficiency — examples per class the baseline needs to reach transfer's mean:\n"
        );
        let _ = writeln!(
            s,
            "| transfer at K | its accuracy | baseline needs |\n|---:|---:|---|"
        );
        for e in &c.efficiency {
            let needs = match e.baseline_needs {
                BaselineNeeds::PerClass(k) => {
                    format!(
                        "{k} per class ({:.0}× the data)",
                        k as f64 / e.per_class as f64
                    )
                }
                BaselineNeeds::WholeTrainingSplit => "the whole training split".to_owned(),
                BaselineNeeds::Never => "more than the whole training split".to_owned(),
            };
            let _ = writeln!(s, "| {} | {:.4} | {needs} |", e.per_class, e.transfer);
        }
        let _ = writeln!(s);
    }
}

/// One section per technique stage.
fn techniques_section(s: &mut String, m: &Metrics) {
    for t in &m.techniques {
        let _ = writeln!(
            s,
            "## {}\n\n{}\n\n**Result:** {}.\n\n| {} |\n|{}|",
            t.title,
            t.method,
            t.finding,
            t.columns.join(" | "),
            t.columns
                .iter()
                .enumerate()
                .map(|(i, _)| if i == 0 { "---" } else { "---:" })
                .collect::<Vec<_>>()
                .join("|")
        );
        for row in &t.rows {
            let _ = writeln!(s, "| {} |", row.join(" | "));
        }
        let _ = writeln!(s, "\n({:.1} s)\n", t.seconds);
    }
}

/// The hyperparameter search's candidates.
fn search_section(s: &mut String, m: &Metrics) {
    if let Some(r) = &m.search {
        let _ = writeln!(
            s,
            "## Hyperparameter search\n\n{} search over the {} head: {} candidates compared by {} in {:.1} s; \
             the best (marked) was retrained and scored once on test above.\n",
            r.method,
            r.head,
            r.candidates.len(),
            r.selection,
            r.seconds
        );
        let _ = writeln!(
            s,
            "| # | values | accuracy | ± (folds) | macro-F1 |\n|---:|---|---:|---:|---:|"
        );
        let mut order: Vec<usize> = (0..r.candidates.len()).collect();
        order.sort_by(|&a, &b| {
            r.candidates[b]
                .accuracy
                .total_cmp(&r.candidates[a].accuracy)
                .then(a.cmp(&b))
        });
        for i in order {
            let c = &r.candidates[i];
            let _ = writeln!(
                s,
                "| {}{} | `{}` | {:.4} | {} | {:.4} |",
                i + 1,
                if i == r.best { " ★" } else { "" },
                c.values,
                c.accuracy,
                c.accuracy_std.map_or("-".to_owned(), |v| format!("{v:.4}")),
                c.macro_f1
            );
        }
        let _ = writeln!(s);
    }
}

/// Probability scores and the reliability table.
fn calibration_section(s: &mut String, m: &Metrics) {
    if let Some(p) = &m.test.probabilities {
        let opt = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.4}"));
        let _ = writeln!(s, "## Probabilities and calibration (test)\n");
        let _ = writeln!(
            s,
            "ROC-AUC {} · PR-AUC (average precision) {} · log loss {:.4} · Brier {:.4} · expected calibration \
             error {:.4} ({} bins){}\n",
            opt(p.roc_auc),
            opt(p.pr_auc),
            p.log_loss,
            p.brier,
            p.ece,
            p.reliability.len(),
            if m.classes.len() > 2 {
                "; AUCs one-vs-rest, macro-averaged"
            } else {
                ""
            }
        );
        let _ = writeln!(
            s,
            "| confidence | rows | mean confidence | accuracy |\n|---|---:|---:|---:|"
        );
        for b in p.reliability.iter().filter(|b| b.count > 0) {
            let _ = writeln!(
                s,
                "| ({:.1}, {:.1}] | {} | {:.4} | {:.4} |",
                b.lower, b.upper, b.count, b.confidence, b.accuracy
            );
        }
        let _ = writeln!(s);
    }
}

/// Per-class scores and the confusion matrix.
fn per_class_section(s: &mut String, m: &Metrics) {
    let multi = m.task == "multi-label";
    let _ = writeln!(
        s,
        "## Per {} (test)\n",
        if multi { "label" } else { "class" }
    );
    let _ = writeln!(
        s,
        "| {} | precision | recall | F1 | support |\n|---|---:|---:|---:|---:|",
        if multi { "label" } else { "class" }
    );
    for c in &m.test.per_class {
        let _ = writeln!(
            s,
            "| {} | {:.4} | {:.4} | {:.4} | {} |",
            c.class, c.precision, c.recall, c.f1, c.support
        );
    }
    if !m.test.confusion.is_empty() {
        let _ = writeln!(
            s,
            "\n## Confusion matrix (test; rows = true class, columns = predicted)\n"
        );
        let _ = writeln!(s, "| true \\ predicted | {} |", m.classes.join(" | "));
        let _ = writeln!(s, "|---|{}", "---:|".repeat(m.classes.len()));
        for (class, counts) in m.classes.iter().zip(&m.test.confusion) {
            let cells: Vec<String> = counts.iter().map(usize::to_string).collect();
            let _ = writeln!(s, "| {class} | {} |", cells.join(" | "));
        }
    }
}

/// Extraction figures and seconds per stage.
fn extraction_section(s: &mut String, m: &Metrics) {
    let e = &m.extraction;
    let t = &m.timings_seconds;
    let _ = writeln!(s, "\n## Extraction and timings\n");
    let head = format!(
        "{} {} → {}-d features: {} from the feature cache, {} extracted in {:.2} s ({:.0} {}/s, {} batches, \
         {} threads)",
        e.rows,
        e.unit,
        e.dimension,
        e.cache_hits,
        e.extracted,
        t.extract,
        e.rows_per_second,
        e.unit,
        e.batches,
        e.threads,
    );
    let _ = if e.unit == "features" {
        writeln!(
            s,
            "{} rows × {} features given with the data; nothing extracted.\n",
            e.rows, e.dimension
        )
    } else if e.unit == "images" {
        writeln!(
            s,
            "{head}; {:.2} s of it decoding and preprocessing.\n",
            e.tokenize_seconds
        )
    } else {
        let long = if e.long_texts == "chunks" {
            format!(
                "{} texts longer than `max_length` embedded in windows ({} windows for {} texts) and pooled",
                e.long_rows, e.sequences, e.rows
            )
        } else {
            format!(
                "{} texts longer than `max_length` truncated",
                e.truncated_rows
            )
        };
        writeln!(
            s,
            "{head}; {} real tokens, {} with padding; {long}.\n",
            e.tokens, e.padded_tokens
        )
    };
    let _ = writeln!(s, "| stage | seconds |\n|---|---:|");
    for (name, v) in [
        ("ingest", t.ingest),
        ("provision", t.provision),
        ("extract", t.extract),
        ("train", t.train),
        ("evaluate", t.evaluate),
        ("techniques", t.techniques),
        ("total", t.total),
    ] {
        let _ = writeln!(s, "| {name} | {v:.3} |");
    }
    let _ = writeln!(
        s,
        "\nHead training: {} iterations, final loss {:.6}, {}.",
        m.training.iterations, m.training.loss, m.training.termination
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_rows_are_named() {
        let mut r = RowCounts {
            read: 12,
            dropped_null_text: 1,
            dropped_null_label: 1,
            dropped_rows: vec![3, 8],
            not_sampled: 0,
            rare_class_rows: 0,
            rare_classes: Vec::new(),
            used: 10,
            train: 8,
            validation: 1,
            test: 1,
        };
        assert_eq!(dropped_rows(&r), " (rows 3, 8)");
        r.dropped_null_label = 5;
        assert_eq!(dropped_rows(&r), " (rows 3, 8, …)");
        r.dropped_rows.clear();
        assert_eq!(dropped_rows(&r), "");
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(10605), "10,605");
        assert_eq!(thousands(1_000_000), "1,000,000");
    }
}
