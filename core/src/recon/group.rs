//! Group aggregates: a grouped pass compares the sum, minimum, maximum or count of a group's
//! rows on one side with the other side's, computed by DataFusion's own aggregate functions.

use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema};
use datafusion::common::Result;
use datafusion::functions_aggregate::count::count_udaf;
use datafusion::functions_aggregate::min_max::{max_udaf, min_udaf};
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::logical_expr::type_coercion::functions::fields_with_udf;
use datafusion::logical_expr::{AggregateUDF, EmitTo};
use datafusion::physical_expr::aggregate::{AggregateExprBuilder, AggregateFunctionExpr};
use datafusion::physical_expr::expressions::Column;
use serde::{Deserialize, Serialize};

/// What a grouped pass's rule compares of a group's rows on a side that has many.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Aggregate {
    Sum,
    Min,
    Max,
    /// The rows whose value is not null.
    Count,
}

impl Aggregate {
    fn function(self) -> Arc<AggregateUDF> {
        match self {
            Aggregate::Sum => sum_udaf(),
            Aggregate::Min => min_udaf(),
            Aggregate::Max => max_udaf(),
            Aggregate::Count => count_udaf(),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Aggregate::Sum => "sum",
            Aggregate::Min => "min",
            Aggregate::Max => "max",
            Aggregate::Count => "count",
        }
    }
}

/// One aggregate of one column, computed for many groups at once.
#[derive(Debug)]
pub struct GroupAggregate {
    /// The type the column is read in (sums of integers add in 64 bits, for one).
    input: DataType,
    expr: AggregateFunctionExpr,
}

impl GroupAggregate {
    /// `aggregate` of a column like `input`; an error if the function does not take its type.
    pub fn new(aggregate: Aggregate, input: &Field) -> Result<Self> {
        let function = aggregate.function();
        let field: FieldRef = Arc::new(input.clone().with_name("value").with_nullable(true));
        let coerced = fields_with_udf(&[field], function.as_ref())?.remove(0);
        let schema = Arc::new(Schema::new(vec![coerced.as_ref().clone()]));
        let expr = AggregateExprBuilder::new(function, vec![Arc::new(Column::new("value", 0))])
            .schema(schema)
            .alias(aggregate.name())
            .build()?;
        Ok(Self {
            input: coerced.data_type().clone(),
            expr,
        })
    }

    /// The type of its results.
    pub fn data_type(&self) -> DataType {
        self.expr.field().data_type().clone()
    }

    /// The aggregate of each of `groups` groups, over `values` where `group_of[i]` is the group
    /// of `values[i]`.
    pub fn per_group(&self, values: &ArrayRef, group_of: &[usize], groups: usize) -> Result<ArrayRef> {
        let values = cast(values, &self.input)?;
        let mut accumulator = self.expr.create_groups_accumulator()?;
        accumulator.update_batch(&[values], group_of, None, groups)?;
        accumulator.evaluate(EmitTo::All)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Array, AsArray, Decimal128Array, Int32Array, StringArray};
    use datafusion::arrow::datatypes::{Decimal128Type, Int64Type};

    use super::*;

    #[test]
    fn each_group_gets_its_own_aggregate() {
        let amounts: ArrayRef = Arc::new(
            Decimal128Array::from(vec![Some(150), Some(250), None, Some(1_000)])
                .with_precision_and_scale(12, 2)
                .unwrap(),
        );
        let field = Field::new("amount", amounts.data_type().clone(), true);
        let groups = [0, 0, 1, 2];
        let sum = GroupAggregate::new(Aggregate::Sum, &field).unwrap();
        assert_eq!(sum.data_type(), DataType::Decimal128(22, 2));
        let sums = sum.per_group(&amounts, &groups, 3).unwrap();
        let sums = sums.as_primitive::<Decimal128Type>();
        assert_eq!(
            (sums.value(0), sums.is_null(1), sums.value(2)),
            (400, true, 1_000)
        );

        let count = GroupAggregate::new(Aggregate::Count, &field).unwrap();
        let counts = count.per_group(&amounts, &groups, 3).unwrap();
        assert_eq!(counts.as_primitive::<Int64Type>().values(), &[2, 0, 1]);

        let numbers: ArrayRef = Arc::new(Int32Array::from(vec![3, 4, 5]));
        let field = Field::new("n", DataType::Int32, false);
        let sums = GroupAggregate::new(Aggregate::Sum, &field)
            .unwrap()
            .per_group(&numbers, &[1, 1, 0], 2)
            .unwrap();
        assert_eq!(sums.as_primitive::<Int64Type>().values(), &[5, 7]);

        let names: ArrayRef = Arc::new(StringArray::from(vec!["b", "a", "c"]));
        let field = Field::new("name", DataType::Utf8, false);
        let least = GroupAggregate::new(Aggregate::Min, &field)
            .unwrap()
            .per_group(&names, &[0, 0, 1], 2)
            .unwrap();
        assert_eq!(least.as_string::<i32>().value(0), "a");
        assert!(
            GroupAggregate::new(Aggregate::Sum, &field).is_err(),
            "text has no sum"
        );
    }
}
