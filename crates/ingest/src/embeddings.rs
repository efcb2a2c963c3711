//! Embedding tables on disk: Parquet (`row`, optional id, `embedding` as a fixed-size list of f32) or `.npy`.
//!
//! Writers stream: each [`EmbeddingBatch`] becomes one Parquet row group (or is appended to the `.npy` body),
//! so memory holds one batch. Output goes to a hidden temporary file that is fsynced and renamed over the final
//! name by [`EmbeddingWriter::finish`]; a crash never leaves a half-written file under the final name.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ndarray::Array2;
use polars::prelude::*;

use crate::IngestError;

/// Name of the row-number column.
pub const ROW_COLUMN: &str = "row";
/// Name of the embedding column.
pub const EMBEDDING_COLUMN: &str = "embedding";

/// Consecutive rows of an embedding table.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingBatch {
    /// 0-based row number of the first row in the whole table.
    pub first_row: u64,
    /// Ids of the rows (the column's name is kept), if the table has an id column.
    pub ids: Option<Series>,
    /// One embedding per row.
    pub embeddings: Array2<f32>,
}

/// The file formats an embedding table can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbeddingFormat {
    /// Parquet with `row`, the id column if any, and `embedding`.
    Parquet,
    /// A NumPy `.npy` float32 matrix, rows in order (no ids).
    Npy,
}

impl EmbeddingFormat {
    /// The format named by the file extension (`.parquet`, `.pq` or `.npy`).
    pub fn from_path(path: &Path) -> Result<EmbeddingFormat, IngestError> {
        match path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .as_deref()
        {
            Some("parquet" | "pq") => Ok(EmbeddingFormat::Parquet),
            Some("npy") => Ok(EmbeddingFormat::Npy),
            _ => Err(IngestError::UnsupportedOutput {
                path: path.to_path_buf(),
            }),
        }
    }
}

/// A buffered file that the Parquet writer and [`EmbeddingWriter::finish`] share, so that `finish` can flush
/// and sync it (and see the errors) after the writer has written the footer.
#[derive(Clone)]
struct SharedFile(Arc<Mutex<BufWriter<File>>>);

impl Write for SharedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.lock().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.lock().flush()
    }
}

impl SharedFile {
    fn lock(&self) -> std::sync::MutexGuard<'_, BufWriter<File>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

enum Sink {
    Parquet(
        Box<polars::io::parquet::write::BatchedWriter<SharedFile>>,
        SharedFile,
    ),
    Npy(BufWriter<File>),
}

/// Streams batches of embeddings into a Parquet or `.npy` file.
pub struct EmbeddingWriter {
    path: PathBuf,
    /// The file being written; it replaces `path` on `finish` and vanishes if the writer is dropped.
    target: Option<graft_stdx::atomic::AtomicFile>,
    sink: Option<Sink>,
    dim: usize,
    id_column: Option<(String, DataType)>,
    next_row: u64,
    rows_written: u64,
    rows: Option<u64>,
}

impl std::fmt::Debug for EmbeddingWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingWriter")
            .field("path", &self.path)
            .field("next_row", &self.next_row)
            .finish_non_exhaustive()
    }
}

fn io_error(path: &Path, e: impl std::fmt::Display) -> IngestError {
    IngestError::Write {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// The `.npy` (version 1.0) header of a little-endian float32 `rows × dim` matrix.
fn npy_header(rows: u64, dim: usize) -> Vec<u8> {
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dim}), }}");
    // Magic (6) + version (2) + header length (2) + dict + padding + newline, a multiple of 64 bytes.
    let unpadded = 10 + dict.len() + 1;
    let padding = (64 - unpadded % 64) % 64;
    let len = u16::try_from(dict.len() + padding + 1).expect("a short header");
    let mut out = Vec::with_capacity(unpadded + padding);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.extend(std::iter::repeat_n(b' ', padding));
    out.push(b'\n');
    out
}

