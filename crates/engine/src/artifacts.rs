//! The run folder: tables, records, reports and heads written under a hidden name and renamed when complete.

use std::path::{Path, PathBuf};

use graft_ingest::Split;

use graft_config::Plan;
use graft_report::{
    self, BackboneRecord, Context, DataRecord, HostRecord, LearningCurve, Manifest, Metrics,
    PipelineRecord, RUN_FORMAT, RowCounts, TechniqueReport, Timings,
};

use crate::PipelineError;
use crate::data::{Ingested, Labelled};
use crate::evaluate::Evaluated;
use crate::featurize::Featurized;
use crate::heads::{ArtefactInfo, TrainedHead, save_head};
use crate::options::{RunOptions, RunOutcome};
use crate::provision::file_record;
use crate::train::TrainedHeads;

/// Which split each used row went to: `row` is the 0-based data row of the input file (header excluded), so
/// other tools can reproduce the exact split.
pub(crate) fn splits_csv(data: &Labelled, split: &Split) -> String {
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

pub(crate) fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

/// Each test row's true label and every head's prediction: `row` (as in splits.csv), `label`, one column
/// per head. `cargo xtask compare` pairs runs on these.
pub(crate) fn predictions_csv(
    data: &Labelled,
    test: &[usize],
    heads: &[(String, Vec<String>)],
) -> String {
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

/// Writes the files into a hidden temporary folder, then renames it into place, so a run folder that exists
/// is always complete.
/// The trained heads a run folder keeps, with what their artefacts record.
pub(crate) struct HeadArtefacts<'a> {
    pub(crate) heads: &'a [TrainedHead],
    pub(crate) info: &'a ArtefactInfo,
    /// Stage heads, each with the record of its own backbone.
    pub(crate) others: Vec<(&'a crate::stages::StageHead, ArtefactInfo)>,
}

pub(crate) fn write_run_dir(
    plan: &Plan,
    options: &RunOptions,
    metrics: &Metrics,
    mut manifest: Manifest,
    labels: &Context<'_>,
    tables: Vec<(String, Vec<u8>)>,
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
        ("report.md", graft_report::markdown(metrics, &ctx)),
        ("report.html", graft_report::html(metrics, &ctx)),
        ("pipeline.toml", plan.source.clone()),
    ];
    let files = files
        .into_iter()
        .map(|(name, content)| (name.to_owned(), content.into_bytes()));
    for (name, content) in files.chain(tables) {
        let path = tmp.join(&name);
        std::fs::write(&path, &content).map_err(io(&path))?;
        manifest
            .artefacts
            .insert(name, graft_stdx::sha256_hex(&content));
    }
    let heads_dir = tmp.join("heads");
    std::fs::create_dir_all(&heads_dir).map_err(io(&heads_dir))?;
    let saved = heads
        .heads
        .iter()
        .map(|h| save_head(&heads_dir, h, heads.info))
        .chain(
            heads
                .others
                .iter()
                .map(|(h, info)| crate::heads::save_head_as(&heads_dir, &h.name, &h.head, info)),
        )
        .collect::<Result<Vec<_>, _>>()?;
    for description in saved {
        let weights = description.with_extension("safetensors");
        for path in [description, weights] {
            let sha256 = graft_stdx::sha256_file(&path).map_err(io(&path))?;
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            manifest.artefacts.insert(format!("heads/{name}"), sha256);
        }
    }
    // Last, so that it can record every other file's checksum.
    let path = tmp.join("manifest.json");
    std::fs::write(&path, graft_report::to_json_text(&manifest)).map_err(io(&path))?;
    staged.commit().map_err(io(&final_dir))
}

/// Everything a finished run writes, gathered by [`crate::run`].
pub(crate) struct Finished<'a> {
    pub(crate) plan: &'a Plan,
    /// UTC, RFC 3339.
    pub(crate) started_at: String,
    pub(crate) ingested: Ingested,
    pub(crate) featurized: Featurized,
    pub(crate) trained: TrainedHeads,
    pub(crate) evaluated: Evaluated,
    pub(crate) learning_curve: Option<LearningCurve>,
    pub(crate) techniques: Vec<TechniqueReport>,
    /// Files technique stages add to the run folder (a tuned backbone's graph).
    pub(crate) stage_files: Vec<(String, Vec<u8>)>,
    /// Heads technique stages keep (the headline head on a tuned backbone's features).
    pub(crate) stage_heads: Vec<crate::stages::StageHead>,
    pub(crate) timings: Timings,
}

/// `metrics.json`: the headline head's scores up front, every head, search, curve and stages.
fn metrics(f: &mut Finished<'_>) -> Metrics {
    let data = &f.ingested.data;
    let split = &f.ingested.split;
    let heads = std::mem::take(&mut f.evaluated.heads);
    let headline = heads[0].clone();
    Metrics {
        pipeline: f.plan.name.clone(),
        task: if data.multi_label.is_some() {
            "multi-label"
        } else {
            "single-label"
        }
        .to_owned(),
        classes: output_classes(data),
        rows: RowCounts {
            read: data.rows_read,
            dropped_null_text: data.dropped_null_text,
            dropped_null_label: data.dropped_null_label,
            dropped_rows: data.dropped_rows.clone(),
            not_sampled: f.ingested.not_sampled,
            rare_class_rows: f.ingested.rare.rows,
            rare_classes: f.ingested.rare.classes.clone(),
            used: data.labels.len(),
            train: split.train.len(),
            validation: split.validation.len(),
            test: split.test.len(),
        },
        test: headline.test,
        validation: headline.validation,
        train: headline.train,
        extraction: f.featurized.extraction.clone(),
        training: headline.training,
        heads,
        search: f.trained.search.take(),
        learning_curve: f.learning_curve.take(),
        techniques: std::mem::take(&mut f.techniques),
        timings_seconds: f.timings.clone(),
    }
}

