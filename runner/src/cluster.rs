//! Connecting a session to a Kalla cluster and registering Postgres sources as tables.

use std::sync::Arc;

use anyhow::{Context, bail};
use ballista::prelude::SessionContextExt;
use datafusion::catalog::{
    CatalogProvider, MemoryCatalogProvider, MemoryCatalogProviderList, MemorySchemaProvider,
};
use datafusion::execution::SessionStateBuilder;
use datafusion::prelude::SessionContext;
use kalla_core::postgres::{PartitionOptions, PgTableProvider};
use kalla_core::storage::{ObjectStores, S3Settings};
use kalla_core::{ClusterKey, SourceUri, session};

/// A session on a remote cluster (`df://host:port`), or on an embedded one when `scheduler` is `None`.
pub async fn connect(scheduler: Option<&str>, key: ClusterKey) -> anyhow::Result<SessionContext> {
    connect_with_stores(scheduler, key, S3Settings::default()).await
}

/// [`connect`], opening `s3://` buckets with `s3` (in this process, and in the embedded cluster's
/// executors, which share its runtime).
pub async fn connect_with_stores(
    scheduler: Option<&str>,
    key: ClusterKey,
    s3: S3Settings,
) -> anyhow::Result<SessionContext> {
    let config = session::session_config(Some(key));
    let state = session::session_state_with_stores(config, Arc::new(ObjectStores::new(s3)))?;
    match scheduler {
        Some(url) => {
            if !url.starts_with("df://") {
                bail!("scheduler URL {url:?} must look like df://HOST:PORT");
            }
            SessionContext::remote_with_state(url, state)
                .await
                .with_context(|| format!("cannot connect to the scheduler at {url}"))
        }
        None => SessionContext::standalone_with_state(state)
            .await
            .context("cannot start the embedded cluster"),
    }
}

/// The runner's cluster: a fresh session for each job, and where to probe the scheduler.
#[derive(Clone)]
pub struct ClusterEndpoint {
    base: SessionContext,
    /// The scheduler's REST address; `None` for the embedded cluster.
    pub rest_url: Option<String>,
}

impl ClusterEndpoint {
    /// Connects to `scheduler` (`df://host:port`), or starts the embedded cluster.
    pub async fn start(scheduler: Option<&str>, key: ClusterKey, s3: S3Settings) -> anyhow::Result<Self> {
        let rest_url = scheduler.map(scheduler_rest_url).transpose()?;
        let base = connect_with_stores(scheduler, key, s3).await?;
        Ok(Self { base, rest_url })
    }

    /// A session on the cluster with an empty catalog of its own, so one job's tables never
    /// show up in another's.
    pub fn session(&self) -> SessionContext {
        let state = SessionStateBuilder::new_from_existing(self.base.state())
            .with_catalog_list(Arc::new(MemoryCatalogProviderList::new()))
            .build();
        // A new catalog list starts empty: bare table names need the default catalog and schema.
        let options = &state.config().options().catalog;
        let schema = Arc::new(MemorySchemaProvider::new());
        let catalog = Arc::new(MemoryCatalogProvider::new());
        catalog
            .register_schema(&options.default_schema, schema)
            .expect("a memory catalog takes any schema");
        state
            .catalog_list()
            .register_catalog(options.default_catalog.clone(), catalog);
        SessionContext::new_with_state(state)
    }
}

/// The scheduler's REST address for a `df://host:port` URL.
pub fn scheduler_rest_url(scheduler: &str) -> anyhow::Result<String> {
    let address = scheduler
        .strip_prefix("df://")
        .filter(|a| !a.is_empty() && !a.contains('/'))
        .with_context(|| format!("scheduler URL {scheduler:?} must look like df://HOST:PORT"))?;
    Ok(format!("http://{address}"))
}

/// A table to register: `NAME=URI` on the command line.
#[derive(Debug, Clone)]
pub struct TableSource {
    pub name: String,
    pub uri: SourceUri,
}

impl std::str::FromStr for TableSource {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        const EXPECTED: &str = "expected NAME=URI, e.g. orders=postgres://user@host/db?table=public.orders";
        let (name, uri) = value.split_once('=').ok_or(EXPECTED)?;
        if name.contains("://") {
            return Err(format!("the table has no name: {EXPECTED}"));
        }
        if name.is_empty() {
            return Err("table name before '=' is empty".into());
        }
        let uri = SourceUri::parse(uri).map_err(|e| e.to_string())?;
        Ok(Self {
            name: name.to_string(),
            uri,
        })
    }
}

/// Describes each source and registers it under its name.
pub async fn register_tables(
    ctx: &SessionContext,
    tables: &[TableSource],
    key: &ClusterKey,
    options: &PartitionOptions,
) -> anyhow::Result<()> {
    for table in tables {
        let provider = PgTableProvider::connect(&table.uri, key, options)
            .await
            .with_context(|| format!("cannot register table {:?}", table.name))?;
        ctx.register_table(table.name.as_str(), Arc::new(provider))
            .with_context(|| format!("cannot register table {:?}", table.name))?;
    }
    Ok(())
}
