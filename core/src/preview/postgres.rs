//! Previews of a Postgres table, answered by the database itself.
//!
//! Identifiers come from the catalog and are quoted; every value is a bound text parameter cast to
//! its column's own type (`CAST($1 AS numeric(12,2))`), so a date compares as a date and a numeric as
//! a numeric, and nothing a user sends is ever spliced into SQL.

use sqlx::postgres::{PgArguments, PgRow};
use sqlx::{Arguments, PgPool, Row};

use super::{Condition, Op, Operand, Preview, PreviewColumn, PreviewError, find_column};
use crate::ident::{QualifiedName, quote_ident};
use crate::postgres::catalog::{self, CatalogError, PgColumn};

/// A `WHERE` clause with `$n` placeholders and the text of each parameter.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct WhereClause {
    pub sql: String,
    pub params: Vec<String>,
}

impl WhereClause {
    pub fn build(columns: &[PgColumn], conditions: &[Condition]) -> Result<Self, PreviewError> {
        let mut clause = WhereClause::default();
        let mut predicates = Vec::with_capacity(conditions.len());
        for condition in conditions {
            let column = find_column(columns, &condition.column, |c| &c.name)?;
            predicates.push(clause.predicate(column, condition)?);
        }
        if !predicates.is_empty() {
            clause.sql = format!(" WHERE {}", predicates.join(" AND "));
        }
        Ok(clause)
    }

    fn predicate(&mut self, column: &PgColumn, condition: &Condition) -> Result<String, PreviewError> {
        let name = quote_ident(&column.name);
        Ok(match (condition.op, condition.operand()?) {
            (Op::IsNull, _) => format!("{name} IS NULL"),
            (Op::IsNotNull, _) => format!("{name} IS NOT NULL"),
            (Op::Like, Operand::One(pattern)) => format!("CAST({name} AS text) LIKE {}", self.param(pattern)),
            (Op::Between, Operand::Two(low, high)) => format!(
                "{name} BETWEEN {} AND {}",
                self.typed_param(low, column),
                self.typed_param(high, column)
            ),
            (Op::In, Operand::List(values)) => {
                let values: Vec<String> = values.into_iter().map(|v| self.typed_param(v, column)).collect();
                format!("{name} IN ({})", values.join(", "))
            }
            (op, Operand::One(value)) => {
                let comparison = op.comparison().expect("scalar operand implies a comparison");
                format!("{name} {comparison} {}", self.typed_param(value, column))
            }
            (op, operand) => unreachable!("Condition::operand gave {operand:?} for {op:?}"),
        })
    }

    /// The parameters, bound as text.
    pub fn arguments(&self) -> Result<PgArguments, PreviewError> {
        let mut arguments = PgArguments::default();
        for param in &self.params {
            arguments
                .add(param.as_str())
                .map_err(|e| PreviewError::Internal(e.to_string()))?;
        }
        Ok(arguments)
    }

    fn param(&mut self, value: String) -> String {
        self.params.push(value);
        format!("${}", self.params.len())
    }

    fn typed_param(&mut self, value: String, column: &PgColumn) -> String {
        format!("CAST({} AS {})", self.param(value), column.sql_type)
    }
}

/// The first `limit` rows of `table` matching `conditions`, and how many match (counted up to
/// `count_cap`; beyond it the total is reported as a lower bound).
pub async fn preview(
    pool: &PgPool,
    table: &QualifiedName,
    conditions: &[Condition],
    limit: usize,
    count_cap: u64,
) -> Result<Preview, PreviewError> {
    let relation = catalog::describe(pool, table).await.map_err(catalog_error)?;
    let filter = WhereClause::build(&relation.columns, conditions)?;
    let from = table.quoted();
    let select_list: Vec<String> = relation
        .columns
        .iter()
        .map(|c| format!("CAST({} AS text)", quote_ident(&c.name)))
        .collect();
    let rows_sql = format!(
        "SELECT {} FROM {from}{} LIMIT {limit}",
        select_list.join(", "),
        filter.sql
    );
    let count_sql = format!(
        "SELECT count(*) FROM (SELECT FROM {from}{} LIMIT {}) AS matching",
        filter.sql,
        count_cap.saturating_add(1)
    );

    let mut connection = pool.acquire().await.map_err(query_error)?;
    let rows = sqlx::query_with(&rows_sql, filter.arguments()?)
        .fetch_all(&mut *connection)
        .await
        .map_err(query_error)?;
    let matching: i64 = sqlx::query_scalar_with(&count_sql, filter.arguments()?)
        .fetch_one(&mut *connection)
        .await
        .map_err(query_error)?;

    let matching = matching.max(0) as u64;
    Ok(Preview {
        columns: relation.columns.iter().map(preview_column).collect(),
        rows: rows.iter().map(text_values).collect::<Result<_, _>>()?,
        total_rows: matching.min(count_cap),
        total_rows_exact: matching <= count_cap,
    })
}

