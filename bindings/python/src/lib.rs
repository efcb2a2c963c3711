//! `graft._graft`: the extension module behind the Python package `graft` (see `python/graft/`).
//!
//! A thin layer over `graft-jobs` and `graft-engine`: arguments become their settings types, their errors
//! become `graft.GraftError` carrying graft's message and hint, and every call that runs a model releases
//! the GIL. Embeddings leave as numpy arrays that own the Rust buffer (no copy).

use std::path::PathBuf;
use std::sync::Mutex;

use ndarray::Array2;
use numpy::{IntoPyArray, PyArray2, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyTypeError, PyValueError};
use pyo3::prelude::*;

use graft_engine::{Pooling, Provider};
use graft_jobs::JobError;

create_exception!(
    _graft,
    GraftError,
    PyException,
    "An error graft reports: bad input, a missing or damaged file, a model that cannot run. The message says \
     what and where, and its `hint:` line what to do."
);

fn graft_error(e: impl Into<JobError>) -> PyErr {
    let e: JobError = e.into();
    GraftError::new_err(e.to_string())
}

/// `cpu` or `cuda` (with its device and fallback) as the engine takes it.
fn provider(name: &str, device_id: i32, fallback: bool) -> PyResult<Provider> {
    match name {
        "cpu" => Ok(Provider::Cpu),
        "cuda" => Ok(Provider::Cuda {
            device_id,
            fallback,
        }),
        other => Err(PyValueError::new_err(format!(
            "provider={other:?} is not one graft knows; use \"cpu\" or \"cuda\""
        ))),
    }
}

fn pooling(name: Option<&str>) -> PyResult<Option<Pooling>> {
    match name {
        None => Ok(None),
        Some("mean") => Ok(Some(Pooling::Mean)),
        Some("cls") => Ok(Some(Pooling::Cls)),
        Some(other) => Err(PyValueError::new_err(format!(
            "pooling={other:?} is not one graft knows; use \"mean\" or \"cls\""
        ))),
    }
}

/// `long_texts=`, `stride=` and `chunk_pooling=`, as `graft extract`'s flags.
fn long_texts(
    long_texts: &str,
    stride: Option<usize>,
    chunk_pooling: Option<&str>,
) -> PyResult<graft_engine::LongTexts> {
    let pooling = match chunk_pooling {
        None | Some("mean") => graft_engine::ChunkPooling::Mean,
        Some("max") => graft_engine::ChunkPooling::Max,
        Some(other) => {
            return Err(PyValueError::new_err(format!(
                "chunk_pooling={other:?} is not one graft knows; use \"mean\" or \"max\""
            )));
        }
    };
    match long_texts {
        "chunks" => Ok(graft_engine::LongTexts::Chunks { stride, pooling }),
        "truncate" if stride.is_some() || chunk_pooling.is_some() => Err(PyValueError::new_err(
            "stride= and chunk_pooling= apply to long_texts=\"chunks\"",
        )),
        "truncate" => Ok(graft_engine::LongTexts::Truncate),
        other => Err(PyValueError::new_err(format!(
            "long_texts={other:?} is not one graft knows; use \"truncate\" or \"chunks\""
        ))),
    }
}

/// `model=`: a registry name or a path (str or `os.PathLike`), as `--model` takes it.
fn name_or_path(model: PathBuf) -> String {
    model.to_string_lossy().into_owned()
}

fn cache_dir(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(graft::user_cache_dir)
}

/// Runs `work` with the GIL released, giving it a check for Ctrl-C (and other signals Python handles) to call
/// between steps; an interrupt stops the work and is raised once the GIL is back.
fn detached<T: Send>(
    py: Python<'_>,
    work: impl FnOnce(&mut dyn FnMut() -> Result<(), JobError>) -> Result<T, JobError> + Send,
) -> PyResult<T> {
    let mut interrupt: Option<PyErr> = None;
    let outcome = py.detach(|| {
        let mut check = || {
            Python::attach(|py| py.check_signals()).map_err(|e| {
                interrupt = Some(e);
                JobError::invalid("interrupted", "")
            })
        };
        work(&mut check)
    });
    match (outcome, interrupt) {
        (_, Some(e)) => Err(e),
        (Ok(value), None) => Ok(value),
        (Err(e), None) => Err(graft_error(e)),
    }
}

