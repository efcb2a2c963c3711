//! Errors that point at a place in a pipeline file, rendered like rustc's.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A message tied to a span of a pipeline file, with an optional hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic(Box<Inner>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Inner {
    message: String,
    file: PathBuf,
    /// 1-based line and column of the span's start, when known.
    line: Option<(usize, usize)>,
    /// The text of that line and the span's width on it.
    snippet: Option<(String, usize)>,
    hint: Option<String>,
}

impl Diagnostic {
    /// A diagnostic for `span` (byte offsets) of `source`, the text of `file`.
    pub fn at(
        file: &Path,
        source: &str,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> Diagnostic {
        let (line, snippet) = match span {
            Some(span) if span.start <= source.len() => {
                let start = span.start;
                let line_start = source[..start].rfind('\n').map_or(0, |i| i + 1);
                let line_end = source[start..]
                    .find('\n')
                    .map_or(source.len(), |i| start + i);
                let text = source[line_start..line_end]
                    .trim_end_matches('\r')
                    .to_owned();
                let line_no = source[..start].matches('\n').count() + 1;
                let column = source[line_start..start].chars().count() + 1;
                let width = source[start..span.end.clamp(start, line_end)]
                    .chars()
                    .count()
                    .max(1);
                (Some((line_no, column)), Some((text, width)))
            }
            _ => (None, None),
        };
        Diagnostic(Box::new(Inner {
            message: message.into(),
            file: file.to_path_buf(),
            line,
            snippet,
            hint: None,
        }))
    }

    /// Adds a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.0.hint = Some(hint.into());
        self
    }

    /// What is wrong.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// The pipeline file.
    pub fn file(&self) -> &Path {
        &self.0.file
    }

    /// 1-based line and column, when the place is known.
    pub fn line_column(&self) -> Option<(usize, usize)> {
        self.0.line
    }

    /// What to do about it.
    pub fn hint(&self) -> Option<&str> {
        self.0.hint.as_deref()
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.0;
        writeln!(f, "{}", d.message)?;
        match d.line {
            Some((line, column)) => write!(f, "  --> {}:{line}:{column}", d.file.display())?,
            None => write!(f, "  --> {}", d.file.display())?,
        }
        if let (Some((line, column)), Some((text, width))) = (d.line, &d.snippet) {
            let gutter = line.to_string().len();
            let pad = " ".repeat(gutter);
            let lead: String = text
                .chars()
                .take(column - 1)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            write!(
                f,
                "\n{pad} |\n{line} | {text}\n{pad} | {lead}{}",
                "^".repeat(*width)
            )?;
        }
        if let Some(hint) = &d.hint {
            let pad = " ".repeat(d.line.map_or(1, |(l, _)| l.to_string().len()));
            write!(f, "\n{pad} = hint: {hint}")?;
        }
        Ok(())
    }
}

/// The closest of `candidates` to `word`, if it is close enough to be a likely typo. A candidate that
/// `word` abbreviates (`minilm-l6` → `minilm-l6-int8`) wins over a closer spelling of another name.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let candidates: Vec<&str> = candidates.into_iter().collect();
    if !word.is_empty()
        && let Some(longer) = candidates
            .iter()
            .filter(|c| c.starts_with(word))
            .min_by_key(|c| c.len())
    {
        return Some(longer);
    }
    candidates
        .into_iter()
        .map(|c| (strsim::normalized_damerau_levenshtein(word, c), c))
        .filter(|(score, _)| *score >= 0.6)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_line_column_caret_and_hint() {
        let source = "schema = 1\n[data]\ntext_column = \"txt\"\n";
        let start = source.find("\"txt\"").unwrap();
        let d = Diagnostic::at(
            Path::new("p.toml"),
            source,
            Some(start..start + 5),
            "column `txt` not found",
        )
        .with_hint("the table has: id, text, label");
        assert_eq!(
            d.to_string(),
            "column `txt` not found\n  --> p.toml:3:15\n  |\n3 | text_column = \"txt\"\n  |               ^^^^^\n  = hint: the table has: id, text, label"
        );
    }

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(
            did_you_mean("txt_column", ["text_column", "label_column"]),
            Some("text_column")
        );
        assert_eq!(
            did_you_mean("colour", ["text_column", "label_column"]),
            None
        );
        assert_eq!(
            did_you_mean("minilm-l6", ["minilm-l3", "minilm-l6-int8"]),
            Some("minilm-l6-int8")
        );
    }
}
