//! `PairExec`: pairs the rows of a reconciliation's two sides by key and tells every row's
//! [`Fate`], in one pass over both sides after a shuffle on the key.
//!
//! Both inputs are hash-partitioned on their key columns, so a key's rows on either side meet in
//! the same partition. A partition keeps both sides' rows, gives every distinct key an id (one hash
//! table over the keys in arrow's row format, shared by both sides) and counts the key's rows per
//! side. A key found exactly once on each side pairs its two rows; every other row is alone or a
//! duplicate, so no row is ever multiplied and no second pass is needed. The rules are evaluated
//! above this operator, on the paired rows.
//!
//! A partition is paired in memory while the task's memory pool grants it; past that it is paired
//! through the executor's work dir instead, with the same fates ([`super::spill`]).
//!
//! A grouped pass ([`Grouping`]) gathers instead every row of a key found on both sides, as
//! long as no side without "many" has more than one: each such row is a member of its key's
//! group, emitted on its own with the group's aggregates ([`super::group`]) and size.
//!
//! Inputs: the key columns first (`keys` of them, the same types on both sides), then the side's
//! compared columns. Output (see [`paired_schema`]): `side`, both sides' keys, both sides' values
//! (the absent side's null), in a grouped pass the aggregates and the group's rows, and the
//! row's fate.

use std::fmt;
use std::hash::BuildHasher;
use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, RecordBatch, StringArray, UInt8Array, UInt32Array, new_null_array,
};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::{concat_batches, take};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::hash_utils::RandomState;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::utils::memory::RecordBatchMemoryCounter;
use datafusion::common::{DataFusionError, HashMap, HashSet, Result};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{Distribution, EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties};
use futures::{StreamExt, TryStreamExt};

use serde::{Deserialize, Serialize};

use super::group::{Aggregate, GroupAggregate};
use super::nearest::{Decided, Matcher, NearColumn};
use super::spill::{HotKeys, Spiller};

/// The output column naming a lone or duplicated row's side (`left`, `right`; null when paired).
pub const SIDE: &str = "side";
/// The output column holding each row's [`Fate`] as a `UInt8`.
pub const FATE: &str = "__fate";

/// What became of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Fate {
    /// Its key occurs exactly once on each side: the output row holds both sides.
    Paired = 0,
    /// A left row with no partner: its key is absent on the right, duplicated there, or has a
    /// null part.
    LeftAlone = 1,
    /// A right row with no partner.
    RightAlone = 2,
    /// Its key occurs more than once on its own side (which may not have many): it takes part
    /// in no pair or group.
    Duplicate = 3,
    /// A member of its key's group: the output row holds its side and the group's aggregates.
    Grouped = 4,
    /// A member of a group larger than the pass allows.
    Oversized = 5,
    /// In a proximity pass: one of several candidate pairs that tie; the output row holds both.
    Ambiguous = 6,
}

/// The output column holding a grouped row's group size (both sides' rows), as a `UInt32`.
pub const GROUP_ROWS: &str = "__group_rows";
/// The output column holding, in a proximity pass, a pair's rank within its key (candidates of
/// one ambiguity share it), as a `UInt32`.
pub const RANK: &str = "__rank";

/// How a grouped pass gathers and compares a key's rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grouping {
    /// Whether the left and the right side may have many rows per key.
    pub many: [bool; 2],
    /// A group of more rows is [`Fate::Oversized`].
    pub max_group_size: u32,
    /// The aggregates each member row carries, computed over its group.
    pub aggregates: Vec<GroupColumn>,
    /// In a proximity pass (both sides many), the conditions that pair a group's rows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nearest: Vec<NearColumn>,
}

/// One aggregate of a group's rows on one side: output column `name` holds `aggregate` of
/// input column `column` of side `side` ([`LEFT`] or [`RIGHT`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupColumn {
    pub name: String,
    pub side: usize,
    pub column: usize,
    pub aggregate: Aggregate,
}

impl Grouping {
    /// A row's fate from its key's rows on its own side and on the other.
    pub(super) fn fate(&self, side: usize, own: u32, other: u32) -> Fate {
        if !self.many[side] && own > 1 {
            return Fate::Duplicate;
        }
        if own == 0 || other == 0 || (!self.many[1 - side] && other > 1) {
            return alone(side);
        }
        if own + other > self.max_group_size {
            return Fate::Oversized;
        }
        Fate::Grouped
    }

    /// The aggregates, ready to compute, over the sides' schemas.
    fn computed(&self, sides: [&Schema; 2]) -> Result<Vec<GroupAggregate>> {
        self.aggregates
            .iter()
            .map(|a| GroupAggregate::new(a.aggregate, sides[a.side].field(a.column)))
            .collect()
    }
}

/// A row's fate when its key's counts decide it in a one-to-one pass: `None` for a key found
/// once on each side, which pairs.
pub(super) fn one_to_one_fate(side: usize, own: u32, other: u32) -> Option<Fate> {
    match (own, other) {
        (1, 1) => None,
        (own, _) if own > 1 => Some(Fate::Duplicate),
        _ => Some(alone(side)),
    }
}

fn alone(side: usize) -> Fate {
    if side == LEFT {
        Fate::LeftAlone
    } else {
        Fate::RightAlone
    }
}

/// The output schema for inputs `left` and `right` whose first `keys` columns are the key.
pub fn paired_schema(
    left: &Schema,
    right: &Schema,
    keys: usize,
    grouping: Option<&Grouping>,
) -> Result<SchemaRef> {
    let nullable = |field: &Arc<Field>| field.as_ref().clone().with_nullable(true);
    let mut fields = vec![Field::new(SIDE, DataType::Utf8, true)];
    fields.extend(left.fields()[..keys].iter().map(nullable));
    fields.extend(right.fields()[..keys].iter().map(nullable));
    fields.extend(left.fields()[keys..].iter().map(nullable));
    fields.extend(right.fields()[keys..].iter().map(nullable));
    if let Some(grouping) = grouping {
        for (column, computed) in grouping.aggregates.iter().zip(grouping.computed([left, right])?) {
            fields.push(Field::new(&column.name, computed.data_type(), true));
        }
        fields.push(Field::new(GROUP_ROWS, DataType::UInt32, true));
        if !grouping.nearest.is_empty() {
            fields.push(Field::new(RANK, DataType::UInt32, true));
        }
    }
    fields.push(Field::new(FATE, DataType::UInt8, false));
    Ok(Arc::new(Schema::new(fields)))
}

#[derive(Debug)]
pub struct PairExec {
    keys: usize,
    grouping: Option<Arc<Grouping>>,
    left: Arc<dyn ExecutionPlan>,
    right: Arc<dyn ExecutionPlan>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
    hot_keys: Arc<HotKeys>,
}

