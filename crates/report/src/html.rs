//! `report.html`: one self-contained page (inline CSS and SVG plots made with plotters; no script, no
//! network) with the run's summary, scores with intervals, per-class table, confusion heat map, reliability
//! diagram, learning curve, search results and training curves. Every number shown from `metrics.json`
//! carries its exact value and its path there (`data-key`, `data-value`), so a test can check the page
//! against the file.

use std::fmt::Write as _;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::markdown::Context;
use crate::metrics::{Metrics, SplitMetrics};

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A table cell showing `value` to 4 decimals, tagged with its metrics.json path.
fn cell(key: &str, value: f64) -> String {
    format!(
        "<td data-key=\"{key}\" data-value=\"{value:?}\" title=\"metrics.json: {key} = {value:?}\">{value:.4}</td>"
    )
}

/// The same, inline.
fn span(key: &str, value: f64) -> String {
    format!(
        "<span data-key=\"{key}\" data-value=\"{value:?}\" title=\"metrics.json: {key} = {value:?}\">{value:.4}</span>"
    )
}

/// Plot text at the page's body size, 16 px: tick labels, axis titles, legends; captions a little larger.
/// plotters' SVG backend writes a font of size s as `font-size` s / 1.24, hence 20 for 16.1 px.
const BODY: (&str, u32) = ("sans-serif", 20);
const CAPTION: (&str, u32) = ("sans-serif", 23);

fn opt_cell(key: &str, value: Option<f64>) -> String {
    value.map_or("<td>–</td>".to_owned(), |v| cell(key, v))
}

const BLUE_: RGBColor = RGBColor(31, 119, 180);
const ORANGE_: RGBColor = RGBColor(255, 127, 14);
const GREEN_: RGBColor = RGBColor(44, 160, 44);

/// Draws into an SVG string; plotting errors (which need a bad range to happen) leave the plot empty.
type Drawn = Result<(), Box<dyn std::error::Error>>;

fn svg(
    size: (u32, u32),
    draw: impl for<'a> FnOnce(&DrawingArea<SVGBackend<'a>, plotters::coord::Shift>) -> Drawn,
) -> String {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        let _ = root.fill(&WHITE);
        if draw(&root).is_err() {
            let _ = root.fill(&WHITE);
        }
        let _ = root.present();
    }
    out
}

fn confusion_svg(classes: &[String], confusion: &[Vec<usize>]) -> String {
    let k = classes.len();
    let side = (70 * k as u32).clamp(260, 640);
    let name = |v: &SegmentValue<usize>, flip: bool| match v {
        SegmentValue::CenterOf(i) if *i < k => classes[if flip { k - 1 - i } else { *i }].clone(),
        _ => String::new(),
    };
    svg((side + 150, side + 90), |root| {
        let max = confusion
            .iter()
            .flatten()
            .copied()
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let mut chart = ChartBuilder::on(root)
            .caption("Confusion matrix (test)", CAPTION)
            .margin(10)
            .x_label_area_size(50)
            .y_label_area_size(120)
            .build_cartesian_2d((0..k - 1).into_segmented(), (0..k - 1).into_segmented())?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("predicted")
            .y_desc("true")
            .x_labels(k)
            .y_labels(k)
            .x_label_formatter(&|v| name(v, false))
            .y_label_formatter(&|v| name(v, true))
            .label_style(BODY)
            .axis_desc_style(BODY)
            .draw()?;
        for (t, row) in confusion.iter().enumerate() {
            for (p, &n) in row.iter().enumerate() {
                let shade = 1.0 - 0.85 * n as f64 / max;
                let colour = RGBColor((255.0 * shade) as u8, (255.0 * shade) as u8, 255);
                let y = k - 1 - t;
                chart.draw_series(std::iter::once(Rectangle::new(
                    [
                        (SegmentValue::Exact(p), SegmentValue::Exact(y)),
                        (SegmentValue::Exact(p + 1), SegmentValue::Exact(y + 1)),
                    ],
                    colour.filled(),
                )))?;
                let text_colour = if shade < 0.5 { WHITE } else { BLACK };
                let style = BODY
                    .into_font()
                    .color(&text_colour)
                    .pos(Pos::new(HPos::Center, VPos::Center));
                chart.draw_series(std::iter::once(Text::new(
                    n.to_string(),
                    (SegmentValue::CenterOf(p), SegmentValue::CenterOf(y)),
                    style,
                )))?;
            }
        }
        Ok(())
    })
}

