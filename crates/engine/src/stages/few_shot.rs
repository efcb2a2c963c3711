//! `[few_shot]`: N-way K-shot episodic evaluation on the frozen features.
//!
//! The protocol of Vinyals et al. (2016) and Snell et al. (2017): each episode draws N classes, K support and
//! Q query rows per class from the test split (rows no head was trained on); a head is fitted on the support
//! rows alone and scored on the queries. Two heads: nearest class mean (prototypical networks, cosine) and
//! logistic regression on the frozen embedding (Tian et al., 2020, "Rethinking few-shot image
//! classification: a good embedding is all you need"). Mean accuracy over the episodes with a 95% interval.

use graft_heads::{Fit, Logistic, Metric, Predict, Prototype, Targets};
use ndarray::Axis;
use rand::SeedableRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use super::{RunData, accuracy, spread_json, with_interval};
use crate::PipelineError;
use graft_config::techniques::FewShotPlan;
use graft_report::TechniqueReport;
use graft_stdx::derive_seed;

pub(crate) fn run(p: &FewShotPlan, d: &RunData<'_>) -> Result<TechniqueReport, PipelineError> {
    let clock = std::time::Instant::now();
    let n_classes = d.classes.len();
    let ways = p.ways.unwrap_or(n_classes.min(5));
    let span = Some(p.span.clone());
    if ways > n_classes {
        return Err(d
            .diagnostic(
                &span,
                format!("`ways = {ways}` but the data has {n_classes} classes"),
            )
            .with_hint(format!("use `ways` ≤ {n_classes}"))
            .into());
    }
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); n_classes];
    for &r in d.test {
        by_class[d.labels[r]].push(r);
    }
    let largest = *p.shots.last().expect("at least one K");
    let eligible: Vec<usize> = (0..n_classes)
        .filter(|&c| by_class[c].len() >= largest + p.queries)
        .collect();
    if eligible.len() < ways {
        return Err(d.diagnostic(
                &span,
                format!(
                    "only {} classes have {} test rows (K = {largest} support + {} queries); {ways} are needed per episode",
                    eligible.len(),
                    largest + p.queries,
                    p.queries
                ),
            )
            .with_hint("lower the largest of `shots`, `queries` or `ways`, or give the test split a larger share")
            .into());
    }
    let per_k = super::paired_draws(&p.shots, p.episodes, d.level, |k, e| {
        let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(
            d.seed,
            &format!("few-shot {ways}-way {k}-shot {e}"),
        ));
        let classes: Vec<usize> = eligible.choose_multiple(&mut rng, ways).copied().collect();
        let (mut support, mut y_support, mut query, mut y_query) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (episode_class, &c) in classes.iter().enumerate() {
            let mut rows = by_class[c].clone();
            rows.shuffle(&mut rng);
            support.extend(&rows[..k]);
            y_support.extend(std::iter::repeat_n(episode_class, k));
            query.extend(&rows[k..k + p.queries]);
            y_query.extend(std::iter::repeat_n(episode_class, p.queries));
        }
        let x_support = d.features.select(Axis(0), &support);
        let x_query = d.features.select(Axis(0), &query);
        let targets = Targets::new(&y_support, ways)?;
        let prototype = Prototype::params()
            .metric(Metric::Cosine)
            .fit(x_support.view(), &targets)?;
        let logistic = Logistic::params()
            .c(1.0)
            .max_iter(1000)
            .fit(x_support.view(), &targets)?;
        Ok((
            accuracy(&prototype.predict(x_query.view())?, &y_query),
            accuracy(&logistic.predict(x_query.view())?, &y_query),
        ))
    })?;
    let mut rows = Vec::new();
    let mut points = Vec::new();
    for (k, prototype, logistic) in &per_k {
        rows.push(vec![
            format!("{ways}-way {k}-shot"),
            with_interval(prototype),
            with_interval(logistic),
        ]);
        points.push(json!({ "shots": k, "prototype": spread_json(prototype),
                            "logistic": spread_json(logistic) }));
    }
    let (first, last) = (&per_k[0], &per_k[per_k.len() - 1]);
    let finding = format!(
        "{ways}-way {}-shot: prototype {:.4}, logistic {:.4}; {ways}-way {}-shot: prototype {:.4}, logistic {:.4} \
         (chance {:.4}; {} episodes each)",
        first.0,
        first.1.mean,
        first.2.mean,
        last.0,
        last.1.mean,
        last.2.mean,
        1.0 / ways as f64,
        p.episodes
    );
    Ok(TechniqueReport {
        curve: Vec::new(),
        technique: "few_shot".to_owned(),
        title: "Few-shot: N-way K-shot episodes".to_owned(),
        method: format!(
            "{} seeded episodes per K; each draws {ways} of the {} classes with enough test rows, K support and {} \
             query rows per class from the test split; heads fitted on the support rows only: nearest class mean \
             (cosine; Snell et al., 2017) and logistic regression C = 1 on the frozen embedding (Tian et al., 2020). \
             Mean query accuracy, 95% interval over the episodes.",
            p.episodes,
            eligible.len(),
            p.queries
        ),
        finding,
        columns: vec![
            "episode".to_owned(),
            "prototype (95% CI)".to_owned(),
            "logistic (95% CI)".to_owned(),
        ],
        rows,
        details: json!({ "ways": ways, "queries": p.queries, "episodes": p.episodes, "points": points }),
        seconds: clock.elapsed().as_secs_f64(),
    })
}