impl PairExec {
    pub fn try_new(
        keys: usize,
        grouping: Option<Grouping>,
        left: Arc<dyn ExecutionPlan>,
        right: Arc<dyn ExecutionPlan>,
    ) -> Result<Self> {
        let (left_schema, right_schema) = (left.schema(), right.schema());
        let key_types = |schema: &Schema| -> Option<Vec<DataType>> {
            let fields = schema.fields().get(..keys)?;
            Some(fields.iter().map(|f| f.data_type().clone()).collect())
        };
        match (key_types(&left_schema), key_types(&right_schema)) {
            (Some(l), Some(r)) if keys > 0 && l == r => {}
            (l, r) => {
                return Err(DataFusionError::Internal(format!(
                    "PairExec needs {keys} key columns of the same types on both sides, got {l:?} and {r:?}"
                )));
            }
        }
        let schema = paired_schema(&left_schema, &right_schema, keys, grouping.as_ref())?;
        let partitions = left.properties().output_partitioning().partition_count();
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Ok(Self {
            keys,
            grouping: grouping.map(Arc::new),
            left,
            right,
            schema,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
            hot_keys: Arc::default(),
        })
    }

    pub fn keys(&self) -> usize {
        self.keys
    }

    pub fn grouping(&self) -> Option<&Grouping> {
        self.grouping.as_deref()
    }

    /// The left and right inputs.
    pub(super) fn sides(&self) -> [&Arc<dyn ExecutionPlan>; 2] {
        [&self.left, &self.right]
    }

    pub(super) fn metrics_set(&self) -> &ExecutionPlanMetricsSet {
        &self.metrics
    }

    /// The keys that made its partitions spill, once they have run.
    pub fn hot_keys(&self) -> &Arc<HotKeys> {
        &self.hot_keys
    }
}

/// The first `keys` columns of `schema`: a side's key, on which both sides are partitioned.
pub fn key_columns(schema: &Schema, keys: usize) -> Vec<Arc<dyn PhysicalExpr>> {
    (0..keys)
        .map(|i| Arc::new(Column::new(schema.field(i).name(), i)) as Arc<dyn PhysicalExpr>)
        .collect()
}

impl DisplayAs for PairExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "PairExec: keys={}", self.keys)?;
        match &self.grouping {
            Some(grouping) => write!(
                f,
                ", many={:?}, aggregates={}",
                grouping.many,
                grouping.aggregates.len()
            ),
            None => Ok(()),
        }
    }
}

#[allow(deprecated)] // `with_new_children` is still required by the trait in DataFusion 55.
impl ExecutionPlan for PairExec {
    fn name(&self) -> &str {
        "PairExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.left, &self.right]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn required_input_distribution(&self) -> Vec<Distribution> {
        vec![
            Distribution::HashPartitioned(key_columns(&self.left.schema(), self.keys)),
            Distribution::HashPartitioned(key_columns(&self.right.schema(), self.keys)),
        ]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false, false]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [left, right] = <[_; 2]>::try_from(children)
            .map_err(|_| DataFusionError::Internal("PairExec takes exactly two children".into()))?;
        let grouping = self.grouping.as_deref().cloned();
        Ok(Arc::new(Self::try_new(self.keys, grouping, left, right)?))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let right_partitions = self.right.properties().output_partitioning().partition_count();
        if right_partitions != self.properties.output_partitioning().partition_count() {
            return Err(DataFusionError::Internal(format!(
                "PairExec's sides have {} and {right_partitions} partitions; they must be shuffled alike",
                self.properties.output_partitioning().partition_count()
            )));
        }
        // Spillable: under a fair pool each pairing may hold its share; past it, it spills.
        let mut reservation = MemoryConsumer::new(format!("PairExec[{partition}]"))
            .with_can_spill(true)
            .register(context.memory_pool());
        let batch_size = context.session_config().batch_size();
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let spiller = Spiller::new(self, partition, &context, baseline.clone())?;
        let left = self.left.execute(partition, context.clone())?;
        let right = self.right.execute(partition, context)?;
        let (keys, schema, grouping) = (self.keys, self.schema.clone(), self.grouping.clone());
        let paired = async move {
            let (left, right) = futures::try_join!(
                Gathered::from(left, &reservation),
                Gathered::from(right, &reservation)
            )?;
            if left.is_whole() && right.is_whole() {
                let timer = baseline.elapsed_compute().timer();
                let fates = Fates::in_memory(
                    keys,
                    grouping.as_ref(),
                    (&left.schema, &left.batches),
                    (&right.schema, &right.batches),
                    &mut reservation,
                )?;
                timer.done();
                if let Some(fates) = fates {
                    return Ok(fates.batches(schema, batch_size, baseline).boxed());
                }
            }
            Ok::<_, DataFusionError>(spiller.pair(left, right, reservation))
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            futures::stream::once(paired).try_flatten(),
        )))
    }
}

/// One side's rows of a partition as far as its share of memory holds them: all of them, or
/// the first batches and the stream of the rest.
pub(super) struct Gathered {
    pub(super) schema: SchemaRef,
    pub(super) batches: Vec<RecordBatch>,
    pub(super) rest: Option<SendableRecordBatchStream>,
}

impl Gathered {
    async fn from(mut input: SendableRecordBatchStream, reservation: &MemoryReservation) -> Result<Self> {
        let schema = input.schema();
        let mut batches = Vec::new();
        // Shuffled batches can share buffers (a decoded message's): each is counted once.
        let mut memory = RecordBatchMemoryCounter::new();
        while let Some(batch) = input.next().await {
            let batch = batch?;
            let size = memory.count_batch(&batch);
            let fits = reservation.try_grow(size).is_ok();
            batches.push(batch);
            if !fits {
                // Held all the same until it is written out: the reservation says so.
                reservation.grow(size);
                return Ok(Self {
                    schema,
                    batches,
                    rest: Some(input),
                });
            }
        }
        Ok(Self {
            schema,
            batches,
            rest: None,
        })
    }

    fn is_whole(&self) -> bool {
        self.rest.is_none()
    }
}

/// Whether `error` says the memory pool refused a reservation.
fn out_of_memory(error: &DataFusionError) -> bool {
    matches!(error.find_root(), DataFusionError::ResourcesExhausted(_))
}

/// One side's gathered rows as one batch, the copy counted against the memory pool.
fn concat_side(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    reservation: &MemoryReservation,
) -> Result<RecordBatch> {
    let whole = concat_batches(schema, batches)?;
    reservation.try_grow(whole.get_array_memory_size())?;
    Ok(whole)
}

/// A key's rows on one side: how many, and the first one.
#[derive(Debug, Default, Clone, Copy)]
struct SideRows {
    rows: u32,
    first: u32,
}

impl SideRows {
    fn add(&mut self, row: u32) {
        if self.rows == 0 {
            self.first = row;
        }
        self.rows += 1;
    }
}