fn reliability_svg(m: &SplitMetrics) -> String {
    let Some(p) = &m.probabilities else {
        return String::new();
    };
    svg((520, 380), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption("Reliability (test): accuracy vs confidence", CAPTION)
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
        chart
            .configure_mesh()
            .x_desc("mean top-class probability")
            .y_desc("accuracy")
            .label_style(BODY)
            .axis_desc_style(BODY)
            .draw()?;
        chart
            .draw_series(LineSeries::new(
                vec![(0.0, 0.0), (1.0, 1.0)],
                BLACK.mix(0.4),
            ))?
            .label("perfect calibration")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.4)));
        let bins: Vec<(f64, f64)> = p
            .reliability
            .iter()
            .filter(|b| b.count > 0)
            .map(|b| (b.confidence, b.accuracy))
            .collect();
        chart
            .draw_series(LineSeries::new(bins.clone(), BLUE_.stroke_width(2)))?
            .label(format!("model (ECE {:.4})", p.ece))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE_));
        chart.draw_series(
            bins.iter()
                .map(|&(x, y)| Circle::new((x, y), 4, BLUE_.filled())),
        )?;
        // Each bin's row count beside its point: a bin of three rows says little.
        let counted = p.reliability.iter().filter(|b| b.count > 0).enumerate();
        chart.draw_series(counted.map(|(i, b)| {
            // Neighbouring bins alternate above and below their points, so that the counts of close points
            // do not print over each other; kept inside the plot: below points near the top, above points
            // near the bottom, left of points near the right edge.
            let vertical = if b.accuracy >= 0.9 {
                VPos::Top
            } else if b.accuracy <= 0.1 || i % 2 == 0 {
                VPos::Bottom
            } else {
                VPos::Top
            };
            let side = if b.confidence < 0.8 {
                HPos::Left
            } else {
                HPos::Right
            };
            Text::new(
                format!("n={}", b.count),
                (b.confidence, b.accuracy),
                BODY.into_font().color(&BLUE_).pos(Pos::new(side, vertical)),
            )
        }))?;
        chart
            .configure_series_labels()
            .label_font(BODY)
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    })
}

/// A line of the learning-curve plot: its legend, colour and which spread of a point it draws.
type CurveSeries = (
    &'static str,
    RGBColor,
    fn(&crate::curve::LearningPoint) -> Option<crate::Spread>,
);

fn learning_curve_svg(m: &Metrics) -> String {
    let Some(c) = &m.learning_curve else {
        return String::new();
    };
    let all_rows = c.points.last().map_or(1, |p| p.rows.max(1));
    let classes = m.classes.len().max(1);
    // The whole split is drawn at its rows per class.
    let x_of = |per_class: Option<usize>| per_class.unwrap_or(all_rows / classes).max(1) as f64;
    let x_max = c
        .points
        .iter()
        .map(|p| x_of(p.per_class))
        .fold(1.0, f64::max)
        * 1.5;
    let lows = c
        .points
        .iter()
        .flat_map(|p| {
            [
                Some(p.transfer.lower),
                Some(p.baseline.lower),
                p.tuned.as_ref().map(|t| t.lower),
            ]
        })
        .flatten()
        .fold(1.0, f64::min);
    // A tick at every K drawn (a log axis would tick 1, 10, 100 and label only the 1), "all" at the split.
    let ticks: Vec<f64> = c.points.iter().map(|p| x_of(p.per_class)).collect();
    let whole = c
        .points
        .iter()
        .find(|p| p.per_class.is_none())
        .map(|p| x_of(p.per_class));
    let tick_label = |x: f64| {
        if whole.is_some_and(|w| (w - x).abs() < 1e-9) {
            "all".to_owned()
        } else {
            format!("{x:.0}")
        }
    };
    svg((640, 400), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                "Learning curve: transfer vs from scratch (test accuracy)",
                CAPTION,
            )
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(
                (0.8f64..x_max).log_scale().with_key_points(ticks.clone()),
                (lows - 0.02).max(0.0)..1.0,
            )?;
        chart
            .configure_mesh()
            .x_desc("examples per class (log scale; last: whole split)")
            .y_desc("test accuracy")
            .x_label_formatter(&|x| tick_label(*x))
            .label_style(BODY)
            .axis_desc_style(BODY)
            .draw()?;
        let series: [CurveSeries; 3] = [
            ("transfer (frozen)", BLUE_, |p| Some(p.transfer.clone())),
            ("from scratch", ORANGE_, |p| Some(p.baseline.clone())),
            ("fine-tuned", GREEN_, |p| p.tuned.clone()),
        ];
        for (name, colour, spread) in series {
            if c.points.iter().all(|p| spread(p).is_none()) {
                continue;
            }
            let points: Vec<(&crate::curve::LearningPoint, crate::Spread)> = c
                .points
                .iter()
                .filter_map(|p| spread(p).map(|s| (p, s)))
                .collect();
            let line: Vec<(f64, f64)> = points
                .iter()
                .map(|(p, s)| (x_of(p.per_class), s.mean))
                .collect();
            chart
                .draw_series(LineSeries::new(line.clone(), colour.stroke_width(2)))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
            // The whole split is one draw: no interval to draw.
            let drawn = points.iter().filter(|(p, _)| p.per_class.is_some());
            chart.draw_series(drawn.map(|(p, s)| {
                PathElement::new(
                    vec![(x_of(p.per_class), s.lower), (x_of(p.per_class), s.upper)],
                    colour.stroke_width(1),
                )
            }))?;
            chart.draw_series(
                line.iter()
                    .map(|&(x, y)| Circle::new((x, y), 3, colour.filled())),
            )?;
        }
        chart
            .configure_series_labels()
            .label_font(BODY)
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    })
}

