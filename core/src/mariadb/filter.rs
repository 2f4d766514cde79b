//! How MariaDB columns take part in filter pushdown ([`crate::pushdown`]): which compare exactly
//! as DataFusion does, and their literals.
//!
//! Pushed: integers (signed and unsigned), `DECIMAL` up to 38 digits, `DATE`, `DATETIME`,
//! `TIMESTAMP` (sessions run at `+00:00`), and `VARCHAR`/`TEXT` in the `utf8mb4_nopad_bin`
//! collation. Every other text collation answers differently from DataFusion's byte-wise
//! comparison: `_ci` and `_ai` ones fold case and accents, and PAD SPACE ones (even
//! `utf8mb4_bin`) find `'a' = 'a '`; `CHAR` loses its trailing spaces when read. Floats, `TIME`,
//! `YEAR`, `BIT`, `ENUM`, `SET`, `JSON` and binary strings are evaluated by DataFusion.
//!
//! Strings are written as hexadecimal literals with a `_utf8mb4` introducer, so no quote,
//! backslash (whatever `sql_mode` says of `NO_BACKSLASH_ESCAPES`) or NUL needs escaping; the
//! column's collation governs the comparison.

use std::fmt::Write;

use chrono::{DateTime, Datelike, NaiveDate};
use datafusion::common::ScalarValue;

use super::catalog::MariaColumn;
use super::types::MariaType;
use crate::ident::backquote_ident;
use crate::pushdown::{FilterColumn, integer, number};

/// The one text collation whose comparisons are DataFusion's.
const BYTEWISE_COLLATION: &str = "utf8mb4_nopad_bin";

impl FilterColumn for MariaColumn {
    fn name(&self) -> &str {
        &self.name
    }

    fn quoted(&self) -> String {
        backquote_ident(&self.name)
    }

    fn comparable(&self) -> bool {
        match self.maria_type {
            MariaType::Text => self.compares_bytewise(),
            MariaType::Decimal { .. } | MariaType::Date | MariaType::DateTime | MariaType::Timestamp => true,
            other => other.is_integer(),
        }
    }

    fn literal(&self, value: &ScalarValue) -> Option<String> {
        match (self.maria_type, value) {
            (MariaType::Decimal { .. }, v) => number(v),
            (t, v) if t.is_integer() => integer(v),
            (MariaType::Date, ScalarValue::Date32(Some(days))) => {
                let date = NaiveDate::from_ymd_opt(1970, 1, 1)?
                    .checked_add_signed(chrono::Duration::days(*days as i64))?;
                in_range(date).then(|| format!("DATE'{}'", date.format("%Y-%m-%d")))
            }
            (MariaType::DateTime, ScalarValue::TimestampMicrosecond(Some(micros), None))
            | (MariaType::Timestamp, ScalarValue::TimestampMicrosecond(Some(micros), Some(_))) => {
                let at = DateTime::from_timestamp_micros(*micros)?.naive_utc();
                in_range(at.date()).then(|| format!("TIMESTAMP'{}'", at.format("%Y-%m-%d %H:%M:%S%.6f")))
            }
            (
                MariaType::Text,
                ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)),
            ) => Some(hex_string(s)),
            _ => None,
        }
    }
}

impl MariaColumn {
    /// `VARCHAR` or a `TEXT` type in the NO PAD binary collation of utf8mb4.
    fn compares_bytewise(&self) -> bool {
        let Some((column_type, collation)) = self.sql_type.split_once(" collate ") else {
            return false;
        };
        let varying = column_type.starts_with("varchar(")
            || matches!(column_type, "tinytext" | "text" | "mediumtext" | "longtext");
        varying && collation == BYTEWISE_COLLATION
    }
}

/// MariaDB's supported date range; literals outside it are left to DataFusion.
fn in_range(date: NaiveDate) -> bool {
    (1000..=9999).contains(&date.year())
}

fn hex_string(text: &str) -> String {
    let mut literal = String::with_capacity(12 + text.len() * 2);
    literal.push_str("_utf8mb4 X'");
    for byte in text.bytes() {
        let _ = write!(literal, "{byte:02X}");
    }
    literal.push('\'');
    literal
}

