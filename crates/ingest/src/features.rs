//! Features computed elsewhere: an embedding matrix from Parquet (a list or fixed-size-list column) or `.npy`,
//! with labels and an optional predefined split, so the heads and evaluation run without a backbone.

use std::path::Path;

use ndarray::Array2;
use polars::prelude::*;

use crate::{IngestError, column, encode_labels, labels_as_text};

/// Which split a row was assigned to by the data's own `split` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitTag {
    /// `train`
    Train,
    /// `validation` (also `val`, `valid`, `dev`)
    Validation,
    /// `test`
    Test,
}

impl SplitTag {
    /// Reads a split name (case-insensitive).
    pub fn parse(value: &str) -> Option<SplitTag> {
        match value.trim().to_ascii_lowercase().as_str() {
            "train" | "training" => Some(SplitTag::Train),
            "validation" | "val" | "valid" | "dev" => Some(SplitTag::Validation),
            "test" => Some(SplitTag::Test),
            _ => None,
        }
    }
}

/// Labelled feature rows, ready for a head.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureClassificationData {
    /// One feature row per usable row.
    pub features: Array2<f32>,
    /// Class index per usable row, into `classes`.
    pub labels: Vec<usize>,
    /// Class names; numeric labels in numeric order, others in lexicographic order.
    pub classes: Vec<String>,
    /// 0-based row number in the source of each usable row.
    pub source_rows: Vec<usize>,
    /// Each usable row's predefined split, when a split column was named.
    pub split: Option<Vec<SplitTag>>,
    /// Rows in the source.
    pub rows_read: usize,
    /// Rows dropped because the label was null.
    pub dropped_null_label: usize,
}

fn bad_row(path: &Path, row: usize, message: impl Into<String>) -> IngestError {
    IngestError::BadRow {
        path: path.to_path_buf(),
        row: row as u64,
        message: message.into(),
    }
}

/// Reads a feature matrix: `.npy` (2-D float32 or float64, C or Fortran order) or the list column
/// `embedding_column` of a Parquet table (every row the same length; float or integer values). Every value
/// must be finite.
pub fn read_feature_matrix(
    path: &Path,
    embedding_column: &str,
) -> Result<Array2<f32>, IngestError> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let matrix = match ext.as_str() {
        "npy" => read_npy(path)?,
        "parquet" | "pq" => {
            let table = crate::read_table(path)?;
            list_column_matrix(path, &table, embedding_column)?
        }
        _ => {
            return Err(IngestError::Parse {
                path: path.to_path_buf(),
                line: 0,
                message:
                    "features must be a .parquet table (with an embedding list column) or a .npy \
                          matrix"
                        .to_owned(),
            });
        }
    };
    if matrix.ncols() == 0 {
        // A header can claim (10^18, 0): no bytes, and nothing a head could learn from.
        return Err(IngestError::Parse {
            path: path.to_path_buf(),
            line: 0,
            message: format!(
                "the feature matrix has {} rows of 0 features; every row needs at least one value",
                matrix.nrows()
            ),
        });
    }
    // Over the values, not the rows: the rows' count is the header's word, the values are really there.
    if let Some(at) = matrix.iter().position(|v| !v.is_finite()) {
        return Err(bad_row(
            path,
            at / matrix.ncols(),
            "the feature vector has NaN or infinite values",
        ));
    }
    Ok(matrix)
}

/// The fixed-width list column `name` of `table` as a matrix.
fn list_column_matrix(
    path: &Path,
    table: &DataFrame,
    name: &str,
) -> Result<Array2<f32>, IngestError> {
    let col = column(table, name)?;
    let wrong_type = || IngestError::ColumnType {
        column: name.to_owned(),
        expected: "a list of numbers per row (list or fixed-size list of float/int)",
        found: col.dtype().to_string(),
    };
    // Only numbers: a list of strings would be cast to floats, parsing whatever the strings say.
    match col.dtype() {
        DataType::List(inner) | DataType::Array(inner, _) if inner.is_primitive_numeric() => {}
        _ => return Err(wrong_type()),
    }
    let as_list = col
        .cast(&DataType::List(Box::new(DataType::Float32)))
        .map_err(|_| wrong_type())?;
    let lists = as_list.list().map_err(|_| wrong_type())?;
    let mut width = None;
    let mut flat = Vec::new();
    for row in 0..lists.len() {
        let series = lists
            .get_as_series(row)
            .filter(|_| lists.get(row).is_some())
            .ok_or_else(|| bad_row(path, row, format!("`{name}` is null")))?;
        let values = series.f32().map_err(|_| wrong_type())?;
        let w = *width.get_or_insert(values.len());
        if values.len() != w {
            return Err(bad_row(
                path,
                row,
                format!("`{name}` has {} values; row 0 has {w}", values.len()),
            ));
        }
        if w == 0 {
            return Err(bad_row(path, row, format!("`{name}` is empty")));
        }
        for v in values.iter() {
            flat.push(v.unwrap_or(f32::NAN));
        }
    }
    Array2::from_shape_vec((table.height(), width.unwrap_or(0)), flat).map_err(|_| wrong_type())
}

