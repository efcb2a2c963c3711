//! Rows in: the data table, image folder, registered data set or given features read, cleaned, encoded and
//! split, as the plan says.

use std::path::Path;

use graft_assets::{Cache, VerifiedFile, sha256_file};
use graft_backbone::ImageSource;
use graft_ingest::{
    IngestError, Split, SplitRatios, SplitTag, TextClassificationData, image_folder,
    read_idx_images, read_idx_labels, read_table, stratified_split, stratified_subsample,
    text_classification,
};
use ndarray::{Array2, Axis};
use rayon::prelude::*;

use crate::PipelineError;
use graft_config::{DataSource, Plan, SplitPlan};
use graft_stdx::{derive_seed, sha256_hex};

/// The rows a run embeds: texts or images.
pub(crate) enum Inputs {
    Texts(Vec<String>),
    Images(Vec<ImageSource>),
    /// Feature vectors given with the data (no backbone).
    Features(Array2<f32>),
}

/// Each row's labels, for multi-label data.
pub(crate) struct MultiLabels {
    pub(crate) sets: Vec<Vec<usize>>,
    /// Label names, sorted.
    pub(crate) names: Vec<String>,
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
pub(crate) struct Labelled {
    pub(crate) inputs: Inputs,
    pub(crate) labels: Vec<usize>,
    pub(crate) classes: Vec<String>,
    /// 0-based row of each used row in the source (for image data sets: train rows, then test rows).
    pub(crate) source_rows: Vec<usize>,
    /// Each row's split when the data fixes it (an official train/test split, or a split column).
    pub(crate) predefined: Option<Vec<SplitTag>>,
    /// Each row's group (group k-fold keeps a group's rows together), when the data names a group column.
    pub(crate) groups: Option<Vec<usize>>,
    /// Multi-label data: each row's label set. `labels`/`classes` then encode the raw label cell (the
    /// combination), which sampling stratifies on.
    pub(crate) multi_label: Option<MultiLabels>,
    pub(crate) rows_read: usize,
    pub(crate) dropped_null_text: usize,
    pub(crate) dropped_null_label: usize,
    /// The first dropped rows (0-based data rows, as splits.csv numbers them), to name in reports.
    pub(crate) dropped_rows: Vec<usize>,
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
        let dropped_rows = first_dropped(&d.source_rows, d.rows_read);
        Labelled {
            inputs: Inputs::Texts(d.texts),
            labels: d.labels,
            classes: d.classes,
            source_rows: d.source_rows,
            predefined: None,
            multi_label: None,
            groups: None,
            dropped_rows,
            rows_read: d.rows_read,
            dropped_null_text: d.dropped_null_text,
            dropped_null_label: d.dropped_null_label,
        }
    }
}

/// How many dropped rows reports name.
const NAMED_DROPPED_ROWS: usize = 10;

/// The first rows of `0..rows_read` that are not among the used `source_rows`.
fn first_dropped(source_rows: &[usize], rows_read: usize) -> Vec<usize> {
    let mut used = vec![false; rows_read];
    for &r in source_rows {
        if let Some(u) = used.get_mut(r) {
            *u = true;
        }
    }
    (0..rows_read)
        .filter(|&r| !used[r])
        .take(NAMED_DROPPED_ROWS)
        .collect()
}

pub(crate) struct Ingested {
    pub(crate) data: Labelled,
    pub(crate) split: Split,
    pub(crate) file: VerifiedFile,
    pub(crate) label: String,
    pub(crate) not_sampled: usize,
    /// Classes left out by `min_class_rows`, and their rows.
    pub(crate) rare: RareClasses,
}

