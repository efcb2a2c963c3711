//! CSV and TSV, one way for every command: the `csv` crate's parser with one configuration, a quote check
//! first (the parser is lenient about an unclosed quote), unique header names, and errors that name the
//! line. [`read_table`](crate::read_table) reads a file once into a typed table; [`TextRowReader`]
//! (crate::TextRowReader) streams the same records a chunk at a time.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use polars::prelude::{Column, DataFrame};

use crate::IngestError;

/// The field separator a file's extension means: a tab for `.tsv`, else a comma.
pub(crate) fn delimiter_for(ext: &str) -> u8 {
    if ext == "tsv" { b'\t' } else { b',' }
}

/// The one parser configuration: a header row, `"` quoting with `""` inside, every record as wide as the
/// header.
pub(crate) fn reader<R: Read>(source: R, delimiter: u8) -> csv::Reader<R> {
    csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .from_reader(source)
}

pub(crate) fn open_file(path: &Path) -> Result<File, IngestError> {
    File::open(path).map_err(|_| IngestError::NotFound {
        path: path.to_path_buf(),
    })
}

/// The header's column names, each named once.
pub(crate) fn header<R: Read>(
    path: &Path,
    reader: &mut csv::Reader<R>,
) -> Result<Vec<String>, IngestError> {
    let names: Vec<String> = reader
        .headers()
        .map_err(|e| parse_error(path, e.position().map_or(1, |p| p.line()), &e))?
        .iter()
        .map(str::to_owned)
        .collect();
    check_unique_columns(path, &names)?;
    Ok(names)
}

