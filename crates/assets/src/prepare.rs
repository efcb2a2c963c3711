//! Turning raw published files into the tables graft reads.

use std::path::Path;

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
        "mr-ratings" => mr_ratings_csv(raw)?,
        "vader-polarity" => vader_polarity_csv(raw)?,
        "orange-tab" => orange_tab_csv(raw)?,
        other => {
            return Err(AssetError::Unknown {
                kind: "preparation",
                name: other.to_owned(),
                known: vec![
                    "mr".to_owned(),
                    "mr-ratings".to_owned(),
                    "vader-polarity".to_owned(),
                    "orange-tab".to_owned(),
                ],
            });
        }
    };
    let actual = graft_stdx::sha256_hex(csv.as_bytes());
    if actual != expected_sha256 {
        return Err(AssetError::ChecksumMismatch {
            path: out.to_path_buf(),
            expected: expected_sha256.to_owned(),
            actual,
            hint: "the preparation no longer reproduces the registered table; nothing was stored"
                .to_owned(),
        });
    }
    graft_stdx::atomic::write(out, csv.as_bytes()).map_err(io_err(out))?;
    Ok(VerifiedFile {
        path: out.to_path_buf(),
        sha256: actual,
        fetched: true,
    })
}

/// Positive snippets come first in the published file (rt-polarity.pos, then .neg).
const MR_LAST_POSITIVE_ID: u32 = 5152;

/// |mean rating| from which a snippet counts as strongly (not mildly) polar, on VADER's −4…4 crowd scale.
const STRONG_RATING: f64 = 1.5;

/// |mean rating| below which a snippet of the other VADER corpora counts as neutral and is left out.
const NEUTRAL_RATING: f64 = 0.5;

/// One line of a VADER ground-truth file (Hutto & Gilbert, 2014): id, mean crowd rating, text.
struct Snippet<'a> {
    line: usize,
    id: &'a str,
    rating: f64,
    text: &'a str,
}

/// Reads a `*_GroundTruth.txt` (id TAB mean-rating TAB text, CRLF) and formats each snippet with `row`
/// (which returns `None` to leave one out) under `header`.
fn vader_csv(
    raw: &Path,
    header: &str,
    row: impl Fn(&Snippet<'_>) -> Result<Option<String>, String>,
) -> Result<String, AssetError> {
    let bytes = std::fs::read(raw).map_err(|source| AssetError::Io {
        path: raw.to_path_buf(),
        source,
    })?;
    // A few snippets of the other corpora are not UTF-8; they are kept with replacement characters.
    let text = String::from_utf8_lossy(&bytes);
    let bad = |line: usize, message: String| AssetError::BadRawData {
        path: raw.to_path_buf(),
        line,
        message,
    };
    let mut csv = String::with_capacity(text.len() + text.len() / 4);
    csv.push_str(header);
    csv.push('\n');
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let mut fields = line.splitn(3, '\t');
        let (Some(id), Some(rating), Some(text)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(bad(i + 1, "expected `id<TAB>rating<TAB>text`".to_owned()));
        };
        let rating: f64 = rating
            .trim()
            .parse()
            .map_err(|_| bad(i + 1, format!("`{rating}` is not a numeric rating")))?;
        let snippet = Snippet {
            line: i + 1,
            id: id.trim(),
            rating,
            text,
        };
        if let Some(row) = row(&snippet).map_err(|m| bad(snippet.line, m))? {
            csv.push_str(&row);
            csv.push('\n');
        }
    }
    Ok(csv)
}

