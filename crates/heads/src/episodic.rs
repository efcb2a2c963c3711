//! Meta-learning a projection by episodes (prototypical networks, Snell et al., 2017): trained to make
//! nearest-class-mean classification work from a few examples of classes it has seen, so that it works for
//! classes it has not.

use ndarray::{Array2, ArrayView2, Axis};
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{HeadError, ParamGuard, Targets, check_training};

/// Episodic training of a linear projection `z = P·x̂` (`x̂` the row L2-normalised): each episode draws
/// `ways` classes, `shots` support and `queries` query rows of each; the class prototypes are the support
/// rows' mean projections, and the loss is the cross-entropy of the queries' softmax over negative squared
/// Euclidean distances to the prototypes (Snell et al., 2017). Adam on `P`, starting from the identity when
/// `dim` is the input's width (the frozen space itself), else from a seeded Gaussian of variance `1/dim`,
/// which keeps distances about as they are (Johnson–Lindenstrauss). With validation classes
/// ([`EpisodicParams::fit_with_validation`]) the best projection on them is kept. Every random choice comes
/// from `seed`.
///
/// ```
/// use graft_heads::{EpisodicProjection, Targets};
/// use ndarray::Array2;
///
/// # fn main() -> Result<(), graft_heads::HeadError> {
/// // Four classes of 30 rows in 6 dimensions; the class is in the first two.
/// let labels: Vec<usize> = (0..120).map(|i| i % 4).collect();
/// let x = Array2::from_shape_fn((120, 6), |(i, j)| match j {
///     0 => (labels[i] % 2) as f32 + 0.1,
///     1 => (labels[i] / 2) as f32 + 0.1,
///     _ => ((i * 7 + j * 3) % 11) as f32 / 11.0,
/// });
/// let projection = EpisodicProjection::params()
///     .dim(4)
///     .ways(3)
///     .shots(2)
///     .queries(5)
///     .episodes(200)
///     .fit(x.view(), &Targets::new(&labels, 4)?)?;
/// assert_eq!(projection.project(x.view())?.dim(), (120, 4));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct EpisodicProjection;

impl EpisodicProjection {
    /// Defaults: 256 dimensions, 2,000 episodes of 5-way 5-shot with 15 queries, rate 1e-3, seed 0.
    pub fn params() -> EpisodicParams {
        EpisodicParams {
            dim: 256,
            episodes: 2000,
            ways: 5,
            shots: 5,
            queries: 15,
            learning_rate: 1e-3,
            seed: 0,
        }
    }
}

/// Hyperparameters of [`EpisodicProjection`].
#[derive(Debug, Clone, PartialEq)]
pub struct EpisodicParams {
    dim: usize,
    episodes: usize,
    ways: usize,
    shots: usize,
    queries: usize,
    learning_rate: f64,
    seed: u64,
}

impl EpisodicParams {
    /// Width of the projection. Default 256.
    pub fn dim(mut self, dim: usize) -> Self {
        self.dim = dim;
        self
    }

    /// Training episodes. Default 2,000.
    pub fn episodes(mut self, episodes: usize) -> Self {
        self.episodes = episodes;
        self
    }

    /// Classes per training episode. Default 5; at least 2.
    pub fn ways(mut self, ways: usize) -> Self {
        self.ways = ways;
        self
    }

    /// Support rows per class and episode. Default 5.
    pub fn shots(mut self, shots: usize) -> Self {
        self.shots = shots;
        self
    }

    /// Query rows per class and episode. Default 15.
    pub fn queries(mut self, queries: usize) -> Self {
        self.queries = queries;
        self
    }

    /// Adam's step size. Default 1e-3.
    pub fn learning_rate(mut self, learning_rate: f64) -> Self {
        self.learning_rate = learning_rate;
        self
    }

    /// Seed of the start and the episodes. Default 0.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

impl ParamGuard for EpisodicParams {
    type Checked = EpisodicParams;

