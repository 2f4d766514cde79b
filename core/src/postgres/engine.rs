//! Postgres behind the source seam: tables planned as partitioned COPY scans, previews answered
//! by the source with bound parameters, and connections to whole databases.

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
use super::exec::{PgScanExec, PgScanSpec};
use super::provider::{PgTableProvider, PgTableSpec};
use crate::connection_config::{UrlShape, config_url, shown_config, table_location};
use crate::ident::QualifiedName;
use crate::pool::{PoolRegistry, session_is_encrypted};
use crate::preview::postgres::Previewer;
use crate::preview::{Condition, Preview, PreviewError};
use crate::seal::ClusterKey;
use crate::source::{
    ColumnInfo, Database, DiscoveredTable, Engine, EngineError, Fit, Health, SourceContext, check_database,
    from_plan_json, plan_json,
};
use crate::tls::{SslMode, TlsSettings};
use crate::uri::SourceUri;

const NAME: &str = "postgres";
const DEFAULT_PORT: u16 = 5432;

/// Postgres sources (`postgres://user@host:port/db?table=schema.table`) and connections.
#[derive(Debug, Default)]
pub struct PostgresEngine {
    previewer: Previewer,
}

fn is_postgres_scheme(url: &Url) -> bool {
    matches!(url.scheme(), "postgres" | "postgresql")
}

fn source_uri(location: &Url) -> Result<SourceUri, EngineError> {
    SourceUri::parse(location.as_str()).map_err(|e| EngineError::InvalidLocation(e.to_string()))
}

#[async_trait]
impl Engine for PostgresEngine {
    fn name(&self) -> &'static str {
        NAME
    }

    fn fits(&self, location: &Url) -> Fit {
        if is_postgres_scheme(location) {
            Fit::Inferred
        } else {
            Fit::No
        }
    }

    async fn check(&self, location: &Url, _context: &SourceContext) -> Result<(), EngineError> {
        let parsed = source_uri(location)?;
        check_database(parsed.connection_url()).await
    }

    async fn table(
        &self,
        location: &Url,
        context: &SourceContext,
        _session: &SessionContext,
    ) -> Result<Arc<dyn TableProvider>, EngineError> {
        let uri = source_uri(location)?;
        PoolRegistry::global()
            .get(uri.connection_url())
            .await
            .map_err(EngineError::from)?;
        let provider = PgTableProvider::connect(&uri, &context.key, &context.scans)
            .await
            .map_err(|e| EngineError::Failed(e.to_string()))?;
        Ok(Arc::new(provider))
    }

    async fn preview(
        &self,
        location: &Url,
        conditions: &[Condition],
        limit: usize,
        context: &SourceContext,
    ) -> Result<Preview, PreviewError> {
        let source =
            SourceUri::parse(location.as_str()).map_err(|e| PreviewError::Internal(e.to_string()))?;
        let pool = PoolRegistry::global()
            .get(source.connection_url())
            .await
            .map_err(|e| match e.is_refusal() {
                true => PreviewError::NotAllowed(e.to_string()),
                false => PreviewError::Unreachable(e.to_string()),
            })?;
        self.previewer
            .preview(&pool, &source, conditions, limit, context.count_cap)
            .await
    }

    fn database(&self) -> Option<&dyn Database> {
        Some(self)
    }

    fn owns_table(&self, table: &dyn TableProvider) -> bool {
        table.downcast_ref::<PgTableProvider>().is_some()
    }

    fn encode_table(&self, table: &dyn TableProvider) -> Option<Result<Vec<u8>>> {
        let provider = table.downcast_ref::<PgTableProvider>()?;
        Some(plan_json("Postgres", provider.spec()))
    }

    fn decode_table(&self, payload: &[u8]) -> Result<Arc<dyn TableProvider>> {
        let spec: PgTableSpec = from_plan_json("Postgres", payload)?;
        Ok(Arc::new(PgTableProvider::from_spec(spec, None)))
    }

    fn encode_scan(&self, scan: &dyn ExecutionPlan) -> Option<Result<Vec<u8>>> {
        let scan = scan.downcast_ref::<PgScanExec>()?;
        Some(plan_json("Postgres", scan.spec()))
    }

    fn decode_scan(
        &self,
        payload: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        key: Option<&ClusterKey>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let spec: PgScanSpec = from_plan_json("Postgres", payload)?;
        let [descriptors] = inputs else {
            return Err(DataFusionError::Internal(
                "PgScanExec needs exactly one input".into(),
            ));
        };
        Ok(Arc::new(PgScanExec::try_new(
            Arc::new(spec),
            descriptors.clone(),
            key.cloned(),
        )?))
    }

    fn scan_operator(&self) -> Option<&'static str> {
        Some("PgScanExec")
    }
}

#[async_trait]
impl Database for PostgresEngine {
    async fn url(&self, config: &Value) -> Result<Url, EngineError> {
        let url = database_url(config)?;
        check_database(url.as_str()).await?;
        Ok(url)
    }

