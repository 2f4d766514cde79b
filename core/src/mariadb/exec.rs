//! `MariaScanExec`: reads key ranges of a MariaDB table over each executor's own pool, one
//! descriptor row (a key range's index) per partition below it (see [`crate::scan`]).
//! The spec carries no SQL: the executor renders the `SELECT` from the grant-bound columns, the
//! integer bounds and the typed filters pushed down, and streams its rows (text protocol) into
//! record batches.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, UInt32Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::catalog::MariaColumn;
use super::decode::RowDecoder;
use super::partition::KeyRange;
use super::types::MariaType;
use crate::grant::ScanGrant;
use crate::ident::{QualifiedName, backquote_ident};
use crate::pool::PoolRegistry;
use crate::pushdown;
use crate::scan::{
    DescriptorScanExec, PartitionReader, StreamingConnection, descriptor_scan, external, open_grant,
    plan_refused, projected_bytes,
};
use crate::seal::ClusterKey;

/// Everything an executor needs to read the scan, apart from which of its ranges.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MariaScanSpec {
    pub table: QualifiedName,
    pub grant: ScanGrant,
    /// Every column of the table, as the grant binds them.
    pub table_columns: Vec<MariaColumn>,
    /// The output columns: indices into `table_columns`, in order.
    pub projection: Vec<usize>,
    /// The partitioning key: one of `table_columns`, an integer.
    pub key: Option<String>,
    /// Every partition's key range; the descriptors say which a task reads.
    pub ranges: Vec<KeyRange>,
    /// Pushed-down filters, each a datafusion-proto expression in base64 (see
    /// [`pushdown::encode`]).
    pub filters: Vec<String>,
    pub limit: Option<usize>,
    /// The table's data size when it was planned: the scan's statistics report its share.
    pub data_bytes: u64,
}

/// The `SELECT` a scan runs, rendered where it runs and checked before anything is read.
#[derive(Debug)]
struct SelectQuery {
    table: QualifiedName,
    columns: Vec<MariaColumn>,
    key: Option<String>,
    /// The rendered filters, AND-ed.
    predicate: Option<String>,
    limit: Option<usize>,
}

impl SelectQuery {
    /// Renders `spec`, refusing what Kalla's planner would never have produced.
    fn render(spec: &MariaScanSpec) -> Result<Self> {
        let refused = |reason: String| plan_refused(&spec.table, reason);
        let columns = spec
            .projection
            .iter()
            .map(|&i| {
                spec.table_columns
                    .get(i)
                    .cloned()
                    .ok_or_else(|| refused(format!("projection index {i} names no column")))
            })
            .collect::<Result<Vec<_>>>()?;
        if let Some(key) = &spec.key {
            let integer = spec
                .table_columns
                .iter()
                .any(|c| &c.name == key && c.maria_type.is_integer());
            if !integer {
                return Err(refused(format!("the key {key:?} is not an integer column")));
            }
        }
        if spec.ranges.is_empty() || (spec.key.is_none() && spec.ranges != [KeyRange::WHOLE]) {
            return Err(refused("key ranges without a key".into()));
        }
        let predicates = spec
            .filters
            .iter()
            .map(|encoded| pushdown::render(&spec.table, encoded, &spec.table_columns))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            table: spec.table.clone(),
            columns,
            key: spec.key.clone(),
            predicate: (!predicates.is_empty()).then(|| predicates.join(" AND ")),
            limit: spec.limit,
        })
    }

    fn schema(&self) -> SchemaRef {
        columns_schema(&self.columns)
    }

    /// The statement reading `range`, tagged with `tag` (this process, as the processlist shows).
    fn statement(&self, range: KeyRange, tag: &str) -> String {
        let select_list: Vec<String> = self
            .columns
            .iter()
            .map(|c| match c.maria_type {
                MariaType::TextCast => format!("CAST({} AS CHAR)", backquote_ident(&c.name)),
                // FLOAT prints 6 digits; as a DOUBLE it prints every digit of its exact value.
                MariaType::Float32 => format!("CAST({} AS DOUBLE)", backquote_ident(&c.name)),
                _ => backquote_ident(&c.name),
            })
            .collect();
        // A comment cannot be closed from inside: `*/` never reaches it.
        let tag = tag.replace("*/", "* /");
        // Counting rows projects no column, which MariaDB cannot select.
        let select_list = match select_list.is_empty() {
            true => "1".to_string(),
            false => select_list.join(", "),
        };
        let mut sql = format!(
            "/* {tag} */ SELECT {select_list} FROM {}",
            self.table.backquoted()
        );
        let conditions: Vec<String> = self
            .key
            .as_deref()
            .and_then(|key| range.predicate(&backquote_ident(key)))
            .into_iter()
            .chain(self.predicate.clone())
            .collect();
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        if let Some(limit) = self.limit {
            sql.push_str(&format!(" LIMIT {limit}"));
        }
        sql
    }

    fn decoder_columns(&self) -> Vec<(String, MariaType)> {
        self.columns
            .iter()
            .map(|c| (c.name.clone(), c.maria_type))
            .collect()
    }
}