/// A frozen text backbone in this process (see `graft.Embedder`).
#[pyclass(frozen, module = "graft._graft")]
struct Embedder {
    inner: Mutex<graft_jobs::Embedder>,
    #[pyo3(get)]
    dimension: usize,
    #[pyo3(get)]
    model: String,
    #[pyo3(get)]
    provider: &'static str,
}

#[pymethods]
impl Embedder {
    #[new]
    #[pyo3(signature = (
        model, *, tokenizer=None, max_length=None, long_texts="truncate", stride=None,
        chunk_pooling=None, pooling=None, normalize=None, output_name=None, prompt=None, batch_size=16, threads=None, sessions=None, chunk_rows=4096, provider="cpu",
        device_id=0, fallback=true, cache_dir=None
    ))]
    #[allow(clippy::too_many_arguments)] // Python keyword arguments, one per `graft extract` flag
    fn new(
        py: Python<'_>,
        model: PathBuf,
        tokenizer: Option<PathBuf>,
        max_length: Option<usize>,
        long_texts: &str,
        stride: Option<usize>,
        chunk_pooling: Option<&str>,
        pooling: Option<&str>,
        normalize: Option<bool>,
        output_name: Option<String>,
        prompt: Option<String>,
        batch_size: usize,
        threads: Option<usize>,
        sessions: Option<usize>,
        chunk_rows: usize,
        provider: &str,
        device_id: i32,
        fallback: bool,
        cache_dir: Option<PathBuf>,
    ) -> PyResult<Embedder> {
        let (source, folder) =
            graft::commands::model_source(name_or_path(model), tokenizer).map_err(graft_error)?;
        let mut settings = graft_jobs::EmbedSettings::new(source, self::cache_dir(cache_dir));
        // Explicit settings first, then a model folder's sentence-transformers settings, as `graft extract`.
        let pooling = self::pooling(pooling)?;
        settings.pooling = match &folder {
            Some(f) => f.pooling_or(pooling).map_err(graft_error)?,
            None => pooling,
        };
        settings.max_length = max_length.or(folder.as_ref().and_then(|f| f.max_length));
        settings.normalize = normalize.or(folder.as_ref().and_then(|f| f.normalize));
        settings.long_texts = self::long_texts(long_texts, stride, chunk_pooling)?;
        settings.output_name = output_name;
        settings.prompt = prompt;
        settings.batch_size = batch_size;
        settings.threads = threads.unwrap_or(settings.threads);
        // As `graft extract`: 2 sessions from 2 threads up.
        settings.sessions = sessions.unwrap_or(if settings.threads >= 2 { 2 } else { 1 });
        settings.chunk_rows = chunk_rows;
        settings.provider = self::provider(provider, device_id, fallback)?;
        let embedder = detached(py, |_| graft_jobs::Embedder::open(&settings))?;
        Ok(Embedder {
            dimension: embedder.dimension(),
            model: embedder.model().to_owned(),
            provider: embedder.execution_provider(),
            inner: Mutex::new(embedder),
        })
    }

    /// Embeds `texts` (a list of str); returns a float32 array of shape (len(texts), dimension).
    fn embed<'py>(
        &self,
        py: Python<'py>,
        texts: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        // A str is a sequence of str to PyO3: say what to do rather than "Can't extract `str` to `Vec`".
        if texts.is_instance_of::<pyo3::types::PyString>() {
            return Err(PyTypeError::new_err(
                "embed takes a list of texts, not one str: wrap it in a list, embed([text])",
            ));
        }
        let texts: Vec<String> = texts.extract().map_err(|_| {
            PyTypeError::new_err(format!(
                "embed takes a list of str; got {}",
                texts
                    .get_type()
                    .name()
                    .map_or_else(|_| "another type".to_owned(), |n| n.to_string())
            ))
        })?;
        let embeddings = detached(py, |check| {
            let mut embedder = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            embedder.embed_with(&texts, check)
        })?;
        Ok(embeddings.into_pyarray(py))
    }

    fn __repr__(&self) -> String {
        format!(
            "graft.Embedder(model={:?}, dimension={}, provider={:?})",
            self.model, self.dimension, self.provider
        )
    }
}

