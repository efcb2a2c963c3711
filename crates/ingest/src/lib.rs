//! Reading labelled tables, encoding labels and splitting rows for graft.
//!
//! The currency at this edge is a polars [`DataFrame`]; what leaves the crate is plain vectors
//! (texts, class indices, row indices) that the other crates consume without knowing about polars.
//! Images come from IDX files ([`read_idx_images`]) or class folders ([`image_folder`]). Batch jobs stream
//! rows in with [`TextRowReader`] and embeddings out with [`EmbeddingWriter`] (Parquet or `.npy`).
//!
//! ```
//! use graft_ingest::{read_table, stratified_split, text_classification, SplitRatios};
//!
//! # fn main() -> Result<(), graft_ingest::IngestError> {
//! let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/data/tiny-sentiment.csv");
//! let table = read_table(std::path::Path::new(path))?;
//! let data = text_classification(&table, "text", "label")?;
//! let ratios = SplitRatios::new(0.6, 0.2, 0.2)?;
//! let split = stratified_split(&data.labels, &data.classes, ratios, 42)?;
//! assert_eq!(split.train.len() + split.validation.len() + split.test.len(), data.labels.len());
//! # Ok(())
//! # }
//! ```

mod delimited;
pub mod embeddings;
mod features;
mod images;
mod jsonl;
mod parquet_pages;
pub mod rows;
mod split;
mod tfidf;

use std::path::{Path, PathBuf};

use polars::prelude::*;

pub use embeddings::{EmbeddingBatch, EmbeddingFormat, EmbeddingWriter, read_embeddings};
pub use features::{
    FeatureClassificationData, SplitTag, feature_classification, read_feature_matrix,
};
pub use images::{IdxImages, ImageFolder, image_folder, read_idx_images, read_idx_labels};
pub use polars::frame::DataFrame;
pub use polars::prelude::{Column, DataType, Series};
pub use rows::{TextChunk, TextRowReader, count_rows, string_series};
pub use split::{
    Fold, Split, SplitRatios, group_kfold, stratified_kfold, stratified_split, stratified_subsample,
};
pub use tfidf::{SparseTfidf, Tfidf, TokenTfidf, TokenizedTexts};

/// Everything that can go wrong while reading and splitting data.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The data file does not exist.
    #[error("data file not found: {}", path.display())]
    NotFound {
        /// The path tried.
        path: PathBuf,
    },
    /// An extension graft does not read.
    #[error("cannot tell the format of {}: expected a .csv, .tsv, .jsonl or .parquet file", path.display())]
    UnsupportedFormat {
        /// The file.
        path: PathBuf,
    },
    /// An output file name whose extension graft does not write.
    #[error("cannot tell the output format of {}: expected a .parquet or .npy file", path.display())]
    UnsupportedOutput {
        /// The file.
        path: PathBuf,
    },
    /// A line of a CSV/TSV/JSONL file that cannot be read.
    #[error("{}:{line}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        message: String,
    },
    /// A row whose values cannot be used.
    #[error("{}: row {row}: {message}", path.display())]
    BadRow {
        /// The file.
        path: PathBuf,
        /// 0-based row number.
        row: u64,
        /// What is wrong.
        message: String,
    },
    /// A label cell that spells a missing value (`NaN`, as pandas writes one); it would become a class.
    #[error(
        "label column `{column}` holds `{value}` at row {row} (0-based data row): a missing value written as text, which would become a class"
    )]
    MissingAsText {
        /// The label column.
        column: String,
        /// 0-based data row of the first such cell.
        row: u64,
        /// The cell, as written.
        value: String,
    },
    /// A row whose text is null, where every row needs one.
    #[error("{}: row {row} has a null text", path.display())]
    NullText {
        /// The file.
        path: PathBuf,
        /// 0-based row number.
        row: u64,
    },
    /// An image folder without at least two class sub-folders holding images.
    #[error(
        "{} needs at least two class sub-folders with .png/.jpg images (root/<class>/<image>); found {classes}",
        path.display()
    )]
    ImageFolder {
        /// The folder.
        path: PathBuf,
        /// Class folders with images.
        classes: usize,
    },
    /// An output file that could not be written.
    #[error("cannot write {}: {message}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The file has no bytes or no data rows.
    #[error("{} has no data rows", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// A damaged Parquet file that made the decoder itself fail (it panics on some corrupt pages).
    #[error("cannot read {}: the Parquet data is damaged ({message})", path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// The decoder's own words.
        message: String,
    },
    /// polars could not parse the file.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// polars' error.
        source: PolarsError,
    },
    /// A column named in the pipeline is not in the table.
    #[error("column `{column}` not found; the table has: {}", available.join(", "))]
    MissingColumn {
        /// The column asked for.
        column: String,
        /// The columns that exist.
        available: Vec<String>,
    },
    /// A column with the wrong kind of values.
    #[error("column `{column}` holds {found}, expected {expected}")]
    ColumnType {
        /// The column.
        column: String,
        /// What was needed.
        expected: &'static str,
        /// What the table has.
        found: String,
    },
    /// Every usable row carries the same label.
    #[error("every usable row has the label `{class}`: a classifier needs at least two classes")]
    SingleClass {
        /// The only label.
        class: String,
    },
    /// No row is left once rows with null text or label are dropped.
    #[error("no usable rows: all {rows} rows have a null text or label")]
    NoUsableRows {
        /// Rows read.
        rows: usize,
    },
    /// Split ratios that are negative, leave out train or do not sum to one.
    #[error("invalid split ratios: {reason}")]
    InvalidRatios {
        /// What is wrong with them.
        reason: String,
    },
    /// A class with too few rows to appear in every split.
    #[error(
        "class `{class}` has {rows} row(s), too few for every split to get one ({split} would get none); \
         it needs at least {needed}"
    )]
    ClassTooSmall {
        /// The class.
        class: String,
        /// Its row count.
        rows: usize,
        /// The split that would miss it.
        split: &'static str,
        /// Rows that would suffice.
        needed: usize,
    },
}

