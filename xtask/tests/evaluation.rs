//! Evidence of transfer on the tiny fixture: the learning curve's draws, its baseline and the data-efficiency
//! summary, reproducible from the seed.

use std::path::Path;
use std::process::Command;

mod common;

use common::{metrics, repo, run_pipeline};

#[test]
fn the_learning_curve_compares_transfer_with_tf_idf_on_the_same_draws() {
    let runs = tempfile::tempdir().unwrap();
    let run_dir = run_pipeline("fixtures/pipelines/tiny-curve.toml", runs.path());
    let recorded = metrics(&run_dir);
    let curve = &recorded["learning_curve"];
    let points = curve["points"].as_array().unwrap();
    // shots = [4, 1, 2] sorted, plus the whole training split (20 rows).
    let per_class: Vec<serde_json::Value> = points.iter().map(|p| p["per_class"].clone()).collect();
    assert_eq!(
        per_class,
        [1.into(), 2.into(), 4.into(), serde_json::Value::Null]
    );
    let rows: Vec<u64> = points.iter().map(|p| p["rows"].as_u64().unwrap()).collect();
    assert_eq!(rows, [2, 4, 8, 20]);
    for p in points {
        let n = if p["per_class"].is_null() { 1 } else { 3 };
        for side in ["transfer", "baseline"] {
            let s = &p[side];
            assert_eq!(s["values"].as_array().unwrap().len(), n);
            let (lo, mean, hi) = (
                s["lower"].as_f64().unwrap(),
                s["mean"].as_f64().unwrap(),
                s["upper"].as_f64().unwrap(),
            );
            assert!(
                (0.0..=1.0).contains(&mean) && lo <= mean && mean <= hi,
                "{s}"
            );
        }
    }
    // The tiny embedder separates the classes from one example each; TF-IDF of two sentences cannot.
    assert_eq!(points[0]["transfer"]["mean"], 1.0);
    assert!(points[0]["baseline"]["mean"].as_f64().unwrap() < 0.9);
    assert_eq!(curve["efficiency"][0]["baseline_needs"], "never");
    let report = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    assert!(
        report.contains("## Learning curve: transfer vs from scratch"),
        "{report}"
    );
    // The plot's x axis labels every K drawn and the whole split ("all"), not only the log axis's 1.
    let html = std::fs::read_to_string(run_dir.join("report.html")).unwrap();
    let start = html
        .find("Learning curve: transfer vs from scratch (test accuracy)")
        .unwrap();
    let plot = &html[start..start + html[start..].find("</svg>").unwrap()];
    for label in ["1", "2", "4", "all"] {
        assert!(
            plot.contains(&format!(">\n{label}\n</text>")),
            "no x tick `{label}` in the learning-curve plot"
        );
    }
    assert!(report.contains("| all | 20 |"), "{report}");

    // Same file, same seed: the same draws and scores.
    let again = tempfile::tempdir().unwrap();
    let second = metrics(&run_pipeline(
        "fixtures/pipelines/tiny-curve.toml",
        again.path(),
    ));
    assert_eq!(second["learning_curve"]["points"], curve["points"]);
}

