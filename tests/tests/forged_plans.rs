//! Plans Kalla's own clients never send, submitted to a real cluster (`kalla-scheduler` and a
//! `kalla-executor`) by a client that can reach it: each is refused before any I/O, nothing is
//! read or written, and the refusal is logged.

use std::sync::Arc;
use std::time::Duration;

use ballista_core::serde::protobuf::ExecuteQueryParams;
use ballista_core::serde::protobuf::execute_query_params::Query;
use ballista_core::serde::protobuf::execute_query_result::Result as Submitted;
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use datafusion::catalog::TableProvider;
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::LogicalPlanBuilder;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{CsvReadOptions, SessionContext, col, lit};
use datafusion_proto::bytes::physical_plan_to_bytes_with_extension_codec;
use datafusion_proto::protobuf::PhysicalPlanNode;
use datafusion_proto::protobuf::physical_plan_node::PhysicalPlanType;
use kalla_core::cache::sink::SinkSpec;
use kalla_core::cache::write::WritePlanTable;
use kalla_core::cluster_tls::client;
use kalla_core::codec::KallaPhysicalCodec;
use kalla_core::ident::{Ident, QualifiedName};
use kalla_core::postgres::{PgTableProvider, ScanOptions};
use kalla_core::{ClusterKey, SourceUri};
use kalla_e2e::cluster::{Cluster, ClusterOptions};
use kalla_e2e::postgres::TestDatabase;
use kalla_runner::cluster::connect;
use kalla_runner::reattach::{self, ClusterJob};
use prost::Message;
use tempfile::TempDir;

const TABLES: &str = "
CREATE TABLE orders (id int8 PRIMARY KEY, amount numeric(12,2), note text);
INSERT INTO orders SELECT g, g * 1.5, 'order ' || g FROM generate_series(1, 1000) g;
CREATE TABLE payroll (id int8 PRIMARY KEY, amount numeric(12,2), note text);
INSERT INTO payroll SELECT g, 100000, 'salary ' || g FROM generate_series(1, 10) g;
";

struct Setup {
    cluster: Cluster,
    db: TestDatabase,
    key: ClusterKey,
    ctx: SessionContext,
    /// The cluster's only data location.
    data: TempDir,
    /// A directory outside it.
    outside: TempDir,
}

impl Setup {
    async fn start() -> Self {
        let db = TestDatabase::create().await;
        db.execute(TABLES).await;
        let data = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let cluster = Cluster::start(ClusterOptions {
            executors: 1,
            data_locations: vec![directory_url(&data)],
            ..ClusterOptions::default()
        })
        .await;
        let key = ClusterKey::from_base64(&cluster.key).unwrap();
        let ctx = connect(Some(&cluster.scheduler_url()), key.clone(), cluster.transport())
            .await
            .unwrap();
        Self {
            cluster,
            db,
            key,
            ctx,
            data,
            outside,
        }
    }

    async fn provider(&self, table: &str, options: &ScanOptions) -> PgTableProvider {
        let uri = SourceUri::parse(&self.db.source_uri(table)).unwrap();
        PgTableProvider::connect(&uri, &self.key, options).await.unwrap()
    }

    /// Runs `sql` on the cluster; the error's text if it fails.
    async fn refusal_of_sql(&self, sql: &str) -> String {
        let result = match self.ctx.sql(sql).await {
            Ok(frame) => frame.collect().await.map(drop),
            Err(error) => Err(error),
        };
        result.expect_err(&format!("{sql} ran")).to_string()
    }

    async fn refusal_of_plan(&self, plan: datafusion::logical_expr::LogicalPlan) -> String {
        let result = match self.ctx.execute_logical_plan(plan).await {
            Ok(frame) => frame.collect().await.map(drop),
            Err(error) => Err(error),
        };
        result.expect_err("a forged plan ran").to_string()
    }

