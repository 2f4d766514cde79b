//! MariaDB (and MySQL) behind the source seam: tables planned as key-range scans that executors
//! read over their own pools, previews answered on the runner, and connections to whole servers.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use datafusion::catalog::TableProvider;
use datafusion::common::{DataFusionError, Result};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use serde_json::Value;
use url::Url;

use super::catalog::{self, CatalogError};
use super::exec::{MariaScanExec, MariaScanSpec};
use super::location::{TableLocation, is_mariadb_scheme};
use super::provider::{MariaTableProvider, MariaTableSpec, ProviderError};
use crate::connection_config::{UrlShape, config_url, shown_config, table_location};
use crate::ident::QualifiedName;
use crate::pool::PoolRegistry;
use crate::postgres::ScanOptions;
use crate::preview::frame::preview_frame;
use crate::preview::{Condition, Preview, PreviewError};
use crate::seal::ClusterKey;
use crate::source::{
    ColumnInfo, Database, DiscoveredTable, Engine, EngineError, Fit, Health, SourceContext, check_database,
    from_plan_json, plan_json,
};
use crate::tls::{SslMode, TlsSettings};

const NAME: &str = "mariadb";
const DEFAULT_PORT: u16 = 3306;

/// MariaDB sources (`mysql://user@host:port/db?table=name`, or `mariadb://`) and connections.
#[derive(Debug, Default)]
pub struct MariaDbEngine;

fn location_of(location: &Url) -> Result<TableLocation, EngineError> {
    TableLocation::parse(location).map_err(EngineError::InvalidLocation)
}

#[async_trait]
impl Engine for MariaDbEngine {
    fn name(&self) -> &'static str {
        NAME
    }

    fn fits(&self, location: &Url) -> Fit {
        if is_mariadb_scheme(location) {
            Fit::Inferred
        } else {
            Fit::No
        }
    }

    async fn check(&self, location: &Url, _context: &SourceContext) -> Result<(), EngineError> {
        let location = location_of(location)?;
        check_database(location.connection_url()).await
    }

    async fn table(
        &self,
        location: &Url,
        context: &SourceContext,
        _session: &SessionContext,
    ) -> Result<Arc<dyn TableProvider>, EngineError> {
        let location = location_of(location)?;
        let provider = MariaTableProvider::connect(&location, &context.key, &context.scans)
            .await
            .map_err(provider_error)?;
        Ok(Arc::new(provider))
    }

    /// Read as one partition on this process, filtered and counted by DataFusion (up to the
    /// count cap).
    async fn preview(
        &self,
        location: &Url,
        conditions: &[Condition],
        limit: usize,
        context: &SourceContext,
    ) -> Result<Preview, PreviewError> {
        let location = TableLocation::parse(location).map_err(PreviewError::Internal)?;
        let provider = MariaTableProvider::connect(&location, &context.key, &ScanOptions::in_partitions(1))
            .await
            .map_err(|error| match error {
                ProviderError::Pool(error) if error.is_refusal() => {
                    PreviewError::NotAllowed(error.to_string())
                }
                ProviderError::Catalog {
                    error: CatalogError::NotFound(_),
                    ..
                } => PreviewError::Gone(error.to_string()),
                other => PreviewError::Unreachable(other.to_string()),
            })?;
        let ctx = SessionContext::new();
        let frame = ctx
            .read_table(Arc::new(provider))
            .map_err(|e| PreviewError::Internal(e.to_string()))?;
        preview_frame(frame, conditions, limit, Some(context.count_cap)).await
    }

    fn database(&self) -> Option<&dyn Database> {
        Some(self)
    }

    fn owns_table(&self, table: &dyn TableProvider) -> bool {
        table.downcast_ref::<MariaTableProvider>().is_some()
    }

    fn encode_table(&self, table: &dyn TableProvider) -> Option<Result<Vec<u8>>> {
        let provider = table.downcast_ref::<MariaTableProvider>()?;
        Some(plan_json("MariaDB", provider.spec()))
    }

    fn decode_table(&self, payload: &[u8]) -> Result<Arc<dyn TableProvider>> {
        let spec: MariaTableSpec = from_plan_json("MariaDB", payload)?;
        Ok(Arc::new(MariaTableProvider::from_spec(spec, None)))
    }

    fn encode_scan(&self, scan: &dyn ExecutionPlan) -> Option<Result<Vec<u8>>> {
        let scan = scan.downcast_ref::<MariaScanExec>()?;
        Some(plan_json("MariaDB", scan.spec()))
    }

    fn decode_scan(
        &self,
        payload: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        key: Option<&ClusterKey>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let spec: MariaScanSpec = from_plan_json("MariaDB", payload)?;
        let [descriptors] = inputs else {
            return Err(DataFusionError::Internal(
                "MariaScanExec needs exactly one input".into(),
            ));
        };
        Ok(Arc::new(MariaScanExec::try_new(
            Arc::new(spec),
            descriptors.clone(),
            key.cloned(),
        )?))
    }

    fn scan_operator(&self) -> Option<&'static str> {
        Some("MariaScanExec")
    }
}

