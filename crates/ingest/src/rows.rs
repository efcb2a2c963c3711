//! Streaming text rows out of large files, a chunk at a time, for batch extraction jobs.
//!
//! [`read_table`](crate::read_table) loads a whole table; a job over millions of rows must not. A
//! [`TextRowReader`] keeps one chunk of texts (and ids) in memory: CSV/TSV through the `csv` crate's streaming
//! parser, JSONL line by line, Parquet one row-group-aligned slice at a time.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use polars::prelude::*;

use crate::IngestError;
use crate::delimited::{check_quotes, delimiter_for, header, open_file, parse_error};

/// A run of consecutive rows: their texts and, when an id column was named, their ids.
#[derive(Debug, Clone)]
pub struct TextChunk {
    /// 0-based index of the chunk's first row in the file.
    pub first_row: u64,
    /// One text per row.
    pub texts: Vec<String>,
    /// The id column's values for these rows (Parquet keeps the column's type; CSV and JSONL give strings).
    pub ids: Option<Series>,
}

enum Source {
    Csv {
        reader: csv::Reader<BufReader<File>>,
        text: usize,
        id: Option<usize>,
        record: csv::StringRecord,
    },
    Jsonl {
        lines: std::io::Lines<BufReader<File>>,
        line: u64,
    },
    Parquet {
        rows: u64,
    },
}

/// Reads the text (and id) column of a CSV, TSV, JSONL or Parquet file in chunks, in file order.
pub struct TextRowReader {
    path: PathBuf,
    text_column: String,
    id_column: Option<String>,
    source: Source,
    next_row: u64,
}

impl std::fmt::Debug for TextRowReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextRowReader")
            .field("path", &self.path)
            .field("next_row", &self.next_row)
            .finish_non_exhaustive()
    }
}

fn extension(path: &Path) -> String {
    path.extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default()
}

impl TextRowReader {
    /// Opens `path` (by extension: `.csv`, `.tsv`, `.jsonl`/`.ndjson`, `.parquet`) and checks that the named
    /// columns exist (for JSONL, each line is checked as it is read).
    pub fn open(
        path: &Path,
        text_column: &str,
        id_column: Option<&str>,
    ) -> Result<TextRowReader, IngestError> {
        let ext = extension(path);
        let missing = |column: &str, available: Vec<String>| IngestError::MissingColumn {
            column: column.to_owned(),
            available,
        };
        let source = match ext.as_str() {
            "csv" | "tsv" => {
                let mut reader = crate::delimited::reader(
                    BufReader::with_capacity(1 << 20, open_file(path)?),
                    delimiter_for(&ext),
                );
                let names = header(path, &mut reader)?;
                let find = |column: &str| {
                    names
                        .iter()
                        .position(|n| n == column)
                        .ok_or_else(|| missing(column, names.clone()))
                };
                let text = find(text_column)?;
                let id = id_column.map(find).transpose()?;
                Source::Csv {
                    reader,
                    text,
                    id,
                    record: csv::StringRecord::new(),
                }
            }
            "jsonl" | "ndjson" => Source::Jsonl {
                lines: BufReader::with_capacity(1 << 20, open_file(path)?).lines(),
                line: 0,
            },
            "parquet" | "pq" => {
                crate::parquet_pages::check_page_counts(path)?;
                let mut reader = ParquetReader::new(open_file(path)?);
                let schema = crate::parquet_read(path, || reader.schema())?;
                let names: Vec<String> = schema.iter_names().map(|n| n.to_string()).collect();
                for column in std::iter::once(text_column).chain(id_column) {
                    if !names.iter().any(|n| n == column) {
                        return Err(missing(column, names));
                    }
                }
                let dtype = &schema.get(text_column).expect("checked above").dtype;
                if !matches!(
                    dtype,
                    polars::prelude::ArrowDataType::Utf8
                        | polars::prelude::ArrowDataType::LargeUtf8
                        | polars::prelude::ArrowDataType::Utf8View
                ) {
                    return Err(IngestError::ColumnType {
                        column: text_column.to_owned(),
                        expected: "text (a string column)",
                        found: format!("{dtype:?}"),
                    });
                }
                let rows = crate::parquet_read(path, || reader.num_rows())? as u64;
                Source::Parquet { rows }
            }
            _ => {
                return Err(IngestError::UnsupportedFormat {
                    path: path.to_path_buf(),
                });
            }
        };
        Ok(TextRowReader {
            path: path.to_path_buf(),
            text_column: text_column.to_owned(),
            id_column: id_column.map(str::to_owned),
            source,
            next_row: 0,
        })
    }

