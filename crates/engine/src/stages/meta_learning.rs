//! `[meta_learning]`: prototypical networks (Snell et al., 2017) as meta-learning. A projection of the frozen
//! features is trained by episodes — N-way K-shot classification by the nearest class mean — on the base
//! classes' training rows only; then N-way K-shot episodes on the novel classes, held out of meta-training
//! and drawn from the test split, compare nearest-mean classification in the learned space with prototypes
//! on the L2-normalised frozen features — the space the projection starts from — episode by episode. The same comparison on the base
//! classes' test rows shows how much of what it learned transfers to classes it never saw.

use graft_config::techniques::MetaLearningPlan;
use graft_heads::{EpisodicProjection, Fit, Metric, Predict, Prototype, Targets};
use graft_report::{Spread, TechniqueReport};
use graft_stdx::derive_seed;
use ndarray::{Array2, ArrayView2, Axis};
use rand::SeedableRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use super::{RunData, accuracy, with_interval};
use crate::PipelineError;

/// The held-out classes' indices: named in the pipeline (each checked against the data's classes), or the
/// second half of the classes. What `check` runs too.
pub(crate) fn novel_classes(
    p: &MetaLearningPlan,
    classes: &[String],
    file: &std::path::Path,
    source: &str,
) -> Result<Vec<usize>, PipelineError> {
    let n = classes.len();
    let Some(names) = &p.novel else {
        return Ok((n / 2..n).collect());
    };
    names
        .iter()
        .map(|name| {
            classes.iter().position(|c| c == name).ok_or_else(|| {
                let hint =
                    match graft_config::did_you_mean(name, classes.iter().map(String::as_str)) {
                        Some(best) => format!(
                            "did you mean `{best}`? the classes are: {}",
                            classes.join(", ")
                        ),
                        None => format!("the classes are: {}", classes.join(", ")),
                    };
                PipelineError::from(
                    graft_config::Diagnostic::at(
                        file,
                        source,
                        p.novel_span.clone(),
                        format!("`novel` names `{name}`, which is not a class of the data"),
                    )
                    .with_hint(hint),
                )
            })
        })
        .collect()
}

/// Test rows per class, for the classes in `classes`.
fn test_rows_by_class(d: &RunData<'_>, classes: &[usize]) -> Vec<Vec<usize>> {
    classes
        .iter()
        .map(|&c| {
            d.test
                .iter()
                .copied()
                .filter(|&r| d.labels[r] == c)
                .collect()
        })
        .collect()
}

/// One episode: `ways` of the classes, `k` support and `queries` query rows each, drawn from `seed`; the
/// query accuracy of nearest-mean classification (Euclidean) on the normalised frozen features and in the
/// learned space.
fn episode(
    by_class: &[Vec<usize>],
    (ways, k, queries): (usize, usize, usize),
    frozen: ArrayView2<'_, f32>,
    projected: ArrayView2<'_, f32>,
    seed: u64,
) -> Result<(f64, f64), PipelineError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let eligible: Vec<usize> = (0..by_class.len())
        .filter(|&c| by_class[c].len() >= k + queries)
        .collect();
    let chosen: Vec<usize> = eligible.choose_multiple(&mut rng, ways).copied().collect();
    let (mut support, mut y_support, mut query, mut y_query) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (class, &c) in chosen.iter().enumerate() {
        let mut rows = by_class[c].clone();
        rows.shuffle(&mut rng);
        support.extend(&rows[..k]);
        y_support.extend(std::iter::repeat_n(class, k));
        query.extend(&rows[k..k + queries]);
        y_query.extend(std::iter::repeat_n(class, queries));
    }
    let targets = Targets::new(&y_support, ways)?;
    let score = |x: ArrayView2<'_, f32>, metric: Metric| -> Result<f64, PipelineError> {
        let head = Prototype::params()
            .metric(metric)
            .fit(x.select(Axis(0), &support).view(), &targets)?;
        Ok(accuracy(
            &head.predict(x.select(Axis(0), &query).view())?,
            &y_query,
        ))
    };
    Ok((
        score(frozen, Metric::Euclidean)?,
        score(projected, Metric::Euclidean)?,
    ))
}