/// Arrow fields for `columns`, in order.
pub fn columns_schema(columns: &[MariaColumn]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| Field::new(&c.name, c.maria_type.arrow_type(), c.nullable))
            .collect::<Vec<_>>(),
    ))
}

fn descriptor_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        "key_range",
        DataType::UInt32,
        false,
    )]))
}

/// The in-memory leaf holding one descriptor row (a range's index) per partition.
pub fn partition_descriptors(ranges: usize) -> Result<Arc<dyn ExecutionPlan>> {
    let schema = descriptor_schema();
    let batches = (0..ranges as u32)
        .map(|index| RecordBatch::try_new(schema.clone(), vec![Arc::new(UInt32Array::from(vec![index]))]))
        .collect::<Result<Vec<_>, _>>()?;
    descriptor_scan(schema, batches)
}

fn ranges_in(batch: &RecordBatch, ranges: &[KeyRange]) -> Result<Vec<KeyRange>> {
    let indices = batch
        .column(0)
        .as_any()
        .downcast_ref::<UInt32Array>()
        .ok_or_else(|| DataFusionError::Internal("MariaScanExec descriptor is not UInt32".into()))?;
    indices
        .values()
        .iter()
        .map(|&i| {
            ranges
                .get(i as usize)
                .copied()
                .ok_or_else(|| DataFusionError::Internal(format!("MariaScanExec has no key range {i}")))
        })
        .collect()
}

/// What a MariaDB scan reads where it runs: its key ranges.
#[derive(Debug)]
pub struct MariaRead {
    spec: Arc<MariaScanSpec>,
    query: Arc<SelectQuery>,
    schema: SchemaRef,
    /// Present on processes that may open source connections (executors, embedded mode).
    key: Option<ClusterKey>,
}

/// A MariaDB scan on the cluster.
pub type MariaScanExec = DescriptorScanExec<MariaRead>;

impl DescriptorScanExec<MariaRead> {
    pub fn try_new(
        spec: Arc<MariaScanSpec>,
        descriptors: Arc<dyn ExecutionPlan>,
        key: Option<ClusterKey>,
    ) -> Result<Self> {
        let query = Arc::new(SelectQuery::render(&spec)?);
        let schema = query.schema();
        let reader = MariaRead {
            spec,
            query,
            schema,
            key,
        };
        Self::new(Arc::new(reader), descriptors)
    }

    pub fn spec(&self) -> &MariaScanSpec {
        &self.reader().spec
    }
}

impl PartitionReader for MariaRead {
    const OPERATOR: &'static str = "MariaScanExec";

    fn descriptor_schema() -> SchemaRef {
        descriptor_schema()
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The share of the table's data the scan's columns take.
    fn estimated_bytes(&self) -> Option<usize> {
        projected_bytes(
            self.spec.data_bytes,
            self.spec.projection.len(),
            self.spec.table_columns.len(),
        )
    }

    fn fmt_details(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let columns: Vec<&str> = self.query.columns.iter().map(|c| c.name.as_str()).collect();
        write!(f, "table={}, columns=[{}]", self.spec.table, columns.join(", "))?;
        if let Some(key) = &self.spec.key {
            write!(f, ", key={key}")?;
        }
        if let Some(limit) = self.spec.limit {
            write!(f, ", limit={limit}")?;
        }
        Ok(())
    }

    fn read(
        &self,
        descriptors: SendableRecordBatchStream,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let url = open_grant(
            &self.spec.grant,
            self.key.as_ref(),
            &self.spec.table,
            &self.spec.table_columns,
        )?;
        let read = PartitionRead {
            query: self.query.clone(),
            schema: self.schema.clone(),
            ranges: self.spec.ranges.clone(),
            batch_rows: context.session_config().batch_size(),
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            read.stream(url, descriptors),
        )))
    }
}

/// What one task reads: the ranges its descriptors name.
struct PartitionRead {
    query: Arc<SelectQuery>,
    schema: SchemaRef,
    ranges: Vec<KeyRange>,
    batch_rows: usize,
}

impl PartitionRead {
    fn stream(
        self,
        url: String,
        mut descriptors: SendableRecordBatchStream,
    ) -> impl futures::Stream<Item = Result<RecordBatch>> + Send {
        async_stream::try_stream! {
            // Opened (its host checked against this executor's --allowed-hosts) as the task starts.
            let pool = PoolRegistry::global()
                .get_mariadb(&url)
                .await
                .map_err(|e| DataFusionError::Execution(e.to_string()))?;
            let tag = PoolRegistry::global().settings().application_name;
            let columns = self.query.decoder_columns();
            while let Some(batch) = descriptors.next().await {
                for range in ranges_in(&batch?, &self.ranges)? {
                    let sql = self.query.statement(range, &tag);
                    tracing::debug!(table = %self.query.table, %sql, "reading partition");
                    let failed = |e: sqlx::Error| source_error(&self.query.table, range, e);
                    let mut connection = StreamingConnection::new(pool.acquire().await.map_err(failed)?);
                    let mut decoder = RowDecoder::new(
                        self.query.table.to_string(),
                        self.schema.clone(),
                        &columns,
                        self.batch_rows,
                    );
                    let mut rows = sqlx::raw_sql(&sql).fetch(&mut **connection.conn());
                    while let Some(row) = rows.next().await {
                        let row = row.map_err(failed)?;
                        let values = (0..columns.len())
                            .map(|i| row.try_get_unchecked::<Option<&[u8]>, _>(i))
                            .collect::<Result<Vec<_>, _>>()
                            .map_err(failed)?;
                        decoder.push(values.into_iter()).map_err(external)?;
                        if decoder.rows() >= self.batch_rows {
                            let full = decoder.flush().map_err(external)?;
                            if let Some(batch) = full {
                                yield batch;
                            }
                        }
                    }
                    drop(rows);
                    let last = decoder.flush().map_err(external)?;
                    connection.release();
                    if let Some(batch) = last {
                        yield batch;
                    }
                }
            }
        }
    }
}