fn provider_error(error: ProviderError) -> EngineError {
    match error {
        ProviderError::Pool(error) => error.into(),
        other => EngineError::Failed(other.to_string()),
    }
}

#[async_trait]
impl Database for MariaDbEngine {
    async fn url(&self, config: &Value) -> Result<Url, EngineError> {
        let url = server_url(config)?;
        check_database(url.as_str()).await?;
        Ok(url)
    }

    fn shown_config(&self, stored: &Url, has_password: bool) -> Value {
        shown_config(stored, has_password, DEFAULT_PORT)
    }

    fn table_location(&self, database: &Url, table: &QualifiedName) -> Url {
        table_location(database, table)
    }

    /// The tables of the URL's database, or of every database the user sees if it names none.
    async fn discover(&self, database: &Url) -> Result<Vec<DiscoveredTable>, EngineError> {
        let unreachable = |e: &dyn std::fmt::Display| EngineError::Unreachable(e.to_string());
        let pool = PoolRegistry::global()
            .get_mariadb(database.as_str())
            .await
            .map_err(EngineError::from)?;
        let only = Some(database.path().trim_start_matches('/')).filter(|d| !d.is_empty());
        let tables = catalog::list_tables(&pool, only)
            .await
            .map_err(|e| unreachable(&e))?;
        let mut discovered = Vec::with_capacity(tables.len());
        for name in tables {
            let info = match catalog::describe(&pool, &name).await {
                Ok(info) => info,
                // Dropped between listing and describing.
                Err(CatalogError::NotFound(_) | CatalogError::NoColumns(_)) => continue,
                Err(error) => return Err(unreachable(&error)),
            };
            let columns = info
                .columns
                .iter()
                .map(|c| ColumnInfo {
                    name: c.name.clone(),
                    data_type: c.maria_type.arrow_type().to_string(),
                    nullable: c.nullable,
                    sql_type: c.sql_type.clone(),
                })
                .collect();
            discovered.push(DiscoveredTable { table: name, columns });
        }
        Ok(discovered)
    }

    async fn health(&self, database: &Url) -> Health {
        let mode = TlsSettings::of(database.as_str())
            .ok()
            .and_then(|settings| settings.mode())
            .unwrap_or(SslMode::Prefer);
        let started = Instant::now();
        let checked = async {
            let pool = PoolRegistry::global()
                .get_mariadb(database.as_str())
                .await
                .map_err(|e| e.to_string())?;
            let cipher: Option<(String, String)> = sqlx::query_as("SHOW SESSION STATUS LIKE 'Ssl_cipher'")
                .fetch_optional(&pool)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<bool, String>(cipher.is_some_and(|(_, cipher)| !cipher.is_empty()))
        }
        .await;
        let latency_ms = started.elapsed().as_secs_f64() * 1e3;
        let encrypted = checked.as_ref().is_ok_and(|encrypted| *encrypted);
        Health {
            reachable: checked.is_ok(),
            latency_ms,
            sslmode: mode.to_string(),
            encrypted,
            verified: encrypted && mode.verifies(),
            error: checked.err(),
        }
    }
}

const URL_SHAPE: UrlShape = UrlShape {
    scheme: "mysql",
    schemes: &["mysql", "mariadb"],
    default_port: DEFAULT_PORT,
    database_required: false,
};

/// A MariaDB `config`: `{"uri": "mysql://…"}` or `{host, port?, database?, user, password?,
/// sslmode?, sslrootcert?, sslcert?}`; without a database it reaches every one the user sees.
fn server_url(config: &Value) -> Result<Url, EngineError> {
    config_url(config, &URL_SHAPE)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn configs_become_urls() {
        let url = server_url(&json!({"host": "db.internal", "database": "shop", "user": "app",
            "password": "p@ss", "sslmode": "verify-full", "sslrootcert": "prod-ca"}))
        .unwrap();
        assert_eq!(
            url.as_str(),
            "mysql://app:p%40ss@db.internal:3306/shop?sslmode=verify-full&sslrootcert=prod-ca"
        );
        let error = server_url(&json!({"uri": "postgres://u:secret@h/db"}))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("expected mysql://") && !error.contains("secret"),
            "{error}"
        );
        let error = server_url(&json!({"host": "h", "user": "u", "pasword": "x"})).unwrap_err();
        assert!(error.to_string().contains("unknown field \"pasword\""), "{error}");
    }
}
