//! Pairing a partition larger than its share of memory, exactly, through the executor's work dir.
//!
//! Both sides are written to disk in [`FANOUT`] parts by a hash of the key, so a key's rows on
//! either side land in the same part, and each part is paired on its own in memory. A part that
//! still does not fit is either made of many keys, and is split again with another hash, or of a
//! few keys with many rows — a hot key. Those need no pairing: a key with more than one row on a
//! side makes all those rows duplicates, and its rows on the other side alone or duplicates. So a
//! part that does not fit has its keys counted; every row whose fate the counts decide is written
//! out at once, and only rows of keys found once on each side go on to be paired. In a grouped or
//! proximity pass a key's rows on both sides form a group, which needs them all: its rows go on
//! together, unless the group is larger than the pass allows, which its counts decide alone.

use std::hash::BuildHasher;
use std::io::BufWriter;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{RecordBatch, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::common::hash_utils::RandomState;
use datafusion::common::utils::memory::RecordBatchMemoryCounter;
use datafusion::common::{DataFusionError, HashMap, Result};
use datafusion::execution::memory_pool::MemoryReservation;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::execution::{SpillFile, SpillWriter};
use datafusion::physical_plan::metrics::{BaselineMetrics, SpillMetrics};
use datafusion::physical_plan::spill::SpillManager;
use datafusion::physical_plan::stream::RecordBatchReceiverStream;
use datafusion::physical_plan::{EmptyRecordBatchStream, ExecutionPlan};
use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::sync::mpsc::Sender;

use super::pair::{
    Fate, Fates, Gathered, Grouping, LEFT, PairExec, RIGHT, Singles, null_keys, one_to_one_fate,
};

/// Parts a partition, or a part that does not fit, is split into.
const FANOUT: usize = 16;
/// Splits deep enough for 16⁸ parts: beyond them a part that does not fit means the pool is
/// too small for even a sliver of the data.
const MAX_DEPTH: u64 = 8;
/// A part with this many times its share of a spilled partition's rows has its keys counted, so
/// the keys that made it outsized are reported.
const OUTSIZED_PART: usize = 2;
/// Hot keys a partition reports, largest first.
const REPORTED_KEYS: usize = 3;
/// Memory a counted key takes beyond its bytes: the map's entry and the boxed key's header.
const COUNTED_KEY_OVERHEAD: usize = 48;

/// One side's rows of a part, on disk.
#[derive(Default)]
struct SideFile {
    file: Option<Arc<dyn SpillFile>>,
    rows: usize,
}

/// Both sides' rows of a part.
#[derive(Default)]
struct Part([SideFile; 2]);

impl Part {
    fn rows(&self) -> usize {
        self.0.iter().map(|side| side.rows).sum()
    }
}

/// A partition's pairing once it has spilled: writes its output to a channel as it goes.
pub(super) struct Spiller {
    keys: usize,
    grouping: Option<Arc<Grouping>>,
    schema: SchemaRef,
    /// Reads parts back; they are written by [`PartWriter`]s.
    sides: [SpillManager; 2],
    env: Arc<RuntimeEnv>,
    spills: SpillMetrics,
    converter: RowConverter,
    batch_size: usize,
    baseline: BaselineMetrics,
    partition: usize,
    hot_keys: Arc<HotKeys>,
}

impl Spiller {
    pub(super) fn new(
        exec: &PairExec,
        partition: usize,
        context: &Arc<TaskContext>,
        baseline: BaselineMetrics,
    ) -> Result<Self> {
        let metrics = exec.metrics_set();
        let spills = SpillMetrics::new(metrics, partition);
        let [left, right] = exec.sides();
        let manager = |plan: &Arc<dyn ExecutionPlan>| {
            SpillManager::new(context.runtime_env(), spills.clone(), plan.schema())
        };
        let fields = left.schema().fields()[..exec.keys()]
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        Ok(Self {
            keys: exec.keys(),
            grouping: exec.grouping().cloned().map(Arc::new),
            schema: exec.schema(),
            sides: [manager(left), manager(right)],
            env: context.runtime_env(),
            spills,
            converter: RowConverter::new(fields)?,
            batch_size: context.session_config().batch_size().max(1),
            baseline,
            partition,
            hot_keys: exec.hot_keys().clone(),
        })
    }

    /// The output of pairing `left` and `right`, which did not fit in `reservation`.
    pub(super) fn pair(
        self,
        left: Gathered,
        right: Gathered,
        reservation: MemoryReservation,
    ) -> SendableRecordBatchStream {
        let mut builder = RecordBatchReceiverStream::builder(self.schema.clone(), 2);
        let output = builder.tx();
        builder.spawn(async move {
            let mut run = Run {
                spiller: self,
                reservation,
                output,
            };
            let parts = run.scatter_gathered([left, right]).await?;
            let typical_rows = parts.iter().map(Part::rows).sum::<usize>() / FANOUT;
            for part in parts {
                if part.rows() > OUTSIZED_PART * typical_rows.max(1) {
                    // Its hot keys are reported even when the part then fits in memory.
                    run.count_keys(&part).await?;
                    run.reservation.free();
                }
                run.pair_part(part, 1).await?;
            }
            Ok(())
        });
        builder.build()
    }
}

/// One spilled pairing under way.
struct Run {
    spiller: Spiller,
    reservation: MemoryReservation,
    output: Sender<Result<RecordBatch>>,
}

impl Run {
    /// Writes both sides, as gathered and then the rest of their input, to parts on disk.
    async fn scatter_gathered(&mut self, sides: [Gathered; 2]) -> Result<Vec<Part>> {
        let mut scatters = [self.scatter(LEFT), self.scatter(RIGHT)];
        let mut rests = Vec::new();
        for (side, gathered) in sides.into_iter().enumerate() {
            for batch in &gathered.batches {
                self.scatter_batch(side, batch, 0, &mut scatters[side]).await?;
            }
            rests.push((side, gathered.rest));
        }
        self.reservation.free();
        for (side, rest) in rests {
            let Some(mut rest) = rest else { continue };
            while let Some(batch) = rest.next().await {
                self.scatter_batch(side, &batch?, 0, &mut scatters[side]).await?;
            }
        }
        Scatter::finish(scatters)
    }

    /// Pairs one part: in memory if it fits, else by counting its keys or splitting it again.
    fn pair_part(&mut self, part: Part, depth: u64) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            if part.rows() == 0 {
                return Ok(());
            }
            if let Some(fates) = self.in_memory(&part).await? {
                return self.emit(fates).await;
            }
            if depth > MAX_DEPTH {
                return Err(DataFusionError::ResourcesExhausted(format!(
                    "a reconciliation partition still holds {} rows after {MAX_DEPTH} splits and does \
                     not fit in this task's share of the executor's memory pool; give executors more memory",
                    part.rows()
                )));
            }
            if let Some(counts) = self.count_keys(&part).await? {
                let pairable = counts.pairable_rows(self.spiller.grouping.as_deref());
                if pairable < part.rows() {
                    let rest = self.separate(&part, &counts).await?;
                    drop(counts);
                    self.reservation.free();
                    return self.pair_part(rest, depth + 1).await;
                }
                self.reservation.free();
            }
            for sub in self.split(&part, depth).await? {
                self.pair_part(sub, depth + 1).await?;
            }
            Ok(())
        })
    }

    /// The part paired in memory, or `None` when it does not fit.
    async fn in_memory(&mut self, part: &Part) -> Result<Option<Fates>> {
        let mut sides = Vec::with_capacity(2);
        for side in [LEFT, RIGHT] {
            let mut batches = Vec::new();
            // Batches read back from a part share their message's buffer: count each buffer once.
            let mut memory = RecordBatchMemoryCounter::new();
            let mut stream = self.read(part, side)?;
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                if self.reservation.try_grow(memory.count_batch(&batch)).is_err() {
                    self.reservation.free();
                    return Ok(None);
                }
                batches.push(batch);
            }
            sides.push(batches);
        }
        let schemas = self.spiller.sides.each_ref().map(|m| m.schema().clone());
        let fates = Fates::in_memory(
            self.spiller.keys,
            self.spiller.grouping.as_ref(),
            (&schemas[LEFT], &sides[LEFT]),
            (&schemas[RIGHT], &sides[RIGHT]),
            &mut self.reservation,
        )?;
        if fates.is_none() {
            self.reservation.free();
        }
        Ok(fates)
    }

    /// Each key of the part with its rows per side, or `None` when the keys alone do not fit.
    async fn count_keys(&mut self, part: &Part) -> Result<Option<KeyCounts>> {
        let mut counts = KeyCounts::default();
        for side in [LEFT, RIGHT] {
            let mut stream = self.read(part, side)?;
            while let Some(batch) = stream.next().await {
                let keys = self.key_rows(&batch?)?;
                let mut grown = 0;
                for key in keys.iter() {
                    grown += counts.add(key.data(), side);
                }
                if self.reservation.try_grow(grown).is_err() {
                    self.reservation.free();
                    return Ok(None);
                }
            }
        }
        self.report_hot_keys(&counts, part.rows())?;
        Ok(Some(counts))
    }

    /// Writes out every row of the part whose fate `counts` decide, and returns the part of the
    /// rest: rows whose key is found once on each side.
    async fn separate(&mut self, part: &Part, counts: &KeyCounts) -> Result<Part> {
        let mut rest = [self.scatter(LEFT), self.scatter(RIGHT)];
        for side in [LEFT, RIGHT] {
            let mut stream = self.read(part, side)?;
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                let keys = self.key_rows(&batch)?;
                let mut decided = Singles::default();
                let mut pairable = Vec::new();
                for (row, key) in keys.iter().enumerate() {
                    match counts.fate(key.data(), side, self.spiller.grouping.as_deref()) {
                        Some((fate, group_rows)) => decided.push(row as u32, fate, u32::MAX, group_rows),
                        None => pairable.push(row as u32),
                    }
                }
                self.emit_one_side(side, batch.clone(), decided).await?;
                rest[side].append(0, &take_rows(&batch, pairable)?)?;
            }
        }
        Ok(Scatter::finish(rest)?.swap_remove(0))
    }

    /// The part split into [`FANOUT`] parts by a hash of the key seeded with `depth`.
    async fn split(&mut self, part: &Part, depth: u64) -> Result<Vec<Part>> {
        let mut scatters = [self.scatter(LEFT), self.scatter(RIGHT)];
        for side in [LEFT, RIGHT] {
            let mut stream = self.read(part, side)?;
            while let Some(batch) = stream.next().await {
                self.scatter_batch(side, &batch?, depth, &mut scatters[side])
                    .await?;
            }
        }
        Scatter::finish(scatters)
    }

    /// Writes `batch`'s rows (of `side`) to parts by a hash of their key; rows with a null key
    /// part pair with nothing and are written out at once.
    async fn scatter_batch(
        &mut self,
        side: usize,
        batch: &RecordBatch,
        depth: u64,
        scatter: &mut Scatter,
    ) -> Result<()> {
        let keys = self.key_rows(batch)?;
        let nulls = null_keys(batch, self.spiller.keys);
        let hasher = RandomState::with_seed(depth + 1);
        let mut parts: Vec<Vec<u32>> = vec![Vec::new(); FANOUT];
        let mut alone = Vec::new();
        for (row, key) in keys.iter().enumerate() {
            if nulls.as_ref().is_some_and(|n| n.is_null(row)) {
                alone.push(row as u32);
                continue;
            }
            parts[hasher.hash_one(key.data()) as usize % FANOUT].push(row as u32);
        }
        for (index, rows) in parts.into_iter().enumerate() {
            if !rows.is_empty() {
                scatter.append(index, &take_rows(batch, rows)?)?;
            }
        }
        if !alone.is_empty() {
            let fate = if side == LEFT {
                Fate::LeftAlone
            } else {
                Fate::RightAlone
            };
            self.emit_one_side(side, batch.clone(), Singles::all(alone, fate))
                .await?;
        }
        Ok(())
    }

    fn scatter(&self, side: usize) -> Scatter {
        let spiller = &self.spiller;
        Scatter {
            side,
            schema: spiller.sides[side].schema().clone(),
            env: spiller.env.clone(),
            spills: spiller.spills.clone(),
            files: (0..FANOUT).map(|_| None).collect(),
            rows: vec![0; FANOUT],
        }
    }

    fn read(&self, part: &Part, side: usize) -> Result<SendableRecordBatchStream> {
        let manager = &self.spiller.sides[side];
        match &part.0[side].file {
            Some(file) => manager.read_spill_as_stream(file.clone(), None),
            None => Ok(Box::pin(EmptyRecordBatchStream::new(manager.schema().clone()))),
        }
    }

    fn key_rows(&self, batch: &RecordBatch) -> Result<Rows> {
        Ok(self
            .spiller
            .converter
            .convert_columns(&batch.columns()[..self.spiller.keys])?)
    }

    /// Notes the keys that made the part too large for memory: those with more rows on a side
    /// than splitting the part would leave in each of its parts.
    fn report_hot_keys(&self, counts: &KeyCounts, rows: usize) -> Result<()> {
        let parser = self.spiller.converter.parser();
        let least = (rows / FANOUT).max(2) as u32;
        for (key, rows) in counts.largest(REPORTED_KEYS, least) {
            let columns = self.spiller.converter.convert_rows([parser.parse(key)])?;
            let values = columns
                .iter()
                .map(|column| array_value_to_string(column, 0))
                .collect::<Result<Vec<_>, _>>()?;
            let spiller = &self.spiller;
            spiller.hot_keys.note(spiller.partition, values.join(", "), rows);
        }
        Ok(())
    }

    async fn emit_one_side(&mut self, side: usize, batch: RecordBatch, singles: Singles) -> Result<()> {
        if singles.is_empty() {
            return Ok(());
        }
        let other = self.spiller.sides[1 - side].schema().clone();
        let fates = Fates::one_side(
            self.spiller.keys,
            self.spiller.grouping.as_ref(),
            side,
            batch,
            other,
            singles,
            self.reservation.new_empty(),
        );
        self.emit(fates).await
    }

    /// Sends `fates`' output down the channel; a consumer that has gone stops nothing here but
    /// the sending.
    async fn emit(&mut self, fates: Fates) -> Result<()> {
        let spiller = &self.spiller;
        let mut batches = Box::pin(fates.batches(
            spiller.schema.clone(),
            spiller.batch_size,
            spiller.baseline.clone(),
        ));
        while let Some(batch) = batches.next().await {
            if self.output.send(batch).await.is_err() {
                break;
            }
        }
        Ok(())
    }
}

