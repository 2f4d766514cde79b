//! `PgScanExec`: reads ctid block ranges of a Postgres relation with binary COPY, one
//! descriptor row (a block range) per partition below it (see [`crate::scan`]).

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, RecordBatch, UInt32Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::catalog::PgColumn;
use super::copy::{BatchLimits, CopyDecoder};
use super::partition::BlockRange;
use super::types::PgType;
use crate::grant::ScanGrant;
use crate::ident::{QualifiedName, quote_ident};
use crate::pool::PoolRegistry;
use crate::pushdown;
use crate::scan::{
    DescriptorScanExec, PartitionReader, StreamingConnection, descriptor_scan, external, open_grant,
    plan_refused, projected_bytes,
};
use crate::seal::ClusterKey;

/// Everything an executor needs to read the scan, apart from its partitions. It carries no SQL:
/// the executor renders the `COPY` itself from the grant-bound columns and typed filters.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PgScanSpec {
    pub table: QualifiedName,
    pub grant: ScanGrant,
    /// Every column of the relation, as the grant binds them.
    pub table_columns: Vec<PgColumn>,
    /// The output columns: indices into `table_columns`, in order.
    pub projection: Vec<usize>,
    /// Pushed-down filters, each a datafusion-proto expression in base64 (see
    /// [`pushdown::encode`]).
    pub filters: Vec<String>,
    pub limit: Option<usize>,
    /// The relation's heap size when it was planned: the scan's statistics report its share.
    #[serde(default)]
    pub heap_bytes: u64,
}

/// The `COPY` a scan runs, rendered where the scan runs and checked before anything is read.
#[derive(Debug)]
struct CopyQuery {
    table: QualifiedName,
    columns: Vec<PgColumn>,
    /// The rendered filters, AND-ed.
    predicate: Option<String>,
    limit: Option<usize>,
}

impl CopyQuery {
    /// Renders `spec`, refusing anything the whitelisted renderer does not produce itself.
    fn render(spec: &PgScanSpec) -> Result<Self> {
        let columns =
            spec.projection
                .iter()
                .map(|&i| {
                    spec.table_columns.get(i).cloned().ok_or_else(|| {
                        plan_refused(&spec.table, format!("projection index {i} names no column"))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
        let predicates = spec
            .filters
            .iter()
            .map(|encoded| pushdown::render(&spec.table, encoded, &spec.table_columns))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            table: spec.table.clone(),
            columns,
            predicate: (!predicates.is_empty()).then(|| predicates.join(" AND ")),
            limit: spec.limit,
        })
    }

    fn schema(&self) -> SchemaRef {
        columns_schema(&self.columns)
    }

    /// The COPY statement reading `range` of the relation.
    fn statement(&self, range: BlockRange) -> String {
        let select_list: Vec<String> = self
            .columns
            .iter()
            .map(|c| match c.pg_type {
                PgType::TextCast => format!("{}::text", quote_ident(&c.name)),
                _ => quote_ident(&c.name),
            })
            .collect();
        let conditions: Vec<String> = range
            .predicate()
            .into_iter()
            .chain(self.predicate.clone())
            .collect();
        let mut sql = format!(
            "COPY (SELECT {} FROM {}",
            select_list.join(", "),
            self.table.quoted()
        );
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        if let Some(limit) = self.limit {
            sql.push_str(&format!(" LIMIT {limit}"));
        }
        sql.push_str(") TO STDOUT (FORMAT binary)");
        sql
    }
}

/// Arrow fields for `columns`, in order.
pub fn columns_schema(columns: &[PgColumn]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| Field::new(&c.name, c.pg_type.arrow_type(), c.nullable))
            .collect::<Vec<_>>(),
    ))
}

/// Schema of the descriptor rows: one block range per row.
fn descriptor_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("start_block", DataType::UInt32, false),
        Field::new("end_block", DataType::UInt32, true),
    ]))
}

