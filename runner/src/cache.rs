//! The parquet cache: refreshing a table into a new version on the cluster, publishing it in one
//! metadata transaction, and deleting versions no longer served once their grace period is over.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use datafusion::physical_plan::ExecutionPlanProperties;
use kalla_core::cache::sink::SinkSpec;
use kalla_core::cache::write::WritePlanTable;
use kalla_core::cache::{CacheDir, WrittenFile, written_files};
use kalla_core::ident::{Ident, QualifiedName};
use kalla_core::storage::{self, S3Settings};
use serde::Serialize;
use thiserror::Error;

use crate::cluster::ClusterEndpoint;
use crate::metadata::{MetadataDb, MetadataError, NewVersion, Registration, TableRecord, new_id};
use crate::registry::{Registry, RegistryError};

/// A refresh's claim on its table; a runner that dies mid-refresh loses it after this long.
const LEASE_TTL: Duration = Duration::from_secs(6 * 3600);
/// Deletions attempted per sweep.
const DELETIONS_PER_SWEEP: i64 = 100;

#[derive(Debug, Error)]
pub enum CacheError {
    #[error("a refresh of {0} is already running")]
    RefreshRunning(String),
    #[error("refreshing {table} failed: {reason}")]
    RefreshFailed { table: String, reason: String },
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Where cache versions live: `file:///…` or `s3://bucket/prefix`.
    pub root: CacheDir,
    /// How long a replaced version stays readable.
    pub grace: Duration,
    pub s3: S3Settings,
}

/// What a refresh did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Refreshed {
    pub table_id: String,
    pub schema: String,
    pub table: String,
    pub version: String,
    pub rows: u64,
    pub files: usize,
    pub bytes: u64,
    pub duration_ms: u64,
}

