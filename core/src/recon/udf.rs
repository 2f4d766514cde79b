//! `tolerance_match(a, b, tol)`: whether `|b - a| <= tol`, for recipes' `match_sql` and any
//! query. Every Kalla session registers it.
//!
//! The call is rewritten into that arithmetic while the plan is optimized, so decimals compare in
//! decimal arithmetic (a difference of exactly `tol` matches) and the executors need no kernel.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, exec_err, plan_err};
use datafusion::functions::expr_fn::abs;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    ColumnarValue, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

pub const TOLERANCE_MATCH: &str = "tolerance_match";

static UDF: LazyLock<Arc<ScalarUDF>> = LazyLock::new(|| Arc::new(ScalarUDF::from(ToleranceMatch::new())));

/// The `tolerance_match` function.
pub fn tolerance_match() -> Arc<ScalarUDF> {
    UDF.clone()
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct ToleranceMatch {
    signature: Signature,
}

impl ToleranceMatch {
    fn new() -> Self {
        Self {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for ToleranceMatch {
    fn name(&self) -> &str {
        TOLERANCE_MATCH
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        if arg_types.iter().any(|t| !t.is_numeric() && *t != DataType::Null) {
            return plan_err!("tolerance_match(a, b, tol) takes three numbers, got {arg_types:?}");
        }
        Ok(DataType::Boolean)
    }

    /// Floats compare as floats; everything else as `Decimal128(38, 10)`, the tolerance included
    /// (a SQL literal like `0.01` is a float, and becomes exactly 1/100). One type for all three,
    /// because the rewritten arithmetic is not coerced again.
    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let [a, b, _tolerance] = arg_types else {
            return plan_err!("tolerance_match takes exactly three arguments: (a, b, tol)");
        };
        self.return_type(arg_types)?;
        if a.is_floating() || b.is_floating() {
            return Ok(vec![DataType::Float64; 3]);
        }
        Ok(vec![DataType::Decimal128(38, 10); 3])
    }

    /// Null when an input may be null, as the rewritten comparison is.
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let types: Vec<DataType> = args.arg_fields.iter().map(|f| f.data_type().clone()).collect();
        let nullable = args.arg_fields.iter().any(|f| f.is_nullable());
        Ok(Arc::new(Field::new(
            self.name(),
            self.return_type(&types)?,
            nullable,
        )))
    }

    fn simplify(&self, args: Vec<Expr>, _info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        let Ok([a, b, tolerance]) = <[Expr; 3]>::try_from(args) else {
            return plan_err!("tolerance_match takes exactly three arguments: (a, b, tol)");
        };
        Ok(ExprSimplifyResult::Simplified(abs(b - a).lt_eq(tolerance)))
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        exec_err!("tolerance_match runs only as rewritten by the optimizer")
    }
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionContext;

    use super::*;

    async fn answer(sql: &str) -> String {
        let ctx = SessionContext::new();
        ctx.register_udf(tolerance_match().as_ref().clone());
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        crate::preview::text_rows(&batches).unwrap()[0][0]
            .clone()
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn decimals_compare_exactly_at_the_edge() {
        let edge = "SELECT tolerance_match(CAST(10.00 AS DECIMAL(12,2)), CAST(10.01 AS DECIMAL(12,2)), 0.01)";
        assert_eq!(answer(edge).await, "true");
        let beyond =
            "SELECT tolerance_match(CAST(10.00 AS DECIMAL(12,2)), CAST(10.02 AS DECIMAL(12,2)), 0.01)";
        assert_eq!(answer(beyond).await, "false");
        assert_eq!(answer("SELECT tolerance_match(5, 7, 2)").await, "true");
        assert_eq!(answer("SELECT tolerance_match(5, 7, 1.999)").await, "false");
        assert_eq!(answer("SELECT tolerance_match(1.5, 1.25, 0.25)").await, "true");
    }

    #[tokio::test]
    async fn non_numbers_are_a_planning_error() {
        let ctx = SessionContext::new();
        ctx.register_udf(tolerance_match().as_ref().clone());
        let error = ctx.sql("SELECT tolerance_match('a', 1, 1)").await.unwrap_err();
        assert!(error.to_string().contains("takes three numbers"), "{error}");
    }
}
