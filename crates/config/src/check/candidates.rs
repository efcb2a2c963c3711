//! `[backbones] candidates`: backbones ranked on the validation split before the run. Each candidate is
//! `[backbone]` keys that replace the `[backbone]` table's, checked as a `[backbone]` table would be, so
//! every error points at the candidate's own key (or the base table's, for a key it inherits).

use crate::Diagnostic;
use crate::plan::{BackboneCandidate, Spans};
use crate::schema::{RawBackbone, RawBackbones, RawChunkPooling, RawLongTexts};
use crate::spanned::Spanned;

use super::Checker;

impl Checker<'_> {
    pub(super) fn check_candidates(
        &self,
        raw: Spanned<RawBackbones>,
        base: Option<&RawBackbone>,
        given_features: bool,
    ) -> Result<Vec<BackboneCandidate>, Diagnostic> {
        let section = raw.span();
        if given_features {
            return Err(self
                .error(
                    section,
                    "`[backbones]` does not apply: `[data] features` gives the features",
                )
                .with_hint(
                    "remove `[backbones]`, or `features` to extract the rows with each candidate",
                ));
        }
        let list = raw.into_inner().candidates;
        if list.get_ref().len() < 2 {
            return Err(self
                .error(
                    list.span(),
                    "`candidates` needs at least two backbones to rank",
                )
                .with_hint(
                    "e.g. candidates = [{ model = \"minilm-l6\" }, { model = \"minilm-l3\" }]",
                ));
        }
        let mut candidates: Vec<BackboneCandidate> = Vec::new();
        for candidate in list.into_inner() {
            let span = candidate.span();
            let candidate = candidate.into_inner();
            let label = label(&candidate, base);
            if candidates.iter().any(|c| c.label == label) {
                return Err(self
                    .error(span, format!("the candidate `{label}` is listed twice"))
                    .with_hint("each candidate must differ in its model or a setting"));
            }
            let merged = merged(base, candidate);
            let mut scratch = Spans::default();
            let backbone = self.check_backbone(Spanned::new(span.clone(), merged), &mut scratch)?;
            candidates.push(BackboneCandidate {
                label,
                backbone,
                span,
            });
        }
        Ok(candidates)
    }
}

/// The candidate's keys over the base table's; a candidate that names its model (`model` or `onnx`) takes
/// none of the base's model keys.
fn merged(base: Option<&RawBackbone>, c: RawBackbone) -> RawBackbone {
    let Some(base) = base else {
        return c;
    };
    let own_model = c.model.is_some() || c.onnx.is_some();
    let model_key = |mine: Option<Spanned<String>>, theirs: &Option<Spanned<String>>| {
        if own_model {
            mine
        } else {
            mine.or_else(|| theirs.clone())
        }
    };
    RawBackbone {
        model: model_key(c.model, &base.model),
        onnx: model_key(c.onnx, &base.onnx),
        tokenizer: model_key(c.tokenizer, &base.tokenizer),
        sha256: model_key(c.sha256, &base.sha256),
        output: c.output.or_else(|| base.output.clone()),
        pooling: c.pooling.or(base.pooling),
        normalize: c.normalize.or(base.normalize),
        max_length: c.max_length.or_else(|| base.max_length.clone()),
        long_texts: c.long_texts.or_else(|| base.long_texts.clone()),
        stride: c.stride.or_else(|| base.stride.clone()),
        chunk_pooling: c.chunk_pooling.or_else(|| base.chunk_pooling.clone()),
        batch_size: c.batch_size.or_else(|| base.batch_size.clone()),
        threads: c.threads.or_else(|| base.threads.clone()),
        sessions: c.sessions.or_else(|| base.sessions.clone()),
        cache: c.cache.or(base.cache),
        provider: c.provider.or(base.provider),
        device_id: c.device_id.or_else(|| base.device_id.clone()),
        fallback: c.fallback.or_else(|| base.fallback.clone()),
        image_size: c.image_size.or_else(|| base.image_size.clone()),
        resize: c.resize.or_else(|| base.resize.clone()),
        augment: c.augment.or_else(|| base.augment.clone()),
        prompt: c.prompt.or_else(|| base.prompt.clone()),
    }
}

/// A short name: the model, then the settings the candidate sets that change its features.
fn label(c: &RawBackbone, base: Option<&RawBackbone>) -> String {
    let model = c
        .model
        .as_ref()
        .or(c.onnx.as_ref())
        .or(base.and_then(|b| b.model.as_ref().or(b.onnx.as_ref())))
        .map_or_else(
            || "backbone".to_owned(),
            |m| {
                let m = m.get_ref();
                std::path::Path::new(m)
                    .file_name()
                    .map_or_else(|| m.clone(), |n| n.to_string_lossy().into_owned())
            },
        );
    let mut settings = Vec::new();
    if let Some(n) = &c.max_length {
        settings.push(format!("max_length {}", n.get_ref()));
    }
    if let Some(l) = &c.long_texts {
        settings.push(match l.get_ref() {
            RawLongTexts::Truncate => "truncate".to_owned(),
            RawLongTexts::Chunks => "chunks".to_owned(),
        });
    }
    if let Some(s) = &c.stride {
        settings.push(format!("stride {}", s.get_ref()));
    }
    if let Some(p) = &c.chunk_pooling {
        settings.push(match p.get_ref() {
            RawChunkPooling::Mean => "chunk mean".to_owned(),
            RawChunkPooling::Max => "chunk max".to_owned(),
        });
    }
    if let Some(p) = c.pooling {
        settings.push(format!("pooling {p:?}").to_lowercase());
    }
    if let Some(n) = c.normalize {
        settings.push(if n { "normalized" } else { "not normalized" }.to_owned());
    }
    if let Some(p) = &c.prompt {
        settings.push(format!("prompt {:?}", p.get_ref()));
    }
    if settings.is_empty() {
        model
    } else {
        format!("{model} ({})", settings.join(", "))
    }
}