    fn check(self) -> Result<EpisodicParams, HeadError> {
        let bad = |name: &'static str, value: String, expected: &'static str| {
            Err(HeadError::InvalidParameter {
                name,
                value,
                expected,
            })
        };
        for (name, value) in [
            ("dim", self.dim),
            ("episodes", self.episodes),
            ("shots", self.shots),
            ("queries", self.queries),
        ] {
            if value == 0 {
                return bad(name, "0".into(), "at least 1");
            }
        }
        if self.ways < 2 {
            return bad(
                "ways",
                self.ways.to_string(),
                "at least 2 classes per episode",
            );
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad(
                "learning_rate",
                self.learning_rate.to_string(),
                "a finite number above 0, e.g. 1e-3",
            );
        }
        Ok(self)
    }
}

/// Rows scaled to unit length (a zero row stays zero).
fn normalised(x: ArrayView2<'_, f32>) -> Array2<f32> {
    let mut x = x.to_owned();
    for mut row in x.rows_mut() {
        let norm = row.dot(&row).sqrt();
        if norm > 0.0 {
            row.mapv_inplace(|v| v / norm);
        }
    }
    x
}

/// One episode's loss and the gradient of `P`, for support rows `support[k]` (class `k` of the episode) and
/// query rows `query` with their episode classes.
fn episode_gradient(
    p: &Array2<f32>,
    x: &Array2<f32>,
    support: &[Vec<usize>],
    query: &[(usize, usize)],
) -> (f64, Array2<f32>) {
    let ways = support.len();
    let rows: Vec<usize> = support
        .iter()
        .flatten()
        .copied()
        .chain(query.iter().map(|&(r, _)| r))
        .collect();
    let xs = x.select(Axis(0), &rows);
    let z = xs.dot(&p.t());
    let m = p.nrows();
    let mut prototypes = Array2::<f32>::zeros((ways, m));
    let mut at = 0;
    for (k, rows) in support.iter().enumerate() {
        let block = z.slice(ndarray::s![at..at + rows.len(), ..]);
        prototypes
            .row_mut(k)
            .assign(&block.mean_axis(Axis(0)).expect("support rows"));
        at += rows.len();
    }
    let n_support = at;
    let nq = query.len() as f32;
    let mut dz = Array2::<f32>::zeros(z.dim());
    let mut d_prototypes = Array2::<f32>::zeros((ways, m));
    let mut loss = 0.0f64;
    for (q, &(_, class)) in query.iter().enumerate() {
        let zq = z.row(n_support + q);
        let distances: Vec<f32> = prototypes
            .rows()
            .into_iter()
            .map(|c| zq.iter().zip(c).map(|(a, b)| (a - b) * (a - b)).sum())
            .collect();
        // Softmax over −distance.
        let min = distances.iter().copied().fold(f32::INFINITY, f32::min);
        let e: Vec<f32> = distances.iter().map(|d| (min - d).exp()).collect();
        let sum: f32 = e.iter().sum();
        loss += f64::from(distances[class] - min + sum.ln());
        for k in 0..ways {
            // ∂loss/∂logit_k with logit_k = −d_k; ∂(−d_k)/∂z_q = −2(z_q − c_k), ∂(−d_k)/∂c_k = 2(z_q − c_k).
            let g = (e[k] / sum - f32::from(u8::from(k == class))) / nq;
            let c = prototypes.row(k);
            for j in 0..m {
                let diff = zq[j] - c[j];
                dz[[n_support + q, j]] -= 2.0 * g * diff;
                d_prototypes[[k, j]] += 2.0 * g * diff;
            }
        }
    }
    let mut at = 0;
    for (k, rows) in support.iter().enumerate() {
        let share = d_prototypes.row(k).mapv(|v| v / rows.len() as f32);
        for r in at..at + rows.len() {
            dz.row_mut(r).assign(&share);
        }
        at += rows.len();
    }
    (loss / f64::from(nq), dz.t().dot(&xs))
}

/// Rows per class, and the classes with at least `least` rows.
fn rows_by_class(targets: &Targets<'_>, least: usize) -> (Vec<Vec<usize>>, Vec<usize>) {
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); targets.n_classes()];
    for (row, &label) in targets.labels().iter().enumerate() {
        by_class[label].push(row);
    }
    let eligible = (0..by_class.len())
        .filter(|&c| by_class[c].len() >= least)
        .collect();
    (by_class, eligible)
}