/// Reads a CSV/TSV (header row expected) or Parquet file, chosen by extension.
pub fn read_table(path: &Path) -> Result<DataFrame, IngestError> {
    let meta = std::fs::metadata(path).map_err(|_| IngestError::NotFound {
        path: path.to_path_buf(),
    })?;
    if meta.len() == 0 {
        return Err(IngestError::Empty {
            path: path.to_path_buf(),
        });
    }
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let frame = match ext.as_str() {
        "csv" | "tsv" => delimited::read_table(path, delimited::delimiter_for(&ext))?,
        "parquet" | "pq" => {
            let file = std::fs::File::open(path).map_err(|_| IngestError::NotFound {
                path: path.to_path_buf(),
            })?;
            parquet_pages::check_page_counts(path)?;
            parquet_read(path, || ParquetReader::new(file).finish())?
        }
        "jsonl" | "ndjson" => jsonl::read_jsonl_table(path)?,
        _ => {
            return Err(IngestError::UnsupportedFormat {
                path: path.to_path_buf(),
            });
        }
    };
    if frame.height() == 0 {
        return Err(IngestError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(frame)
}

/// Runs a polars Parquet read and names the file in its errors — and in its panics: the decoder panics
/// on some damaged pages (`unreachable!` on an impossible bit width) instead of returning an error.
pub(crate) fn parquet_read<T>(
    path: &Path,
    read: impl FnOnce() -> PolarsResult<T>,
) -> Result<T, IngestError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)) {
        Ok(result) => result.map_err(|source| IngestError::Read {
            path: path.to_path_buf(),
            source,
        }),
        Err(panic) => Err(IngestError::Damaged {
            path: path.to_path_buf(),
            message: panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "the decoder failed".to_owned()),
        }),
    }
}

/// Texts with class indices, ready for a text backbone and a classifier.
#[derive(Debug, Clone, PartialEq)]
pub struct TextClassificationData {
    /// One text per usable row.
    pub texts: Vec<String>,
    /// Class index per usable row, into `classes`.
    pub labels: Vec<usize>,
    /// Class names; numeric labels in numeric order, others in lexicographic order.
    pub classes: Vec<String>,
    /// 0-based row number in the table of each usable row.
    pub source_rows: Vec<usize>,
    /// Rows in the table.
    pub rows_read: usize,
    /// Rows dropped because the text was null.
    pub dropped_null_text: usize,
    /// Rows dropped because the label was null (and the text was not).
    pub dropped_null_label: usize,
}

