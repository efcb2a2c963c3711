//! `[data]` and `[split.*]`: where rows come from, their columns and how they are split.

use std::ops::Range;

use crate::spanned::Spanned;
use graft_assets::Registry;

use crate::Diagnostic;
use crate::schema::RawData;

use super::Checker;
use crate::plan::*;

impl Checker<'_> {
    pub(super) fn check_data(
        &self,
        data: Spanned<RawData>,
        spans: &mut Spans,
    ) -> Result<DataPlan, Diagnostic> {
        let section = data.span();
        let data = data.into_inner();
        spans.text_column = data.text_column.as_ref().map(Spanned::span);
        spans.label_column = data.label_column.as_ref().map(Spanned::span);
        spans.split_column = data.split_column.as_ref().map(Spanned::span);
        spans.group_column = data.group_column.as_ref().map(Spanned::span);
        self.check_key_combinations(&data)?;
        let (source, default_columns) = self.data_source(&data, section.clone())?;
        if source.is_images()
            && let Some(c) = data.text_column.as_ref().or(data.label_column.as_ref())
        {
            return Err(self
                .error(c.span(), "image data has no columns to name")
                .with_hint("labels come from the data set or from the class sub-folder names"));
        }
        let column = |value: Option<Spanned<String>>, key: &str, default: Option<String>| {
            value.map(Spanned::into_inner).or(default).ok_or_else(|| {
                self.error(section.clone(), format!("`[data]` needs `{key}`"))
                    .with_hint(format!(
                        "name the column of your file that holds the {}",
                        key.trim_end_matches("_column")
                    ))
            })
        };
        let (text_default, label_default) = default_columns.unzip();
        let text_column = column(data.text_column, "text_column", text_default)?;
        let label_column = column(data.label_column, "label_column", label_default)?;
        let split_column = data.split_column.map(Spanned::into_inner);
        let label_separator = match data.label_separator {
            Some(sep) if sep.get_ref().is_empty() => {
                return Err(self
                    .error(sep.span(), "`label_separator` is empty")
                    .with_hint("give the character that joins a row's labels, e.g. \"|\""));
            }
            Some(sep) if source.is_images() => {
                return Err(self
                    .error(
                        sep.span(),
                        "image folders and registered image data sets are single-label",
                    )
                    .with_hint("remove `label_separator`"));
            }
            other => other.map(Spanned::into_inner),
        };
        let sample = match data.sample {
            Some(s) if *s.get_ref() < 2 => {
                return Err(self
                    .error(s.span(), "`sample` must be at least 2")
                    .with_hint("leave it out to use every row"));
            }
            other => other.map(Spanned::into_inner),
        };
        let min_class_rows = match &data.min_class_rows {
            Some(m) if *m.get_ref() < 2 => {
                return Err(self
                    .error(m.span(), "`min_class_rows` must be at least 2")
                    .with_hint("a class needs a training and a test row at the least; leave it out to keep every class"));
            }
            Some(m) if label_separator.is_some() => {
                return Err(self
                    .error(m.span(), "`min_class_rows` applies to single-label data")
                    .with_hint("remove it, or `label_separator`"));
            }
            other => other.as_ref().map(|m| *m.get_ref()),
        };
        Ok(DataPlan {
            source,
            text_column,
            label_column,
            sample,
            min_class_rows,
            split_column,
            label_separator,
            group_column: data.group_column.map(Spanned::into_inner),
        })
    }

    /// Keys that exclude or need each other in `[data]`.
    fn check_key_combinations(&self, data: &RawData) -> Result<(), Diagnostic> {
        if let Some(c) = &data.group_column
            && (data.dataset.is_some() || data.images.is_some())
        {
            return Err(self
                .error(
                    c.span(),
                    "`group_column` applies to your own table or features",
                )
                .with_hint("registered data sets and image folders have no group column"));
        }
        let given: Vec<&Spanned<String>> =
            [&data.dataset, &data.path, &data.images, &data.features]
                .into_iter()
                .flatten()
                .collect();
        if given.len() > 1 {
            return Err(self
                .error(given[1].span(), "`[data]` gives more than one of `dataset`, `path`, `images` and `features`")
                .with_hint("keep one: `dataset` names a registered data set, `path` a table of your own, `images` a folder of class sub-folders, `features` embeddings computed elsewhere"));
        }
        if data.features.is_none()
            && let Some(key) = data.labels.as_ref().or(data.embedding_column.as_ref())
        {
            return Err(self
                .error(key.span(), "this key applies to `features` only")
                .with_hint("`labels` and `embedding_column` describe a features file given with `features = \"x.parquet\"`"));
        }
        if let Some(c) = &data.split_column
            && (data.dataset.is_some() || data.images.is_some())
        {
            return Err(self
                .error(c.span(), "`split_column` applies to your own table or features")
                .with_hint("registered data sets and image folders have no split column; use `[split.predefined]` for a registered data set's official split"));
        }
        Ok(())
    }

    /// Where the rows come from (one of `dataset`, `path`, `images`, `features`), with a registered data
    /// set's default text and label columns.
    fn data_source(
        &self,
        data: &RawData,
        section: Range<usize>,
    ) -> Result<(DataSource, Option<(String, String)>), Diagnostic> {
        let registry = Registry::builtin();
        Ok(match (&data.dataset, &data.path, &data.images) {
            (None, None, None) if data.features.is_some() => self.check_given_features(data)?,
            (None, None, None) => {
                return Err(self
                    .error(section, "`[data]` needs `dataset`, `path`, `images` or `features`")
                    .with_hint(format!(
                        "`dataset = \"mr\"` uses a registered data set ({}); `path = \"my.csv\"` reads your own CSV/Parquet file; `images = \"photos/\"` a folder of class sub-folders; `features = \"x.parquet\"` embeddings computed elsewhere",
                        registry.dataset_names().join(", ")
                    )));
            }
            (Some(name), _, _) => {
                if registry.image_datasets.contains_key(name.get_ref()) {
                    (
                        DataSource::ImageRegistry(name.get_ref().clone()),
                        Some((String::new(), String::new())),
                    )
                } else {
                    let entry = registry.datasets.get(name.get_ref()).ok_or_else(|| {
                        self.unknown(name, "data set", "data sets", &registry.dataset_names())
                    })?;
                    (
                        DataSource::Registry(name.get_ref().clone()),
                        Some((entry.text_column.clone(), entry.label_column.clone())),
                    )
                }
            }
            (None, Some(path), _) => {
                let resolved = self.existing_file(path, "data file")?;
                (DataSource::File(resolved), None)
            }
            (None, None, Some(folder)) => {
                let resolved = self.resolve(folder.get_ref());
                if !resolved.is_dir() {
                    return Err(self
                        .error(
                            folder.span(),
                            format!("image folder not found: {}", resolved.display()),
                        )
                        .with_hint(
                            "relative paths are resolved from the folder of the pipeline file",
                        ));
                }
                (
                    DataSource::ImageFolder(resolved),
                    Some((String::new(), String::new())),
                )
            }
        })
    }

    /// `features = "…"`: a Parquet table or a `.npy` matrix (then with a `labels` table), no text column.
    fn check_given_features(
        &self,
        data: &RawData,
    ) -> Result<(DataSource, Option<(String, String)>), Diagnostic> {
        let features = data.features.as_ref().expect("checked");
        let resolved = self.existing_file(features, "features file")?;
        let ext = resolved
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        if !["parquet", "pq", "npy"].contains(&ext.as_str()) {
            return Err(self
                .error(features.span(), format!("cannot read features from {}", resolved.display()))
                .with_hint("give a .parquet table with one list column of numbers per row (`embedding_column`, default \"embedding\"), or a .npy float matrix with `labels = \"labels.csv\"`"));
        }
        if let Some(t) = &data.text_column {
            return Err(self
                .error(t.span(), "features need no text column")
                .with_hint("remove `text_column`; the rows are already feature vectors"));
        }
        let labels = match &data.labels {
            Some(l) => Some(self.existing_file(l, "labels file")?),
            None if ext == "npy" => {
                return Err(self
                    .error(features.span(), "a .npy file holds only the feature matrix; the labels must come from elsewhere")
                    .with_hint("add `labels = \"labels.csv\"`: a table with the label column (and split column), one row per matrix row, in the same order"));
            }
            None => None,
        };
        Ok((
            DataSource::Features {
                path: resolved,
                labels,
                embedding_column: data
                    .embedding_column
                    .as_ref()
                    .map_or_else(|| "embedding".to_owned(), |c| c.get_ref().clone()),
            },
            Some((String::new(), "label".to_owned())),
        ))
    }
}