/// One episode's rows: `ways` of the `eligible` classes, `shots` support rows (per class) and `queries`
/// query rows with their episode class.
type Episode = (Vec<Vec<usize>>, Vec<(usize, usize)>);

fn draw_episode(
    by_class: &[Vec<usize>],
    eligible: &[usize],
    (ways, shots, queries): (usize, usize, usize),
    rng: &mut ChaCha8Rng,
) -> Episode {
    let classes: Vec<usize> = eligible.choose_multiple(rng, ways).copied().collect();
    let mut support = Vec::with_capacity(ways);
    let mut query = Vec::with_capacity(ways * queries);
    for (k, &c) in classes.iter().enumerate() {
        let mut rows = by_class[c].clone();
        rows.shuffle(rng);
        support.push(rows[..shots].to_vec());
        query.extend(rows[shots..shots + queries].iter().map(|&r| (r, k)));
    }
    (support, query)
}

/// Query accuracy of nearest-mean classification in the space of `p` over `episodes` of rows of `x` (only
/// the rows the episodes use are projected).
fn episode_accuracy(p: &Array2<f32>, x: &Array2<f32>, episodes: &[Episode]) -> f64 {
    let mut used: Vec<usize> = episodes
        .iter()
        .flat_map(|(support, query)| {
            support
                .iter()
                .flatten()
                .copied()
                .chain(query.iter().map(|&(r, _)| r))
        })
        .collect();
    used.sort_unstable();
    used.dedup();
    let z = x.select(Axis(0), &used).dot(&p.t());
    let at = |row: usize| used.binary_search(&row).expect("a used row");
    let (mut right, mut total) = (0usize, 0usize);
    for (support, query) in episodes {
        let means: Vec<ndarray::Array1<f32>> = support
            .iter()
            .map(|rows| {
                let rows: Vec<usize> = rows.iter().map(|&r| at(r)).collect();
                z.select(Axis(0), &rows)
                    .mean_axis(Axis(0))
                    .expect("support rows")
            })
            .collect();
        for &(row, class) in query {
            let zq = z.row(at(row));
            let nearest = means
                .iter()
                .map(|c| {
                    zq.iter()
                        .zip(c)
                        .map(|(a, b)| (a - b) * (a - b))
                        .sum::<f32>()
                })
                .enumerate()
                .fold(
                    (0, f32::INFINITY),
                    |best, (k, d)| if d < best.1 { (k, d) } else { best },
                )
                .0;
            right += usize::from(nearest == class);
            total += 1;
        }
    }
    right as f64 / total.max(1) as f64
}

/// Episodes checked every this many training episodes (and the start), on the validation classes.
const CHECK_EVERY: usize = 100;

/// Seeded episodes of the validation classes each check scores.
const VALIDATION_EPISODES: usize = 100;

impl EpisodicParams {
    /// Trains the projection on `x` (rows × features) and their classes, keeping the last step.
    pub fn fit(
        &self,
        x: ArrayView2<'_, f32>,
        targets: &Targets<'_>,
    ) -> Result<FittedProjection, HeadError> {
        self.fit_with_validation(x, targets, None)
    }