impl TextClassificationData {
    /// Rows per class, indexed like `classes`.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for &label in &self.labels {
            counts[label] += 1;
        }
        counts
    }
}

fn column<'a>(table: &'a DataFrame, name: &str) -> Result<&'a Column, IngestError> {
    table.column(name).map_err(|_| IngestError::MissingColumn {
        column: name.to_owned(),
        available: table
            .get_column_names()
            .iter()
            .map(|n| n.to_string())
            .collect(),
    })
}

/// A label column as text, and whether it was numeric (so classes sort by value).
pub(crate) fn labels_as_text(label: &Column, name: &str) -> Result<(Column, bool), IngestError> {
    let text = label
        .cast(&DataType::String)
        .map_err(|_| IngestError::ColumnType {
            column: name.to_owned(),
            expected: "labels that can be read as strings",
            found: label.dtype().to_string(),
        })?;
    // A float column's NaN casts to "NaN", and pandas writes missing values as `nan` when labels went
    // through `str`: either would silently become a class.
    let strings = text.str().expect("cast to String yields a string column");
    if let Some((row, value)) = strings.iter().enumerate().find_map(|(row, v)| {
        v.filter(|v| v.eq_ignore_ascii_case("nan"))
            .map(|v| (row, v))
    }) {
        return Err(IngestError::MissingAsText {
            column: name.to_owned(),
            row: row as u64,
            value: value.to_owned(),
        });
    }
    Ok((text, label.dtype().is_primitive_numeric()))
}

/// Class indices for `raw` labels: classes sorted (numerically when `numeric`), at least two of them.
pub(crate) fn encode_labels(
    raw: &[String],
    numeric: bool,
) -> Result<(Vec<usize>, Vec<String>), IngestError> {
    let mut classes: Vec<String> = raw.to_vec();
    classes.sort_unstable();
    classes.dedup();
    if numeric {
        // `2` before `10`: order by value, not by spelling.
        classes.sort_by(|a, b| {
            let (x, y) = (
                a.parse::<f64>().unwrap_or(f64::NAN),
                b.parse::<f64>().unwrap_or(f64::NAN),
            );
            x.total_cmp(&y)
        });
    }
    if classes.len() == 1 {
        return Err(IngestError::SingleClass {
            class: classes.remove(0),
        });
    }
    let index: std::collections::HashMap<&str, usize> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i))
        .collect();
    let labels = raw.iter().map(|l| index[l.as_str()]).collect();

    Ok((labels, classes))
}

/// Picks the text and label columns, drops rows where either is null and encodes labels as class indices.
pub fn text_classification(
    table: &DataFrame,
    text_column: &str,
    label_column: &str,
) -> Result<TextClassificationData, IngestError> {
    let text = column(table, text_column)?;
    let label = column(table, label_column)?;
    let text = text.str().map_err(|_| IngestError::ColumnType {
        column: text_column.to_owned(),
        expected: "text (a string column)",
        found: text.dtype().to_string(),
    })?;
    let (label_strings, numeric_labels) = labels_as_text(label, label_column)?;
    let label_strings = label_strings
        .str()
        .expect("cast to String yields a string column");

    let rows_read = table.height();
    let mut texts = Vec::with_capacity(rows_read);
    let mut raw_labels = Vec::with_capacity(rows_read);
    let mut source_rows = Vec::with_capacity(rows_read);
    let (mut dropped_null_text, mut dropped_null_label) = (0, 0);
    for (row, (t, l)) in text.iter().zip(label_strings.iter()).enumerate() {
        match (t, l) {
            (None, _) => dropped_null_text += 1,
            (Some(_), None) => dropped_null_label += 1,
            (Some(t), Some(l)) => {
                texts.push(t.to_owned());
                raw_labels.push(l.to_owned());
                source_rows.push(row);
            }
        }
    }
    if texts.is_empty() {
        return Err(IngestError::NoUsableRows { rows: rows_read });
    }

    let (labels, classes) = encode_labels(&raw_labels, numeric_labels)?;

    Ok(TextClassificationData {
        texts,
        labels,
        classes,
        source_rows,
        rows_read,
        dropped_null_text,
        dropped_null_label,
    })
}

