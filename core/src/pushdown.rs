//! Filters pushed down into a source's own `WHERE`, only where the source answers exactly as
//! DataFusion would.
//!
//! The boolean structure (`AND`, `OR`, `NOT`, comparisons, `IN`, `BETWEEN`, `IS NULL`) renders
//! alike for every engine; each engine's column type says whether its comparisons are exact, how
//! it is quoted and how a literal of its type is written ([`FilterColumn`]). Filters travel to the
//! executors as typed expressions, never as SQL: an executor renders them itself against the
//! grant-bound columns, and refuses a scan whose filter it would not have pushed.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown, expr::InList};
use datafusion_proto::bytes::Serializeable;

use crate::ident::QualifiedName;
use crate::scan::plan_refused;

/// A source column as the renderer sees it.
pub trait FilterColumn {
    fn name(&self) -> &str;
    /// The column as an identifier of the engine's SQL.
    fn quoted(&self) -> String;
    /// Whether comparisons with literals are pushed (`IS [NOT] NULL` always is).
    fn comparable(&self) -> bool;
    /// What follows the column in an ordering comparison so the engine orders as DataFusion does.
    fn ordering(&self) -> &'static str {
        ""
    }
    /// `value` (never NULL) as a literal compared with this column, when the engine compares the
    /// two exactly as DataFusion does.
    fn literal(&self, value: &ScalarValue) -> Option<String>;
}

/// The SQL for `expr` when the engine evaluates it exactly as DataFusion would, else `None`.
pub fn to_sql<C: FilterColumn>(expr: &Expr, columns: &[C]) -> Option<String> {
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
        Expr::IsNull(inner) => Some(format!("({} IS NULL)", column_of(inner, columns)?.quoted())),
        Expr::IsNotNull(inner) => Some(format!("({} IS NOT NULL)", column_of(inner, columns)?.quoted())),
        // `IN ()` is no SQL; DataFusion answers an empty list itself.
        Expr::InList(InList { list, .. }) if list.is_empty() => None,
        Expr::InList(InList { expr, list, negated }) => {
            let column = comparable_column(expr, columns)?;
            let values: Option<Vec<String>> = list.iter().map(|v| literal(v, column)).collect();
            let not = if *negated { "NOT " } else { "" };
            Some(format!("({} {not}IN ({}))", column.quoted(), values?.join(", ")))
        }
        Expr::Between(between) => {
            let column = comparable_column(&between.expr, columns)?;
            let not = if between.negated { "NOT " } else { "" };
            Some(format!(
                "({}{} {not}BETWEEN {} AND {})",
                column.quoted(),
                column.ordering(),
                literal(&between.low, column)?,
                literal(&between.high, column)?
            ))
        }
        _ => None,
    }
}

fn comparison<C: FilterColumn>(left: &Expr, op: Operator, right: &Expr, columns: &[C]) -> Option<String> {
    let (column_expr, op, value) = match (left, right) {
        (Expr::Column(_), _) => (left, op, right),
        (_, Expr::Column(_)) => (right, op.swap()?, left),
        _ => return None,
    };
    let column = comparable_column(column_expr, columns)?;
    let (sql_op, ordering) = match op {
        Operator::Eq => ("=", false),
        Operator::NotEq => ("<>", false),
        Operator::Lt => ("<", true),
        Operator::LtEq => ("<=", true),
        Operator::Gt => (">", true),
        Operator::GtEq => (">=", true),
        _ => return None,
    };
    let suffix = if ordering { column.ordering() } else { "" };
    Some(format!(
        "({}{suffix} {sql_op} {})",
        column.quoted(),
        literal(value, column)?
    ))
}

fn column_of<'a, C: FilterColumn>(expr: &Expr, columns: &'a [C]) -> Option<&'a C> {
    let Expr::Column(column) = expr else { return None };
    columns.iter().find(|c| c.name() == column.name)
}

fn comparable_column<'a, C: FilterColumn>(expr: &Expr, columns: &'a [C]) -> Option<&'a C> {
    column_of(expr, columns).filter(|c| c.comparable())
}

fn literal<C: FilterColumn>(expr: &Expr, column: &C) -> Option<String> {
    match expr {
        Expr::Literal(value, _) if !value.is_null() => column.literal(value),
        _ => None,
    }
}

/// What a provider answers DataFusion for `filters`: exact where they render, else evaluated by
/// DataFusion above the scan.
pub fn support<C: FilterColumn>(filters: &[&Expr], columns: &[C]) -> Vec<TableProviderFilterPushDown> {
    filters
        .iter()
        .map(|f| match to_sql(f, columns) {
            Some(_) => TableProviderFilterPushDown::Exact,
            None => TableProviderFilterPushDown::Unsupported,
        })
        .collect()
}

/// `filter` encoded to travel in a scan's spec. DataFusion hands a scan only filters its provider
/// said it renders, unless the plan was forged: then the scan is refused, not the filter silently
/// dropped.
pub fn encode<C: FilterColumn>(table: &QualifiedName, filter: &Expr, columns: &[C]) -> Result<String> {
    if to_sql(filter, columns).is_none() {
        return Err(not_pushed(table, filter));
    }
    Ok(BASE64.encode(filter.to_bytes()?))
}

/// An encoded filter of a scan of `table` as SQL, where the scan runs. Decoding uses no function
/// registry, so a filter calling any function is refused as well.
pub fn render<C: FilterColumn>(table: &QualifiedName, encoded: &str, columns: &[C]) -> Result<String> {
    let refused = |reason: String| plan_refused(table, reason);
    let bytes = BASE64
        .decode(encoded)
        .map_err(|e| refused(format!("a filter is not base64 ({e})")))?;
    let filter =
        Expr::from_bytes(&bytes).map_err(|e| refused(format!("a filter is not an expression ({e})")))?;
    to_sql(&filter, columns).ok_or_else(|| not_pushed(table, &filter))
}

fn not_pushed(table: &QualifiedName, filter: &Expr) -> datafusion::common::DataFusionError {
    plan_refused(
        table,
        format!("the filter `{filter}` is not one Kalla pushes down to this source"),
    )
}

/// A whole number of any integer type, as SQL.
pub fn integer(value: &ScalarValue) -> Option<String> {
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

/// An integer or a Decimal128, as exact SQL number text.
pub fn number(value: &ScalarValue) -> Option<String> {
    match value {
        ScalarValue::Decimal128(Some(v), _, scale) => decimal(*v, *scale),
        other => integer(other),
    }
}

/// A Decimal128 as SQL text; `None` for a scale no Decimal128 has (a forged plan's).
pub fn decimal(unscaled: i128, scale: i8) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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

    proptest! {
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
