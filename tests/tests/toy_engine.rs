//! The source seam carries an engine Kalla has never heard of: a toy engine defined here (tables
//! held in memory, made up from their names) is registered, and a runner in this process, on its
//! embedded cluster, registers it as a source and a connection, previews it, queries it live and
//! cached, and reconciles two of its tables. Nothing outside this file knows the engine.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::{Float64Array, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use kalla_core::ident::QualifiedName;
use kalla_core::preview::{Condition, Preview, PreviewColumn, PreviewError, predicate, text_rows};
use kalla_core::source::{
    ColumnInfo, Database, DiscoveredTable, Engine, EngineError, Engines, Fit, Health, SourceContext,
};
use kalla_e2e::ports::free_port;
use kalla_runner::config::RunnerConfig;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use url::Url;

/// `toy://ledger/<table>`: `invoices` are ids 1..=100 with amount id × 1.5; `payments` pay all
/// but every tenth invoice, every seventh of them a whole unit off.
#[derive(Debug)]
struct ToyEngine;

const TABLES: [&str; 2] = ["invoices", "payments"];

fn toy_batch(table: &str) -> Result<RecordBatch, EngineError> {
    let rows: Vec<(i64, f64)> = match table {
        "invoices" => (1..=100).map(|id| (id, id as f64 * 1.5)).collect(),
        "payments" => (1..=100)
            .filter(|id| id % 10 != 0)
            .map(|id| (id, id as f64 * 1.5 + if id % 7 == 0 { 1.0 } else { 0.0 }))
            .collect(),
        other => {
            return Err(EngineError::InvalidLocation(format!(
                "the toy ledger has no table {other:?}"
            )));
        }
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("amount", DataType::Float64, false),
    ]));
    let ids = Int64Array::from_iter_values(rows.iter().map(|(id, _)| *id));
    let amounts = Float64Array::from_iter_values(rows.iter().map(|(_, amount)| *amount));
    RecordBatch::try_new(schema, vec![Arc::new(ids), Arc::new(amounts)])
        .map_err(|e| EngineError::Failed(e.to_string()))
}

/// The table a location names: its last path segment.
fn table_name(location: &Url) -> &str {
    location.path().rsplit('/').next().unwrap_or_default()
}

/// A toy table: only its name travels in plans; every process makes its rows up from it.
#[derive(Debug)]
struct ToyTable {
    name: String,
    batch: RecordBatch,
}

impl ToyTable {
    fn named(name: &str) -> Result<Self, EngineError> {
        Ok(Self {
            name: name.to_string(),
            batch: toy_batch(name)?,
        })
    }
}

#[async_trait]
impl TableProvider for ToyTable {
    fn schema(&self) -> SchemaRef {
        self.batch.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let partitions = [vec![self.batch.clone()]];
        Ok(MemorySourceConfig::try_new_exec(
            &partitions,
            self.schema(),
            projection.cloned(),
        )?)
    }
}