    /// The number of data rows, when the format stores it (Parquet); `None` for CSV and JSONL.
    pub fn known_rows(&self) -> Option<u64> {
        match self.source {
            Source::Parquet { rows } => Some(rows),
            _ => None,
        }
    }

    /// Index of the next row [`next_chunk`](Self::next_chunk) returns.
    pub fn position(&self) -> u64 {
        self.next_row
    }

    /// Reads up to `rows` rows; `None` at the end of the file.
    pub fn next_chunk(&mut self, rows: usize) -> Result<Option<TextChunk>, IngestError> {
        Ok(self.read(rows, true)?.1)
    }

    /// Passes over up to `rows` rows without keeping them (parsing still checks them); returns how many.
    pub fn skip(&mut self, rows: usize) -> Result<usize, IngestError> {
        Ok(self.read(rows, false)?.0)
    }

    /// Reads (`keep`) or passes over up to `rows` rows; returns how many and, when kept, the chunk.
    fn read(&mut self, rows: usize, keep: bool) -> Result<(usize, Option<TextChunk>), IngestError> {
        let first_row = self.next_row;
        let mut texts = Vec::with_capacity(if keep { rows } else { 0 });
        let mut ids: Vec<Option<String>> = Vec::new();
        let mut count = 0usize;
        let path = self.path.clone();
        match &mut self.source {
            Source::Csv {
                reader,
                text,
                id,
                record,
            } => {
                while count < rows {
                    let more = reader.read_record(record).map_err(|e| {
                        parse_error(&path, e.position().map_or(0, |p| p.line()), &e)
                    })?;
                    if !more {
                        break;
                    }
                    let field = |i: usize| {
                        record.get(i).ok_or_else(|| IngestError::Parse {
                            path: path.clone(),
                            line: record.position().map_or(0, |p| p.line()),
                            message: format!(
                                "the record has {} fields, fewer than the header",
                                record.len()
                            ),
                        })
                    };
                    let t = field(*text)?;
                    let i = id.map(field).transpose()?;
                    if keep {
                        texts.push(t.to_owned());
                        if let Some(i) = i {
                            ids.push(Some(i.to_owned()));
                        }
                    }
                    count += 1;
                }
            }
            Source::Jsonl { lines, line } => {
                while count < rows {
                    let Some(next) = lines.next() else { break };
                    *line += 1;
                    let raw = next.map_err(|e| IngestError::Parse {
                        path: path.clone(),
                        line: *line,
                        message: e.to_string(),
                    })?;
                    if raw.trim().is_empty() {
                        continue;
                    }
                    let (t, i) = jsonl_fields(&raw, &self.text_column, self.id_column.as_deref())
                        .map_err(|message| IngestError::Parse {
                        path: path.clone(),
                        line: *line,
                        message,
                    })?;
                    if keep {
                        texts.push(t);
                        if self.id_column.is_some() {
                            ids.push(i);
                        }
                    }
                    count += 1;
                }
            }
            Source::Parquet { rows: total } => {
                let take = (rows as u64).min(total.saturating_sub(first_row)) as usize;
                self.next_row += take as u64;
                if take == 0 || !keep {
                    return Ok((take, None));
                }
                let chunk = parquet_chunk(
                    &path,
                    (&self.text_column, self.id_column.as_deref()),
                    first_row,
                    take,
                )?;
                return Ok((take, Some(chunk)));
            }
        }
        self.next_row += count as u64;
        if count == 0 || !keep {
            return Ok((count, None));
        }
        let ids = self
            .id_column
            .as_ref()
            .map(|name| Series::new(name.as_str().into(), ids));
        Ok((
            count,
            Some(TextChunk {
                first_row,
                texts,
                ids,
            }),
        ))
    }
}