impl EmbeddingWriter {
    /// Starts a table at `path` (format from the extension) of `dim`-wide embeddings.
    ///
    /// `id_column` gives the id column's name and type (Parquet only). `rows` is the final row count, which
    /// `.npy` needs up front; `metadata` becomes Parquet key-value metadata.
    pub fn create(
        path: &Path,
        dim: usize,
        id_column: Option<(String, DataType)>,
        rows: Option<u64>,
        metadata: Vec<(String, String)>,
    ) -> Result<EmbeddingWriter, IngestError> {
        let format = EmbeddingFormat::from_path(path)?;
        if path.file_name().is_none() {
            return Err(io_error(path, "not a file name"));
        }
        let mut target =
            graft_stdx::atomic::AtomicFile::create(path).map_err(|e| io_error(path, e))?;
        let file = target
            .file_mut()
            .try_clone()
            .map_err(|e| io_error(path, e))?;
        let sink = match format {
            EmbeddingFormat::Parquet => {
                let mut schema = Schema::default();
                schema.insert(ROW_COLUMN.into(), DataType::UInt64);
                if let Some((name, dtype)) = &id_column {
                    schema.insert(name.as_str().into(), dtype.clone());
                }
                schema.insert(
                    EMBEDDING_COLUMN.into(),
                    DataType::Array(Box::new(DataType::Float32), dim),
                );
                let shared = SharedFile(Arc::new(Mutex::new(BufWriter::with_capacity(
                    1 << 20,
                    file,
                ))));
                let writer = ParquetWriter::new(shared.clone())
                    .with_key_value_metadata(Some(KeyValueMetadata::from_static(metadata)))
                    .batched(&schema)
                    .map_err(|e| io_error(path, e))?;
                Sink::Parquet(Box::new(writer), shared)
            }
            EmbeddingFormat::Npy => {
                if id_column.is_some() {
                    return Err(io_error(
                        path,
                        "a .npy file holds only the embedding matrix, not ids; write .parquet to keep an id column",
                    ));
                }
                let rows =
                    rows.ok_or_else(|| io_error(path, ".npy needs the row count up front"))?;
                let mut out = BufWriter::with_capacity(1 << 20, file);
                out.write_all(&npy_header(rows, dim))
                    .map_err(|e| io_error(path, e))?;
                Sink::Npy(out)
            }
        };
        Ok(EmbeddingWriter {
            path: path.to_path_buf(),
            target: Some(target),
            sink: Some(sink),
            dim,
            id_column,
            next_row: 0,
            rows_written: 0,
            rows,
        })
    }

    /// Appends rows; row numbers must increase from batch to batch (a shard's part skips other shards' rows).
    pub fn write(&mut self, batch: &EmbeddingBatch) -> Result<(), IngestError> {
        let n = batch.embeddings.nrows();
        if batch.first_row < self.next_row || batch.embeddings.ncols() != self.dim {
            return Err(io_error(
                &self.path,
                format!(
                    "batch of rows {}.. with width {} does not follow row {} of a table of width {}",
                    batch.first_row,
                    batch.embeddings.ncols(),
                    self.next_row,
                    self.dim
                ),
            ));
        }
        let flat: Vec<f32> = batch.embeddings.iter().copied().collect();
        match self.sink.as_mut().expect("not finished") {
            Sink::Parquet(writer, _) => {
                let rows: Vec<u64> = (batch.first_row..batch.first_row + n as u64).collect();
                let mut columns = vec![Column::new(ROW_COLUMN.into(), rows)];
                match (&self.id_column, &batch.ids) {
                    (Some((name, dtype)), Some(ids)) if ids.len() == n => {
                        let ids = ids.cast(dtype).map_err(|e| io_error(&self.path, e))?;
                        columns.push(ids.with_name(name.as_str().into()).into());
                    }
                    (None, None) => {}
                    _ => {
                        return Err(io_error(
                            &self.path,
                            "the batch's ids do not match the table's id column",
                        ));
                    }
                }
                let embedding = Series::new(EMBEDDING_COLUMN.into(), flat)
                    .reshape_array(&[
                        ReshapeDimension::new_dimension(n as u64),
                        ReshapeDimension::new_dimension(self.dim as u64),
                    ])
                    .map_err(|e| io_error(&self.path, e))?;
                columns.push(embedding.into());
                let mut frame = DataFrame::new(n, columns).map_err(|e| io_error(&self.path, e))?;
                frame.rechunk_mut();
                writer
                    .write_batch(&frame)
                    .map_err(|e| io_error(&self.path, e))?;
            }
            Sink::Npy(out) => {
                let mut bytes = Vec::with_capacity(flat.len() * 4);
                for v in flat {
                    bytes.extend_from_slice(&v.to_le_bytes());
                }
                out.write_all(&bytes).map_err(|e| io_error(&self.path, e))?;
            }
        }
        self.next_row = batch.first_row + n as u64;
        self.rows_written += n as u64;
        Ok(())
    }

    /// Rows written so far.
    pub fn rows_written(&self) -> u64 {
        self.rows_written
    }

    /// Completes the file, syncs it to disk and moves it to its final name; returns its size in bytes.
    pub fn finish(mut self) -> Result<u64, IngestError> {
        let file = match self.sink.take().expect("not finished") {
            Sink::Parquet(writer, shared) => {
                writer.finish().map_err(|e| io_error(&self.path, e))?;
                drop(writer);
                let mut file = shared.lock();
                file.flush().map_err(|e| io_error(&self.path, e))?;
                file.get_ref()
                    .try_clone()
                    .map_err(|e| io_error(&self.path, e))?
            }
            Sink::Npy(out) => {
                if let Some(rows) = self.rows
                    && rows != self.rows_written
                {
                    return Err(io_error(
                        &self.path,
                        format!("{} rows written, {rows} announced", self.rows_written),
                    ));
                }
                out.into_inner()
                    .map_err(|e| io_error(&self.path, e.error()))?
            }
        };
        drop(file);
        self.target
            .take()
            .expect("not finished")
            .commit()
            .map_err(|e| io_error(&self.path, e))?;
        std::fs::metadata(&self.path)
            .map(|m| m.len())
            .map_err(|e| io_error(&self.path, e))
    }
}