/// A key's rows per side, indexed by [`LEFT`] and [`RIGHT`].
type KeyRows = [SideRows; 2];
pub(super) const LEFT: usize = 0;
pub(super) const RIGHT: usize = 1;

/// Rows a bucket holds on average: few enough that its hash table and keys stay in cache.
const BUCKET_ROWS: usize = 4096;

/// Which of `batch`'s rows have a null part in their first `keys` columns: rows that pair with
/// nothing.
pub(super) fn null_keys(batch: &RecordBatch, keys: usize) -> Option<NullBuffer> {
    batch.columns()[..keys]
        .iter()
        .fold(None, |all: Option<NullBuffer>, column| {
            NullBuffer::union(all.as_ref(), column.logical_nulls().as_ref())
        })
}

/// One side's rows with a whole key, scattered into buckets by the hash of their key, each
/// bucket with its keys (arrow's row format) side by side. Built in one sequential pass, so
/// that pairing a bucket touches only memory that is close together.
struct Buckets {
    /// Per bucket: the keys' bytes, where each key ends, and the row each key belongs to.
    bytes: Vec<Vec<u8>>,
    ends: Vec<Vec<u32>>,
    rows: Vec<Vec<u32>>,
}

impl Buckets {
    /// `keys` of `batch`'s rows into `count` buckets (a power of two); rows with a null key part
    /// are left out and returned.
    fn scatter(keys: &Rows, batch: &RecordBatch, key_columns: usize, count: usize) -> (Self, Vec<u32>) {
        let nulls = null_keys(batch, key_columns);
        let expected = keys.num_rows() / count + 1;
        let average_key = keys.size() / keys.num_rows().max(1) + 1;
        let mut buckets = Self {
            bytes: (0..count)
                .map(|_| Vec::with_capacity(expected * average_key))
                .collect(),
            ends: (0..count).map(|_| Vec::with_capacity(expected)).collect(),
            rows: (0..count).map(|_| Vec::with_capacity(expected)).collect(),
        };
        let shift = 64 - count.trailing_zeros();
        let hasher = RandomState::with_seed(0);
        let mut null_rows = Vec::new();
        for (row, key) in keys.iter().enumerate() {
            if nulls.as_ref().is_some_and(|n| n.is_null(row)) {
                null_rows.push(row as u32);
                continue;
            }
            let bytes = key.data();
            // `checked_shr`: with one bucket the shift is 64, and every key goes to bucket 0.
            let bucket = hasher.hash_one(bytes).checked_shr(shift).unwrap_or(0) as usize;
            buckets.bytes[bucket].extend_from_slice(bytes);
            buckets.ends[bucket].push(buckets.bytes[bucket].len() as u32);
            buckets.rows[bucket].push(row as u32);
        }
        (buckets, null_rows)
    }

    /// Bucket `bucket`'s keys with their rows.
    fn keys(&self, bucket: usize) -> impl Iterator<Item = (&[u8], u32)> {
        let (bytes, ends) = (&self.bytes[bucket], &self.ends[bucket]);
        let starts = std::iter::once(0).chain(ends.iter().copied());
        starts
            .zip(ends)
            .map(|(start, end)| &bytes[start as usize..*end as usize])
            .zip(self.rows[bucket].iter().copied())
    }

    fn size(&self) -> usize {
        let lengths = |lists: &Vec<Vec<u32>>| lists.iter().map(|l| l.capacity() * 4).sum::<usize>();
        self.bytes.iter().map(Vec::capacity).sum::<usize>() + lengths(&self.ends) + lengths(&self.rows)
    }
}

/// The output's parts, in the order they are emitted.
#[derive(Debug, Clone, Copy)]
enum Part {
    Pairs,
    LeftUnpaired,
    RightUnpaired,
}

/// Rows of one side emitted on their own — alone, duplicates, members of a group — with their
/// fates and, for members, their group's number and size.
#[derive(Debug, Default)]
pub(super) struct Singles {
    rows: Vec<u32>,
    fates: Vec<u8>,
    /// Per row: its group's number, or [`NO_GROUP`].
    groups: Vec<u32>,
    /// Per row: its group's rows on both sides (0 outside groups).
    group_rows: Vec<u32>,
}

/// The group number of a row in none.
const NO_GROUP: u32 = u32::MAX;

impl Singles {
    pub(super) fn push(&mut self, row: u32, fate: Fate, group: u32, group_rows: u32) {
        self.rows.push(row);
        self.fates.push(fate as u8);
        self.groups.push(group);
        self.group_rows.push(group_rows);
    }

    /// `rows`, all of one fate, in no group.
    pub(super) fn all(rows: Vec<u32>, fate: Fate) -> Self {
        let count = rows.len();
        Self {
            rows,
            fates: vec![fate as u8; count],
            groups: vec![NO_GROUP; count],
            group_rows: vec![0; count],
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn len(&self) -> usize {
        self.rows.len()
    }

    /// Rows of side `side` without the group members `taken`; members not taken are alone.
    fn untaken(self, side: usize, taken: &HashSet<u32>) -> Self {
        let mut kept = Singles::default();
        for i in 0..self.len() {
            let (row, member) = (self.rows[i], self.groups[i] != NO_GROUP);
            if member && taken.contains(&row) {
                continue;
            }
            let (fate, group_rows) = match member {
                true => (alone(side) as u8, 0),
                false => (self.fates[i], self.group_rows[i]),
            };
            kept.rows.push(row);
            kept.fates.push(fate);
            kept.groups.push(NO_GROUP);
            kept.group_rows.push(group_rows);
        }
        kept
    }
}

/// Pairs as two lists of row indices: left rows, and the right rows they pair with.
type Pairs = (Vec<u32>, Vec<u32>);
/// A proximity pair's fate (paired or ambiguous) and rank.
type Mark = (u8, u32);

/// A partition's rows, paired or grouped: which rows pair up, and which are emitted on their own.
pub(super) struct Fates {
    keys: usize,
    grouping: Option<Arc<Grouping>>,
    left: RecordBatch,
    right: RecordBatch,
    pairs: Pairs,
    /// In a proximity pass, per pair: its mark.
    marks: Vec<Mark>,
    singles: [Singles; 2],
    /// Per aggregate of the grouping: its value for each group.
    aggregates: Vec<ArrayRef>,
    _reservation: MemoryReservation,
}

impl Fates {
    /// Pairs both sides' rows in memory, or `None` when they do not fit in `reservation`'s share
    /// of the pool (which then holds what it held before).
    pub(super) fn in_memory(
        keys: usize,
        grouping: Option<&Arc<Grouping>>,
        left: (&SchemaRef, &[RecordBatch]),
        right: (&SchemaRef, &[RecordBatch]),
        reservation: &mut MemoryReservation,
    ) -> Result<Option<Self>> {
        let held = reservation.size();
        let fates = (|| {
            let left = concat_side(left.0, left.1, reservation)?;
            let right = concat_side(right.0, right.1, reservation)?;
            Self::of(keys, grouping, left, right, reservation)
        })();
        match fates {
            Ok(fates) => Ok(Some(fates)),
            Err(error) if out_of_memory(&error) => {
                reservation.resize(held);
                Ok(None)
            }
            Err(error) => Err(error),
        }
    }

    /// Rows of one side whose fates are decided, emitted on their own (`singles` indexes `batch`).
    pub(super) fn one_side(
        keys: usize,
        grouping: Option<&Arc<Grouping>>,
        side: usize,
        batch: RecordBatch,
        other: SchemaRef,
        singles: Singles,
        reservation: MemoryReservation,
    ) -> Self {
        let (own, other) = (batch, RecordBatch::new_empty(other));
        let (left, right, singles) = match side {
            LEFT => (own, other, [singles, Singles::default()]),
            _ => (other, own, [Singles::default(), singles]),
        };
        Self {
            keys,
            grouping: grouping.cloned(),
            left,
            right,
            pairs: Default::default(),
            marks: Vec::new(),
            singles,
            aggregates: Vec::new(),
            _reservation: reservation,
        }
    }

    /// Pairs or groups `left`'s and `right`'s rows, growing `reservation` by what it builds; the
    /// result then holds the whole reservation.
    fn of(
        keys: usize,
        grouping: Option<&Arc<Grouping>>,
        left: RecordBatch,
        right: RecordBatch,
        reservation: &mut MemoryReservation,
    ) -> Result<Self> {
        let fields = left.schema().fields()[..keys]
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        if left.num_rows().max(right.num_rows()) >= u32::MAX as usize {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "a reconciliation partition holds {} and {} rows, more than one pairing can index in memory",
                left.num_rows(),
                right.num_rows()
            )));
        }
        let converter = RowConverter::new(fields)?;
        let left_keys = converter.convert_columns(&left.columns()[..keys])?;
        let right_keys = converter.convert_columns(&right.columns()[..keys])?;
        reservation.try_grow(left_keys.size() + right_keys.size())?;

