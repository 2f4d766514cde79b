//! Previews of a Postgres table, answered by the database itself.
//!
//! Identifiers come from the catalog and are quoted; every value is a bound text parameter cast to
//! its column's own type (`CAST($1 AS numeric(12,2))`), so a date compares as a date and a numeric as
//! a numeric, and nothing a user sends is ever spliced into SQL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgArguments, PgRow};
use sqlx::{Arguments, Connection, PgPool, Row};

use super::{Condition, Op, Operand, Preview, PreviewColumn, PreviewError, find_column};
use crate::SourceUri;
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

/// How long a relation's description is trusted before the catalog is asked again. A preview that
/// fails on a remembered description describes the relation again at once, so this only bounds how
/// long a newly added column stays invisible.
pub const DESCRIPTION_TTL: Duration = Duration::from_secs(30);

/// Answers previews of Postgres sources. It remembers each relation's columns for
/// [`DESCRIPTION_TTL`], so a preview costs two statements on one pooled connection and no catalog
/// round trips.
#[derive(Debug, Default)]
pub struct Previewer {
    descriptions: Mutex<HashMap<SourceUri, Description>>,
}

#[derive(Debug)]
struct Description {
    columns: Arc<Vec<PgColumn>>,
    described_at: Instant,
}

impl Previewer {
    /// The first `limit` rows of the source's table matching `conditions`, and how many match
    /// (counted up to `count_cap`; beyond it the total is reported as a lower bound).
    pub async fn preview(
        &self,
        pool: &PgPool,
        source: &SourceUri,
        conditions: &[Condition],
        limit: usize,
        count_cap: u64,
    ) -> Result<Preview, PreviewError> {
        let table = source.table();
        let Some(remembered) = self.remembered(source) else {
            let columns = self.describe(pool, source).await?;
            return query(pool, table, &columns, conditions, limit, count_cap).await;
        };
        match query(pool, table, &remembered, conditions, limit, count_cap).await {
            Err(error @ PreviewError::Unreachable(_)) => Err(error),
            Err(error) => {
                // An unknown column, a failed cast or a vanished table may come from a stale
                // description: retry only if the relation really changed.
                let columns = self.describe(pool, source).await?;
                if columns == remembered {
                    return Err(error);
                }
                query(pool, table, &columns, conditions, limit, count_cap).await
            }
            answer => answer,
        }
    }

    fn remembered(&self, source: &SourceUri) -> Option<Arc<Vec<PgColumn>>> {
        let descriptions = self.descriptions.lock().unwrap_or_else(PoisonError::into_inner);
        descriptions
            .get(source)
            .filter(|d| d.described_at.elapsed() < DESCRIPTION_TTL)
            .map(|d| d.columns.clone())
    }

    async fn describe(&self, pool: &PgPool, source: &SourceUri) -> Result<Arc<Vec<PgColumn>>, PreviewError> {
        let described = catalog::describe(pool, source.table()).await;
        let mut descriptions = self.descriptions.lock().unwrap_or_else(PoisonError::into_inner);
        descriptions.retain(|_, d| d.described_at.elapsed() < DESCRIPTION_TTL);
        let relation = match described {
            Ok(relation) => relation,
            Err(error) => {
                descriptions.remove(source);
                return Err(catalog_error(error));
            }
        };
        let columns = Arc::new(relation.columns);
        descriptions.insert(
            source.clone(),
            Description {
                columns: columns.clone(),
                described_at: Instant::now(),
            },
        );
        Ok(columns)
    }
}

/// Runs one preview as one statement: the rows, then a row flagged `true` carrying the capped
/// count, so a preview costs one round trip.
async fn query(
    pool: &PgPool,
    table: &QualifiedName,
    columns: &[PgColumn],
    conditions: &[Condition],
    limit: usize,
    count_cap: u64,
) -> Result<Preview, PreviewError> {
    let filter = WhereClause::build(columns, conditions)?;
    let sql = preview_sql(table, columns, &filter.sql, limit, count_cap);
    let rows = fetch(pool, &sql, &filter).await.map_err(query_error)?;

    let mut values = Vec::with_capacity(rows.len());
    let mut matching = None;
    for row in &rows {
        let is_count: bool = row.try_get(0).map_err(internal)?;
        if is_count {
            let count: Option<String> = row.try_get(1).map_err(internal)?;
            matching = count.and_then(|c| c.parse::<u64>().ok());
        } else {
            values.push(text_values(row)?);
        }
    }
    let matching = matching.ok_or_else(|| PreviewError::Internal("the preview returned no count".into()))?;
    Ok(Preview {
        columns: columns.iter().map(preview_column).collect(),
        rows: values,
        total_rows: matching.min(count_cap),
        total_rows_exact: matching <= count_cap,
    })
}

/// Runs the statement; if its connection turns out dead (a restarted source, a terminated
/// backend), runs it again on one that answers a ping, as the pool's other idle connections
/// may be just as dead. Dead ones are discarded as they return to the pool.
async fn fetch(pool: &PgPool, sql: &str, filter: &WhereClause) -> Result<Vec<PgRow>, sqlx::Error> {
    let error = match sqlx::query_with(sql, filter.arguments().map_err(protocol)?)
        .fetch_all(pool)
        .await
    {
        Err(error) if connection_lost(&error) => error,
        answer => return answer,
    };
    for _ in 0..=pool.size() {
        let mut connection = pool.acquire().await?;
        if connection.ping().await.is_ok() {
            return sqlx::query_with(sql, filter.arguments().map_err(protocol)?)
                .fetch_all(&mut *connection)
                .await;
        }
    }
    Err(error)
}

