//! A value of the pipeline file with its byte range: `toml::Spanned`, which every check reads for its
//! error position, plus the JSON Schema of the value alone (so the schema types are the serde types).

use std::ops::Range;

use serde::Deserialize;

/// `T` and where it was written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct Spanned<T>(toml::Spanned<T>);

impl<T> Spanned<T> {
    /// Byte range of the value in the file.
    pub fn span(&self) -> Range<usize> {
        self.0.span()
    }

    /// The value.
    pub fn get_ref(&self) -> &T {
        self.0.get_ref()
    }

    /// The value, owned.
    pub fn into_inner(self) -> T {
        self.0.into_inner()
    }

    /// A value at a position, for tests and defaults.
    pub fn new(range: Range<usize>, value: T) -> Spanned<T> {
        Spanned(toml::Spanned::new(range, value))
    }
}

impl<T: schemars::JsonSchema> schemars::JsonSchema for Spanned<T> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }

    fn schema_id() -> std::borrow::Cow<'static, str> {
        T::schema_id()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }

    fn inline_schema() -> bool {
        T::inline_schema()
    }
}
