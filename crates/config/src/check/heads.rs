//! `[head.*]`: each head table is checked by its kind's module in graft-headkit; this file lends it the
//! checker's located errors.

use std::cell::RefCell;
use std::ops::Range;

use crate::Diagnostic;
use crate::heads::HeadSpec;
use crate::plan::Spans;
use crate::schema::RawHeads;
use crate::spanned::Spanned;

use super::Checker;

impl graft_headkit::Locate for Checker<'_> {
    fn error(&self, span: Range<usize>, message: String) -> Diagnostic {
        Checker::error(self, span, message)
    }
}

impl Checker<'_> {
    /// Checks every `[head.*]` table; an invalid hyperparameter points at its own line. Heads that draw random
    /// numbers (the MLP) are seeded with the pipeline's seed.
    pub(super) fn check_heads(
        &self,
        raw: Spanned<RawHeads>,
        seed: u64,
        multi_label: bool,
        spans: &mut Spans,
    ) -> Result<Vec<HeadSpec>, Diagnostic> {
        let ctx = graft_headkit::CheckContext {
            locate: self,
            seed,
            multi_label,
            key_spans: RefCell::new(Vec::new()),
        };
        let heads = graft_headkit::check_heads(raw, &ctx)?;
        spans.head_keys = ctx.key_spans.into_inner();
        Ok(heads)
    }
}
