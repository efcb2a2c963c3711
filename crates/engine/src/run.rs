//! Running a checked plan: ingest → provision → extract → train → evaluate → write the run folder.

use std::path::{Path, PathBuf};
use std::time::Instant;

use graft_assets::{Cache, VerifiedFile, sha256_file};
use graft_backbone::{
    BackboneError, ImageBackbone, ImageBackboneConfig, ImageSource, ORT_DYLIB_ENV, Provider,
    Runtime, TextBackbone,
};
use graft_eval::{
    Bootstrap, classification_report, mcnemar, multi_label_report, probability_report,
};
use graft_features::{FeatureStore, Lookup, RowKey, row_key};
use graft_heads::{LabelSets, Targets, argmax_rows};
use graft_ingest::{
    IngestError, Split, SplitRatios, SplitTag, TextClassificationData, group_kfold, image_folder,
    read_idx_images, read_idx_labels, read_table, stratified_kfold, stratified_split,
    stratified_subsample, text_classification,
};
use ndarray::{Array2, Axis};
use rayon::prelude::*;

use crate::PipelineError;
use crate::curve::{BaselineInputs, CurveData};
use crate::heads::{ArtefactInfo, TrainedHead, save_head, train_head, train_multi_label_head};
use graft_config::HeadSpec;
use graft_config::{DataSource, ModelSource, Plan, Selection, SplitPlan};
use graft_report::{
    self, BackboneRecord, Comparison, Context, CvScores, DataRecord, ExtractionFigures,
    FeatureCacheRecord, FileRecord, HeadMetrics, HostRecord, Manifest, Metrics, ModelRecord,
    PipelineRecord, RUN_FORMAT, RowCounts, RuntimeRecord, SearchCandidate, SearchReport,
    SplitIntervals, SplitMetrics, Timings,
};

/// Where a run reads its cache and writes its folder.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Cache of fetched runtimes, models and data sets.
    pub cache_dir: PathBuf,
    /// Parent of the `<pipeline name>/<timestamp>/` run folders.
    pub runs_dir: PathBuf,
    /// Draw progress bars (on a terminal).
    pub progress: bool,
    /// Root of the shared feature cache (default `<cache_dir>/features`).
    pub features_dir: PathBuf,
}

impl RunOptions {
    /// Options with progress bars on.
    pub fn new(cache_dir: impl Into<PathBuf>, runs_dir: impl Into<PathBuf>) -> RunOptions {
        let cache_dir = cache_dir.into();
        RunOptions {
            features_dir: cache_dir.join("features"),
            cache_dir,
            runs_dir: runs_dir.into(),
            progress: true,
        }
    }
}

/// What a finished run produced.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The run folder (complete: it appears only once every file is written).
    pub run_dir: PathBuf,
    /// The metrics written to `metrics.json`.
    pub metrics: Metrics,
    /// The summary table, for printing.
    pub summary: String,
}

