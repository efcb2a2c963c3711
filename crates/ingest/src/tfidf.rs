//! A TF-IDF bag of words, as scikit-learn's `TfidfVectorizer` defaults: lower-cased tokens of two or more
//! word characters, smoothed idf `ln((1 + n) / (1 + df)) + 1`, raw term counts, rows L2-normalised — the
//! from-scratch text baseline that transfer learning is compared with.

use std::collections::HashMap;

use ndarray::Array2;

/// A fitted vocabulary with its idf weights.
#[derive(Debug, Clone, PartialEq)]
pub struct Tfidf {
    vocabulary: HashMap<String, usize>,
    idf: Vec<f32>,
}

/// Lower-cased tokens of at least two alphanumeric (or `_`) characters, as scikit-learn's
/// `(?u)\b\w\w+\b`.
fn tokens(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|t| t.chars().count() >= 2)
        .map(str::to_lowercase)
}

impl Tfidf {
    /// Learns the vocabulary from `texts`, keeping the `max_features` terms with the highest total count
    /// (ties: alphabetical), as scikit-learn's `max_features`.
    ///
    /// ```
    /// let docs = ["a good film", "a bad film", "good acting"];
    /// let tfidf = graft_ingest::Tfidf::fit(&docs, 100);
    /// let x = tfidf.transform(&docs);
    /// assert_eq!(x.dim(), (3, 4)); // acting, bad, film, good ("a" is too short)
    /// ```
    pub fn fit<S: AsRef<str>>(texts: &[S], max_features: usize) -> Tfidf {
        let mut count: HashMap<String, usize> = HashMap::new();
        let mut df: HashMap<String, usize> = HashMap::new();
        for text in texts {
            let mut seen: Vec<String> = Vec::new();
            for t in tokens(text.as_ref()) {
                *count.entry(t.clone()).or_default() += 1;
                seen.push(t);
            }
            seen.sort_unstable();
            seen.dedup();
            for t in seen {
                *df.entry(t).or_default() += 1;
            }
        }
        let mut terms: Vec<(String, usize)> = count.into_iter().collect();
        terms.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        terms.truncate(max_features);
        terms.sort_by(|a, b| a.0.cmp(&b.0));
        let n = texts.len() as f64;
        let idf = terms
            .iter()
            .map(|(t, _)| (((1.0 + n) / (1.0 + df[t] as f64)).ln() + 1.0) as f32)
            .collect();
        let vocabulary = terms
            .into_iter()
            .enumerate()
            .map(|(i, (t, _))| (t, i))
            .collect();
        Tfidf { vocabulary, idf }
    }

    /// Terms kept.
    pub fn len(&self) -> usize {
        self.idf.len()
    }

    /// Whether no term was kept.
    pub fn is_empty(&self) -> bool {
        self.idf.is_empty()
    }

    /// TF-IDF rows (texts × terms), each scaled to unit length (an all-zero row stays zero).
    pub fn transform<S: AsRef<str>>(&self, texts: &[S]) -> Array2<f32> {
        let rows = self.transform_sparse(texts);
        let mut x = Array2::<f32>::zeros((texts.len(), self.idf.len()));
        for (i, mut row) in x.rows_mut().into_iter().enumerate() {
            let range = rows.indptr[i]..rows.indptr[i + 1];
            for (&j, &v) in rows.indices[range.clone()].iter().zip(&rows.values[range]) {
                row[j] = v;
            }
        }
        x
    }

    /// The rows of [`Tfidf::transform`] in compressed sparse row form: a short text holds a few of the
    /// terms, and a model trained on the non-zeros alone does a fraction of the work.
    pub fn transform_sparse<S: AsRef<str>>(&self, texts: &[S]) -> SparseTfidf {
        let mut rows = SparseTfidf {
            indptr: Vec::with_capacity(texts.len() + 1),
            indices: Vec::new(),
            values: Vec::new(),
            columns: self.idf.len(),
        };
        rows.indptr.push(0);
        let mut counts: Vec<(usize, f32)> = Vec::new();
        for text in texts {
            counts.clear();
            for t in tokens(text.as_ref()) {
                if let Some(&j) = self.vocabulary.get(&t) {
                    counts.push((j, 1.0));
                }
            }
            counts.sort_unstable_by_key(|&(j, _)| j);
            counts.dedup_by(|next, kept| {
                let same = next.0 == kept.0;
                if same {
                    kept.1 += 1.0;
                }
                same
            });
            for (j, v) in &mut counts {
                *v *= self.idf[*j];
            }
            let norm = counts.iter().map(|(_, v)| v * v).sum::<f32>().sqrt();
            for &(j, v) in &counts {
                rows.indices.push(j);
                rows.values.push(if norm > 0.0 { v / norm } else { v });
            }
            rows.indptr.push(rows.indices.len());
        }
        rows
    }
}

/// TF-IDF rows in compressed sparse row form: row `i` holds `values[indptr[i]..indptr[i + 1]]` at the
/// (increasing) term indices `indices[…]`, below `columns`.
#[derive(Debug, Clone, PartialEq)]
pub struct SparseTfidf {
    /// Where each row starts (one more entry than rows).
    pub indptr: Vec<usize>,
    /// Term index of each value.
    pub indices: Vec<usize>,
    /// The values.
    pub values: Vec<f32>,
    /// Terms (columns).
    pub columns: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference: scikit-learn 1.9.1 `TfidfVectorizer().fit_transform(docs)` on these documents
    /// (`get_feature_names_out()` = and, bad, film, good, great; values printed with repr).
    #[test]
    fn matches_scikit_learn_defaults() {
        let docs = ["A good film, a GOOD film.", "a bad film", "great and good"];
        let tfidf = Tfidf::fit(&docs, 1000);
        assert_eq!(tfidf.len(), 5);
        let x = tfidf.transform(&docs);
        let expected = [
            [
                0.0,
                0.0,
                std::f64::consts::FRAC_1_SQRT_2,
                std::f64::consts::FRAC_1_SQRT_2,
                0.0,
            ],
            [0.0, 0.7959605415681652, 0.6053485081062916, 0.0, 0.0],
            [
                0.6227660078332259,
                0.0,
                0.0,
                0.4736296010332684,
                0.6227660078332259,
            ],
        ];
        for (row, want) in x.rows().into_iter().zip(expected) {
            for (a, b) in row.iter().zip(want) {
                assert!((f64::from(*a) - b).abs() < 1e-6, "{row} vs {want:?}");
            }
        }
        // max_features keeps the most frequent terms: film (3) and good (3).
        assert_eq!(Tfidf::fit(&docs, 2).len(), 2);
        assert_eq!(Tfidf::fit(&docs, 2).transform(&["bad"]).sum(), 0.0);
    }
}
