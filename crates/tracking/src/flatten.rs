//! A run folder's records as MLflow sees runs: flat parameters, flat metrics and metric series.

use graft_report::Manifest;
use serde_json::Value;

/// Subtrees of `metrics.json` that are not single numbers: confusion matrices, reliability bins, the draws
/// behind a spread, a technique's formatted table; the learning curve goes as [`Series`].
const NOT_METRICS: [&str; 5] = [
    "confusion",
    "reliability",
    "values",
    "columns",
    "learning_curve",
];

/// MLflow's longest parameter value (MLflow 2.x and 3.x servers).
const PARAM_VALUE_LIMIT: usize = 6000;

/// A metric logged at several steps.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The metric's key.
    pub key: String,
    /// (step, value), in step order.
    pub points: Vec<(i64, f64)>,
}

/// Every finite number of `metrics.json` (as JSON) under its path, `.`-joined: entries of arrays of records
/// by their `name`, `class`, `technique` or `backbone` (else their index). Confusion matrices, reliability
/// bins, bootstrap draws and the learning curve are left out (the curve is in [`metric_series`]).
pub fn metrics_of(metrics: &Value) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    walk(metrics, "", &mut out, &mut Vec::new());
    out
}

/// Metric series: per-epoch training curves (step: the epoch) and the learning curve (step: the training
/// rows drawn; `learning_curve.transfer.mean`, `.lower`, `.upper`, the same for `baseline` and `tuned`).
pub fn metric_series(metrics: &Value) -> Vec<Series> {
    let mut series = Vec::new();
    walk(metrics, "", &mut Vec::new(), &mut series);
    if let Some(points) = metrics
        .pointer("/learning_curve/points")
        .and_then(Value::as_array)
    {
        for line in ["transfer", "baseline", "tuned"] {
            for stat in ["mean", "lower", "upper"] {
                let points: Vec<(i64, f64)> = points
                    .iter()
                    .filter_map(|p| {
                        let step = p.get("rows")?.as_i64()?;
                        let value = p.get(line)?.get(stat)?.as_f64()?;
                        Some((step, value))
                    })
                    .collect();
                if !points.is_empty() {
                    series.push(Series {
                        key: format!("learning_curve.{line}.{stat}"),
                        points,
                    });
                }
            }
        }
    }
    series
}

/// The resolved pipeline's settings under their paths (`backbone.max_length`), lists as JSON text, with the
/// pipeline file and its sha256.
pub fn params_of(manifest: &Manifest) -> Vec<(String, String)> {
    let mut out = vec![
        (
            "pipeline.file".to_owned(),
            manifest.pipeline.file.display().to_string(),
        ),
        (
            "pipeline.sha256".to_owned(),
            manifest.pipeline.sha256.clone(),
        ),
    ];
    let resolved = serde_json::to_value(&manifest.pipeline.resolved).expect("settings serialise");
    settings(&resolved, "", &mut out);
    out
}

fn settings(v: &Value, path: &str, out: &mut Vec<(String, String)>) {
    let text = match v {
        Value::Null => return,
        Value::Object(map) => {
            for (k, x) in map {
                settings(x, &join(path, k), out);
            }
            return;
        }
        // A list of tagged tables (`heads`: `{"logistic": {…}, "calibrate": false}`): each under its tag,
        // `heads.logistic.c`, its other keys beside the tag's own.
        Value::Array(items) if !items.is_empty() && items.iter().all(tagged) => {
            for item in items {
                let map = item.as_object().expect("tagged tables are objects");
                let (tag, inner) = map.iter().find(|(_, x)| x.is_object()).expect("tagged");
                let at = join(path, tag);
                settings(inner, &at, out);
                for (k, x) in map.iter().filter(|(k, _)| *k != tag) {
                    settings(x, &join(&at, k), out);
                }
            }
            return;
        }
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let text = if text.chars().count() > PARAM_VALUE_LIMIT {
        text.chars().take(PARAM_VALUE_LIMIT - 1).collect::<String>() + "…"
    } else {
        text
    };
    out.push((key(path), text));
}

/// A table with exactly one table inside: an externally tagged setting.
fn tagged(v: &Value) -> bool {
    v.as_object()
        .is_some_and(|m| m.values().filter(|x| x.is_object()).count() == 1)
}

fn walk(v: &Value, path: &str, flat: &mut Vec<(String, f64)>, series: &mut Vec<Series>) {
    match v {
        Value::Number(n) => {
            if let Some(x) = n.as_f64().filter(|x| x.is_finite()) {
                flat.push((key(path), x));
            }
        }
        Value::Object(map) => {
            for (k, x) in map {
                if !NOT_METRICS.contains(&k.as_str()) {
                    walk(x, &join(path, k), flat, series);
                }
            }
        }
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_object) => {
            if items
                .iter()
                .all(|i| i.get("epoch").is_some_and(Value::is_u64))
            {
                epochs(items, path, series);
                return;
            }
            let mut used: Vec<String> = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let mut segment = ["name", "class", "technique", "backbone"]
                    .iter()
                    .find_map(|f| item.get(*f).and_then(Value::as_str))
                    .map_or_else(|| i.to_string(), str::to_owned);
                if used.contains(&segment) {
                    segment = format!("{segment}.{i}");
                }
                walk(item, &join(path, &segment), flat, series);
                used.push(segment);
            }
        }
        _ => {}
    }
}

