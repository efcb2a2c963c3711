//! `[prompt_templates]`: which prompt template suits the backbone and task, measured. Every row is embedded
//! through each template (`{text}` marks the text; each template is its own part of the feature cache) and
//! the headline head's settings are trained and scored on each, next to the texts as written. The chosen
//! template then goes to `[backbone] prompt`.

use crate::spanned::Spanned;
use graft_schema::techniques::RawPromptTemplates;
use serde_json::json;

use super::Modality;
use crate::Diagnostic;
use crate::checker::Checker;

/// `[prompt_templates]`, checked.
#[derive(Debug, Clone)]
pub struct PromptTemplatesPlan {
    pub templates: Vec<String>,
}

impl PromptTemplatesPlan {
    pub fn json(&self) -> serde_json::Value {
        json!({ "templates": self.templates })
    }
}

pub(crate) fn check(
    c: &Checker<'_>,
    raw: Spanned<RawPromptTemplates>,
    modality: Modality,
) -> Result<PromptTemplatesPlan, Diagnostic> {
    let span = raw.span();
    c.single_label(modality, span.clone(), "prompt_templates")?;
    if !modality.texts {
        return Err(c
            .error(
                span,
                "`[prompt_templates]` compares templates for a text backbone",
            )
            .with_hint("it needs text rows and a text `[backbone]`"));
    }
    if modality.prompted {
        return Err(c
            .error(span, "`[prompt_templates]` compares templates against the texts as written, but `[backbone] prompt` is set")
            .with_hint("remove `prompt` from `[backbone]` while comparing; put the winner there afterwards"));
    }
    let templates = raw.into_inner().templates;
    if templates.get_ref().is_empty() {
        return Err(c
            .error(templates.span(), "`templates` is empty")
            .with_hint("e.g. `templates = [\"Movie review: {text}\", \"query: {text}\"]`"));
    }
    if let Some(bad) = templates.get_ref().iter().find(|t| !t.contains("{text}")) {
        return Err(c
            .error(
                templates.span(),
                format!("template `{bad}` has no `{{text}}` placeholder"),
            )
            .with_hint("mark where each text goes, e.g. `\"query: {text}\"`"));
    }
    Ok(PromptTemplatesPlan {
        templates: templates.into_inner(),
    })
}