#[cfg(test)]
mod tests {
    use datafusion::logical_expr::Expr;
    use datafusion::prelude::{col, lit};

    use super::*;
    use crate::pushdown::to_sql;

    fn columns() -> Vec<MariaColumn> {
        let column = |name: &str, sql_type: &str, maria_type| MariaColumn {
            name: name.into(),
            sql_type: sql_type.into(),
            maria_type,
            nullable: true,
        };
        vec![
            column("id", "bigint(20) unsigned", MariaType::UInt64),
            column(
                "amount",
                "decimal(12,2)",
                MariaType::Decimal {
                    precision: 12,
                    scale: 2,
                },
            ),
            column("code", "varchar(20) collate utf8mb4_nopad_bin", MariaType::Text),
            column("padded", "varchar(20) collate utf8mb4_bin", MariaType::Text),
            column("folded", "text collate utf8mb4_general_ci", MariaType::Text),
            column("fixed", "char(3) collate utf8mb4_nopad_bin", MariaType::Text),
            column("day", "date", MariaType::Date),
            column("at", "timestamp(6)", MariaType::Timestamp),
            column("local", "datetime", MariaType::DateTime),
            column("score", "double", MariaType::Float64),
            column("odd`name", "int(11)", MariaType::Int32),
        ]
    }

    fn sql(expr: Expr) -> Option<String> {
        to_sql(&expr, &columns())
    }

    #[test]
    fn exact_comparisons_render_with_backquotes_and_typed_literals() {
        assert_eq!(
            sql(col("id").gt(lit(u64::MAX - 1)).and(col("odd`name").eq(lit(7i32)))).unwrap(),
            "((`id` > 18446744073709551614) AND (`odd``name` = 7))"
        );
        let amount = Expr::Literal(ScalarValue::Decimal128(Some(-5), 12, 2), None);
        assert_eq!(sql(col("amount").lt(amount)).unwrap(), "(`amount` < -0.05)");
        let day = Expr::Literal(ScalarValue::Date32(Some(19723)), None);
        assert_eq!(sql(col("day").eq(day)).unwrap(), "(`day` = DATE'2024-01-01')");
        let utc = ScalarValue::TimestampMicrosecond(Some(1_704_067_200_000_001), Some("UTC".into()));
        assert_eq!(
            sql(col("at").gt_eq(Expr::Literal(utc, None))).unwrap(),
            "(`at` >= TIMESTAMP'2024-01-01 00:00:00.000001')"
        );
        let wall = ScalarValue::TimestampMicrosecond(Some(0), None);
        assert_eq!(
            sql(col("local").lt(Expr::Literal(wall, None))).unwrap(),
            "(`local` < TIMESTAMP'1970-01-01 00:00:00.000000')"
        );
    }

    #[test]
    fn strings_are_hex_literals_only_for_bytewise_collations() {
        assert_eq!(
            sql(col("code").eq(lit("a'\\\0é"))).unwrap(),
            "(`code` = _utf8mb4 X'61275C00C3A9')"
        );
        assert_eq!(
            sql(col("code").in_list(vec![lit(""), lit("b")], false)).unwrap(),
            "(`code` IN (_utf8mb4 X'', _utf8mb4 X'62'))"
        );
        for column in ["padded", "folded", "fixed"] {
            assert_eq!(sql(col(column).eq(lit("a"))), None, "{column}");
        }
    }

    #[test]
    fn inexact_or_mistyped_filters_are_not_pushed() {
        assert_eq!(sql(col("score").gt(lit(1.0))), None);
        assert_eq!(sql(col("id").gt(lit(1.5))), None);
        assert_eq!(sql(col("id").eq(lit("1"))), None);
        let too_early = Expr::Literal(ScalarValue::Date32(Some(-719_162)), None);
        assert_eq!(sql(col("day").gt(too_early)), None, "year 1");
        let zoned = ScalarValue::TimestampMicrosecond(Some(0), Some("UTC".into()));
        assert_eq!(sql(col("local").eq(Expr::Literal(zoned, None))), None);
        assert_eq!(sql(col("score").is_null()).unwrap(), "(`score` IS NULL)");
    }
}
