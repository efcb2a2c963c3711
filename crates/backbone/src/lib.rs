//! Frozen feature extraction with ONNX Runtime.
//!
//! [`Runtime`] loads the ONNX Runtime shared library from a path (the `ort` crate's `load-dynamic` mode, so
//! nothing is downloaded at build time). [`TextBackbone`] pairs an ONNX text encoder with a `tokenizers` JSON
//! file and turns sentences into fixed-width embeddings: it tokenizes in parallel, truncates, forms batches from
//! length-sorted rows, pads each batch only to its own longest row, pools token states (masked mean or CLS),
//! optionally L2-normalises, and returns the rows in their original order. [`ImageBackbone`] does the same
//! for images: decode, grey→RGB, optional seeded augmentation, resize, centre crop, normalise, NCHW/NHWC.
//! Both run on CPU or, with [`Provider::Cuda`], on a GPU (falling back to CPU, with the reason, when allowed).
//!
//! ```no_run
//! use graft_backbone::{Runtime, TextBackbone, TextBackboneConfig};
//!
//! # fn main() -> Result<(), graft_backbone::BackboneError> {
//! let runtime = Runtime::load("/path/to/libonnxruntime.so.1.31.1".as_ref())?;
//! let mut backbone = TextBackbone::load(
//!     &runtime,
//!     "model.onnx".as_ref(),
//!     "tokenizer.json".as_ref(),
//!     TextBackboneConfig::default(),
//! )?;
//! let (embeddings, stats) = backbone.embed(&["a moving film", "a dull film"])?;
//! assert_eq!(embeddings.nrows(), 2);
//! println!("{} rows in {:.2} s", stats.rows, stats.seconds);
//! # Ok(())
//! # }
//! ```

mod batches;
mod folder;
mod image;
mod telemetry;
mod text;

use std::path::{Path, PathBuf};

pub use batches::{CALL_COST_TOKENS, plan_batches, rebase};
pub use folder::ModelFolder;
pub use image::{
    Augmentation, ImageBackbone, ImageBackboneConfig, ImageExtractionStats, ImagePreprocess,
    ImageSource, Layout, PixelType, resized_pixels,
};
pub use telemetry::{
    ORT_DISABLE_TELEMETRY_ENV, TELEMETRY_ENV, disable_runtime_telemetry, telemetry_requested,
};
pub use text::{
    ChunkPooling, EncodedTexts, ExtractionStats, LongTexts, Pooling, Provider, TextBackbone,
    TextBackboneConfig, TextTokenizer, session_threads,
};

/// The environment variable through which users point graft at their own ONNX Runtime library.
pub const ORT_DYLIB_ENV: &str = "ORT_DYLIB_PATH";

/// Everything that can go wrong while loading or running a backbone.
#[derive(Debug, thiserror::Error)]
pub enum BackboneError {
    /// The ONNX Runtime library could not be loaded.
    #[error("cannot load ONNX Runtime from {}: {reason}\n  hint: {hint}", path.display())]
    RuntimeLoad {
        /// The library path.
        path: PathBuf,
        /// What went wrong.
        reason: String,
        /// What to do about it.
        hint: String,
    },
    /// A model or tokenizer file that does not exist.
    #[error("{what} not found: {}", path.display())]
    MissingFile {
        /// `model` or `tokenizer`.
        what: &'static str,
        /// The path tried.
        path: PathBuf,
    },
    /// An image that cannot be decoded.
    #[error("image {}: {message}", path.display())]
    Image {
        /// The file (or `<pixels>`).
        path: PathBuf,
        /// What the decoder said.
        message: String,
    },
    /// The tokenizer JSON could not be loaded or applied.
    #[error("tokenizer {}: {message}", path.display())]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What the tokenizer library said.
        message: String,
    },
    /// A graph whose inputs or outputs graft cannot use.
    #[error("model {}: {message}", path.display())]
    Model {
        /// The model file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// ONNX Runtime failed.
    #[error("ONNX Runtime: {0}")]
    Ort(String),
    /// The requested execution provider cannot run the model, and falling back to CPU is not allowed.
    #[error("cannot run on {provider}: {reason}\n  hint: {hint}")]
    Provider {
        /// The provider asked for.
        provider: &'static str,
        /// What ONNX Runtime said.
        reason: String,
        /// What to do about it.
        hint: String,
    },
    /// A configuration value that cannot work.
    #[error("invalid backbone setting `{name}`: {reason}")]
    InvalidConfig {
        /// The setting.
        name: &'static str,
        /// Why it is invalid.
        reason: String,
    },
}

