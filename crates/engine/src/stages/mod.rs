//! Transfer-learning techniques as pipeline stages: each an optional top-level table of the pipeline file
//! (`[zero_shot]`, `[few_shot]`, `[self_training]`, …) that runs on the run's frozen features after the heads
//! and reports the comparison it exists for (a [`TechniqueReport`] in metrics.json, report.md, report.html).
//!
//! The stages share one shape: checked settings (errors point at their key), a seed derived from the
//! pipeline's, the features the run already extracted (or cached), and a table of measured results.

mod augmentation;
mod continual;
mod distillation;
mod domain;
mod few_shot;
mod fine_tune;
mod fusion;
mod meta_learning;
mod multitask;
mod progressive;
mod prompts;
mod self_training;
mod zero_shot;

use std::ops::Range;
use std::path::{Path, PathBuf};

use graft_config::techniques::OtherBackbone;
use graft_config::{Diagnostic, HeadSpec, ModelSource, StagePlan, TechniquesPlan};
use graft_report::TechniqueReport;
use ndarray::{Array2, ArrayView2};

use crate::PipelineError;

/// Embeds texts (through the backbone's prompt) with the run's backbone (`backbone = None`) or a registered
/// text backbone with the run's threads and batch size, through the feature cache unless `fresh` (then
/// every row is extracted, for timing).
pub(crate) type EmbedTexts<'a> =
    dyn Fn(Option<&OtherBackbone>, &[String], bool) -> Result<Embedded, PipelineError> + Sync + 'a;

/// The table of a registered data set a stage reads (e.g. a target domain), fetched and verified.
pub(crate) type DatasetTable<'a> = dyn Fn(&str) -> Result<PathBuf, PipelineError> + Sync + 'a;

/// Stores graph bytes (content-addressed, in the cache) and returns the file's path.
pub(crate) type StoreGraph<'a> = dyn Fn(&[u8]) -> Result<PathBuf, PipelineError> + Sync + 'a;

/// Each text's token ids and its unpooled token states `[tokens, hidden]`.
pub(crate) type TokenStatesOf = (Vec<Vec<u32>>, Vec<Array2<f32>>);

/// Token ids and per-token output states (`output` of the graph at the path) of texts, unpooled, and how
/// many texts came from the feature cache.
pub(crate) type TokenStates<'a> =
    dyn Fn(&Path, &str, &[String]) -> Result<(TokenStatesOf, usize), PipelineError> + Sync + 'a;

/// A head a stage trained on another backbone's features, kept in the run folder beside the pipeline's.
pub(crate) struct StageHead {
    /// Its name in `heads/` (e.g. `logistic-tuned`).
    pub name: String,
    pub head: crate::heads::TrainedHead,
    /// The backbone graph its features come from, when not the pipeline's own.
    pub graph: Option<StageGraph>,
}

/// A backbone graph a stage wrote: its file, sha256 and tokenizer (paths relative to the run folder).
pub(crate) struct StageGraph {
    pub onnx: PathBuf,
    pub sha256: String,
    pub tokenizer: PathBuf,
}

/// Keeps a stage's head for the run folder.
pub(crate) type AddHead<'a> = dyn Fn(StageHead) -> Result<(), PipelineError> + Sync + 'a;

/// A file a stage adds to the run folder (name, bytes).
pub(crate) type AddOutput<'a> = dyn Fn(&str, Vec<u8>) -> Result<(), PipelineError> + Sync + 'a;

/// What fine-tuning needs from the run: the backbone's float32 weights and a way to run graphs it writes.
pub(crate) struct TuneKit<'a> {
    /// The safetensors file.
    pub weights: PathBuf,
    pub attention_heads: usize,
    pub tokenizer: PathBuf,
    /// The graph output holding token states.
    pub output: String,
    /// Tokens kept per text (`[backbone] max_length`).
    pub max_length: usize,
    pub store_graph: &'a StoreGraph<'a>,
    pub token_states: &'a TokenStates<'a>,
}

