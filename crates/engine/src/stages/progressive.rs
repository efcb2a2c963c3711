//! `[progressive]`: a new trainable column over the frozen backbone's layers. Progressive networks (Rusu
//! et al., 2016) give a new task its own column with lateral connections from every layer of the frozen
//! one; here the column is ELMo's learned scalar mix (Peters et al., 2018) of every layer's sentence
//! embedding (masked mean of the embeddings' output and of each block's output) under a linear softmax head
//! ([`graft_heads::LayerMix`]). The comparison it exists for, at equal head capacity: the same head, trained
//! the same way, on the last layer alone — what a frozen backbone's features usually are.
//!
//! The per-layer embeddings come from graft-tune's forward pass over the backbone's float32 weights (equal to
//! ONNX Runtime's graph within float32 rounding), for the training and test rows.

use std::time::Instant;

use graft_config::techniques::ProgressivePlan;
use graft_eval::{Bootstrap, mcnemar};
use graft_heads::{Fit, LayerMix, Predict, Targets};
use graft_report::TechniqueReport;
use graft_tune::BertWeights;
use ndarray::{Array2, Axis};
use serde_json::json;

use super::{RunData, accuracy, f4};
use crate::PipelineError;

/// Every layer's sentence embedding of `rows`, side by side: `[rows, (blocks + 1) · hidden]`.
fn layer_features(
    d: &RunData<'_>,
    rows: &[usize],
    weights: &BertWeights,
    kit: &super::TuneKit<'_>,
    texts: &[String],
) -> Result<Array2<f32>, PipelineError> {
    let tokenizer = graft_backbone::TextTokenizer::open(&kit.tokenizer, kit.max_length)?;
    let chosen: Vec<&String> = rows.iter().map(|&r| &texts[r]).collect();
    let encoded = tokenizer.encode(&chosen)?;
    let ids: Vec<&[u32]> = (0..chosen.len()).map(|i| encoded.ids(i)).collect();
    let bar = crate::progress::stage_bar(
        d.progress,
        "every layer's embeddings",
        rows.len() as u64,
        0,
        "rows",
    );
    // Rows of similar length together: a batch pads to its longest row.
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by_key(|&i| ids[i].len());
    let (layers, width) = (weights.config().layers + 1, weights.config().hidden_size);
    let mut means = ndarray::Array3::<f32>::zeros((ids.len(), layers, width));
    for chunk in order.chunks(256) {
        let batch: Vec<&[u32]> = chunk.iter().map(|&i| ids[i]).collect();
        let part = graft_tune::layer_means(weights, &batch, 64)?;
        for (&i, row) in chunk.iter().zip(part.outer_iter()) {
            means.index_axis_mut(Axis(0), i).assign(&row);
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let n = ids.len();
    Ok(means
        .into_shape_with_order((n, layers * width))
        .expect("contiguous"))
}

pub(crate) fn run(p: &ProgressivePlan, d: &RunData<'_>) -> Result<TechniqueReport, PipelineError> {
    let clock = Instant::now();
    let (Some(kit), Some(texts)) = (d.tune, d.texts) else {
        return Err(d
            .diagnostic(
                &Some(p.span.clone()),
                "`[progressive]` needs the backbone's float32 weights",
            )
            .with_hint("use `model = \"minilm-l6\"` in [backbone]")
            .into());
    };
    let weights = BertWeights::read_safetensors(&kit.weights, kit.attention_heads)?;
    let layers = weights.config().layers + 1;
    let layer_clock = Instant::now();
    let x_train = layer_features(d, d.train, &weights, kit, texts)?;
    let x_test = layer_features(d, d.test, &weights, kit, texts)?;
    let layer_seconds = layer_clock.elapsed().as_secs_f64();
    let y: Vec<usize> = d.train.iter().map(|&r| d.labels[r]).collect();
    let targets = Targets::new(&y, d.classes.len())?;
    let params = LayerMix::params()
        .layers(layers)
        .epochs(p.epochs)
        .learning_rate(p.learning_rate)
        .alpha(p.alpha);
    let fit_clock = Instant::now();
    let mixed = params.clone().mix(true).fit(x_train.view(), &targets)?;
    let last = params.mix(false).fit(x_train.view(), &targets)?;
    let fit_seconds = fit_clock.elapsed().as_secs_f64();
    let truth: Vec<usize> = d.test.iter().map(|&r| d.labels[r]).collect();
    let mixed_pred = mixed.predict(x_test.view())?;
    let last_pred = last.predict(x_test.view())?;
    let bootstrap = Bootstrap {
        level: d.level,
        seed: graft_stdx::derive_seed(d.seed, "progressive bootstrap"),
        ..Bootstrap::default()
    };
    let interval = |pred: &[usize]| {
        bootstrap.interval(truth.len(), |rows| {
            rows.iter().filter(|&&i| pred[i] == truth[i]).count() as f64 / rows.len() as f64
        })
    };
    let (mixed_ci, last_ci) = (interval(&mixed_pred)?, interval(&last_pred)?);
    let paired = bootstrap.paired_accuracy(&truth, &mixed_pred, &last_pred)?;
    // The pipeline's own head on its features (a different head, trained its own way): for reference.
    let headline_pred = super::headline_test_predictions(d, d.features)?;
    let versus_headline = bootstrap.paired_accuracy(&truth, &mixed_pred, &headline_pred)?;
    let test = mcnemar(&truth, &mixed_pred, &last_pred)?;
    let (mixed_accuracy, last_accuracy) =
        (accuracy(&mixed_pred, &truth), accuracy(&last_pred, &truth));
    let verdict = verdict(&paired);
    let shares = mix_shares(&mixed);
    let cell = |a: f64, ci: &graft_eval::Interval| {
        format!("{} [{}, {}]", f4(a), f4(ci.lower), f4(ci.upper))
    };
    let percent = format!("{:.0}%", d.level * 100.0);
    Ok(TechniqueReport {
        curve: Vec::new(),
        technique: "progressive".to_owned(),
        title: "Progressive column: every layer vs the last".to_owned(),
        method: format!(
            "Every layer's sentence embedding of the frozen backbone (the masked mean of the embeddings' output \
             and of each of its {} blocks' outputs: {layers} layers of {} numbers; graft-tune's forward pass over \
             the float32 weights, {:.1} s for {} rows) feeds a new column: each layer standardised with the \
             training rows' statistics, a learned softmax mix of the layers and a scale γ (ELMo's scalar mix, \
             Peters et al., 2018), then a linear softmax head; mix, γ and head train together by full-batch Adam \
             ({} steps, rate {}, L2 {} on the head) on the training rows. At equal head capacity it is compared \
             with the same head trained the same way on the last layer alone, on the same test rows: paired \
             bootstrap of the difference ({percent}) and McNemar's exact test. The pipeline's headline head on \
             its own features is shown for reference.",
            layers - 1,
            weights.config().hidden_size,
            layer_seconds,
            d.train.len() + d.test.len(),
            p.epochs,
            p.learning_rate,
            p.alpha,
        ),
        finding: format!(
            "learned mix of {layers} layers {} vs last layer alone {} ({:+.4}, {percent} interval [{:+.4}, {:+.4}], \
             McNemar p = {:.2e}): {verdict}; the mix weights {}",
            f4(mixed_accuracy),
            f4(last_accuracy),
            paired.interval.estimate,
            paired.interval.lower,
            paired.interval.upper,
            test.p_value,
            shares.join(", "),
        ),
        columns: vec![
            "column".into(),
            format!("test accuracy [{percent} interval]"),
            "learned mix − last layer".into(),
        ],
        rows: vec![
            vec![
                format!(
                    "headline head on the pipeline's features ({})",
                    d.headline.name()
                ),
                f4(accuracy(&headline_pred, &truth)),
                format!(
                    "reference; learned mix − this head {:+.4} [{:+.4}, {:+.4}]",
                    versus_headline.interval.estimate,
                    versus_headline.interval.lower,
                    versus_headline.interval.upper
                ),
            ],
            vec![
                "last layer alone (same column)".into(),
                cell(last_accuracy, &last_ci),
                "–".into(),
            ],
            vec![
                format!("learned mix of {layers} layers"),
                cell(mixed_accuracy, &mixed_ci),
                format!(
                    "{:+.4} [{:+.4}, {:+.4}], McNemar p = {:.2e}",
                    paired.interval.estimate,
                    paired.interval.lower,
                    paired.interval.upper,
                    test.p_value
                ),
            ],
            vec![
                "mix weights (bottom first)".into(),
                shares.join(" · "),
                format!("γ = {:.3}", mixed.gamma()),
            ],
        ],
        details: json!({
            "layers": layers,
            "mix": mixed.mix(),
            "gamma": mixed.gamma(),
            "mixed_test_accuracy": mixed_accuracy,
            "mixed_interval": [mixed_ci.lower, mixed_ci.upper],
            "last_layer_test_accuracy": last_accuracy,
            "last_layer_interval": [last_ci.lower, last_ci.upper],
            "mixed_minus_last": paired,
            "mixed_minus_headline": versus_headline,
            "mcnemar": test,
            "training_loss": { "mixed": mixed.loss(), "last_layer": last.loss() },
            "layer_embeddings_seconds": layer_seconds,
            "fit_seconds": fit_seconds,
        }),
        seconds: clock.elapsed().as_secs_f64(),
    })
}

/// The paired difference of the mix over the last layer, in words.
fn verdict(paired: &graft_eval::PairedBootstrap) -> &'static str {
    if paired.interval.lower > 0.0 {
        "the column's view of every layer helps"
    } else if paired.interval.upper < 0.0 {
        "reading every layer hurts"
    } else {
        "no measurable difference from the last layer alone"
    }
}

/// Each layer's share of the learned mix, named: "embeddings 0.075", "block 1 0.213", ….
fn mix_shares(mixed: &graft_heads::FittedLayerMix) -> Vec<String> {
    mixed
        .mix()
        .iter()
        .enumerate()
        .map(|(l, s)| {
            let name = if l == 0 {
                "embeddings".to_owned()
            } else {
                format!("block {l}")
            };
            format!("{name} {s:.3}")
        })
        .collect()
}
