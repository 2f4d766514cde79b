//! Translation of DataFusion filters into Postgres SQL, only where both give the same answer.
//!
//! `COPY (SELECT …)` cannot take bind parameters, so literals are rendered from their typed
//! values: numbers and dates are formatted by Rust, strings are single-quoted with quotes
//! doubled (connections force `standard_conforming_strings = on`, so backslashes are plain
//! characters) and strings containing NUL are never pushed. Identifiers are always quoted.

use chrono::{DateTime, NaiveDate};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, expr::InList};

use super::catalog::{FilterSupport, PgColumn};
use crate::ident::quote_ident;

/// The SQL for `expr` when Postgres evaluates it exactly as DataFusion would, else `None`.
pub fn to_sql(expr: &Expr, columns: &[PgColumn]) -> Option<String> {
    match expr {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: op @ (Operator::And | Operator::Or),
            right,
        }) => Some(format!(
            "({} {op} {})",
            to_sql(left, columns)?,
            to_sql(right, columns)?
        )),
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => comparison(left, *op, right, columns),
        Expr::Not(inner) => Some(format!("(NOT {})", to_sql(inner, columns)?)),
        Expr::IsNull(inner) => Some(format!("({} IS NULL)", any_column(inner, columns)?)),
        Expr::IsNotNull(inner) => Some(format!("({} IS NOT NULL)", any_column(inner, columns)?)),
        // `IN ()` is no SQL; DataFusion answers an empty list itself.
        Expr::InList(InList { list, .. }) if list.is_empty() => None,
        Expr::InList(InList { expr, list, negated }) => {
            let column = filterable_column(expr, columns)?;
            let values: Option<Vec<String>> = list.iter().map(|v| literal(v, column)).collect();
            let not = if *negated { "NOT " } else { "" };
            Some(format!("({} {not}IN ({}))", quoted(column), values?.join(", ")))
        }
        Expr::Between(between) => {
            let column = filterable_column(&between.expr, columns)?;
            let not = if between.negated { "NOT " } else { "" };
            Some(format!(
                "({}{} {not}BETWEEN {} AND {})",
                quoted(column),
                collation(column),
                literal(&between.low, column)?,
                literal(&between.high, column)?
            ))
        }
        _ => None,
    }
}

fn comparison(left: &Expr, op: Operator, right: &Expr, columns: &[PgColumn]) -> Option<String> {
    let (column_expr, op, value) = match (left, right) {
        (Expr::Column(_), _) => (left, op, right),
        (_, Expr::Column(_)) => (right, op.swap()?, left),
        _ => return None,
    };
    let column = filterable_column(column_expr, columns)?;
    let (sql_op, ordering) = match op {
        Operator::Eq => ("=", false),
        Operator::NotEq => ("<>", false),
        Operator::Lt => ("<", true),
        Operator::LtEq => ("<=", true),
        Operator::Gt => (">", true),
        Operator::GtEq => (">=", true),
        _ => return None,
    };
    let collate = if ordering { collation(column) } else { "" };
    Some(format!(
        "({}{collate} {sql_op} {})",
        quoted(column),
        literal(value, column)?
    ))
}

/// Byte-wise ordering, as DataFusion compares strings.
fn collation(column: &PgColumn) -> &'static str {
    if column.filter == FilterSupport::Text {
        " COLLATE \"C\""
    } else {
        ""
    }
}

fn column_of<'a>(expr: &Expr, columns: &'a [PgColumn]) -> Option<&'a PgColumn> {
    let Expr::Column(column) = expr else { return None };
    columns.iter().find(|c| c.name == column.name)
}

fn filterable_column<'a>(expr: &Expr, columns: &'a [PgColumn]) -> Option<&'a PgColumn> {
    column_of(expr, columns).filter(|c| c.filter != FilterSupport::None)
}

/// `IS [NOT] NULL` means the same for every type.
fn any_column(expr: &Expr, columns: &[PgColumn]) -> Option<String> {
    column_of(expr, columns).map(quoted)
}

fn quoted(column: &PgColumn) -> String {
    quote_ident(&column.name)
}

