//! Connecting a session to a Kalla cluster and registering Postgres sources as tables.

use std::sync::Arc;

use anyhow::{Context, bail};
use ballista::prelude::SessionContextExt;
use datafusion::prelude::SessionContext;
use kalla_core::postgres::{PartitionOptions, PgTableProvider};
use kalla_core::{ClusterKey, SourceUri, session};

/// A session on a remote cluster (`df://host:port`), or on an embedded one when `scheduler` is `None`.
pub async fn connect(scheduler: Option<&str>, key: ClusterKey) -> anyhow::Result<SessionContext> {
    let config = session::session_config(Some(key));
    let state = session::session_state(config)?;
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