fn training_curve_svg(name: &str, figures: &crate::training::TrainingFigures) -> String {
    let curve = &figures.curve;
    let max = curve
        .iter()
        .flat_map(|p| [Some(p.train_loss), p.validation_loss])
        .flatten()
        .fold(0.0, f64::max)
        * 1.1;
    let epochs = curve.len().max(2);
    svg((640, 400), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(format!("Training curve: {name}"), CAPTION)
            .margin(10)
            .x_label_area_size(50)
            .y_label_area_size(60)
            // Epochs count: whole-number ticks.
            .build_cartesian_2d(1..epochs, 0f64..max.max(1e-6))?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc("loss")
            .x_labels(epochs.min(10))
            .label_style(BODY)
            .axis_desc_style(BODY)
            .draw()?;
        chart
            .draw_series(LineSeries::new(
                curve.iter().map(|p| (p.epoch, p.train_loss)),
                BLUE_.stroke_width(2),
            ))?
            .label("train loss")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE_));
        chart
            .draw_series(LineSeries::new(
                curve
                    .iter()
                    .filter_map(|p| p.validation_loss.map(|v| (p.epoch, v))),
                ORANGE_.stroke_width(2),
            ))?
            .label("validation loss")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], ORANGE_));
        // The weights kept, and where patience ran out.
        let mut marks = Vec::new();
        if let Some(best) = figures.best_epoch {
            marks.push((best, "best epoch (kept)", GREEN_));
        }
        if figures.stopped_early
            && let Some(last) = curve.last()
        {
            marks.push((last.epoch, "early stop", BLACK));
        }
        for (epoch, label, colour) in marks {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(epoch, 0.0), (epoch, max)],
                    colour.stroke_width(2),
                )))?
                .label(format!("{label}: {epoch}"))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
        }
        chart
            .configure_series_labels()
            .label_font(BODY)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    })
}

fn split_row(s: &mut String, name: &str, key: &str, m: &SplitMetrics) {
    let ci = |which: &str| {
        m.intervals.as_ref().map_or("<td>–</td>".to_owned(), |i| {
            let iv = if which == "accuracy" {
                &i.accuracy
            } else {
                &i.macro_f1
            };
            format!(
                "<td>[{}, {}]</td>",
                span(&format!("{key}.intervals.{which}.lower"), iv.lower),
                span(&format!("{key}.intervals.{which}.upper"), iv.upper),
            )
        })
    };
    let _ = writeln!(
        s,
        "<tr><th>{name}</th><td>{}</td>{}{}{}{}</tr>",
        m.rows,
        cell(&format!("{key}.accuracy"), m.accuracy),
        ci("accuracy"),
        cell(&format!("{key}.macro_f1"), m.macro_f1),
        ci("macro_f1"),
    );
}

/// The whole page.
pub fn html(m: &Metrics, ctx: &Context<'_>) -> String {
    let mut s = String::new();
    html_summary(&mut s, m, ctx);
    html_scores(&mut s, m);
    html_figures(&mut s, m);
    html_evidence(&mut s, m);
    html_search_and_training(&mut s, m, ctx);
    s
}

