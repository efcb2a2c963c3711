//! Turning raw published files into the tables graft reads.

use std::io::Write;
use std::path::Path;

use crate::fetch::{persist_readable, sha256_file};
use crate::{AssetError, VerifiedFile};

/// Runs the named preparation and stores its output atomically at `out`, checked against `expected_sha256`.
pub(crate) fn prepare(
    recipe: &str,
    raw: &Path,
    out: &Path,
    expected_sha256: &str,
) -> Result<VerifiedFile, AssetError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| AssetError::Io { path, source }
    };
    let csv = match recipe {
        "mr" => mr_csv(raw)?,
        other => {
            return Err(AssetError::Unknown {
                kind: "preparation",
                name: other.to_owned(),
                known: vec!["mr".to_owned()],
            });
        }
    };
    let dir = out
        .parent()
        .expect("prepared files live in a data-set folder");
    let mut tmp = tempfile::Builder::new()
        .prefix(".partial-")
        .tempfile_in(dir)
        .map_err(io_err(dir))?;
    tmp.write_all(csv.as_bytes()).map_err(io_err(out))?;
    tmp.as_file().sync_all().map_err(io_err(out))?;
    let actual = sha256_file(tmp.path()).map_err(io_err(out))?;
    if actual != expected_sha256 {
        return Err(AssetError::ChecksumMismatch {
            path: out.to_path_buf(),
            expected: expected_sha256.to_owned(),
            actual,
            hint: "the preparation no longer reproduces the registered table; nothing was stored"
                .to_owned(),
        });
    }
    persist_readable(tmp, out)?;
    Ok(VerifiedFile {
        path: out.to_path_buf(),
        sha256: actual,
        fetched: true,
    })
}

/// Positive snippets come first in the published file (rt-polarity.pos, then .neg).
const MR_LAST_POSITIVE_ID: u32 = 5152;

/// `movieReviewSnippets_GroundTruth.txt` (id TAB mean-rating TAB text, CRLF) → `id,text,label` CSV.
fn mr_csv(raw: &Path) -> Result<String, AssetError> {
    let text = std::fs::read_to_string(raw).map_err(|source| AssetError::Io {
        path: raw.to_path_buf(),
        source,
    })?;
    let bad = |line: usize, message: String| AssetError::BadRawData {
        path: raw.to_path_buf(),
        line,
        message,
    };
    let mut csv = String::with_capacity(text.len() + text.len() / 4);
    csv.push_str("id,text,label\n");
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let mut fields = line.splitn(3, '\t');
        let (Some(id), Some(_rating), Some(snippet)) =
            (fields.next(), fields.next(), fields.next())
        else {
            return Err(bad(i + 1, "expected `id<TAB>rating<TAB>text`".to_owned()));
        };
        let id: u32 = id
            .trim()
            .parse()
            .map_err(|_| bad(i + 1, format!("`{id}` is not a numeric id")))?;
        let label = if id <= MR_LAST_POSITIVE_ID {
            "positive"
        } else {
            "negative"
        };
        csv.push_str(&format!(
            "{id},\"{}\",{label}\n",
            snippet.replace('"', "\"\"")
        ));
    }
    Ok(csv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mr_rows_are_labelled_by_id_and_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("raw.txt");
        std::fs::write(
            &raw,
            "1\t2.2\tThe Rock is \"great\", really\r\n5153\t-1.0\tdull, dull\r\n",
        )
        .unwrap();
        let csv = mr_csv(&raw).unwrap();
        assert_eq!(
            csv,
            "id,text,label\n1,\"The Rock is \"\"great\"\", really\",positive\n5153,\"dull, dull\",negative\n"
        );
    }

    #[test]
    fn malformed_raw_line_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("raw.txt");
        std::fs::write(&raw, "1\t2.0\tfine\r\nno tabs here\r\n").unwrap();
        let err = mr_csv(&raw).unwrap_err().to_string();
        assert!(
            err.ends_with("raw.txt:2: expected `id<TAB>rating<TAB>text`"),
            "{err}"
        );
    }
}
