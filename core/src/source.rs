//! The source seam: what every engine Kalla reads data from (Postgres, CSV and Parquet files, …)
//! does behind one interface, and the registry that finds an engine by its name or by a URI.
//!
//! An engine plans a table for the cluster (schema, partitions, pushed filters, limit), previews
//! one source with bound conditions, and, if it serves whole databases, turns a connection's
//! config into a URL, discovers the database's tables and checks its health. Its scans travel
//! through the Ballista codecs under its name. Adding an engine is one module implementing
//! [`Engine`] plus one line in [`Engines::builtin`].

use std::fmt;
use std::sync::{Arc, OnceLock, PoisonError, RwLock, RwLockReadGuard};

use async_trait::async_trait;
use datafusion::catalog::TableProvider;
use datafusion::common::{DataFusionError, Result};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;
use url::Url;

use crate::allow::FileAccess;
use crate::ident::QualifiedName;
use crate::pool::{PoolError, PoolRegistry};
use crate::preview::{Condition, Preview, PreviewError};
use crate::seal::ClusterKey;
use crate::storage::S3Settings;

pub use crate::grant::DEFAULT_GRANT_TTL;
pub use crate::postgres::{PartitionOptions, ScanOptions};

/// Why an engine could not do what it was asked.
#[derive(Debug, Error)]
pub enum EngineError {
    /// The URI or config does not name data this engine can read.
    #[error("{0}")]
    InvalidLocation(String),
    /// The source's database cannot be reached or read.
    #[error("{0}")]
    Unreachable(String),
    /// Planning the table for a scan failed.
    #[error("{0}")]
    Failed(String),
    /// The location is outside what this process may reach (`--file-roots`, `--allowed-hosts`,
    /// `--allowed-buckets`); the message names the rule.
    #[error("{0}")]
    NotAllowed(String),
}

impl From<PoolError> for EngineError {
    /// A pool that could not be had: refused here, badly configured, or out of reach.
    fn from(error: PoolError) -> Self {
        match error {
            error if error.is_refusal() => Self::NotAllowed(error.to_string()),
            error @ (PoolError::InvalidUrl { .. } | PoolError::Tls { .. }) => {
                Self::InvalidLocation(error.to_string())
            }
            error => Self::Unreachable(error.to_string()),
        }
    }
}

/// Errors unless a database's TLS settings are usable here and its host is one this process may
/// connect to; a host that does not resolve (yet) is not refused, only reported when read.
pub async fn check_database(connection_url: &str) -> Result<(), EngineError> {
    let pools = PoolRegistry::global();
    pools
        .check_tls(connection_url)
        .map_err(|e| EngineError::InvalidLocation(e.to_string()))?;
    match pools.check_host(connection_url).await {
        Err(PoolError::Host { source, .. }) if !source.is_refusal() => Ok(()),
        checked => checked.map_err(EngineError::from),
    }
}

/// Rows a preview counts unless configured otherwise.
pub const DEFAULT_COUNT_CAP: u64 = 1_000_000;

/// What a runner (or the `kalla` CLI) lends an engine to plan and preview its sources.
#[derive(Debug, Clone)]
pub struct SourceContext {
    /// Seals the credentials a table's scans carry through the cluster.
    pub key: ClusterKey,
    pub scans: ScanOptions,
    pub s3: S3Settings,
    /// Rows a preview counts before it reports the total as a lower bound.
    pub count_cap: u64,
    /// The directories and buckets file sources may be read from.
    pub files: FileAccess,
}

impl SourceContext {
    pub fn new(key: ClusterKey) -> Self {
        Self {
            key,
            scans: ScanOptions::default(),
            s3: S3Settings::default(),
            count_cap: DEFAULT_COUNT_CAP,
            files: FileAccess::any(),
        }
    }
}

/// How well a URI fits an engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// The URI alone says it is this engine's (its scheme, a file's extension).
    Inferred,
    /// The engine can read it when told to (a directory of files).
    Possible,
    No,
}

/// A column as Kalla reads it; a discovered table's list of these is its `arrow_schema_json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ColumnInfo {
    pub name: String,
    /// The Arrow type (e.g. `Int64`, `Decimal128(12, 2)`).
    pub data_type: String,
    pub nullable: bool,
    /// The column's type at the source (`format_type`).
    pub sql_type: String,
}

/// A table a database's discovery found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredTable {
    pub table: QualifiedName,
    pub columns: Vec<ColumnInfo>,
}

/// Whether a database answers, and how safely the runner's session to it travels.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    pub reachable: bool,
    pub latency_ms: f64,
    /// The `sslmode` the runner connects with (`prefer` unless the connection sets one).
    pub sslmode: String,
    /// Whether the runner's session is encrypted, as the server reports it (`pg_stat_ssl`; behind
    /// a connection pooler, that is the pooler's session to the server).
    pub encrypted: bool,
    /// Whether the server's certificate was checked against trusted roots (`verify-ca` or
    /// `verify-full` on an encrypted session).
    pub verified: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One kind of source. `location`s are the URIs users register, with any password put back.
