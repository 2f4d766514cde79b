//! What a plan may do on a Kalla cluster: Kalla's own nodes and a listed set of DataFusion
//! operators, reading and writing files only under the configured data locations.
//!
//! The scheduler checks each logical plan before it plans it (an analyzer rule) and every executor
//! checks each task's plan before it runs it, so a plan forged by a holder of a client certificate
//! (or sent by a compromised scheduler) is refused before any I/O, and the refusal is logged.
//! Source engines' scans check themselves where they are decoded (Postgres: see `postgres::exec`).

use std::path::PathBuf;
use std::sync::Arc;

use ballista_core::execution_plans::{RangeShuffleReaderExec, ShuffleReaderExec};
use ballista_core::serde::scheduler::PartitionLocation;
use datafusion::catalog::TableProvider;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::cte_worktable::CteWorkTable;
use datafusion::datasource::file_format::csv::CsvSink;
use datafusion::datasource::file_format::json::JsonSink;
use datafusion::datasource::file_format::parquet::ParquetSink;
use datafusion::datasource::listing::ListingTable;
use datafusion::datasource::memory::{DataSourceExec, MemorySourceConfig};
use datafusion::datasource::physical_plan::{FileScanConfig, FileSink, FileSinkConfig};
use datafusion::datasource::sink::DataSinkExec;
use datafusion::datasource::{MemTable, ViewTable, empty::EmptyTable, source_as_provider};
use datafusion::logical_expr::dml::WriteOp;
use datafusion::logical_expr::{LogicalPlan, TableScan};
use datafusion::optimizer::AnalyzerRule;
use datafusion::physical_plan::ExecutionPlan;
use url::Url;

use crate::allow::canonical_within;
use crate::cache::sink::{PartitionParquetSinkExec, SinkSpec};
use crate::cache::write::WritePlanTable;
use crate::cache::{CacheDir, CacheError};
use crate::recon::pairs_table::PairsTable;
use crate::source::Engines;

/// DataFusion's and Ballista's operators a Kalla job may run, besides Kalla's own and the
/// file scans and sinks checked against the data locations.
const OPERATORS: &[&str] = &[
    // Kalla's own (source engines' scans are asked of the engines).
    "PairExec",
    "PartitionParquetSinkExec",
    // Ballista's stages and shuffles.
    "ShuffleWriterExec",
    "SortShuffleWriterExec",
    "RangeShuffleWriterExec",
    "ShuffleReaderExec",
    "RangeShuffleReaderExec",
    "UnresolvedShuffleExec",
    "PrefixMergeExec",
    "RangeFilterExec",
    "PerPartitionFilterExec",
    "PartitionedBoundedWindowAggExec",
    "RuntimeStatsExec",
    // DataFusion's relational operators.
    "AggregateExec",
    "AnalyzeExec",
    "AsyncFuncExec",
    "BoundedWindowAggExec",
    "BufferExec",
    "CoalesceBatchesExec",
    "CoalescePartitionsExec",
    "CooperativeExec",
    "CrossJoinExec",
    "EmptyExec",
    "ExplainExec",
    "FilterExec",
    "GlobalLimitExec",
    "HashJoinExec",
    "InterleaveExec",
    "LazyMemoryExec",
    "LocalLimitExec",
    "NestedLoopJoinExec",
    "OrderedRangeRepartitionExec",
    "PartialSortExec",
    "PartitionedTopKExec",
    "PiecewiseMergeJoinExec",
    "PlaceholderRowExec",
    "ProjectionExec",
    "RecursiveQueryExec",
    "RepartitionExec",
    "ScalarSubqueryExec",
    "SortExec",
    "SortMergeJoinExec",
    "SortPreservingMergeExec",
    "SymmetricHashJoinExec",
    "UnionExec",
    "UnnestExec",
    "UnorderedRangeRepartitionExec",
    "WindowAggExec",
    "WorkTableExec",
    // Checked below: in-memory data, or files under the data locations.
    "DataSourceExec",
    "DataSinkExec",
];