impl<T> From<ort::Error<T>> for BackboneError {
    fn from(e: ort::Error<T>) -> Self {
        BackboneError::Ort(e.to_string())
    }
}

/// A loaded ONNX Runtime library and its environment.
///
/// ONNX Runtime can be loaded once per process: the first library loaded stays in use, and loading another path
/// later returns the first one (recorded in [`Runtime::library`]).
#[derive(Clone)]
pub struct Runtime {
    env: ort::environment::Environment,
    library: PathBuf,
    telemetry: bool,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("library", &self.library)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Loads the ONNX Runtime shared library at `library` (version 1.31 or newer).
    ///
    /// ONNX Runtime allows one library and one environment per process: after the first successful load,
    /// later calls return that same runtime (a different path is logged and ignored).
    pub fn load(library: &Path) -> Result<Runtime, BackboneError> {
        use ort::LoadDynamicError as E;
        static LOADED: std::sync::Mutex<Option<Runtime>> = std::sync::Mutex::new(None);
        let mut loaded = LOADED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(runtime) = loaded.as_ref() {
            if runtime.library != library {
                tracing::warn!(
                    requested = %library.display(),
                    in_use = %runtime.library.display(),
                    "ONNX Runtime is already loaded in this process; keeping the library in use"
                );
            }
            return Ok(runtime.clone());
        }
        let fail = |reason: String, hint: &str| BackboneError::RuntimeLoad {
            path: library.to_path_buf(),
            reason,
            hint: hint.to_owned(),
        };
        if !library.is_file() {
            return Err(fail(
                "no such file".to_owned(),
                "graft fetches ONNX Runtime 1.31.1 itself; if ORT_DYLIB_PATH is set, point it at an existing \
                 libonnxruntime.so (1.31 or newer) or unset it",
            ));
        }
        // Before the library loads: ONNX Runtime reads its opt-out when it initialises.
        let telemetry = !telemetry::disable_runtime_telemetry();
        let builder = ort::init_from(library).map_err(|e| match e {
            E::BadVersion { version_str, .. } => fail(
                format!("it is version {version_str}, and graft needs 1.{} or newer", ort::MINOR_VERSION),
                "unset ORT_DYLIB_PATH to use the ONNX Runtime 1.31.1 that graft provisions, or point it at a newer library",
            ),
            E::MissingApi { .. } => fail(
                "the file is a shared library but not ONNX Runtime (no `OrtGetApiBase`)".to_owned(),
                "point ORT_DYLIB_PATH at libonnxruntime.so itself, not at a provider library",
            ),
            other => fail(
                other.to_string(),
                "the file must be a libonnxruntime.so built for this platform; unset ORT_DYLIB_PATH to use the \
                 one graft provisions",
            ),
        })?;
        let env = builder
            .with_name("graft")
            .with_telemetry(telemetry)
            .build()?;
        let runtime = Runtime {
            env,
            library: library.to_path_buf(),
            telemetry,
        };
        *loaded = Some(runtime.clone());
        Ok(runtime)
    }

    /// The library actually in use by this process.
    pub fn library(&self) -> &Path {
        &self.library
    }

    /// Whether ONNX Runtime may record and send its telemetry: `false` unless the user set
    /// [`TELEMETRY_ENV`]`=1` before the runtime loaded.
    pub fn telemetry(&self) -> bool {
        self.telemetry
    }

    /// ONNX Runtime's build description (version, commit).
    pub fn build_info(&self) -> String {
        ort::info().to_owned()
    }

    /// The ONNX Runtime environment, for building other `ort` sessions in the same process.
    pub fn environment(&self) -> &ort::environment::Environment {
        &self.env
    }
}
