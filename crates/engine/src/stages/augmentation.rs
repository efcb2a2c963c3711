//! `[augmentation]`: the effect of training-time augmentation, measured. Augmented views are added to the
//! training rows only (validation and test rows stay as they are), and the headline head's settings are
//! trained with and without them on the same rows: the whole training split and seeded draws of K rows per
//! class (augmentation matters most when labels are few).
//!
//! Texts: Easy Data Augmentation's random swap and random deletion (Wei & Zou, 2019): per view, n = ⌈α·l⌉
//! swaps of two random words and then each word deleted with probability p (one word always kept), seeded
//! per row and view; the views are embedded by the backbone through the feature cache. Images: the views
//! `[backbone] augment` already extracted (flips and random resized crops).

use graft_heads::{Targets, argmax_rows};
use ndarray::{Array2, Axis};
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use super::{RunData, accuracy, spread_json, with_interval};
use crate::PipelineError;
use crate::heads::train_head;
use graft_config::techniques::AugmentationPlan;
use graft_report::TechniqueReport;
use graft_stdx::derive_seed;

/// One EDA view of `text`: random swaps, then random deletion (Wei & Zou, 2019).
pub(crate) fn eda(text: &str, swap: f64, deletion: f64, rng: &mut ChaCha8Rng) -> String {
    let mut words: Vec<&str> = text.split_whitespace().collect();
    if words.len() > 1 && swap > 0.0 {
        let swaps = (swap * words.len() as f64).ceil() as usize;
        for _ in 0..swaps {
            let (a, b) = (
                rng.random_range(0..words.len()),
                rng.random_range(0..words.len()),
            );
            words.swap(a, b);
        }
    }
    if words.len() > 1 && deletion > 0.0 {
        let kept: Vec<&str> = words
            .iter()
            .copied()
            .filter(|_| rng.random::<f64>() >= deletion)
            .collect();
        words = if kept.is_empty() {
            vec![*words.choose(rng).expect("at least two words")]
        } else {
            kept
        };
    }
    words.join(" ")
}

pub(crate) fn run(p: &AugmentationPlan, d: &RunData<'_>) -> Result<TechniqueReport, PipelineError> {
    let clock = std::time::Instant::now();
    let (views, source) = augmented_views(p, d)?;
    let n_classes = d.classes.len();
    let spec = d.headline.uncalibrated();
    let y_test: Vec<usize> = d.test.iter().map(|&r| d.labels[r]).collect();
    let x_test = d.features.select(Axis(0), d.test);
    let position: std::collections::HashMap<usize, usize> =
        d.train.iter().enumerate().map(|(i, &r)| (r, i)).collect();
    // Test accuracy without and with the views of `rows` (all from the training split).
    let score = |rows: &[usize]| -> Result<(f64, f64), PipelineError> {
        let y: Vec<usize> = rows.iter().map(|&r| d.labels[r]).collect();
        let x = d.features.select(Axis(0), rows);
        let at: Vec<usize> = rows.iter().map(|r| position[r]).collect();
        let view_rows: Vec<Array2<f32>> = views.iter().map(|v| v.select(Axis(0), &at)).collect();
        let parts: Vec<_> = std::iter::once(x.view())
            .chain(view_rows.iter().map(|m| m.view()))
            .collect();
        let x_aug = ndarray::concatenate(Axis(0), &parts).expect("same width");
        let y_aug = y.repeat(1 + views.len());
        let mut out = [0.0; 2];
        for (slot, (x, y)) in [(x.view(), &y), (x_aug.view(), &y_aug)]
            .into_iter()
            .enumerate()
        {
            let (head, _) = train_head(&spec, None, x, &Targets::new(y, n_classes)?, None)?;
            out[slot] = accuracy(
                &argmax_rows(head.predict_proba(x_test.view())?.view()),
                &y_test,
            );
        }
        Ok((out[0], out[1]))
    };
    let per_k = super::paired_draws(&p.per_class, p.repeats, d.level, |k, r| {
        let rows = crate::curve::draw(
            d.train,
            d.labels,
            n_classes,
            k,
            derive_seed(d.seed, &format!("augmentation draw {k} {r}")),
        );
        score(&rows)
    })?;
    let whole = score(d.train)?;
    let mut rows = Vec::new();
    let mut points = Vec::new();
    for (k, plain, augmented) in &per_k {
        rows.push(vec![
            format!("{k} per class"),
            with_interval(plain),
            with_interval(augmented),
            format!("{:+.4}", augmented.mean - plain.mean),
        ]);
        points.push(json!({ "per_class": k, "without": spread_json(plain),
                            "with": spread_json(augmented) }));
    }
    rows.push(vec![
        format!("whole training split ({} rows)", d.train.len()),
        super::f4(whole.0),
        super::f4(whole.1),
        format!("{:+.4}", whole.1 - whole.0),
    ]);
    let (first_k, first_without, first_with) = (per_k[0].0, per_k[0].1.mean, per_k[0].2.mean);
    Ok(TechniqueReport {
        curve: Vec::new(),
        technique: "augmentation".to_owned(),
        title: "Augmentation: training with and without augmented views".to_owned(),
        method: format!(
            "{source}, training rows only. The headline head's settings ({}) are trained on the same rows \
             without and with their views and scored on the test split: {} seeded draws per K from the training \
             split (mean, 95% interval over the draws) and the whole split.",
            spec.label(),
            p.repeats
        ),
        finding: format!(
            "{first_k} per class: {first_without:.4} without vs {first_with:.4} with augmentation; whole training split: \
             {:.4} vs {:.4}",
            whole.0, whole.1
        ),
        columns: vec![
            "training rows".to_owned(),
            "without (95% CI)".to_owned(),
            "with augmentation (95% CI)".to_owned(),
            "difference".to_owned(),
        ],
        rows,
        details: json!({ "points": points, "whole_split": { "without": whole.0, "with": whole.1 },
                         "views": views.len() }),
        seconds: clock.elapsed().as_secs_f64(),
    })
}

