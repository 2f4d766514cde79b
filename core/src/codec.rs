//! Ballista extension codecs: Kalla's nodes behind a one-byte envelope, everything else
//! delegated to Ballista's own codecs.

use std::sync::Arc;

use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::{DataFusionError, Result, TableReference};
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{AggregateUDF, Extension, LogicalPlan, ScalarUDF, WindowUDF};
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::bytes::{
    logical_plan_from_bytes_with_extension_codec, logical_plan_to_bytes_with_extension_codec,
};
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};

use crate::cache::sink::{PartitionParquetSinkExec, SinkSpec};
use crate::cache::write::{WritePlanTable, WriteSpec};
use crate::plan_check::PlanCheck;
use crate::recon::pair::{Grouping, PairExec};
use crate::recon::pairs_table::{PairsSpec, PairsTable};
use crate::seal::ClusterKey;
use crate::source::Engines;

/// Envelope tags: what follows the first byte.
const TAG_BALLISTA: u8 = 0;
/// A source engine's table or scan; the engine's name follows (see [`Engines`]).
const TAG_SOURCE: u8 = 1;
const TAG_PARQUET_SINK: u8 = 3;
const TAG_WRITE_PLAN: u8 = 4;
const TAG_PAIRS_TABLE: u8 = 5;
const TAG_PAIR: u8 = 6;

/// A logical plan that travels inside a Kalla node: datafusion-proto bytes (with Kalla's codec
/// for its sources) in base64.
pub fn encode_plan(plan: &LogicalPlan) -> Result<String> {
    let bytes = logical_plan_to_bytes_with_extension_codec(plan, &KallaLogicalCodec::default())?;
    Ok(STANDARD.encode(bytes))
}

/// The plan [`encode_plan`] encoded.
pub fn decode_plan(encoded: &str, ctx: &TaskContext) -> Result<LogicalPlan> {
    let bytes = STANDARD
        .decode(encoded)
        .map_err(|e| DataFusionError::Internal(format!("a plan inside a Kalla node is not base64: {e}")))?;
    logical_plan_from_bytes_with_extension_codec(&bytes, ctx, &KallaLogicalCodec::default())
}

fn envelope(tag: u8, payload: &impl serde::Serialize, buf: &mut Vec<u8>) -> Result<()> {
    buf.push(tag);
    serde_json::to_writer(buf, payload).map_err(|e| DataFusionError::Internal(format!("encoding {tag}: {e}")))
}

fn open<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T> {
    serde_json::from_slice(payload).map_err(|e| {
        DataFusionError::Internal(format!(
            "cannot decode a Kalla plan node ({e}); client, scheduler and executors must run the same Kalla build"
        ))
    })
}

fn split(buf: &[u8]) -> Result<(u8, &[u8])> {
    buf.split_first()
        .map(|(tag, rest)| (*tag, rest))
        .ok_or_else(|| DataFusionError::Internal("empty Kalla codec payload".into()))
}

fn unknown_tag(tag: u8) -> DataFusionError {
    DataFusionError::Internal(format!(
        "unknown Kalla codec tag {tag}; client, scheduler and executors must run the same Kalla build"
    ))
}

/// Encodes Kalla table providers inside logical plans.
#[derive(Debug, Default)]
pub struct KallaLogicalCodec {
    inner: BallistaLogicalExtensionCodec,
}