/// A side being written to [`FANOUT`] part files.
struct Scatter {
    side: usize,
    schema: SchemaRef,
    env: Arc<RuntimeEnv>,
    spills: SpillMetrics,
    files: Vec<Option<PartWriter>>,
    rows: Vec<usize>,
}

impl Scatter {
    fn append(&mut self, part: usize, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let writer = match &mut self.files[part] {
            Some(writer) => writer,
            empty => empty.insert(PartWriter::create(&self.env, &self.schema)?),
        };
        writer.ipc.write(batch)?;
        self.rows[part] += batch.num_rows();
        self.spills.spilled_rows.add(batch.num_rows());
        Ok(())
    }

    /// Both sides' part files, finished, as parts.
    fn finish(scatters: [Scatter; 2]) -> Result<Vec<Part>> {
        let mut parts: Vec<Part> = (0..FANOUT).map(|_| Part::default()).collect();
        for scatter in scatters {
            for (index, (writer, rows)) in scatter.files.into_iter().zip(scatter.rows).enumerate() {
                let file = match writer {
                    Some(writer) => Some(writer.finish(&scatter.spills)?),
                    None => None,
                };
                parts[index].0[scatter.side] = SideFile { file, rows };
            }
        }
        Ok(parts)
    }
}

/// Bytes buffered per part file: the IPC writer writes each buffer of a batch on its own.
const PART_WRITE_BUFFER: usize = 64 * 1024;

