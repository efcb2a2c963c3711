//! `[search]`: grids and ranges checked, every candidate built and checked before any work.

use std::ops::Range;

use crate::spanned::Spanned;
use graft_heads::HeadError;
use serde_json::json;

use crate::Diagnostic;
use crate::heads::{HeadKind, HeadSpec};
use crate::schema::{RawRange, RawSearch, RawSearchMethod, RawSelect};

use super::Checker;
use crate::plan::*;

impl Checker<'_> {
    pub(super) fn check_search(
        &self,
        raw: Spanned<RawSearch>,
        heads: &[HeadSpec],
        seed: u64,
    ) -> Result<SearchPlan, Diagnostic> {
        let section = raw.span();
        let r = raw.into_inner();
        let method = r.method.unwrap_or(RawSearchMethod::Grid);
        let select = self.selection(&r, &section)?;
        let (name, space_span) = match (&r.logistic, &r.mlp) {
            (Some(l), None) => ("logistic", l.span()),
            (None, Some(m)) => ("mlp", m.span()),
            (Some(_), Some(m)) => {
                return Err(self
                    .error(m.span(), "`[search]` tunes one head at a time")
                    .with_hint("keep one of `[search.logistic]` and `[search.mlp]`"));
            }
            (None, None) => {
                return Err(self
                    .error(section, "`[search]` names no head to tune")
                    .with_hint(
                        "add `[search.logistic]` (e.g. `c = [0.01, 0.1, 1, 10]`) or `[search.mlp]`",
                    ));
            }
        };
        let head = heads.iter().position(|h| h.name() == name).ok_or_else(|| {
            self.error(
                space_span.clone(),
                format!("`[search.{name}]` tunes a head the pipeline does not train"),
            )
            .with_hint(format!(
                "add `[head.{name}]`; its keys are the starting point of the search"
            ))
        })?;
        // (key, span, values or range)
        let mut dims: Vec<(&'static str, Range<usize>, RawRange)> = Vec::new();
        let mut hidden: Option<(Range<usize>, Vec<Vec<usize>>)> = None;
        if let Some(c) = r.logistic.and_then(|l| l.into_inner().c) {
            dims.push(("c", c.span(), c.into_inner()));
        }
        if let Some(m) = r.mlp {
            let m = m.into_inner();
            for (key, v) in [
                ("learning_rate", m.learning_rate),
                ("weight_decay", m.weight_decay),
                ("dropout", m.dropout),
            ] {
                if let Some(v) = v {
                    dims.push((key, v.span(), v.into_inner()));
                }
            }
            hidden = m.hidden.map(|h| (h.span(), h.into_inner()));
        }
        if dims.is_empty() && hidden.is_none() {
            return Err(self
                .error(
                    space_span,
                    format!("`[search.{name}]` lists no parameter to search"),
                )
                .with_hint("give each searched key a list of values, e.g. `c = [0.01, 0.1, 1]`"));
        }
        self.check_ranges(&dims, method)?;
        let points: Vec<Point> = match method {
            RawSearchMethod::Grid => grid_points(&dims, hidden.as_ref()),
            RawSearchMethod::Random => {
                let trials = r.trials.as_ref().map_or(20, |t| *t.get_ref());
                if trials == 0 {
                    return Err(self.error(
                        r.trials.as_ref().map_or(section.clone(), Spanned::span),
                        "`trials` must be at least 1",
                    ));
                }
                random_points(&dims, hidden.as_ref(), trials, seed)
            }
        };
        if method == RawSearchMethod::Grid
            && let Some(t) = &r.trials
        {
            return Err(self
                .error(t.span(), "`trials` applies to `method = \"random\"`")
                .with_hint("a grid tries every combination of the listed values"));
        }
        let base = &heads[head];
        let mut candidates = Vec::with_capacity(points.len());
        let mut values = Vec::with_capacity(points.len());
        for (point, layers) in points {
            let mut v = serde_json::Map::new();
            let kind = self.candidate(
                base,
                &dims,
                &point,
                layers.as_deref(),
                hidden.as_ref(),
                &space_span,
                &mut v,
            )?;
            candidates.push(HeadSpec {
                kind,
                calibrate: base.calibrate,
                multi_label: None,
            });
            values.push(serde_json::Value::Object(v));
        }
        Ok(SearchPlan {
            head,
            method: match method {
                RawSearchMethod::Grid => "grid",
                RawSearchMethod::Random => "random",
            },
            select,
            candidates,
            values,
        })
    }

    /// How the best candidate is chosen: on the validation split, or by `folds`-fold cross-validation.
    fn selection(&self, r: &RawSearch, section: &Range<usize>) -> Result<Selection, Diagnostic> {
        Ok(
            match (r.select.unwrap_or(RawSelect::Validation), &r.folds) {
                (RawSelect::Validation, Some(f)) => {
                    return Err(self
                        .error(f.span(), "`folds` applies to `select = \"cv\"`")
                        .with_hint(
                            "remove `folds`, or select by cross-validation with `select = \"cv\"`",
                        ));
                }
                (RawSelect::Validation, None) => Selection::Validation,
                (RawSelect::Cv, folds) => {
                    let k = folds.as_ref().map_or(5, |f| *f.get_ref());
                    if k < 2 {
                        return Err(self
                            .error(
                                folds.as_ref().map_or(section.clone(), Spanned::span),
                                "`folds` must be at least 2",
                            )
                            .with_hint("5 folds is the usual choice"));
                    }
                    Selection::CrossValidation { folds: k }
                }
            },
        )
    }

    /// Each searched key has values, or (random search only) one valid range.
    fn check_ranges(&self, dims: &Dims, method: RawSearchMethod) -> Result<(), Diagnostic> {
        for (key, span, range) in dims {
            match range {
                RawRange::Values(v) if v.is_empty() => {
                    return Err(self.error(span.clone(), format!("`{key}` lists no values")));
                }
                RawRange::Range(b) => {
                    if method == RawSearchMethod::Grid {
                        return Err(self
                            .error(span.clone(), format!("`{key}` is a range, and a grid needs values"))
                            .with_hint("list the values (`[0.01, 0.1, 1]`), or set `method = \"random\"` to draw from the range"));
                    }
                    let ok = match (b.uniform, b.log_uniform) {
                        (Some([lo, hi]), None) => lo.is_finite() && hi.is_finite() && lo < hi,
                        (None, Some([lo, hi])) => lo > 0.0 && hi.is_finite() && lo < hi,
                        _ => false,
                    };
                    if !ok {
                        return Err(self
                            .error(span.clone(), format!("`{key}` needs one range: `{{ uniform = [lo, hi] }}` or `{{ log_uniform = [lo, hi] }}` with lo < hi (and lo > 0 for log_uniform)"))
                            .with_hint("or list the values to try"));
                    }
                }
                RawRange::Values(_) => {}
            }
        }
        Ok(())
    }

    /// One candidate's head: the base head's settings with the point's values; `values` records them.
    #[allow(clippy::too_many_arguments)] // one point of the search space, located for errors
    fn candidate(
        &self,
        base: &HeadSpec,
        dims: &Dims,
        point: &[f64],
        layers: Option<&[usize]>,
        hidden: Option<&Hidden>,
        space_span: &Range<usize>,
        v: &mut serde_json::Map<String, serde_json::Value>,
    ) -> Result<HeadKind, Diagnostic> {
        let values: Vec<(&str, f64)> = dims
            .iter()
            .zip(point)
            .map(|((key, _, _), x)| (*key, *x))
            .collect();
        for (key, x) in &values {
            v.insert((*key).to_owned(), json!(x));
        }
        if let Some(l) = layers {
            v.insert("hidden".to_owned(), json!(l));
        }
        let at = |name: &str| {
            dims.iter()
                .find(|(k, _, _)| *k == name)
                .map(|(_, s, _)| s.clone())
                .or(hidden.map(|(s, _)| s.clone()))
                .unwrap_or(space_span.clone())
        };
        let searched = base
            .kind
            .head()
            .searched(&values, layers)
            .expect("only searchable heads have a [search.<kind>] table");
        searched.map_err(|e| {
            let span = match &e {
                HeadError::InvalidParameter { name, .. } => at(name),
                _ => space_span.clone(),
            };
            self.error(span, e.to_string())
        })
    }
}