/// Where plans may read and write files: the cache root (cache and job results) and the
/// directories of file sources, each a `file:///…/` or `s3://bucket/…/` prefix. A local file must
/// stay under one once links are resolved, too.
#[derive(Debug, Clone, Default)]
pub struct DataLocations {
    locations: Vec<CacheDir>,
    /// The local locations' directories, canonical where they exist.
    local_roots: Vec<PathBuf>,
}

impl DataLocations {
    pub fn parse(locations: &[String]) -> Result<Self, CacheError> {
        let locations: Vec<CacheDir> = locations
            .iter()
            .map(|location| CacheDir::parse(location))
            .collect::<Result<_, _>>()?;
        let local_roots = locations
            .iter()
            .filter_map(|location| location.url().to_file_path().ok())
            .map(|dir| std::fs::canonicalize(&dir).unwrap_or(dir))
            .collect();
        Ok(Self {
            locations,
            local_roots,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.locations.is_empty()
    }

    /// Why `location` may not be read or written, if it may not.
    fn refusal(&self, location: &str) -> Option<String> {
        let Ok(url) = Url::parse(location) else {
            return Some(format!("{location:?} is not a URL"));
        };
        // An object path holding `?` or `#` would be read as a shorter path with a query.
        if url.query().is_some() || url.fragment().is_some() {
            return Some(format!("{location} has `?` or `#` in its path"));
        }
        if !plain_path(&url) {
            return Some(format!("{location} has an encoded `/` or `\\` in its path"));
        }
        if !self.locations.iter().any(|root| contains(root.url(), &url)) {
            let allowed: Vec<&str> = self.locations.iter().map(CacheDir::as_str).collect();
            return Some(if allowed.is_empty() {
                format!("{location} is not under a data location: none is configured (--data-locations)")
            } else {
                format!("{location} is not under a data location ({})", allowed.join(", "))
            });
        }
        self.link_refusal(&url)
    }

    /// Why the local file at `url`, under a data location as written, may not be opened: a
    /// symbolic link on its way leads out of every data location.
    fn link_refusal(&self, url: &Url) -> Option<String> {
        let path = url.to_file_path().ok()?;
        match canonical_within(&path, &self.local_roots) {
            Ok(Some(_)) => None,
            Ok(None) => Some(format!(
                "{url} leads out of the data locations through a symbolic link"
            )),
            Err(error) => Some(format!("{url} cannot be looked at: {error}")),
        }
    }
}

/// No path segment that a store or file system could read as more than one name (`url` already
/// resolved `.` and `..`, encoded or not).
fn plain_path(url: &Url) -> bool {
    url.path_segments().is_some_and(|mut segments| {
        segments.all(|segment| {
            let lower = segment.to_ascii_lowercase();
            !lower.contains("%2f") && !lower.contains("%5c") && !segment.contains('\\')
        })
    })
}

/// `url` is `root` or below it, comparing whole path segments.
fn contains(root: &Url, url: &Url) -> bool {
    if root.scheme() != url.scheme() || root.host_str() != url.host_str() {
        return false;
    }
    let (Some(root_segments), Some(mut segments)) = (root.path_segments(), url.path_segments()) else {
        return false;
    };
    root_segments
        .filter(|segment| !segment.is_empty())
        .all(|wanted| segments.next() == Some(wanted))
}

/// `--data-locations`, as the scheduler and the executors take it.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DataLocationArgs {
    /// Where plans may read and write files, comma-separated `file:///dir/` or
    /// `s3://bucket/prefix/`: the runner's cache dir (cache and job results) and the directories
    /// file sources live in. A plan reading or writing a file anywhere else is refused.
    #[arg(long, value_delimiter = ',')]
    pub data_locations: Vec<String>,
}

impl DataLocationArgs {
    /// The check these locations give; a location that is no directory URL is an error.
    pub fn plan_check(&self) -> Result<PlanCheck, CacheError> {
        DataLocations::parse(&self.data_locations).map(PlanCheck::new)
    }
}

/// The check both the scheduler and the executors run.
#[derive(Debug, Clone, Default)]
pub struct PlanCheck {
    locations: Arc<DataLocations>,
}

impl PlanCheck {
    pub fn new(locations: DataLocations) -> Self {
        Self {
            locations: Arc::new(locations),
        }
    }