/// One part of one side being written to the work dir, as an Arrow IPC stream (what
/// [`SpillManager::read_spill_as_stream`] reads back).
struct PartWriter {
    file: Arc<dyn SpillFile>,
    ipc: StreamWriter<BufWriter<Box<dyn SpillWriter>>>,
}

impl PartWriter {
    fn create(env: &Arc<RuntimeEnv>, schema: &SchemaRef) -> Result<Self> {
        let file = env.disk_manager.create_tmp_file("PairExec spill")?;
        let buffered = BufWriter::with_capacity(PART_WRITE_BUFFER, file.open_writer()?);
        let ipc = StreamWriter::try_new(buffered, schema)?;
        Ok(Self { file, ipc })
    }

    fn finish(mut self, spills: &SpillMetrics) -> Result<Arc<dyn SpillFile>> {
        self.ipc.finish()?;
        let mut writer = self.ipc.into_inner()?.into_inner().map_err(|e| e.into_error())?;
        writer.finish()?;
        spills.spill_file_count.add(1);
        spills.spilled_bytes.add(self.file.size().unwrap_or(0) as usize);
        Ok(self.file)
    }
}

fn take_rows(batch: &RecordBatch, rows: Vec<u32>) -> Result<RecordBatch> {
    Ok(take_record_batch(batch, &UInt32Array::from(rows))?)
}