/// Per-epoch records (`{"epoch": 1, "train_loss": …}`) as one series per number they hold.
fn epochs(items: &[Value], path: &str, series: &mut Vec<Series>) {
    let Some(first) = items[0].as_object() else {
        return;
    };
    for field in first.keys().filter(|f| *f != "epoch") {
        let points: Vec<(i64, f64)> = items
            .iter()
            .filter_map(|i| {
                Some((
                    i.get("epoch")?.as_i64()?,
                    i.get(field)?.as_f64().filter(|x| x.is_finite())?,
                ))
            })
            .collect();
        if !points.is_empty() {
            series.push(Series {
                key: key(&join(path, field)),
                points,
            });
        }
    }
}

fn join(path: &str, segment: &str) -> String {
    if path.is_empty() {
        segment.to_owned()
    } else {
        format!("{path}.{segment}")
    }
}

/// A key MLflow accepts: letters, digits, `_ - . /` and spaces, at most 250 characters.
fn key(path: &str) -> String {
    path.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-. /".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(250)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_are_found_by_path_and_records_by_name() {
        let metrics = json!({
            "test": {
                "accuracy": 0.75,
                "intervals": { "accuracy": { "estimate": 0.75, "lower": 0.7, "upper": 0.8, "level": 0.95 } },
                "per_class": [{ "class": "pos", "f1": 0.7 }, { "class": "neg/é", "f1": 0.8 }],
                "confusion": [[3, 1], [1, 3]],
            },
            "heads": [{ "name": "logistic", "fit_seconds": 0.1 }, { "name": "logistic", "fit_seconds": 0.2 }],
            "training": { "curve": [{ "epoch": 1, "train_loss": 0.5 }, { "epoch": 2, "train_loss": 0.4 }] },
            "task": "single-label",
            "learning_curve": { "points": [
                { "per_class": 1, "rows": 2, "transfer": { "mean": 0.6, "lower": 0.5, "upper": 0.7 } },
                { "per_class": null, "rows": 40, "transfer": { "mean": 0.8, "lower": 0.8, "upper": 0.8 } }
            ] },
        });
        let flat = metrics_of(&metrics);
        let get = |k: &str| flat.iter().find(|(key, _)| key == k).map(|(_, v)| *v);
        assert_eq!(get("test.accuracy"), Some(0.75));
        assert_eq!(get("test.intervals.accuracy.lower"), Some(0.7));
        assert_eq!(get("test.per_class.pos.f1"), Some(0.7));
        assert_eq!(get("test.per_class.neg/_.f1"), Some(0.8));
        assert_eq!(get("heads.logistic.fit_seconds"), Some(0.1));
        assert_eq!(get("heads.logistic.1.fit_seconds"), Some(0.2));
        assert!(
            flat.iter()
                .all(|(k, _)| !k.contains("confusion") && !k.starts_with("learning_curve"))
        );
        assert_eq!(flat.len(), 9, "{flat:?}");
        let series = metric_series(&metrics);
        let loss = series
            .iter()
            .find(|s| s.key == "training.curve.train_loss")
            .unwrap();
        assert_eq!(loss.points, [(1, 0.5), (2, 0.4)]);
        let curve = series
            .iter()
            .find(|s| s.key == "learning_curve.transfer.mean")
            .unwrap();
        assert_eq!(curve.points, [(2, 0.6), (40, 0.8)]);
        assert!(
            !series
                .iter()
                .any(|s| s.key.starts_with("learning_curve.baseline"))
        );
    }
}
