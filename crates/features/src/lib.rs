//! A content-addressed, row-level store of extracted features, shared by every pipeline.
//!
//! Features are filed under a *namespace*: the hash of everything that changes an extractor's output (model
//! and tokenizer checksums, truncation, pooling, normalisation, …), given by the caller as a description
//! string. Inside a namespace each row is keyed by the sha256 of its content, so a re-run with only head
//! settings changed finds every row, and a data set that grew by 100 rows needs only those 100 extracted.
//!
//! Storage is a folder of immutable chunk files per namespace. A chunk is written to a temporary name,
//! flushed and renamed into place, and ends with the sha256 of its body; a chunk that fails that check (a
//! crash can at worst leave an unrenamed temporary file, but disks and people do damage files) is skipped
//! with a warning and never trusted. Why not Parquet or a key-value database: the store only ever appends
//! whole batches and reads them back whole, so a checksummed, fixed-layout file gives atomicity and
//! verification with nothing to configure and no extra dependency.
//!
//! ```
//! use graft_features::{FeatureStore, row_key};
//! use ndarray::array;
//!
//! # fn main() -> Result<(), graft_features::FeatureError> {
//! let dir = tempfile::tempdir().unwrap();
//! let store = FeatureStore::open(dir.path(), "model=abc;pooling=mean")?;
//! let keys = [row_key(b"a moving film"), row_key(b"a dull film")];
//! store.insert(&keys, array![[1.0f32, 0.0], [0.0, 1.0]].view())?;
//! let found = store.lookup(&keys)?;
//! assert_eq!(found.hits(), 2);
//! assert_eq!(found.rows.row(1).to_vec(), vec![0.0, 1.0]);
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use ndarray::{Array2, ArrayView2};
use sha2::{Digest, Sha256};

/// A row's content key: sha256 of its bytes.
pub type RowKey = [u8; 32];

/// Hashes a row's content into its key.
pub fn row_key(content: &[u8]) -> RowKey {
    Sha256::digest(content).into()
}

const MAGIC: &[u8; 8] = b"GRAFTFS1";
const HEADER: usize = 8 + 4 + 8;
const CHUNK_PREFIX: &str = "chunk-";

/// Everything that can go wrong with the store.
#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    /// A file-system error.
    #[error("feature cache {}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Keys and rows of different lengths.
    #[error("{keys} keys for {rows} rows")]
    Count {
        /// Keys given.
        keys: usize,
        /// Rows given.
        rows: usize,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FeatureError + '_ {
    move |source| FeatureError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The features found for a list of keys.
#[derive(Debug, Clone)]
pub struct Lookup {
    /// One row per key; rows not found are zeros. Zero columns when the namespace holds nothing yet.
    pub rows: Array2<f32>,
    /// Whether each key was found.
    pub found: Vec<bool>,
    /// Chunks skipped because they failed verification.
    pub rejected_chunks: usize,
}

impl Lookup {
    /// Keys found.
    pub fn hits(&self) -> usize {
        self.found.iter().filter(|&&f| f).count()
    }

    /// Indices of the keys not found.
    pub fn missing(&self) -> Vec<usize> {
        (0..self.found.len()).filter(|&i| !self.found[i]).collect()
    }
}

/// The folder of the namespace `description` names: the first 12 bytes of its sha256, in hex.
fn namespace_dir(root: &Path, description: &str) -> PathBuf {
    root.join(graft_stdx::hex(
        &Sha256::digest(description.as_bytes())[..12],
    ))
}

/// One namespace of the store.
#[derive(Debug, Clone)]
pub struct FeatureStore {
    dir: PathBuf,
}

impl FeatureStore {
    /// Opens (creating if needed) the namespace described by `description` under `root`. The description is
    /// stored beside the chunks, for `stats`.
    pub fn open(root: &Path, description: &str) -> Result<FeatureStore, FeatureError> {
        let dir = namespace_dir(root, description);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let about = dir.join("namespace.txt");
        if !about.exists() {
            graft_stdx::atomic::write(&about, format!("{description}\n").as_bytes())
                .map_err(io(&about))?;
        }
        Ok(FeatureStore { dir })
    }

    /// The namespace described by `description`, if the store has it; creates nothing (for looking without
    /// touching, as `run --dry-run` does).
    pub fn open_existing(root: &Path, description: &str) -> Option<FeatureStore> {
        let dir = namespace_dir(root, description);
        dir.is_dir().then_some(FeatureStore { dir })
    }

    /// The namespace's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn chunks(&self) -> Result<Vec<PathBuf>, FeatureError> {
        let mut chunks: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map_err(io(&self.dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(CHUNK_PREFIX) && n.ends_with(".bin"))
            })
            .collect();
        chunks.sort();
        Ok(chunks)
    }

    /// Finds stored rows for `keys`. Chunks that fail verification are skipped (and counted).
    pub fn lookup(&self, keys: &[RowKey]) -> Result<Lookup, FeatureError> {
        let mut wanted: HashMap<&RowKey, Vec<usize>> = HashMap::with_capacity(keys.len());
        for (i, key) in keys.iter().enumerate() {
            wanted.entry(key).or_default().push(i);
        }
        // Every chunk of a namespace has the width of the first valid one; a chunk that disagrees is damaged.
        let mut width: Option<usize> = None;
        let mut rows = Array2::<f32>::zeros((keys.len(), 0));
        let mut found = vec![false; keys.len()];
        let mut rejected_chunks = 0;
        for chunk in self.chunks()? {
            let Some((chunk_width, entries)) = read_chunk(&chunk, width) else {
                tracing::warn!(chunk = %chunk.display(), "skipping a feature-cache chunk that fails verification");
                rejected_chunks += 1;
                continue;
            };
            if width.is_none() {
                width = Some(chunk_width);
                rows = Array2::zeros((keys.len(), chunk_width));
            }
            for (key, values) in entries {
                if let Some(positions) = wanted.get(&key) {
                    for &i in positions {
                        rows.row_mut(i)
                            .assign(&ndarray::ArrayView1::from(&values[..]));
                        found[i] = true;
                    }
                }
            }
        }
        Ok(Lookup {
            rows,
            found,
            rejected_chunks,
        })
    }

    /// Stores `rows` under `keys` as one new chunk, atomically.
    pub fn insert(&self, keys: &[RowKey], rows: ArrayView2<'_, f32>) -> Result<(), FeatureError> {
        if keys.len() != rows.nrows() {
            return Err(FeatureError::Count {
                keys: keys.len(),
                rows: rows.nrows(),
            });
        }
        if keys.is_empty() {
            return Ok(());
        }
        let width = rows.ncols();
        let mut body = Vec::with_capacity(HEADER + keys.len() * (32 + 4 * width) + 32);
        body.extend_from_slice(MAGIC);
        body.extend_from_slice(&(width as u32).to_le_bytes());
        body.extend_from_slice(&(keys.len() as u64).to_le_bytes());
        for (key, row) in keys.iter().zip(rows.rows()) {
            body.extend_from_slice(key);
            for v in row {
                body.extend_from_slice(&v.to_le_bytes());
            }
        }
        let digest = Sha256::digest(&body);
        body.extend_from_slice(&digest);
        // Chunks are named by their content hash: the same batch stored twice is the same file.
        let name = graft_stdx::hex(&digest[..16]);
        let path = self.dir.join(format!("{CHUNK_PREFIX}{name}.bin"));
        graft_stdx::atomic::write(&path, &body).map_err(io(&path))
    }
}