    fn shown_config(&self, stored: &Url, has_password: bool) -> Value {
        shown_config(stored, has_password, DEFAULT_PORT)
    }

    fn table_location(&self, database: &Url, table: &QualifiedName) -> Url {
        table_location(database, table)
    }

    async fn discover(&self, database: &Url) -> Result<Vec<DiscoveredTable>, EngineError> {
        let unreachable = |e: &dyn std::fmt::Display| EngineError::Unreachable(e.to_string());
        let pool = PoolRegistry::global()
            .get(database.as_str())
            .await
            .map_err(EngineError::from)?;
        let relations = catalog::list_relations(&pool)
            .await
            .map_err(|e| unreachable(&e))?;
        let mut discovered = Vec::with_capacity(relations.len());
        for name in relations {
            let relation = match catalog::describe(&pool, &name).await {
                Ok(relation) => relation,
                // Dropped between listing and describing, or not readable after all.
                Err(CatalogError::NotFound(_) | CatalogError::NoColumns(_)) => continue,
                Err(error) => return Err(unreachable(&error)),
            };
            let columns = relation
                .columns
                .iter()
                .map(|c| ColumnInfo {
                    name: c.name.clone(),
                    data_type: c.pg_type.arrow_type().to_string(),
                    nullable: c.nullable,
                    sql_type: c.sql_type.clone(),
                })
                .collect();
            discovered.push(DiscoveredTable { table: name, columns });
        }
        Ok(discovered)
    }

    async fn health(&self, database: &Url) -> Health {
        // Checked when the connection was created; the pool names any problem since.
        let mode = TlsSettings::of(database.as_str())
            .ok()
            .and_then(|settings| settings.mode())
            .unwrap_or(SslMode::Prefer);
        let started = Instant::now();
        let checked = async {
            let pool = PoolRegistry::global()
                .get(database.as_str())
                .await
                .map_err(|e| e.to_string())?;
            let mut connection = pool.acquire().await.map_err(|e| e.to_string())?;
            if let Ok(encrypted) = session_is_encrypted(&mut connection).await {
                return Ok(encrypted);
            }
            // A server without `pg_stat_ssl` (a Postgres-compatible one) still answers.
            sqlx::query("SELECT 1")
                .execute(&mut *connection)
                .await
                .map(|_| false)
                .map_err(|e| e.to_string())
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
    scheme: "postgres",
    schemes: &["postgres", "postgresql"],
    default_port: DEFAULT_PORT,
    database_required: true,
};

/// A Postgres `config`: `{"uri": "postgres://…"}` or `{host, port?, database, user, password?,
/// sslmode?, sslrootcert?, sslcert?}` (certificates by the names the operator configured).
fn database_url(config: &Value) -> Result<Url, EngineError> {
    config_url(config, &URL_SHAPE)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn configs_become_urls() {
        let url = database_url(
            &json!({"host": "db.internal", "port": 6432, "database": "shop floor",
            "user": "app", "password": "p@ss/word", "sslmode": "verify-full",
            "sslrootcert": "prod-ca", "sslcert": "app"}),
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "postgres://app:p%40ss%2Fword@db.internal:6432/shop%20floor\
             ?sslmode=verify-full&sslrootcert=prod-ca&sslcert=app"
        );
        let url = database_url(&json!({"uri": "postgresql://app@h/db"})).unwrap();
        assert_eq!(url.as_str(), "postgresql://app@h/db");
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        for (config, message) in [
            (json!("postgres://h/db"), "must be an object"),
            (json!({"uri": "mysql://h/db"}), "expected postgres://"),
            (json!({"uri": "postgres://h/db?table=t"}), "remove the table"),
            (json!({"uri": "postgres://h/db", "host": "x"}), "not both"),
            (json!({"host": "h", "database": "d"}), "user is required"),
            (
                json!({"host": "h", "database": "d", "user": "u", "port": 70000}),
                "not a TCP port",
            ),
            (
                json!({"host": "h", "database": "d", "user": "u", "pasword": "x"}),
                "unknown field \"pasword\"",
            ),
            (json!({"uri": "postgres://u:secret@h:bad/db"}), "invalid port"),
        ] {
            let error = database_url(&config).unwrap_err().to_string();
            assert!(error.contains(message), "{config}: {error}");
            assert!(!error.contains("secret"), "{error}");
        }
    }

    #[test]
    fn tables_of_a_database_are_located_by_parameter() {
        let database = Url::parse("postgres://app@h/db?sslmode=require").unwrap();
        let table = crate::uri::parse_table_name("sales.orders").unwrap();
        let location = PostgresEngine::default().table_location(&database, &table);
        assert_eq!(
            location.as_str(),
            "postgres://app@h/db?sslmode=require&table=sales.orders"
        );
    }
}
