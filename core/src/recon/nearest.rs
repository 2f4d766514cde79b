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
}

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

    /// Matches one key's rows (`rows`, per side), pushing what it decides to `decided`.
    pub(super) fn match_key(&self, rows: &[Vec<u32>; 2], decided: &mut Vec<Decided>) {
        let mut candidates: Vec<(Vec<Distance>, u32, u32)> = Vec::new();
        for &left in &rows[LEFT] {
            for &right in &rows[RIGHT] {
                let distances: Option<Vec<Distance>> = self
                    .conditions
                    .iter()
                    .map(|c| c.distance(left as usize, right as usize))
                    .collect();
                if let Some(distances) = distances {
                    candidates.push((distances, left, right));
                }
            }
        }
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