/// A further label column of the same rows (a second task): the classes of the rows `rows` (0-based table
/// rows, e.g. [`TextClassificationData::source_rows`]), `None` where the cell is null; classes sorted as
/// [`text_classification`] sorts them, at least two.
///
/// ```
/// use graft_ingest::{DataFrame, Series, task_labels};
/// use polars::prelude::NamedFrom;
///
/// # fn main() -> Result<(), graft_ingest::IngestError> {
/// let table = DataFrame::new(3, vec![
///     Series::new("topic".into(), &[Some("b"), None, Some("a")]).into(),
/// ]).unwrap();
/// let (labels, classes) = task_labels(&table, "topic", &[0, 1, 2])?;
/// assert_eq!(classes, ["a", "b"]);
/// assert_eq!(labels, [Some(1), None, Some(0)]);
/// # Ok(())
/// # }
/// ```
pub fn task_labels(
    table: &DataFrame,
    name: &str,
    rows: &[usize],
) -> Result<(Vec<Option<usize>>, Vec<String>), IngestError> {
    let (text, numeric) = labels_as_text(column(table, name)?, name)?;
    let text = text.str().expect("cast to String yields a string column");
    let values: Vec<Option<String>> = rows
        .iter()
        .map(|&r| text.get(r).map(str::to_owned))
        .collect();
    let present: Vec<String> = values.iter().flatten().cloned().collect();
    if present.is_empty() {
        return Err(IngestError::NoUsableRows { rows: rows.len() });
    }
    let (encoded, classes) = encode_labels(&present, numeric)?;
    let mut encoded = encoded.into_iter();
    let labels = values
        .iter()
        .map(|v| v.as_ref().and_then(|_| encoded.next()))
        .collect();
    Ok((labels, classes))
}

/// The non-null texts of a string column and how many rows had none: rows without labels, such as a
/// target domain's.
///
/// ```
/// use graft_ingest::texts;
/// use polars::prelude::*;
/// let table = df!("text" => [Some("a"), None, Some("b")]).unwrap();
/// assert_eq!(texts(&table, "text")?, (vec!["a".to_owned(), "b".to_owned()], 1));
/// # Ok::<(), graft_ingest::IngestError>(())
/// ```
pub fn texts(table: &DataFrame, name: &str) -> Result<(Vec<String>, usize), IngestError> {
    let values = column(table, name)?;
    let strings = values.str().map_err(|_| IngestError::ColumnType {
        column: name.to_owned(),
        expected: "text (a string column)",
        found: values.dtype().to_string(),
    })?;
    let texts: Vec<String> = strings.iter().flatten().map(str::to_owned).collect();
    let missing = table.height() - texts.len();
    Ok((texts, missing))
}