    /// Trains as [`EpisodicParams::fit`]; with `validation` (rows of other classes than the training
    /// rows: meta-validation classes, as Ravi & Larochelle split theirs), 100 seeded episodes of those
    /// classes score the projection at the start and every 100 training episodes, and the best-scoring one is
    /// kept — the start included, so a projection that only helps the training classes is not kept.
    pub fn fit_with_validation(
        &self,
        x: ArrayView2<'_, f32>,
        targets: &Targets<'_>,
        validation: Option<(ArrayView2<'_, f32>, &Targets<'_>)>,
    ) -> Result<FittedProjection, HeadError> {
        let p = self.clone().check()?;
        check_training(x, targets)?;
        let (by_class, eligible) = rows_by_class(targets, p.shots + p.queries);
        if eligible.len() < p.ways {
            return Err(HeadError::InvalidParameter {
                name: "ways",
                value: p.ways.to_string(),
                expected: "no more than the classes with `shots + queries` training rows each",
            });
        }
        let x = normalised(x);
        let d = x.ncols();
        let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
        let checks = match validation {
            Some((xv, tv)) => {
                crate::check_features(xv, Some(d))?;
                let (by_class, eligible) = rows_by_class(tv, p.shots + 1);
                if eligible.len() < 2 {
                    return Err(HeadError::Degenerate {
                        rows: tv.labels().len(),
                        classes: eligible.len(),
                    });
                }
                let queries = by_class
                    .iter()
                    .filter(|r| r.len() > p.shots)
                    .map(|r| r.len() - p.shots)
                    .min()
                    .unwrap_or(1)
                    .min(p.queries);
                let ways = p.ways.min(eligible.len());
                let episodes: Vec<Episode> = (0..VALIDATION_EPISODES)
                    .map(|_| draw_episode(&by_class, &eligible, (ways, p.shots, queries), &mut rng))
                    .collect();
                Some((normalised(xv), episodes))
            }
            None => None,
        };
        let mut matrix = if p.dim == d {
            // The frozen space itself to start: training moves away from it only as far as it pays.
            Array2::eye(d)
        } else {
            // A Johnson–Lindenstrauss start: Gaussian entries of variance 1/dim keep distances about as
            // they are. (Box–Muller: rand's uniform is all that rand itself offers.)
            let scale = 1.0 / (p.dim as f32).sqrt();
            let mut gaussian = || {
                let (u, v): (f32, f32) = (rng.random::<f32>().max(1e-12), rng.random());
                (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
            };
            Array2::from_shape_simple_fn((p.dim, d), || scale * gaussian())
        };
        let (mut m1, mut m2) = (
            Array2::<f32>::zeros(matrix.dim()),
            Array2::<f32>::zeros(matrix.dim()),
        );
        let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
        let mut losses = Vec::new();
        let mut validation_accuracy = Vec::new();
        let mut best: Option<(f64, usize, Array2<f32>)> = None;
        let mut check = |episode: usize, matrix: &Array2<f32>, scores: &mut Vec<f64>| {
            if let Some((xv, episodes)) = &checks {
                let score = episode_accuracy(matrix, xv, episodes);
                scores.push(score);
                if best.as_ref().is_none_or(|(b, ..)| score > *b) {
                    best = Some((score, episode, matrix.clone()));
                }
            }
        };
        check(0, &matrix, &mut validation_accuracy);
        let mut window = 0.0;
        for episode in 1..=p.episodes {
            let (support, query) =
                draw_episode(&by_class, &eligible, (p.ways, p.shots, p.queries), &mut rng);
            let (loss, grad) = episode_gradient(&matrix, &x, &support, &query);
            if !loss.is_finite() {
                return Err(HeadError::Diverged {
                    head: "episodic projection",
                    epoch: episode,
                    setting: "learning_rate",
                    value: p.learning_rate,
                });
            }
            let t = i32::try_from(episode).unwrap_or(i32::MAX);
            let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
            let lr = p.learning_rate as f32;
            ndarray::Zip::from(&mut matrix)
                .and(&mut m1)
                .and(&mut m2)
                .and(&grad)
                .for_each(|w, m, v, &g| {
                    *m = b1 * *m + (1.0 - b1) * g;
                    *v = b2 * *v + (1.0 - b2) * g * g;
                    *w -= lr * (*m / c1) / ((*v / c2).sqrt() + eps);
                });
            window += loss;
            if episode % CHECK_EVERY == 0 || episode == p.episodes {
                let count = match episode % CHECK_EVERY {
                    0 => CHECK_EVERY,
                    rest => rest,
                };
                losses.push(window / count as f64);
                window = 0.0;
                check(episode, &matrix, &mut validation_accuracy);
            }
        }
        let (kept_episode, matrix) = match best {
            Some((_, episode, kept)) => (episode, kept),
            None => (p.episodes, matrix),
        };
        Ok(FittedProjection {
            matrix,
            losses,
            validation_accuracy,
            kept_episode,
        })
    }
}

/// A trained [`EpisodicProjection`].
#[derive(Debug, Clone, PartialEq)]
pub struct FittedProjection {
    matrix: Array2<f32>,
    losses: Vec<f64>,
    validation_accuracy: Vec<f64>,
    kept_episode: usize,
}

impl FittedProjection {
    /// Rows L2-normalised, then projected: `[rows, dim]`.
    pub fn project(&self, x: ArrayView2<'_, f32>) -> Result<Array2<f32>, HeadError> {
        crate::check_features(x, Some(self.matrix.ncols()))?;
        Ok(normalised(x).dot(&self.matrix.t()))
    }