/// The page head and the summary table.
fn html_summary(s: &mut String, m: &Metrics, ctx: &Context<'_>) {
    let _ = writeln!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>graft run: {}</title>\n<style>\n\
         body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}}\n\
         table{{border-collapse:collapse;margin:.8em 0}}td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:right}}\n\
         th{{background:#f4f4f4}}td:first-child,th:first-child{{text-align:left}}section{{margin-top:2em}}\n\
         .figs{{display:flex;flex-wrap:wrap;gap:1em}}#summary td{{text-align:left}}figure{{margin:0}}code{{background:#f4f4f4;padding:0 .3em}}\n\
         </style></head><body>",
        escape(&m.pipeline)
    );
    let _ = writeln!(s, "<h1>graft run: {}</h1>", escape(&m.pipeline));

    // Summary.
    let r = &m.rows;
    let _ = writeln!(
        s,
        "<section id=\"summary\"><h2>Summary</h2><table>\
         <tr><th>data</th><td>{} <br><small>sha256 <code>{}</code></small></td></tr>\
         <tr><th>backbone</th><td>{} <br><small>sha256 <code>{}</code>; {}</small></td></tr>\
         <tr><th>task</th><td>{}, {} classes</td></tr>\
         <tr><th>rows</th><td>{} read, {} used: {} train / {} validation / {} test</td></tr>\
         <tr><th>heads</th><td>{}</td></tr>\
         <tr><th>seconds</th><td>ingest {:.2} · extract {:.2} · train {:.2} · evaluate {:.2} · techniques {:.2} · total {:.2}</td></tr>\
         {}</table></section>",
        escape(ctx.data),
        escape(ctx.data_sha256),
        escape(ctx.backbone),
        escape(ctx.model_sha256),
        escape(&m.extraction.execution_provider),
        escape(&m.task),
        m.classes.len(),
        r.read,
        r.used,
        r.train,
        r.validation,
        r.test,
        m.heads
            .iter()
            .map(|h| escape(&h.label))
            .collect::<Vec<_>>()
            .join("<br>"),
        m.timings_seconds.ingest,
        m.timings_seconds.extract,
        m.timings_seconds.train,
        m.timings_seconds.evaluate,
        m.timings_seconds.techniques,
        m.timings_seconds.total,
        // Each technique's finding up front, linked to its section below.
        m.techniques
            .iter()
            .map(|t| format!(
                "<tr><th><a href=\"#technique-{}\">{}</a></th><td>{}</td></tr>",
                escape(&t.technique),
                escape(&t.title),
                escape(&t.finding)
            ))
            .collect::<String>(),
    );
}

