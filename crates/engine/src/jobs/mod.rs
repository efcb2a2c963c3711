//! Batch jobs besides `run`: `extract` (and `merge` of its shards), `predict`, `export`, `compare`. Each
//! reads what a run or an earlier job wrote through the typed records of `graft-report`.

pub(crate) mod compare;
pub(crate) mod export;
pub(crate) mod extract;
pub(crate) mod predict;