        let count = ((left.num_rows() + right.num_rows()) / BUCKET_ROWS)
            .next_power_of_two()
            .clamp(1, 1 << 16);
        let (left_buckets, left_nulls) = Buckets::scatter(&left_keys, &left, keys, count);
        let (right_buckets, right_nulls) = Buckets::scatter(&right_keys, &right, keys, count);
        let buckets_size = left_buckets.size() + right_buckets.size();
        reservation.try_grow(buckets_size)?;
        reservation.shrink(left_keys.size() + right_keys.size());
        drop((left_keys, right_keys));

        let mut pairs: Pairs = (Vec::new(), Vec::new());
        let mut singles = [
            Singles::all(left_nulls, Fate::LeftAlone),
            Singles::all(right_nulls, Fate::RightAlone),
        ];
        let mut ids: HashMap<&[u8], u32> = HashMap::new();
        let mut key_rows: Vec<KeyRows> = Vec::new();
        let mut key_groups: Vec<u32> = Vec::new();
        let mut groups = 0u32;
        let (mut left_ids, mut right_ids) = (Vec::new(), Vec::new());
        for bucket in 0..count {
            ids.clear();
            key_rows.clear();
            left_ids.clear();
            right_ids.clear();
            count_rows(
                left_buckets.keys(bucket),
                LEFT,
                &mut ids,
                &mut key_rows,
                &mut left_ids,
            );
            count_rows(
                right_buckets.keys(bucket),
                RIGHT,
                &mut ids,
                &mut key_rows,
                &mut right_ids,
            );
            match grouping {
                None => {
                    for [left, right] in key_rows.iter().filter(|[l, r]| l.rows == 1 && r.rows == 1) {
                        pairs.0.push(left.first);
                        pairs.1.push(right.first);
                    }
                }
                Some(grouping) => {
                    key_groups.clear();
                    for [left, right] in &key_rows {
                        let fate = grouping.fate(LEFT, left.rows, right.rows);
                        key_groups.push(if fate == Fate::Grouped {
                            groups += 1;
                            groups - 1
                        } else {
                            NO_GROUP
                        });
                    }
                }
            }
            let decide = Decide {
                key_rows: &key_rows,
                key_groups: &key_groups,
                grouping: grouping.map(Arc::as_ref),
            };
            let left_rows = left_buckets.rows[bucket].iter().zip(&left_ids);
            decide.singles(left_rows, LEFT, &mut singles[LEFT]);
            let right_rows = right_buckets.rows[bucket].iter().zip(&right_ids);
            decide.singles(right_rows, RIGHT, &mut singles[RIGHT]);
        }
        drop(ids);
        drop((left_buckets, right_buckets));
        reservation.shrink(buckets_size);
        let mut marks = Vec::new();
        if let Some(grouping) = grouping.filter(|g| !g.nearest.is_empty()) {
            let decided = nearest_pairs(
                grouping,
                [&left, &right],
                &mut singles,
                groups as usize,
                reservation,
            )?;
            for pair in decided {
                pairs.0.push(pair.left);
                pairs.1.push(pair.right);
                marks.push((pair.fate as u8, pair.rank));
            }
        }
        let (pairs, marks) = in_left_order(pairs, marks);
        let aggregates = match grouping {
            Some(grouping) => {
                let aggregates = group_aggregates(grouping, [&left, &right], &singles, groups as usize)?;
                reservation.try_grow(aggregates.iter().map(|a| a.get_array_memory_size()).sum())?;
                aggregates
            }
            None => Vec::new(),
        };
        Ok(Self {
            keys,
            grouping: grouping.cloned(),
            left,
            right,
            pairs,
            marks,
            singles,
            aggregates,
            _reservation: reservation.take(),
        })
    }

    fn rows(&self, part: Part) -> usize {
        match part {
            Part::Pairs => self.pairs.0.len(),
            Part::LeftUnpaired => self.singles[LEFT].len(),
            Part::RightUnpaired => self.singles[RIGHT].len(),
        }
    }

    /// The output, `batch_size` rows at a time, each batch built when the consumer asks for it.
    pub(super) fn batches(
        self,
        schema: SchemaRef,
        batch_size: usize,
        baseline: BaselineMetrics,
    ) -> impl futures::Stream<Item = Result<RecordBatch>> + Send {
        let batch_size = batch_size.max(1);
        let fates = Arc::new(self);
        let parts: Vec<(Part, Range<usize>)> = [Part::Pairs, Part::LeftUnpaired, Part::RightUnpaired]
            .into_iter()
            .flat_map(|part| {
                let rows = fates.rows(part);
                (0..rows)
                    .step_by(batch_size)
                    .map(move |start| (part, start..(start + batch_size).min(rows)))
            })
            .collect();
        futures::stream::iter(parts).map(move |(part, range)| {
            let _timer = baseline.elapsed_compute().timer();
            let batch = fates.batch(&schema, part, range)?;
            baseline.record_output(batch.num_rows());
            Ok(batch)
        })
    }

    /// Rows `range` of one part of the output.
    fn batch(&self, schema: &SchemaRef, part: Part, range: Range<usize>) -> Result<RecordBatch> {
        let rows = range.len();
        let indices = |list: &[u32]| UInt32Array::from(list[range.clone()].to_vec());
        let (left, right, side, singles) = match part {
            Part::Pairs => (
                Some(indices(&self.pairs.0)),
                Some(indices(&self.pairs.1)),
                None,
                None,
            ),
            Part::LeftUnpaired => (
                Some(indices(&self.singles[LEFT].rows)),
                None,
                Some("left"),
                Some(&self.singles[LEFT]),
            ),
            Part::RightUnpaired => (
                None,
                Some(indices(&self.singles[RIGHT].rows)),
                Some("right"),
                Some(&self.singles[RIGHT]),
            ),
        };
        let gather = |batch: &RecordBatch, taken: &Option<UInt32Array>, columns: Range<usize>| {
            columns
                .map(|column| match taken {
                    Some(indices) => take(batch.column(column), indices, None),
                    None => Ok(new_null_array(batch.schema_ref().field(column).data_type(), rows)),
                })
                .collect::<Result<Vec<ArrayRef>, _>>()
        };
        let left_keys = gather(&self.left, &left, 0..self.keys)?;
        // A pair's keys are equal byte for byte, so they are the same values: the right side's
        // are not gathered again (it is the side read at random).
        let right_keys = match part {
            Part::Pairs => left_keys.clone(),
            _ => gather(&self.right, &right, 0..self.keys)?,
        };
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        columns.push(match side {
            Some(side) => Arc::new(StringArray::from(vec![side; rows])),
            None => new_null_array(&DataType::Utf8, rows),
        });
        columns.extend(left_keys);
        columns.extend(right_keys);
        columns.extend(gather(&self.left, &left, self.keys..self.left.num_columns())?);
        columns.extend(gather(&self.right, &right, self.keys..self.right.num_columns())?);
        if let Some(grouping) = &self.grouping {
            let members = singles.map(|s| (&s.groups[range.clone()], &s.group_rows[range.clone()]));
            let groups = UInt32Array::from_iter(
                (0..rows).map(|i| members.and_then(|(g, _)| (g[i] != NO_GROUP).then_some(g[i]))),
            );
            for index in 0..grouping.aggregates.len() {
                columns.push(match self.aggregates.get(index) {
                    Some(values) => take(values, &groups, None)?,
                    None => new_null_array(schema.field(columns.len()).data_type(), rows),
                });
            }
            columns.push(Arc::new(UInt32Array::from_iter((0..rows).map(|i| {
                members.and_then(|(_, sizes)| (sizes[i] > 0).then_some(sizes[i]))
            }))));
            if !grouping.nearest.is_empty() {
                let ranks = match singles {
                    Some(_) => UInt32Array::new_null(rows),
                    None => {
                        UInt32Array::from_iter_values(self.marks[range.clone()].iter().map(|(_, rank)| *rank))
                    }
                };
                columns.push(Arc::new(ranks));
            }
        }
        let fates = match (singles, self.marks.is_empty()) {
            (Some(singles), _) => singles.fates[range].to_vec(),
            (None, true) => vec![Fate::Paired as u8; rows],
            (None, false) => self.marks[range].iter().map(|(fate, _)| *fate).collect(),
        };
        columns.push(Arc::new(UInt8Array::from(fates)));
        Ok(RecordBatch::try_new(schema.clone(), columns)?)
    }
}

