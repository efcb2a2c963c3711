//! `[backbone]`: the model (registered or files), extraction settings, image preprocessing.

use std::ops::Range;

use crate::spanned::Spanned;
use graft_assets::Registry;
use graft_backbone::{
    Augmentation, ChunkPooling, LongTexts, Pooling, Provider, TextBackboneConfig,
};

use crate::Diagnostic;
use crate::schema::{
    RawAugment, RawBackbone, RawChunkPooling, RawLongTexts, RawPooling, RawProvider,
};

use super::Checker;
use crate::plan::*;

impl Checker<'_> {
    pub(super) fn check_backbone(
        &self,
        backbone: Spanned<RawBackbone>,
        spans: &mut Spans,
    ) -> Result<BackbonePlan, Diagnostic> {
        let section = backbone.span();
        let b = backbone.into_inner();
        let registry = Registry::builtin();
        spans.sha256 = b.sha256.as_ref().map(Spanned::span);
        let mut config = TextBackboneConfig::default();
        let mut image = None;
        // Whether a model folder's sentence_bert_config.json chose `max_length` (else the default applies).
        let mut folder_sets_length = false;
        let source = match (&b.model, &b.onnx) {
            (Some(_), Some(onnx)) => {
                return Err(self
                    .error(onnx.span(), "`[backbone]` gives both `model` and `onnx`")
                    .with_hint("keep one: `model` names a registered backbone, `onnx` + `tokenizer` are files of your own"));
            }
            (None, None) => {
                return Err(self.error(section, "`[backbone]` needs `model` or `onnx`").with_hint(format!(
                    "registered backbones: {}; or give `onnx = \"model.onnx\"` and `tokenizer = \"tokenizer.json\"`",
                    registry.model_names().join(", ")
                )));
            }
            (Some(name), None) if registry.image_models.contains_key(name.get_ref()) => {
                spans.backbone_model = Some(name.span());
                image = Some(self.check_image_backbone(&b, name, registry, section.clone())?);
                ModelSource::Registry(name.get_ref().clone())
            }
            (Some(name), None)
                if !registry.models.contains_key(name.get_ref())
                    && self.resolve(name.get_ref()).is_dir() =>
            {
                spans.backbone_model = Some(name.span());
                let (source, sets_length) = self.check_model_folder(&b, name, &mut config)?;
                folder_sets_length = sets_length;
                source
            }
            (Some(name), None) => {
                spans.backbone_model = Some(name.span());
                self.not_a_folder(name, registry)?;
                let entry = registry.models.get(name.get_ref()).ok_or_else(|| {
                    self.unknown(name, "backbone", "backbones", &registry.model_names())
                })?;
                if let Some(sha) = &b.sha256 {
                    return Err(self
                        .error(sha.span(), "`sha256` applies to your own `onnx` file")
                        .with_hint("registered backbones are always verified against the registry's checksum"));
                }
                if let Some(tok) = &b.tokenizer {
                    return Err(self
                        .error(tok.span(), "`tokenizer` applies to your own `onnx` file")
                        .with_hint("a registered backbone brings its own tokenizer"));
                }
                apply_registry_defaults(&mut config, entry);
                ModelSource::Registry(name.get_ref().clone())
            }
            (None, Some(onnx)) => self.check_own_model(&b, onnx, section.clone())?,
        };
        if let Some(output) = &b.output {
            config.output = Some(output.clone());
        }
        if let Some(pooling) = b.pooling {
            config.pooling = match pooling {
                RawPooling::Mean => Pooling::Mean,
                RawPooling::Cls => Pooling::Cls,
            };
        }
        if let Some(normalize) = b.normalize {
            config.normalize = normalize;
        }
        let at_least = |value: &Option<Spanned<usize>>,
                        key: &str,
                        min: usize|
         -> Result<Option<usize>, Diagnostic> {
            match value {
                Some(v) if *v.get_ref() < min => Err(self.error(
                    v.span(),
                    format!("`{key}` must be at least {min}, got {}", v.get_ref()),
                )),
                other => Ok(other.as_ref().map(|v| *v.get_ref())),
            }
        };
        if let Some(v) = at_least(&b.max_length, "max_length", 2)? {
            config.max_length = v;
        }
        self.check_positions(
            &b,
            &source,
            registry,
            (&mut config.max_length, folder_sets_length),
            section.clone(),
        )?;
        config.long_texts = self.check_long_texts(&b, config.max_length)?;
        if let Some(v) = at_least(&b.batch_size, "batch_size", 1)? {
            config.batch_size = v;
        }
        if let Some(v) = at_least(&b.threads, "threads", 1)? {
            config.intra_threads = v;
        }
        if let Some(v) = at_least(&b.sessions, "sessions", 1)? {
            let span = b.sessions.as_ref().map(Spanned::span).expect("given");
            if image.is_some() {
                return Err(self
                    .error(span, "`sessions` applies to text backbones")
                    .with_hint("image backbones run one session with `threads` threads"));
            }
            if v > config.intra_threads {
                return Err(self
                    .error(span, format!("`sessions = {v}` is more than `threads = {}`", config.intra_threads))
                    .with_hint("every session needs at least one of the threads; e.g. threads = 2, sessions = 2"));
            }
            config.sessions = v;
        }
        config.provider = self.check_provider(&b)?;
        if b.sessions.is_none() && image.is_none() && config.provider == Provider::Cpu {
            // Two sessions sharing the threads ran MR 6% faster than one (benches/README.md), as `extract`.
            config.sessions = config.intra_threads.min(2);
        }
        // A registered model's own prompt (E5's `query: `) unless the table gives one.
        let prompt = self
            .check_modality_keys(&b, image.is_some(), registry)?
            .or_else(|| match &source {
                ModelSource::Registry(name) => {
                    registry.models.get(name).and_then(|e| e.prompt.clone())
                }
                ModelSource::Files { .. } => None,
            });
        Ok(BackbonePlan {
            source,
            config,
            image,
            cache: b.cache.unwrap_or(true),
            prompt,
        })
    }

    /// `long_texts`, `stride` and `chunk_pooling`: the last two only with chunks, the stride within a window
    /// of `max_length` tokens less `[CLS]` and `[SEP]`.
    fn check_long_texts(
        &self,
        b: &RawBackbone,
        max_length: usize,
    ) -> Result<LongTexts, Diagnostic> {
        let chunks = b
            .long_texts
            .as_ref()
            .is_some_and(|l| *l.get_ref() == RawLongTexts::Chunks);
        if !chunks {
            for (key, span) in [
                ("stride", b.stride.as_ref().map(Spanned::span)),
                ("chunk_pooling", b.chunk_pooling.as_ref().map(Spanned::span)),
            ] {
                if let Some(span) = span {
                    return Err(self
                        .error(span, format!("`{key}` applies to `long_texts = \"chunks\"`"))
                        .with_hint("set `long_texts = \"chunks\"` to embed long texts in windows, or remove it"));
                }
            }
            return Ok(LongTexts::Truncate);
        }
        // The usual two special tokens; a tokenizer that adds more is refused when it is opened.
        let room = max_length.saturating_sub(2);
        let stride = match &b.stride {
            Some(s) if *s.get_ref() == 0 || *s.get_ref() > room => {
                return Err(self
                    .error(
                        s.span(),
                        format!("`stride = {}` must be between 1 and {room}", s.get_ref()),
                    )
                    .with_hint(format!(
                        "the tokens of text between the starts of neighbouring windows: a window holds \
                         `max_length = {max_length}` tokens, 2 of them special; {room} makes windows touch, \
                         less makes them overlap"
                    )));
            }
            other => other.as_ref().map(|s| *s.get_ref()),
        };
        let pooling = match b.chunk_pooling.as_ref().map(|p| *p.get_ref()) {
            None | Some(RawChunkPooling::Mean) => ChunkPooling::Mean,
            Some(RawChunkPooling::Max) => ChunkPooling::Max,
        };
        Ok(LongTexts::Chunks { stride, pooling })
    }

    /// Keys that belong to one modality — image sizes and augmentation to image backbones, `prompt` to text
    /// ones — refused on the other; returns the prompt.
    fn check_modality_keys(
        &self,
        b: &RawBackbone,
        image: bool,
        registry: &Registry,
    ) -> Result<Option<String>, Diagnostic> {
        if !image {
            for (key, span) in [
                ("image_size", b.image_size.as_ref().map(Spanned::span)),
                ("resize", b.resize.as_ref().map(Spanned::span)),
                ("augment", b.augment.as_ref().map(Spanned::span)),
            ] {
                if let Some(span) = span {
                    return Err(self
                        .error(span, format!("`{key}` applies to image backbones only"))
                        .with_hint(format!(
                            "registered image backbones: {}",
                            registry.image_model_names().join(", ")
                        )));
                }
            }
        }
        match &b.prompt {
            Some(p) if image => Err(self
                .error(p.span(), "`prompt` applies to text backbones")
                .with_hint("image backbones take no text; remove `prompt`")),
            Some(p) if !p.get_ref().contains("{text}") => Err(self
                .error(p.span(), "`prompt` has no `{text}` placeholder")
                .with_hint("mark where each text goes, e.g. `prompt = \"query: {text}\"`")),
            other => Ok(other.as_ref().map(|p| p.get_ref().clone())),
        }
    }

    /// `[backbone.augment]`: the augmentation and how many views each training image adds.
    fn check_augment(&self, a: &Spanned<RawAugment>) -> Result<(Augmentation, usize), Diagnostic> {
        let raw = a.get_ref();
        let crop_scale = match &raw.crop_scale {
            None => None,
            Some(c) => {
                match c.get_ref().as_slice() {
                    [low, high] if 0.0 < *low && low <= high && *high <= 1.0 => Some((*low, *high)),
                    _ => {
                        return Err(self
                        .error(c.span(), "`crop_scale` must be [low, high] with 0 < low <= high <= 1")
                        .with_hint("the share of the image's area a random crop keeps, e.g. [0.5, 1.0]"));
                    }
                }
            }
        };
        let views = match &raw.views {
            Some(v) if *v.get_ref() == 0 => {
                return Err(self
                    .error(v.span(), "`views` must be at least 1")
                    .with_hint("remove `[backbone.augment]` to train without augmentation"));
            }
            Some(v) => *v.get_ref(),
            None => 1,
        };
        let horizontal_flip = raw.horizontal_flip.unwrap_or(false);
        if !horizontal_flip && crop_scale.is_none() {
            return Err(self
                .error(a.span(), "`[backbone.augment]` turns nothing on")
                .with_hint("set `horizontal_flip = true` and/or `crop_scale = [0.5, 1.0]`"));
        }
        Ok((
            Augmentation {
                horizontal_flip,
                crop_scale,
            },
            views,
        ))
    }

    /// A registered image backbone: no text keys, `image_size`/`resize` over the registry's preprocessing,
    /// and `[backbone.augment]`.
    fn check_image_backbone(
        &self,
        b: &RawBackbone,
        name: &Spanned<String>,
        registry: &Registry,
        section: Range<usize>,
    ) -> Result<ImagePlan, Diagnostic> {
        let entry = &registry.image_models[name.get_ref()];
        for (key, span) in [
            ("tokenizer", b.tokenizer.as_ref().map(Spanned::span)),
            ("sha256", b.sha256.as_ref().map(Spanned::span)),
            ("max_length", b.max_length.as_ref().map(Spanned::span)),
            ("long_texts", b.long_texts.as_ref().map(Spanned::span)),
            ("stride", b.stride.as_ref().map(Spanned::span)),
            ("chunk_pooling", b.chunk_pooling.as_ref().map(Spanned::span)),
        ] {
            if let Some(span) = span {
                return Err(self
                    .error(span, format!("`{key}` does not apply to an image backbone"))
                    .with_hint(
                        "image backbones take `image_size`, `resize` and `[backbone.augment]`",
                    ));
            }
        }
        if b.pooling.is_some() || b.normalize.is_some() {
            return Err(self
                .error(
                    section.clone(),
                    "`pooling` and `normalize` do not apply to an image backbone",
                )
                .with_hint("the image backbone's output is already pooled"));
        }
        let p = &entry.preprocess;
        let mut preprocess = image_preprocess(p);
        if let Some(size) = &b.image_size {
            if *size.get_ref() < 16 {
                return Err(self.error(
                    size.span(),
                    format!("`image_size` must be at least 16, got {}", size.get_ref()),
                ));
            }
            // Keep the registry's ratio of resize to crop (256/224) unless `resize` is given.
            preprocess.resize = (f64::from(*size.get_ref()) * f64::from(p.resize)
                / f64::from(p.crop))
            .round() as u32;
            preprocess.crop = *size.get_ref();
        }
        if let Some(resize) = &b.resize {
            if *resize.get_ref() < preprocess.crop {
                return Err(self
                    .error(resize.span(), format!("`resize` ({}) is smaller than the crop ({})", resize.get_ref(), preprocess.crop))
                    .with_hint("the short side is resized first, then the centre crop of `image_size` is taken"));
            }
            preprocess.resize = *resize.get_ref();
        }
        let augment = b
            .augment
            .as_ref()
            .map(|a| self.check_augment(a))
            .transpose()?;
        Ok(ImagePlan {
            preprocess,
            output: entry.output.clone(),
            augment,
        })
    }

    /// The user's own `onnx` + `tokenizer` files, and an optional sha256 pin.
    fn check_own_model(
        &self,
        b: &RawBackbone,
        onnx: &Spanned<String>,
        section: Range<usize>,
    ) -> Result<ModelSource, Diagnostic> {
        let onnx_path = self.existing_file(onnx, "model file")?;
        let tokenizer = b.tokenizer.as_ref().ok_or_else(|| {
            self.error(
                section.clone(),
                "`[backbone]` with `onnx` also needs `tokenizer`",
            )
            .with_hint("give the path of the model's tokenizer.json")
        })?;
        let tokenizer_path = self.existing_file(tokenizer, "tokenizer file")?;
        self.readable_tokenizer(&tokenizer_path, tokenizer.span())?;
        Ok(ModelSource::Files {
            sha256: self.pinned_sha256(b, &onnx_path)?,
            onnx: onnx_path,
            tokenizer: tokenizer_path,
        })
    }

    /// `sha256`, when given: 64 hexadecimal digits, pinning the graph.
    fn pinned_sha256(
        &self,
        b: &RawBackbone,
        onnx: &std::path::Path,
    ) -> Result<Option<String>, Diagnostic> {
        let Some(s) = &b.sha256 else {
            return Ok(None);
        };
        let v = s.get_ref().to_ascii_lowercase();
        if v.len() != 64 || !v.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(self
                .error(s.span(), "`sha256` must be 64 hexadecimal digits")
                .with_hint(format!("`sha256sum {}` prints it", onnx.display())));
        }
        Ok(Some(v))
    }

    /// `model = "path/to/folder"`: a Hugging Face–style folder; its sentence-transformers settings become
    /// the defaults of `pooling`, `normalize` and `max_length`.
    fn check_model_folder(
        &self,
        b: &RawBackbone,
        name: &Spanned<String>,
        config: &mut TextBackboneConfig,
    ) -> Result<(ModelSource, bool), Diagnostic> {
        if let Some(tok) = &b.tokenizer {
            return Err(self
                .error(tok.span(), "`tokenizer` applies to an `onnx` file")
                .with_hint("a model folder brings its own tokenizer.json"));
        }
        let folder = graft_backbone::ModelFolder::open(&self.resolve(name.get_ref())).map_err(|e| {
            self.error(name.span(), e.to_string()).with_hint(
                "a model folder holds model.onnx (or onnx/model.onnx) and tokenizer.json, as Hugging Face's \
                 exporters write them",
            )
        })?;
        let explicit = b.pooling.map(|p| match p {
            RawPooling::Mean => Pooling::Mean,
            RawPooling::Cls => Pooling::Cls,
        });
        if let Some(pooling) = folder
            .pooling_or(explicit)
            .map_err(|e| self.error(name.span(), e.to_string()))?
        {
            config.pooling = pooling;
        }
        if let Some(normalize) = folder.normalize {
            config.normalize = normalize;
        }
        if let Some(max_length) = folder.max_length {
            config.max_length = max_length;
        }
        self.readable_tokenizer(&folder.tokenizer, name.span())?;
        let source = ModelSource::Files {
            sha256: self.pinned_sha256(b, &folder.onnx)?,
            onnx: folder.onnx,
            tokenizer: folder.tokenizer,
        };
        Ok((source, folder.max_length.is_some()))
    }

    /// The tokenizer loads (a truncated or hand-edited `tokenizer.json` is found here, not after the run has
    /// read its data).
    fn readable_tokenizer(
        &self,
        path: &std::path::Path,
        span: Range<usize>,
    ) -> Result<(), Diagnostic> {
        graft_backbone::TextTokenizer::open(path, 2).map(drop).map_err(|e| {
            self.error(span, e.to_string())
                .with_hint("the tokenizer.json the model was exported with (Hugging Face `tokenizers` format)")
        })
    }

    /// A `model` that is neither a registered name nor a folder but names a path (a separator, or an existing
    /// file): said as such, not as an unknown registry name.
    fn not_a_folder(&self, name: &Spanned<String>, registry: &Registry) -> Result<(), Diagnostic> {
        let path = self.resolve(name.get_ref());
        if registry.models.contains_key(name.get_ref())
            || !(name.get_ref().contains('/') || path.exists())
        {
            return Ok(());
        }
        let what = if path.exists() {
            "is a file, not a model folder"
        } else {
            "does not exist"
        };
        Err(self
            .error(name.span(), format!("`model`: {} {what}", path.display()))
            .with_hint(format!(
                "`model` takes a folder holding model.onnx and tokenizer.json, or a registered backbone ({}); a \
                 single graph is `onnx = \"…\"` with `tokenizer = \"…\"`",
                registry.model_names().join(", ")
            )))
    }

    /// `provider`, with `device_id` and `fallback` for CUDA.
    fn check_provider(&self, b: &RawBackbone) -> Result<Provider, Diagnostic> {
        Ok(match b.provider {
            None | Some(RawProvider::Cpu) => {
                if let Some(span) = b
                    .device_id
                    .as_ref()
                    .map(Spanned::span)
                    .or(b.fallback.as_ref().map(Spanned::span))
                {
                    return Err(self
                        .error(
                            span,
                            "`device_id` and `fallback` apply to `provider = \"cuda\"`",
                        )
                        .with_hint("add `provider = \"cuda\"` or remove the key"));
                }
                Provider::Cpu
            }
            Some(RawProvider::Cuda) => {
                let device_id = match &b.device_id {
                    Some(d) if *d.get_ref() < 0 => {
                        return Err(self.error(
                            d.span(),
                            format!("`device_id` must be 0 or more, got {}", d.get_ref()),
                        ));
                    }
                    Some(d) => *d.get_ref(),
                    None => 0,
                };
                Provider::Cuda {
                    device_id,
                    fallback: b.fallback.as_ref().is_none_or(|f| *f.get_ref()),
                }
            }
        })
    }

    /// `max_length` within the model's position embeddings: past them ONNX Runtime fails deep inside with a
    /// broadcast error that names no key. A registered model's limit is in the registry; a model file's is
    /// read from its graph (the first dimension of its position-embedding table, when it has one). A value
    /// the pipeline or the model folder chose must fit; graft's default is lowered to the limit, as
    /// sentence-transformers caps `max_seq_length` at the model's positions.
    fn check_positions(
        &self,
        b: &RawBackbone,
        source: &ModelSource,
        registry: &Registry,
        (max_length, from_folder): (&mut usize, bool),
        section: Range<usize>,
    ) -> Result<(), Diagnostic> {
        let (limit, model) = match source {
            ModelSource::Registry(name) => (
                registry.models.get(name).and_then(|m| m.max_positions),
                format!("`{name}`"),
            ),
            ModelSource::Files { onnx, .. } => (
                position_limit(onnx),
                format!(
                    "`{}`",
                    onnx.file_name().unwrap_or_default().to_string_lossy()
                ),
            ),
        };
        let Some(limit) = limit.filter(|&limit| *max_length > limit) else {
            return Ok(());
        };
        let hint =
            format!("use at most {limit}; longer texts are truncated to `max_length` tokens");
        match &b.max_length {
            None if !from_folder => {
                *max_length = limit;
                Ok(())
            }
            None => {
                let span = b.model.as_ref().map_or(section, Spanned::span);
                Err(self
                    .error(
                        span,
                        format!(
                            "`max_length` {max_length}, from the model folder's sentence_bert_config.json, is more \
                             than {model} reads ({limit} token positions)"
                        ),
                    )
                    .with_hint(format!("set `max_length` in [backbone]: {hint}")))
            }
            Some(v) => Err(self
                .error(
                    v.span(),
                    format!(
                        "`max_length = {}` is more than {model} reads ({limit} token positions)",
                        v.get_ref()
                    ),
                )
                .with_hint(hint)),
        }
    }
}

/// The longest token sequence a model file reads ([`graft_onnx::GraphSummary::position_limit`]); `None` when
/// the graph has no position table or cannot be read (the model's own loading reports that).
fn position_limit(onnx: &std::path::Path) -> Option<usize> {
    let bytes = std::fs::read(onnx).ok()?;
    graft_onnx::GraphSummary::read(&bytes)
        .ok()?
        .position_limit()
}
