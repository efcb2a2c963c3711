//! Hyperparameter search on the training rows (validation split or cross-validation folds).

use std::time::Instant;

use graft_eval::classification_report;
use graft_heads::{FittedTransform, LabelSets, Targets, argmax_rows};
use graft_ingest::{Split, group_kfold, stratified_kfold};
use ndarray::{Array2, ArrayView2, Axis};
use rayon::prelude::*;

use crate::PipelineError;
use crate::data::Labelled;
use std::sync::Arc;

use crate::heads::{TrainedHead, train_head, train_multi_label_head};
use crate::stages::EmbedTexts;
use graft_config::{HeadKind, HeadSpec, Plan, Selection};
use graft_report::{self, CvScores, SearchCandidate, SearchReport, TrainingFigures};
use graft_stdx::derive_seed;

/// What a search needs from the run: features and labels of the training and validation rows.
pub(crate) struct SearchData<'a> {
    pub(crate) transform: Option<&'a graft_heads::FittedTransform>,
    /// Transformed training rows (with augmented views), for selection on the validation split.
    pub(crate) fit: ndarray::ArrayView2<'a, f32>,
    pub(crate) fit_targets: &'a Targets<'a>,
    /// Transformed validation rows.
    pub(crate) validation: Option<(ndarray::ArrayView2<'a, f32>, &'a Targets<'a>)>,
    pub(crate) x_validation: &'a Array2<f32>,
    pub(crate) y_validation: &'a [usize],
    /// Raw training rows, for cross-validation (the transform is refitted per fold).
    pub(crate) x_train: &'a Array2<f32>,
    pub(crate) y_train: &'a [usize],
    /// Group of each training row, when the data names a group column.
    pub(crate) train_groups: Option<&'a [usize]>,
    pub(crate) n_classes: usize,
}

/// Scores of each spec on each fold: stratified k-fold of `y`, or group k-fold when `groups` is given; the
/// transform is refitted on each fold's training part. Specs × folds run in parallel.
pub(crate) fn cross_validate(
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

pub(crate) fn accuracy_and_macro_f1(
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
pub(crate) fn run_search(
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

/// Each split's rows, selected once: every head trains and is scored on these.
pub(crate) struct SplitRows {
    pub(crate) x_train: Array2<f32>,
    pub(crate) y_train: Vec<usize>,
    pub(crate) x_validation: Array2<f32>,
    pub(crate) y_validation: Vec<usize>,
    pub(crate) x_test: Array2<f32>,
    pub(crate) y_test: Vec<usize>,
    pub(crate) n_classes: usize,
}

impl SplitRows {
    pub(crate) fn select(
        features: &Array2<f32>,
        labels: &[usize],
        split: &Split,
        n_classes: usize,
    ) -> SplitRows {
        let rows_of = |idx: &[usize]| -> (Array2<f32>, Vec<usize>) {
            (
                features.select(Axis(0), idx),
                idx.iter().map(|&i| labels[i]).collect(),
            )
        };
        let (x_train, y_train) = rows_of(&split.train);
        let (x_validation, y_validation) = rows_of(&split.validation);
        let (x_test, y_test) = rows_of(&split.test);
        SplitRows {
            x_train,
            y_train,
            x_validation,
            y_validation,
            x_test,
            y_test,
            n_classes,
        }
    }
}

/// What the heads are fitted on: the training rows plus any augmented views (validation and test stay as
/// they are), and the transform fitted once on them and shared by every head.
pub(crate) struct FitRows<'a> {
    rows: &'a SplitRows,
    augmented: Option<(Array2<f32>, Vec<usize>)>,
    pub(crate) transform: Option<FittedTransform>,
    fit_transformed: Option<Array2<f32>>,
    validation_transformed: Option<Array2<f32>>,
}

impl<'a> FitRows<'a> {
    pub(crate) fn new(
        plan: &Plan,
        rows: &'a SplitRows,
        train_views: &[Array2<f32>],
    ) -> Result<FitRows<'a>, PipelineError> {
        let augmented = (!train_views.is_empty()).then(|| {
            let mut parts = vec![rows.x_train.view()];
            parts.extend(train_views.iter().map(|v| v.view()));
            let x = ndarray::concatenate(Axis(0), &parts).expect("views have the features' width");
            (x, rows.y_train.repeat(1 + train_views.len()))
        });
        let mut fit = FitRows {
            rows,
            augmented,
            transform: None,
            fit_transformed: None,
            validation_transformed: None,
        };
        if let Some(plan_transform) = &plan.transform {
            let transform = plan_transform.fit(fit.raw().0)?;
            fit.fit_transformed = Some(transform.transform(fit.raw().0)?);
            fit.validation_transformed = Some(transform.transform(rows.x_validation.view())?);
            fit.transform = Some(transform);
        }
        Ok(fit)
    }

    /// The fit rows before the transform, and their labels.
    pub(crate) fn raw(&self) -> (ArrayView2<'_, f32>, &[usize]) {
        match &self.augmented {
            Some((x, y)) => (x.view(), y),
            None => (self.rows.x_train.view(), &self.rows.y_train),
        }
    }

    /// The fit rows as the heads see them (transformed).
    pub(crate) fn x(&self) -> ArrayView2<'_, f32> {
        self.fit_transformed
            .as_ref()
            .map_or_else(|| self.raw().0, |x| x.view())
    }

    /// The validation rows as the heads see them, when there are any.
    pub(crate) fn validation_x(&self) -> Option<ArrayView2<'_, f32>> {
        (!self.rows.y_validation.is_empty()).then(|| {
            self.validation_transformed
                .as_ref()
                .map_or(self.rows.x_validation.view(), |x| x.view())
        })
    }
}