#[derive(Clone)]
pub struct Cache {
    db: MetadataDb,
    registry: Registry,
    cluster: ClusterEndpoint,
    settings: CacheSettings,
    /// One gate per table: refreshes of a table in this runner never overlap.
    gates: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl Cache {
    pub fn new(
        db: MetadataDb,
        registry: Registry,
        cluster: ClusterEndpoint,
        settings: CacheSettings,
    ) -> Self {
        Self {
            db,
            registry,
            cluster,
            settings,
            gates: Arc::default(),
        }
    }

    pub fn grace(&self) -> Duration {
        self.settings.grace
    }

    /// Writes a new version of `table` and serves it; fails at once if a refresh of it is running.
    pub async fn refresh(
        &self,
        connection: &Registration,
        table: &TableRecord,
    ) -> Result<Refreshed, CacheError> {
        let gate = self.gate(&table.id);
        let Ok(_refreshing) = gate.try_lock() else {
            return Err(CacheError::RefreshRunning(display_name(table)));
        };
        self.refresh_now(connection, table).await
    }

    /// The table with a cache version, refreshing it first if it has none. Concurrent callers
    /// wait for one refresh instead of starting their own.
    pub async fn ensure_cached(
        &self,
        connection: &Registration,
        table: &TableRecord,
    ) -> Result<TableRecord, CacheError> {
        if table.cache_url.is_some() {
            return Ok(table.clone());
        }
        let gate = self.gate(&table.id);
        let _refreshing = gate.lock().await;
        let current = self.reload(table).await?;
        if current.cache_url.is_some() {
            return Ok(current);
        }
        self.refresh_now(connection, &current).await?;
        self.reload(table).await
    }

    async fn reload(&self, table: &TableRecord) -> Result<TableRecord, CacheError> {
        Ok(self
            .db
            .table(&table.connection_id, &table.schema_name, &table.table_name)
            .await?)
    }

    fn gate(&self, table_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut gates = self.gates.lock().unwrap_or_else(PoisonError::into_inner);
        gates.retain(|_, gate| Arc::strong_count(gate) > 1);
        gates.entry(table_id.to_string()).or_default().clone()
    }

    async fn refresh_now(
        &self,
        connection: &Registration,
        table: &TableRecord,
    ) -> Result<Refreshed, CacheError> {
        let started = Instant::now();
        let lease = new_id("lease");
        if !self.db.take_refresh_lease(&table.id, &lease, LEASE_TTL).await? {
            return Err(CacheError::RefreshRunning(display_name(table)));
        }
        let version = new_version();
        let dir = self.settings.root.join(&[
            "cache",
            &connection.id,
            &table.schema_name,
            &table.table_name,
            &version,
        ]);
        let failed = |reason: String| CacheError::RefreshFailed {
            table: display_name(table),
            reason,
        };
        let written = match self.write_version(connection, table, &dir).await {
            Ok(written) => written,
            Err(error) => {
                self.db.release_refresh_lease(&table.id, &lease).await?;
                self.discard(&dir).await;
                return Err(error);
            }
        };
        let rows: u64 = written.iter().map(|f| f.rows).sum();
        let published = self
            .db
            .publish_version(
                &table.id,
                &lease,
                NewVersion {
                    version: &version,
                    url: dir.as_str(),
                    rows: rows as i64,
                },
                self.settings.grace,
            )
            .await;
        match published {
            Ok(true) => {}
            Ok(false) => {
                self.discard(&dir).await;
                return Err(failed(
                    "the table was removed or its refresh lease expired meanwhile".into(),
                ));
            }
            Err(error) => {
                self.discard(&dir).await;
                return Err(error.into());
            }
        }
        tracing::info!(table = %display_name(table), %version, rows, files = written.len(), "cache version published");
        Ok(Refreshed {
            table_id: table.id.clone(),
            schema: table.schema_name.clone(),
            table: table.table_name.clone(),
            version,
            rows,
            files: written.len(),
            bytes: written.iter().map(|f| f.bytes).sum(),
            duration_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// Runs the refresh on the cluster; succeeds only if every partition wrote its file.
    async fn write_version(
        &self,
        connection: &Registration,
        table: &TableRecord,
        dir: &CacheDir,
    ) -> Result<Vec<WrittenFile>, CacheError> {
        let failed = |reason: String| CacheError::RefreshFailed {
            table: display_name(table),
            reason,
        };
        let name = QualifiedName {
            schema: Ident::new(table.schema_name.as_str()).map_err(|e| failed(e.to_string()))?,
            name: Ident::new(table.table_name.as_str()).map_err(|e| failed(e.to_string()))?,
        };
        let session = self.cluster.session();
        let source = self
            .registry
            .open(connection)
            .await?
            .table_of(&name)
            .ok_or_else(|| failed(format!("{} reads no databases", connection.engine)))?
            .table(&session, self.registry.context())
            .await
            .map_err(|e| failed(e.to_string()))?;
        // Each partition of the scan writes one file.
        let partitions = source
            .scan(&session.state(), None, &[], None)
            .await
            .map_err(|e| failed(e.to_string()))?
            .output_partitioning()
            .partition_count();
        let scan = session.read_table(source).map_err(|e| failed(e.to_string()))?;
        let refresh = WritePlanTable::new(
            scan.logical_plan().clone(),
            SinkSpec {
                directory: dir.as_str().to_string(),
                split: None,
            },
        );
        let batches = session
            .read_table(Arc::new(refresh))
            .map_err(|e| failed(e.to_string()))?
            .collect()
            .await
            .map_err(|e| failed(e.to_string()))?;
        let written = written_files(&batches).map_err(|e| failed(e.to_string()))?;
        if written.len() != partitions {
            return Err(failed(format!(
                "{} of {partitions} partitions were written",
                written.len()
            )));
        }
        let store =
            storage::object_store_for(dir.url(), &self.settings.s3).map_err(|e| failed(e.to_string()))?;
        let keep: Vec<&str> = written.iter().map(|f| f.path.as_str()).collect();
        let removed = dir
            .retain_only(&store, &keep)
            .await
            .map_err(|e| failed(e.to_string()))?;
        if removed > 0 {
            tracing::info!(dir = %dir.as_str(), removed, "removed leftovers of retried tasks");
        }
        Ok(written)
    }

    /// Removes a version that will never be served. A task of the failed job that is still
    /// being cancelled may write after this, so the directory is also queued for a later sweep.
    async fn discard(&self, dir: &CacheDir) {
        if let Err(error) = delete_dir(dir, &self.settings.s3).await {
            tracing::warn!(dir = %dir.as_str(), %error, "cannot remove a failed refresh's files yet");
        }
        if let Err(error) = self
            .db
            .queue_deletion_now(dir.as_str(), "failed refresh", self.settings.grace)
            .await
        {
            tracing::error!(dir = %dir.as_str(), %error, "cannot queue a failed refresh's files for deletion");
        }
    }

    /// Deletes due versions until the runner stops; failures are retried with backoff.
    pub async fn run_deletions(self, every: Duration) {
        loop {
            if let Err(error) = self.sweep().await {
                tracing::warn!(%error, "cache deletion sweep failed");
            }
            tokio::time::sleep(every).await;
        }
    }

    /// One pass over the due deletions; returns how many versions were deleted.
    pub async fn sweep(&self) -> Result<usize, CacheError> {
        let mut deleted = 0;
        for due in self.db.due_deletions(DELETIONS_PER_SWEEP).await? {
            let outcome = match CacheDir::parse(&due.url) {
                Ok(dir) => delete_dir(&dir, &self.settings.s3).await,
                Err(error) => Err(error.to_string()),
            };
            match outcome {
                Ok(()) => {
                    self.db.deletion_done(&due.id).await?;
                    deleted += 1;
                }
                Err(error) => {
                    let backoff =
                        Duration::from_secs(5 << due.attempts.clamp(0, 10)).min(Duration::from_secs(3600));
                    tracing::warn!(url = %due.url, %error, attempts = due.attempts + 1, "cache deletion failed; will retry");
                    self.db.deletion_failed(&due.id, &error, backoff).await?;
                }
            }
        }
        Ok(deleted)
    }
}

async fn delete_dir(dir: &CacheDir, s3: &S3Settings) -> Result<(), String> {
    let store = storage::object_store_for(dir.url(), s3).map_err(|e| e.to_string())?;
    dir.delete_all(&store).await.map(drop).map_err(|e| e.to_string())
}

/// Versions sort by creation time; the suffix keeps two in one millisecond apart. Only letters,
/// digits and `-`, so the version is its directory's name.
fn new_version() -> String {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%3fZ");
    format!("v{stamp}-{}", &new_id("x")[2..10])
}

fn display_name(table: &TableRecord) -> String {
    format!("{}.{}", table.schema_name, table.table_name)
}
