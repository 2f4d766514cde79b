//! Proximity matching: within the rows of one key, a left and a right row are candidates when
//! they are near on every condition of the pass; candidates are taken nearest first (then by
//! both rows' values, so that the result does not depend on how rows were partitioned) while
//! neither row is taken, and candidates that tie are set apart as ambiguous.

use std::cmp::Ordering;
use std::collections::HashSet;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Decimal128Type, Float64Type, Int32Type};
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::{DataFusionError, Result};
use serde::{Deserialize, Serialize};

use super::pair::{Fate, LEFT, RIGHT};

/// One nearest-value condition: input columns `left` and `right` (already of the type they are
/// compared in: an exact decimal, `Int32` days or `Float64`) differ by at most `within`, written
/// as an integer in the columns' unit (unscaled, for decimals) or as a float.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NearColumn {
    pub left: usize,
    pub right: usize,
    pub within: String,
}

/// How far apart two values are: exactly, or as a float (compared in IEEE total order).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Distance {
    Exact(u128),
    Float(f64),
}

impl Eq for Distance {}

impl PartialOrd for Distance {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Distance {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Distance::Exact(a), Distance::Exact(b)) => a.cmp(b),
            (Distance::Float(a), Distance::Float(b)) => a.total_cmp(b),
            (Distance::Exact(_), Distance::Float(_)) => Ordering::Less,
            (Distance::Float(_), Distance::Exact(_)) => Ordering::Greater,
        }
    }
}

/// One condition over a partition's two sides.
struct Condition<'a> {
    values: [&'a dyn Array; 2],
    within: Distance,
}

impl Condition<'_> {
    /// How far apart the rows are, if they are near enough.
    fn distance(&self, left: usize, right: usize) -> Option<Distance> {
        let [l, r] = self.values;
        if l.is_null(left) || r.is_null(right) {
            return None;
        }
        let distance = match l.data_type() {
            DataType::Float64 => {
                let value = |array: &dyn Array, row| array.as_primitive::<Float64Type>().value(row);
                Distance::Float((value(r, right) - value(l, left)).abs())
            }
            DataType::Int32 => {
                let value = |array: &dyn Array, row| i128::from(array.as_primitive::<Int32Type>().value(row));
                Distance::Exact((value(r, right) - value(l, left)).unsigned_abs())
            }
            _ => {
                let value = |array: &dyn Array, row| array.as_primitive::<Decimal128Type>().value(row);
                Distance::Exact(value(r, right).checked_sub(value(l, left))?.unsigned_abs())
            }
        };
        (distance <= self.within).then_some(distance)
    }

    /// A row's value as an exact integer (days, or a decimal's unscaled value), when the
    /// condition compares exactly and the value is not null.
    fn exact(&self, side: usize, row: u32) -> Option<i128> {
        let values = self.values[side];
        let row = row as usize;
        if values.is_null(row) {
            return None;
        }
        match values.data_type() {
            DataType::Int32 => Some(i128::from(values.as_primitive::<Int32Type>().value(row))),
            DataType::Decimal128(..) => Some(values.as_primitive::<Decimal128Type>().value(row)),
            _ => None,
        }
    }
}

/// Keys with at most this many pairs of rows try every pair: cheaper than sorting them.
const EVERY_PAIR_UP_TO: usize = 64;

/// A pair a proximity match decided: its rows, its fate (paired or ambiguous) and its rank
/// within its key (the candidates of one ambiguity share one).
pub(super) struct Decided {
    pub left: u32,
    pub right: u32,
    pub fate: Fate,
    pub rank: u32,
}

/// The nearest-value conditions over a partition's two sides, with each side's rows in the
/// order that breaks ties between candidates of equal distance.
pub(super) struct Matcher<'a> {
    conditions: Vec<Condition<'a>>,
    order: [Rows; 2],
}

