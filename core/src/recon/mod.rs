//! Reconciliation: recipes and their validation ([`recipe`]), the plan that classifies every
//! row of two sources into matched, mismatched, left only, right only and duplicates ([`plan`])
//! with the operator that pairs their rows by key ([`pair`], [`pairs_table`]), and the
//! `tolerance_match` function every session registers ([`udf`]).

pub mod pair;
pub mod pairs_table;
pub mod plan;
pub mod recipe;
pub mod spill;
pub mod udf;

use thiserror::Error;

pub use recipe::{CheckedRecipe, Recipe, Rule, Side, Tolerance};

#[derive(Debug, Error)]
pub enum ReconError {
    #[error("invalid recipe: {0}")]
    InvalidRecipe(String),
}