/// Pairs, and their marks if they have any, in left row order. Buckets come in hash order; in
/// left order, gathering the pairs' left columns reads memory front to back, not at random.
fn in_left_order(pairs: Pairs, marks: Vec<Mark>) -> (Pairs, Vec<Mark>) {
    debug_assert!(
        marks.is_empty() || marks.len() == pairs.0.len(),
        "every pair marked, or none"
    );
    let mut marks = marks.into_iter();
    let mut rows: Vec<(u32, u32, Option<Mark>)> = pairs
        .0
        .into_iter()
        .zip(pairs.1)
        .map(|(left, right)| (left, right, marks.next()))
        .collect();
    rows.sort_unstable_by_key(|&(left, right, _)| (left, right));
    let marks = rows.iter().filter_map(|&(_, _, mark)| mark).collect();
    (
        rows.into_iter().map(|(left, right, _)| (left, right)).unzip(),
        marks,
    )
}

/// Gives each key of `keys` (one side's, `side`) an id in `ids` (its [`KeyRows`] at that index
/// in `key_rows`), adds the key's row to that side's count, and pushes each key's id to `row_ids`.
fn count_rows<'a>(
    keys: impl Iterator<Item = (&'a [u8], u32)>,
    side: usize,
    ids: &mut HashMap<&'a [u8], u32>,
    key_rows: &mut Vec<KeyRows>,
    row_ids: &mut Vec<u32>,
) {
    for (key, row) in keys {
        let next = key_rows.len() as u32;
        let id = *ids.entry(key).or_insert(next);
        if id == next {
            key_rows.push(KeyRows::default());
        }
        key_rows[id as usize][side].add(row);
        row_ids.push(id);
    }
}

/// What decides the fates of a bucket's rows: its keys' rows per side and, in a grouped pass,
/// its keys' group numbers.
struct Decide<'a> {
    key_rows: &'a [KeyRows],
    key_groups: &'a [u32],
    grouping: Option<&'a Grouping>,
}

impl Decide<'_> {
    /// Pushes the rows of `rows` (row, key id; all of side `side`) that do not pair to
    /// `singles`, with their fates and groups.
    fn singles<'r>(
        &self,
        rows: impl Iterator<Item = (&'r u32, &'r u32)>,
        side: usize,
        singles: &mut Singles,
    ) {
        for (row, id) in rows {
            let key = &self.key_rows[*id as usize];
            let (own, other) = (key[side].rows, key[1 - side].rows);
            let fate = match self.grouping {
                None => match one_to_one_fate(side, own, other) {
                    Some(fate) => fate,
                    None => continue,
                },
                Some(grouping) => grouping.fate(side, own, other),
            };
            let (group, size) = match fate {
                Fate::Grouped => (self.key_groups[*id as usize], own + other),
                Fate::Oversized => (NO_GROUP, own + other),
                _ => (NO_GROUP, 0),
            };
            singles.push(*row, fate, group, size);
        }
    }
}