    /// Says once, at start-up, what a process without data locations cannot do.
    pub fn warn_if_no_files(&self, service: &str) {
        if self.locations.is_empty() {
            tracing::warn!(
                "{service} has no --data-locations: plans may not read or write any file, so \
                 cached tables, file sources and job results are refused; set it to the runner's \
                 cache dir and the directories of file sources"
            );
        }
    }

    /// Refuses a task's plan with an operator not listed, or a file outside the data locations.
    pub fn physical(&self, plan: &Arc<dyn ExecutionPlan>) -> Result<()> {
        let name = plan.name();
        // Some operators name their variant too: `SortExec(TopK)`.
        let operator = name.split('(').next().unwrap_or(name);
        if !OPERATORS.contains(&operator) && !Engines::global().is_scan_operator(operator) {
            return Err(refused(format!("the operator {name} is not one Kalla runs")));
        }
        if let Some(source) = plan.downcast_ref::<DataSourceExec>() {
            self.data_source(source)?;
        }
        if let Some(sink) = plan.downcast_ref::<DataSinkExec>() {
            self.sink_config(file_sink(sink)?)?;
        }
        if let Some(sink) = plan.downcast_ref::<PartitionParquetSinkExec>() {
            self.kalla_sink(sink.spec())?;
            let width = plan
                .children()
                .first()
                .map_or(0, |input| input.schema().fields().len());
            self.kalla_split(sink.spec(), width)?;
        }
        if let Some(reader) = plan.downcast_ref::<ShuffleReaderExec>() {
            self.shuffle_locations(&reader.partition)?;
        }
        if let Some(reader) = plan.downcast_ref::<RangeShuffleReaderExec>() {
            self.shuffle_locations(&reader.partition)?;
        }
        plan.children()
            .into_iter()
            .try_for_each(|child| self.physical(child))
    }

    fn data_source(&self, source: &DataSourceExec) -> Result<()> {
        let source = source.data_source();
        if source.downcast_ref::<MemorySourceConfig>().is_some() {
            return Ok(());
        }
        let Some(files) = source.downcast_ref::<FileScanConfig>() else {
            return Err(refused("a data source that is neither memory nor files".into()));
        };
        let store = files.object_store_url.as_str();
        files
            .file_groups
            .iter()
            .flat_map(|group| group.iter())
            .try_for_each(|file| self.location(&format!("{store}{}", file.object_meta.location)))
    }

    /// A file sink writes below its table paths, in the store its `object_store_url` names (its
    /// user-given URL does not survive encoding): both must be one place, under a data location.
    fn sink_config(&self, config: &FileSinkConfig) -> Result<()> {
        if config.table_paths.is_empty() {
            return Err(refused("a file sink without a target".into()));
        }
        for path in &config.table_paths {
            if path.object_store() != config.object_store_url {
                return Err(refused(format!(
                    "a file sink writing {} into the store {}",
                    path.as_str(),
                    config.object_store_url.as_str()
                )));
            }
            self.location(path.as_str())?;
        }
        Ok(())
    }

    fn kalla_sink(&self, spec: &SinkSpec) -> Result<()> {
        self.location(&spec.directory)?;
        let names = spec
            .split
            .iter()
            .flat_map(|split| &split.outputs)
            .map(|o| &o.name);
        for name in names {
            if name.is_empty() || matches!(name.as_str(), "." | "..") || name.contains(['/', '\\', '%']) {
                return Err(refused(format!(
                    "the output name {name:?} is not one directory name"
                )));
            }
        }
        Ok(())
    }