/// A run's saved head (see `graft.Head`).
#[pyclass(frozen, module = "graft._graft")]
struct Head {
    head: graft_jobs::SavedHead,
    /// How to embed texts for it; the embedder opens on the first texts.
    text: Option<graft_jobs::EmbedSettings>,
    /// Why texts cannot be embedded for it (a head on given or image features).
    no_text: Option<String>,
    embedder: Mutex<Option<graft_jobs::Embedder>>,
}

#[pymethods]
impl Head {
    #[staticmethod]
    #[pyo3(signature = (
        run_dir, head=None, *, model=None, tokenizer=None, batch_size=16, threads=None, provider="cpu",
        device_id=0, fallback=true, cache_dir=None
    ))]
    #[allow(clippy::too_many_arguments)] // Python keyword arguments, one per `graft predict` flag
    fn load(
        py: Python<'_>,
        run_dir: PathBuf,
        head: Option<String>,
        model: Option<PathBuf>,
        tokenizer: Option<PathBuf>,
        batch_size: usize,
        threads: Option<usize>,
        provider: &str,
        device_id: i32,
        fallback: bool,
        cache_dir: Option<PathBuf>,
    ) -> PyResult<Head> {
        let provider = self::provider(provider, device_id, fallback)?;
        let cache_dir = self::cache_dir(cache_dir);
        let model = model
            .map(|m| {
                graft::commands::model_source(name_or_path(m), tokenizer).map(|(source, _)| source)
            })
            .transpose()
            .map_err(graft_error)?;
        detached(py, |_| {
            let saved = graft_jobs::SavedHead::open(&run_dir, head.as_deref())?;
            let (text, no_text) = if saved.takes_texts() {
                let mut text = saved.embed_settings(model, &cache_dir)?;
                text.batch_size = batch_size;
                text.threads = threads.unwrap_or(text.threads);
                text.provider = provider;
                (Some(text), None)
            } else {
                // A head on given or image features still scores features; texts get the reason why not.
                let why = saved
                    .embed_settings(None, &cache_dir)
                    .err()
                    .map(|e| e.to_string());
                (None, why)
            };
            Ok(Head {
                head: saved,
                text,
                no_text,
                embedder: Mutex::new(None),
            })
        })
    }

    /// The head's name in its run (`logistic`, `logistic-tuned`).
    #[getter]
    fn name(&self) -> &str {
        self.head.name()
    }

    /// Class names, in the order of predict_proba's columns.
    #[getter]
    fn classes(&self) -> Vec<String> {
        self.head.classes().to_vec()
    }

    /// The feature width the head takes.
    #[getter]
    fn n_features(&self) -> usize {
        self.head.n_features()
    }

    /// Multi-label heads: each label's decision threshold; None for single-label heads.
    #[getter]
    fn thresholds(&self) -> Option<Vec<f32>> {
        self.head.thresholds().map(<[f32]>::to_vec)
    }

    /// Each class's probability for each row: `rows` is a list of texts (embedded by the run's backbone with
    /// the run's settings) or a 2-D float array of features.
    fn predict_proba<'py>(
        &self,
        py: Python<'py>,
        rows: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let proba = match features(rows)? {
            Some(x) => detached(py, |_| self.head.predict_proba(x.view()))?,
            None => {
                let texts: Vec<String> = rows.extract().map_err(|_| {
                    PyTypeError::new_err(
                        "predict_proba takes a list of texts or a 2-D numpy array of features (rows × features)",
                    )
                })?;
                self.predict_texts(py, texts)?
            }
        };
        Ok(proba.into_pyarray(py))
    }

    fn __repr__(&self) -> String {
        format!(
            "graft.Head(name={:?}, classes={:?}, n_features={})",
            self.head.name(),
            self.head.classes(),
            self.head.n_features()
        )
    }
}