/// In a proximity pass: each group's rows matched by their nearest values ([`Matcher`]); the
/// members it leaves are alone.
fn nearest_pairs(
    grouping: &Grouping,
    sides: [&RecordBatch; 2],
    singles: &mut [Singles; 2],
    groups: usize,
    reservation: &MemoryReservation,
) -> Result<Vec<Decided>> {
    let matcher = Matcher::new(&grouping.nearest, sides)?;
    reservation.try_grow(matcher.size())?;
    let mut members: Vec<[Vec<u32>; 2]> = (0..groups).map(|_| Default::default()).collect();
    for side in [LEFT, RIGHT] {
        for (row, group) in singles[side].rows.iter().zip(&singles[side].groups) {
            if *group != NO_GROUP {
                members[*group as usize][side].push(*row);
            }
        }
    }
    let mut decided = Vec::new();
    for rows in &members {
        matcher.match_key(rows, &mut decided);
    }
    let mut taken: [HashSet<u32>; 2] = Default::default();
    for pair in &decided {
        taken[LEFT].insert(pair.left);
        taken[RIGHT].insert(pair.right);
    }
    for side in [LEFT, RIGHT] {
        singles[side] = std::mem::take(&mut singles[side]).untaken(side, &taken[side]);
    }
    reservation.shrink(matcher.size());
    Ok(decided)
}

