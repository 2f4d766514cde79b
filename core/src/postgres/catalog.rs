//! Discovery of a relation's kind, size and columns from the Postgres catalog.

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use thiserror::Error;

use super::types::PgType;
use crate::ident::{Ident, QualifiedName};

/// Domains and arrays nest; real schemas never come near this depth.
const MAX_TYPE_DEPTH: usize = 8;

#[derive(Debug, Error)]
pub enum CatalogError {
    #[error("relation {0} does not exist (or this user cannot see it)")]
    NotFound(QualifiedName),
    #[error("{name} is a {kind}, not a table, view or materialized view")]
    NotReadable { name: QualifiedName, kind: String },
    #[error("relation {0} has no columns")]
    NoColumns(QualifiedName),
    #[error("could not read the catalog of {table}: {source}")]
    Database {
        table: QualifiedName,
        #[source]
        source: sqlx::Error,
    },
}

/// How rows of a relation can be split across partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RelationKind {
    /// Heap storage (tables, materialized views): splittable by ctid block ranges.
    Heap,
    /// Views, foreign tables and partitioned parents: read as one partition.
    Other,
}

/// Whether and how a column's comparisons can be evaluated by Postgres with DataFusion's semantics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FilterSupport {
    /// Postgres and DataFusion could disagree (bpchar padding, enum order, float NaN/-0, json…).
    None,
    /// Integers, numerics, booleans, dates and timestamps compare identically.
    Exact,
    /// `text`/`varchar`/`name`: equal bytewise; ordering needs `COLLATE "C"`.
    Text,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PgColumn {
    pub name: String,
    /// The column's type as SQL (`format_type`), safe to splice into a cast.
    pub sql_type: String,
    pub pg_type: PgType,
    pub nullable: bool,
    pub filter: FilterSupport,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationInfo {
    pub kind: RelationKind,
    /// Heap size in 8 KiB blocks at discovery time (0 for non-heap relations).
    pub heap_blocks: u64,
    pub heap_bytes: u64,
    pub columns: Vec<PgColumn>,
}

/// Every table, view and materialized view of the database this user may read, outside the
/// system schemas (partitions are read through their parent), in name order.
pub async fn list_relations(pool: &PgPool) -> Result<Vec<QualifiedName>, sqlx::Error> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT n.nspname::text, c.relname::text \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f') AND NOT c.relispartition \
           AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%' \
           AND has_table_privilege(c.oid, 'SELECT') \
         ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await?;
    // Names the catalog holds are valid identifiers; one that is not (too long) is skipped.
    Ok(rows
        .into_iter()
        .filter_map(|(schema, name)| {
            Some(QualifiedName {
                schema: Ident::new(schema).ok()?,
                name: Ident::new(name).ok()?,
            })
        })
        .collect())
}

/// Looks `table` up with bound parameters and describes it.
pub async fn describe(pool: &PgPool, table: &QualifiedName) -> Result<RelationInfo, CatalogError> {
    let db_err = |source| CatalogError::Database {
        table: table.clone(),
        source,
    };
    let relation: Option<(i64, String, i64, i64)> = sqlx::query_as(
        "SELECT c.oid::int8, c.relkind::text, pg_relation_size(c.oid)::int8, \
                current_setting('block_size')::int8 \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relname = $2",
    )
    .bind(table.schema.as_str())
    .bind(table.name.as_str())
    .fetch_optional(pool)
    .await
    .map_err(db_err)?;
    let (oid, relkind, heap_bytes, block_size) =
        relation.ok_or_else(|| CatalogError::NotFound(table.clone()))?;
    let kind = match relkind.as_str() {
        "r" | "m" => RelationKind::Heap,
        "v" | "f" | "p" => RelationKind::Other,
        other => {
            return Err(CatalogError::NotReadable {
                name: table.clone(),
                kind: relkind_name(other).into(),
            });
        }
    };

    let rows: Vec<(String, String, bool, i64, i32)> = sqlx::query_as(
        "SELECT attname::text, format_type(atttypid, atttypmod), attnotnull, atttypid::int8, atttypmod \
         FROM pg_attribute WHERE attrelid = $1::oid AND attnum > 0 AND NOT attisdropped \
         ORDER BY attnum",
    )
    .bind(oid)
    .fetch_all(pool)
    .await
    .map_err(db_err)?;
    if rows.is_empty() {
        return Err(CatalogError::NoColumns(table.clone()));
    }
    let mut columns = Vec::with_capacity(rows.len());
    for (name, sql_type, not_null, type_oid, typmod) in rows {
        let (pg_type, filter) = resolve_type(pool, type_oid as u32, typmod, 0)
            .await
            .map_err(db_err)?;
        columns.push(PgColumn {
            name,
            sql_type,
            pg_type,
            nullable: !not_null,
            filter,
        });
    }
    let heap_bytes = if kind == RelationKind::Heap {
        heap_bytes.max(0) as u64
    } else {
        0
    };
    Ok(RelationInfo {
        kind,
        heap_blocks: heap_bytes / block_size.max(1) as u64,
        heap_bytes,
        columns,
    })
}

fn relkind_name(relkind: &str) -> &'static str {
    match relkind {
        "i" | "I" => "index",
        "S" => "sequence",
        "c" => "composite type",
        "t" => "TOAST table",
        _ => "relation of an unreadable kind",
    }
}

/// Resolves domains to their base type and arrays to their element type.
async fn resolve_type(
    pool: &PgPool,
    type_oid: u32,
    typmod: i32,
    depth: usize,
) -> Result<(PgType, FilterSupport), sqlx::Error> {
    if let Some(pg_type) = PgType::from_builtin(type_oid, typmod) {
        return Ok((pg_type, builtin_filter_support(type_oid)));
    }
    if depth >= MAX_TYPE_DEPTH {
        return Ok((PgType::TextCast, FilterSupport::None));
    }
    let (typtype, category, element, base, base_typmod): (String, String, i64, i64, i32) = sqlx::query_as(
        "SELECT typtype::text, typcategory::text, typelem::int8, typbasetype::int8, typtypmod \
         FROM pg_type WHERE oid = $1::oid",
    )
    .bind(type_oid as i64)
    .fetch_one(pool)
    .await?;
    Ok(match (typtype.as_str(), category.as_str()) {
        ("e", _) => (PgType::Text, FilterSupport::None),
        ("d", _) => {
            let typmod = if typmod >= 0 { typmod } else { base_typmod };
            Box::pin(resolve_type(pool, base as u32, typmod, depth + 1)).await?
        }
        ("b", "A") if element != 0 => {
            let (element, _) = Box::pin(resolve_type(pool, element as u32, typmod, depth + 1)).await?;
            (PgType::array_of(element), FilterSupport::None)
        }
        _ => (PgType::TextCast, FilterSupport::None),
    })
}

fn builtin_filter_support(type_oid: u32) -> FilterSupport {
    match type_oid {
        // int8, int2, int4, numeric, bool, date, timestamp, timestamptz
        20 | 21 | 23 | 1700 | 16 | 1082 | 1114 | 1184 => FilterSupport::Exact,
        // name, text, varchar
        19 | 25 | 1043 => FilterSupport::Text,
        _ => FilterSupport::None,
    }
}