/// Derives an independent seed for one use of the pipeline seed, so that e.g. the sample and the split do not
/// share a random stream.
pub(crate) fn derive_seed(seed: u64, purpose: &str) -> u64 {
    // FNV-1a over the purpose, mixed with the seed (splitmix64 finaliser).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in purpose.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut z = seed ^ h;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The rows a run embeds: texts or images.
enum Inputs {
    Texts(Vec<String>),
    Images(Vec<ImageSource>),
    /// Feature vectors given with the data (no backbone).
    Features(Array2<f32>),
}

/// Each row's labels, for multi-label data.
struct MultiLabels {
    sets: Vec<Vec<usize>>,
    /// Label names, sorted.
    names: Vec<String>,
}

impl MultiLabels {
    /// Splits each raw label cell on `separator` (labels trimmed; empty pieces ignored).
    fn from_cells(cells: &[&str], separator: &str) -> MultiLabels {
        let pieces: Vec<Vec<&str>> = cells
            .iter()
            .map(|c| {
                c.split(separator)
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .collect()
            })
            .collect();
        let mut names: Vec<String> = pieces.iter().flatten().map(|p| (*p).to_owned()).collect();
        names.sort_unstable();
        names.dedup();
        let index: std::collections::HashMap<&str, usize> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let sets = pieces
            .iter()
            .map(|p| {
                let mut set: Vec<usize> = p.iter().map(|l| index[l]).collect();
                set.sort_unstable();
                set.dedup();
                set
            })
            .collect();
        MultiLabels { sets, names }
    }
}

/// Labelled rows of either modality, after cleaning.
struct Labelled {
    inputs: Inputs,
    labels: Vec<usize>,
    classes: Vec<String>,
    /// 0-based row of each used row in the source (for image data sets: train rows, then test rows).
    source_rows: Vec<usize>,
    /// Each row's split when the data fixes it (an official train/test split, or a split column).
    predefined: Option<Vec<SplitTag>>,
    /// Each row's group (group k-fold keeps a group's rows together), when the data names a group column.
    groups: Option<Vec<usize>>,
    /// Multi-label data: each row's label set. `labels`/`classes` then encode the raw label cell (the
    /// combination), which sampling stratifies on.
    multi_label: Option<MultiLabels>,
    rows_read: usize,
    dropped_null_text: usize,
    dropped_null_label: usize,
}

impl Labelled {
    fn len(&self) -> usize {
        self.labels.len()
    }

    /// The rows `keep`, in that order.
    fn select(self, keep: &[usize]) -> Labelled {
        let pick = |v: &[usize]| keep.iter().map(|&i| v[i]).collect();
        Labelled {
            inputs: match self.inputs {
                Inputs::Texts(t) => Inputs::Texts(keep.iter().map(|&i| t[i].clone()).collect()),
                Inputs::Images(m) => Inputs::Images(keep.iter().map(|&i| m[i].clone()).collect()),
                Inputs::Features(x) => Inputs::Features(x.select(Axis(0), keep)),
            },
            labels: pick(&self.labels),
            source_rows: pick(&self.source_rows),
            predefined: self
                .predefined
                .map(|t| keep.iter().map(|&i| t[i]).collect()),
            groups: self.groups.map(|g| keep.iter().map(|&i| g[i]).collect()),
            multi_label: self.multi_label.map(|m| MultiLabels {
                sets: keep.iter().map(|&i| m.sets[i].clone()).collect(),
                names: m.names,
            }),
            ..self
        }
    }
}

impl From<TextClassificationData> for Labelled {
    fn from(d: TextClassificationData) -> Labelled {
        Labelled {
            inputs: Inputs::Texts(d.texts),
            labels: d.labels,
            classes: d.classes,
            source_rows: d.source_rows,
            predefined: None,
            multi_label: None,
            groups: None,
            rows_read: d.rows_read,
            dropped_null_text: d.dropped_null_text,
            dropped_null_label: d.dropped_null_label,
        }
    }
}

struct Ingested {
    data: Labelled,
    split: Split,
    file: VerifiedFile,
    label: String,
    not_sampled: usize,
}

/// Reads a registered image data set (IDX files, official split) or a folder of class sub-folders.
fn read_images(
    plan: &Plan,
    cache: &Cache,
) -> Result<(Labelled, VerifiedFile, String), PipelineError> {
    match &plan.data.source {
        DataSource::ImageRegistry(name) => {
            let files = cache.image_dataset(name)?;
            let mut inputs = Vec::new();
            let mut labels = Vec::new();
            let mut predefined = Vec::new();
            for (images, label_file, is_test) in [
                (&files.train_images, &files.train_labels, false),
                (&files.test_images, &files.test_labels, true),
            ] {
                let images = read_idx_images(&images.path)?;
                let values = read_idx_labels(&label_file.path)?;
                if values.len() != images.count {
                    return Err(PipelineError::Job {
                        message: format!(
                            "{} has {} labels for {} images",
                            label_file.path.display(),
                            values.len(),
                            images.count
                        ),
                        hint: "delete the data set's cache folder to fetch it again".to_owned(),
                    });
                }
                for (i, &value) in values.iter().enumerate() {
                    let class = usize::from(value);
                    if class >= files.entry.classes.len() {
                        return Err(PipelineError::Job {
                            message: format!(
                                "{}: label {class} has no class name",
                                label_file.path.display()
                            ),
                            hint: "the registry entry's class list is incomplete".to_owned(),
                        });
                    }
                    inputs.push(ImageSource::Pixels {
                        width: images.width,
                        height: images.height,
                        channels: 1,
                        data: images.image(i).to_vec(),
                    });
                    labels.push(class);
                    predefined.push(if is_test {
                        SplitTag::Test
                    } else {
                        SplitTag::Train
                    });
                }
            }
            let n = labels.len();
            Ok((
                Labelled {
                    inputs: Inputs::Images(inputs),
                    labels,
                    classes: files.entry.classes.clone(),
                    source_rows: (0..n).collect(),
                    predefined: Some(predefined),
                    multi_label: None,
                    groups: None,
                    rows_read: n,
                    dropped_null_text: 0,
                    dropped_null_label: 0,
                },
                files.train_images,
                format!("{name} (registered data set, official train/test split)"),
            ))
        }
        DataSource::ImageFolder(root) => {
            let folder = image_folder(root).map_err(|e| {
                PipelineError::from(plan.diagnostic(&plan.spans.data, e.to_string()))
            })?;
            // The folder's identity: file names and sizes (hashing every image would cost a full read).
            let mut listing = String::new();
            for file in &folder.files {
                let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
                listing.push_str(&format!(
                    "{} {size}\n",
                    file.strip_prefix(root).unwrap_or(file).display()
                ));
            }
            let n = folder.files.len();
            Ok((
                Labelled {
                    inputs: Inputs::Images(
                        folder.files.into_iter().map(ImageSource::File).collect(),
                    ),
                    labels: folder.labels,
                    classes: folder.classes,
                    source_rows: (0..n).collect(),
                    predefined: None,
                    multi_label: None,
                    groups: None,
                    rows_read: n + folder.skipped,
                    dropped_null_text: 0,
                    dropped_null_label: 0,
                },
                VerifiedFile {
                    path: root.clone(),
                    sha256: sha2_hex(listing.as_bytes()),
                    fetched: false,
                },
                format!("{} ({n} images)", root.display()),
            ))
        }
        DataSource::Registry(_) | DataSource::File(_) | DataSource::Features { .. } => {
            unreachable!("tables and features are read elsewhere")
        }
    }
}

/// Splits the rows as the plan says: stratified and seeded, or the data set's official split with a seeded,
/// stratified validation share of its training rows.
fn split_rows(plan: &Plan, data: &Labelled) -> Result<Split, PipelineError> {
    let seed = derive_seed(plan.seed, "split");
    let explain = |e: IngestError| {
        PipelineError::from(plan.diagnostic(&plan.spans.split, e.to_string()).with_hint(
            "drop or merge rare classes, add rows, or set `validation = 0` to need fewer rows per class",
        ))
    };
    match (plan.split, &data.predefined) {
        (SplitPlan::Stratified(ratios), _) if data.multi_label.is_some() => {
            // Label sets do not stratify (a combination may occur once): a seeded split with the exact
            // shares.
            let all = vec![0; data.len()];
            stratified_split(&all, &["rows".to_owned()], ratios, seed).map_err(explain)
        }
        (SplitPlan::Stratified(ratios), _) => {
            stratified_split(&data.labels, &data.classes, ratios, seed).map_err(explain)
        }
        (SplitPlan::Predefined { validation }, Some(tags)) => {
            let rows = |tag: SplitTag| -> Vec<usize> {
                (0..data.len()).filter(|&i| tags[i] == tag).collect()
            };
            let (train_rows, given_validation, test) = (
                rows(SplitTag::Train),
                rows(SplitTag::Validation),
                rows(SplitTag::Test),
            );
            let problem = if train_rows.is_empty() {
                Some("no row is marked `train`")
            } else if test.is_empty() {
                Some("no row is marked `test`: there would be nothing to evaluate on")
            } else if !given_validation.is_empty() && validation > 0.0 {
                Some(
                    "the split column already marks validation rows, and `validation` asks to hold out more",
                )
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(plan
                    .diagnostic(&plan.spans.split, problem)
                    .with_hint("the split column's values are train, validation (val, dev) and test; `validation` in `[split.predefined]` holds out a share of the train rows when the column has no validation rows")
                    .into());
            }
            if validation == 0.0 {
                return Ok(Split {
                    train: train_rows,
                    validation: given_validation,
                    test,
                });
            }
            let train_labels: Vec<usize> = train_rows.iter().map(|&i| data.labels[i]).collect();
            let ratios = SplitRatios::new(1.0 - validation, validation, 0.0).map_err(explain)?;
            let inner =
                stratified_split(&train_labels, &data.classes, ratios, seed).map_err(explain)?;
            let map = |v: Vec<usize>| v.into_iter().map(|i| train_rows[i]).collect();
            Ok(Split {
                train: map(inner.train),
                validation: map(inner.validation),
                test,
            })
        }
        (SplitPlan::Predefined { .. }, None) => unreachable!("checked when the plan was loaded"),
    }
}

fn ingest(plan: &Plan, cache: &Cache) -> Result<Ingested, PipelineError> {
    let (data, file, label) = if plan.data.source.is_images() {
        read_images(plan, cache)?
    } else if matches!(plan.data.source, DataSource::Features { .. }) {
        read_given_features(plan)?
    } else {
        read_text_table(plan, cache)?
    };
    let mut data = data;
    if let Some(separator) = &plan.data.label_separator {
        let cells: Vec<&str> = data
            .labels
            .iter()
            .map(|&l| data.classes[l].as_str())
            .collect();
        let multi = MultiLabels::from_cells(&cells, separator);
        if multi.names.len() < 2 {
            return Err(plan
                .diagnostic(
                    &plan.spans.label_column,
                    format!(
                        "multi-label data needs at least two labels; splitting on `{separator}` gives {}",
                        multi.names.len()
                    ),
                )
                .with_hint("check `label_separator`: it must be the character that joins a row's labels")
                .into());
        }
        data.multi_label = Some(multi);
    }
    let (data, not_sampled) = match plan.data.sample {
        Some(n) if n < data.len() => {
            let keep = stratified_subsample(
                &data.labels,
                data.classes.len(),
                n,
                derive_seed(plan.seed, "sample"),
            );
            let dropped = data.len() - keep.len();
            (data.select(&keep), dropped)
        }
        _ => (data, 0),
    };
    let split = split_rows(plan, &data)?;
    Ok(Ingested {
        data,
        split,
        file,
        label,
        not_sampled,
    })
}

/// Reads the CSV/TSV/Parquet table (registered or the user's) and picks the text and label columns.
fn read_text_table(
    plan: &Plan,
    cache: &Cache,
) -> Result<(Labelled, VerifiedFile, String), PipelineError> {
    let (file, label) = match &plan.data.source {
        DataSource::Registry(name) => {
            let files = cache.dataset(name)?;
            (files.table, format!("{name} (registered data set)"))
        }
        DataSource::ImageRegistry(_) | DataSource::ImageFolder(_) | DataSource::Features { .. } => {
            unreachable!("images and features are read elsewhere")
        }
        DataSource::File(path) => {
            let sha256 = sha256_file(path).map_err(|source| PipelineError::Io {
                path: path.clone(),
                source,
            })?;
            (
                VerifiedFile {
                    path: path.clone(),
                    sha256,
                    fetched: false,
                },
                path.display().to_string(),
            )
        }
    };
    let spans = &plan.spans;
    let table = read_table(&file.path).map_err(|e| match e {
        IngestError::Empty { .. } | IngestError::Read { .. } | IngestError::UnsupportedFormat { .. } => {
            PipelineError::from(plan.diagnostic(&spans.data, e.to_string()).with_hint(
                "graft reads CSV/TSV files with a header row and Parquet files; check that the file is one of those",
            ))
        }
        other => other.into(),
    })?;
    let table = empty_label_sets(plan, table);
    let data = text_classification(&table, &plan.data.text_column, &plan.data.label_column)
        .map_err(|e| {
            let in_file = format!(" in {}", file.path.display());
            match &e {
                IngestError::MissingColumn { column, available } => {
                    let span = if *column == plan.data.text_column {
                        &spans.text_column
                    } else {
                        &spans.label_column
                    };
                    let span = if span.is_some() { span } else { &spans.data };
                    let hint = match graft_config::did_you_mean(
                        column,
                        available.iter().map(String::as_str),
                    ) {
                        Some(best) => format!(
                            "did you mean `{best}`? the file has columns: {}",
                            available.join(", ")
                        ),
                        None => format!("the file has columns: {}", available.join(", ")),
                    };
                    plan.diagnostic(span, format!("column `{column}` not found{in_file}"))
                        .with_hint(hint)
                        .into()
                }
                IngestError::ColumnType { column, .. } => {
                    let span = if *column == plan.data.text_column {
                        &spans.text_column
                    } else {
                        &spans.label_column
                    };
                    plan.diagnostic(span, format!("{e}{in_file}")).into()
                }
                IngestError::SingleClass { .. } | IngestError::NoUsableRows { .. } => plan
                    .diagnostic(&spans.label_column, format!("{e}{in_file}"))
                    .with_hint("check that `label_column` names the column holding the classes")
                    .into(),
                _ => PipelineError::Ingest(e),
            }
        })?;
    let mut data: Labelled = data.into();
    if let Some(name) = &plan.data.split_column {
        data.predefined = Some(split_tags(
            plan,
            &table,
            &file.path,
            name,
            &data.source_rows,
        )?);
    }
    Ok((data, file, label))
}

/// Multi-label data: an empty label cell (read as null from CSV) is a row with no labels, not a missing
/// label, so it is kept as an empty set.
fn empty_label_sets(plan: &Plan, table: graft_ingest::DataFrame) -> graft_ingest::DataFrame {
    if plan.data.label_separator.is_none() {
        return table;
    }
    let name = plan.data.label_column.as_str();
    use polars::prelude::NamedFrom;
    let Some(filled) = table
        .column(name)
        .ok()
        .and_then(|c| c.str().ok())
        .map(|cells| {
            let values: Vec<&str> = cells.iter().map(|v| v.unwrap_or("")).collect();
            graft_ingest::Series::new(name.into(), values)
        })
    else {
        return table;
    };
    let mut table = table;
    // Same name and length: replacing the column cannot fail.
    let _ = table.with_column(filled.into());
    table
}

/// Each used row's group index, from the table's group column (values compared as text).
fn group_ids(
    plan: &Plan,
    table: &graft_ingest::DataFrame,
    path: &Path,
    rows: &[usize],
) -> Result<Option<Vec<usize>>, PipelineError> {
    let Some(name) = &plan.data.group_column else {
        return Ok(None);
    };
    let column = named_column(plan, table, path, name, &plan.spans.group_column)?;
    let text = column.cast(&graft_ingest::DataType::String).map_err(|_| {
        plan.diagnostic(
            &plan.spans.group_column,
            format!("column `{name}` cannot be read as group names"),
        )
    })?;
    let text = text.str().expect("cast to String");
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let ids = rows
        .iter()
        .map(|&r| {
            let key = text.get(r).unwrap_or("").to_owned();
            let next = index.len();
            *index.entry(key).or_insert(next)
        })
        .collect();
    Ok(Some(ids))
}

/// The column `name` of the data table; a diagnostic at `span` listing the columns when it is missing.
fn named_column<'t>(
    plan: &Plan,
    table: &'t graft_ingest::DataFrame,
    path: &Path,
    name: &str,
    span: &Option<std::ops::Range<usize>>,
) -> Result<&'t graft_ingest::Column, PipelineError> {
    table.column(name).map_err(|_| {
        let available: Vec<String> = table
            .get_column_names()
            .iter()
            .map(|n| n.to_string())
            .collect();
        plan.diagnostic(
            span,
            format!("column `{name}` not found in {}", path.display()),
        )
        .with_hint(format!("the file has columns: {}", available.join(", ")))
        .into()
    })
}