/// Frozen vs learned space over `episodes` episodes per K on `by_class` (rows index `frozen`/`projected`).
#[allow(clippy::type_complexity)]
fn compare(
    p: &MetaLearningPlan,
    d: &RunData<'_>,
    by_class: &[Vec<usize>],
    frozen: ArrayView2<'_, f32>,
    projected: ArrayView2<'_, f32>,
    which: &str,
) -> Result<Vec<(usize, Spread, Spread, Spread)>, PipelineError> {
    let ways = p.ways.min(by_class.len());
    let per_k = super::paired_draws(&p.shots, p.episodes, d.level, |k, e| {
        let seed = derive_seed(
            d.seed,
            &format!("meta-learning {which} {ways}-way {k}-shot {e}"),
        );
        episode(by_class, (ways, k, p.queries), frozen, projected, seed)
    })?;
    Ok(per_k
        .into_iter()
        .map(|(k, frozen, learned)| {
            let difference = learned
                .values
                .iter()
                .zip(&frozen.values)
                .map(|(a, b)| a - b)
                .collect();
            (
                k,
                frozen,
                learned,
                Spread::of_differences(difference, d.level),
            )
        })
        .collect())
}

pub(crate) fn run(p: &MetaLearningPlan, d: &RunData<'_>) -> Result<TechniqueReport, PipelineError> {
    let clock = std::time::Instant::now();
    let span = Some(p.span.clone());
    let novel = novel_classes(p, d.classes, d.file, d.source)?;
    let base: Vec<usize> = (0..d.classes.len())
        .filter(|c| !novel.contains(c))
        .collect();
    let largest = *p.shots.iter().max().expect("at least one K");
    let needed = largest + p.queries;
    let novel_rows = test_rows_by_class(d, &novel);
    let enough = novel_rows.iter().filter(|r| r.len() >= needed).count();
    if base.len() < 2 || enough < p.ways {
        return Err(d
            .diagnostic(
                &span,
                format!(
                    "meta-learning needs ≥ 2 base classes and {} novel classes with {needed} test rows each \
                     (K = {largest} + {} queries); there are {} base and {enough} such novel classes",
                    p.ways,
                    p.queries,
                    base.len()
                ),
            )
            .with_hint("name fewer classes in `novel`, lower `ways`, `shots` or `queries`, or give the test split more rows")
            .into());
    }
    // Meta-validation: a share of the base classes held out of training, to pick the projection kept.
    let held = p.validation_classes.unwrap_or_else(|| {
        let quarter = base.len().div_ceil(4).max(2);
        if base.len() >= quarter + 2 {
            quarter
        } else {
            0
        }
    });
    if held > 0 && base.len() < held + 2 {
        return Err(d
            .diagnostic(
                &span,
                format!("`validation_classes = {held}` leaves {} base class(es) to train on; at least 2 are needed", base.len() - held),
            )
            .with_hint("lower `validation_classes`, or set it to 0 to keep the last projection")
            .into());
    }
    // Every (len / held)-th base class validates: spread over the class order.
    let validating: Vec<usize> = (0..held)
        .map(|i| base[i * base.len() / held.max(1)])
        .collect();
    let training: Vec<usize> = base
        .iter()
        .copied()
        .filter(|c| !validating.contains(c))
        .collect();
    // The base classes' training rows, their labels renumbered per group.
    let rows_of = |classes: &[usize]| -> (Vec<usize>, Vec<usize>) {
        let rows: Vec<usize> = d
            .train
            .iter()
            .copied()
            .filter(|&r| classes.contains(&d.labels[r]))
            .collect();
        let y = rows
            .iter()
            .map(|&r| {
                classes
                    .iter()
                    .position(|&c| c == d.labels[r])
                    .expect("a class of the group")
            })
            .collect();
        (rows, y)
    };
    let (train, y) = rows_of(&training);
    let (valid, y_valid) = rows_of(&validating);
    let train_clock = std::time::Instant::now();
    let x_valid = d.features.select(Axis(0), &valid);
    let valid_targets = Targets::new(&y_valid, validating.len().max(1))?;
    let projection = EpisodicProjection::params()
        .dim(p.dim.unwrap_or(d.features.ncols()))
        .episodes(p.train_episodes)
        .ways(p.ways.min(training.len()))
        .shots(largest)
        .queries(p.queries)
        .learning_rate(p.learning_rate)
        .seed(derive_seed(d.seed, "meta-learning projection"))
        .fit_with_validation(
            d.features.select(Axis(0), &train).view(),
            &Targets::new(&y, training.len())?,
            (held > 0).then_some((x_valid.view(), &valid_targets)),
        )?;
    let train_seconds = train_clock.elapsed().as_secs_f64();
    // Every test row once through the projection; episodes index these rows.
    // The frozen space as the projection sees it: rows at unit length (Euclidean class means there rank
    // almost as cosine ones do).
    let mut frozen: Array2<f32> = d.features.select(Axis(0), d.test);
    for mut row in frozen.rows_mut() {
        let norm = row.dot(&row).sqrt();
        if norm > 0.0 {
            row.mapv_inplace(|v| v / norm);
        }
    }
    let projected = projection.project(frozen.view())?;
    let position = |rows: Vec<Vec<usize>>| -> Vec<Vec<usize>> {
        rows.into_iter()
            .map(|rows| {
                rows.into_iter()
                    .map(|r| d.test.iter().position(|&t| t == r).expect("a test row"))
                    .collect()
            })
            .collect()
    };
    let novel_by_class = position(novel_rows);
    let base_by_class = position(test_rows_by_class(d, &base));
    let on_novel = compare(
        p,
        d,
        &novel_by_class,
        frozen.view(),
        projected.view(),
        "novel",
    )?;
    let on_base = compare(
        p,
        d,
        &base_by_class,
        frozen.view(),
        projected.view(),
        "base",
    )?;
    Ok(report(
        p,
        d,
        (&training, &validating, &novel),
        (&on_novel, &on_base),
        &projection,
        (train.len(), train_seconds),
        clock,
    ))
}