/// A part's keys (arrow's row format) with their rows per side.
#[derive(Default)]
struct KeyCounts(HashMap<Box<[u8]>, [u32; 2]>);

impl KeyCounts {
    /// Counts a row of `side` with `key`; returns the bytes a new key took.
    fn add(&mut self, key: &[u8], side: usize) -> usize {
        if let Some(counts) = self.0.get_mut(key) {
            counts[side] += 1;
            return 0;
        }
        let mut counts = [0; 2];
        counts[side] = 1;
        self.0.insert(key.into(), counts);
        key.len() + COUNTED_KEY_OVERHEAD
    }

    /// A row's fate when its key's counts decide it, with its group's size if it is a member
    /// of one: `None` for a key that pairs, or whose rows form a group (which needs them all).
    fn fate(&self, key: &[u8], side: usize, grouping: Option<&Grouping>) -> Option<(Fate, u32)> {
        let counts = self.0.get(key).copied().unwrap_or_default();
        let (own, other) = (counts[side], counts[1 - side]);
        match grouping {
            None => one_to_one_fate(side, own, other).map(|fate| (fate, 0)),
            Some(grouping) => match grouping.fate(side, own, other) {
                Fate::Grouped => None,
                Fate::Oversized => Some((Fate::Oversized, own + other)),
                fate => Some((fate, 0)),
            },
        }
    }