fn protocol(error: PreviewError) -> sqlx::Error {
    sqlx::Error::Protocol(error.to_string())
}

/// `SELECT false, <columns as text> … LIMIT n UNION ALL SELECT true, <count up to cap+1>, NULL, …`.
fn preview_sql(
    table: &QualifiedName,
    columns: &[PgColumn],
    filter: &str,
    limit: usize,
    count_cap: u64,
) -> String {
    let from = table.quoted();
    let as_text: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| format!("CAST({} AS text) AS c{i}", quote_ident(&c.name)))
        .collect();
    let names: Vec<String> = (0..columns.len()).map(|i| format!("c{i}")).collect();
    let padding = ", NULL".repeat(columns.len().saturating_sub(1));
    format!(
        "SELECT false, {names} FROM (SELECT {as_text} FROM {from}{filter} LIMIT {limit}) AS preview \
         UNION ALL \
         SELECT true, CAST((SELECT count(*) FROM (SELECT FROM {from}{filter} LIMIT {over_cap}) AS matching) AS text){padding}",
        names = names.join(", "),
        as_text = as_text.join(", "),
        over_cap = count_cap.saturating_add(1),
    )
}

fn preview_column(column: &PgColumn) -> PreviewColumn {
    PreviewColumn {
        name: column.name.clone(),
        data_type: column.pg_type.arrow_type().to_string(),
        nullable: column.nullable,
    }
}

/// A row's values after its leading flag.
fn text_values(row: &PgRow) -> Result<Vec<Option<String>>, PreviewError> {
    (1..row.len())
        .map(|i| row.try_get::<Option<String>, _>(i))
        .collect::<Result<_, _>>()
        .map_err(internal)
}

fn internal(error: sqlx::Error) -> PreviewError {
    PreviewError::Internal(error.to_string())
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

/// Whether `error` means the connection died rather than the statement failing.
fn connection_lost(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => db
            .code()
            .is_some_and(|code| code.starts_with("57P") || code.starts_with("08")),
        _ => false,
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
    use crate::ident::Ident;
    use crate::postgres::catalog::FilterSupport;
    use crate::postgres::types::PgType;
    use serde_json::json;

    pub(super) fn column(name: &str, sql_type: &str) -> PgColumn {
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
    fn one_statement_carries_rows_and_count() {
        let table = QualifiedName {
            schema: Ident::new("s").unwrap(),
            name: Ident::new("t").unwrap(),
        };
        let columns = [column("id", "int8"), column("a \"b\"", "text")];
        let sql = preview_sql(&table, &columns, " WHERE x", 5, 100);
        assert_eq!(
            sql,
            "SELECT false, c0, c1 FROM (SELECT CAST(\"id\" AS text) AS c0, CAST(\"a \"\"b\"\"\" AS text) AS c1 \
             FROM \"s\".\"t\" WHERE x LIMIT 5) AS preview UNION ALL SELECT true, CAST((SELECT count(*) FROM \
             (SELECT FROM \"s\".\"t\" WHERE x LIMIT 101) AS matching) AS text), NULL"
        );
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

#[cfg(test)]
mod properties {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::tests::column;
    use super::*;

    /// Marks every value, so the SQL can be searched for it: no column name or type contains it.
    const MARK: char = '\u{1F9FE}';

    fn value() -> impl Strategy<Value = Value> {
        let text = any::<String>().prop_map(|s| format!("{MARK}{s}"));
        prop_oneof![
            4 => text.clone().prop_map(Value::String),
            1 => prop::collection::vec(text, 0..4).prop_map(|v| json!(v)),
            1 => any::<i64>().prop_map(|i| json!(i)),
            1 => Just(Value::Null),
            1 => Just(json!({"nested": true})),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1_000))]

        #[test]
        fn values_are_bound_and_names_quoted_whatever_they_hold(
            name in "[ -~]{1,16}",
            sql_type in prop::sample::select(vec!["numeric(12,2)", "date", "text", "timestamp with time zone"]),
            conditions in prop::collection::vec(
                (prop::sample::select(vec!["eq", "neq", "gt", "gte", "lt", "lte", "between", "in", "like", "is_null", "is_not_null"]), value()),
                1..4,
            ),
        ) {
            let columns = [column(&name, sql_type)];
            let conditions: Vec<Condition> = conditions
                .into_iter()
                .map(|(op, value)| serde_json::from_value(json!({"column": name, "op": op, "value": value})).unwrap())
                .collect();
            let Ok(clause) = WhereClause::build(&columns, &conditions) else {
                return Ok(());
            };
            prop_assert!(!clause.sql.contains(MARK), "a value was spliced into {}", clause.sql);
            let statement = format!("SELECT * FROM t{}", clause.sql);
            let parsed = Parser::parse_sql(&PostgreSqlDialect {}, &statement);
            prop_assert!(matches!(&parsed, Ok(statements) if statements.len() == 1), "{statement}: {parsed:?}");
            let placeholders = (1..=clause.params.len()).all(|n| clause.sql.contains(&format!("${n}")));
            prop_assert!(placeholders, "{}", clause.sql);
            prop_assert!(clause.sql.contains(&quote_ident(&name)));
        }
    }
}