/// The split of each used row, from the table's split column.
fn split_tags(
    plan: &Plan,
    table: &graft_ingest::DataFrame,
    path: &Path,
    name: &str,
    rows: &[usize],
) -> Result<Vec<SplitTag>, PipelineError> {
    let span = &plan.spans.split_column;
    let column = named_column(plan, table, path, name, span)?;
    let values = column.str().map_err(|_| {
        plan.diagnostic(
            span,
            format!(
                "column `{name}` holds {}, expected split names (train, validation, test)",
                column.dtype()
            ),
        )
    })?;
    rows.iter()
        .map(|&row| {
            let value = values.get(row).unwrap_or("");
            SplitTag::parse(value).ok_or_else(|| {
                plan.diagnostic(
                    span,
                    format!("row {row} of {} has split `{value}`", path.display()),
                )
                .with_hint("the split column's values are train, validation (val, dev) and test")
                .into()
            })
        })
        .collect()
}

/// Reads features computed elsewhere, with their labels (from the same Parquet table or a `labels` table).
fn read_given_features(plan: &Plan) -> Result<(Labelled, VerifiedFile, String), PipelineError> {
    let DataSource::Features {
        path,
        labels,
        embedding_column,
    } = &plan.data.source
    else {
        unreachable!("called for features only")
    };
    let spans = &plan.spans;
    let located = |e: IngestError| -> PipelineError {
        match &e {
            IngestError::MissingColumn { column, available } => {
                let span = if *column == plan.data.label_column {
                    &spans.label_column
                } else if Some(column) == plan.data.split_column.as_ref() {
                    &spans.split_column
                } else {
                    &spans.data
                };
                let span = if span.is_some() { span } else { &spans.data };
                plan.diagnostic(span, format!("column `{column}` not found"))
                    .with_hint(format!("the file has columns: {}", available.join(", ")))
                    .into()
            }
            _ => plan.diagnostic(&spans.data, e.to_string()).into(),
        }
    };
    let matrix = graft_ingest::read_feature_matrix(path, embedding_column).map_err(located)?;
    let labels_path = labels.as_ref().unwrap_or(path);
    let table = empty_label_sets(plan, read_table(labels_path).map_err(located)?);
    let groups_of_table = group_ids(
        plan,
        &table,
        labels_path,
        &(0..table.height()).collect::<Vec<_>>(),
    )?;
    let data = graft_ingest::feature_classification(
        matrix,
        &table,
        labels_path,
        &plan.data.label_column,
        plan.data.split_column.as_deref(),
    )
    .map_err(located)?;
    // The data's identity: the features file's sha256, or the sha256 of both files' sha256s.
    let mut shas = String::new();
    for file in std::iter::once(path).chain(labels.as_ref()) {
        shas.push_str(&sha256_file(file).map_err(|source| PipelineError::Io {
            path: file.clone(),
            source,
        })?);
    }
    let groups: Option<Vec<usize>> =
        groups_of_table.map(|g| data.source_rows.iter().map(|&r| g[r]).collect());
    let label = format!(
        "{} ({} × {} features given)",
        path.display(),
        data.features.nrows(),
        data.features.ncols()
    );
    Ok((
        Labelled {
            inputs: Inputs::Features(data.features),
            labels: data.labels,
            classes: data.classes,
            source_rows: data.source_rows,
            predefined: data.split,
            multi_label: None,
            groups,
            rows_read: data.rows_read,
            dropped_null_text: 0,
            dropped_null_label: data.dropped_null_label,
        },
        VerifiedFile {
            path: path.clone(),
            sha256: if labels.is_some() {
                sha2_hex(shas.as_bytes())
            } else {
                shas
            },
            fetched: false,
        },
        label,
    ))
}

/// The ONNX Runtime library chosen for a run, and the provider it will be asked for.
pub(crate) struct RuntimeChoice {
    pub library: VerifiedFile,
    /// `ORT_DYLIB_PATH` or `provisioned by graft`.
    pub source: String,
    pub version: String,
    /// The provider the pipeline or command line asked for.
    pub requested: Provider,
    /// The provider to request from the backbone (CUDA may have been turned into CPU here already).
    pub provider: Provider,
    /// Why CUDA was asked for and CPU chosen before loading anything.
    pub fallback_reason: Option<String>,
}

/// Where the NVIDIA kernel driver reports itself once loaded.
const NVIDIA_DRIVER_FILE: &str = "/proc/driver/nvidia/version";

/// The ONNX Runtime library to load: `ORT_DYLIB_PATH` when set, else the build graft provisions: the GPU build
/// for CUDA on a machine with an NVIDIA driver, the CPU build otherwise. On a machine without the driver the
/// 285 MB GPU build is not fetched: CUDA falls back to CPU at once, or fails when fallback is off.
pub(crate) fn runtime_library(
    cache: &Cache,
    provider: Provider,
) -> Result<RuntimeChoice, PipelineError> {
    if let Some(path) = std::env::var_os(ORT_DYLIB_ENV).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        let sha256 = sha256_file(&path).map_err(|e| BackboneError::RuntimeLoad {
            path: path.clone(),
            reason: e.to_string(),
            hint: format!("{ORT_DYLIB_ENV} is set; point it at an existing libonnxruntime.so (1.31 or newer) or unset it"),
        })?;
        // The loader rejects anything older than 1.31; the file name usually carries the exact version.
        let version = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("libonnxruntime.so."))
            .map_or_else(
                || "1.31 or newer (not stated in the file name)".to_owned(),
                str::to_owned,
            );
        return Ok(RuntimeChoice {
            library: VerifiedFile {
                path,
                sha256,
                fetched: false,
            },
            source: ORT_DYLIB_ENV.to_owned(),
            version,
            requested: provider,
            provider,
            fallback_reason: None,
        });
    }
    let requested = provider;
    let (name, provider, fallback_reason) = match provider {
        Provider::Cpu => ("onnxruntime", provider, None),
        Provider::Cuda { .. } if Path::new(NVIDIA_DRIVER_FILE).exists() => {
            ("onnxruntime-gpu", provider, None)
        }
        Provider::Cuda { fallback: true, .. } => {
            let reason =
                format!("no NVIDIA driver on this machine ({NVIDIA_DRIVER_FILE} is missing)");
            tracing::warn!(%reason, "CUDA requested; running on CPU (set `fallback = false` to make this an error)");
            ("onnxruntime", Provider::Cpu, Some(reason))
        }
        Provider::Cuda {
            fallback: false, ..
        } => {
            return Err(BackboneError::Provider {
                provider: "CUDA",
                reason: format!("no NVIDIA driver on this machine ({NVIDIA_DRIVER_FILE} is missing)"),
                hint: "run on a machine with an NVIDIA GPU and driver, or set `fallback = true` (CLI: drop \
                       --no-fallback) to run on CPU, or `provider = \"cpu\"`"
                    .to_owned(),
            }
            .into());
        }
    };
    let runtime = cache.runtime(name)?;
    Ok(RuntimeChoice {
        library: runtime.library,
        source: "provisioned by graft".to_owned(),
        version: runtime.version,
        requested,
        provider,
        fallback_reason,
    })
}

/// The manifest's record of the runtime and of where inference really ran.
pub(crate) fn runtime_manifest(
    choice: &RuntimeChoice,
    runtime: &Runtime,
    execution_provider: &str,
    provider_fallback: Option<&str>,
    intra_threads: usize,
) -> RuntimeRecord {
    RuntimeRecord {
        library: file_record(&choice.library),
        loaded: runtime.library().to_path_buf(),
        source: choice.source.clone(),
        version: choice.version.clone(),
        build_info: runtime.build_info(),
        provider_requested: choice.requested.name().to_owned(),
        execution_provider: execution_provider.to_owned(),
        provider_fallback: choice
            .fallback_reason
            .as_deref()
            .or(provider_fallback)
            .map(str::to_owned),
        intra_threads,
        sessions: None,
    }
}

/// A backbone's files, present and verified.
pub(crate) struct ResolvedModel {
    pub onnx: VerifiedFile,
    pub tokenizer: VerifiedFile,
    /// The registry name, or the graph's path.
    pub label: String,
    /// The manifest's description of the model.
    pub record: ModelRecord,
}

/// Why a model's files cannot be used; the caller words the first two for its context.
pub(crate) enum ModelProblem {
    /// A registered backbone without a tokenizer.
    NotText(String),
    /// A pinned graph whose checksum differs.
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    Other(PipelineError),
}

impl<E: Into<PipelineError>> From<E> for ModelProblem {
    fn from(e: E) -> Self {
        ModelProblem::Other(e.into())
    }
}