fn quoted(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

/// MR polarity by id (the file lists rt-polarity.pos, then .neg).
fn mr_label(s: &Snippet<'_>) -> Result<&'static str, String> {
    let id: u32 =
        s.id.parse()
            .map_err(|_| format!("`{}` is not a numeric id", s.id))?;
    Ok(if id <= MR_LAST_POSITIVE_ID {
        "positive"
    } else {
        "negative"
    })
}

/// `movieReviewSnippets_GroundTruth.txt` → `id,text,label` CSV.
fn mr_csv(raw: &Path) -> Result<String, AssetError> {
    vader_csv(raw, "id,text,label", |s| {
        Ok(Some(format!(
            "{},{},{}",
            s.id,
            quoted(s.text),
            mr_label(s)?
        )))
    })
}

/// The same snippets with their crowd rating and a second task: `intensity` is `strong` when |rating| ≥ 1.5,
/// else `mild`.
fn mr_ratings_csv(raw: &Path) -> Result<String, AssetError> {
    vader_csv(raw, "id,text,label,rating,intensity", |s| {
        let intensity = if s.rating.abs() >= STRONG_RATING {
            "strong"
        } else {
            "mild"
        };
        Ok(Some(format!(
            "{},{},{},{},{intensity}",
            s.id,
            quoted(s.text),
            mr_label(s)?,
            s.rating
        )))
    })
}

/// Another VADER corpus labelled by the sign of its mean rating; neutral snippets (|rating| < 0.5) left out.
fn vader_polarity_csv(raw: &Path) -> Result<String, AssetError> {
    vader_csv(raw, "id,text,label,rating", |s| {
        let label = if s.rating >= NEUTRAL_RATING {
            "positive"
        } else if s.rating <= -NEUTRAL_RATING {
            "negative"
        } else {
            return Ok(None);
        };
        Ok(Some(format!(
            "{},{},{label},{}",
            s.id,
            quoted(s.text),
            s.rating
        )))
    })
}

/// An Orange `.tab` table of `Category<TAB>Text` (three header lines: names, types, roles) → `text,label`
/// CSV; rows without a category or a text are left out.
fn orange_tab_csv(raw: &Path) -> Result<String, AssetError> {
    let text = std::fs::read_to_string(raw).map_err(|source| AssetError::Io {
        path: raw.to_path_buf(),
        source,
    })?;
    let bad = |line: usize, message: String| AssetError::BadRawData {
        path: raw.to_path_buf(),
        line,
        message,
    };
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, header)) if header.trim_end() == "Category\tText" => {}
        _ => return Err(bad(1, "expected the header `Category<TAB>Text`".to_owned())),
    }
    let mut csv = String::from("text,label\n");
    for (i, line) in lines.skip(2) {
        if line.trim().is_empty() {
            continue; // 20 Newsgroups' table has a blank line after its header
        }
        let Some((category, body)) = line.split_once('\t') else {
            return Err(bad(i + 1, "expected `category<TAB>text`".to_owned()));
        };
        let (category, body) = (category.trim(), body.trim());
        if category.is_empty() || body.is_empty() {
            continue;
        }
        csv.push_str(&format!("{},{}\n", quoted(body), quoted(category)));
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
    fn orange_tables_become_text_label_rows() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("r.tab");
        std::fs::write(
            &raw,
            "Category\tText\nd\tstring\nclass\t\n\t\ncocoa\tbahia \"cocoa\" review\nearn\tprofit up\n",
        )
        .unwrap();
        assert_eq!(
            orange_tab_csv(&raw).unwrap(),
            "text,label\n\"bahia \"\"cocoa\"\" review\",\"cocoa\"\n\"profit up\",\"earn\"\n"
        );
        std::fs::write(&raw, "Label\tText\n").unwrap();
        assert!(
            orange_tab_csv(&raw)
                .unwrap_err()
                .to_string()
                .contains("r.tab:1")
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

    #[test]
    fn ratings_give_intensity_and_other_corpora_drop_neutral_snippets() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("raw.txt");
        std::fs::write(&raw, "1\t2.2\tgreat\r\n5153\t-1.0\tdull\r\n").unwrap();
        assert_eq!(
            mr_ratings_csv(&raw).unwrap(),
            "id,text,label,rating,intensity\n1,\"great\",positive,2.2,strong\n5153,\"dull\",negative,-1,mild\n"
        );
        std::fs::write(
            &raw,
            "1_1\t-0.9\tbroken\r\n1_2\t0.2\tit is a box\r\n1_3\t0.5\tfine\r\n",
        )
        .unwrap();
        assert_eq!(
            vader_polarity_csv(&raw).unwrap(),
            "id,text,label,rating\n1_1,\"broken\",negative,-0.9\n1_3,\"fine\",positive,0.5\n"
        );
    }
}
