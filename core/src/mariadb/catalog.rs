//! A MariaDB table's kind, size, columns and partitioning key, from `information_schema`.

use serde::{Deserialize, Serialize};
use sqlx::MySqlPool;
use thiserror::Error;

use super::types::MariaType;
use crate::ident::{Ident, QualifiedName};

/// Databases that hold the server's own tables, never discovered.
const SYSTEM_DATABASES: [&str; 4] = ["information_schema", "mysql", "performance_schema", "sys"];

#[derive(Debug, Error)]
pub enum CatalogError {
    #[error("table {0} does not exist (or this user cannot see it)")]
    NotFound(QualifiedName),
    #[error("table {0} has no columns")]
    NoColumns(QualifiedName),
    #[error("could not read the catalog of {table}: {source}")]
    Database {
        table: QualifiedName,
        #[source]
        source: sqlx::Error,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MariaColumn {
    pub name: String,
    /// The column's type as MariaDB states it (`COLUMN_TYPE`), with its collation if it has one.
    pub sql_type: String,
    pub maria_type: MariaType,
    pub nullable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    /// Whether it is a base table (a view is read as one partition).
    pub base_table: bool,
    /// The table's data size as the storage engine estimates it.
    pub data_bytes: u64,
    pub columns: Vec<MariaColumn>,
    /// The first column of the primary key (else of another index) when it is a NOT NULL
    /// integer: what partitions split the table by.
    pub key: Option<String>,
}

/// Every table and view this user may read, outside the system databases, in name order;
/// only `database`'s when one is given.
pub async fn list_tables(
    pool: &MySqlPool,
    database: Option<&str>,
) -> Result<Vec<QualifiedName>, sqlx::Error> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA NOT IN (?, ?, ?, ?) AND (? IS NULL OR TABLE_SCHEMA = ?) \
           AND TABLE_TYPE IN ('BASE TABLE', 'VIEW', 'SYSTEM VERSIONED') \
         ORDER BY 1, 2",
    )
    .bind(SYSTEM_DATABASES[0])
    .bind(SYSTEM_DATABASES[1])
    .bind(SYSTEM_DATABASES[2])
    .bind(SYSTEM_DATABASES[3])
    .bind(database)
    .bind(database)
    .fetch_all(pool)
    .await?;
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

type ColumnRow = (
    String,
    String,
    String,
    String,
    Option<u64>,
    Option<u64>,
    Option<String>,
);

/// The table's kind, size, columns (in order) and partitioning key.
pub async fn describe(pool: &MySqlPool, table: &QualifiedName) -> Result<TableInfo, CatalogError> {
    let failed = |source| CatalogError::Database {
        table: table.clone(),
        source,
    };
    let (schema, name) = (table.schema.as_str(), table.name.as_str());
    let kind: Option<(String, Option<u64>)> = sqlx::query_as(
        "SELECT TABLE_TYPE, DATA_LENGTH FROM information_schema.TABLES \
         WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
    )
    .bind(schema)
    .bind(name)
    .fetch_optional(pool)
    .await
    .map_err(failed)?;
    let Some((table_type, data_bytes)) = kind else {
        return Err(CatalogError::NotFound(table.clone()));
    };
    let rows: Vec<ColumnRow> = sqlx::query_as(
        "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE, NUMERIC_PRECISION, NUMERIC_SCALE, \
                COLLATION_NAME \
         FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? \
         ORDER BY ORDINAL_POSITION",
    )
    .bind(schema)
    .bind(name)
    .fetch_all(pool)
    .await
    .map_err(failed)?;
    if rows.is_empty() {
        return Err(CatalogError::NoColumns(table.clone()));
    }
    let columns: Vec<MariaColumn> = rows.into_iter().map(column).collect();
    let base_table = table_type != "VIEW";
    let key = match base_table {
        true => partition_key(pool, table, &columns).await.map_err(failed)?,
        false => None,
    };
    Ok(TableInfo {
        base_table,
        data_bytes: data_bytes.unwrap_or(0),
        columns,
        key,
    })
}

fn column((name, data_type, column_type, nullable, precision, scale, collation): ColumnRow) -> MariaColumn {
    let maria_type = MariaType::of_column(&data_type, &column_type, precision, scale);
    let sql_type = match collation {
        Some(collation) => format!("{column_type} collate {collation}"),
        None => column_type,
    };
    MariaColumn {
        name,
        sql_type,
        maria_type,
        nullable: nullable == "YES",
    }
}

/// The leading column of the primary key, else of another index, that is a NOT NULL integer.
async fn partition_key(
    pool: &MySqlPool,
    table: &QualifiedName,
    columns: &[MariaColumn],
) -> Result<Option<String>, sqlx::Error> {
    let leading: Vec<(String,)> = sqlx::query_as(
        "SELECT COLUMN_NAME FROM information_schema.STATISTICS \
         WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND SEQ_IN_INDEX = 1 \
         ORDER BY INDEX_NAME <> 'PRIMARY', NON_UNIQUE, INDEX_NAME",
    )
    .bind(table.schema.as_str())
    .bind(table.name.as_str())
    .fetch_all(pool)
    .await?;
    Ok(leading.into_iter().map(|(name,)| name).find(|name| {
        columns
            .iter()
            .any(|c| &c.name == name && !c.nullable && c.maria_type.is_integer())
    }))
}