#[test]
fn compare_pairs_runs_on_the_same_test_rows_and_says_when_it_cannot() {
    let runs = tempfile::tempdir().unwrap();
    let tiny = run_pipeline("fixtures/pipelines/tiny.toml", runs.path());
    let heads = run_pipeline("fixtures/pipelines/tiny-heads.toml", runs.path());
    let features = run_pipeline("fixtures/pipelines/tiny-features.toml", runs.path());
    let out = runs.path().join("comparison");
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(repo())
        .arg("compare")
        .args([&tiny, &heads, &features])
        .arg("--output")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("(reference)"), "{stdout}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("comparison.json")).unwrap())
            .unwrap();
    let compared = json["runs"].as_array().unwrap();
    assert_eq!(compared.len(), 3);
    // Same data, ratios and seed: the same 10 test rows, so the runs pair.
    let paired = &compared[1]["versus_first"];
    let (a, b) = (
        paired["mcnemar"]["a_only"].as_u64().unwrap(),
        paired["mcnemar"]["b_only"].as_u64().unwrap(),
    );
    let difference = compared[1]["test"]["accuracy"].as_f64().unwrap()
        - compared[0]["test"]["accuracy"].as_f64().unwrap();
    assert!((difference - (a as f64 - b as f64) / 10.0).abs() < 1e-12);
    // Other data: other rows, no pairing, and the reason.
    assert!(compared[2]["versus_first"].is_null());
    assert!(
        compared[2]["unpaired_because"]
            .as_str()
            .unwrap()
            .contains("different test rows"),
        "{}",
        compared[2]
    );
    assert!(
        std::fs::read_to_string(out.join("comparison.md"))
            .unwrap()
            .contains("| run | head |")
    );

    // A folder that is not a run is an error with a hint, not a panic.
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(repo())
        .args(["compare", "fixtures", "fixtures/data", "--output"])
        .arg(runs.path().join("never"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains("is not a graft run folder") && err.contains("hint:"),
        "{err}"
    );
}

/// Every `data-key="…" data-value="…"` of the page, resolved in metrics.json.
fn check_html_against_metrics(run_dir: &Path, sections: &[&str]) -> usize {
    let html = std::fs::read_to_string(run_dir.join("report.html")).unwrap();
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("metrics.json")).unwrap())
            .unwrap();
    for id in sections {
        assert!(
            html.contains(&format!("id=\"{id}\"")),
            "section {id} missing"
        );
    }
    // Self-contained: no script, no external resource; links only within the page.
    for forbidden in ["<script", " src=", "<link"] {
        assert!(!html.contains(forbidden), "{forbidden} in report.html");
    }
    assert!(
        html.split(" href=\"")
            .skip(1)
            .all(|link| link.starts_with('#'))
    );
    let mut checked = 0;
    for piece in html.split("data-key=\"").skip(1) {
        let (key, rest) = piece.split_once('"').unwrap();
        let value: f64 = rest
            .split_once("data-value=\"")
            .unwrap()
            .1
            .split_once('"')
            .unwrap()
            .0
            .parse()
            .unwrap();
        let mut node = &metrics;
        for part in key.split('.') {
            node = match part.parse::<usize>() {
                Ok(i) => &node[i],
                Err(_) => &node[part],
            };
        }
        // serde_json's default float parser may land one ulp off the shortest representation both files
        // were written from; anything more is a mismatch.
        let recorded = node
            .as_f64()
            .unwrap_or_else(|| panic!("{key} is not a number in metrics.json"));
        assert!(
            (recorded - value).abs() <= 4.0 * f64::EPSILON * recorded.abs().max(1.0),
            "{key}: report.html {value} vs metrics.json {recorded}"
        );
        checked += 1;
    }
    checked
}

#[test]
fn the_html_report_has_every_section_and_the_numbers_of_metrics_json() {
    let runs = tempfile::tempdir().unwrap();
    let curve_run = run_pipeline("fixtures/pipelines/tiny-curve.toml", runs.path());
    let n = check_html_against_metrics(
        &curve_run,
        &[
            "summary",
            "metrics",
            "per-class",
            "figures",
            "confusion",
            "reliability",
            "learning-curve",
        ],
    );
    assert!(n >= 20, "only {n} numbers tagged");
    let search_run = run_pipeline("fixtures/pipelines/tiny-search.toml", runs.path());
    let n = check_html_against_metrics(
        &search_run,
        &[
            "summary",
            "metrics",
            "per-class",
            "confusion",
            "search",
            "training-curves",
        ],
    );
    assert!(n >= 20, "only {n} numbers tagged");
    let html = std::fs::read_to_string(search_run.join("report.html")).unwrap();
    assert!(
        html.matches("<svg").count() >= 3,
        "confusion, reliability and training-curve plots"
    );
}