    /// The mean episode loss of each 100 episodes (the last window may be shorter).
    pub fn losses(&self) -> &[f64] {
        &self.losses
    }

    /// Values trained.
    pub fn parameters(&self) -> usize {
        self.matrix.len()
    }

    /// With validation classes: their episode accuracy at the start and every 100 training episodes.
    pub fn validation_accuracy(&self) -> &[f64] {
        &self.validation_accuracy
    }

    /// The training episode whose projection was kept (0: the start).
    pub fn kept_episode(&self) -> usize {
        self.kept_episode
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_episode_gradient_matches_central_differences() {
        let x = Array2::from_shape_fn((12, 5), |(i, j)| ((i * 5 + j * 3) % 7) as f32 / 7.0 - 0.4);
        let p = Array2::from_shape_fn((3, 5), |(i, j)| 0.2 * i as f32 - 0.1 * j as f32 + 0.05);
        let support = vec![vec![0, 1], vec![2, 3], vec![4, 5]];
        let query = vec![(6, 0), (7, 1), (8, 2), (9, 0), (10, 1), (11, 2)];
        let (_, grad) = episode_gradient(&p, &x, &support, &query);
        let eps = 1e-3f32;
        for ((i, j), &g) in grad.indexed_iter() {
            let at = |delta: f32| {
                let mut moved = p.clone();
                moved[[i, j]] += delta;
                episode_gradient(&moved, &x, &support, &query).0
            };
            let numeric = (at(eps) - at(-eps)) / (2.0 * f64::from(eps));
            assert!(
                (f64::from(g) - numeric).abs() < 2e-3 * (1.0 + numeric.abs()),
                "P[{i}, {j}]: {g} vs {numeric}"
            );
        }
    }

    #[test]
    fn training_lowers_the_episode_loss_and_is_seeded() {
        let labels: Vec<usize> = (0..160).map(|i| i % 8).collect();
        let x = Array2::from_shape_fn((160, 10), |(i, j)| {
            let noise = ((i * 13 + j * 7) % 17) as f32 / 17.0;
            if j < 3 {
                ((labels[i] >> j) & 1) as f32 + 0.3 * noise
            } else {
                noise
            }
        });
        let y = Targets::new(&labels, 8).unwrap();
        let params = EpisodicProjection::params()
            .dim(6)
            .ways(4)
            .shots(3)
            .queries(5)
            .episodes(600)
            .seed(3);
        let a = params.fit(x.view(), &y).unwrap();
        assert!(
            a.losses().last().unwrap() < &(a.losses()[0] * 0.7),
            "{:?}",
            a.losses()
        );
        assert_eq!(a, params.fit(x.view(), &y).unwrap());
        assert_ne!(a, params.clone().seed(4).fit(x.view(), &y).unwrap());
        let err = EpisodicProjection::params()
            .ways(9)
            .fit(x.view(), &y)
            .unwrap_err();
        assert!(err.to_string().contains("`ways`"), "{err}");
    }
}
