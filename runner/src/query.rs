//! `/api/query`'s SQL: one statement over the tables the [`Catalog`] resolves, its first rows
//! returned as JSON (text, or typed on request).

use std::time::Instant;

use datafusion::prelude::DataFrame;
use futures::TryStreamExt;
use kalla_core::json_rows::{ValueStyle, json_rows};
use kalla_core::preview::PreviewColumn;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::catalog::{Catalog, CatalogError, CatalogTable, TableRead};
use crate::output_reads;

/// Rows a query returns when the request names no limit.
pub const DEFAULT_QUERY_ROWS: usize = 1000;
/// Most rows `/api/query` returns; larger results are for jobs.
pub const MAX_QUERY_ROWS: usize = 100_000;

#[derive(Debug, Error)]
pub enum QueryError {
    #[error("limit must be between 1 and {MAX_QUERY_ROWS}, got {0}")]
    InvalidLimit(usize),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    pub sql: String,
    pub limit: Option<usize>,
    /// Read uncached connection tables straight from their database instead of caching them first.
    #[serde(default)]
    pub live: bool,
    /// Numbers and booleans as JSON's own, dates and timestamps as ISO 8601, 64-bit integers beyond
    /// ±2^53 and decimals as exact strings (README, "Typed results"); every value as text if false.
    #[serde(default)]
    pub typed: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QueryResult {
    pub columns: Vec<PreviewColumn>,
    /// Values in their text form, or typed if asked; `null` is SQL NULL.
    #[schema(value_type = Vec<Vec<Object>>)]
    pub rows: Vec<Vec<serde_json::Value>>,
    pub row_count: usize,
    /// More rows matched than `limit`; only the first `limit` are here.
    pub truncated: bool,
    pub duration_ms: u64,
    /// How each named table was read.
    pub tables: Vec<TableRead>,
}

/// Runs `/api/query`'s statements.
#[derive(Clone)]
pub struct Queries {
    catalog: Catalog,
}

impl Queries {
    pub fn new(catalog: Catalog) -> Self {
        Self { catalog }
    }

    /// `sql` planned on the cluster, its tables resolved as for [`Queries::run`], and how each
    /// is read.
    pub async fn plan(&self, sql: &str) -> Result<(DataFrame, Vec<TableRead>), QueryError> {
        Ok(self.catalog.plan(sql, false).await?)
    }

    /// Every table the catalog lists (see [`Catalog::tables`]).
    pub async fn tables(&self) -> Result<Vec<CatalogTable>, QueryError> {
        Ok(self.catalog.tables().await?)
    }

    pub async fn run(&self, request: &QueryRequest) -> Result<QueryResult, QueryError> {
        let started = Instant::now();
        let limit = match request.limit {
            None => DEFAULT_QUERY_ROWS,
            Some(limit) if (1..=MAX_QUERY_ROWS).contains(&limit) => limit,
            Some(limit) => return Err(QueryError::InvalidLimit(limit)),
        };
        let (frame, tables) = self.catalog.plan(&request.sql, request.live).await?;
        let schema = frame.schema().as_arrow().clone();
        let failed = |e: &dyn std::fmt::Display| CatalogError::Failed(e.to_string());
        let frame = frame
            .limit(0, Some(limit + 1))
            .map_err(|e| CatalogError::InvalidSql(e.to_string()))?;
        let batches: Vec<_> = output_reads::execute(frame)
            .await
            .map_err(|e| failed(&e))?
            .try_collect()
            .await
            .map_err(|e| failed(&e))?;
        let mut rows = json_rows(&batches, ValueStyle::typed(request.typed)).map_err(|e| failed(&e))?;
        let truncated = rows.len() > limit;
        rows.truncate(limit);
        Ok(QueryResult {
            columns: schema
                .fields()
                .iter()
                .map(|f| PreviewColumn::from_field(f))
                .collect(),
            row_count: rows.len(),
            rows,
            truncated,
            duration_ms: started.elapsed().as_millis() as u64,
            tables,
        })
    }
}
