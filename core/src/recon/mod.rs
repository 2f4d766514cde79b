//! Reconciliation: recipes and their validation ([`recipe`]), the plan of each pass that
//! classifies the rows of two sources into matched, mismatched, left only, right only,
//! duplicates and exceptions ([`plan`]) with the operator that pairs or groups their rows by key
//! ([`pair`], [`pairs_table`], [`spill`]) and the aggregates groups are compared by ([`group`]),
//! the parameters a run puts in a recipe's filters and source locations ([`params`]), a recipe
//! tried on samples in memory ([`dry_run`]), and the `tolerance_match` function every session
//! registers ([`udf`]).

pub mod dry_run;
pub mod group;
pub mod nearest;
pub mod pair;
pub mod pairs_table;
pub mod params;
pub mod plan;
pub mod recipe;
pub mod spill;
pub mod udf;

#[cfg(test)]
mod properties;

use thiserror::Error;

pub use group::Aggregate;
pub use params::{Param, ParamError, ParamType, ParamValues};
pub use recipe::{Cardinality, CheckedPass, CheckedRecipe, Nearest, Pass, Recipe, Rule, Side, Tolerance};

#[derive(Debug, Error)]
pub enum ReconError {
    #[error("invalid recipe: {0}")]
    InvalidRecipe(String),
}