/// Reads and verifies a chunk (of `width` features, when given); `None` when it is damaged in any way.
type Entries = Vec<(RowKey, Vec<f32>)>;
fn read_chunk(path: &Path, width: Option<usize>) -> Option<(usize, Entries)> {
    let mut bytes = Vec::new();
    BufReader::new(File::open(path).ok()?)
        .read_to_end(&mut bytes)
        .ok()?;
    if bytes.len() < HEADER + 32 || &bytes[..8] != MAGIC {
        return None;
    }
    let (body, digest) = bytes.split_at(bytes.len() - 32);
    if Sha256::digest(body).as_slice() != digest {
        return None;
    }
    let stored_width = u32::from_le_bytes(body[8..12].try_into().ok()?) as usize;
    let count = u64::from_le_bytes(body[12..20].try_into().ok()?) as usize;
    let entry = 32 + 4 * stored_width;
    if width.is_some_and(|w| w != stored_width) || body.len() != HEADER + count * entry {
        return None;
    }
    Some((
        stored_width,
        body[HEADER..]
            .chunks_exact(entry)
            .map(|e| {
                let key: RowKey = e[..32].try_into().expect("32 bytes");
                let values = e[32..]
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                    .collect();
                (key, values)
            })
            .collect(),
    ))
}

/// Size of one namespace, for `cache stats`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceStats {
    /// The namespace's folder.
    pub dir: PathBuf,
    /// The description it was opened with (first line of `namespace.txt`).
    pub description: String,
    /// Chunk files.
    pub chunks: usize,
    /// Stored rows (duplicates across chunks counted once per chunk).
    pub rows: usize,
    /// Bytes on disk.
    pub bytes: u64,
}