#[async_trait]
impl Engine for ToyEngine {
    fn name(&self) -> &'static str {
        "toy"
    }

    fn fits(&self, location: &Url) -> Fit {
        if location.scheme() == "toy" {
            Fit::Inferred
        } else {
            Fit::No
        }
    }

    async fn check(&self, location: &Url, _context: &SourceContext) -> Result<(), EngineError> {
        toy_batch(table_name(location)).map(drop)
    }

    async fn table(
        &self,
        location: &Url,
        _context: &SourceContext,
        _session: &SessionContext,
    ) -> Result<Arc<dyn TableProvider>, EngineError> {
        Ok(Arc::new(ToyTable::named(table_name(location))?))
    }

    async fn preview(
        &self,
        location: &Url,
        conditions: &[Condition],
        limit: usize,
        _context: &SourceContext,
    ) -> Result<Preview, PreviewError> {
        let batch = toy_batch(table_name(location)).map_err(|e| PreviewError::Gone(e.to_string()))?;
        let frame = SessionContext::new()
            .read_batch(batch)
            .map_err(|e| PreviewError::Internal(e.to_string()))?;
        let fields: Vec<_> = frame.schema().fields().iter().cloned().collect();
        let frame = match predicate(&fields, conditions)? {
            Some(predicate) => frame
                .filter(predicate)
                .map_err(|e| PreviewError::Internal(e.to_string()))?,
            None => frame,
        };
        let total_rows = frame
            .clone()
            .count()
            .await
            .map_err(|e| PreviewError::Internal(e.to_string()))?;
        let batches = frame
            .limit(0, Some(limit))
            .map_err(|e| PreviewError::Internal(e.to_string()))?
            .collect()
            .await
            .map_err(|e| PreviewError::Internal(e.to_string()))?;
        Ok(Preview {
            columns: fields.iter().map(|f| PreviewColumn::from_field(f)).collect(),
            rows: text_rows(&batches)?,
            total_rows: total_rows as u64,
            total_rows_exact: true,
        })
    }

    fn database(&self) -> Option<&dyn Database> {
        Some(self)
    }

    fn encode_table(&self, table: &dyn TableProvider) -> Option<Result<Vec<u8>>> {
        let table = table.downcast_ref::<ToyTable>()?;
        Some(Ok(table.name.clone().into_bytes()))
    }

    fn decode_table(&self, payload: &[u8]) -> Result<Arc<dyn TableProvider>> {
        let name = std::str::from_utf8(payload).map_err(|e| DataFusionError::Internal(e.to_string()))?;
        let table = ToyTable::named(name).map_err(|e| DataFusionError::Internal(e.to_string()))?;
        Ok(Arc::new(table))
    }
}

#[async_trait]
impl Database for ToyEngine {
    async fn url(&self, config: &Value) -> Result<Url, EngineError> {
        let ledger = config["ledger"]
            .as_str()
            .ok_or_else(|| EngineError::InvalidLocation("config needs a ledger".into()))?;
        Url::parse(&format!("toy://{ledger}/")).map_err(|e| EngineError::InvalidLocation(e.to_string()))
    }

    fn shown_config(&self, stored: &Url, _has_password: bool) -> Value {
        json!({"ledger": stored.host_str()})
    }

    fn table_location(&self, database: &Url, table: &QualifiedName) -> Url {
        database
            .join(table.name.as_str())
            .expect("a table name is a path segment")
    }

    async fn discover(&self, _database: &Url) -> Result<Vec<DiscoveredTable>, EngineError> {
        TABLES
            .iter()
            .map(|name| {
                let batch = toy_batch(name)?;
                let columns = batch
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| ColumnInfo {
                        name: f.name().clone(),
                        data_type: f.data_type().to_string(),
                        nullable: f.is_nullable(),
                        sql_type: f.data_type().to_string(),
                    })
                    .collect();
                let table = kalla_core::uri::parse_table_name(&format!("main.{name}"))
                    .map_err(|e| EngineError::Failed(e.to_string()))?;
                Ok(DiscoveredTable { table, columns })
            })
            .collect()
    }

    async fn health(&self, _database: &Url) -> Health {
        Health {
            reachable: true,
            latency_ms: 0.0,
            sslmode: "disable".into(),
            encrypted: false,
            verified: false,
            error: None,
        }
    }
}

/// A runner in this process (embedded cluster, SQLite metadata), and its token.
async fn start_runner(data_dir: &std::path::Path) -> (String, String) {
    let port = free_port();
    let config = RunnerConfig::load_from([
        "kalla-runner",
        "--bind",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
        data_dir.to_str().unwrap(),
    ])
    .expect("runner flags");
    tokio::spawn(async move {
        if let Err(error) = kalla_runner::server::run(config).await {
            panic!("the runner stopped: {error:#}");
        }
    });
    let url = format!("http://127.0.0.1:{port}");
    kalla_e2e::wait_for("the runner", Duration::from_secs(60), || async {
        let up = reqwest::get(format!("{url}/ready"))
            .await
            .is_ok_and(|r| r.status().is_success());
        up.then_some(())
    })
    .await;
    let token = std::fs::read_to_string(data_dir.join("api-token")).unwrap();
    (url, token.trim().to_string())
}