/// A string column (e.g. ids made by the caller), in the type [`TextChunk::ids`] carries.
pub fn string_series(name: &str, values: Vec<String>) -> Series {
    Series::new(name.into(), values)
}

/// Counts the data rows of a file [`TextRowReader`] can read (a fast pass for CSV and JSONL).
pub fn count_rows(path: &Path) -> Result<u64, IngestError> {
    let ext = extension(path);
    match ext.as_str() {
        "csv" | "tsv" => {
            check_quotes(path, delimiter_for(&ext))?;
            let mut reader = crate::delimited::reader(
                BufReader::with_capacity(1 << 20, open_file(path)?),
                delimiter_for(&ext),
            );
            let mut record = csv::ByteRecord::new();
            let mut rows = 0;
            while reader
                .read_byte_record(&mut record)
                .map_err(|e| parse_error(path, e.position().map_or(0, |p| p.line()), &e))?
            {
                rows += 1;
            }
            Ok(rows)
        }
        "jsonl" | "ndjson" => {
            let mut rows = 0;
            for line in BufReader::with_capacity(1 << 20, open_file(path)?).split(b'\n') {
                let line = line.map_err(|e| IngestError::Parse {
                    path: path.to_path_buf(),
                    line: rows,
                    message: e.to_string(),
                })?;
                if !line.iter().all(u8::is_ascii_whitespace) {
                    rows += 1;
                }
            }
            Ok(rows)
        }
        "parquet" | "pq" => {
            let mut reader = ParquetReader::new(open_file(path)?);
            crate::parquet_read(path, || reader.num_rows()).map(|n| n as u64)
        }
        _ => Err(IngestError::UnsupportedFormat {
            path: path.to_path_buf(),
        }),
    }
}

/// Rows `first_row..first_row + take` of a Parquet file's text (and id) column, read as one slice.
fn parquet_chunk(
    path: &Path,
    (text_column, id_column): (&str, Option<&str>),
    first_row: u64,
    take: usize,
) -> Result<TextChunk, IngestError> {
    let mut texts = Vec::with_capacity(take);
    let mut columns = vec![text_column.to_owned()];
    columns.extend(id_column.map(str::to_owned));
    let read_err = |source| IngestError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = open_file(path)?;
    let frame = crate::parquet_read(path, || {
        ParquetReader::new(file)
            .with_columns(Some(columns))
            .with_slice(Some((first_row as usize, take)))
            .finish()
    })?;
    let text = frame
        .column(text_column)
        .and_then(|c| c.str().cloned())
        .map_err(read_err)?;
    for (offset, t) in text.iter().enumerate() {
        let t = t.ok_or_else(|| IngestError::NullText {
            path: path.to_path_buf(),
            row: first_row + offset as u64,
        })?;
        texts.push(t.to_owned());
    }
    let ids = match id_column {
        Some(name) => Some(
            frame
                .column(name)
                .map_err(read_err)?
                .as_materialized_series()
                .rechunk(),
        ),
        None => None,
    };
    Ok(TextChunk {
        first_row,
        texts,
        ids,
    })
}