impl Head {
    fn predict_texts(&self, py: Python<'_>, texts: Vec<String>) -> PyResult<Array2<f32>> {
        let Some(settings) = &self.text else {
            return Err(GraftError::new_err(
                self.no_text.clone().unwrap_or_default(),
            ));
        };
        detached(py, |check| {
            let mut embedder = self.embedder.lock().unwrap_or_else(|p| p.into_inner());
            if embedder.is_none() {
                *embedder = Some(graft_jobs::Embedder::open(settings)?);
            }
            let features = embedder
                .as_mut()
                .expect("opened above")
                .embed_with(&texts, check)?;
            self.head.predict_proba(features.view())
        })
    }
}

/// `rows` as a features matrix when it is a numpy array (float32, or float64 narrowed); `None` when it is
/// not an array at all.
fn features(rows: &Bound<'_, PyAny>) -> PyResult<Option<Array2<f32>>> {
    if let Ok(x) = rows.extract::<PyReadonlyArray2<'_, f32>>() {
        return Ok(Some(x.as_array().to_owned()));
    }
    if let Ok(x) = rows.extract::<PyReadonlyArray2<'_, f64>>() {
        return Ok(Some(x.as_array().mapv(|v| v as f32)));
    }
    if let Ok(array) = rows.cast::<numpy::PyUntypedArray>() {
        return Err(PyTypeError::new_err(format!(
            "features must be a 2-D float32 or float64 array (rows × features); this one is {}-D of {}",
            array.ndim(),
            array.dtype()
        )));
    }
    Ok(None)
}

/// Runs a pipeline file; returns `metrics.json` with the run folder added under `run_dir`, as JSON text
/// (`graft.run` parses it).
#[pyfunction]
#[pyo3(signature = (pipeline, *, cache_dir=None, runs_dir=None, progress=true))]
fn run(
    py: Python<'_>,
    pipeline: PathBuf,
    cache_dir: Option<PathBuf>,
    runs_dir: Option<PathBuf>,
    progress: bool,
) -> PyResult<String> {
    let defaults = graft::Defaults::installed();
    let mut options = graft_engine::RunOptions::new(
        self::cache_dir(cache_dir),
        runs_dir.unwrap_or(defaults.runs_dir),
    );
    options.progress = progress;
    detached(py, |_| {
        let plan = graft_config::Plan::load(&pipeline)?;
        let outcome = graft_engine::run(&plan, &options)?;
        let mut metrics = serde_json::to_value(&outcome.metrics).expect("metrics serialise");
        metrics["run_dir"] = serde_json::Value::String(outcome.run_dir.display().to_string());
        Ok(metrics.to_string())
    })
}

/// The `graft` command: `argv` as `sys.argv` gives it; returns the exit status.
#[pyfunction]
fn main(py: Python<'_>, argv: Vec<String>) -> u8 {
    py.detach(|| graft::exit_status_with(&graft::Defaults::installed(), argv))
}

#[pymodule]
fn _graft(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // `graft/__init__.py` has set ORT_DISABLE_TELEMETRY already (through os.environ, so Python sees it);
    // this covers a host that imports `graft._graft` directly.
    graft_engine::provision::disable_runtime_telemetry();
    graft::init_tracing();
    m.add("GraftError", m.py().get_type::<GraftError>())?;
    m.add_class::<Embedder>()?;
    m.add_class::<Head>()?;
    m.add_function(wrap_pyfunction!(run, m)?)?;
    m.add_function(wrap_pyfunction!(main, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