/// Each candidate: one value per searched key (and a hidden-layer list for the MLP).
type Point = (Vec<f64>, Option<Vec<usize>>);

/// Searched keys with their spans and values or ranges.
type Dims = [(&'static str, Range<usize>, RawRange)];

/// Hidden-layer lists to try, with their span.
type Hidden = (Range<usize>, Vec<Vec<usize>>);

/// Every combination of the listed values (and hidden-layer lists).
fn grid_points(dims: &Dims, hidden: Option<&Hidden>) -> Vec<Point> {
    let mut points: Vec<Point> = vec![(Vec::new(), None)];
    for (_, _, range) in dims {
        let RawRange::Values(values) = range else {
            unreachable!("checked above")
        };
        points = points
            .into_iter()
            .flat_map(|(p, h)| {
                values.iter().map(move |v| {
                    let mut p = p.clone();
                    p.push(*v);
                    (p, h.clone())
                })
            })
            .collect();
    }
    if let Some((_, layers)) = &hidden {
        points = points
            .into_iter()
            .flat_map(|(p, _)| layers.iter().map(move |l| (p.clone(), Some(l.clone()))))
            .collect();
    }
    points
}

/// `trials` seeded draws: a listed value uniformly, or a value from a (log-)uniform range.
fn random_points(dims: &Dims, hidden: Option<&Hidden>, trials: usize, seed: u64) -> Vec<Point> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(graft_stdx::derive_seed(seed, "search"));
    (0..trials)
        .map(|_| {
            let p = dims
                .iter()
                .map(|(_, _, range)| match range {
                    RawRange::Values(v) => v[rng.random_range(0..v.len())],
                    RawRange::Range(b) => match (b.uniform, b.log_uniform) {
                        (Some([lo, hi]), _) => rng.random_range(lo..hi),
                        (_, Some([lo, hi])) => rng.random_range(lo.ln()..hi.ln()).exp(),
                        _ => unreachable!("checked above"),
                    },
                })
                .collect();
            let h = hidden
                .as_ref()
                .map(|(_, l)| l[rng.random_range(0..l.len())].clone());
            (p, h)
        })
        .collect()
}