fn source_error(table: &QualifiedName, range: KeyRange, error: sqlx::Error) -> DataFusionError {
    let keys = match (range.start, range.end) {
        (None, None) => "all rows".to_string(),
        (start, end) => format!(
            "keys {}..{}",
            start.map_or(String::new(), |s| s.to_string()),
            end.map_or(String::new(), |e| e.to_string())
        ),
    };
    DataFusionError::Execution(format!("reading {table} ({keys}) from MariaDB failed: {error}"))
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as BASE64;
    use datafusion::prelude::{col, lit};
    use datafusion_proto::bytes::Serializeable;

    use super::*;
    use crate::grant::DEFAULT_GRANT_TTL;
    use crate::ident::Ident;

    fn spec(projection: Vec<usize>, key: Option<&str>, ranges: Vec<KeyRange>) -> MariaScanSpec {
        let table = QualifiedName {
            schema: Ident::new("shop").unwrap(),
            name: Ident::new("orders").unwrap(),
        };
        let column = |name: &str, maria_type| MariaColumn {
            name: name.into(),
            sql_type: String::new(),
            maria_type,
            nullable: false,
        };
        let table_columns = vec![column("id", MariaType::Int64), column("ip`", MariaType::TextCast)];
        let key_ = ClusterKey::generate();
        MariaScanSpec {
            grant: ScanGrant::issue(&key_, "mysql://db/x", &table, &table_columns, DEFAULT_GRANT_TTL),
            table,
            table_columns,
            projection,
            key: key.map(str::to_string),
            ranges,
            filters: Vec::new(),
            limit: Some(10),
            data_bytes: 0,
        }
    }

    #[test]
    fn statements_quote_names_and_bound_keys() {
        let range = KeyRange {
            start: Some(5),
            end: Some(9),
        };
        let query = SelectQuery::render(&spec(vec![0, 1], Some("id"), vec![range])).unwrap();
        assert_eq!(
            query.statement(range, "kalla-executor */ x"),
            "/* kalla-executor * / x */ SELECT `id`, CAST(`ip``` AS CHAR) FROM `shop`.`orders` \
             WHERE `id` >= 5 AND `id` < 9 LIMIT 10"
        );
    }

    #[test]
    fn pushed_filters_join_the_key_range() {
        let range = KeyRange {
            start: Some(5),
            end: None,
        };
        let mut scan = spec(vec![0], Some("id"), vec![range]);
        let table_columns = scan.table_columns.clone();
        scan.filters = vec![pushdown::encode(&scan.table, &col("id").lt(lit(8i64)), &table_columns).unwrap()];
        let query = SelectQuery::render(&scan).unwrap();
        assert_eq!(
            query.statement(range, "kalla"),
            "/* kalla */ SELECT `id` FROM `shop`.`orders` WHERE `id` >= 5 AND (`id` < 8) LIMIT 10"
        );
        // A filter on a column the renderer does not compare (a forged plan's) refuses the scan.
        let forged = col("ip`").eq(lit("x"));
        scan.filters = vec![BASE64.encode(forged.to_bytes().unwrap())];
        let refused = SelectQuery::render(&scan).unwrap_err().to_string();
        assert!(refused.contains("not one Kalla pushes down"), "{refused}");
    }

    #[test]
    fn counting_rows_selects_a_constant() {
        let query = SelectQuery::render(&spec(vec![], None, vec![KeyRange::WHOLE])).unwrap();
        assert_eq!(
            query.statement(KeyRange::WHOLE, "kalla"),
            "/* kalla */ SELECT 1 FROM `shop`.`orders` LIMIT 10"
        );
    }

    #[test]
    fn forged_specs_are_refused() {
        let refusal = |spec: MariaScanSpec| SelectQuery::render(&spec).unwrap_err().to_string();
        assert!(refusal(spec(vec![7], Some("id"), vec![KeyRange::WHOLE])).contains("projection index 7"));
        assert!(refusal(spec(vec![0], Some("ip`"), vec![KeyRange::WHOLE])).contains("not an integer"));
        let range = KeyRange {
            start: Some(1),
            end: None,
        };
        assert!(refusal(spec(vec![0], None, vec![range])).contains("without a key"));
    }
}