/// The augmented views of the training rows, one matrix per view with rows aligned with the training
/// split, and the sentence that says how they were made.
fn augmented_views(
    p: &AugmentationPlan,
    d: &RunData<'_>,
) -> Result<(Vec<Array2<f32>>, String), PipelineError> {
    let (views, source): (Vec<Array2<f32>>, String) = if p.texts {
        let embed = d.embed.expect("checked: text rows have a text backbone");
        let texts = d.texts.expect("checked: text rows");
        let mut augmented = Vec::with_capacity(d.train.len() * p.views);
        for view in 0..p.views {
            for &r in d.train {
                let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(
                    d.seed,
                    &format!("augmentation {r} {view}"),
                ));
                augmented.push(eda(&texts[r], p.swap, p.deletion, &mut rng));
            }
        }
        let features = embed(None, &augmented, false)?.features;
        let views = (0..p.views)
            .map(|v| {
                features
                    .slice(ndarray::s![v * d.train.len()..(v + 1) * d.train.len(), ..])
                    .to_owned()
            })
            .collect();
        (
            views,
            format!(
                "{} EDA view(s) per training text (random swap α = {}, random deletion p = {}; Wei & Zou, 2019)",
                p.views, p.swap, p.deletion
            ),
        )
    } else {
        (
            d.train_views.to_vec(),
            format!(
                "{} augmented view(s) per training image from `[backbone] augment`",
                d.train_views.len()
            ),
        )
    };
    if views.is_empty() {
        return Err(d
            .diagnostic(&Some(p.span.clone()), "no augmented views were made")
            .with_hint("set `views` (texts) or `[backbone] augment` (images)")
            .into());
    }
    Ok((views, source))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eda_views_are_seeded_keep_words_and_differ() {
        let text = "the film is a quiet triumph of tone and craft";
        let view = |seed| eda(text, 0.1, 0.1, &mut ChaCha8Rng::seed_from_u64(seed));
        assert_eq!(view(1), view(1));
        let words: Vec<&str> = text.split_whitespace().collect();
        for seed in 0..20 {
            let v = view(seed);
            assert!(!v.is_empty());
            assert!(v.split_whitespace().all(|w| words.contains(&w)), "{v}");
        }
        assert!((0..20).any(|s| view(s) != text));
        assert_eq!(
            eda("one", 0.5, 0.9, &mut ChaCha8Rng::seed_from_u64(0)),
            "one"
        );
    }
}