/// What the heads output: classes, or for multi-label data the labels.
fn output_classes(data: &Labelled) -> Vec<String> {
    data.multi_label
        .as_ref()
        .map_or_else(|| data.classes.clone(), |m| m.names.clone())
}

/// `manifest.json`: what the run used and where it came from.
fn manifest(f: &mut Finished<'_>) -> Manifest {
    let plan = f.plan;
    let resolved = plan.resolved();
    let data = &f.ingested.data;
    Manifest {
        format: RUN_FORMAT,
        graft_version: env!("CARGO_PKG_VERSION").to_owned(),
        pipeline: PipelineRecord {
            file: plan.file.clone(),
            sha256: graft_stdx::sha256_hex(plan.source.as_bytes()),
            resolved: resolved.clone(),
        },
        seed: plan.seed,
        started_at: f.started_at.clone(),
        finished_at: chrono::Utc::now().to_rfc3339(),
        data: DataRecord {
            source: f.ingested.label.clone(),
            file: file_record(&f.ingested.file),
            rows_read: data.rows_read,
            dropped_null_text: data.dropped_null_text,
            dropped_null_label: data.dropped_null_label,
            not_sampled: f.ingested.not_sampled,
            classes: data.classes.clone(),
        },
        backbone: f.featurized.model.clone(),
        runtime: f.featurized.runtime.take(),
        feature_cache: f.featurized.feature_cache.take(),
        transform: resolved.transform,
        heads: resolved.heads,
        host: HostRecord::this(),
        artefacts: Default::default(),
    }
}

/// Writes the run folder and returns what the run produced.
pub(crate) fn write_run(
    mut f: Finished<'_>,
    options: &RunOptions,
) -> Result<RunOutcome, PipelineError> {
    let metrics = metrics(&mut f);
    let manifest = manifest(&mut f);
    let plan = f.plan;
    let (data, split) = (&f.ingested.data, &f.ingested.split);
    let labels = Context {
        backbone: &f.featurized.model_label,
        data: &f.ingested.label,
        head: &metrics.heads[0].label,
        run_dir: "",
        data_sha256: &f.ingested.file.sha256,
        model_sha256: &f.featurized.model_sha256,
    };
    // Heads name a registered backbone's files relative to the cache (the name and sha256 identify them);
    // the manifest keeps where they were on this machine.
    let mut head_files = manifest.backbone.clone();
    for record in [
        &mut head_files.onnx,
        &mut head_files.tokenizer,
        &mut head_files.weights,
    ]
    .into_iter()
    .flatten()
    {
        if head_files.name.is_some()
            && let Ok(relative) = record.path.strip_prefix(&options.cache_dir)
        {
            record.path = relative.to_path_buf();
        }
    }
    let info = ArtefactInfo {
        classes: output_classes(data),
        backbone: BackboneRecord {
            files: head_files,
            settings: manifest.pipeline.resolved.backbone.clone(),
        },
        backbone_sha256: f.featurized.model_sha256.clone(),
        label_separator: plan.data.label_separator.clone(),
    };
    let heads: Vec<TrainedHead> = f.trained.heads.into_iter().map(|(h, _, _)| h).collect();
    let tables: Vec<(String, Vec<u8>)> = [
        ("splits.csv", splits_csv(data, split)),
        (
            "predictions.csv",
            predictions_csv(data, &split.test, &f.evaluated.test_predictions),
        ),
    ]
    .into_iter()
    .map(|(name, text)| (name.to_owned(), text.into_bytes()))
    .chain(std::mem::take(&mut f.stage_files))
    .collect();
    let run_dir = write_run_dir(
        plan,
        options,
        &metrics,
        manifest,
        &labels,
        tables,
        HeadArtefacts {
            heads: &heads,
            info: &info,
            others: f
                .stage_heads
                .iter()
                .map(|h| (h, stage_head_info(&info, h)))
                .collect(),
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

/// The artefact record of a stage's head: the run's, with the backbone replaced by the stage's graph (a
/// file pinned by its sha256, read with the pipeline's extraction settings) when it wrote one.
fn stage_head_info(info: &ArtefactInfo, head: &crate::stages::StageHead) -> ArtefactInfo {
    let mut info = info.clone();
    let Some(head) = &head.graph else {
        return info;
    };
    let file = |path: &Path, sha256: String| graft_report::FileRecord {
        path: path.to_path_buf(),
        sha256,
        fetched_now: false,
    };
    info.backbone.files = graft_report::ModelRecord {
        onnx: Some(file(&head.onnx, head.sha256.clone())),
        tokenizer: info.backbone.files.tokenizer.clone(),
        dimension: info.backbone.files.dimension,
        ..graft_report::ModelRecord::default()
    };
    if let Some(settings) = &mut info.backbone.settings {
        settings.source = graft_config::resolved::ModelSourceSettings::Files {
            onnx: head.onnx.clone(),
            tokenizer: head.tokenizer.clone(),
            sha256: Some(head.sha256.clone()),
        };
    }
    info.backbone_sha256 = head.sha256.clone();
    info
}