    /// A split routes by a column of its input (`width` columns wide) into at most 256 outputs
    /// of its input's columns.
    fn kalla_split(&self, spec: &SinkSpec, width: usize) -> Result<()> {
        let Some(split) = &spec.split else {
            return Ok(());
        };
        let in_input = std::iter::once(&split.route_column)
            .chain(split.outputs.iter().flat_map(|output| &output.columns))
            .all(|&column| column < width);
        if !in_input || split.outputs.len() > 256 {
            return Err(refused(
                "a split naming columns its input lacks, or over 256 outputs".into(),
            ));
        }
        Ok(())
    }

    /// Shuffle files are found by their job id: one that is no plain name could point elsewhere.
    fn shuffle_locations(&self, partitions: &[Vec<PartitionLocation>]) -> Result<()> {
        for location in partitions.iter().flatten() {
            let job = location.partition_id.job_id.as_str();
            if job.is_empty() || job.contains(['/', '\\']) || job.contains("..") {
                return Err(refused(format!("a shuffle read of the job {job:?}")));
            }
        }
        Ok(())
    }

    fn location(&self, location: &str) -> Result<()> {
        match self.locations.refusal(location) {
            Some(reason) => Err(refused(reason)),
            None => Ok(()),
        }
    }

    /// Refuses a logical plan with a node Kalla does not submit, or a file outside the data
    /// locations; subqueries and the plans inside Kalla's tables are checked too.
    pub fn logical(&self, plan: &LogicalPlan) -> Result<()> {
        plan.apply_with_subqueries(|node| {
            self.logical_node(node)?;
            Ok(TreeNodeRecursion::Continue)
        })
        .map(drop)
    }

    fn logical_node(&self, node: &LogicalPlan) -> Result<()> {
        match node {
            LogicalPlan::Projection(_)
            | LogicalPlan::Filter(_)
            | LogicalPlan::Window(_)
            | LogicalPlan::Aggregate(_)
            | LogicalPlan::Sort(_)
            | LogicalPlan::Join(_)
            | LogicalPlan::Repartition(_)
            | LogicalPlan::Union(_)
            | LogicalPlan::EmptyRelation(_)
            | LogicalPlan::Subquery(_)
            | LogicalPlan::SubqueryAlias(_)
            | LogicalPlan::Limit(_)
            | LogicalPlan::Values(_)
            | LogicalPlan::Explain(_)
            | LogicalPlan::Analyze(_)
            | LogicalPlan::Distinct(_)
            | LogicalPlan::Unnest(_)
            | LogicalPlan::RecursiveQuery(_) => Ok(()),
            LogicalPlan::TableScan(scan) => self.table_scan(scan),
            LogicalPlan::Copy(copy) => self.location(&local_or_url(&copy.output_url)),
            LogicalPlan::Dml(dml) if matches!(dml.op, WriteOp::Insert(_)) => {
                self.provider(&dml.table_name.to_string(), &source_as_provider(&dml.target)?)
            }
            other => Err(refused(format!(
                "the plan node {} is not one Kalla submits",
                other.display()
            ))),
        }
    }

    fn table_scan(&self, scan: &TableScan) -> Result<()> {
        self.provider(&scan.table_name.to_string(), &source_as_provider(&scan.source)?)
    }

    fn provider(&self, table: &str, provider: &Arc<dyn TableProvider>) -> Result<()> {
        if Engines::global().owns_table(provider.as_ref())
            || provider.downcast_ref::<MemTable>().is_some()
            || provider.downcast_ref::<EmptyTable>().is_some()
            || provider.downcast_ref::<CteWorkTable>().is_some()
        {
            return Ok(());
        }
        if let Some(listing) = provider.downcast_ref::<ListingTable>() {
            return listing
                .table_paths()
                .iter()
                .try_for_each(|path| self.location(path.as_str()));
        }
        if let Some(write) = provider.downcast_ref::<WritePlanTable>() {
            self.kalla_sink(write.sink())?;
            return self.logical(write.plan());
        }
        if let Some(pairs) = provider.downcast_ref::<PairsTable>() {
            return pairs
                .inputs()
                .into_iter()
                .try_for_each(|input| self.logical(input));
        }
        if let Some(view) = provider.downcast_ref::<ViewTable>() {
            return self.logical(view.logical_plan());
        }
        Err(refused(format!(
            "the table {table} is of a kind Kalla does not submit"
        )))
    }
}

impl AnalyzerRule for PlanCheck {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        self.logical(&plan)?;
        Ok(plan)
    }

