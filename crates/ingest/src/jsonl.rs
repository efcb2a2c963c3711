//! JSON Lines tables for pipelines: one object per line, read into a polars frame without polars' JSON
//! reader (which would add a second JSON stack to the build). A column's type is what its values are:
//! whole numbers → Int64, numbers → Float64, booleans → Boolean, strings → String (a column mixing kinds
//! becomes String); a key missing from a line, or `null`, is a null cell. Nested values are refused.

use std::io::BufRead;
use std::path::Path;

use polars::prelude::{Column, DataFrame, NamedFrom, Series};
use serde_json::Value;

use crate::IngestError;

/// One line: an object's keys in the order written (serde_json's map would sort them), or anything else.
enum Line {
    Object(Vec<(String, Value)>),
    Other,
}

impl<'de> serde::Deserialize<'de> for Line {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Line, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Line;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Line, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    entries.push(entry);
                }
                Ok(Line::Object(entries))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Line, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Line::Other)
            }
            fn visit_str<E>(self, _: &str) -> Result<Line, E> {
                Ok(Line::Other)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Line, E> {
                Ok(Line::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Line, E> {
                Ok(Line::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Line, E> {
                Ok(Line::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Line, E> {
                Ok(Line::Other)
            }
            fn visit_unit<E>(self) -> Result<Line, E> {
                Ok(Line::Other)
            }
        }
        deserializer.deserialize_any(Visit)
    }
}

/// The values of one key, in line order.
#[derive(Default)]
struct Cells {
    values: Vec<Value>,
}

pub(crate) fn read_jsonl_table(path: &Path) -> Result<DataFrame, IngestError> {
    let file = std::fs::File::open(path).map_err(|_| IngestError::NotFound {
        path: path.to_path_buf(),
    })?;
    let parse = |line: u64, message: String| IngestError::Parse {
        path: path.to_path_buf(),
        line,
        message,
    };
    let mut columns: Vec<(String, Cells)> = Vec::new();
    let mut rows = 0usize;
    for (index, line) in std::io::BufReader::new(file).lines().enumerate() {
        let number = index as u64 + 1;
        let line = line.map_err(|e| {
            parse(
                number,
                format!("cannot read the line ({e}); JSONL is UTF-8 text"),
            )
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let value: Line = serde_json::from_str(&line)
            .map_err(|e| parse(number, format!("not valid JSON: {e}")))?;
        let Line::Object(object) = value else {
            return Err(parse(
                number,
                "expected a JSON object per line, like {\"text\": \"…\", \"label\": \"…\"}".into(),
            ));
        };
        for (key, value) in object {
            if matches!(value, Value::Array(_) | Value::Object(_)) {
                return Err(parse(
                    number,
                    format!(
                        "key `{key}` holds a nested value; a table cell is a string, number, boolean or null"
                    ),
                ));
            }
            let at = match columns.iter().position(|(k, _)| *k == key) {
                Some(at) => at,
                None => {
                    columns.push((
                        key,
                        Cells {
                            values: vec![Value::Null; rows],
                        },
                    ));
                    columns.len() - 1
                }
            };
            let cells = &mut columns[at].1.values;
            cells.resize(rows, Value::Null);
            cells.push(value);
        }
        rows += 1;
        for (_, cells) in &mut columns {
            cells.values.resize(rows, Value::Null);
        }
    }
    let series: Vec<Column> = columns
        .into_iter()
        .map(|(name, cells)| Column::from(typed(&name, &cells.values)))
        .collect();
    DataFrame::new(rows, series).map_err(|source| IngestError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// One column as its values' common type.
fn typed(name: &str, values: &[Value]) -> Series {
    let present = || values.iter().filter(|v| !v.is_null());
    if present().all(|v| v.is_i64()) {
        let v: Vec<Option<i64>> = values.iter().map(Value::as_i64).collect();
        return Series::new(name.into(), v);
    }
    if present().all(Value::is_number) {
        let v: Vec<Option<f64>> = values.iter().map(Value::as_f64).collect();
        return Series::new(name.into(), v);
    }
    if present().all(Value::is_boolean) {
        let v: Vec<Option<bool>> = values.iter().map(Value::as_bool).collect();
        return Series::new(name.into(), v);
    }
    let v: Vec<Option<String>> = values
        .iter()
        .map(|v| match v {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        })
        .collect();
    Series::new(name.into(), v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(text: &str) -> Result<DataFrame, IngestError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.jsonl");
        std::fs::write(&path, text).unwrap();
        read_jsonl_table(&path)
    }

    #[test]
    fn columns_take_their_values_type_and_missing_keys_are_nulls() {
        let f = frame("{\"text\": \"a\", \"label\": 1, \"w\": 0.5}\n\n{\"text\": \"b\", \"label\": 2, \"flag\": true}\n").unwrap();
        assert_eq!(f.height(), 2);
        let names: Vec<&str> = f.get_column_names().iter().map(|n| n.as_str()).collect();
        assert_eq!(names, ["text", "label", "w", "flag"]);
        assert_eq!(
            f.column("label").unwrap().dtype(),
            &polars::prelude::DataType::Int64
        );
        assert_eq!(f.column("w").unwrap().null_count(), 1);
        assert_eq!(f.column("flag").unwrap().null_count(), 1);
        let mixed = frame("{\"label\": 1}\n{\"label\": \"two\"}\n").unwrap();
        assert_eq!(
            mixed.column("label").unwrap().dtype(),
            &polars::prelude::DataType::String
        );
    }

    #[test]
    fn bad_lines_are_named() {
        for (text, line, fragment) in [
            ("{\"text\": \"a\"}\n{oops\n", 2, "not valid JSON"),
            ("[1, 2]\n", 1, "expected a JSON object per line"),
            (
                "{\"text\": \"a\"}\n{\"text\": {\"nested\": 1}}\n",
                2,
                "key `text` holds a nested value",
            ),
        ] {
            let err = frame(text).unwrap_err().to_string();
            assert!(
                err.contains(&format!("t.jsonl:{line}: {fragment}")),
                "{err}"
            );
        }
    }
}
