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
        let mut rows = SparseTfidf::new(self.idf.len(), texts.len());
        let mut counts: Vec<(usize, f32)> = Vec::new();
        for text in texts {
            counts.clear();
            for t in tokens(text.as_ref()) {
                if let Some(&j) = self.vocabulary.get(&t) {
                    counts.push((j, 1.0));
                }
            }
            rows.push_row(&mut counts, &self.idf);
        }
        rows
    }
}

impl SparseTfidf {
    fn new(columns: usize, rows: usize) -> SparseTfidf {
        let mut indptr = Vec::with_capacity(rows + 1);
        indptr.push(0);
        SparseTfidf {
            indptr,
            indices: Vec::new(),
            values: Vec::new(),
            columns,
        }
    }

    /// Appends a row from its (column, 1.0) term occurrences: counted, weighted by idf, L2-normalised.
    fn push_row(&mut self, occurrences: &mut Vec<(usize, f32)>, idf: &[f32]) {
        occurrences.sort_unstable_by_key(|&(j, _)| j);
        occurrences.dedup_by(|next, kept| {
            let same = next.0 == kept.0;
            if same {
                kept.1 += 1.0;
            }
            same
        });
        for (j, v) in occurrences.iter_mut() {
            *v *= idf[*j];
        }
        let norm = occurrences.iter().map(|(_, v)| v * v).sum::<f32>().sqrt();
        for &(j, v) in occurrences.iter() {
            self.indices.push(j);
            self.values.push(if norm > 0.0 { v / norm } else { v });
        }
        self.indptr.push(self.indices.len());
    }
}

/// Texts tokenized once (as [`Tfidf`] tokenizes them), for many TF-IDF fits on subsets of the same rows —
/// the learning curve draws dozens — without tokenizing a text again.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizedTexts {
    /// Every distinct token, sorted, so that a token's id orders as its text does.
    terms: Vec<String>,
    /// Each text's token ids, in order.
    docs: Vec<Vec<u32>>,
}

/// A TF-IDF vocabulary over [`TokenizedTexts`] ids: the same terms and weights [`Tfidf::fit`] learns.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenTfidf {
    /// Column of each token id (`u32::MAX`: not kept).
    column_of: Vec<u32>,
    idf: Vec<f32>,
}

impl TokenizedTexts {
    /// Tokenizes every text once.
    ///
    /// ```
    /// use graft_ingest::{Tfidf, TokenizedTexts};
    ///
    /// let docs = ["a good film", "a bad film", "good acting"];
    /// let tokenized = TokenizedTexts::new(&docs);
    /// let vocabulary = tokenized.fit(&[0, 1, 2], 100);
    /// assert_eq!(
    ///     tokenized.transform_sparse(&vocabulary, &[0, 1, 2]),
    ///     Tfidf::fit(&docs, 100).transform_sparse(&docs)
    /// );
    /// ```
    pub fn new<S: AsRef<str>>(texts: &[S]) -> TokenizedTexts {
        let mut ids: HashMap<String, u32> = HashMap::new();
        let mut docs: Vec<Vec<u32>> = texts
            .iter()
            .map(|text| {
                tokens(text.as_ref())
                    .map(|t| {
                        let next = ids.len() as u32;
                        *ids.entry(t).or_insert(next)
                    })
                    .collect()
            })
            .collect();
        let mut terms: Vec<(String, u32)> = ids.into_iter().collect();
        terms.sort_unstable();
        let mut renumber = vec![0u32; terms.len()];
        for (sorted, (_, first_seen)) in terms.iter().enumerate() {
            renumber[*first_seen as usize] = sorted as u32;
        }
        for doc in &mut docs {
            doc.iter_mut().for_each(|id| *id = renumber[*id as usize]);
        }
        TokenizedTexts {
            terms: terms.into_iter().map(|(t, _)| t).collect(),
            docs,
        }
    }

    /// [`Tfidf::fit`] on the texts of `rows`.
    pub fn fit(&self, rows: &[usize], max_features: usize) -> TokenTfidf {
        let mut count = vec![0usize; self.terms.len()];
        let mut df = vec![0usize; self.terms.len()];
        let mut last_doc = vec![usize::MAX; self.terms.len()];
        for &r in rows {
            for &id in &self.docs[r] {
                let id = id as usize;
                count[id] += 1;
                if last_doc[id] != r {
                    last_doc[id] = r;
                    df[id] += 1;
                }
            }
        }
        // Highest total count first, ties alphabetical (= by id); then the kept terms in alphabetical order.
        let mut kept: Vec<usize> = (0..self.terms.len()).filter(|&id| count[id] > 0).collect();
        kept.sort_by(|&a, &b| count[b].cmp(&count[a]).then(a.cmp(&b)));
        kept.truncate(max_features);
        kept.sort_unstable();
        let n = rows.len() as f64;
        let mut column_of = vec![u32::MAX; self.terms.len()];
        let idf = kept
            .iter()
            .enumerate()
            .map(|(column, &id)| {
                column_of[id] = column as u32;
                (((1.0 + n) / (1.0 + df[id] as f64)).ln() + 1.0) as f32
            })
            .collect();
        TokenTfidf { column_of, idf }
    }

    /// The TF-IDF rows of the texts `rows` under `vocabulary`, as [`Tfidf::transform_sparse`] gives them.
    pub fn transform_sparse(&self, vocabulary: &TokenTfidf, rows: &[usize]) -> SparseTfidf {
        let mut out = SparseTfidf::new(vocabulary.idf.len(), rows.len());
        let mut occurrences: Vec<(usize, f32)> = Vec::new();
        for &r in rows {
            occurrences.clear();
            occurrences.extend(self.docs[r].iter().filter_map(|&id| {
                let column = vocabulary.column_of[id as usize];
                (column != u32::MAX).then_some((column as usize, 1.0))
            }));
            out.push_row(&mut occurrences, &vocabulary.idf);
        }
        out
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
    fn tokenized_fits_equal_fits_on_the_texts() {
        let table = crate::read_table(&crate::fixture("tiny-sentiment.csv")).unwrap();
        let texts = crate::text_classification(&table, "text", "label")
            .unwrap()
            .texts;
        let tokenized = TokenizedTexts::new(&texts);
        for (rows, max_features) in [
            ((0..40).collect::<Vec<usize>>(), 1000),
            ((0..40).step_by(3).collect(), 7),
            (vec![5, 1, 30, 22, 9], 4),
        ] {
            let chosen: Vec<&str> = rows.iter().map(|&r| texts[r].as_str()).collect();
            let direct = Tfidf::fit(&chosen, max_features);
            let vocabulary = tokenized.fit(&rows, max_features);
            assert_eq!(
                tokenized.transform_sparse(&vocabulary, &rows),
                direct.transform_sparse(&chosen)
            );
            let all: Vec<usize> = (0..texts.len()).collect();
            assert_eq!(
                tokenized.transform_sparse(&vocabulary, &all),
                direct.transform_sparse(&texts)
            );
        }
    }

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