/// A NumPy `.npy` file holding a 2-D float32 or float64 matrix.
fn read_npy(path: &Path) -> Result<Array2<f32>, IngestError> {
    let bytes = std::fs::read(path).map_err(|_| IngestError::NotFound {
        path: path.to_path_buf(),
    })?;
    let bad = |message: &str| IngestError::Parse {
        path: path.to_path_buf(),
        line: 0,
        message: format!("not a readable .npy matrix: {message}"),
    };
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("missing the \\x93NUMPY magic"));
    }
    let (header_len, start) = match bytes[6] {
        1 => (
            usize::from(u16::from_le_bytes([bytes[8], bytes[9]])),
            10usize,
        ),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        _ => return Err(bad("unknown format version")),
    };
    let header = start
        .checked_add(header_len)
        .and_then(|end| bytes.get(start..end))
        .map(String::from_utf8_lossy)
        .ok_or_else(|| bad("truncated header"))?;
    let field = |key: &str| -> Option<String> {
        let at = header.find(&format!("'{key}'"))? + key.len() + 2;
        let rest = header[at..].trim_start().strip_prefix(':')?.trim_start();
        let end = if rest.starts_with('(') {
            rest.find(')')? + 1
        } else {
            rest.find([',', '}'])?
        };
        Some(rest[..end].trim().trim_matches('\'').to_owned())
    };
    let descr = field("descr").ok_or_else(|| bad("no descr"))?;
    let fortran = field("fortran_order").ok_or_else(|| bad("no fortran_order"))? == "True";
    let shape: Vec<usize> = field("shape")
        .ok_or_else(|| bad("no shape"))?
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| bad("unreadable shape"))?;
    let [rows, cols] = shape[..] else {
        return Err(bad(&format!(
            "expected a 2-D matrix (rows × features), found shape {shape:?}"
        )));
    };
    let body = &bytes[start + header_len..];
    // A header may claim any shape: the element count and byte size are checked, never trusted.
    let n = rows
        .checked_mul(cols)
        .ok_or_else(|| bad(&format!("shape ({rows}, {cols}) is too large")))?;
    let size = |width: usize| n.checked_mul(width);
    let values: Vec<f32> = match descr.as_str() {
        "<f4" | "|f4" if size(4) == Some(body.len()) => body
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        "<f8" if size(8) == Some(body.len()) => body
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
            .collect(),
        "<f4" | "|f4" | "<f8" => {
            return Err(bad("the data is shorter or longer than the shape says"));
        }
        other => {
            return Err(bad(&format!(
                "element type {other}; expected float32 (<f4) or float64 (<f8)"
            )));
        }
    };
    let matrix = if fortran {
        Array2::from_shape_vec((cols, rows), values)
            .map(|m| m.reversed_axes().as_standard_layout().to_owned())
    } else {
        Array2::from_shape_vec((rows, cols), values)
    };
    matrix.map_err(|_| bad("shape mismatch"))
}