#[async_trait]
pub trait Engine: fmt::Debug + Send + Sync + 'static {
    /// The `source_type` users name it by; also its scans' tag in plans.
    fn name(&self) -> &'static str;

    /// Whether this engine reads `location`.
    fn fits(&self, location: &Url) -> Fit;

    /// Checks a table's location before it is registered: that it parses and is allowed here.
    async fn check(&self, location: &Url, context: &SourceContext) -> Result<(), EngineError>;

    /// The table at `location`, planned for a scan on the cluster `session` is connected to.
    async fn table(
        &self,
        location: &Url,
        context: &SourceContext,
        session: &SessionContext,
    ) -> Result<Arc<dyn TableProvider>, EngineError>;

    /// The first `limit` rows at `location` matching `conditions`, and how many match, read
    /// straight from the source (no cluster).
    async fn preview(
        &self,
        location: &Url,
        conditions: &[Condition],
        limit: usize,
        context: &SourceContext,
    ) -> Result<Preview, PreviewError>;

    /// The engine's side of connections (whole databases), if it serves them.
    fn database(&self) -> Option<&dyn Database> {
        None
    }

    /// Whether `table` is one this engine planned; the default encodes it to find out.
    fn owns_table(&self, table: &dyn TableProvider) -> bool {
        self.encode_table(table).is_some()
    }

    /// `table` encoded for a plan, if it is one of this engine's tables.
    fn encode_table(&self, _table: &dyn TableProvider) -> Option<Result<Vec<u8>>> {
        None
    }

    /// A table [`Engine::encode_table`] encoded, as the scheduler plans it.
    fn decode_table(&self, _payload: &[u8]) -> Result<Arc<dyn TableProvider>> {
        Err(not_encoded(self.name(), "tables"))
    }

    /// `scan` encoded for a task, if it is one of this engine's scans.
    fn encode_scan(&self, _scan: &dyn ExecutionPlan) -> Option<Result<Vec<u8>>> {
        None
    }

    /// A scan [`Engine::encode_scan`] encoded; `key` opens its grant where tasks run.
    fn decode_scan(
        &self,
        _payload: &[u8],
        _inputs: &[Arc<dyn ExecutionPlan>],
        _key: Option<&ClusterKey>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Err(not_encoded(self.name(), "scans"))
    }

    /// The name of this engine's scan operator, which plan checks let through.
    fn scan_operator(&self) -> Option<&'static str> {
        None
    }
}

/// An engine's side of connections: databases registered once, whose tables are discovered.
#[async_trait]
pub trait Database: Send + Sync {
    /// The database's URL (password included) from a connection's `config`, once it is checked
    /// to be one this process may connect to.
    async fn url(&self, config: &Value) -> Result<Url, EngineError>;

    /// The settings users see of a stored URL (no password; `"***"` where one is stored).
    fn shown_config(&self, stored: &Url, has_password: bool) -> Value;

    /// The location of one of the database's tables.
    fn table_location(&self, database: &Url, table: &QualifiedName) -> Url;

    /// The database's tables and their columns.
    async fn discover(&self, database: &Url) -> Result<Vec<DiscoveredTable>, EngineError>;

    async fn health(&self, database: &Url) -> Health;
}

fn not_encoded(engine: &str, what: &str) -> DataFusionError {
    DataFusionError::Internal(format!("the {engine} engine puts no {what} in plans"))
}

/// The engines this process knows, in the order URIs are matched against them.
#[derive(Debug)]
pub struct Engines {
    engines: RwLock<Vec<Arc<dyn Engine>>>,
}

impl Engines {
    /// Kalla's own engines. A new engine's module adds its line here.
    fn builtin() -> Vec<Arc<dyn Engine>> {
        vec![
            Arc::new(crate::postgres::engine::PostgresEngine::default()),
            Arc::new(crate::mariadb::MariaDbEngine),
            Arc::new(crate::files::FileEngine::csv()),
            Arc::new(crate::files::FileEngine::parquet()),
        ]
    }