/// The text and id of one JSONL line.
fn jsonl_fields(
    raw: &str,
    text_column: &str,
    id_column: Option<&str>,
) -> Result<(String, Option<String>), String> {
    let value: serde_json::Value =
        serde_json::from_str(raw).map_err(|e| format!("not valid JSON: {e}"))?;
    let object = value
        .as_object()
        .ok_or("expected a JSON object per line, like {\"text\": \"…\"}")?;
    let keys = || object.keys().cloned().collect::<Vec<_>>().join(", ");
    let text = match object.get(text_column) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(format!(
                "key `{text_column}` holds {other}, expected a string"
            ));
        }
        None => {
            return Err(format!(
                "no key `{text_column}`; the object has: {}",
                keys()
            ));
        }
    };
    let id = match id_column {
        None => None,
        Some(name) => match object.get(name) {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Null) => None,
            Some(other) => Some(other.to_string()),
            None => return Err(format!("no key `{name}`; the object has: {}", keys())),
        },
    };
    Ok((text, id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture;

    fn all_rows(path: &Path, chunk: usize) -> (Vec<String>, Vec<String>) {
        let mut reader = TextRowReader::open(path, "text", Some("id")).unwrap();
        let (mut texts, mut ids) = (Vec::new(), Vec::new());
        while let Some(c) = reader.next_chunk(chunk).unwrap() {
            assert_eq!(c.first_row as usize, texts.len());
            let id = c.ids.unwrap().cast(&DataType::String).unwrap();
            ids.extend(id.str().unwrap().iter().map(|s| s.unwrap().to_owned()));
            texts.extend(c.texts);
        }
        (texts, ids)
    }

    #[test]
    fn csv_jsonl_and_parquet_stream_the_same_rows_in_any_chunk_size() {
        let reference = all_rows(&fixture("tiny-sentiment.csv"), 1000);
        assert_eq!(reference.0.len(), 40);
        for (name, chunk) in [
            ("tiny-sentiment.csv", 7),
            ("tiny-sentiment.jsonl", 7),
            ("tiny-sentiment.jsonl", 40),
            ("tiny-sentiment.parquet", 3),
        ] {
            assert_eq!(all_rows(&fixture(name), chunk), reference, "{name}");
            assert_eq!(count_rows(&fixture(name)).unwrap(), 40, "{name}");
        }
    }

    #[test]
    fn skipping_keeps_row_numbers() {
        let mut reader =
            TextRowReader::open(&fixture("tiny-sentiment.jsonl"), "text", None).unwrap();
        assert_eq!(reader.skip(25).unwrap(), 25);
        let chunk = reader.next_chunk(100).unwrap().unwrap();
        assert_eq!(chunk.first_row, 25);
        assert_eq!(chunk.texts.len(), 15);
        assert!(chunk.ids.is_none());
        assert!(reader.next_chunk(100).unwrap().is_none());
    }

    #[test]
    fn an_unclosed_quote_is_refused_with_its_line_not_read_as_shifted_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shifted.csv");
        std::fs::write(
            &path,
            "id,text\n1,\"fine\"\n2,\"opened, never closed\n3,\"next\"\n4,last\n",
        )
        .unwrap();
        let err = count_rows(&path).unwrap_err().to_string();
        assert!(err.contains("shifted.csv:4:"), "{err}");
        assert!(err.contains("quote opened on line 3"), "{err}");
        // Quoted line ends, doubled quotes and quotes inside unquoted fields are fine.
        std::fs::write(
            &path,
            "id,text\n1,\"two\nlines\"\n2,\"a \"\"quoted\"\" word\"\n3,5\" tall\r\n",
        )
        .unwrap();
        assert_eq!(count_rows(&path).unwrap(), 3);
        std::fs::write(&path, "id,text\n1,\"runs to the end\n").unwrap();
        let err = count_rows(&path).unwrap_err().to_string();
        assert!(
            err.contains("shifted.csv:2:") && err.contains("never closed"),
            "{err}"
        );
    }

    #[test]
    fn bad_lines_name_the_file_and_line() {
        let err = TextRowReader::open(&fixture("tiny-sentiment.csv"), "review", None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "column `review` not found; the table has: id, text, label"
        );
        let mut reader = TextRowReader::open(&fixture("bad-lines.jsonl"), "text", None).unwrap();
        let err = reader.next_chunk(10).unwrap_err().to_string();
        assert!(
            err.ends_with("bad-lines.jsonl:3: key `text` holds 5, expected a string"),
            "{err}"
        );
    }
}