/// Reads a registered image data set (IDX files, official split) or a folder of class sub-folders.
pub(crate) fn read_images(
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
                    dropped_rows: Vec::new(),
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
                    dropped_rows: Vec::new(),
                },
                VerifiedFile {
                    path: root.clone(),
                    sha256: sha256_hex(listing.as_bytes()),
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
pub(crate) fn split_rows(plan: &Plan, data: &Labelled) -> Result<Split, PipelineError> {
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

/// What `[data] min_class_rows` left out.
#[derive(Debug, Clone, Default)]
pub(crate) struct RareClasses {
    pub(crate) classes: Vec<String>,
    pub(crate) rows: usize,
}

/// The rows of classes with at least `least` rows, the classes renumbered in their order.
fn without_rare_classes(data: Labelled, least: usize) -> (Labelled, RareClasses) {
    let mut counts = vec![0usize; data.classes.len()];
    data.labels.iter().for_each(|&l| counts[l] += 1);
    if counts.iter().all(|&c| c >= least) {
        return (data, RareClasses::default());
    }
    let kept: Vec<usize> = (0..counts.len()).filter(|&c| counts[c] >= least).collect();
    let rare = RareClasses {
        classes: (0..counts.len())
            .filter(|&c| counts[c] < least)
            .map(|c| data.classes[c].clone())
            .collect(),
        rows: counts.iter().filter(|&&c| c < least).sum(),
    };
    let keep: Vec<usize> = (0..data.len())
        .filter(|&i| counts[data.labels[i]] >= least)
        .collect();
    let classes: Vec<String> = kept.iter().map(|&c| data.classes[c].clone()).collect();
    let mut data = data.select(&keep);
    data.labels = data
        .labels
        .iter()
        .map(|&l| kept.iter().position(|&k| k == l).expect("a kept class"))
        .collect();
    data.classes = classes;
    (data, rare)
}

pub(crate) fn ingest(plan: &Plan, cache: &Cache) -> Result<Ingested, PipelineError> {
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
    let (data, rare) = match plan.data.min_class_rows {
        Some(least) => without_rare_classes(data, least),
        None => (data, RareClasses::default()),
    };
    let split = split_rows(plan, &data)?;
    Ok(Ingested {
        data,
        split,
        file,
        label,
        not_sampled,
        rare,
    })
}

/// Reads the CSV/TSV/Parquet table (registered or the user's) and picks the text and label columns.
pub(crate) fn read_text_table(
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
        // The file's own line comes first in the message; the pipeline's `[data]` says where it was named.
        IngestError::Parse { .. } => plan.diagnostic(&spans.data, e.to_string()).into(),
        IngestError::Damaged { .. } => plan
            .diagnostic(&spans.data, e.to_string())
            .with_hint("the file's bytes are not what its writer wrote; write it again from its source")
            .into(),
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
                IngestError::MissingAsText { .. } => missing_label_as_text(plan, &e, &file.path),
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

/// A `NaN` label cell, at the label column's key.
fn missing_label_as_text(plan: &Plan, e: &IngestError, file: &Path) -> PipelineError {
    let IngestError::MissingAsText { column, row, value } = e else {
        unreachable!("called for MissingAsText")
    };
    let span = if plan.spans.label_column.is_some() {
        &plan.spans.label_column
    } else {
        &plan.spans.data
    };
    plan.diagnostic(
        span,
        format!(
            "label column `{column}` of {} holds `{value}` at row {row} (0-based data row): a missing value written as text, which would become a class of its own",
            file.display()
        ),
    )
    .with_hint("leave the cells of unlabelled rows empty (graft drops those rows and names them in the run summary), or rename the class if `NaN` is a real label")
        .into()
}

/// Multi-label data: an empty label cell (read as null from CSV) is a row with no labels, not a missing
/// label, so it is kept as an empty set.
pub(crate) fn empty_label_sets(
    plan: &Plan,
    table: graft_ingest::DataFrame,
) -> graft_ingest::DataFrame {
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
pub(crate) fn group_ids(
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
pub(crate) fn named_column<'t>(
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
pub(crate) fn split_tags(
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
pub(crate) fn read_given_features(
    plan: &Plan,
) -> Result<(Labelled, VerifiedFile, String), PipelineError> {
    let DataSource::Features {
        path,
        labels,
        embedding_column,
    } = &plan.data.source
    else {
        unreachable!("called for features only")
    };
    let spans = &plan.spans;
    let labels_path = labels.as_ref().unwrap_or(path);
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
            IngestError::MissingAsText { .. } => missing_label_as_text(plan, &e, labels_path),
            _ => plan.diagnostic(&spans.data, e.to_string()).into(),
        }
    };
    let matrix = graft_ingest::read_feature_matrix(path, embedding_column).map_err(located)?;
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
    let dropped_rows = first_dropped(&data.source_rows, data.rows_read);
    Ok((
        Labelled {
            inputs: Inputs::Features(data.features),
            labels: data.labels,
            classes: data.classes,
            source_rows: data.source_rows,
            predefined: data.split,
            multi_label: None,
            groups,
            dropped_rows,
            rows_read: data.rows_read,
            dropped_null_text: 0,
            dropped_null_label: data.dropped_null_label,
        },
        VerifiedFile {
            path: path.clone(),
            sha256: if labels.is_some() {
                sha256_hex(shas.as_bytes())
            } else {
                shas
            },
            fetched: false,
        },
        label,
    ))
}

/// Raw pixels in [0, 1], one row per image, for the from-scratch baseline: data-set pixels as stored, image
/// files resized and centre-cropped to 32 × 32 RGB.
pub(crate) fn raw_pixels(images: &[ImageSource]) -> Result<Array2<f32>, PipelineError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_rows_are_the_first_rows_not_used() {
        // with-nulls.csv: data rows 1 (no text), 4 (no label) and 6 (neither) are dropped.
        let table = graft_ingest::read_table(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../fixtures/data/with-nulls.csv"),
        )
        .unwrap();
        let data =
            Labelled::from(graft_ingest::text_classification(&table, "text", "label").unwrap());
        assert_eq!(data.dropped_rows, [1, 4, 6]);
        assert_eq!(first_dropped(&[0, 2, 3], 30).len(), NAMED_DROPPED_ROWS);
    }
}