/// Scores per split, probability scores, heads side by side, cross-validation.
fn html_scores(s: &mut String, m: &Metrics) {
    // Scores.
    let _ = writeln!(
        s,
        "<section id=\"metrics\"><h2>Scores (headline: {})</h2><table><tr><th>split</th><th>rows</th><th>accuracy</th><th>{level:.0}% interval</th><th>macro-F1</th><th>{level:.0}% interval</th></tr>",
        escape(&m.heads[0].name),
        level = m.test.intervals.as_ref().map_or(0.95, |i| i.accuracy.level) * 100.0
    );
    split_row(s, "train", "train", &m.train);
    if let Some(v) = &m.validation {
        split_row(s, "validation", "validation", v);
    }
    split_row(s, "test", "test", &m.test);
    let _ = writeln!(s, "</table>");
    if let Some(p) = &m.test.probabilities {
        let _ = writeln!(
            s,
            "<table><tr><th>split</th><th>ROC-AUC</th><th>PR-AUC</th><th>log loss</th><th>Brier</th><th>ECE</th></tr><tr><td>test</td>{}{}{}{}{}</tr></table>",
            opt_cell("test.probabilities.roc_auc", p.roc_auc),
            opt_cell("test.probabilities.pr_auc", p.pr_auc),
            cell("test.probabilities.log_loss", p.log_loss),
            cell("test.probabilities.brier", p.brier),
            cell("test.probabilities.ece", p.ece),
        );
    }
    // One head has nothing to be compared with.
    if m.heads.len() > 1 {
        let _ = writeln!(
            s,
            "<h3>Heads side by side</h3><table><tr><th>head</th><th>validation accuracy</th><th>test accuracy</th><th>test macro-F1</th><th>vs headline: Δ accuracy</th><th>McNemar p</th></tr>"
        );
        for (i, h) in m.heads.iter().enumerate() {
            let (diff, p) = match &h.versus_headline {
                Some(c) => (
                    c.accuracy_difference
                        .as_ref()
                        .map_or("<td>–</td>".to_owned(), |d| {
                            cell(
                                &format!(
                                    "heads.{i}.versus_headline.accuracy_difference.interval.estimate"
                                ),
                                d.interval.estimate,
                            )
                        }),
                    cell(
                        &format!("heads.{i}.versus_headline.mcnemar.p_value"),
                        c.mcnemar.p_value,
                    ),
                ),
                None => ("<td colspan=\"2\">the headline</td>".to_owned(), String::new()),
            };
            let _ = writeln!(
                s,
                "<tr><td>{}</td>{}{}{}{diff}{p}</tr>",
                escape(&h.label),
                opt_cell(
                    &format!("heads.{i}.validation.accuracy"),
                    h.validation.as_ref().map(|v| v.accuracy)
                ),
                cell(&format!("heads.{i}.test.accuracy"), h.test.accuracy),
                cell(&format!("heads.{i}.test.macro_f1"), h.test.macro_f1),
            );
        }
        let _ = writeln!(s, "</table>");
    }
    if let Some(cv) = m.heads[0].cross_validation.as_ref() {
        let _ = writeln!(
            s,
            "<h3 id=\"cross-validation\">Cross-validation ({} folds, {})</h3><table><tr><th>head</th><th>accuracy (mean)</th><th>sd</th><th>macro-F1 (mean)</th></tr>",
            cv.folds,
            if cv.grouped { "grouped" } else { "stratified" }
        );
        for (i, h) in m.heads.iter().enumerate() {
            if let Some(c) = &h.cross_validation {
                let _ = writeln!(
                    s,
                    "<tr><td>{}</td>{}{}{}</tr>",
                    escape(&h.name),
                    cell(
                        &format!("heads.{i}.cross_validation.accuracy_mean"),
                        c.accuracy_mean
                    ),
                    cell(
                        &format!("heads.{i}.cross_validation.accuracy_std"),
                        c.accuracy_std
                    ),
                    cell(
                        &format!("heads.{i}.cross_validation.macro_f1_mean"),
                        c.macro_f1_mean
                    ),
                );
            }
        }
        let _ = writeln!(s, "</table>");
    }
    let _ = writeln!(s, "</section>");
}

/// Per-class scores and the confusion and reliability figures.
fn html_figures(s: &mut String, m: &Metrics) {
    // Per class.
    let _ = writeln!(
        s,
        "<section id=\"per-class\"><h2>Per {} (test)</h2><table><tr><th>{}</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>",
        if m.task == "multi-label" {
            "label"
        } else {
            "class"
        },
        if m.task == "multi-label" {
            "label"
        } else {
            "class"
        },
    );
    for (i, c) in m.test.per_class.iter().enumerate() {
        let _ = writeln!(
            s,
            "<tr><td>{}</td>{}{}{}<td>{}</td></tr>",
            escape(&c.class),
            cell(&format!("test.per_class.{i}.precision"), c.precision),
            cell(&format!("test.per_class.{i}.recall"), c.recall),
            cell(&format!("test.per_class.{i}.f1"), c.f1),
            c.support
        );
    }
    let _ = writeln!(s, "</table></section>");

    // Figures.
    let _ = writeln!(
        s,
        "<section id=\"figures\"><h2>Confusion and calibration (test)</h2><div class=\"figs\">"
    );
    if !m.test.confusion.is_empty() {
        let _ = writeln!(
            s,
            "<figure id=\"confusion\">{}</figure>",
            confusion_svg(&m.classes, &m.test.confusion)
        );
    }
    if m.test.probabilities.is_some() {
        let _ = writeln!(
            s,
            "<figure id=\"reliability\">{}</figure>",
            reliability_svg(&m.test)
        );
    }
    let _ = writeln!(s, "</div></section>");
}