    /// Submits a physical plan as Ballista's protocol allows; the submission's or the job's
    /// error.
    async fn refusal_of_physical(&self, plan: Vec<u8>) -> String {
        let url = self.cluster.rest_url("");
        let channel = client::connect(self.cluster.transport().tls(), &url)
            .await
            .unwrap();
        let mut scheduler = SchedulerGrpcClient::new(channel);
        let mut request = tonic::Request::new(ExecuteQueryParams {
            query: Some(Query::PhysicalPlan(plan)),
            session_id: String::new(),
            settings: Vec::new(),
            operation_id: String::new(),
        });
        ballista_core::version::insert_version_header(request.metadata_mut());
        let submitted = match scheduler.execute_query(request).await {
            Err(status) => return status.message().to_string(),
            Ok(answer) => answer.into_inner().result,
        };
        let job_id = match submitted {
            Some(Submitted::Success(success)) => success.job_id,
            other => return format!("{other:?}"),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            match reattach::state(&mut scheduler, &job_id).await {
                ClusterJob::Gone(reason) => return reason,
                ClusterJob::Succeeded(_) => panic!("the forged physical plan ran"),
                ClusterJob::Active => {
                    assert!(tokio::time::Instant::now() < deadline, "job {job_id} never ended");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn log(&self, process: &str) -> String {
        self.cluster.log(process)
    }
}

fn directory_url(dir: &TempDir) -> String {
    let dir = std::fs::canonicalize(dir.path()).unwrap();
    url::Url::from_directory_path(dir).unwrap().to_string()
}

fn assert_refused(error: &str, why: &str) {
    assert!(
        error.contains("plan refused") && error.contains(why),
        "expected a refusal saying {why:?}, got: {error}"
    );
}

/// The executor logs each partition it reads; none of `table`'s may be there.
fn assert_never_read(setup: &Setup, table: &str) {
    let log = setup.log("executor-0");
    let read = log
        .lines()
        .any(|line| line.contains("reading partition") && line.contains(table));
    assert!(!read, "the executor read {table}:\n{log}");
}

fn empty(dir: &TempDir) -> bool {
    std::fs::read_dir(dir.path()).unwrap().next().is_none()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forged_plans_are_refused_before_any_io_and_logged() {
    let setup = Setup::start().await;
    let orders = setup.provider("orders", &ScanOptions::default()).await;

    // The honest plan runs: the checks refuse forgeries, not Kalla's own plans.
    setup.ctx.register_table("orders", Arc::new(orders)).unwrap();
    let honest = setup
        .ctx
        .sql("SELECT count(*) FROM orders WHERE id > 990")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(honest[0].num_rows(), 1);
    let honest_copy = format!(
        "COPY (SELECT 1 AS x) TO '{}honest.parquet' STORED AS PARQUET",
        directory_url(&setup.data)
    );
    setup
        .ctx
        .sql(&honest_copy)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert!(setup.data.path().join("honest.parquet").exists());

    // A grant captured from a plan of `orders`, replayed for `payroll`.
    let mut stolen = setup
        .provider("orders", &ScanOptions::default())
        .await
        .spec()
        .clone();
    stolen.table = QualifiedName {
        schema: Ident::new("public").unwrap(),
        name: Ident::new("payroll").unwrap(),
    };
    setup
        .ctx
        .register_table("stolen", Arc::new(PgTableProvider::from_spec(stolen, None)))
        .unwrap();
    let error = setup.refusal_of_sql("SELECT * FROM stolen").await;
    assert_refused(&error, "not valid for");
    assert!(error.contains("payroll"), "{error}");
    assert_never_read(&setup, "payroll");

    // An expired grant.
    let short = ScanOptions {
        grant_ttl: Duration::from_secs(1),
        ..ScanOptions::default()
    };
    let expiring = setup.provider("orders", &short).await;
    setup.ctx.register_table("expiring", Arc::new(expiring)).unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let error = setup.refusal_of_sql("SELECT * FROM expiring").await;
    assert_refused(&error, "expired");

    // A pushed-down filter the renderer does not accept (`id + 1 > 5` is no column comparison).
    let provider = Arc::new(setup.provider("orders", &ScanOptions::default()).await);
    let filtered = LogicalPlanBuilder::scan_with_filters(
        "orders",
        provider_as_source(provider.clone()),
        None,
        vec![(col("id") + lit(1i64)).gt(lit(5i64))],
    )
    .unwrap()
    .build()
    .unwrap();
    let error = setup.refusal_of_plan(filtered).await;
    assert_refused(&error, "not one Kalla pushes down");

    // Raw SQL where a filter expression belongs, in a physical plan.
    let scan = provider
        .scan(&setup.ctx.state(), None, &[col("id").gt(lit(5i64))], None)
        .await
        .unwrap();
    let forged = with_scan_filters(scan, &["true) TO PROGRAM 'touch /tmp/kalla-owned' --"]);
    let error = setup.refusal_of_physical(forged).await;
    assert_refused(&error, "is not an expression");
    assert!(!std::path::Path::new("/tmp/kalla-owned").exists());

    // A CSV scan of /etc, as SQL (refused by the scheduler) and as a physical plan (by the executor).
    let local = SessionContext::new();
    let passwd = CsvReadOptions::new()
        .has_header(false)
        .delimiter(b':')
        .file_extension("");
    for ctx in [&setup.ctx, &local] {
        ctx.register_csv("passwd", "/etc/passwd", passwd.clone())
            .await
            .unwrap();
    }
    let error = setup.refusal_of_sql("SELECT * FROM passwd").await;
    assert_refused(&error, "file:///etc/passwd is not under a data location");
    let physical = local
        .sql("SELECT * FROM passwd")
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    let encoded =
        physical_plan_to_bytes_with_extension_codec(physical, &KallaPhysicalCodec::default()).unwrap();
    let error = setup.refusal_of_physical(encoded.to_vec()).await;
    assert_refused(&error, "file:///etc/passwd is not under a data location");

    // Parquet written outside the data locations: DataFusion's COPY, and Kalla's own sink.
    let outside = directory_url(&setup.outside);
    let error = setup
        .refusal_of_sql(&format!(
            "COPY (SELECT 1 AS x) TO '{outside}x.parquet' STORED AS PARQUET"
        ))
        .await;
    assert_refused(&error, "is not under a data location");
    let input = setup.ctx.table("orders").await.unwrap().into_unoptimized_plan();
    let sink = SinkSpec {
        directory: format!("{outside}results/"),
        split: None,
    };
    setup
        .ctx
        .register_table("write_out", Arc::new(WritePlanTable::new(input, sink)))
        .unwrap();
    let error = setup.refusal_of_sql("SELECT * FROM write_out").await;
    assert_refused(&error, "is not under a data location");
    assert!(
        empty(&setup.outside),
        "something was written outside the data locations"
    );

    // A file sink whose target is under the data locations but whose store is another one.
    let honest_sink = local
        .sql(&format!(
            "COPY (SELECT 1 AS x) TO '{}sunk.csv' STORED AS CSV",
            directory_url(&setup.data)
        ))
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    let error = setup
        .refusal_of_physical(with_sink_store(honest_sink, "s3://elsewhere/"))
        .await;
    assert_refused(&error, "into the store s3://elsewhere/");

    let scheduler_log = setup.log("scheduler");
    let executor_log = setup.log("executor-0");
    assert!(scheduler_log.contains("refused a plan"), "{scheduler_log}");
    assert!(executor_log.contains("refused a plan"), "{executor_log}");
    assert!(executor_log.contains("refused a scan"), "{executor_log}");
}

/// `scan` (a Postgres scan) encoded for the scheduler, its filters replaced by `filters`.
fn with_scan_filters(scan: Arc<dyn ExecutionPlan>, filters: &[&str]) -> Vec<u8> {
    let bytes = physical_plan_to_bytes_with_extension_codec(scan, &KallaPhysicalCodec::default()).unwrap();
    let mut node = PhysicalPlanNode::decode(bytes.as_ref()).unwrap();
    let Some(PhysicalPlanType::Extension(extension)) = node.physical_plan_type.as_mut() else {
        panic!("a Postgres scan is an extension node");
    };
    // Kalla's envelope: its tag, the engine's name (a length byte, then the name), the scan's JSON.
    let (head, json) = extension.node.split_at(2 + usize::from(extension.node[1]));
    let mut spec: serde_json::Value = serde_json::from_slice(json).unwrap();
    spec["filters"] = filters.iter().map(|sql| BASE64.encode(sql)).collect();
    extension.node = head
        .iter()
        .copied()
        .chain(serde_json::to_vec(&spec).unwrap())
        .collect();
    node.encode_to_vec()
}

/// A CSV sink's plan encoded for the scheduler, its object store replaced by `store`.
fn with_sink_store(sink: Arc<dyn ExecutionPlan>, store: &str) -> Vec<u8> {
    let bytes = physical_plan_to_bytes_with_extension_codec(sink, &KallaPhysicalCodec::default()).unwrap();
    let mut node = PhysicalPlanNode::decode(bytes.as_ref()).unwrap();
    let Some(PhysicalPlanType::CsvSink(csv)) = node.physical_plan_type.as_mut() else {
        panic!("COPY … STORED AS CSV plans a CSV sink");
    };
    let config = csv.sink.as_mut().and_then(|sink| sink.config.as_mut()).unwrap();
    config.object_store_url = store.to_string();
    node.encode_to_vec()
}