#[test]
fn every_head_is_cross_validated_with_group_folds_when_a_group_column_is_named() {
    let runs = tempfile::tempdir().unwrap();
    let run_dir = run_pipeline("fixtures/pipelines/tiny-cv.toml", runs.path());
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("metrics.json")).unwrap())
            .unwrap();
    for head in metrics["heads"].as_array().unwrap() {
        let cv = &head["cross_validation"];
        assert_eq!(cv["folds"], 3);
        assert_eq!(cv["grouped"], true);
        let per_fold: Vec<f64> = cv["accuracy_per_fold"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(per_fold.len(), 3);
        let mean = per_fold.iter().sum::<f64>() / 3.0;
        assert!((mean - cv["accuracy_mean"].as_f64().unwrap()).abs() < 1e-12);
    }
    check_html_against_metrics(&run_dir, &["cross-validation"]);
    let report = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    assert!(
        report.contains("group k-fold: a group's rows stay in one fold"),
        "{report}"
    );
}

/// Every `font-size` the page's plots use, and the cells of its tables.
fn plot_font_sizes(html: &str) -> Vec<u32> {
    html.match_indices("font-size=\"")
        .map(|(at, key)| {
            let rest = &html[at + key.len()..];
            rest[..rest.find('"').unwrap()].parse::<f64>().unwrap() as u32
        })
        .collect()
}

/// The plots are readable: text at least the body size (16 px), a count on every reliability bin, the kept
/// epoch and the early stop marked, whole-number epoch ticks; numbers carry their metrics.json path on
/// hover; one head gets no comparison table, several get one without empty cells; curve intervals stay in
/// [0, 1].
#[test]
fn the_plots_and_tables_are_readable() {
    let runs = tempfile::tempdir().unwrap();
    let heads = run_pipeline("fixtures/pipelines/tiny-heads.toml", runs.path());
    let html = std::fs::read_to_string(heads.join("report.html")).unwrap();
    let sizes = plot_font_sizes(&html);
    assert!(
        !sizes.is_empty() && sizes.iter().all(|&s| s >= 16),
        "{sizes:?}"
    );
    assert!(
        html.contains(">\nn="),
        "reliability bins carry their counts"
    );
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(heads.join("metrics.json")).unwrap())
            .unwrap();
    let mlp = metrics["heads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "mlp")
        .unwrap();
    let best = mlp["training"]["best_epoch"]
        .as_u64()
        .expect("the MLP keeps its best epoch");
    assert!(
        html.contains(&format!("best epoch (kept): {best}")),
        "the kept epoch is marked"
    );
    if mlp["training"]["stopped_early"] == true {
        assert!(html.contains("early stop: "));
    }
    assert!(html.contains("Heads side by side"));
    assert!(!html.contains("<td></td>") && !html.contains("<td>–</td><td>–</td>"));
    let tagged = html.matches("data-key=\"").count();
    let titled = html.matches("title=\"metrics.json: ").count();
    assert_eq!(
        tagged, titled,
        "every tagged number names its metrics.json path on hover"
    );

    let one = run_pipeline("fixtures/pipelines/tiny-curve.toml", runs.path());
    let html = std::fs::read_to_string(one.join("report.html")).unwrap();
    assert!(
        !html.contains("Heads side by side"),
        "one head: nothing to compare"
    );
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(one.join("metrics.json")).unwrap()).unwrap();
    for p in metrics["learning_curve"]["points"].as_array().unwrap() {
        for line in ["transfer", "baseline"] {
            let (lo, hi) = (
                p[line]["lower"].as_f64().unwrap(),
                p[line]["upper"].as_f64().unwrap(),
            );
            assert!(
                (0.0..=1.0).contains(&lo) && (0.0..=1.0).contains(&hi),
                "{p}"
            );
            assert_eq!(p[line]["level"], 0.95);
        }
    }
}