impl LogicalExtensionCodec for KallaLogicalCodec {
    fn try_decode(&self, buf: &[u8], inputs: &[LogicalPlan], ctx: &TaskContext) -> Result<Extension> {
        self.inner.try_decode(buf, inputs, ctx)
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode(node, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        match split(buf)? {
            (TAG_SOURCE, payload) => Engines::global().decode_table(payload),
            (TAG_WRITE_PLAN, payload) => {
                let spec: WriteSpec = open(payload)?;
                Ok(Arc::new(WritePlanTable::from_spec(spec, ctx)?))
            }
            (TAG_PAIRS_TABLE, payload) => {
                let spec: PairsSpec = open(payload)?;
                Ok(Arc::new(PairsTable::from_spec(spec, ctx)?))
            }
            (TAG_BALLISTA, payload) => self
                .inner
                .try_decode_table_provider(payload, table_ref, schema, ctx),
            (tag, _) => Err(unknown_tag(tag)),
        }
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        if let Some(payload) = Engines::global().encode_table(node.as_ref()) {
            buf.push(TAG_SOURCE);
            buf.extend(payload?);
            return Ok(());
        }
        if let Some(write) = node.downcast_ref::<WritePlanTable>() {
            return envelope(TAG_WRITE_PLAN, &write.spec()?, buf);
        }
        if let Some(pairs) = node.downcast_ref::<PairsTable>() {
            return envelope(TAG_PAIRS_TABLE, &pairs.spec()?, buf);
        }
        buf.push(TAG_BALLISTA);
        self.inner.try_encode_table_provider(table_ref, node, buf)
    }

    fn try_decode_file_format(&self, buf: &[u8], ctx: &TaskContext) -> Result<Arc<dyn FileFormatFactory>> {
        self.inner.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(&self, buf: &mut Vec<u8>, node: Arc<dyn FileFormatFactory>) -> Result<()> {
        self.inner.try_encode_file_format(buf, node)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        self.inner.try_decode_udf(name, buf)
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode_udf(node, buf)
    }

    fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> Result<Arc<AggregateUDF>> {
        self.inner.try_decode_udaf(name, buf)
    }

    fn try_encode_udaf(&self, node: &AggregateUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode_udaf(node, buf)
    }

    fn try_decode_udwf(&self, name: &str, buf: &[u8]) -> Result<Arc<WindowUDF>> {
        self.inner.try_decode_udwf(name, buf)
    }

    fn try_encode_udwf(&self, node: &WindowUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode_udwf(node, buf)
    }
}

/// Encodes Kalla execution plans; holds the cluster key on processes that execute scans, and the
/// plan check on the scheduler and executors.
#[derive(Debug, Default)]
pub struct KallaPhysicalCodec {
    inner: BallistaPhysicalExtensionCodec,
    key: Option<ClusterKey>,
    check: Option<PlanCheck>,
}

impl KallaPhysicalCodec {
    pub fn new(key: Option<ClusterKey>) -> Self {
        Self {
            inner: BallistaPhysicalExtensionCodec::default(),
            key,
            check: None,
        }
    }

    /// A codec that checks every plan below a Ballista node as it decodes it. Each task an
    /// executor runs is a stage whose root is Ballista's shuffle writer, so every task's whole
    /// plan is checked before any of it runs.
    pub fn checking(key: Option<ClusterKey>, check: PlanCheck) -> Self {
        Self {
            check: Some(check),
            ..Self::new(key)
        }
    }
}

impl PhysicalExtensionCodec for KallaPhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match split(buf)? {
            (TAG_SOURCE, payload) => Engines::global().decode_scan(payload, inputs, self.key.as_ref()),
            (TAG_PARQUET_SINK, payload) => {
                let spec: SinkSpec = open(payload)?;
                let [input] = inputs else {
                    return Err(DataFusionError::Internal(
                        "PartitionParquetSinkExec needs exactly one input".into(),
                    ));
                };
                Ok(Arc::new(PartitionParquetSinkExec::new(
                    Arc::new(spec),
                    input.clone(),
                )))
            }
            (TAG_PAIR, payload) => {
                let (keys, grouping): (usize, Option<Grouping>) = open(payload)?;
                let [left, right] = inputs else {
                    return Err(DataFusionError::Internal(
                        "PairExec needs exactly two inputs".into(),
                    ));
                };
                Ok(Arc::new(PairExec::try_new(
                    keys,
                    grouping,
                    left.clone(),
                    right.clone(),
                )?))
            }
            (TAG_BALLISTA, payload) => {
                let node = self.inner.try_decode(payload, inputs, ctx, proto_converter)?;
                if let Some(check) = &self.check {
                    check.physical(&node)?;
                }
                Ok(node)
            }
            (tag, _) => Err(unknown_tag(tag)),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        if let Some(payload) = Engines::global().encode_scan(node.as_ref()) {
            buf.push(TAG_SOURCE);
            buf.extend(payload?);
            return Ok(());
        }
        if let Some(sink) = node.downcast_ref::<PartitionParquetSinkExec>() {
            return envelope(TAG_PARQUET_SINK, sink.spec(), buf);
        }
        if let Some(pair) = node.downcast_ref::<PairExec>() {
            return envelope(TAG_PAIR, &(pair.keys(), pair.grouping()), buf);
        }
        buf.push(TAG_BALLISTA);
        self.inner.try_encode(node, buf, proto_converter)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        self.inner.try_decode_udf(name, buf)
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode_udf(node, buf)
    }

    fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> Result<Arc<AggregateUDF>> {
        self.inner.try_decode_udaf(name, buf)
    }

    fn try_encode_udaf(&self, node: &AggregateUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode_udaf(node, buf)
    }

    fn try_decode_udwf(&self, name: &str, buf: &[u8]) -> Result<Arc<WindowUDF>> {
        self.inner.try_decode_udwf(name, buf)
    }

    fn try_encode_udwf(&self, node: &WindowUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode_udwf(node, buf)
    }
}