/// Sizes of every namespace under `root`, sorted by folder.
pub fn stats(root: &Path) -> Result<Vec<NamespaceStats>, FeatureError> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(root) else {
        return Ok(out);
    };
    for entry in entries.filter_map(Result::ok) {
        let dir = entry.path();
        if !dir.is_dir() {
            continue;
        }
        let description = std::fs::read_to_string(dir.join("namespace.txt"))
            .ok()
            .and_then(|t| t.lines().next().map(str::to_owned))
            .unwrap_or_default();
        let (mut chunks, mut rows, mut bytes) = (0, 0, 0);
        for file in std::fs::read_dir(&dir)
            .map_err(io(&dir))?
            .filter_map(Result::ok)
        {
            let meta = file.metadata().map_err(io(&file.path()))?;
            bytes += meta.len();
            let name = file.file_name().to_string_lossy().into_owned();
            if name.starts_with(CHUNK_PREFIX) {
                chunks += 1;
                let mut header = [0u8; HEADER];
                if File::open(file.path())
                    .and_then(|mut f| f.read_exact(&mut header))
                    .is_ok()
                {
                    rows +=
                        u64::from_le_bytes(header[12..20].try_into().expect("8 bytes")) as usize;
                }
            }
        }
        out.push(NamespaceStats {
            dir,
            description,
            chunks,
            rows,
            bytes,
        });
    }
    out.sort_by(|a, b| a.dir.cmp(&b.dir));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use ndarray::array;

    use super::*;

    fn keys(n: usize) -> Vec<RowKey> {
        (0..n)
            .map(|i| row_key(format!("row {i}").as_bytes()))
            .collect()
    }

    #[test]
    fn miss_then_hit_then_incremental() {
        let dir = tempfile::tempdir().unwrap();
        let store = FeatureStore::open(dir.path(), "ns").unwrap();
        let k = keys(3);
        let first = store.lookup(&k).unwrap();
        assert_eq!((first.hits(), first.missing()), (0, vec![0, 1, 2]));
        store
            .insert(&k[..2], array![[1.0f32, 2.0], [3.0, 4.0]].view())
            .unwrap();
        let second = store.lookup(&k).unwrap();
        assert_eq!(second.missing(), vec![2]);
        assert_eq!(second.rows, array![[1.0f32, 2.0], [3.0, 4.0], [0.0, 0.0]]);
        store.insert(&k[2..], array![[5.0f32, 6.0]].view()).unwrap();
        let third = store.lookup(&k).unwrap();
        assert_eq!(third.hits(), 3);
        assert_eq!(third.rows.row(2).to_vec(), vec![5.0, 6.0]);
        let s = stats(dir.path()).unwrap();
        assert_eq!(
            (s.len(), s[0].chunks, s[0].rows, s[0].description.as_str()),
            (1, 2, 3, "ns")
        );
    }

    #[test]
    fn namespaces_are_separate() {
        let dir = tempfile::tempdir().unwrap();
        let a = FeatureStore::open(dir.path(), "pooling=mean").unwrap();
        let b = FeatureStore::open(dir.path(), "pooling=cls").unwrap();
        a.insert(&keys(1), array![[1.0f32]].view()).unwrap();
        assert_eq!(b.lookup(&keys(1)).unwrap().hits(), 0);
        assert_eq!(
            FeatureStore::open(dir.path(), "pooling=mean")
                .unwrap()
                .lookup(&keys(1))
                .unwrap()
                .hits(),
            1
        );
    }

    #[test]
    fn damaged_or_partial_chunks_are_never_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let store = FeatureStore::open(dir.path(), "ns").unwrap();
        let k = keys(2);
        store
            .insert(&k, array![[1.0f32, 2.0], [3.0, 4.0]].view())
            .unwrap();
        let chunk = store.chunks().unwrap().remove(0);
        // A flipped bit in a value.
        let mut bytes = std::fs::read(&chunk).unwrap();
        bytes[HEADER + 33] ^= 1;
        std::fs::write(&chunk, &bytes).unwrap();
        let found = store.lookup(&k).unwrap();
        assert_eq!((found.hits(), found.rejected_chunks), (0, 1));
        // A truncated chunk (as a torn write would leave, had it been renamed).
        std::fs::write(&chunk, &bytes[..bytes.len() / 2]).unwrap();
        assert_eq!(store.lookup(&k).unwrap().hits(), 0);
        // A leftover temporary file from a killed writer is ignored.
        std::fs::write(store.dir().join(".partial-xyz"), b"half a chunk").unwrap();
        std::fs::remove_file(&chunk).unwrap();
        store
            .insert(&k, array![[1.0f32, 2.0], [3.0, 4.0]].view())
            .unwrap();
        let found = store.lookup(&k).unwrap();
        assert_eq!((found.hits(), found.rejected_chunks), (2, 0));
    }

    #[test]
    fn empty_namespace_has_no_width_and_counts_must_match() {
        let dir = tempfile::tempdir().unwrap();
        let store = FeatureStore::open(dir.path(), "ns").unwrap();
        let found = store.lookup(&keys(2)).unwrap();
        assert_eq!(found.rows.dim(), (2, 0));
        let err = store
            .insert(&keys(2), array![[1.0f32, 2.0]].view())
            .unwrap_err();
        assert_eq!(err.to_string(), "2 keys for 1 rows");
    }
}