/// A file under `fixtures/data/`, for the unit tests of every module.
#[cfg(test)]
pub(crate) fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/data")
        .join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_table_is_refused_with_its_line() {
        // On main polars named no line: an unclosed quote dumped the rest of the file, ragged rows suggested
        // a polars option graft does not have.
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&str, &[u8], &str); 3] = [
            (
                "quote.csv",
                b"text,label\n\"good,positive\nbad,negative\n\"fine\",positive\n",
                "quote.csv:4:",
            ),
            (
                "ragged.csv",
                b"text,label\ngood,positive\nbad,negative,extra\n",
                "ragged.csv:3: the record has 3 fields, the header 2",
            ),
            (
                "utf8.csv",
                b"text,label\ngood,positive\nbad \xff\xfe,negative\n",
                "utf8.csv:3: the record is not valid UTF-8",
            ),
        ];
        for (name, content, expected) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, content).unwrap();
            let err = read_table(&path).unwrap_err().to_string();
            assert!(err.contains(expected), "{name}: {err}");
        }
    }

    #[test]
    fn a_header_naming_a_column_twice_is_refused_by_both_readers() {
        // On main polars renamed the second `label` and graft silently took the first.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("twice.csv");
        std::fs::write(&path, "text,label,label\ngood,positive,negative\n").unwrap();
        let expected = "twice.csv:1: the header names column `label` twice (columns 2 and 3)";
        let err = read_table(&path).unwrap_err().to_string();
        assert!(err.contains(expected), "{err}");
        let Err(err) = rows::TextRowReader::open(&path, "text", None) else {
            panic!("the streaming reader must refuse it too")
        };
        let err = err.to_string();
        assert!(err.contains(expected), "{err}");
    }

    #[test]
    fn nan_spelt_labels_are_refused_with_their_row() {
        // On main `NaN` and `nan` became classes without a word.
        let dir = tempfile::tempdir().unwrap();
        for (content, value) in [
            ("text,label\na,x\nb,y\nc,NaN\n", "NaN"),
            ("text,label\na,x\nb,y\nc,nan\n", "nan"),
            ("text,label\na,1.5\nb,2.5\nc,NaN\n", "NaN"), // a float column's NaN
        ] {
            let path = dir.path().join("labels.csv");
            std::fs::write(&path, content).unwrap();
            let table = read_table(&path).unwrap();
            let err = text_classification(&table, "text", "label")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("label column `label` holds `{value}` at row 2")),
                "{err}"
            );
        }
    }

    #[test]
    fn csv_and_parquet_fixtures_read_the_same_rows() {
        let csv = read_table(&fixture("tiny-sentiment.csv")).unwrap();
        let parquet = read_table(&fixture("tiny-sentiment.parquet")).unwrap();
        let a = text_classification(&csv, "text", "label").unwrap();
        let b = text_classification(&parquet, "text", "label").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.classes, ["negative", "positive"]);
        assert_eq!(a.rows_read, 40);
        assert_eq!(a.class_counts(), [20, 20]);
    }

    #[test]
    fn null_texts_and_labels_are_dropped_and_counted() {
        let table = read_table(&fixture("with-nulls.csv")).unwrap();
        let data = text_classification(&table, "text", "label").unwrap();
        assert_eq!(data.rows_read, 8);
        assert_eq!(data.dropped_null_text, 2);
        assert_eq!(data.dropped_null_label, 1);
        assert_eq!(data.texts.len(), 5);
        assert_eq!(data.source_rows, [0, 2, 3, 5, 7]);
        assert_eq!(data.texts[1], "fine, with a comma");
    }

    #[test]
    fn numeric_labels_keep_numeric_order() {
        let table = read_table(&fixture("numeric-labels.csv")).unwrap();
        let data = text_classification(&table, "text", "label").unwrap();
        assert_eq!(data.classes, ["2", "10", "100"]);
        assert_eq!(data.labels, [1, 0, 2, 0, 1, 2]);
    }

    #[test]
    fn missing_column_lists_the_columns_that_exist() {
        let table = read_table(&fixture("tiny-sentiment.csv")).unwrap();
        let err = text_classification(&table, "review", "label").unwrap_err();
        assert_eq!(
            err.to_string(),
            "column `review` not found; the table has: id, text, label"
        );
    }

    #[test]
    fn single_class_is_an_error() {
        let table = read_table(&fixture("single-class.csv")).unwrap();
        let err = text_classification(&table, "text", "label").unwrap_err();
        assert_eq!(
            err.to_string(),
            "every usable row has the label `positive`: a classifier needs at least two classes"
        );
    }

    #[test]
    fn empty_and_header_only_files_are_errors() {
        for name in ["empty.csv", "header-only.csv"] {
            let err = read_table(&fixture(name)).unwrap_err();
            assert!(
                err.to_string()
                    .ends_with(&format!("{name} has no data rows")),
                "{err}"
            );
        }
    }

    #[test]
    fn missing_file_and_unknown_format_are_errors() {
        let err = read_table(&fixture("nope.csv")).unwrap_err();
        assert!(
            err.to_string().starts_with("data file not found: "),
            "{err}"
        );
        let err = read_table(&fixture("../README.md")).unwrap_err();
        assert!(
            err.to_string()
                .contains("expected a .csv, .tsv, .jsonl or .parquet file"),
            "{err}"
        );
    }

    #[test]
    fn numeric_text_column_is_a_type_error() {
        let table = read_table(&fixture("tiny-sentiment.csv")).unwrap();
        let err = text_classification(&table, "id", "label").unwrap_err();
        assert_eq!(
            err.to_string(),
            "column `id` holds i64, expected text (a string column)"
        );
    }
}