/// Fetches (registry) or checksums (own files) a text backbone's graph and tokenizer.
pub(crate) fn resolve_model(
    cache: &Cache,
    source: &ModelSource,
) -> Result<ResolvedModel, ModelProblem> {
    let checksum = |path: &Path| -> Result<VerifiedFile, ModelProblem> {
        let sha256 = sha256_file(path).map_err(|source| PipelineError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(VerifiedFile {
            path: path.to_path_buf(),
            sha256,
            fetched: false,
        })
    };
    match source {
        ModelSource::Registry(name) => {
            let files = cache.model(name)?;
            let tokenizer = files
                .tokenizer
                .clone()
                .ok_or_else(|| ModelProblem::NotText(name.clone()))?;
            let record = ModelRecord {
                name: Some(name.clone()),
                licence: Some(files.entry.licence.clone()),
                dimension: Some(files.entry.dimension),
                onnx: Some(file_record(&files.onnx)),
                tokenizer: Some(file_record(&tokenizer)),
                ..ModelRecord::default()
            };
            Ok(ResolvedModel {
                onnx: files.onnx,
                tokenizer,
                label: name.clone(),
                record,
            })
        }
        ModelSource::Files {
            onnx,
            tokenizer,
            sha256,
        } => {
            let onnx = checksum(onnx)?;
            if let Some(expected) = sha256
                && *expected != onnx.sha256
            {
                return Err(ModelProblem::Checksum {
                    path: onnx.path,
                    expected: expected.clone(),
                    actual: onnx.sha256,
                });
            }
            let tokenizer = checksum(tokenizer)?;
            let record = ModelRecord {
                onnx: Some(file_record(&onnx)),
                tokenizer: Some(file_record(&tokenizer)),
                ..ModelRecord::default()
            };
            Ok(ResolvedModel {
                label: onnx.path.display().to_string(),
                onnx,
                tokenizer,
                record,
            })
        }
    }
}

/// Fetches (or verifies) a registered ONNX Runtime build into the cache and returns its library path.
pub fn provision_runtime(name: &str, cache_dir: &Path) -> Result<PathBuf, PipelineError> {
    Ok(Cache::new(cache_dir).runtime(name)?.library.path)
}

/// A table of the feature cache's namespaces: rows, chunks and size of each.
pub fn feature_cache_stats(features_dir: &Path) -> Result<String, PipelineError> {
    let stats = graft_features::stats(features_dir)?;
    let mut out = format!("feature cache {}\n", features_dir.display());
    if stats.is_empty() {
        out.push_str("  (empty)\n");
    }
    let mut total = 0;
    for s in &stats {
        total += s.bytes;
        out.push_str(&format!(
            "  {:>9} rows  {:>4} chunks  {:>9.1} MB  {}\n    {}\n",
            s.rows,
            s.chunks,
            s.bytes as f64 / 1e6,
            s.dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            s.description
        ));
    }
    out.push_str(&format!("  total {:.1} MB\n", total as f64 / 1e6));
    Ok(out)
}

/// Removes feature namespaces (all, or those whose description contains `filter`); returns how many.
pub fn clear_feature_cache(
    features_dir: &Path,
    filter: Option<&str>,
) -> Result<usize, PipelineError> {
    let mut removed = 0;
    for s in graft_features::stats(features_dir)? {
        if filter.is_none_or(|f| s.description.contains(f)) {
            std::fs::remove_dir_all(&s.dir).map_err(|source| PipelineError::Io {
                path: s.dir.clone(),
                source,
            })?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// The backbone of a plan whose rows need one (checked when the plan was loaded).
fn backbone_of(plan: &Plan) -> &graft_config::BackbonePlan {
    plan.backbone
        .as_ref()
        .expect("texts and images come with a backbone (checked when the plan was loaded)")
}

/// Fetches everything the plan needs (runtime, model, data) without running it.
pub fn provision_all(plan: &Plan, cache_dir: &Path) -> Result<(), PipelineError> {
    let cache = Cache::new(cache_dir);
    if let Some(backbone) = &plan.backbone {
        runtime_library(&cache, backbone.config.provider)?;
        match &backbone.source {
            ModelSource::Registry(name) if backbone.image.is_some() => {
                cache.image_model(name)?;
            }
            ModelSource::Registry(name) => {
                cache.model(name)?;
            }
            ModelSource::Files { .. } => {}
        }
    }
    match &plan.data.source {
        DataSource::Registry(name) => {
            cache.dataset(name)?;
        }
        DataSource::ImageRegistry(name) => {
            cache.image_dataset(name)?;
        }
        DataSource::File(_) | DataSource::ImageFolder(_) | DataSource::Features { .. } => {}
    }
    if let Some(name) = plan.techniques.registered_target() {
        cache.dataset(name)?;
    }
    for name in plan.techniques.registered_backbones() {
        cache.model(name)?;
    }
    Ok(())
}

/// Fetches registered sample files (tests use them to check models) and returns their paths.
pub fn provision_samples(names: &[&str], cache_dir: &Path) -> Result<Vec<PathBuf>, PipelineError> {
    Ok(Cache::new(cache_dir)
        .samples(names)?
        .into_iter()
        .map(|f| f.path)
        .collect())
}

pub(crate) fn file_record(f: &VerifiedFile) -> FileRecord {
    FileRecord {
        path: f.path.clone(),
        sha256: f.sha256.clone(),
        fetched_now: f.fetched,
    }
}

/// Runs a checked plan end to end and writes its run folder.
pub fn run(plan: &Plan, options: &RunOptions) -> Result<RunOutcome, PipelineError> {
    let started_at = chrono::Utc::now();
    let total = Instant::now();
    let cache = Cache::new(&options.cache_dir);
    let mut timings = Timings::default();

    // 1. Ingest: read, clean, encode labels, split.
    let clock = Instant::now();
    let ingested = ingest(plan, &cache)?;
    timings.ingest = clock.elapsed().as_secs_f64();
    let Ingested {
        mut data,
        split,
        file: data_file,
        label: data_label,
        not_sampled,
    } = ingested;
    tracing::info!(
        rows = data.labels.len(),
        train = split.train.len(),
        "ingested"
    );

    let clock = Instant::now();
    // 2-3. Model files, then features for every used row: from the shared feature cache where present,
    // extracted (once) otherwise. Augmented training views, if any, come as extra matrices.
    let Featurized {
        features,
        train_views,
        extraction,
        runtime: runtime_record,
        feature_cache,
        model_label: backbone_label,
        model: model_record,
        model_sha256,
        provision_seconds,
    } = match &mut data.inputs {
        Inputs::Texts(texts) => {
            // The template is part of what the backbone reads, so of each row's cache key too.
            let prompted: Option<Vec<String>> = backbone_of(plan).prompt.as_ref().map(|p| {
                texts
                    .iter()
                    .map(|t| graft_config::apply_prompt(p, t))
                    .collect()
            });
            text_features(plan, options, &cache, prompted.as_deref().unwrap_or(texts))?
        }
        Inputs::Images(images) => image_features(plan, options, &cache, images, &split.train)?,
        Inputs::Features(given) => given_features(plan, std::mem::take(given), &data_file),
    };
    timings.provision = provision_seconds;
    timings.extract = clock.elapsed().as_secs_f64() - provision_seconds;
    // Texts that technique stages bring (label descriptions, a target domain, augmented views, a second
    // backbone) go through the pipeline's prompt and the feature cache like the rows.
    let prompt = plan.backbone.as_ref().and_then(|b| b.prompt.clone());
    let embed = |backbone: Option<&graft_config::techniques::OtherBackbone>,
                 texts: &[String],
                 fresh: bool|
     -> Result<crate::stages::Embedded, PipelineError> {
        let prompted: Vec<String> = match &prompt {
            Some(p) => texts
                .iter()
                .map(|t| graft_config::apply_prompt(p, t))
                .collect(),
            None => texts.to_vec(),
        };
        let mut other = plan.clone();
        let chosen = other.backbone.as_mut().expect("text rows have a backbone");
        if let Some(backbone) = backbone {
            *chosen = graft_config::other_text_backbone(chosen, backbone);
        }
        chosen.cache &= !fresh;
        let f = text_features(&other, options, &cache, &prompted)?;
        Ok(crate::stages::Embedded {
            features: f.features,
            rows_per_second: f.extraction.rows_per_second,
            extracted: f.extraction.extracted,
        })
    };

    // 4. Train the head on the training split only.
    let clock = Instant::now();
    let rows_of = |idx: &[usize]| -> (Array2<f32>, Vec<usize>) {
        (
            features.select(Axis(0), idx),
            idx.iter().map(|&i| data.labels[i]).collect(),
        )
    };
    // Each split's rows are selected once; every head trains and is scored on these.
    let (x_train, y_train) = rows_of(&split.train);
    let (x_validation, y_validation) = rows_of(&split.validation);
    let (x_test, y_test) = rows_of(&split.test);
    let n_classes = data.classes.len();
    // Augmented views: more training rows with the same labels (validation and test stay as they are).
    let augmented = (!train_views.is_empty()).then(|| {
        let mut parts = vec![x_train.view()];
        parts.extend(train_views.iter().map(|v| v.view()));
        let x = ndarray::concatenate(Axis(0), &parts).expect("views have the features' width");
        (x, y_train.repeat(1 + train_views.len()))
    });
    let (x_fit, y_fit) = augmented
        .as_ref()
        .map_or((x_train.view(), y_train.as_slice()), |(x, y)| {
            (x.view(), y.as_slice())
        });
    let train_targets = Targets::new(y_fit, n_classes)?;
    let validation_targets = Targets::new(&y_validation, n_classes)?;
    // The transform is fitted once, on training rows only, and shared by every head.
    let transform = plan.transform.as_ref().map(|t| t.fit(x_fit)).transpose()?;
    let (x_fit_t, x_validation_t) = match &transform {
        Some(t) => (
            Some(t.transform(x_fit)?),
            Some(t.transform(x_validation.view())?),
        ),
        None => (None, None),
    };
    let fit_view = x_fit_t.as_ref().map_or(x_fit, |x| x.view());
    let validation_view = (!y_validation.is_empty()).then(|| {
        (
            x_validation_t
                .as_ref()
                .map_or(x_validation.view(), |x| x.view()),
            &validation_targets,
        )
    });
    // Multi-label data: the label sets of each split's rows.
    let sets_of = |rows: &[usize]| -> Vec<Vec<usize>> {
        let m = data.multi_label.as_ref().expect("multi-label data");
        rows.iter().map(|&i| m.sets[i].clone()).collect()
    };
    let multi_sets = data.multi_label.as_ref().map(|m| {
        (
            sets_of(&split.train),
            sets_of(&split.validation),
            m.names.len(),
        )
    });
    let train_groups: Option<Vec<usize>> = data
        .groups
        .as_ref()
        .map(|g| split.train.iter().map(|&i| g[i]).collect());
    // Hyperparameter search on the cached features (never the test rows); the winner replaces its head.
    let mut head_specs = plan.heads.clone();
    let search = match &plan.search {
        None => None,
        Some(search) => {
            let report = run_search(
                plan,
                search,
                SearchData {
                    transform: transform.as_ref(),
                    fit: fit_view,
                    fit_targets: &train_targets,
                    validation: validation_view,
                    x_validation: &x_validation,
                    y_validation: &y_validation,
                    x_train: &x_train,
                    y_train: &y_train,
                    train_groups: train_groups.as_deref(),
                    n_classes,
                },
            )?;
            head_specs[search.head] = search.candidates[report.best].clone();
            Some(report)
        }
    };
    let mut trained = Vec::new();
    for spec in &head_specs {
        tracing::info!(head = spec.name(), "training");
        let clock = Instant::now();
        let (head, figures) = match &multi_sets {
            Some((train_sets, validation_sets, n_labels)) => {
                let train = LabelSets::new(train_sets, *n_labels)?;
                let validation = LabelSets::new(validation_sets, *n_labels)?;
                train_multi_label_head(
                    spec,
                    transform.as_ref(),
                    fit_view,
                    &train,
                    validation_view.map(|(x, _)| (x, &validation)),
                )?
            }
            None => train_head(
                spec,
                transform.as_ref(),
                fit_view,
                &train_targets,
                validation_view,
            )?,
        };
        trained.push((head, figures, clock.elapsed().as_secs_f64()));
    }
    // `[zero_shot] initialise_prototype`: the class descriptions become part of each cosine prototype.
    if let Some(z) = plan
        .techniques
        .zero_shot()
        .filter(|z| z.initialise_prototype.is_some())
    {
        let descriptions = embed(None, &z.class_texts(&data.classes), false)?.features;
        for (head, _, _) in &mut trained {
            if let (
                graft_config::HeadKind::Prototype(params),
                crate::heads::FittedHead::Prototype(fitted),
            ) = (&head.spec.kind, &mut head.head)
            {
                *fitted = params.fit_with_prior(
                    fit_view,
                    y_fit,
                    descriptions.view(),
                    z.prior_weight as f32,
                )?;
            }
        }
    }
    timings.train = clock.elapsed().as_secs_f64();

    // 5. Evaluate: validation for reference, test once.
    let clock = Instant::now();
    let mut head_results = Vec::new();
    let evaluation = plan.evaluation;
    let bootstrap = (evaluation.bootstrap > 0).then(|| Bootstrap {
        resamples: evaluation.bootstrap,
        level: evaluation.level,
        // One seed for every head: their intervals and comparisons resample the same rows.
        seed: derive_seed(plan.seed, "bootstrap"),
    });
    // k-fold cross-validation of every head over the training and validation rows (never test).
    let cross_validation: Vec<CvScores> = match (evaluation.cv, &data.multi_label) {
        (Some(k), None) => {
            let mut rows: Vec<usize> = split
                .train
                .iter()
                .chain(&split.validation)
                .copied()
                .collect();
            rows.sort_unstable();
            let x = features.select(Axis(0), &rows);
            let y: Vec<usize> = rows.iter().map(|&i| data.labels[i]).collect();
            let groups: Option<Vec<usize>> = data
                .groups
                .as_ref()
                .map(|g| rows.iter().map(|&i| g[i]).collect());
            let specs: Vec<HeadSpec> = head_specs.iter().map(HeadSpec::uncalibrated).collect();
            cross_validate(plan, &specs, &x, &y, groups.as_deref(), n_classes, k)?
                .iter()
                .map(|per_fold| CvScores::of(per_fold, groups.is_some()))
                .collect()
        }
        _ => Vec::new(),
    };
    // The headline's test predictions, for the paired comparisons.
    let mut headline_test: Option<Vec<usize>> = None;
    // Every head's test predictions (class names, or label sets joined), for predictions.csv.
    let mut test_predictions: Vec<(String, Vec<String>)> = Vec::new();
    for (index, (head, figures, fit_seconds)) in trained.iter().enumerate() {
        let score = |x: &Array2<f32>,
                     y: &[usize],
                     rows: &[usize]|
         -> Result<(SplitMetrics, Vec<usize>, Array2<f32>), PipelineError> {
            let proba = head.predict_proba(x.view())?;
            if let (Some(m), Some(thresholds)) = (&data.multi_label, &head.thresholds) {
                let predicted = graft_heads::threshold_rows(proba.view(), thresholds);
                let metrics = SplitMetrics::from_multi_label(
                    multi_label_report(&sets_of(rows), &predicted, m.names.len())?,
                    &m.names,
                );
                return Ok((metrics, Vec::new(), proba));
            }
            let predicted = argmax_rows(proba.view());
            let metrics = SplitMetrics::new(
                classification_report(y, &predicted, n_classes)?,
                &data.classes,
            );
            Ok((metrics, predicted, proba))
        };
        let (mut test, test_predicted, test_proba) = score(&x_test, &y_test, &split.test)?;
        test_predictions.push((
            head.spec.name().to_owned(),
            match (&data.multi_label, &head.thresholds) {
                (Some(m), Some(thresholds)) => {
                    let separator = plan.data.label_separator.as_deref().unwrap_or("|");
                    graft_heads::threshold_rows(test_proba.view(), thresholds)
                        .iter()
                        .map(|set| {
                            set.iter()
                                .map(|&l| m.names[l].as_str())
                                .collect::<Vec<_>>()
                                .join(separator)
                        })
                        .collect()
                }
                _ => test_predicted
                    .iter()
                    .map(|&c| data.classes[c].clone())
                    .collect(),
            },
        ));
        let mut versus_headline = None;
        if data.multi_label.is_none() {
            test.probabilities = Some(probability_report(
                &y_test,
                test_proba.view(),
                evaluation.bins,
            )?);
            if let Some(b) = &bootstrap {
                test.intervals = Some(split_intervals(b, &y_test, &test_predicted, n_classes)?);
            }
            match &headline_test {
                None => headline_test = Some(test_predicted.clone()),
                Some(headline) => {
                    versus_headline = Some(Comparison {
                        mcnemar: mcnemar(&y_test, &test_predicted, headline)?,
                        accuracy_difference: bootstrap
                            .as_ref()
                            .map(|b| b.paired_accuracy(&y_test, &test_predicted, headline))
                            .transpose()?,
                    });
                }
            }
        }
        head_results.push(HeadMetrics {
            name: head.spec.name().to_owned(),
            label: head.spec.label(),
            train: score(&x_train, &y_train, &split.train)?.0,
            validation: if y_validation.is_empty() {
                None
            } else {
                Some(score(&x_validation, &y_validation, &split.validation)?.0)
            },
            test,
            versus_headline,
            cross_validation: cross_validation.get(index).cloned(),
            training: figures.clone(),
            fit_seconds: *fit_seconds,
        });
    }
    // Evidence of transfer: the headline head vs a from-scratch baseline at K examples per class.
    let learning_curve = match &plan.learning_curve {
        None => None,
        Some(c) => {
            tracing::info!("learning curve");
            let pixels;
            let baseline = match &data.inputs {
                Inputs::Texts(texts) => BaselineInputs::Texts(texts),
                Inputs::Images(images) => {
                    pixels = raw_pixels(images)?;
                    BaselineInputs::Pixels(&pixels)
                }
                Inputs::Features(_) => unreachable!("checked when the plan was loaded"),
            };
            Some(crate::curve::learning_curve(
                &head_specs[0],
                &c.shots,
                c.repeats,
                plan.seed,
                &CurveData {
                    features: features.view(),
                    labels: &data.labels,
                    n_classes,
                    train: &split.train,
                    test: &split.test,
                    baseline,
                },
            )?)
        }
    };
    // Technique stages, on the same features; texts they bring go through the same backbone and cache.
    let techniques = if plan.techniques.is_empty() {
        Vec::new()
    } else {
        let texts = match &data.inputs {
            Inputs::Texts(texts) => Some(texts.as_slice()),
            _ => None,
        };
        let is_text = texts.is_some();
        let table = matches!(
            plan.data.source,
            DataSource::Registry(_) | DataSource::File(_)
        )
        .then(|| (data_file.path.as_path(), data.source_rows.as_slice()));
        let dataset = |name: &str| Ok(cache.dataset(name)?.table.path);
        crate::stages::run(
            &plan.techniques,
            &crate::stages::RunData {
                seed: plan.seed,
                file: &plan.file,
                source: &plan.source,
                heads: &plan.heads,
                backbone: plan.backbone.as_ref().map(|b| &b.source),
                label_column: &plan.data.label_column,
                features: features.view(),
                labels: &data.labels,
                classes: &data.classes,
                train: &split.train,
                test: &split.test,
                headline: &head_specs[0],
                headline_accuracy: head_results[0].test.accuracy,
                table,
                embed: is_text.then_some(&embed as &crate::stages::EmbedTexts<'_>),
                texts,
                train_views: &train_views,
                dataset: &dataset,
                progress: options.progress,
            },
        )?
    };
    timings.evaluate = clock.elapsed().as_secs_f64();
    timings.total = total.elapsed().as_secs_f64();
    let headline = head_results[0].clone();
    // What the heads output: classes, or for multi-label data the labels.
    let output_classes = data
        .multi_label
        .as_ref()
        .map_or_else(|| data.classes.clone(), |m| m.names.clone());

    let metrics = Metrics {
        pipeline: plan.name.clone(),
        task: if data.multi_label.is_some() {
            "multi-label"
        } else {
            "single-label"
        }
        .to_owned(),
        classes: output_classes.clone(),
        rows: RowCounts {
            read: data.rows_read,
            dropped_null_text: data.dropped_null_text,
            dropped_null_label: data.dropped_null_label,
            not_sampled,
            used: data.labels.len(),
            train: split.train.len(),
            validation: split.validation.len(),
            test: split.test.len(),
        },
        test: headline.test.clone(),
        validation: headline.validation.clone(),
        train: headline.train.clone(),
        extraction,
        training: headline.training.clone(),
        heads: head_results,
        search,
        learning_curve,
        techniques,
        timings_seconds: timings,
    };
    let resolved = plan.resolved();
    let manifest = Manifest {
        format: RUN_FORMAT,
        graft_version: env!("CARGO_PKG_VERSION").to_owned(),
        pipeline: PipelineRecord {
            file: plan.file.clone(),
            sha256: graft_stdx::sha256_hex(plan.source.as_bytes()),
            resolved: resolved.clone(),
        },
        seed: plan.seed,
        started_at: started_at.to_rfc3339(),
        finished_at: chrono::Utc::now().to_rfc3339(),
        data: DataRecord {
            source: data_label.clone(),
            file: file_record(&data_file),
            rows_read: data.rows_read,
            dropped_null_text: data.dropped_null_text,
            dropped_null_label: data.dropped_null_label,
            not_sampled,
            classes: data.classes.clone(),
        },
        backbone: model_record,
        runtime: runtime_record,
        feature_cache,
        transform: resolved.transform,
        heads: resolved.heads.clone(),
        host: HostRecord::this(),
    };

    let labels = Context {
        backbone: &backbone_label,
        data: &data_label,
        head: &headline.label,
        run_dir: "",
        data_sha256: &data_file.sha256,
        model_sha256: &model_sha256,
    };
    let splits = splits_csv(&data, &split);
    let predictions = predictions_csv(&data, &split.test, &test_predictions);
    let info = ArtefactInfo {
        classes: output_classes.clone(),
        backbone: BackboneRecord {
            files: manifest.backbone.clone(),
            settings: resolved.backbone.clone(),
        },
        backbone_sha256: model_sha256.clone(),
        label_separator: plan.data.label_separator.clone(),
    };
    let heads: Vec<TrainedHead> = trained.into_iter().map(|(h, _, _)| h).collect();
    let run_dir = write_run_dir(
        plan,
        options,
        &metrics,
        &manifest,
        &labels,
        vec![("splits.csv", splits), ("predictions.csv", predictions)],
        HeadArtefacts {
            heads: &heads,
            info: &info,
        },
    )?;
    let run_dir_text = run_dir.display().to_string();
    let summary = graft_report::summary(
        &metrics,
        &Context {
            run_dir: &run_dir_text,
            ..labels
        },
    );
    Ok(RunOutcome {
        run_dir,
        metrics,
        summary,
    })
}

/// Raw pixels in [0, 1], one row per image, for the from-scratch baseline: data-set pixels as stored, image
/// files resized and centre-cropped to 32 × 32 RGB.
fn raw_pixels(images: &[ImageSource]) -> Result<Array2<f32>, PipelineError> {
    let rows: Vec<Vec<f32>> = images
        .par_iter()
        .map(|image| -> Result<Vec<f32>, PipelineError> {
            Ok(match image {
                ImageSource::Pixels { data, .. } => {
                    data.iter().map(|&b| f32::from(b) / 255.0).collect()
                }
                ImageSource::File(_) => graft_backbone::resized_pixels(image, 32, 32)?
                    .iter()
                    .map(|&b| f32::from(b) / 255.0)
                    .collect(),
            })
        })
        .collect::<Result<_, _>>()?;
    let width = rows.first().map_or(0, Vec::len);
    if rows.iter().any(|r| r.len() != width) {
        return Err(PipelineError::Job {
            message: "the images differ in size, so raw pixels cannot form one baseline matrix"
                .to_owned(),
            hint: "remove `[learning_curve]`, or use images of one size".to_owned(),
        });
    }
    Ok(Array2::from_shape_vec((rows.len(), width), rows.concat()).expect("rows × width"))
}

/// What a search needs from the run: features and labels of the training and validation rows.
struct SearchData<'a> {
    transform: Option<&'a graft_heads::FittedTransform>,
    /// Transformed training rows (with augmented views), for selection on the validation split.
    fit: ndarray::ArrayView2<'a, f32>,
    fit_targets: &'a Targets<'a>,
    /// Transformed validation rows.
    validation: Option<(ndarray::ArrayView2<'a, f32>, &'a Targets<'a>)>,
    x_validation: &'a Array2<f32>,
    y_validation: &'a [usize],
    /// Raw training rows, for cross-validation (the transform is refitted per fold).
    x_train: &'a Array2<f32>,
    y_train: &'a [usize],
    /// Group of each training row, when the data names a group column.
    train_groups: Option<&'a [usize]>,
    n_classes: usize,
}

/// Scores of each spec on each fold: stratified k-fold of `y`, or group k-fold when `groups` is given; the
/// transform is refitted on each fold's training part. Specs × folds run in parallel.
fn cross_validate(
    plan: &Plan,
    specs: &[HeadSpec],
    x: &Array2<f32>,
    y: &[usize],
    groups: Option<&[usize]>,
    n_classes: usize,
    k: usize,
) -> Result<Vec<Vec<(f64, f64)>>, PipelineError> {
    let folds = match groups {
        Some(g) => group_kfold(g, k),
        None => stratified_kfold(y, n_classes, k, derive_seed(plan.seed, "cross-validation")),
    }
    .map_err(|e| PipelineError::from(plan.diagnostic(&plan.spans.split, e.to_string())))?;
    let pairs: Vec<(usize, usize)> = (0..specs.len())
        .flat_map(|c| (0..folds.len()).map(move |f| (c, f)))
        .collect();
    let per_fold: Vec<(f64, f64)> = pairs
        .par_iter()
        .map(|&(c, f)| {
            let fold = &folds[f];
            let xf = x.select(Axis(0), &fold.train);
            let yf: Vec<usize> = fold.train.iter().map(|&i| y[i]).collect();
            let transform = plan
                .transform
                .as_ref()
                .map(|t| t.fit(xf.view()))
                .transpose()?;
            let xt = match &transform {
                Some(t) => t.transform(xf.view())?,
                None => xf,
            };
            let targets = Targets::new(&yf, n_classes)?;
            let (head, _) = train_head(&specs[c], transform.as_ref(), xt.view(), &targets, None)?;
            let held = x.select(Axis(0), &fold.held_out);
            let y_held: Vec<usize> = fold.held_out.iter().map(|&i| y[i]).collect();
            accuracy_and_macro_f1(&head, &held, &y_held, n_classes)
        })
        .collect::<Result<_, PipelineError>>()?;
    Ok(per_fold
        .chunks(folds.len())
        .map(<[(f64, f64)]>::to_vec)
        .collect())
}

fn accuracy_and_macro_f1(
    head: &TrainedHead,
    x: &Array2<f32>,
    y: &[usize],
    n_classes: usize,
) -> Result<(f64, f64), PipelineError> {
    let predicted = argmax_rows(head.predict_proba(x.view())?.view());
    let r = classification_report(y, &predicted, n_classes)?;
    Ok((r.accuracy, r.macro_f1))
}

/// Scores every candidate (in parallel) by validation accuracy or mean cross-validated accuracy and
/// picks the best (ties: macro-F1, then the earlier candidate).
fn run_search(
    plan: &Plan,
    search: &graft_config::SearchPlan,
    d: SearchData<'_>,
) -> Result<SearchReport, PipelineError> {
    let clock = Instant::now();
    // Calibration does not change which class wins; candidates skip it.
    let scores: Vec<(f64, f64, Option<f64>)> = match search.select {
        Selection::Validation => {
            let Some(validation) = d.validation else {
                return Err(plan
                    .diagnostic(&plan.spans.split, "`[search]` selects on the validation split, which is empty")
                    .with_hint("give the validation split a share, or select by cross-validation with `select = \"cv\"` in `[search]`")
                    .into());
            };
            search
                .candidates
                .par_iter()
                .map(|spec| {
                    let (head, _) = train_head(
                        &spec.uncalibrated(),
                        d.transform,
                        d.fit,
                        d.fit_targets,
                        Some(validation),
                    )?;
                    let (a, f) =
                        accuracy_and_macro_f1(&head, d.x_validation, d.y_validation, d.n_classes)?;
                    Ok((a, f, None))
                })
                .collect::<Result<_, PipelineError>>()?
        }
        Selection::CrossValidation { folds } => {
            let specs: Vec<HeadSpec> = search
                .candidates
                .iter()
                .map(HeadSpec::uncalibrated)
                .collect();
            let groups: Option<Vec<usize>> = d.train_groups.map(<[usize]>::to_vec);
            cross_validate(
                plan,
                &specs,
                d.x_train,
                d.y_train,
                groups.as_deref(),
                d.n_classes,
                folds,
            )?
            .iter()
            .map(|fold_scores| {
                let s = CvScores::of(fold_scores, groups.is_some());
                (s.accuracy_mean, s.macro_f1_mean, Some(s.accuracy_std))
            })
            .collect()
        }
    };
    let best = (0..scores.len())
        .max_by(|&a, &b| {
            scores[a]
                .0
                .total_cmp(&scores[b].0)
                .then(scores[a].1.total_cmp(&scores[b].1))
                .then(b.cmp(&a))
        })
        .expect("at least one candidate");
    Ok(SearchReport {
        head: search.candidates[0].name().to_owned(),
        method: search.method.to_owned(),
        selection: match search.select {
            Selection::Validation => "validation accuracy".to_owned(),
            Selection::CrossValidation { folds } => {
                format!("mean accuracy over {folds} stratified folds")
            }
        },
        candidates: scores
            .iter()
            .zip(&search.values)
            .map(|(&(accuracy, macro_f1, std), values)| SearchCandidate {
                values: values.clone(),
                accuracy,
                macro_f1,
                accuracy_std: std,
            })
            .collect(),
        best,
        seconds: clock.elapsed().as_secs_f64(),
    })
}

/// Bootstrap intervals of accuracy and macro-F1 on the rows scored.
fn split_intervals(
    bootstrap: &Bootstrap,
    y: &[usize],
    predicted: &[usize],
    n_classes: usize,
) -> Result<SplitIntervals, PipelineError> {
    let accuracy = bootstrap.interval(y.len(), |rows| {
        rows.iter().filter(|&&r| y[r] == predicted[r]).count() as f64 / rows.len() as f64
    })?;
    let macro_f1 = bootstrap.interval(y.len(), |rows| {
        let (t, p): (Vec<usize>, Vec<usize>) = rows.iter().map(|&r| (y[r], predicted[r])).unzip();
        classification_report(&t, &p, n_classes).map_or(f64::NAN, |r| r.macro_f1)
    })?;
    Ok(SplitIntervals { accuracy, macro_f1 })
}

/// Features given with the data: nothing to extract, nothing to provision.
fn given_features(plan: &Plan, features: Array2<f32>, file: &VerifiedFile) -> Featurized {
    let embedding_column = match &plan.data.source {
        DataSource::Features {
            embedding_column, ..
        } => embedding_column.clone(),
        _ => unreachable!("called for given features"),
    };
    let extraction = ExtractionFigures {
        rows: features.nrows(),
        extracted: 0,
        cache_hits: 0,
        dimension: features.ncols(),
        rows_per_second: 0.0,
        batches: 0,
        tokens: 0,
        padded_tokens: 0,
        truncated_rows: 0,
        tokenize_seconds: 0.0,
        execution_provider: "none (features given)".to_owned(),
        unit: "features".to_owned(),
        threads: 0,
    };
    let dimension = features.ncols();
    Featurized {
        features,
        train_views: Vec::new(),
        extraction,
        runtime: None,
        feature_cache: None,
        model_label: "no backbone (features given)".to_owned(),
        model: ModelRecord {
            features: Some(file_record(file)),
            embedding_column: Some(embedding_column),
            dimension: Some(dimension),
            ..ModelRecord::default()
        },
        model_sha256: file.sha256.clone(),
        provision_seconds: 0.0,
    }
}

/// What the extraction stage hands on.
struct Featurized {
    features: Array2<f32>,
    /// One matrix per augmented view, rows aligned with the training split.
    train_views: Vec<Array2<f32>>,
    extraction: ExtractionFigures,
    runtime: Option<RuntimeRecord>,
    feature_cache: Option<FeatureCacheRecord>,
    model_label: String,
    model: ModelRecord,
    model_sha256: String,
    provision_seconds: f64,
}

/// Text rows: MiniLM-style backbone, feature cache keyed by each text's sha256.
fn text_features(
    plan: &Plan,
    options: &RunOptions,
    cache: &Cache,
    texts: &[String],
) -> Result<Featurized, PipelineError> {
    let clock = Instant::now();
    let ResolvedModel {
        onnx,
        tokenizer,
        label: backbone_label,
        record: model_record,
    } = resolve_model(cache, &backbone_of(plan).source).map_err(|problem| match problem {
        ModelProblem::NotText(name) => PipelineError::from(plan.diagnostic(
            &plan.spans.backbone,
            format!("backbone `{name}` is not a text model"),
        )),
        ModelProblem::Checksum {
            path,
            expected,
            actual,
        } => plan
            .diagnostic(
                &plan.spans.sha256,
                format!(
                    "checksum mismatch for {}: expected {expected}, found {actual}",
                    path.display()
                ),
            )
            .with_hint(
                "the model file changed since the pipeline pinned it; restore it or update `sha256`",
            )
            .into(),
        ModelProblem::Other(e) => e,
    })?;
    let provision_seconds = clock.elapsed().as_secs_f64();

    let config = &backbone_of(plan).config;
    let store = if backbone_of(plan).cache {
        // Everything that changes the extractor's output is part of the namespace.
        let description = format!(
            "graft-features 1; model {}; onnx sha256 {}; tokenizer sha256 {}; output {}; pooling {}; \
             normalize {}; max_length {}",
            // The name is for `cache stats`; identity comes from the checksums.
            match &backbone_of(plan).source {
                ModelSource::Registry(name) => name.clone(),
                ModelSource::Files { onnx, .. } => onnx
                    .file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            },
            onnx.sha256,
            tokenizer.sha256,
            config.output.as_deref().unwrap_or("(first)"),
            config.pooling.name(),
            config.normalize,
            config.max_length
        );
        Some(FeatureStore::open(&options.features_dir, &description)?)
    } else {
        None
    };
    let keys: Vec<RowKey> = texts.iter().map(|t| row_key(t.as_bytes())).collect();
    let cached = match &store {
        Some(store) => store.lookup(&keys)?,
        None => Lookup {
            rows: Array2::zeros((keys.len(), 0)),
            found: vec![false; keys.len()],
            rejected_chunks: 0,
        },
    };
    let missing = cached.missing();
    let mut runtime_record = None;
    let mut extraction = ExtractionFigures {
        rows: texts.len(),
        extracted: missing.len(),
        cache_hits: cached.hits(),
        dimension: cached.rows.ncols(),
        rows_per_second: 0.0,
        batches: 0,
        tokens: 0,
        padded_tokens: 0,
        truncated_rows: 0,
        tokenize_seconds: 0.0,
        execution_provider: "none: every feature came from the cache".to_owned(),
        unit: "texts".to_owned(),
        threads: 0,
    };
    let features = if missing.is_empty() {
        cached.rows
    } else {
        // The runtime comes after the model files: a wrong model is reported before anything large is fetched.
        let choice = runtime_library(cache, config.provider)?;
        let runtime = Runtime::load(&choice.library.path)?;
        let mut config = config.clone();
        config.progress = false;
        config.provider = choice.provider;
        let mut backbone = TextBackbone::load(&runtime, &onnx.path, &tokenizer.path, config)?;
        let started = Instant::now();
        let todo: Vec<&str> = missing.iter().map(|&i| texts[i].as_str()).collect();
        let encoded = backbone.tokenizer().encode(&todo)?;
        // Embedded and stored a slice of whole batches at a time, in the global length order: the same
        // batches as one call, and a stopped run keeps what it had stored.
        let slice_rows = backbone.config().batch_size * TEXT_STORE_BATCHES;
        let bar = crate::progress::bar(options.progress, todo.len() as u64, 0, "rows");
        let mut features = cached.rows;
        for slice in encoded.length_order().chunks(slice_rows) {
            let (fresh, stats) =
                backbone.embed_rows(&encoded, slice, |rows| bar.inc(rows as u64))?;
            if let Some(store) = &store {
                let fresh_keys: Vec<RowKey> = slice.iter().map(|&r| keys[missing[r]]).collect();
                store.insert(&fresh_keys, fresh.view())?;
            }
            if features.ncols() != fresh.ncols() {
                features = Array2::zeros((keys.len(), fresh.ncols()));
            }
            for (row, &r) in slice.iter().enumerate() {
                features.row_mut(missing[r]).assign(&fresh.row(row));
            }
            extraction.dimension = fresh.ncols();
            extraction.batches += stats.batches;
            extraction.tokens += stats.tokens;
            extraction.padded_tokens += stats.padded_tokens;
            extraction.truncated_rows += stats.truncated_rows;
        }
        extraction.tokenize_seconds = encoded.tokenize_seconds();
        bar.finish_and_clear();
        extraction.rows_per_second = todo.len() as f64 / started.elapsed().as_secs_f64().max(1e-9);
        extraction.execution_provider = backbone.execution_provider().to_owned();
        extraction.threads = backbone.config().intra_threads;
        runtime_record = Some(runtime_manifest(
            &choice,
            &runtime,
            backbone.execution_provider(),
            backbone.provider_fallback(),
            backbone.config().intra_threads,
        ));
        features
    };
    let feature_cache = FeatureCacheRecord {
        enabled: store.is_some(),
        namespace: store.as_ref().map(|s| s.dir().to_path_buf()),
        namespaces: None,
        hits: Some(extraction.cache_hits),
        extracted: Some(extraction.extracted),
        rejected_chunks: cached.rejected_chunks,
    };

    Ok(Featurized {
        features,
        train_views: Vec::new(),
        extraction,
        runtime: runtime_record,
        feature_cache: Some(feature_cache),
        model_label: backbone_label,
        model: model_record,
        model_sha256: onnx.sha256,
        provision_seconds,
    })
}

/// One set of feature rows to extract for images: which rows, the feature-cache namespace and keys, and
/// for an augmented view each row's augmentation seed.
struct View {
    rows: Vec<usize>,
    namespace: String,
    keys: Vec<RowKey>,
    seeds: Option<Vec<u64>>,
}

/// Image rows: an image backbone, feature cache keyed by each image's content (plus, for augmented views,
/// the view's seed); augmented views are extracted for the training rows only.
fn image_features(
    plan: &Plan,
    options: &RunOptions,
    cache: &Cache,
    images: &[ImageSource],
    train: &[usize],
) -> Result<Featurized, PipelineError> {
    let clock = Instant::now();
    let image_plan = backbone_of(plan)
        .image
        .as_ref()
        .expect("image data needs an image backbone");
    let ModelSource::Registry(name) = &backbone_of(plan).source else {
        unreachable!("image backbones come from the registry")
    };
    let model = cache.image_model(name)?;
    let provision_seconds = clock.elapsed().as_secs_f64();
    let config = &backbone_of(plan).config;
    let p = &image_plan.preprocess;
    let description = format!(
        "graft-features 1; image model {name}; onnx sha256 {}; output {}; input {}; resize {}; crop {}; \
         mean {:?}; std {:?}; layout {:?}; dtype {:?}; bgr {}",
        model.onnx.sha256,
        image_plan.output,
        p.input,
        p.resize,
        p.crop,
        p.mean,
        p.std,
        p.layout,
        p.dtype,
        p.bgr
    );
    let keys: Vec<RowKey> = images.par_iter().map(image_key).collect::<Result<_, _>>()?;
    // The plain view of every row first, then each augmented view of the training rows.
    let mut jobs = vec![View {
        rows: (0..images.len()).collect(),
        namespace: description.clone(),
        keys: keys.clone(),
        seeds: None,
    }];
    if let Some((aug, views)) = image_plan.augment {
        for view in 1..=views as u64 {
            let seeds: Vec<u64> = train
                .iter()
                .map(|&i| derive_seed(plan.seed, &format!("augment {view} {}", hex(&keys[i]))))
                .collect();
            let view_keys = train
                .iter()
                .zip(&seeds)
                .map(|(&i, seed)| {
                    let mut bytes = keys[i].to_vec();
                    bytes.extend_from_slice(&seed.to_le_bytes());
                    row_key(&bytes)
                })
                .collect();
            jobs.push(View {
                rows: train.to_vec(),
                namespace: format!(
                    "{description}; augmented view: flip {}, crop_scale {:?}",
                    aug.horizontal_flip, aug.crop_scale
                ),
                keys: view_keys,
                seeds: Some(seeds),
            });
        }
    }

    let mut extraction = ExtractionFigures {
        rows: jobs.iter().map(|j| j.rows.len()).sum(),
        execution_provider: "none: every feature came from the cache".to_owned(),
        unit: "images".to_owned(),
        ..ExtractionFigures::default()
    };
    let mut runtime_record = None;
    let mut backbone: Option<(ImageBackbone, RuntimeChoice, Runtime)> = None;
    let mut matrices = Vec::new();
    let mut namespaces = Vec::new();
    let mut rejected_chunks = 0;
    let mut extract_seconds = 0.0;
    for View {
        rows,
        namespace,
        keys: view_keys,
        seeds,
    } in jobs
    {
        let store = if backbone_of(plan).cache {
            Some(FeatureStore::open(&options.features_dir, &namespace)?)
        } else {
            None
        };
        let cached = match &store {
            Some(store) => store.lookup(&view_keys)?,
            None => Lookup {
                rows: Array2::zeros((view_keys.len(), 0)),
                found: vec![false; view_keys.len()],
                rejected_chunks: 0,
            },
        };
        rejected_chunks += cached.rejected_chunks;
        namespaces.push(store.as_ref().map(|s| s.dir().to_path_buf()));
        let missing = cached.missing();
        extraction.cache_hits += cached.hits();
        extraction.extracted += missing.len();
        if missing.is_empty() {
            extraction.dimension = cached.rows.ncols();
            matrices.push(cached.rows);
            continue;
        }
        if backbone.is_none() {
            let choice = runtime_library(cache, config.provider)?;
            let runtime = Runtime::load(&choice.library.path)?;
            let loaded = ImageBackbone::load(
                &runtime,
                &model.onnx.path,
                ImageBackboneConfig {
                    preprocess: p.clone(),
                    output: image_plan.output.clone(),
                    batch_size: config.batch_size,
                    intra_threads: config.intra_threads,
                    // One bar over all slices, drawn here.
                    progress: false,
                    provider: choice.provider,
                },
            )?;
            backbone = Some((loaded, choice, runtime));
        }
        let (extractor, _, _) = backbone.as_mut().expect("loaded above");
        // Extracted and stored a slice at a time: a run stopped after an hour keeps most of its work.
        let bar = crate::progress::bar(options.progress, missing.len() as u64, 0, "images");
        let mut matrix = cached.rows;
        for part in missing.chunks(IMAGE_STORE_ROWS) {
            let todo: Vec<ImageSource> = part.iter().map(|&k| images[rows[k]].clone()).collect();
            let (fresh, stats) = match (&seeds, image_plan.augment) {
                (Some(seeds), Some((aug, _))) => {
                    let todo_seeds: Vec<u64> = part.iter().map(|&k| seeds[k]).collect();
                    extractor.embed_augmented(&todo, aug, &todo_seeds)?
                }
                _ => extractor.embed(&todo)?,
            };
            extract_seconds += stats.seconds;
            extraction.batches += stats.batches;
            extraction.tokenize_seconds += stats.preprocess_seconds;
            if let Some(store) = &store {
                let fresh_keys: Vec<RowKey> = part.iter().map(|&k| view_keys[k]).collect();
                store.insert(&fresh_keys, fresh.view())?;
            }
            if matrix.ncols() != fresh.ncols() {
                matrix = Array2::zeros((view_keys.len(), fresh.ncols()));
            }
            for (row, &k) in part.iter().enumerate() {
                matrix.row_mut(k).assign(&fresh.row(row));
            }
            extraction.dimension = fresh.ncols();
            bar.inc(part.len() as u64);
        }
        bar.finish_and_clear();
        matrices.push(matrix);
    }
    if let Some((extractor, choice, runtime)) = &backbone {
        extraction.rows_per_second = extraction.extracted as f64 / extract_seconds.max(1e-9);
        extraction.execution_provider = extractor.execution_provider().to_owned();
        extraction.threads = extractor.config().intra_threads;
        runtime_record = Some(runtime_manifest(
            choice,
            runtime,
            extractor.execution_provider(),
            extractor.provider_fallback(),
            extractor.config().intra_threads,
        ));
    }
    let mut matrices = matrices.into_iter();
    let features = matrices.next().expect("the plain view is always extracted");
    Ok(Featurized {
        features,
        train_views: matrices.collect(),
        extraction,
        runtime: runtime_record,
        feature_cache: Some(FeatureCacheRecord {
            enabled: backbone_of(plan).cache,
            namespace: None,
            namespaces: Some(namespaces),
            hits: None,
            extracted: None,
            rejected_chunks,
        }),
        model_label: name.clone(),
        model: ModelRecord {
            name: Some(name.clone()),
            licence: Some(model.entry.licence.clone()),
            dimension: Some(model.entry.dimension),
            onnx: Some(file_record(&model.onnx)),
            ..ModelRecord::default()
        },
        model_sha256: model.onnx.sha256,
        provision_seconds,
    })
}

/// Batches of texts embedded (and stored in the feature cache) per step of a text pipeline.
const TEXT_STORE_BATCHES: usize = 32;

/// Images extracted (and stored in the feature cache) per step of an image pipeline.
const IMAGE_STORE_ROWS: usize = 2048;

/// An image's content key: the file's bytes, or the pixels with their shape.
fn image_key(image: &ImageSource) -> Result<RowKey, PipelineError> {
    match image {
        ImageSource::File(path) => {
            let bytes = std::fs::read(path).map_err(|source| PipelineError::Io {
                path: path.clone(),
                source,
            })?;
            Ok(row_key(&bytes))
        }
        ImageSource::Pixels {
            width,
            height,
            channels,
            data,
        } => {
            let mut bytes = format!("{width}x{height}x{channels}:").into_bytes();
            bytes.extend_from_slice(data);
            Ok(row_key(&bytes))
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Which split each used row went to: `row` is the 0-based data row of the input file (header excluded), so
/// other tools can reproduce the exact split.
fn splits_csv(data: &Labelled, split: &Split) -> String {
    let mut assigned: Vec<(usize, &str)> = Vec::with_capacity(data.labels.len());
    for (name, rows) in [
        ("train", &split.train),
        ("validation", &split.validation),
        ("test", &split.test),
    ] {
        assigned.extend(rows.iter().map(|&i| (i, name)));
    }
    assigned.sort_unstable();
    let mut csv = String::from("row,label,split\n");
    for (i, name) in assigned {
        let label = csv_field(&data.classes[data.labels[i]]);
        csv.push_str(&format!("{},{label},{name}\n", data.source_rows[i]));
    }
    csv
}

fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

/// Each test row's true label and every head's prediction: `row` (as in splits.csv), `label`, one column
/// per head. `cargo xtask compare` pairs runs on these.
fn predictions_csv(data: &Labelled, test: &[usize], heads: &[(String, Vec<String>)]) -> String {
    let mut csv = String::from("row,label");
    for (name, _) in heads {
        csv.push(',');
        csv.push_str(name);
    }
    csv.push('\n');
    for (k, &i) in test.iter().enumerate() {
        csv.push_str(&format!(
            "{},{}",
            data.source_rows[i],
            csv_field(&data.classes[data.labels[i]])
        ));
        for (_, predicted) in heads {
            csv.push(',');
            csv.push_str(&csv_field(&predicted[k]));
        }
        csv.push('\n');
    }
    csv
}

pub(crate) fn sha2_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes the files into a hidden temporary folder, then renames it into place, so a run folder that exists
/// is always complete.
/// The trained heads a run folder keeps, with what their artefacts record.
struct HeadArtefacts<'a> {
    heads: &'a [TrainedHead],
    info: &'a ArtefactInfo,
}

fn write_run_dir(
    plan: &Plan,
    options: &RunOptions,
    metrics: &Metrics,
    manifest: &Manifest,
    labels: &Context<'_>,
    tables: Vec<(&str, String)>,
    heads: HeadArtefacts<'_>,
) -> Result<PathBuf, PipelineError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PipelineError::Io { path, source }
    };
    let parent = options.runs_dir.join(&plan.name);
    std::fs::create_dir_all(&parent).map_err(io(&parent))?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let mut final_dir = parent.join(&stamp);
    let mut n = 2;
    while final_dir.exists() {
        final_dir = parent.join(format!("{stamp}-{n}"));
        n += 1;
    }
    // Written under a hidden name and renamed when complete: a run folder that exists is complete.
    let staged = graft_stdx::atomic::StagedDir::create(&final_dir).map_err(io(&final_dir))?;
    let tmp = staged.path().to_path_buf();
    let final_dir_text = final_dir.display().to_string();
    let ctx = Context {
        run_dir: &final_dir_text,
        ..*labels
    };
    let files = [
        ("metrics.json", graft_report::to_json_text(metrics)),
        ("manifest.json", graft_report::to_json_text(manifest)),
        ("report.md", graft_report::markdown(metrics, &ctx)),
        ("report.html", graft_report::html(metrics, &ctx)),
        ("pipeline.toml", plan.source.clone()),
    ];
    for (name, content) in files.into_iter().chain(tables) {
        let path = tmp.join(name);
        std::fs::write(&path, content).map_err(io(&path))?;
    }
    let heads_dir = tmp.join("heads");
    std::fs::create_dir_all(&heads_dir).map_err(io(&heads_dir))?;
    for head in heads.heads {
        save_head(&heads_dir, head, heads.info)?;
    }
    staged.commit().map_err(io(&final_dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_seeds_differ_by_purpose_and_are_stable() {
        assert_ne!(derive_seed(42, "split"), derive_seed(42, "sample"));
        assert_ne!(derive_seed(42, "split"), derive_seed(43, "split"));
        assert_eq!(derive_seed(42, "split"), derive_seed(42, "split"));
    }
}