    fn name(&self) -> &str {
        "kalla_plan_check"
    }
}

/// The file sink's configuration; other sinks (memory tables, streams) are refused.
fn file_sink(exec: &DataSinkExec) -> Result<&FileSinkConfig> {
    let sink = exec.sink();
    if let Some(parquet) = sink.downcast_ref::<ParquetSink>() {
        return Ok(parquet.config());
    }
    if let Some(csv) = sink.downcast_ref::<CsvSink>() {
        return Ok(csv.config());
    }
    if let Some(json) = sink.downcast_ref::<JsonSink>() {
        return Ok(json.config());
    }
    Err(refused("a sink that does not write files".into()))
}

/// A sink's target as a URL: DataFusion also takes a bare local path.
fn local_or_url(target: &str) -> String {
    if Url::parse(target).is_ok() {
        return target.to_string();
    }
    match Url::from_file_path(target) {
        Ok(url) => url.to_string(),
        Err(()) => format!("{target} (a relative path)"),
    }
}

/// Refuses a plan Kalla would not have produced, and logs it.
fn refused(reason: String) -> DataFusionError {
    tracing::warn!(target: "kalla::plan_check", %reason, "refused a plan");
    DataFusionError::Plan(format!("plan refused: {reason}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn locations() -> DataLocations {
        DataLocations::parse(&["file:///srv/kalla/".into(), "s3://bucket/kalla".into()]).unwrap()
    }

    #[test]
    fn files_under_a_data_location_are_allowed() {
        let locations = locations();
        for allowed in [
            "file:///srv/kalla/cache/conn/public/t/v1/part-1.parquet",
            "file:///srv/kalla/",
            "s3://bucket/kalla/results/job_1/matched/",
        ] {
            assert_eq!(locations.refusal(allowed), None, "{allowed}");
        }
    }

    #[test]
    fn files_elsewhere_or_escaping_are_refused() {
        let locations = locations();
        for refused in [
            "file:///etc/passwd",
            "file:///srv/kalla-other/x.csv",
            "file:///srv/kalla/cache/%2E%2E/%2e%2e/etc/passwd",
            "file:///srv/kalla/cache/a%2Fb",
            "s3://other-bucket/kalla/x.parquet",
            "s3://bucket/kallax/x.parquet",
            "s3://bucket/kalla#x/secret.parquet",
            "file:///srv/kalla?x/secret.parquet",
            "/srv/kalla/x.csv",
        ] {
            assert!(locations.refusal(refused).is_some(), "{refused}");
        }
        let none = DataLocations::default().refusal("file:///srv/kalla/x").unwrap();
        assert!(none.contains("--data-locations"), "{none}");
    }

    #[tokio::test]
    async fn a_recursive_query_passes_and_a_file_outside_the_locations_does_not() {
        let ctx = datafusion::prelude::SessionContext::new();
        let check = PlanCheck::new(locations());
        let recursive = ctx
            .sql(
                "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT * FROM r",
            )
            .await
            .unwrap();
        check.logical(recursive.logical_plan()).unwrap();
        let outside = ctx
            .sql("COPY (SELECT 1 AS n) TO '/tmp/elsewhere.parquet'")
            .await
            .unwrap();
        let refusal = check.logical(outside.logical_plan()).unwrap_err().to_string();
        assert!(refusal.contains("/tmp/elsewhere.parquet"), "{refusal}");
    }

    #[test]
    fn bare_local_paths_of_sinks_are_read_as_file_urls() {
        assert_eq!(local_or_url("/etc/cron.d/x"), "file:///etc/cron.d/x");
        assert!(locations().refusal(&local_or_url("out/x.parquet")).is_some());
    }
}
