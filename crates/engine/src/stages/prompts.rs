//! `[prompt_templates]`: which prompt template suits the backbone and task, measured. Every row is embedded
//! through each template (`{text}` marks the text; each template is its own part of the feature cache) and
//! the headline head's settings are trained and scored on each, next to the texts as written. The chosen
//! template then goes to `[backbone] prompt`.

use graft_eval::{classification_report, mcnemar};
use serde_json::json;

use super::{RunData, f4};
use crate::PipelineError;
use graft_config::techniques::PromptTemplatesPlan;
use graft_report::TechniqueReport;

pub(crate) fn run(
    p: &PromptTemplatesPlan,
    d: &RunData<'_>,
) -> Result<TechniqueReport, PipelineError> {
    let clock = std::time::Instant::now();
    let embed = d.embed.expect("checked: text rows have a text backbone");
    let texts = d.texts.expect("checked: text rows");
    let y_test: Vec<usize> = d.test.iter().map(|&r| d.labels[r]).collect();
    let plain = super::headline_test_predictions(d, d.features)?;
    let plain_report = classification_report(&y_test, &plain, d.classes.len())?;
    let mut rows = vec![vec![
        "(texts as written)".to_owned(),
        f4(plain_report.accuracy),
        f4(plain_report.macro_f1),
        "–".to_owned(),
    ]];
    let mut results = Vec::new();
    // The template with the best test accuracy so far.
    let mut best: Option<(&str, f64)> = None;
    let mut extracted = 0;
    for template in &p.templates {
        let prompted: Vec<String> = texts
            .iter()
            .map(|t| graft_config::apply_prompt(template, t))
            .collect();
        let features = embed(None, &prompted, false)?;
        extracted += features.extracted;
        let predicted = super::headline_test_predictions(d, features.features.view())?;
        let report = classification_report(&y_test, &predicted, d.classes.len())?;
        let paired = mcnemar(&y_test, &predicted, &plain)?;
        rows.push(vec![
            format!("`{template}`"),
            f4(report.accuracy),
            f4(report.macro_f1),
            format!(
                "{:+.4} (McNemar {}/{}, p = {:.3})",
                report.accuracy - plain_report.accuracy,
                paired.a_only,
                paired.b_only,
                paired.p_value
            ),
        ]);
        results.push(
            json!({ "template": template, "test_accuracy": report.accuracy,
                             "test_macro_f1": report.macro_f1, "mcnemar_p": paired.p_value }),
        );
        if best.is_none_or(|(_, a)| report.accuracy > a) {
            best = Some((template, report.accuracy));
        }
    }
    let (best_template, best_accuracy) = best.expect("at least one template");
    Ok(TechniqueReport {
        curve: Vec::new(),
        technique: "prompt_templates".to_owned(),
        title: "Prompt templates".to_owned(),
        method: format!(
            "Every row embedded through each template ({extracted} rows extracted now, the rest from the feature \
             cache, where each template is its own key); the headline head's settings ({}) trained on the \
             training split of each and scored on the test split, paired with the texts as written (McNemar's \
             exact test).",
            d.headline.uncalibrated().label()
        ),
        finding: format!(
            "texts as written {:.4}; best template `{}` {:.4}",
            plain_report.accuracy, best_template, best_accuracy
        ),
        columns: vec![
            "template".to_owned(),
            "test accuracy".to_owned(),
            "macro-F1".to_owned(),
            "vs as written".to_owned(),
        ],
        rows,
        details: json!({ "as_written": { "test_accuracy": plain_report.accuracy,
                                          "test_macro_f1": plain_report.macro_f1 },
                         "templates": results }),
        seconds: clock.elapsed().as_secs_f64(),
    })
}
