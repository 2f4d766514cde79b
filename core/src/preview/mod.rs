//! Load-scoped previews: the first rows of one source that match a list of conditions, and how
//! many rows match in all.
//!
//! - [`condition`]: the conditions users send and the operands each operator needs;
//! - [`postgres`]: previews answered by the source database with bound parameters;
//! - [`files`]: CSV and Parquet previews answered by DataFusion over `object_store`;
//! - [`frame`]: conditions as DataFusion predicates, and batches as rows of text.

pub mod condition;
pub mod files;
pub mod frame;
pub mod postgres;

use serde::Serialize;
use thiserror::Error;

pub use condition::{Condition, Op, Operand};
pub use frame::{predicate, text_rows};

/// Most rows a preview may return.
pub const MAX_PREVIEW_ROWS: usize = 1000;
/// Rows a preview returns when the request names no limit.
pub const DEFAULT_PREVIEW_ROWS: usize = 200;
/// Most values an `in` condition may list.
pub const MAX_IN_VALUES: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PreviewColumn {
    pub name: String,
    /// The Arrow type the column has everywhere else in Kalla (e.g. `Int64`, `Decimal128(12, 2)`).
    pub data_type: String,
    pub nullable: bool,
}

impl PreviewColumn {
    /// The column as DataFusion sees it.
    pub fn from_field(field: &datafusion::arrow::datatypes::Field) -> Self {
        Self {
            name: field.name().clone(),
            data_type: field.data_type().to_string(),
            nullable: field.is_nullable(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Preview {
    pub columns: Vec<PreviewColumn>,
    /// Values in their text form; `None` is SQL NULL.
    pub rows: Vec<Vec<Option<String>>>,
    /// Rows matching the conditions; a lower bound when `total_rows_exact` is false.
    pub total_rows: u64,
    pub total_rows_exact: bool,
}

#[derive(Debug, Error)]
pub enum PreviewError {
    #[error("unknown column {column:?}; the columns are: {}", available.join(", "))]
    UnknownColumn { column: String, available: Vec<String> },
    #[error("condition on {column:?}: {reason}")]
    InvalidCondition { column: String, reason: String },
    #[error("a value does not fit its column: {0}")]
    InvalidValue(String),
    #[error("limit must be between 1 and {MAX_PREVIEW_ROWS}, got {0}")]
    InvalidLimit(usize),
    #[error("the source cannot be reached: {0}")]
    Unreachable(String),
    #[error("{0}")]
    NotAllowed(String),
    #[error("the source's table is gone: {0}")]
    Gone(String),
    #[error("the preview failed: {0}")]
    Internal(String),
}

impl PreviewError {
    /// Whether the request itself was wrong (as opposed to the source or Kalla failing).
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            Self::UnknownColumn { .. }
                | Self::InvalidCondition { .. }
                | Self::InvalidValue(_)
                | Self::InvalidLimit(_)
                | Self::NotAllowed(_)
        )
    }
}

/// The row limit a request asks for, checked against [`MAX_PREVIEW_ROWS`].
pub fn checked_limit(requested: Option<usize>) -> Result<usize, PreviewError> {
    match requested {
        None => Ok(DEFAULT_PREVIEW_ROWS),
        Some(limit) if (1..=MAX_PREVIEW_ROWS).contains(&limit) => Ok(limit),
        Some(limit) => Err(PreviewError::InvalidLimit(limit)),
    }
}

/// Finds `name` among `columns` (exact, case-sensitive match) or says which columns exist.
fn find_column<'a, T>(
    columns: &'a [T],
    name: &str,
    name_of: impl Fn(&T) -> &str,
) -> Result<&'a T, PreviewError> {
    columns
        .iter()
        .find(|c| name_of(c) == name)
        .ok_or_else(|| PreviewError::UnknownColumn {
            column: name.to_string(),
            available: columns.iter().map(|c| name_of(c).to_string()).collect(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_default_and_are_bounded() {
        assert_eq!(checked_limit(None).unwrap(), DEFAULT_PREVIEW_ROWS);
        assert_eq!(checked_limit(Some(1000)).unwrap(), 1000);
        assert!(matches!(
            checked_limit(Some(1001)),
            Err(PreviewError::InvalidLimit(1001))
        ));
        assert!(matches!(
            checked_limit(Some(0)),
            Err(PreviewError::InvalidLimit(0))
        ));
    }

    #[test]
    fn unknown_columns_list_the_real_ones() {
        let columns = ["id", "amount"];
        let error = find_column(&columns, "ID", |c| c).unwrap_err();
        assert_eq!(
            error.to_string(),
            "unknown column \"ID\"; the columns are: id, amount"
        );
        assert!(error.is_user_error());
    }
}