/// The in-memory leaf holding one descriptor row per partition.
pub fn partition_descriptors(ranges: &[BlockRange]) -> Result<Arc<dyn ExecutionPlan>> {
    let schema = descriptor_schema();
    let batches = ranges
        .iter()
        .map(|range| {
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(UInt32Array::from(vec![range.start])),
                    Arc::new(UInt32Array::from(vec![range.end])),
                ],
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    descriptor_scan(schema, batches)
}

fn ranges_in(batch: &RecordBatch) -> Result<Vec<BlockRange>> {
    let column = |i: usize| {
        batch
            .column(i)
            .as_any()
            .downcast_ref::<UInt32Array>()
            .ok_or_else(|| DataFusionError::Internal("PgScanExec descriptor is not UInt32".into()))
    };
    let (starts, ends) = (column(0)?, column(1)?);
    Ok((0..batch.num_rows())
        .map(|i| BlockRange {
            start: starts.value(i),
            end: ends.is_valid(i).then(|| ends.value(i)),
        })
        .collect())
}

/// What a Postgres scan reads where it runs: its block ranges, with binary COPY.
#[derive(Debug)]
pub struct PgRead {
    spec: Arc<PgScanSpec>,
    query: Arc<CopyQuery>,
    schema: SchemaRef,
    /// Present on processes that may open source connections (executors, embedded mode).
    key: Option<ClusterKey>,
}

/// A Postgres scan on the cluster.
pub type PgScanExec = DescriptorScanExec<PgRead>;

impl DescriptorScanExec<PgRead> {
    pub fn try_new(
        spec: Arc<PgScanSpec>,
        descriptors: Arc<dyn ExecutionPlan>,
        key: Option<ClusterKey>,
    ) -> Result<Self> {
        let query = Arc::new(CopyQuery::render(&spec)?);
        let schema = query.schema();
        let reader = PgRead {
            spec,
            query,
            schema,
            key,
        };
        Self::new(Arc::new(reader), descriptors)
    }

    pub fn spec(&self) -> &PgScanSpec {
        &self.reader().spec
    }
}

impl PartitionReader for PgRead {
    const OPERATOR: &'static str = "PgScanExec";

    fn descriptor_schema() -> SchemaRef {
        descriptor_schema()
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The share of the relation's heap the scan's columns take.
    fn estimated_bytes(&self) -> Option<usize> {
        projected_bytes(
            self.spec.heap_bytes,
            self.spec.projection.len(),
            self.spec.table_columns.len(),
        )
    }

    fn fmt_details(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let columns: Vec<&str> = self.query.columns.iter().map(|c| c.name.as_str()).collect();
        write!(f, "table={}, columns=[{}]", self.spec.table, columns.join(", "))?;
        if let Some(predicate) = &self.query.predicate {
            write!(f, ", predicate={predicate}")?;
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
        let limits = BatchLimits {
            rows: context.session_config().batch_size(),
            ..BatchLimits::default()
        };
        let stream = read_partition(self.query.clone(), self.schema.clone(), url, descriptors, limits);
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            stream,
        )))
    }
}

fn read_partition(
    query: Arc<CopyQuery>,
    schema: SchemaRef,
    url: String,
    mut descriptors: SendableRecordBatchStream,
    limits: BatchLimits,
) -> impl futures::Stream<Item = Result<RecordBatch>> + Send {
    async_stream::try_stream! {
        // Opened (its host checked against this executor's --allowed-hosts) as the task starts;
        // the message, not the error's structure, travels back to the client.
        let pool = PoolRegistry::global()
            .get(&url)
            .await
            .map_err(|e| DataFusionError::Execution(e.to_string()))?;
        let types: Vec<PgType> = query.columns.iter().map(|c| c.pg_type.clone()).collect();
        while let Some(batch) = descriptors.next().await {
            for range in ranges_in(&batch?)? {
                let sql = query.statement(range);
                tracing::debug!(table = %query.table, %sql, "reading partition");
                let failed = |e: sqlx::Error| source_error(&query.table, range, e);
                let mut connection = StreamingConnection::new(pool.acquire().await.map_err(failed)?);
                let mut decoder = CopyDecoder::new(query.table.to_string(), schema.clone(), &types, limits);
                let mut chunks = connection.conn().copy_out_raw(&sql).await.map_err(failed)?;
                while let Some(chunk) = chunks.next().await {
                    decoder.push(&chunk.map_err(failed)?).map_err(external)?;
                    // async-stream's macro is edition 2021: no let chains inside it.
                    if decoder.batch_full() {
                        let full = decoder.flush().map_err(external)?;
                        if let Some(batch) = full {
                            yield batch;
                        }
                    }
                }
                drop(chunks);
                let last = decoder.finish().map_err(external)?;
                connection.release();
                if let Some(batch) = last {
                    yield batch;
                }
            }
        }
    }
}