/// The learning curve and the technique stages.
fn html_evidence(s: &mut String, m: &Metrics) {
    if let Some(c) = &m.learning_curve {
        let _ = writeln!(
            s,
            "<section id=\"learning-curve\"><h2>Learning curve: transfer vs from scratch</h2><p>{} draws per point; \
             transfer: {}; from scratch: {}{}. Bars: {:.0}% t-intervals over the draws, clipped to [0, 1].</p><figure>{}</figure>\
             <table><tr><th>K per class</th><th>rows</th><th>transfer</th><th>from scratch</th>{}<th>from scratch needs</th></tr>",
            c.repeats,
            escape(&c.transfer),
            escape(&c.baseline),
            c.tuned
                .as_ref()
                .map_or_else(String::new, |t| format!("; fine-tuned: {}", escape(t))),
            c.points.first().map_or(0.95, |p| p.transfer.level) * 100.0,
            learning_curve_svg(m),
            if c.tuned.is_some() {
                "<th>fine-tuned</th>"
            } else {
                ""
            },
        );
        for (i, p) in c.points.iter().enumerate() {
            let needs = c
                .efficiency
                .iter()
                .find(|e| Some(e.per_class) == p.per_class)
                .map_or("–".to_owned(), |e| e.baseline_needs.describe());
            let tuned = if c.tuned.is_some() {
                opt_cell(
                    &format!("learning_curve.points.{i}.tuned.mean"),
                    p.tuned.as_ref().map(|t| t.mean),
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "<tr><td>{}</td><td>{}</td>{}{}{tuned}<td>{needs}</td></tr>",
                p.per_class.map_or("all".to_owned(), |k| k.to_string()),
                p.rows,
                cell(
                    &format!("learning_curve.points.{i}.transfer.mean"),
                    p.transfer.mean
                ),
                cell(
                    &format!("learning_curve.points.{i}.baseline.mean"),
                    p.baseline.mean
                ),
            );
        }
        let _ = writeln!(s, "</table></section>");
    }

    for t in &m.techniques {
        let _ = writeln!(
            s,
            "<section id=\"technique-{}\"><h2>{}</h2><p>{}</p><p><strong>Result:</strong> {}.</p><table><tr>{}</tr>",
            escape(&t.technique),
            escape(&t.title),
            escape(&t.method),
            escape(&t.finding),
            t.columns
                .iter()
                .map(|c| format!("<th>{}</th>", escape(c)))
                .collect::<String>()
        );
        for row in &t.rows {
            let _ = writeln!(
                s,
                "<tr>{}</tr>",
                row.iter()
                    .map(|c| format!("<td>{}</td>", escape(c)))
                    .collect::<String>()
            );
        }
        let _ = writeln!(s, "</table>");
        if !t.curve.is_empty() {
            let _ = writeln!(
                s,
                "<div class=\"figs\">{}</div>",
                training_curve_svg(
                    &t.title,
                    &crate::training::TrainingFigures {
                        head: t.technique.clone(),
                        iterations: t.curve.len(),
                        loss: t.curve.last().map_or(f64::NAN, |p| p.train_loss),
                        termination: String::new(),
                        temperature: None,
                        curve: t.curve.clone(),
                        best_epoch: t.details["best_epoch"].as_u64().map(|e| e as usize),
                        stopped_early: t.details["stopped_early"].as_bool().unwrap_or(false),
                    }
                )
            );
        }
        let _ = writeln!(s, "</section>");
    }
}

/// Search candidates and training curves.
fn html_search_and_training(s: &mut String, m: &Metrics, ctx: &Context<'_>) {
    if let Some(r) = &m.search {
        let _ = writeln!(
            s,
            "<section id=\"search\"><h2>Hyperparameter search</h2><p>{} search over the {} head, {} candidates by {} in {:.1} s; ★ = kept.</p>\
             <table><tr><th>#</th><th>values</th><th>accuracy</th><th>macro-F1</th></tr>",
            escape(&r.method),
            escape(&r.head),
            r.candidates.len(),
            escape(&r.selection),
            r.seconds
        );
        for (i, c) in r.candidates.iter().enumerate() {
            let _ = writeln!(
                s,
                "<tr><td>{}{}</td><td><code>{}</code></td>{}{}</tr>",
                i + 1,
                if i == r.best { " ★" } else { "" },
                escape(&c.values.to_string()),
                cell(&format!("search.candidates.{i}.accuracy"), c.accuracy),
                cell(&format!("search.candidates.{i}.macro_f1"), c.macro_f1),
            );
        }
        let _ = writeln!(s, "</table></section>");
    }

    let curves: Vec<_> = m
        .heads
        .iter()
        .filter(|h| !h.training.curve.is_empty())
        .collect();
    if !curves.is_empty() {
        let _ = writeln!(
            s,
            "<section id=\"training-curves\"><h2>Training curves</h2><div class=\"figs\">"
        );
        for h in curves {
            let _ = writeln!(
                s,
                "<figure>{}</figure>",
                training_curve_svg(&h.name, &h.training)
            );
        }
        let _ = writeln!(s, "</div></section>");
    }
    let _ = writeln!(
        s,
        "<footer><p><small>Run folder {} · numbers also in metrics.json and report.md</small></p></footer></body></html>",
        escape(ctx.run_dir)
    );
}