/// A whole CSV/TSV file as a table, read from disk once: quotes checked, every record parsed (a ragged row
/// or invalid UTF-8 is an error naming its line), empty fields as nulls, and each column typed by all its
/// values: whole numbers (i64), else numbers (f64, `NaN` and `inf` included), else `true`/`false`, else
/// text.
pub(crate) fn read_table(path: &Path, delimiter: u8) -> Result<DataFrame, IngestError> {
    let bytes = std::fs::read(path).map_err(|_| IngestError::NotFound {
        path: path.to_path_buf(),
    })?;
    check_quotes_in(path, delimiter, &bytes[..])?;
    let mut reader = reader(&bytes[..], delimiter);
    let names = header(path, &mut reader)?;
    let mut cells: Vec<Vec<Option<String>>> = vec![Vec::new(); names.len()];
    let mut record = csv::StringRecord::new();
    let mut rows = 0;
    loop {
        match reader.read_record(&mut record) {
            Ok(true) => {
                rows += 1;
                for (column, field) in cells.iter_mut().zip(record.iter()) {
                    column.push((!field.is_empty()).then(|| field.to_owned()));
                }
            }
            Ok(false) => break,
            Err(e) => return Err(parse_error(path, e.position().map_or(0, |p| p.line()), &e)),
        }
    }
    let columns: Vec<Column> = names
        .iter()
        .zip(cells)
        .map(|(name, values)| typed_column(name, values))
        .collect();
    DataFrame::new(rows, columns).map_err(|source| IngestError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// A column of the narrowest type every present value parses as.
fn typed_column(name: &str, values: Vec<Option<String>>) -> Column {
    fn all<T>(
        values: &[Option<String>],
        parse: impl Fn(&str) -> Option<T>,
    ) -> Option<Vec<Option<T>>> {
        values
            .iter()
            .map(|v| match v {
                Some(v) => parse(v).map(Some),
                None => Some(None),
            })
            .collect()
    }
    let name = name.into();
    let present = values.iter().any(Option::is_some);
    if present {
        if let Some(v) = all(&values, |v| v.parse::<i64>().ok()) {
            return Column::new(name, v);
        }
        if let Some(v) = all(&values, parse_float) {
            return Column::new(name, v);
        }
        if let Some(v) = all(&values, parse_bool) {
            return Column::new(name, v);
        }
    }
    Column::new(name, values)
}

/// A number as a table writes one: digits with an optional sign, point and exponent, or `NaN`/`inf`
/// (not Rust's other spellings, such as `infinity`).
fn parse_float(v: &str) -> Option<f64> {
    let body = v.strip_prefix(['-', '+']).unwrap_or(v);
    let numeric = body.eq_ignore_ascii_case("nan")
        || body.eq_ignore_ascii_case("inf")
        || (body.starts_with(|c: char| c.is_ascii_digit() || c == '.')
            && body
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+')));
    numeric.then(|| v.parse().ok()).flatten()
}

fn parse_bool(v: &str) -> Option<bool> {
    if v.eq_ignore_ascii_case("true") {
        Some(true)
    } else if v.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// A header that names a column twice is refused: readers would silently take one of the two.
fn check_unique_columns(path: &Path, names: &[String]) -> Result<(), IngestError> {
    for (second, name) in names.iter().enumerate() {
        if let Some(first) = names[..second].iter().position(|n| n == name) {
            return Err(IngestError::Parse {
                path: path.to_path_buf(),
                line: 1,
                message: format!(
                    "the header names column `{name}` twice (columns {} and {}); rename one",
                    first + 1,
                    second + 1
                ),
            });
        }
    }
    Ok(())
}

/// Checks that every quoted field of a CSV/TSV file is closed where a field ends. The CSV parser is lenient
/// there: a quote that is opened and never closed makes it run the following lines into one field, so rows
/// merge and every later row shifts without an error. A field that starts with a quote must end with one,
/// followed by a delimiter or a line end (`""` inside stands for one quote); a quote inside an unquoted
/// field is an ordinary character.
pub(crate) fn check_quotes(path: &Path, delimiter: u8) -> Result<(), IngestError> {
    check_quotes_in(
        path,
        delimiter,
        BufReader::with_capacity(1 << 20, open_file(path)?),
    )
}

/// [`check_quotes`] of bytes read from `reader` (`path` names them in errors).
pub(crate) fn check_quotes_in(
    path: &Path,
    delimiter: u8,
    mut reader: impl BufRead,
) -> Result<(), IngestError> {
    let error = |line: u64, message: String| IngestError::Parse {
        path: path.to_path_buf(),
        line,
        message,
    };
    let (mut line, mut opened_on) = (1u64, 0u64);
    // Outside a field's start, inside an unquoted field, inside quotes, or just after a quote inside quotes.
    #[derive(PartialEq)]
    enum State {
        FieldStart,
        Unquoted,
        Quoted,
        QuoteInQuoted,
    }
    let mut state = State::FieldStart;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| error(line, e.to_string()))?;
        if n == 0 {
            break;
        }
        for &b in &buf {
            state = match state {
                State::FieldStart if b == b'"' => {
                    opened_on = line;
                    State::Quoted
                }
                State::FieldStart | State::Unquoted if b == delimiter || b == b'\n' => {
                    State::FieldStart
                }
                State::FieldStart | State::Unquoted => State::Unquoted,
                State::Quoted if b == b'"' => State::QuoteInQuoted,
                State::Quoted => State::Quoted,
                State::QuoteInQuoted if b == b'"' => State::Quoted,
                State::QuoteInQuoted if b == delimiter || b == b'\n' => State::FieldStart,
                State::QuoteInQuoted if b == b'\r' => State::QuoteInQuoted,
                State::QuoteInQuoted => {
                    return Err(error(
                        line,
                        format!(
                            "a quoted field ends in the middle of a field here; the quote opened on line {opened_on} \
                             is probably never closed (every later row would shift). Close it, or write a quote \
                             inside a quoted field as \"\""
                        ),
                    ));
                }
            };
            if b == b'\n' {
                line += 1;
            }
        }
    }
    if state == State::Quoted {
        return Err(error(
            opened_on,
            "a quote opened on this line is never closed before the end of the file".to_owned(),
        ));
    }
    Ok(())
}

pub(crate) fn parse_error(path: &Path, line: u64, e: &csv::Error) -> IngestError {
    IngestError::Parse {
        path: path.to_path_buf(),
        line,
        message: match e.kind() {
            csv::ErrorKind::Utf8 { .. } => "the record is not valid UTF-8".to_owned(),
            csv::ErrorKind::UnequalLengths {
                expected_len, len, ..
            } => format!("the record has {len} fields, the header {expected_len}"),
            _ => e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use polars::prelude::DataType;

    /// Typed as polars' CSV reader typed the same files (graft used it until every command shared this
    /// parser; the frames of every fixture table, MR and the Amazon snippets were compared equal), except that
    /// every row decides a column's type, not the first 10,000.
    #[test]
    fn columns_are_typed_by_all_their_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.tsv");
        let mut text = "int\tfloat\tnan\tflag\ttext\tempty\n".to_owned();
        for i in 0..10_001 {
            text.push_str(&format!("{i}\t{i}\t1.5\ttrue\tx{i}\t\n"));
        }
        text.push_str("-3\t2.5e3\tNaN\tFALSE\t\t\n");
        std::fs::write(&path, text).unwrap();
        let table = super::read_table(&path, b'\t').unwrap();
        let types: Vec<DataType> = table.dtypes();
        assert_eq!(
            types,
            [
                DataType::Int64,
                DataType::Float64,
                DataType::Float64,
                DataType::Boolean,
                DataType::String,
                DataType::String
            ]
        );
        assert_eq!(table.height(), 10_002);
        let last = table.get_row(10_001).unwrap().0;
        assert_eq!(last[1].extract::<f64>(), Some(2500.0));
        assert!(last[2].extract::<f64>().unwrap().is_nan());
        assert!(last[4].is_null() && last[5].is_null());
    }

    #[test]
    fn a_ragged_row_and_an_open_quote_name_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        std::fs::write(&path, "a,b\n1,2\n3\n").unwrap();
        let err = super::read_table(&path, b',').unwrap_err().to_string();
        assert!(
            err.contains("t.csv:3") && err.contains("1 fields, the header 2"),
            "{err}"
        );
        std::fs::write(&path, "a,b\n1,\"two\n3,4\n").unwrap();
        let err = super::read_table(&path, b',').unwrap_err().to_string();
        assert!(
            err.contains("t.csv:2") && err.contains("never closed"),
            "{err}"
        );
    }
}