    /// Rows whose keys pair, or whose rows form a group.
    fn pairable_rows(&self, grouping: Option<&Grouping>) -> usize {
        self.0
            .values()
            .filter(|c| match grouping {
                None => c[LEFT] == 1 && c[RIGHT] == 1,
                Some(grouping) => grouping.fate(LEFT, c[LEFT], c[RIGHT]) == Fate::Grouped,
            })
            .map(|c| (c[LEFT] + c[RIGHT]) as usize)
            .sum()
    }

    /// Up to `count` keys with at least `least` rows on a side, most rows first.
    fn largest(&self, count: usize, least: u32) -> Vec<(&[u8], u32)> {
        let mut keys: Vec<(&[u8], u32)> = self
            .0
            .iter()
            .map(|(key, c)| (key.as_ref(), c[LEFT].max(c[RIGHT])))
            .filter(|(_, rows)| *rows >= least)
            .collect();
        keys.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        keys.truncate(count);
        keys
    }
}

/// Keys that made a pairing spill, per partition, with their most rows on one side. Read by the
/// task's sink once the task has run, for the job's summary (not a metric: Ballista cannot carry
/// a metric that is not a number, and drops a task's metrics when one is there).
#[derive(Debug, Default)]
pub struct HotKeys(Mutex<HashMap<usize, Vec<(String, u32)>>>);

impl HotKeys {
    fn note(&self, partition: usize, key: String, rows: u32) {
        let mut partitions = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let keys = partitions.entry(partition).or_default();
        keys.push((key, rows));
        keys.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        keys.dedup_by(|a, b| a.0 == b.0);
        keys.truncate(REPORTED_KEYS);
    }

    /// Partition `partition`'s keys, most rows first, as `key (N rows)`, `; `-separated.
    pub fn describe(&self, partition: usize) -> String {
        let partitions = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Some(keys) = partitions.get(&partition) else {
            return String::new();
        };
        let shown: Vec<String> = keys
            .iter()
            .map(|(key, rows)| format!("{key} ({rows} rows)"))
            .collect();
        shown.join("; ")
    }
}
