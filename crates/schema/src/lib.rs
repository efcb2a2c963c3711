//! The contract of graft's files, and nothing else: the pipeline file as written ([`pipeline`],
//! [`techniques`]), its JSON Schema, the positions errors point at ([`Spanned`], [`Diagnostic`]) and the
//! resolved settings a run records in its manifest ([`resolved`]). It depends on serde, toml and schemars
//! only — reading the pipeline's schema does not build ONNX Runtime or polars (cargo keeps its manifest
//! types in `cargo-util-schemas` the same way). Checking values against data, models and the registry is
//! graft-config's job.
//!
//! ```
//! let file = std::path::Path::new("pipeline.toml");
//! let raw = graft_schema::parse(file, "schema = 1\nname = \"x\"\n[data]\ndataset = \"mr\"\n\
//!     [split.stratified]\ntrain = 0.8\nvalidation = 0.1\ntest = 0.1\n[head.logistic]\n").unwrap();
//! assert_eq!(raw.name.get_ref(), "x");
//!
//! // A misspelt key is an error at its line and column, with the right name suggested.
//! let err = graft_schema::parse(file, "schema = 1\nnmae = \"x\"\n").unwrap_err().to_string();
//! assert!(err.contains("pipeline.toml:2:1") && err.contains("did you mean `name`?"), "{err}");
//! ```

mod diagnostic;
pub mod pipeline;
pub mod resolved;
pub mod spanned;
pub mod techniques;

use std::path::Path;

pub use diagnostic::{Diagnostic, did_you_mean};
pub use pipeline::{RawPipeline, SCHEMA_VERSION, pipeline_schema_json};
pub use spanned::Spanned;

/// Reads pipeline text (the file `file`, for messages) into its serde mirror. Syntax, types and unknown
/// keys are checked here; values are checked by graft-config.
pub fn parse(file: &Path, source: &str) -> Result<RawPipeline, Diagnostic> {
    toml::from_str(source).map_err(|e| toml_error(file, source, &e))
}

/// Turns a TOML/serde error into a diagnostic, suggesting the right name for a misspelt key or variant.
fn toml_error(file: &Path, source: &str, e: &toml::de::Error) -> Diagnostic {
    let message = plain_words(e.message().trim_end());
    let mut diagnostic = Diagnostic::at(file, source, e.span(), message.clone());
    // serde phrases these as "unknown field `x`, expected one of `a`, `b`" / "unknown variant `x`, expected `a`".
    let quoted: Vec<&str> = message.split('`').skip(1).step_by(2).collect();
    if (message.starts_with("unknown field") || message.starts_with("unknown variant"))
        && !quoted.is_empty()
    {
        let hint = match did_you_mean(quoted[0], quoted[1..].iter().copied()) {
            Some(best) => format!("did you mean `{best}`?"),
            None => format!("expected one of: {}", quoted[1..].join(", ")),
        };
        diagnostic = diagnostic.with_hint(hint);
    } else if message.starts_with("missing field") && !quoted.is_empty() {
        diagnostic = diagnostic.with_hint(format!(
            "add `{}`; see pipelines/quickstart.toml for a complete example",
            quoted[0]
        ));
    }
    diagnostic
}

/// serde's and toml's messages in a pipeline author's words: Rust type names (`usize`, `f64`) and parser
/// jargon ("wanted string or table") mean nothing to someone writing TOML.
fn plain_words(message: &str) -> String {
    const WORDS: [(&str, &str); 10] = [
        ("expected usize", "expected a whole number (0 or more)"),
        ("expected u64", "expected a whole number (0 or more)"),
        ("expected u32", "expected a whole number (0 or more)"),
        ("expected u8", "expected a whole number (0 to 255)"),
        ("expected i64", "expected a whole number"),
        ("expected i32", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected f32", "expected a number"),
        (
            "wanted string or table",
            "expected a name in quotes or a table (such as `[head.logistic]`)",
        ),
        ("wanted exactly 1 element", "expected one name or one table"),
    ];
    let mut message = message.to_owned();
    for (jargon, plain) in WORDS {
        // Whole words only: `expected u8` must not rewrite `expected u8x`.
        if let Some(at) = message.find(jargon)
            && !message[at + jargon.len()..].starts_with(|c: char| c.is_alphanumeric())
        {
            message.replace_range(at..at + jargon.len(), plain);
        }
    }
    message
}