#[allow(clippy::type_complexity)]
fn report(
    p: &MetaLearningPlan,
    d: &RunData<'_>,
    (base, validating, novel): (&[usize], &[usize], &[usize]),
    (on_novel, on_base): (
        &[(usize, Spread, Spread, Spread)],
        &[(usize, Spread, Spread, Spread)],
    ),
    projection: &graft_heads::FittedProjection,
    (train_rows, train_seconds): (usize, f64),
    clock: std::time::Instant,
) -> TechniqueReport {
    let names = |classes: &[usize]| -> Vec<String> {
        classes.iter().map(|&c| d.classes[c].clone()).collect()
    };
    let verdict = |s: &Spread| {
        if s.lower > 0.0 {
            "meta-training helps"
        } else if s.upper < 0.0 {
            "meta-training hurts"
        } else {
            "no measurable difference"
        }
    };
    let ways = p.ways;
    let width = projection.parameters() / d.features.ncols();
    let kept = match (validating.is_empty(), projection.kept_episode()) {
        (true, _) => format!(
            "the last of the {} episodes' projection is kept",
            p.train_episodes
        ),
        (false, 0) => format!(
            "on the validation classes ({}) no training episode beat the start, so the projection kept is the \
             start{}",
            names(validating).join(", "),
            if width == d.features.ncols() {
                " — the frozen space itself"
            } else {
                ""
            }
        ),
        (false, e) => format!(
            "the projection after {e} episodes is kept: the best on the validation classes ({}), scored every \
             100 episodes",
            names(validating).join(", ")
        ),
    };
    let mut rows = Vec::new();
    let mut points = Vec::new();
    for (which, results) in [("novel", on_novel), ("base", on_base)] {
        for (k, frozen, learned, difference) in results {
            rows.push(vec![
                format!("{which} classes, {ways}-way {k}-shot"),
                with_interval(frozen),
                with_interval(learned),
                format!(
                    "{:+.4} [{:+.4}, {:+.4}]",
                    difference.mean, difference.lower, difference.upper
                ),
            ]);
            points.push(
                json!({ "classes": which, "shots": k, "frozen": frozen, "meta_trained": learned,
                                "difference": difference }),
            );
        }
    }
    let finding = on_novel
        .iter()
        .map(|(k, frozen, learned, difference)| {
            format!(
                "novel {ways}-way {k}-shot: meta-trained {:.4} vs frozen {:.4} ({:+.4}, 95% interval [{:+.4}, {:+.4}]: {})",
                learned.mean,
                frozen.mean,
                difference.mean,
                difference.lower,
                difference.upper,
                verdict(difference)
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
        + "; "
        + &kept;
    TechniqueReport {
        curve: Vec::new(),
        technique: "meta_learning".to_owned(),
        title: "Meta-learning: episodes on base classes, scored on novel ones".to_owned(),
        method: format!(
            "Prototypical networks (Snell et al., 2017) as meta-learning: a linear projection to {} dimensions of \
             the L2-normalised frozen features ({}), trained by {} episodes ({}-way {}-shot, {} queries per class; \
             softmax over negative squared distances to the class means; Adam, rate {:e}; {:.1} s) on the {} \
             training rows of the base classes ({}); {}. Novel classes ({}) take no part in it. Evaluation: {} seeded \
             episodes per K of {ways} classes from the test split, K support and {} query rows per class; \
             nearest class mean by Euclidean distance on the L2-normalised frozen features and in the learned space \
             (Euclidean) on the same episodes; mean query accuracy with 95% intervals and a t-interval of the \
             per-episode differences. The same on the base classes' test rows shows what does not transfer.",
            width,
            if width == d.features.ncols() {
                "starting from the identity: the frozen space itself"
            } else {
                "starting from a seeded Gaussian that keeps distances about as they are"
            },
            p.train_episodes,
            p.ways.min(base.len()),
            p.shots.iter().max().expect("a K"),
            p.queries,
            p.learning_rate,
            train_seconds,
            train_rows,
            names(base).join(", "),
            if validating.is_empty() {
                "no base class held out, the last projection kept".to_owned()
            } else {
                format!(
                    "base classes {} held out of training as meta-validation (Ravi & Larochelle, 2017): the \
                     projection kept is the one scoring best on their training rows' episodes, at the start or \
                     every 100 episodes",
                    names(validating).join(", ")
                )
            },
            names(novel).join(", "),
            p.episodes,
            p.queries,
        ),
        finding,
        columns: vec![
            "episodes".to_owned(),
            "frozen prototypes (95% CI)".to_owned(),
            "meta-trained prototypes (95% CI)".to_owned(),
            "meta − frozen (95% CI)".to_owned(),
        ],
        rows,
        details: json!({
            "base": names(base), "validation_classes": names(validating), "novel": names(novel), "ways": ways,
            "queries": p.queries, "episodes": p.episodes, "train_episodes": p.train_episodes, "dim": width,
            "kept_episode": projection.kept_episode(), "validation_accuracy": projection.validation_accuracy(),
            "trained_parameters": projection.parameters(), "training_loss": projection.losses(),
            "training_rows": train_rows, "training_seconds": train_seconds, "points": points,
        }),
        seconds: clock.elapsed().as_secs_f64(),
    }
}