/// Pairs a feature matrix with the labels (and optional split tags) of `table`, row by row: rows whose label
/// is null are dropped and counted; the table must have as many rows as the matrix.
pub fn feature_classification(
    features: Array2<f32>,
    table: &DataFrame,
    table_path: &Path,
    label_column: &str,
    split_column: Option<&str>,
) -> Result<FeatureClassificationData, IngestError> {
    if table.height() != features.nrows() {
        return Err(IngestError::Parse {
            path: table_path.to_path_buf(),
            line: 0,
            message: format!(
                "{} label rows for {} feature rows; the labels must be row-aligned with the features",
                table.height(),
                features.nrows()
            ),
        });
    }
    let label = column(table, label_column)?;
    let (label_strings, numeric_labels) = labels_as_text(label, label_column)?;
    let label_strings = label_strings
        .str()
        .expect("cast to String yields a string column");
    let split = split_column
        .map(|name| -> Result<Vec<Option<String>>, IngestError> {
            let c = column(table, name)?;
            let s = c.str().map_err(|_| IngestError::ColumnType {
                column: name.to_owned(),
                expected: "split names (train, validation, test)",
                found: c.dtype().to_string(),
            })?;
            Ok(s.iter().map(|v| v.map(str::to_owned)).collect())
        })
        .transpose()?;

    let rows_read = table.height();
    let mut raw_labels = Vec::with_capacity(rows_read);
    let mut source_rows = Vec::with_capacity(rows_read);
    let mut tags = Vec::new();
    let mut dropped_null_label = 0;
    for (row, l) in label_strings.iter().enumerate() {
        let Some(l) = l else {
            dropped_null_label += 1;
            continue;
        };
        if let Some(split) = &split {
            let value = split[row].as_deref().unwrap_or("");
            let tag = SplitTag::parse(value).ok_or_else(|| {
                bad_row(
                    table_path,
                    row,
                    format!(
                        "split `{value}` in column `{}`; expected train, validation (val, dev) or test",
                        split_column.unwrap_or_default()
                    ),
                )
            })?;
            tags.push(tag);
        }
        raw_labels.push(l.to_owned());
        source_rows.push(row);
    }
    if raw_labels.is_empty() {
        return Err(IngestError::NoUsableRows { rows: rows_read });
    }
    let (labels, classes) = encode_labels(&raw_labels, numeric_labels)?;
    let features = if source_rows.len() == rows_read {
        features
    } else {
        features.select(ndarray::Axis(0), &source_rows)
    };
    Ok(FeatureClassificationData {
        features,
        labels,
        classes,
        source_rows,
        split: split.map(|_| tags),
        rows_read,
        dropped_null_label,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str, fortran: bool, shape: (usize, usize), body: &[u8]) -> Vec<u8> {
        let dict = format!(
            "{{'descr': '{descr}', 'fortran_order': {}, 'shape': ({}, {}), }}",
            if fortran { "True" } else { "False" },
            shape.0,
            shape.1
        );
        let mut header = dict.into_bytes();
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(b' ');
        }
        header.push(b'\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn npy_float32_float64_and_fortran_order_read_the_same_matrix() {
        let dir = tempfile::tempdir().unwrap();
        let values = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]; // 2 × 3, row-major
        let f4: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let f8: Vec<u8> = values
            .iter()
            .flat_map(|v| f64::from(*v).to_le_bytes())
            .collect();
        let column_major = [1.0f32, 4.0, 2.0, 5.0, 3.0, 6.0];
        let ff: Vec<u8> = column_major.iter().flat_map(|v| v.to_le_bytes()).collect();
        let expected = ndarray::array![[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]];
        for (name, bytes) in [
            ("f4.npy", npy("<f4", false, (2, 3), &f4)),
            ("f8.npy", npy("<f8", false, (2, 3), &f8)),
            ("ff.npy", npy("<f4", true, (2, 3), &ff)),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            assert_eq!(
                read_feature_matrix(&path, "embedding").unwrap(),
                expected,
                "{name}"
            );
        }
        let path = dir.path().join("int.npy");
        std::fs::write(&path, npy("<i8", false, (1, 1), &[0; 8])).unwrap();
        let err = read_feature_matrix(&path, "embedding")
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected float32"), "{err}");
        let nan: Vec<u8> = [1.0f32, f32::NAN]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        std::fs::write(&path, npy("<f4", false, (2, 1), &nan)).unwrap();
        let err = read_feature_matrix(&path, "embedding")
            .unwrap_err()
            .to_string();
        assert!(err.contains("row 1") && err.contains("NaN"), "{err}");
    }

    #[test]
    fn parquet_list_columns_read_and_ragged_rows_are_located() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.parquet");
        let write = |rows: Vec<Vec<f64>>| {
            let series: Vec<Series> = rows
                .into_iter()
                .map(|r| Series::new("".into(), r))
                .collect();
            let embedding = Series::new("embedding".into(), series);
            let label = Series::new("label".into(), vec!["a", "b", "a"]);
            let split = Series::new("split".into(), vec!["train", "VAL", "test"]);
            let mut frame =
                DataFrame::new(3, vec![embedding.into(), label.into(), split.into()]).unwrap();
            ParquetWriter::new(std::fs::File::create(&path).unwrap())
                .finish(&mut frame)
                .unwrap();
        };
        write(vec![vec![1.0, 2.0], vec![3.0, 4.0], vec![5.0, 6.0]]);
        let m = read_feature_matrix(&path, "embedding").unwrap();
        assert_eq!(m, ndarray::array![[1.0f32, 2.0], [3.0, 4.0], [5.0, 6.0]]);
        let table = crate::read_table(&path).unwrap();
        let data = feature_classification(m, &table, &path, "label", Some("split")).unwrap();
        assert_eq!(data.labels, [0, 1, 0]);
        assert_eq!(
            data.split,
            Some(vec![SplitTag::Train, SplitTag::Validation, SplitTag::Test])
        );
        let err = read_feature_matrix(&path, "vectors")
            .unwrap_err()
            .to_string();
        assert!(err.contains("column `vectors` not found"), "{err}");

        write(vec![vec![1.0, 2.0], vec![3.0], vec![5.0, 6.0]]);
        let err = read_feature_matrix(&path, "embedding")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("row 1") && err.contains("has 1 values; row 0 has 2"),
            "{err}"
        );

        // Numbers stored as strings are not parsed: on main `["1", "2"]` read as 1.0, 2.0.
        let strings: Vec<Series> = (0..3)
            .map(|_| Series::new("".into(), vec!["1", "2"]))
            .collect();
        let mut frame =
            DataFrame::new(3, vec![Series::new("embedding".into(), strings).into()]).unwrap();
        ParquetWriter::new(std::fs::File::create(&path).unwrap())
            .finish(&mut frame)
            .unwrap();
        let err = read_feature_matrix(&path, "embedding")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("a list of numbers per row") && err.contains("str"),
            "{err}"
        );
    }
}