/// A literal rendered for comparison with `column`, when its type class matches exactly.
fn literal(expr: &Expr, column: &PgColumn) -> Option<String> {
    use super::types::PgType as T;
    let Expr::Literal(value, _) = expr else {
        return None;
    };
    if value.is_null() {
        return None;
    }
    match (&column.pg_type, value) {
        (T::Int2 | T::Int4 | T::Int8 | T::Numeric { .. }, v) if integer(v).is_some() => integer(v),
        (T::Numeric { .. }, ScalarValue::Decimal128(Some(v), _, scale)) => decimal(*v, *scale),
        (T::Bool, ScalarValue::Boolean(Some(b))) => Some(if *b { "TRUE" } else { "FALSE" }.into()),
        (T::Date, ScalarValue::Date32(Some(days))) => {
            let date = NaiveDate::from_ymd_opt(1970, 1, 1)?
                .checked_add_signed(chrono::Duration::days(*days as i64))?;
            Some(format!("'{}'::date", date.format("%Y-%m-%d")))
        }
        (T::Timestamp, ScalarValue::TimestampMicrosecond(Some(micros), None)) => {
            Some(format!("'{}'::timestamp", timestamp(*micros)?))
        }
        (T::TimestampTz, ScalarValue::TimestampMicrosecond(Some(micros), Some(_))) => {
            Some(format!("'{}+00'::timestamptz", timestamp(*micros)?))
        }
        (
            T::Text,
            ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)),
        ) => (!s.contains('\0')).then(|| format!("'{}'", s.replace('\'', "''"))),
        _ => None,
    }
}

fn integer(value: &ScalarValue) -> Option<String> {
    Some(match value {
        ScalarValue::Int8(Some(v)) => v.to_string(),
        ScalarValue::Int16(Some(v)) => v.to_string(),
        ScalarValue::Int32(Some(v)) => v.to_string(),
        ScalarValue::Int64(Some(v)) => v.to_string(),
        ScalarValue::UInt8(Some(v)) => v.to_string(),
        ScalarValue::UInt16(Some(v)) => v.to_string(),
        ScalarValue::UInt32(Some(v)) => v.to_string(),
        ScalarValue::UInt64(Some(v)) => v.to_string(),
        _ => return None,
    })
}

/// A Decimal128 as SQL text; `None` for a scale no Decimal128 has (a forged plan's).
fn decimal(unscaled: i128, scale: i8) -> Option<String> {
    if scale.unsigned_abs() > 38 {
        return None;
    }
    if scale <= 0 {
        return Some(format!(
            "{unscaled}{}",
            "0".repeat(usize::from(scale.unsigned_abs()))
        ));
    }
    let digits = unscaled.unsigned_abs().to_string();
    let scale = usize::from(scale.unsigned_abs());
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    let sign = if unscaled < 0 { "-" } else { "" };
    Some(format!("{sign}{int}.{frac}"))
}

