//! `[fusion]`: features of a second frozen text backbone next to the pipeline's, for the same rows — the
//! lateral use of several frozen models (Rusu et al., 2016, "Progressive neural networks", with frozen
//! columns and no adapters). The fused row is the concatenation of both embeddings; the headline head's
//! settings are trained on each backbone alone and on the fusion, all on the same split, and the fusion is
//! paired with the pipeline's backbone on the test rows (McNemar's exact test).

use graft_eval::{classification_report, mcnemar};
use ndarray::Axis;
use serde_json::json;

use super::{RunData, f4};
use crate::PipelineError;
use graft_config::techniques::FusionPlan;
use graft_report::TechniqueReport;

pub(crate) fn run(p: &FusionPlan, d: &RunData<'_>) -> Result<TechniqueReport, PipelineError> {
    let clock = std::time::Instant::now();
    let embed = d.embed.expect("checked: text rows have a text backbone");
    let texts = d.texts.expect("checked: text rows");
    let second = embed(Some(&p.backbone), texts, false)?;
    let first = d.features;
    let fused = ndarray::concatenate(Axis(1), &[first, second.features.view()]).expect("same rows");
    let y_test: Vec<usize> = d.test.iter().map(|&r| d.labels[r]).collect();
    let n_classes = d.classes.len();
    let pipeline_name = super::pipeline_backbone_name(d);
    let projected = match p.project {
        Some(k) if k > fused.ncols() => {
            return Err(d
                .diagnostic(
                    &Some(p.span.clone()),
                    format!(
                        "`project = {k}` exceeds the {} fused dimensions",
                        fused.ncols()
                    ),
                )
                .with_hint("project onto fewer axes than the two embeddings have together")
                .into());
        }
        Some(k) => {
            let pca = graft_heads::FittedTransform::pca_whiten(
                fused.select(Axis(0), d.train).view(),
                Some(k),
                1e-5,
            )?;
            Some(pca.transform(fused.view())?)
        }
        None => None,
    };
    let mut variants = vec![
        (pipeline_name.clone(), first),
        (p.backbone.name(), second.features.view()),
        (format!("{pipeline_name} ⊕ {}", p.backbone), fused.view()),
    ];
    if let Some(x) = &projected {
        variants.push((
            format!(
                "{pipeline_name} ⊕ {}, PCA-whitened to {}",
                p.backbone,
                x.ncols()
            ),
            x.view(),
        ));
    }
    let mut predictions = Vec::new();
    let mut rows = Vec::new();
    let mut results = Vec::new();
    for (name, x) in &variants {
        let predicted = super::headline_test_predictions(d, *x)?;
        let report = classification_report(&y_test, &predicted, n_classes)?;
        rows.push(vec![
            name.clone(),
            x.ncols().to_string(),
            f4(report.accuracy),
            f4(report.macro_f1),
        ]);
        results.push(
            json!({ "features": name, "dimension": x.ncols(), "test_accuracy": report.accuracy,
                             "test_macro_f1": report.macro_f1 }),
        );
        predictions.push(predicted);
    }
    let paired = mcnemar(&y_test, &predictions[2], &predictions[0])?;
    let accuracy = |i: usize| results[i]["test_accuracy"].as_f64().unwrap_or(f64::NAN);
    Ok(TechniqueReport {
        curve: Vec::new(),
        technique: "fusion".to_owned(),
        title: "Feature fusion across backbones".to_owned(),
        method: format!(
            "A second frozen backbone, {}, embeds the same rows ({} extracted now, the rest from the feature \
             cache); its embedding is concatenated with the pipeline's{}. The headline head's settings ({}) are \
             trained on the training split of each feature set and scored on the test split; fused vs the \
             pipeline's backbone paired on the test rows by McNemar's exact test.",
            p.backbone,
            second.extracted,
            p.project.map_or_else(String::new, |k| format!(
                " and, as a projection, PCA-whitened onto {k} axes fitted on the training rows"
            )),
            d.headline.uncalibrated().label()
        ),
        finding: format!(
            "test accuracy {:.4} ({pipeline_name}), {:.4} ({}), {:.4} fused ({:+.4} vs {pipeline_name}; McNemar \
             {}/{}, p = {:.3}){}",
            accuracy(0),
            accuracy(1),
            p.backbone,
            accuracy(2),
            accuracy(2) - accuracy(0),
            paired.a_only,
            paired.b_only,
            paired.p_value,
            projected.as_ref().map_or_else(String::new, |x| format!(
                "; projected onto {} axes {:.4}",
                x.ncols(),
                accuracy(3)
            ))
        ),
        columns: vec![
            "features".to_owned(),
            "dimension".to_owned(),
            "test accuracy".to_owned(),
            "macro-F1".to_owned(),
        ],
        rows,
        details: json!({ "variants": results, "fused_vs_pipeline_mcnemar": {
            "fused_only": paired.a_only, "pipeline_only": paired.b_only, "p_value": paired.p_value } }),
        seconds: clock.elapsed().as_secs_f64(),
    })
}