/// Features of texts a stage asked for, and how fast they were extracted.
pub(crate) struct Embedded {
    pub features: Array2<f32>,
    /// Rows per second of the rows extracted (0 when all came from the cache).
    pub rows_per_second: f64,
    /// Rows extracted rather than found in the cache.
    pub extracted: usize,
}

/// Everything a stage reads: plain data from the run, and two functions for what it brings (texts to embed,
/// a registered table to read). Never the plan or the cache.
pub(crate) struct RunData<'a> {
    /// The pipeline's seed; each stage derives its own streams from it.
    pub seed: u64,
    /// The pipeline file and its text, to locate mistakes found while a stage runs.
    pub file: &'a Path,
    pub source: &'a str,
    /// Every head of the pipeline (the first is the headline), for stages that reuse their settings.
    pub heads: &'a [HeadSpec],
    /// The pipeline's backbone (`None` for given features).
    pub backbone: Option<&'a ModelSource>,
    /// The data's label column, for stages that read more of the table.
    pub label_column: &'a str,
    /// Every used row's features.
    pub features: ArrayView2<'a, f32>,
    /// Every used row's class.
    pub labels: &'a [usize],
    pub classes: &'a [String],
    pub train: &'a [usize],
    /// Rows held out for model selection (early stopping); may be empty.
    pub validation: &'a [usize],
    pub test: &'a [usize],
    /// The headline head's settings, and its test accuracy for comparison.
    pub headline: &'a HeadSpec,
    pub headline_accuracy: f64,
    pub headline_macro_f1: f64,
    /// The headline's test-accuracy interval as the Scores section reports it (`None` with
    /// `[evaluation] bootstrap = 0`): a stage that shows the same head on the same rows shows this one.
    pub headline_interval: Option<graft_eval::Interval>,
    /// `[evaluation] level`: the confidence level of the stages' intervals.
    pub level: f64,
    /// The data table and the table row of each used row, for stages that read more of its columns.
    pub table: Option<(&'a Path, &'a [usize])>,
    /// The backbone, for texts a stage brings (`None` for image backbones and given features).
    pub embed: Option<&'a EmbedTexts<'a>>,
    /// Every used row's text, for text data.
    pub texts: Option<&'a [String]>,
    /// Augmented views of the training images (one matrix per view, rows aligned with `train`).
    pub train_views: &'a [Array2<f32>],
    /// Registered data sets a stage reads.
    pub dataset: &'a DatasetTable<'a>,
    /// Draw progress on the terminal.
    pub progress: bool,
    /// The backbone's weights and graph runners, for a backbone published with weights.
    pub tune: Option<&'a TuneKit<'a>>,
    /// Adds a file to the run folder.
    pub outputs: &'a AddOutput<'a>,
    /// Adds a head to the run folder's `heads/`.
    pub add_head: &'a AddHead<'a>,
    /// The pipeline's learning curve (shots, draws per K), for stages that add a line to it.
    pub curve: Option<(&'a [usize], usize)>,
}

impl RunData<'_> {
    /// A mistake of the pipeline file found while a stage runs, pointing at the stage's key.
    pub(crate) fn diagnostic(
        &self,
        span: &Option<Range<usize>>,
        message: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic::at(self.file, self.source, span.clone(), message)
    }
}

/// Runs one stage.
fn run_stage(plan: &StagePlan, data: &RunData<'_>) -> Result<TechniqueReport, PipelineError> {
    match plan {
        StagePlan::PromptTemplates(p) => prompts::run(p, data),
        StagePlan::ZeroShot(p) => zero_shot::run(p, data),
        StagePlan::FewShot(p) => few_shot::run(p, data),
        StagePlan::MetaLearning(p) => meta_learning::run(p, data),
        StagePlan::SelfTraining(p) => self_training::run(p, data),
        StagePlan::Continual(p) => continual::run(p, data),
        StagePlan::DomainAdaptation(p) => domain::run(p, data),
        StagePlan::Multitask(p) => multitask::run(p, data),
        StagePlan::Fusion(p) => fusion::run(p, data),
        StagePlan::Distillation(p) => distillation::run(p, data),
        StagePlan::Augmentation(p) => augmentation::run(p, data),
        StagePlan::FineTune(p) => fine_tune::run(p, data),
        StagePlan::Progressive(p) => progressive::run(p, data),
    }
}