async fn call(
    runner: &(String, String),
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let request = reqwest::Client::new()
        .request(method, format!("{}{path}", runner.0))
        .bearer_auth(&runner.1);
    let request = match body {
        Some(body) => request.json(&body),
        None => request,
    };
    let response = request.send().await.expect("the runner answers");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The single value of a one-row, one-column query.
async fn scalar(runner: &(String, String), sql: &str, live: bool) -> String {
    let (status, answer) = call(
        runner,
        Method::POST,
        "/api/query",
        Some(json!({"sql": sql, "live": live})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{sql}: {answer}");
    answer["rows"][0][0].as_str().expect("a value").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_toy_engine_is_a_source_a_connection_a_query_and_a_reconciliation() {
    Engines::global().register(Arc::new(ToyEngine));
    let data_dir = tempfile::tempdir().unwrap();
    let runner = start_runner(data_dir.path()).await;

    // Sources: registered by URI alone, previewed with a bound condition.
    for table in TABLES {
        let body = json!({"alias": format!("toy_{table}"), "uri": format!("toy://ledger/{table}")});
        let (status, answer) = call(&runner, Method::POST, "/api/sources", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        assert_eq!(answer["source_type"], "toy", "{answer}");
    }
    let (status, answer) = call(
        &runner,
        Method::POST,
        "/api/sources",
        Some(json!({"alias": "nope", "uri": "toy://ledger/nope"})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let conditions = json!({"conditions": [{"column": "id", "op": "gt", "value": "95"}], "limit": 2});
    let (status, preview) = call(
        &runner,
        Method::POST,
        "/api/sources/toy_invoices/load-scoped",
        Some(conditions),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!(preview["total_rows"], 5, "{preview}");
    assert_eq!(
        preview["rows"],
        json!([["96", "144.0"], ["97", "145.5"]]),
        "{preview}"
    );

    // Queries over sources run on the cluster, the engine's tables travelling in the plan.
    assert_eq!(
        scalar(&runner, "SELECT count(*) FROM toy_payments", false).await,
        "90"
    );
    assert_eq!(
        scalar(
            &runner,
            "SELECT sum(p.amount - i.amount) FROM toy_invoices i JOIN toy_payments p ON p.id = i.id",
            false
        )
        .await,
        "13.0"
    );

    // A connection: created, its tables discovered, read live and through the cache.
    let body = json!({"name": "books", "source_type": "toy", "config": {"ledger": "main"}});
    let (status, connection) = call(&runner, Method::POST, "/api/connections", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{connection}");
    assert_eq!(connection["discovery"]["tables"], 2, "{connection}");
    assert_eq!(connection["config"], json!({"ledger": "main"}), "{connection}");
    assert_eq!(
        scalar(&runner, "SELECT count(*) FROM books.main.invoices", true).await,
        "100"
    );
    assert_eq!(
        scalar(&runner, "SELECT max(amount) FROM books.main.payments", false).await,
        "148.5"
    );
    let (status, answer) = call(
        &runner,
        Method::POST,
        "/api/connections",
        Some(json!({"name": "x", "source_type": "toys", "config": {}})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("postgres, mariadb or toy"),
        "{answer}"
    );

    // A reconciliation of the two sources.
    let recipe = json!({
        "name": "toy", "left": {"source": "toy_invoices", "key": ["id"]},
        "right": {"source": "toy_payments", "key": ["id"]},
        "rules": [{"kind": "numeric", "left": "amount", "right": "amount", "abs_tol": 0.01}]
    });
    let (status, job) = call(
        &runner,
        Method::POST,
        "/api/jobs",
        Some(json!({"type": "recon", "recipe": recipe})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let job = kalla_e2e::wait_for("the reconciliation", Duration::from_secs(120), || async {
        let (_, job) = call(&runner, Method::GET, &format!("/api/jobs/{id}"), None).await;
        matches!(job["status"].as_str(), Some("succeeded" | "failed")).then_some(job)
    })
    .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let outputs = &job["summary"]["outputs"];
    // 90 paid: 13 of them (ids divisible by 7, not by 10) a unit off; 10 never paid.
    assert_eq!(outputs["matched"], 77, "{job}");
    assert_eq!(outputs["mismatched"], 13, "{job}");
    assert_eq!(outputs["left_only"], 10, "{job}");
    assert_eq!(outputs["right_only"], 0, "{job}");
}