/// The heads as trained: the plan's, with a search's winner in its place.
pub(crate) struct TrainedHeads {
    /// The settings each head was trained with.
    pub(crate) specs: Vec<HeadSpec>,
    /// Each head, its training figures and fit seconds.
    pub(crate) heads: Vec<(TrainedHead, TrainingFigures, f64)>,
    /// The search, when `[search]` ran.
    pub(crate) search: Option<SearchReport>,
}

/// Searches (when asked) and trains every head on the fit rows; multi-label data trains sigmoid heads on
/// the label sets.
pub(crate) fn train_heads(
    plan: &Plan,
    fit: &FitRows<'_>,
    data: &Labelled,
    split: &Split,
) -> Result<TrainedHeads, PipelineError> {
    let rows = fit.rows;
    let n_classes = rows.n_classes;
    let (_, y_fit) = fit.raw();
    let train_targets = Targets::new(y_fit, n_classes)?;
    let validation_targets = Targets::new(&rows.y_validation, n_classes)?;
    let validation = fit.validation_x().map(|x| (x, &validation_targets));
    let train_groups: Option<Vec<usize>> = data
        .groups
        .as_ref()
        .map(|g| split.train.iter().map(|&i| g[i]).collect());
    // Hyperparameter search on the cached features (never the test rows); the winner replaces its head.
    let mut specs = plan.heads.clone();
    let search = match &plan.search {
        None => None,
        Some(search) => {
            let report = run_search(
                plan,
                search,
                SearchData {
                    transform: fit.transform.as_ref(),
                    fit: fit.x(),
                    fit_targets: &train_targets,
                    validation,
                    x_validation: &rows.x_validation,
                    y_validation: &rows.y_validation,
                    x_train: &rows.x_train,
                    y_train: &rows.y_train,
                    train_groups: train_groups.as_deref(),
                    n_classes,
                },
            )?;
            specs[search.head] = search.candidates[report.best].clone();
            Some(report)
        }
    };
    let sets_of = |split_rows: &[usize]| -> Option<Vec<Vec<usize>>> {
        let m = data.multi_label.as_ref()?;
        Some(split_rows.iter().map(|&i| m.sets[i].clone()).collect())
    };
    let multi_sets = data.multi_label.as_ref().map(|m| {
        (
            sets_of(&split.train).unwrap_or_default(),
            sets_of(&split.validation).unwrap_or_default(),
            m.names.len(),
        )
    });
    let mut heads = Vec::new();
    for spec in &specs {
        tracing::info!(head = spec.name(), "training");
        let clock = Instant::now();
        let (head, figures) = match &multi_sets {
            Some((train_sets, validation_sets, n_labels)) => {
                let train = LabelSets::new(train_sets, *n_labels)?;
                let validation_sets = LabelSets::new(validation_sets, *n_labels)?;
                train_multi_label_head(
                    spec,
                    fit.transform.as_ref(),
                    fit.x(),
                    &train,
                    validation.map(|(x, _)| (x, &validation_sets)),
                )?
            }
            None => train_head(
                spec,
                fit.transform.as_ref(),
                fit.x(),
                &train_targets,
                validation,
            )?,
        };
        heads.push((head, figures, clock.elapsed().as_secs_f64()));
    }
    Ok(TrainedHeads {
        specs,
        heads,
        search,
    })
}

/// `[zero_shot] initialise_prototype`: the class descriptions become part of each cosine prototype.
pub(crate) fn initialise_prototypes(
    plan: &Plan,
    trained: &mut TrainedHeads,
    fit: &FitRows<'_>,
    embed: &EmbedTexts<'_>,
    classes: &[String],
) -> Result<(), PipelineError> {
    let Some(z) = plan
        .techniques
        .zero_shot()
        .filter(|z| z.initialise_prototype.is_some())
    else {
        return Ok(());
    };
    let descriptions = embed(None, &z.class_texts(classes), false)?.features;
    for (head, _, _) in &mut trained.heads {
        if let HeadKind::Prototype(params) = &head.spec.kind {
            head.head = Arc::new(params.fit_with_prior(
                fit.x(),
                fit.raw().1,
                descriptions.view(),
                z.prior_weight as f32,
            )?);
        }
    }
    Ok(())
}

/// Settings only the data can rule out, refused before training with the key's line: a kNN `k` past the
/// training rows (every query would vote with the whole training set, silently predicting the majority)
/// and PCA `components` past the feature width (`dimension`, once the features are known).
pub(crate) fn check_against_data(
    plan: &Plan,
    train_rows: usize,
    dimension: Option<usize>,
) -> Result<(), PipelineError> {
    for head in &plan.heads {
        if let Some(limit) = head.kind.head().min_train_rows()
            && limit.rows > train_rows
        {
            let span = plan
                .spans
                .head_keys
                .iter()
                .find(|(kind, key, _)| *kind == head.name() && *key == limit.key)
                .map(|(_, _, span)| span.clone());
            return Err(plan
                .diagnostic(
                    &span,
                    format!(
                        "`{} = {}` is more than the {train_rows} training rows",
                        limit.key, limit.rows
                    ),
                )
                .with_hint(format!("use at most {train_rows}; {}", limit.hint))
                .into());
        }
    }
    if let (
        Some(graft_config::TransformPlan::PcaWhiten {
            components: Some(c),
            ..
        }),
        Some(d),
    ) = (&plan.transform, dimension)
        && *c > d
    {
        return Err(plan
            .diagnostic(
                &plan.spans.pca_components,
                format!("`components = {c}` is more than the {d} features"),
            )
            .with_hint(format!(
                "keep at most {d} components, or leave `components` out to keep all"
            ))
            .into());
    }
    Ok(())
}
