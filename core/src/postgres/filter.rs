//! How Postgres columns take part in filter pushdown ([`crate::pushdown`]): which compare
//! exactly as DataFusion does, and their literals.
//!
//! `COPY (SELECT …)` cannot take bind parameters, so literals are rendered from their typed
//! values: numbers and dates are formatted by Rust, strings are single-quoted with quotes
//! doubled (connections force `standard_conforming_strings = on`, so backslashes are plain
//! characters) and strings containing NUL are never pushed. Identifiers are always quoted.

use chrono::{DateTime, NaiveDate};
use datafusion::common::ScalarValue;

use super::catalog::{FilterSupport, PgColumn};
use crate::ident::quote_ident;
use crate::pushdown::{FilterColumn, integer, number};

impl FilterColumn for PgColumn {
    fn name(&self) -> &str {
        &self.name
    }

    fn quoted(&self) -> String {
        quote_ident(&self.name)
    }

    fn comparable(&self) -> bool {
        self.filter != FilterSupport::None
    }

    /// Byte-wise ordering, as DataFusion compares strings.
    fn ordering(&self) -> &'static str {
        if self.filter == FilterSupport::Text {
            " COLLATE \"C\""
        } else {
            ""
        }
    }

    fn literal(&self, value: &ScalarValue) -> Option<String> {
        use super::types::PgType as T;
        match (&self.pg_type, value) {
            (T::Int2 | T::Int4 | T::Int8, v) => integer(v),
            (T::Numeric { .. }, v) => number(v),
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
    use crate::pushdown::to_sql;
    use datafusion::logical_expr::Expr;
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
    use crate::pushdown::to_sql;
    use datafusion::logical_expr::{Expr, Operator};

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
    }
}