fn timestamp(micros: i64) -> Option<String> {
    let ts = DateTime::from_timestamp_micros(micros)?.naive_utc();
    // Postgres reads years beyond 9999 and BC dates differently; leave those to DataFusion.
    (ts.format("%Y").to_string().len() == 4 && micros > -62_135_596_800_000_000)
        .then(|| ts.format("%Y-%m-%d %H:%M:%S%.6f").to_string())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::postgres::types::PgType;
    use datafusion::prelude::{col, lit};

    /// Columns of every filter class, for tests of what renders.
    pub(in crate::postgres) fn columns() -> Vec<PgColumn> {
        let column = |name: &str, pg_type, filter| PgColumn {
            name: name.into(),
            sql_type: "unused".into(),
            pg_type,
            nullable: true,
            filter,
        };
        vec![
            column("id", PgType::Int8, FilterSupport::Exact),
            column(
                "amount",
                PgType::Numeric {
                    precision: 12,
                    scale: 2,
                },
                FilterSupport::Exact,
            ),
            column("name", PgType::Text, FilterSupport::Text),
            column("code", PgType::Text, FilterSupport::None),
            column("day", PgType::Date, FilterSupport::Exact),
            column("at", PgType::TimestampTz, FilterSupport::Exact),
            column("we\"ird", PgType::Int4, FilterSupport::Exact),
            column("score", PgType::Float8, FilterSupport::None),
        ]
    }

    fn sql(expr: Expr) -> Option<String> {
        to_sql(&expr, &columns())
    }

    #[test]
    fn comparisons_and_boolean_logic() {
        assert_eq!(sql(col("id").gt(lit(5i64))).unwrap(), r#"("id" > 5)"#);
        assert_eq!(sql(lit(5i64).lt(col("id"))).unwrap(), r#"("id" > 5)"#);
        assert_eq!(
            sql(col("id")
                .eq(lit(1i64))
                .and(col("we\"ird").not_eq(lit(2i32)).or(col("id").is_null())))
            .unwrap(),
            r#"(("id" = 1) AND (("we""ird" <> 2) OR ("id" IS NULL)))"#
        );
    }

    #[test]
    fn strings_are_quoted_and_ordering_is_bytewise() {
        assert_eq!(
            sql(col("name").eq(lit("O'Brien"))).unwrap(),
            r#"("name" = 'O''Brien')"#
        );
        assert_eq!(
            sql(col("name").lt(lit("b\\"))).unwrap(),
            r#"("name" COLLATE "C" < 'b\')"#
        );
        assert_eq!(sql(col("name").eq(lit("a\0b"))), None);
    }

    #[test]
    fn typed_literals() {
        let amount = Expr::Literal(ScalarValue::Decimal128(Some(-5), 12, 2), None);
        assert_eq!(
            sql(col("amount").gt_eq(amount)).unwrap(),
            r#"("amount" >= -0.05)"#
        );
        assert_eq!(
            sql(col("day").eq(Expr::Literal(ScalarValue::Date32(Some(19723)), None))).unwrap(),
            r#"("day" = '2024-01-01'::date)"#
        );
        let at = Expr::Literal(
            ScalarValue::TimestampMicrosecond(Some(1_704_067_200_000_001), Some("UTC".into())),
            None,
        );
        assert_eq!(
            sql(col("at").lt(at)).unwrap(),
            r#"("at" < '2024-01-01 00:00:00.000001+00'::timestamptz)"#
        );
        assert_eq!(
            sql(col("id").in_list(vec![lit(1i64), lit(2i64)], true)).unwrap(),
            r#"("id" NOT IN (1, 2))"#
        );
        assert_eq!(
            sql(col("id").between(lit(1i64), lit(9i64))).unwrap(),
            r#"("id" BETWEEN 1 AND 9)"#
        );
    }

    #[test]
    fn inexact_cases_are_not_pushed() {
        assert_eq!(
            sql(col("score").gt(lit(1.0))),
            None,
            "float -0/NaN semantics differ"
        );
        assert_eq!(
            sql(col("code").eq(lit("x"))),
            None,
            "bpchar/enum/json comparisons differ"
        );
        assert_eq!(sql(col("id").gt(lit(1.5))), None, "type class mismatch");
        assert_eq!(sql(col("id").eq(lit(ScalarValue::Int64(None)))), None);
        assert_eq!(sql(col("id").like(lit("1%"))), None);
        assert_eq!(sql(col("missing").eq(lit(1i64))), None);
        assert_eq!(sql(col("code").is_null()).unwrap(), r#"("code" IS NULL)"#);
    }

    #[test]
    fn decimal_rendering() {
        let rendered = |unscaled, scale| decimal(unscaled, scale).unwrap();
        assert_eq!(rendered(12345, 2), "123.45");
        assert_eq!(rendered(5, 3), "0.005");
        assert_eq!(rendered(-12, 0), "-12");
        assert_eq!(rendered(7, -2), "700");
        assert_eq!(decimal(7, i8::MIN), None, "no Decimal128 has that scale");
        assert_eq!(decimal(7, 39), None);
    }
}

#[cfg(test)]
mod properties {
    use datafusion::logical_expr::{binary_expr, in_list};
    use datafusion::prelude::{col, lit};
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    use proptest::prelude::*;

    use super::tests::columns;
    use super::*;

    fn operator() -> impl Strategy<Value = Operator> {
        prop::sample::select(vec![
            Operator::Eq,
            Operator::NotEq,
            Operator::Lt,
            Operator::LtEq,
            Operator::Gt,
            Operator::GtEq,
            Operator::LikeMatch,
        ])
    }

    fn literal_value() -> impl Strategy<Value = ScalarValue> {
        prop_oneof![
            any::<String>().prop_map(|s| ScalarValue::Utf8(Some(s))),
            any::<i64>().prop_map(|v| ScalarValue::Int64(Some(v))),
            (any::<i128>(), 0u8..38).prop_map(|(v, s)| ScalarValue::Decimal128(
                Some(v % 10i128.pow(38)),
                38,
                s as i8
            )),
            any::<i32>().prop_map(|d| ScalarValue::Date32(Some(d))),
            any::<i64>().prop_map(|t| ScalarValue::TimestampMicrosecond(Some(t), None)),
            any::<i64>().prop_map(|t| ScalarValue::TimestampMicrosecond(Some(t), Some("UTC".into()))),
            any::<bool>().prop_map(|b| ScalarValue::Boolean(Some(b))),
            Just(ScalarValue::Utf8(None)),
        ]
    }

    fn column_name() -> impl Strategy<Value = String> {
        let names: Vec<String> = columns()
            .into_iter()
            .map(|c| c.name)
            .chain(["missing".into()])
            .collect();
        prop::sample::select(names)
    }

    fn comparison() -> impl Strategy<Value = Expr> {
        prop_oneof![
            (column_name(), operator(), literal_value(), any::<bool>()).prop_map(
                |(name, op, value, flip)| {
                    match flip {
                        false => binary_expr(col(name), op, lit(value)),
                        true => binary_expr(lit(value), op, col(name)),
                    }
                }
            ),
            (
                column_name(),
                prop::collection::vec(literal_value(), 0..3),
                any::<bool>()
            )
                .prop_map(|(name, list, negated)| in_list(
                    col(name),
                    list.into_iter().map(lit).collect(),
                    negated
                )),
        ]
    }

    fn filter() -> impl Strategy<Value = Expr> {
        comparison().prop_recursive(3, 12, 2, |inner| {
            prop_oneof![
                (inner.clone(), inner.clone()).prop_map(|(a, b)| a.and(b)),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| a.or(b)),
                inner.prop_map(|e| !e),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// Whatever filter DataFusion hands over, what reaches Postgres is one expression.
        #[test]
        fn pushed_filters_parse_as_one_expression(expr in filter()) {
            let Some(sql) = to_sql(&expr, &columns()) else {
                return Ok(());
            };
            let statement = format!("SELECT 1 FROM t WHERE {sql}");
            let parsed = Parser::parse_sql(&PostgreSqlDialect {}, &statement);
            prop_assert!(matches!(&parsed, Ok(statements) if statements.len() == 1), "{statement}: {parsed:?}");
        }

        /// A string literal reaches Postgres as exactly that string, or is not pushed at all.
        #[test]
        fn string_literals_arrive_intact(value in any::<String>(), op in operator()) {
            let expr = binary_expr(col("name"), op, lit(value.clone()));
            let Some(sql) = to_sql(&expr, &columns()) else {
                return Ok(());
            };
            prop_assert!(!value.contains('\0'));
            let statement = format!("SELECT 1 FROM t WHERE {sql}");
            let parsed = Parser::parse_sql(&PostgreSqlDialect {}, &statement).unwrap();
            let literal = format!("SingleQuotedString({value:?})");
            prop_assert!(format!("{parsed:?}").contains(&literal), "{statement}");
        }

        #[test]
        fn decimals_render_their_exact_digits(unscaled in any::<i128>(), scale in -5i8..39) {
            let text = decimal(unscaled, scale).unwrap();
            let digits: String = text.chars().filter(char::is_ascii_digit).collect();
            let expected = match scale {
                s if s <= 0 => format!("{}{}", unscaled.unsigned_abs(), "0".repeat((-s) as usize)),
                _ => unscaled.unsigned_abs().to_string(),
            };
            prop_assert_eq!(digits.trim_start_matches('0'), expected.trim_start_matches('0'));
            prop_assert_eq!(text.starts_with('-'), unscaled < 0);
            if scale > 0 {
                prop_assert_eq!(text.split_once('.').map(|(_, f)| f.len()), Some(scale as usize));
            }
        }
    }
}