fn preview_column(column: &PgColumn) -> PreviewColumn {
    PreviewColumn {
        name: column.name.clone(),
        data_type: column.pg_type.arrow_type().to_string(),
        nullable: column.nullable,
    }
}

fn text_values(row: &PgRow) -> Result<Vec<Option<String>>, PreviewError> {
    (0..row.len())
        .map(|i| row.try_get::<Option<String>, _>(i))
        .collect::<Result<_, _>>()
        .map_err(|e| PreviewError::Internal(e.to_string()))
}

fn catalog_error(error: CatalogError) -> PreviewError {
    match error {
        CatalogError::Database { source, .. } => query_error(source),
        gone
        @ (CatalogError::NotFound(_) | CatalogError::NotReadable { .. } | CatalogError::NoColumns(_)) => {
            PreviewError::Gone(gone.to_string())
        }
    }
}

/// Sorts database errors into the user's mistakes, an unreachable source and everything else.
/// Messages come from the server or the driver's I/O layer, which never include the password.
fn query_error(error: sqlx::Error) -> PreviewError {
    let sqlx::Error::Database(db) = &error else {
        return match error {
            sqlx::Error::PoolTimedOut => {
                PreviewError::Unreachable("timed out waiting for a connection to the source".into())
            }
            other => PreviewError::Unreachable(other.to_string()),
        };
    };
    let message = db.message().to_string();
    match db.code().as_deref().unwrap_or_default() {
        // data exceptions (bad text for the type, overflow), no such operator, type mismatch
        code if code.starts_with("22") || code == "42883" || code == "42804" => {
            PreviewError::InvalidValue(message)
        }
        "42P01" | "42703" => PreviewError::Gone(message),
        code if code.starts_with("08")
            || code.starts_with("28")
            || code.starts_with("57")
            || code == "3D000" =>
        {
            PreviewError::Unreachable(message)
        }
        _ => PreviewError::Internal(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::catalog::FilterSupport;
    use crate::postgres::types::PgType;
    use serde_json::json;

    fn column(name: &str, sql_type: &str) -> PgColumn {
        PgColumn {
            name: name.into(),
            sql_type: sql_type.into(),
            pg_type: PgType::Text,
            nullable: true,
            filter: FilterSupport::None,
        }
    }

    fn conditions(value: serde_json::Value) -> Vec<Condition> {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn values_become_typed_parameters_and_names_are_quoted() {
        let columns = [column("amount", "numeric(12,2)"), column("due \"on\"", "date")];
        let clause = WhereClause::build(
            &columns,
            &conditions(json!([
                {"column": "amount", "op": "gte", "value": "10.5"},
                {"column": "due \"on\"", "op": "between", "value": ["2024-01-01", "2024-01-31"]},
                {"column": "amount", "op": "in", "value": [1, 2]},
                {"column": "due \"on\"", "op": "like", "value": "2024-%'; DROP TABLE x; --"},
                {"column": "amount", "op": "is_not_null"},
            ])),
        )
        .unwrap();
        assert_eq!(
            clause.sql,
            " WHERE \"amount\" >= CAST($1 AS numeric(12,2)) \
             AND \"due \"\"on\"\"\" BETWEEN CAST($2 AS date) AND CAST($3 AS date) \
             AND \"amount\" IN (CAST($4 AS numeric(12,2)), CAST($5 AS numeric(12,2))) \
             AND CAST(\"due \"\"on\"\"\" AS text) LIKE $6 \
             AND \"amount\" IS NOT NULL"
        );
        assert_eq!(clause.params[5], "2024-%'; DROP TABLE x; --");
        assert_eq!(clause.params.len(), 6);
    }

    #[test]
    fn no_conditions_no_where() {
        assert_eq!(
            WhereClause::build(&[column("a", "int4")], &[]).unwrap(),
            WhereClause::default()
        );
    }

    #[test]
    fn column_names_must_match_exactly() {
        let error = WhereClause::build(
            &[column("id", "int8")],
            &conditions(json!([{"column": "id; --", "op": "eq", "value": 1}])),
        )
        .unwrap_err();
        assert!(matches!(error, PreviewError::UnknownColumn { .. }), "{error}");
    }
}