impl Drop for EmbeddingWriter {
    fn drop(&mut self) {
        // Abandoned before `finish`: the temporary file is not a result (dropping the target removes it).
        self.sink = None;
        self.target = None;
    }
}

/// Reads rows `[offset, offset + len)` (all rows when `slice` is `None`) of a Parquet embedding table.
pub fn read_embeddings(
    path: &Path,
    slice: Option<(u64, usize)>,
) -> Result<EmbeddingBatch, IngestError> {
    if slice.is_none() {
        crate::parquet_pages::check_page_counts(path)?;
    }
    let file = File::open(path).map_err(|_| IngestError::NotFound {
        path: path.to_path_buf(),
    })?;
    let frame = crate::parquet_read(path, || {
        ParquetReader::new(file)
            .with_slice(slice.map(|(offset, len)| (offset as usize, len)))
            .finish()
    })?;
    let not_a_table = |what: &str| IngestError::ColumnType {
        column: what.to_owned(),
        expected: "an embedding table written by graft (row, [id], embedding)",
        found: frame
            .get_column_names()
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    };
    let rows = frame
        .column(ROW_COLUMN)
        .ok()
        .and_then(|c| c.u64().ok().cloned())
        .ok_or_else(|| not_a_table(ROW_COLUMN))?;
    let first_row = match rows.get(0) {
        Some(r) => r,
        None => slice.map_or(0, |s| s.0),
    };
    let embedding = frame
        .column(EMBEDDING_COLUMN)
        .ok()
        .and_then(|c| c.array().ok().cloned())
        .ok_or_else(|| not_a_table(EMBEDDING_COLUMN))?;
    let dim = embedding.width();
    let inner = embedding.get_inner();
    let values = inner
        .f32()
        .map_err(|_| not_a_table(EMBEDDING_COLUMN))?
        .rechunk();
    let flat: Vec<f32> = values.iter().map(|v| v.unwrap_or(f32::NAN)).collect();
    let embeddings = Array2::from_shape_vec((frame.height(), dim), flat)
        .map_err(|_| not_a_table(EMBEDDING_COLUMN))?;
    let ids = match frame.width() {
        3 => Some(frame.columns()[1].as_materialized_series().clone()),
        _ => None,
    };
    Ok(EmbeddingBatch {
        first_row,
        ids,
        embeddings,
    })
}

#[cfg(test)]
mod tests {
    use ndarray::array;

    use super::*;

    #[test]
    fn parquet_round_trips_in_row_groups_and_npy_matches_numpy_layout() {
        let dir = tempfile::tempdir().unwrap();
        let a = EmbeddingBatch {
            first_row: 0,
            ids: Some(Series::new("doc".into(), ["x", "y"])),
            embeddings: array![[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]],
        };
        let b = EmbeddingBatch {
            first_row: 2,
            ids: Some(Series::new("doc".into(), ["z"])),
            embeddings: array![[7.0f32, 8.0, 9.0]],
        };
        let path = dir.path().join("e.parquet");
        let mut writer = EmbeddingWriter::create(
            &path,
            3,
            Some(("doc".to_owned(), DataType::String)),
            None,
            vec![("graft.model".to_owned(), "test".to_owned())],
        )
        .unwrap();
        writer.write(&a).unwrap();
        assert!(!path.exists(), "nothing under the final name before finish");
        writer.write(&b).unwrap();
        writer.finish().unwrap();
        assert_eq!(read_embeddings(&path, Some((2, 1))).unwrap(), b);
        let all = read_embeddings(&path, None).unwrap();
        assert_eq!(all.embeddings.nrows(), 3);
        assert_eq!(all.ids.unwrap().name().as_str(), "doc");

        let npy = dir.path().join("e.npy");
        let mut writer = EmbeddingWriter::create(&npy, 3, None, Some(3), Vec::new()).unwrap();
        for batch in [&a, &b] {
            writer
                .write(&EmbeddingBatch {
                    ids: None,
                    ..batch.clone()
                })
                .unwrap();
        }
        writer.finish().unwrap();
        let bytes = std::fs::read(&npy).unwrap();
        let header_len = 10 + u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!(header_len % 64, 0);
        let header = std::str::from_utf8(&bytes[10..header_len]).unwrap();
        assert!(header.contains("'shape': (3, 3)"), "{header}");
        let body: Vec<f32> = bytes[header_len..]
            .chunks(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(body, (1..=9).map(|v| v as f32).collect::<Vec<_>>());
    }

    #[test]
    fn an_abandoned_writer_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.parquet");
        let mut writer = EmbeddingWriter::create(&path, 2, None, None, Vec::new()).unwrap();
        writer
            .write(&EmbeddingBatch {
                first_row: 0,
                ids: None,
                embeddings: array![[1.0f32, 2.0]],
            })
            .unwrap();
        drop(writer);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