/// Each of `grouping`'s aggregates for each of `groups` groups, over the members in `singles`.
fn group_aggregates(
    grouping: &Grouping,
    sides: [&RecordBatch; 2],
    singles: &[Singles; 2],
    groups: usize,
) -> Result<Vec<ArrayRef>> {
    let computed = grouping.computed(sides.map(|batch| batch.schema_ref().as_ref()))?;
    let mut aggregates = Vec::with_capacity(computed.len());
    for (column, aggregate) in grouping.aggregates.iter().zip(computed) {
        let members = &singles[column.side];
        let (rows, group_of): (Vec<u32>, Vec<usize>) = members
            .rows
            .iter()
            .zip(&members.groups)
            .filter(|(_, group)| **group != NO_GROUP)
            .map(|(row, group)| (*row, *group as usize))
            .unzip();
        let values = take(
            sides[column.side].column(column.column),
            &UInt32Array::from(rows),
            None,
        )?;
        aggregates.push(aggregate.per_group(&values, &group_of, groups)?);
    }
    Ok(aggregates)
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{AsArray, Int32Array, Int64Array};
    use datafusion::arrow::datatypes::{Int32Type, Int64Type};
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::execution::memory_pool::FairSpillPool;
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use datafusion::physical_plan::collect;
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::*;

    type Key = (Option<&'static str>, Option<i32>);
    /// A [`Key`] as read back from the output.
    type OwnedKey = (Option<String>, Option<i32>);

    /// A side's one-partition input: key columns `k` and `n`, value column `v`.
    fn side(prefix: &str, rows: &[(Key, i64)]) -> Arc<dyn ExecutionPlan> {
        let schema = Arc::new(Schema::new(vec![
            Field::new(format!("{prefix}_k"), DataType::Utf8, true),
            Field::new(format!("{prefix}_n"), DataType::Int32, true),
            Field::new(format!("{prefix}_v"), DataType::Int64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from_iter(rows.iter().map(|((k, _), _)| *k))),
                Arc::new(Int32Array::from_iter(rows.iter().map(|((_, n), _)| *n))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|(_, v)| *v))),
            ],
        )
        .unwrap();
        // Two batches or more where there are rows, so gathering a side is exercised too.
        let rows = batch.num_rows();
        let chunk = (rows / 2).clamp(1, 2048);
        let batches = (0..rows)
            .step_by(chunk)
            .map(|start| batch.slice(start, chunk.min(rows - start)))
            .collect::<Vec<_>>();
        MemorySourceConfig::try_new_exec(&[batches], schema, None).unwrap()
    }

    /// The key an output row holds for one side (`prefix`), read from its `_k` and `_n` columns.
    fn output_key(batch: &RecordBatch, prefix: &str, row: usize) -> Option<OwnedKey> {
        let k = batch.column_by_name(&format!("{prefix}_k")).unwrap();
        let n = batch.column_by_name(&format!("{prefix}_n")).unwrap();
        let k = k
            .is_valid(row)
            .then(|| k.as_string::<i32>().value(row).to_string());
        let n = n.is_valid(row).then(|| n.as_primitive::<Int32Type>().value(row));
        (k.is_some() || n.is_some()).then_some((k, n))
    }

    /// A side's keys by the value of their rows (values tell rows apart in these tests, or
    /// belong to rows of the same key).
    fn keys_by_value(rows: &[(Key, i64)]) -> HashMap<i64, OwnedKey> {
        rows.iter()
            .filter(|((k, n), _)| k.is_some() || n.is_some())
            .map(|((k, n), v)| (*v, (k.map(str::to_string), *n)))
            .collect()
    }

    /// Output rows as (fate, side, left value, right value), sorted; every row's keys must be
    /// those of the input rows its values came from.
    async fn paired(left: &[(Key, i64)], right: &[(Key, i64)]) -> Vec<OutputRow> {
        paired_within(left, right, None).await.0
    }

    /// (fate, side, left value, right value) of an output row.
    type OutputRow = (u8, Option<String>, Option<i64>, Option<i64>);

    /// [`paired`], on executors whose memory pool holds `pool` bytes, with the operator's metrics.
    async fn paired_within(
        left: &[(Key, i64)],
        right: &[(Key, i64)],
        pool: Option<usize>,
    ) -> (Vec<OutputRow>, MetricsSet, String) {
        let exec = Arc::new(PairExec::try_new(2, None, side("l", left), side("r", right)).unwrap());
        let mut runtime = RuntimeEnvBuilder::new();
        if let Some(bytes) = pool {
            runtime = runtime.with_memory_pool(Arc::new(FairSpillPool::new(bytes)));
        }
        let context = SessionContext::new_with_config_rt(SessionConfig::new(), runtime.build_arc().unwrap());
        let batches = collect(exec.clone(), context.task_ctx()).await.unwrap();
        let (left_keys, right_keys) = (keys_by_value(left), keys_by_value(right));
        let input_key = |keys: &HashMap<i64, OwnedKey>, v: Option<i64>| v.and_then(|v| keys.get(&v).cloned());
        let mut rows = Vec::new();
        for batch in batches {
            let column = |name: &str| batch.column_by_name(name).unwrap().clone();
            let (side, left_v, right_v, fate) = (column(SIDE), column("l_v"), column("r_v"), column(FATE));
            for row in 0..batch.num_rows() {
                let value = |array: &ArrayRef| {
                    array
                        .is_valid(row)
                        .then(|| array.as_primitive::<Int64Type>().value(row))
                };
                assert_eq!(
                    output_key(&batch, "l", row),
                    input_key(&left_keys, value(&left_v))
                );
                assert_eq!(
                    output_key(&batch, "r", row),
                    input_key(&right_keys, value(&right_v))
                );
                rows.push((
                    fate.as_primitive::<datafusion::arrow::datatypes::UInt8Type>()
                        .value(row),
                    side.is_valid(row)
                        .then(|| side.as_string::<i32>().value(row).to_string()),
                    value(&left_v),
                    value(&right_v),
                ));
            }
        }
        rows.sort();
        (rows, exec.metrics().unwrap(), exec.hot_keys().describe(0))
    }

    #[tokio::test]
    async fn every_row_gets_its_fate_and_none_is_multiplied() {
        let left = [
            ((Some("a"), Some(1)), 1), // pairs with right 101
            ((Some("a"), Some(2)), 2), // same text, other number: its own key, alone
            ((Some("b"), Some(1)), 3), // duplicated on the left
            ((Some("b"), Some(1)), 4), // duplicated on the left
            ((Some("c"), Some(1)), 5), // its partner is duplicated on the right: alone
            ((None, Some(1)), 6),      // null key part: alone
            ((Some("e"), None), 7),    // null key part, even with a right row alike: alone
        ];
        let right = [
            ((Some("a"), Some(1)), 101),
            ((Some("b"), Some(1)), 103), // its partner is duplicated on the left: alone
            ((Some("c"), Some(1)), 105), // duplicated on the right
            ((Some("c"), Some(1)), 106), // duplicated on the right
            ((Some("e"), None), 107),    // null key part: alone
            ((Some("f"), Some(1)), 108), // no partner: alone
        ];
        let (paired_, left_alone, right_alone, duplicate) = (
            Fate::Paired as u8,
            Fate::LeftAlone as u8,
            Fate::RightAlone as u8,
            Fate::Duplicate as u8,
        );
        let l = Some;
        let side = |s: &str| Some(s.to_string());
        let mut expected = vec![
            (paired_, None, l(1), l(101)),
            (left_alone, side("left"), l(2), None),
            (duplicate, side("left"), l(3), None),
            (duplicate, side("left"), l(4), None),
            (left_alone, side("left"), l(5), None),
            (left_alone, side("left"), l(6), None),
            (left_alone, side("left"), l(7), None),
            (right_alone, side("right"), None, l(103)),
            (duplicate, side("right"), None, l(105)),
            (duplicate, side("right"), None, l(106)),
            (right_alone, side("right"), None, l(107)),
            (right_alone, side("right"), None, l(108)),
        ];
        expected.sort();
        assert_eq!(paired(&left, &right).await, expected);
    }

    #[tokio::test]
    async fn against_an_empty_side_every_row_is_alone_or_a_duplicate() {
        let left = [
            ((Some("a"), Some(1)), 1),
            ((Some("a"), Some(1)), 2),
            ((Some("b"), Some(1)), 3),
        ];
        let left_side = || Some("left".to_string());
        assert_eq!(
            paired(&left, &[]).await,
            vec![
                (Fate::LeftAlone as u8, left_side(), Some(3), None),
                (Fate::Duplicate as u8, left_side(), Some(1), None),
                (Fate::Duplicate as u8, left_side(), Some(2), None),
            ]
        );
        assert_eq!(paired(&[], &[]).await, vec![]);
    }

    #[tokio::test]
    async fn many_buckets_give_the_same_fates() {
        // 40,000 rows: about ten buckets. Left keys 0..20,000, each multiple of 1,000 twice;
        // right keys 10,000..30,000, each multiple of 700 twice.
        let numbers = |range: std::ops::Range<i64>, twice: i64| {
            range.flat_map(move |i| std::iter::repeat_n(i, if i % twice == 0 { 2 } else { 1 }))
        };
        let rows = |numbers: Vec<i64>| -> Vec<(Key, i64)> {
            numbers
                .into_iter()
                .map(|i| ((Some(if i % 2 == 0 { "even" } else { "odd" }), Some(i as i32)), i))
                .collect()
        };
        let left: Vec<i64> = numbers(0..20_000, 1_000).collect();
        let right: Vec<i64> = numbers(10_000..30_000, 700).collect();
        let fates = paired(&rows(left.clone()), &rows(right.clone())).await;

        let counts = |list: &[i64]| {
            let mut counts = std::collections::HashMap::<i64, usize>::new();
            list.iter().for_each(|i| *counts.entry(*i).or_default() += 1);
            counts
        };
        let (left_counts, right_counts) = (counts(&left), counts(&right));
        let count =
            |counts: &std::collections::HashMap<i64, usize>, i: i64| counts.get(&i).copied().unwrap_or(0);
        let mut expected = std::collections::BTreeMap::<u8, usize>::new();
        for (own, mine, theirs, alone) in [
            (&left, &left_counts, &right_counts, Fate::LeftAlone),
            (&right, &right_counts, &left_counts, Fate::RightAlone),
        ] {
            for i in own.iter() {
                let fate = match (count(mine, *i), count(theirs, *i)) {
                    (1, 1) => continue,
                    (1, _) => alone,
                    _ => Fate::Duplicate,
                };
                *expected.entry(fate as u8).or_default() += 1;
            }
        }
        let pairs = left
            .iter()
            .filter(|i| count(&left_counts, **i) == 1 && count(&right_counts, **i) == 1)
            .count();
        expected.insert(Fate::Paired as u8, pairs);
        let mut seen = std::collections::BTreeMap::<u8, usize>::new();
        for (fate, _, left_value, right_value) in &fates {
            *seen.entry(*fate).or_default() += 1;
            if *fate == Fate::Paired as u8 {
                assert_eq!(left_value, right_value, "a pair joins rows of one key");
            }
        }
        assert_eq!(seen, expected);
    }

    #[tokio::test]
    async fn a_partition_larger_than_its_memory_spills_and_pairs_the_same() {
        // About 50,000 rows a side over 30,000 keys: on the left, key 7 has 20,000 rows (a hot
        // key) and every 5th key a second row; on the right, every 11th key is missing and every
        // 13th has a null part. Numbers tell rows apart; the text part is shared.
        let key = |i: i64| (Some("k"), Some(i as i32));
        let mut left: Vec<(Key, i64)> = (0..20_000).map(|i| (key(7), 300_000 + i)).collect();
        left.extend((0..30_000).map(|i| (key(i), i)));
        left.extend((0..30_000).step_by(5).map(|i| (key(i), 100_000 + i)));
        let right: Vec<(Key, i64)> = (0..40_000)
            .filter(|i| i % 11 != 0)
            .map(|i| match i % 13 {
                0 => ((Some("k"), None), 200_000 + i),
                _ => (key(i), 200_000 + i),
            })
            .collect();

        let (unbounded, metrics, hot) = paired_within(&left, &right, None).await;
        assert_eq!((metrics.spill_count(), hot.as_str()), (Some(0), ""));
        let (bounded, metrics, hot) = paired_within(&left, &right, Some(256 * 1024)).await;
        assert!(metrics.spill_count().unwrap() > 0, "{metrics:?}");
        assert_eq!(bounded.len(), left.len() + right.len() - paired_rows(&unbounded));
        assert_eq!(bounded, unbounded, "spilling changes no row's fate");
        assert!(hot.starts_with("k, 7 (20001 rows)"), "{hot}");
    }

    fn paired_rows(rows: &[OutputRow]) -> usize {
        rows.iter().filter(|r| r.0 == Fate::Paired as u8).count()
    }

    /// (fate, side, left value, right value, min of the group's left values, sum of its right
    /// values, its rows) of an output row.
    type GroupedRow = (
        u8,
        Option<String>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
        Option<u32>,
    );

    /// Rows of a one-to-many pass over `left` and `right`, groups of at most 5 rows, on
    /// executors whose memory pool holds `pool` bytes, sorted.
    async fn grouped(
        left: &[(Key, i64)],
        right: &[(Key, i64)],
        pool: Option<usize>,
    ) -> (Vec<GroupedRow>, MetricsSet) {
        let grouping = Grouping {
            many: [false, true],
            max_group_size: 5,
            aggregates: vec![
                GroupColumn {
                    name: "min_l".into(),
                    side: LEFT,
                    column: 2,
                    aggregate: Aggregate::Min,
                },
                GroupColumn {
                    name: "sum_r".into(),
                    side: RIGHT,
                    column: 2,
                    aggregate: Aggregate::Sum,
                },
            ],
            nearest: Vec::new(),
        };
        let exec = Arc::new(PairExec::try_new(2, Some(grouping), side("l", left), side("r", right)).unwrap());
        let mut runtime = RuntimeEnvBuilder::new();
        if let Some(bytes) = pool {
            runtime = runtime.with_memory_pool(Arc::new(FairSpillPool::new(bytes)));
        }
        let context = SessionContext::new_with_config_rt(SessionConfig::new(), runtime.build_arc().unwrap());
        let batches = collect(exec.clone(), context.task_ctx()).await.unwrap();
        let mut rows = Vec::new();
        for batch in batches {
            let column = |name: &str| batch.column_by_name(name).unwrap().clone();
            let number = |array: &ArrayRef, row: usize| {
                array
                    .is_valid(row)
                    .then(|| array.as_primitive::<Int64Type>().value(row))
            };
            let (side, fate, sizes) = (column(SIDE), column(FATE), column(GROUP_ROWS));
            for row in 0..batch.num_rows() {
                rows.push((
                    fate.as_primitive::<datafusion::arrow::datatypes::UInt8Type>()
                        .value(row),
                    side.is_valid(row)
                        .then(|| side.as_string::<i32>().value(row).to_string()),
                    number(&column("l_v"), row),
                    number(&column("r_v"), row),
                    number(&column("min_l"), row),
                    number(&column("sum_r"), row),
                    sizes.is_valid(row).then(|| {
                        sizes
                            .as_primitive::<datafusion::arrow::datatypes::UInt32Type>()
                            .value(row)
                    }),
                ));
            }
        }
        rows.sort();
        (rows, exec.metrics().unwrap())
    }

    #[tokio::test]
    async fn a_grouped_pass_gathers_each_keys_rows_with_their_aggregates() {
        let key = |k: &'static str| (Some(k), Some(1));
        let left = [
            (key("a"), 1),
            (key("b"), 2),
            (key("c"), 3), // twice on the left, which has one row per key: duplicates
            (key("c"), 33),
            (key("d"), 4), // no right rows: alone
            (key("e"), 5), // with 5 right rows, a group of 6: oversized
            ((None, Some(1)), 6),
        ];
        let mut right = vec![
            (key("a"), 10),
            (key("a"), 20),
            (key("a"), 30),
            (key("b"), 7),
            (key("c"), 8),
        ];
        right.extend((0..5).map(|i| (key("e"), 100 + i)));
        let (g, o) = (Fate::Grouped as u8, Fate::Oversized as u8);
        let l = |s: &str| Some(s.to_string());
        let mut expected: Vec<GroupedRow> = vec![
            (g, l("left"), Some(1), None, Some(1), Some(60), Some(4)),
            (g, l("right"), None, Some(10), Some(1), Some(60), Some(4)),
            (g, l("right"), None, Some(20), Some(1), Some(60), Some(4)),
            (g, l("right"), None, Some(30), Some(1), Some(60), Some(4)),
            (g, l("left"), Some(2), None, Some(2), Some(7), Some(2)),
            (g, l("right"), None, Some(7), Some(2), Some(7), Some(2)),
            (Fate::Duplicate as u8, l("left"), Some(3), None, None, None, None),
            (Fate::Duplicate as u8, l("left"), Some(33), None, None, None, None),
            (
                Fate::RightAlone as u8,
                l("right"),
                None,
                Some(8),
                None,
                None,
                None,
            ),
            (Fate::LeftAlone as u8, l("left"), Some(4), None, None, None, None),
            (o, l("left"), Some(5), None, None, None, Some(6)),
            (Fate::LeftAlone as u8, l("left"), Some(6), None, None, None, None),
        ];
        expected.extend((0..5).map(|i| (o, l("right"), None, Some(100 + i), None, None, Some(6))));
        expected.sort();
        assert_eq!(grouped(&left, &right, None).await.0, expected);
    }

    #[tokio::test]
    async fn a_grouped_pass_that_spills_groups_the_same() {
        // 20,000 keys, each with one left row and 1 to 3 right rows; every 7th key has 50 right
        // rows, more than a group may have.
        let key = |i: i64| (Some("k"), Some(i as i32));
        let left: Vec<(Key, i64)> = (0..20_000).map(|i| (key(i), i)).collect();
        let right: Vec<(Key, i64)> = (0..20_000)
            .flat_map(|i| {
                let rows = if i % 7 == 0 { 50 } else { 1 + i % 3 };
                (0..rows).map(move |j| (key(i), 1_000_000 + i * 100 + j))
            })
            .collect();
        let (unbounded, _) = grouped(&left, &right, None).await;
        assert_eq!(unbounded.len(), left.len() + right.len());
        let oversized = unbounded.iter().filter(|r| r.0 == Fate::Oversized as u8).count();
        assert_eq!(oversized, 2_858 * 51, "every 7th key's group is too large");
        let (bounded, metrics) = grouped(&left, &right, Some(256 * 1024)).await;
        assert!(metrics.spill_count().unwrap() > 0, "{metrics:?}");
        assert!(bounded == unbounded, "spilling changes no group");
    }

    #[test]
    fn a_key_both_sides_lack_is_refused() {
        for keys in [0, 4] {
            let left = side("l", &[]);
            let right = side("r", &[]);
            let error = PairExec::try_new(keys, None, left, right)
                .unwrap_err()
                .to_string();
            assert!(error.contains("same types"), "{error}");
        }
    }
}