fn source_error(table: &QualifiedName, range: BlockRange, error: sqlx::Error) -> DataFusionError {
    let blocks = match range.end {
        Some(end) => format!("blocks {}..{end}", range.start),
        None => format!("blocks {}..end", range.start),
    };
    DataFusionError::Execution(format!(
        "reading {table} ({blocks}) from Postgres failed: {error}"
    ))
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as BASE64;
    use datafusion::logical_expr::Expr;
    use datafusion::prelude::{col, lit};
    use datafusion_proto::bytes::Serializeable;

    use super::*;
    use crate::grant::DEFAULT_GRANT_TTL;
    use crate::ident::Ident;
    use crate::postgres::filter::tests::columns;

    fn spec(filters: Vec<String>, projection: Vec<usize>) -> PgScanSpec {
        let table = QualifiedName {
            schema: Ident::new("public").unwrap(),
            name: Ident::new("orders").unwrap(),
        };
        let table_columns = columns();
        let key = ClusterKey::generate();
        PgScanSpec {
            grant: ScanGrant::issue(&key, "postgres://db/x", &table, &table_columns, DEFAULT_GRANT_TTL),
            table,
            table_columns,
            projection,
            filters,
            limit: Some(10),
            heap_bytes: 0,
        }
    }

    fn refusal(spec: &PgScanSpec) -> String {
        CopyQuery::render(spec).unwrap_err().to_string()
    }

    /// A filter encoded as a forged plan would carry it: unchecked.
    fn encode_filter(filter: &Expr) -> Result<String> {
        Ok(BASE64.encode(filter.to_bytes()?))
    }

    #[test]
    fn typed_filters_are_rendered_where_the_scan_runs() {
        let filter = encode_filter(&col("id").gt(lit(5i64))).unwrap();
        let query = CopyQuery::render(&spec(vec![filter], vec![0])).unwrap();
        assert_eq!(
            query.statement(BlockRange::WHOLE),
            "COPY (SELECT \"id\" FROM \"public\".\"orders\" WHERE (\"id\" > 5) LIMIT 10) TO STDOUT (FORMAT binary)"
        );
    }

    #[test]
    fn raw_sql_where_a_filter_belongs_is_refused() {
        let sql = BASE64.encode("true) TO PROGRAM 'id' --");
        assert!(refusal(&spec(vec![sql], vec![0])).contains("not an expression"));
        assert!(refusal(&spec(vec!["1=1 OR".into()], vec![0])).contains("not base64"));
    }

    #[test]
    fn filters_the_renderer_does_not_accept_are_refused() {
        let unpushable = [
            col("code").eq(lit("x")),
            col("id").eq(col("id")),
            col("missing").eq(lit(1i64)),
        ];
        for filter in unpushable {
            let error = refusal(&spec(vec![encode_filter(&filter).unwrap()], vec![0]));
            assert!(
                error.contains("plan refused") && error.contains("not one Kalla pushes down"),
                "{error}"
            );
        }
    }

    #[test]
    fn a_projection_beyond_the_columns_is_refused() {
        assert!(refusal(&spec(vec![], vec![0, 42])).contains("projection index 42"));
    }
}