/// Runs the stages the plan asks for, in [`graft_config::STAGES`] order, each behind a spinner with its
/// elapsed time.
pub(crate) fn run(
    techniques: &TechniquesPlan,
    data: &RunData<'_>,
) -> Result<Vec<TechniqueReport>, PipelineError> {
    let mut reports = Vec::new();
    for plan in &techniques.stages {
        let name = plan.stage().title();
        tracing::info!(technique = name, "running");
        let spinner = crate::progress::spinner(data.progress, name);
        let report = run_stage(plan, data);
        spinner.finish_and_clear();
        reports.push(report?);
    }
    Ok(reports)
}

pub(crate) use fine_tune::check_layers as check_tune_layers;

/// The stages' checks that need the data but no model: zero-shot `labels` against the data's classes, the
/// target domain's table (its columns and classes), a distillation student that is the backbone itself,
/// meta-learning's `novel` classes.
/// `check` runs them; a run meets them again.
pub(crate) fn check_with_data(
    techniques: &TechniquesPlan,
    backbone: Option<&ModelSource>,
    classes: &[String],
    dataset: &DatasetTable<'_>,
    file: &Path,
    source: &str,
) -> Result<(), PipelineError> {
    for plan in &techniques.stages {
        match plan {
            StagePlan::ZeroShot(p) => zero_shot::check_classes(p, classes, file, source)?,
            StagePlan::DomainAdaptation(p) => {
                domain::read_target(p, classes, dataset, file, source)?;
            }
            StagePlan::Distillation(p) => distillation::check_student(p, backbone, file, source)?,
            StagePlan::MetaLearning(p) => {
                meta_learning::novel_classes(p, classes, file, source)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Share of equal entries.
pub(crate) fn accuracy(predicted: &[usize], truth: &[usize]) -> f64 {
    if truth.is_empty() {
        return 0.0;
    }
    predicted.iter().zip(truth).filter(|(p, t)| p == t).count() as f64 / truth.len() as f64
}

/// `0.7670` style.
pub(crate) fn f4(v: f64) -> String {
    format!("{v:.4}")
}

/// `0.7670 [0.7406, 0.7925]` style.
pub(crate) fn with_interval(s: &graft_report::Spread) -> String {
    format!("{:.4} [{:.4}, {:.4}]", s.mean, s.lower, s.upper)
}

/// The MLP a stage trains: the pipeline's `[head.mlp]` settings when it has one, else graft's defaults
/// (seeded from the pipeline); `epochs` epochs and no early stopping (stages have no validation rows).
pub(crate) fn mlp_settings(
    d: &RunData<'_>,
    epochs: usize,
    purpose: &str,
) -> Result<graft_heads::MlpValidParams, PipelineError> {
    use graft_heads::ParamGuard;
    let base = d
        .heads
        .iter()
        .find_map(|h| {
            // The pipeline's own MLP settings, when it has an MLP head.
            if let graft_config::HeadKind::Mlp(m) = &h.kind {
                Some(m.unchecked())
            } else {
                None
            }
        })
        .unwrap_or_else(|| {
            graft_heads::Mlp::params().seed(graft_stdx::derive_seed(d.seed, purpose))
        });
    Ok(base.max_epochs(epochs).patience(None).check()?)
}

/// A short name of the pipeline's backbone: the registered name, or the ONNX file's name.
pub(crate) fn pipeline_backbone_name(d: &RunData<'_>) -> String {
    match d.backbone {
        Some(graft_config::ModelSource::Registry(name)) => name.clone(),
        Some(graft_config::ModelSource::Files { onnx, .. }) => onnx.file_name().map_or_else(
            || "backbone".to_owned(),
            |n| n.to_string_lossy().into_owned(),
        ),
        None => "given features".to_owned(),
    }
}

/// The headline head's settings (uncalibrated) trained on the training rows of `x` (one row per used row),
/// and its predictions for the test rows: the comparison stages that swap the features make.
pub(crate) fn headline_test_predictions(
    d: &RunData<'_>,
    x: ArrayView2<'_, f32>,
) -> Result<Vec<usize>, PipelineError> {
    Ok(headline_on(d, x)?.1)
}

/// [`headline_test_predictions`], keeping the trained head too.
pub(crate) fn headline_on(
    d: &RunData<'_>,
    x: ArrayView2<'_, f32>,
) -> Result<(crate::heads::TrainedHead, Vec<usize>), PipelineError> {
    let y: Vec<usize> = d.train.iter().map(|&r| d.labels[r]).collect();
    let (head, _) = crate::heads::train_head(
        &d.headline.uncalibrated(),
        None,
        x.select(ndarray::Axis(0), d.train).view(),
        &graft_heads::Targets::new(&y, d.classes.len())?,
        None,
    )?;
    let predicted = graft_heads::argmax_rows(
        head.predict_proba(x.select(ndarray::Axis(0), d.test).view())?
            .view(),
    );
    Ok((head, predicted))
}

/// Runs `job(k, repeat)` for every K of `ks` × `repeats` seeded repeats in parallel; each returns two scores
/// of the same draw (e.g. without and with a technique). Per K, in order: K and the two scores' spreads.
pub(crate) fn paired_draws(
    ks: &[usize],
    repeats: usize,
    level: f64,
    job: impl Fn(usize, usize) -> Result<(f64, f64), PipelineError> + Sync,
) -> Result<Vec<(usize, graft_report::Spread, graft_report::Spread)>, PipelineError> {
    use rayon::prelude::*;
    let jobs: Vec<(usize, usize)> = ks
        .iter()
        .flat_map(|&k| (0..repeats).map(move |r| (k, r)))
        .collect();
    let results: Vec<(f64, f64)> = jobs
        .par_iter()
        .map(|&(k, r)| job(k, r))
        .collect::<Result<_, _>>()?;
    Ok(ks
        .iter()
        .zip(results.chunks(repeats))
        .map(|(&k, draws)| {
            (
                k,
                graft_report::Spread::at_level(draws.iter().map(|d| d.0).collect(), level),
                graft_report::Spread::at_level(draws.iter().map(|d| d.1).collect(), level),
            )
        })
        .collect())
}

/// A spread as metrics.json records it in technique details.
pub(crate) fn spread_json(s: &graft_report::Spread) -> serde_json::Value {
    serde_json::json!({ "mean": s.mean, "lower": s.lower, "upper": s.upper, "std": s.std })
}

#[cfg(test)]
mod tests {
    //! Every stage on plain arrays: the fixture pipelines' technique tables, features from a small lexicon
    //! instead of a backbone, and an `embed` function that applies the same lexicon. No ONNX Runtime, no
    //! command line.

    use std::path::PathBuf;

    use graft_config::{Plan, Stage};
    use ndarray::Array2;

    use super::*;

    const POSITIVE: &[&str] = &[
        "wonderful",
        "moving",
        "great",
        "loved",
        "delightful",
        "delight",
        "lovely",
        "beautiful",
        "brilliant",
        "funny",
        "warm",
        "smart",
        "best",
        "fun",
    ];
    const NEGATIVE: &[&str] = &[
        "dull", "boring", "terrible", "bad", "hated", "mess", "tedious", "awful", "ugly", "dumb",
        "flat", "worst",
    ];

    /// A 6-d embedding: sentiment direction, word counts, length and two hashed dimensions; `other` gives a
    /// second "backbone" (other scaling and hashing) for fusion and distillation.
    fn lexicon_embedding(text: &str, other: bool) -> [f32; 6] {
        let words: Vec<&str> = text.split_whitespace().collect();
        let pos = words.iter().filter(|w| POSITIVE.contains(w)).count() as f32;
        let neg = words.iter().filter(|w| NEGATIVE.contains(w)).count() as f32;
        let hash = |salt: u64| {
            let h = graft_stdx::derive_seed(salt, text);
            (h % 1000) as f32 / 1000.0 - 0.5
        };
        let scale = if other { 0.5 } else { 1.0 };
        let salt = u64::from(other);
        [
            scale * (pos - neg),
            pos,
            neg,
            words.len() as f32 / 10.0,
            0.2 * hash(salt),
            0.2 * hash(salt + 2),
        ]
    }

    fn embed_all(texts: &[String], other: bool) -> Array2<f32> {
        let mut x = Array2::zeros((texts.len(), 6));
        for (i, t) in texts.iter().enumerate() {
            x.row_mut(i)
                .assign(&ndarray::aview1(&lexicon_embedding(t, other)));
        }
        x
    }

    fn repo() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    /// A fixture pipeline's plan and its rows (texts, label classes) read from its data table.
    struct Fixture {
        plan: Plan,
        texts: Vec<String>,
        labels: Vec<usize>,
        classes: Vec<String>,
        features: Array2<f32>,
        train: Vec<usize>,
        test: Vec<usize>,
        rows: Vec<usize>,
    }

    impl Fixture {
        fn load(pipeline: &str) -> Fixture {
            let plan = Plan::load(&repo().join("fixtures/pipelines").join(pipeline)).unwrap();
            let graft_config::DataSource::File(table) = &plan.data.source else {
                panic!("a table fixture")
            };
            let mut reader = csv::Reader::from_path(table).unwrap();
            let headers = reader.headers().unwrap().clone();
            let column = |name: &str| headers.iter().position(|h| h == name).unwrap();
            let (text, label) = (
                column(&plan.data.text_column),
                column(&plan.data.label_column),
            );
            let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
            let texts: Vec<String> = records.iter().map(|r| r[text].to_owned()).collect();
            let mut classes: Vec<String> = records.iter().map(|r| r[label].to_owned()).collect();
            classes.sort();
            classes.dedup();
            let labels = records
                .iter()
                .map(|r| classes.iter().position(|c| *c == r[label]).unwrap())
                .collect();
            let features = embed_all(&texts, false);
            let n = texts.len();
            Fixture {
                plan,
                texts,
                labels,
                classes,
                features,
                // Halves of every eight rows: the classes alternate in the fixtures, so both splits are balanced.
                train: (0..n).filter(|i| i % 8 < 4).collect(),
                test: (0..n).filter(|i| i % 8 >= 4).collect(),
                rows: (0..n).collect(),
            }
        }

        fn run(&self, stage: &StagePlan) -> Result<TechniqueReport, PipelineError> {
            let embed = |backbone: Option<&OtherBackbone>, texts: &[String], _fresh: bool| {
                Ok(Embedded {
                    features: embed_all(texts, backbone.is_some()),
                    rows_per_second: 1000.0,
                    extracted: texts.len(),
                })
            };
            let dataset = |name: &str| -> Result<PathBuf, PipelineError> {
                panic!("no registered data set in a unit test: {name}")
            };
            let graft_config::DataSource::File(table) = &self.plan.data.source else {
                unreachable!()
            };
            let data = RunData {
                seed: self.plan.seed,
                file: &self.plan.file,
                source: &self.plan.source,
                heads: &self.plan.heads,
                backbone: self.plan.backbone.as_ref().map(|b| &b.source),
                label_column: &self.plan.data.label_column,
                features: self.features.view(),
                labels: &self.labels,
                classes: &self.classes,
                train: &self.train,
                validation: &[],
                test: &self.test,
                headline: &self.plan.heads[0],
                headline_accuracy: 1.0,
                headline_macro_f1: 1.0,
                headline_interval: None,
                level: 0.95,
                table: Some((table.as_path(), &self.rows)),
                embed: Some(&embed),
                texts: Some(&self.texts),
                train_views: &[],
                dataset: &dataset,
                progress: false,
                tune: None,
                outputs: &|_, _| Ok(()),
                add_head: &|_| Ok(()),
                curve: None,
            };
            run_stage(stage, &data)
        }
    }

    fn number(details: &serde_json::Value, pointer: &str) -> f64 {
        details
            .pointer(pointer)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or_else(|| panic!("no number at {pointer} in {details}"))
    }

    #[test]
    fn every_text_stage_runs_on_plain_arrays_and_reports_its_comparison() {
        let fixture = Fixture::load("tiny-techniques.toml");
        let stages = &fixture.plan.techniques.stages;
        assert_eq!(stages.len(), 9, "every text stage of the fixture");
        for stage in stages {
            let report = fixture.run(stage).unwrap();
            assert_eq!(report.technique, stage.stage().table());
            assert!(!report.rows.is_empty(), "{}", report.technique);
            assert!(report.rows.iter().all(|r| r.len() == report.columns.len()));
            assert!(!report.finding.is_empty() && !report.method.is_empty());
            let d = &report.details;
            match stage.stage() {
                // The lexicon separates the classes: descriptions and episodes find them.
                Stage::ZeroShot => assert!(number(d, "/test_accuracy") >= 0.9, "{d}"),
                Stage::FewShot => {
                    assert!(number(d, "/points/0/prototype/mean") >= 0.9, "{d}");
                    assert_eq!(number(d, "/ways"), 2.0);
                }
                Stage::PromptTemplates => {
                    assert_eq!(d["templates"].as_array().unwrap().len(), 2)
                }
                Stage::SelfTraining => assert!(!d["rounds"].as_array().unwrap().is_empty()),
                Stage::DomainAdaptation => assert_eq!(number(d, "/target_rows"), 12.0),
                Stage::Multitask => assert_eq!(d["tasks"].as_array().unwrap().len(), 2),
                Stage::Fusion => assert!(d["variants"].as_array().unwrap().len() >= 3),
                Stage::Distillation => assert!(number(d, "/teacher_accuracy") >= 0.9, "{d}"),
                Stage::Augmentation => assert_eq!(number(d, "/views"), 2.0),
                Stage::Continual | Stage::FineTune | Stage::Progressive | Stage::MetaLearning => {
                    unreachable!("not in this fixture")
                }
            }
        }
    }

    #[test]
    fn continual_learning_tracks_forgetting_on_plain_arrays() {
        let fixture = Fixture::load("tiny-continual.toml");
        let [stage] = fixture.plan.techniques.stages.as_slice() else {
            panic!("one stage")
        };
        let report = fixture.run(stage).unwrap();
        let d = &report.details;
        assert_eq!(d["stages"].as_array().unwrap().len(), 2);
        // Prototypes add class means without touching old ones: the lexicon's classes stay apart.
        assert!(number(d, "/seen_accuracy/0/1") >= 0.5, "{d}");
        for learner in 0..3 {
            let f = number(d, &format!("/average_forgetting/{learner}"));
            assert!((-1.0..=1.0).contains(&f), "{d}");
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_results() {
        let fixture = Fixture::load("tiny-techniques.toml");
        for stage in &fixture.plan.techniques.stages {
            let a = fixture.run(stage).unwrap();
            let b = fixture.run(stage).unwrap();
            // Timings differ; everything measured does not.
            let strip = |mut v: serde_json::Value| {
                if let Some(map) = v.as_object_mut() {
                    map.retain(|k, _| {
                        !k.contains("per_second") && !k.ends_with("_seconds") && k != "speed_up"
                    });
                }
                v
            };
            assert_eq!(strip(a.details), strip(b.details), "{}", a.technique);
        }
    }

    #[test]
    fn a_stage_that_cannot_run_points_at_its_table() {
        let mut fixture = Fixture::load("tiny-techniques.toml");
        // Three classes asked of a two-class task.
        let Some(StagePlan::FewShot(few_shot)) = fixture
            .plan
            .techniques
            .stages
            .iter_mut()
            .find(|s| s.stage() == Stage::FewShot)
        else {
            panic!("few-shot in the fixture")
        };
        few_shot.ways = Some(3);
        let stage = StagePlan::FewShot(few_shot.clone());
        let err = fixture.run(&stage).unwrap_err().to_string();
        assert!(
            err.contains("`ways = 3` but the data has 2 classes"),
            "{err}"
        );
        assert!(err.contains("tiny-techniques.toml:"), "{err}");
    }
}