    /// The process-wide registry the runner, the codecs and the plan checks share.
    pub fn global() -> &'static Engines {
        static GLOBAL: OnceLock<Engines> = OnceLock::new();
        GLOBAL.get_or_init(|| Engines {
            engines: RwLock::new(Self::builtin()),
        })
    }

    /// Adds `engine` (an extension, or a test's) after the built-in ones; replaces an engine
    /// of the same name.
    pub fn register(&self, engine: Arc<dyn Engine>) {
        let mut engines = self.engines.write().unwrap_or_else(PoisonError::into_inner);
        engines.retain(|known| known.name() != engine.name());
        engines.push(engine);
    }

    fn all(&self) -> RwLockReadGuard<'_, Vec<Arc<dyn Engine>>> {
        self.engines.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn Engine>> {
        self.all().iter().find(|engine| engine.name() == name).cloned()
    }

    /// The names of every engine (`serves_databases`: of those serving connections).
    pub fn names(&self, serves_databases: bool) -> Vec<&'static str> {
        self.all()
            .iter()
            .filter(|engine| !serves_databases || engine.database().is_some())
            .map(|engine| engine.name())
            .collect()
    }

    /// The engine whose URIs look like `location`.
    pub fn infer(&self, location: &Url) -> Option<Arc<dyn Engine>> {
        self.all()
            .iter()
            .find(|engine| engine.fits(location) == Fit::Inferred)
            .cloned()
    }

    /// The engine (and its payload) of a table encoded by [`Engines::encode_table`].
    pub fn encode_table(&self, table: &dyn TableProvider) -> Option<Result<Vec<u8>>> {
        self.all().iter().find_map(|engine| {
            let payload = engine.encode_table(table)?;
            Some(payload.map(|payload| tagged(engine.name(), payload)))
        })
    }

    pub fn decode_table(&self, buf: &[u8]) -> Result<Arc<dyn TableProvider>> {
        let (engine, payload) = self.untag(buf)?;
        engine.decode_table(payload)
    }

    pub fn encode_scan(&self, scan: &dyn ExecutionPlan) -> Option<Result<Vec<u8>>> {
        self.all().iter().find_map(|engine| {
            let payload = engine.encode_scan(scan)?;
            Some(payload.map(|payload| tagged(engine.name(), payload)))
        })
    }

    pub fn decode_scan(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        key: Option<&ClusterKey>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (engine, payload) = self.untag(buf)?;
        engine.decode_scan(payload, inputs, key)
    }

    /// Whether `table` is one an engine plans (and so checks itself where it is scanned).
    pub fn owns_table(&self, table: &dyn TableProvider) -> bool {
        self.all().iter().any(|engine| engine.owns_table(table))
    }

    pub fn is_scan_operator(&self, operator: &str) -> bool {
        self.all()
            .iter()
            .any(|engine| engine.scan_operator() == Some(operator))
    }

    fn untag<'a>(&self, buf: &'a [u8]) -> Result<(Arc<dyn Engine>, &'a [u8])> {
        let malformed = || DataFusionError::Internal("a source scan in a plan names no engine".into());
        let (length, rest) = buf.split_first().ok_or_else(malformed)?;
        let length = usize::from(*length);
        if rest.len() < length {
            return Err(malformed());
        }
        let (name, payload) = rest.split_at(length);
        let name = std::str::from_utf8(name).map_err(|_| malformed())?;
        let engine = self.get(name).ok_or_else(|| {
            DataFusionError::Internal(format!(
                "a plan scans a {name:?} source, which this process has no engine for; client, \
                 scheduler and executors must run the same Kalla build"
            ))
        })?;
        Ok((engine, payload))
    }
}

/// An engine's table or scan as JSON for a plan.
pub fn plan_json(engine: &str, payload: &impl Serialize) -> Result<Vec<u8>> {
    serde_json::to_vec(payload)
        .map_err(|e| DataFusionError::Internal(format!("encoding a {engine} scan: {e}")))
}

/// What [`plan_json`] encoded.
pub fn from_plan_json<T: serde::de::DeserializeOwned>(engine: &str, payload: &[u8]) -> Result<T> {
    serde_json::from_slice(payload).map_err(|e| {
        DataFusionError::Internal(format!(
            "cannot decode a {engine} scan ({e}); client, scheduler and executors must run the same Kalla build"
        ))
    })
}

/// `payload` behind its engine's name (one length byte, then the name).
fn tagged(name: &str, payload: Vec<u8>) -> Vec<u8> {
    let mut buf = Vec::with_capacity(1 + name.len() + payload.len());
    buf.push(u8::try_from(name.len()).expect("engine names are short"));
    buf.extend_from_slice(name.as_bytes());
    buf.extend(payload);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn uris_find_their_engine() {
        let engines = Engines::global();
        let inferred = |s: &str| engines.infer(&url(s)).map(|e| e.name());
        assert_eq!(inferred("postgresql://h/db?table=t"), Some("postgres"));
        assert_eq!(inferred("s3://b/x/data.CSV"), Some("csv"));
        assert_eq!(inferred("file:///x/y.parquet"), Some("parquet"));
        assert_eq!(inferred("mysql://h/db?table=t"), Some("mariadb"));
        assert_eq!(inferred("mariadb://h/db?table=t"), Some("mariadb"));
        assert_eq!(inferred("s3://b/dir/"), None);
        assert_eq!(engines.names(false), ["postgres", "mariadb", "csv", "parquet"]);
        assert_eq!(engines.names(true), ["postgres", "mariadb"]);
    }

    #[test]
    fn tags_name_their_engine() {
        let buf = tagged("csv", vec![7, 8]);
        let (engine, payload) = Engines::global().untag(&buf).unwrap();
        assert_eq!((engine.name(), payload), ("csv", &[7u8, 8][..]));
        for bad in [&[][..], &[9, b'c'][..], &[3, b'x', b'y', b'z'][..]] {
            assert!(Engines::global().untag(bad).is_err(), "{bad:?}");
        }
    }
}