impl<'a> Matcher<'a> {
    pub(super) fn new(columns: &[NearColumn], sides: [&'a RecordBatch; 2]) -> Result<Self> {
        let mut conditions = Vec::with_capacity(columns.len());
        for column in columns {
            let values = [
                sides[LEFT].column(column.left).as_ref(),
                sides[RIGHT].column(column.right).as_ref(),
            ];
            let bad = |e: String| {
                DataFusionError::Internal(format!("nearest condition within {:?}: {e}", column.within))
            };
            let within = match values[LEFT].data_type() {
                DataType::Float64 => Distance::Float(column.within.parse().map_err(|e| bad(format!("{e}")))?),
                _ => Distance::Exact(column.within.parse().map_err(|e| bad(format!("{e}")))?),
            };
            conditions.push(Condition { values, within });
        }
        let order = sides.map(|batch| {
            let fields = batch
                .schema()
                .fields()
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect();
            RowConverter::new(fields)?.convert_columns(batch.columns())
        });
        let [left, right] = order;
        Ok(Self {
            conditions,
            order: [left?, right?],
        })
    }

    /// Memory the tie-breaking order holds.
    pub(super) fn size(&self) -> usize {
        self.order.iter().map(Rows::size).sum()
    }

    /// Calls `visit` with every pair of one key's rows that may be candidates: on the first
    /// condition compared exactly, only pairs within its reach (the right rows sorted by value,
    /// each left row's reach found by binary search), so a key of many rows costs about its
    /// candidates, not the product of its sides; without such a condition, or for a small key,
    /// every pair.
    fn for_each_within_reach(&self, rows: &[Vec<u32>; 2], mut visit: impl FnMut(u32, u32)) {
        let exact = self.conditions.iter().find_map(|c| match c.within {
            Distance::Exact(within) => Some((c, within)),
            Distance::Float(_) => None,
        });
        let small = rows[LEFT].len().saturating_mul(rows[RIGHT].len()) <= EVERY_PAIR_UP_TO;
        let Some((condition, within)) = exact.filter(|_| !small) else {
            for &left in &rows[LEFT] {
                for &right in &rows[RIGHT] {
                    visit(left, right);
                }
            }
            return;
        };
        let within = i128::try_from(within).unwrap_or(i128::MAX);
        let mut right: Vec<(i128, u32)> = rows[RIGHT]
            .iter()
            .filter_map(|&row| Some((condition.exact(RIGHT, row)?, row)))
            .collect();
        right.sort_unstable();
        for &left in &rows[LEFT] {
            let Some(value) = condition.exact(LEFT, left) else {
                continue;
            };
            let (low, high) = (value.saturating_sub(within), value.saturating_add(within));
            let start = right.partition_point(|(v, _)| *v < low);
            for &(_, row) in right[start..].iter().take_while(|(v, _)| *v <= high) {
                visit(left, row);
            }
        }
    }

    /// Matches one key's rows (`rows`, per side), pushing what it decides to `decided`.
    pub(super) fn match_key(&self, rows: &[Vec<u32>; 2], decided: &mut Vec<Decided>) {
        let mut candidates: Vec<(Vec<Distance>, u32, u32)> = Vec::new();
        self.for_each_within_reach(rows, |left, right| {
            let distances: Option<Vec<Distance>> = self
                .conditions
                .iter()
                .map(|c| c.distance(left as usize, right as usize))
                .collect();
            if let Some(distances) = distances {
                candidates.push((distances, left, right));
            }
        });
        let order = |side: usize, row: u32| self.order[side].row(row as usize);
        candidates.sort_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| order(LEFT, a.1).cmp(&order(LEFT, b.1)))
                .then_with(|| order(RIGHT, a.2).cmp(&order(RIGHT, b.2)))
        });
        let mut taken: [HashSet<u32>; 2] = Default::default();
        let mut rank = 0;
        let mut start = 0;
        while start < candidates.len() {
            let end = start
                + candidates[start..]
                    .iter()
                    .take_while(|c| c.0 == candidates[start].0)
                    .count();
            let free = |taken: &[HashSet<u32>; 2], (_, l, r): &(Vec<Distance>, u32, u32)| {
                !taken[LEFT].contains(l) && !taken[RIGHT].contains(r)
            };
            for k in start..end {
                if !free(&taken, &candidates[k]) {
                    continue;
                }
                let (_, left, right) = candidates[k];
                // The row's other candidates at this distance, or other rows' for its partner.
                let tied: Vec<usize> = (start..end)
                    .filter(|&m| {
                        m == k || {
                            let (_, l, r) = candidates[m];
                            (l == left || r == right) && free(&taken, &candidates[m])
                        }
                    })
                    .collect();
                rank += 1;
                let fate = if tied.len() == 1 {
                    Fate::Paired
                } else {
                    Fate::Ambiguous
                };
                for m in tied {
                    let (_, left, right) = candidates[m];
                    decided.push(Decided {
                        left,
                        right,
                        fate,
                        rank,
                    });
                    taken[LEFT].insert(left);
                    taken[RIGHT].insert(right);
                }
            }
            start = end;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, Decimal128Array, Int32Array};

    use super::*;

    /// Candidates found by the sweep, against every pair tried.
    fn candidates(matcher: &Matcher, rows: &[Vec<u32>; 2], sweep: bool) -> Vec<(u32, u32)> {
        let mut found = Vec::new();
        let mut keep = |left: u32, right: u32| {
            let near = matcher
                .conditions
                .iter()
                .all(|c| c.distance(left as usize, right as usize).is_some());
            if near {
                found.push((left, right));
            }
        };
        if sweep {
            matcher.for_each_within_reach(rows, keep);
        } else {
            for &left in &rows[LEFT] {
                for &right in &rows[RIGHT] {
                    keep(left, right);
                }
            }
        }
        found.sort_unstable();
        found
    }

    #[test]
    fn the_sweep_finds_every_candidate_and_no_other() {
        // Days with nulls and extremes, and decimals whose difference overflows.
        let days = |seed: i64| -> Int32Array {
            (0..300)
                .map(|i: i64| match (i * 7919 + seed) % 97 {
                    0 => None,
                    1 => Some(i32::MIN),
                    2 => Some(i32::MAX),
                    v => Some((v * 13 % 61) as i32),
                })
                .collect()
        };
        let cents = |seed: i128| -> Decimal128Array {
            (0..300)
                .map(|i: i128| match (i * 104_729 + seed) % 89 {
                    0 => None,
                    1 => Some(i128::MAX / 2 + 7),
                    2 => Some(-(i128::MAX / 2) - 9),
                    v => Some(v * 37 % 500),
                })
                .collect::<Decimal128Array>()
                .with_precision_and_scale(38, 2)
                .unwrap()
        };
        let batch = |seed| {
            RecordBatch::try_from_iter([
                ("d", Arc::new(days(seed as i64)) as ArrayRef),
                ("a", Arc::new(cents(seed)) as ArrayRef),
            ])
            .unwrap()
        };
        let (left, right) = (batch(3), batch(11));
        let rows = [(0..300).collect(), (0..300).collect()];
        for (column, within) in [
            (0, "2"),
            (1, "40"),
            (0, "0"),
            (1, "170141183460469231731687303715884105727"),
        ] {
            let near = [NearColumn {
                left: column,
                right: column,
                within: within.into(),
            }];
            let matcher = Matcher::new(&near, [&left, &right]).unwrap();
            let all = candidates(&matcher, &rows, false);
            assert!(!all.is_empty(), "column {column} within {within}");
            assert_eq!(
                candidates(&matcher, &rows, true),
                all,
                "column {column} within {within}"
            );
        }
    }
}
