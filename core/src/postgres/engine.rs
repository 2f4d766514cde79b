//! Postgres behind the source seam: tables planned as partitioned COPY scans, previews answered
//! by the source with bound parameters, and connections to whole databases.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use datafusion::catalog::TableProvider;
use datafusion::common::{DataFusionError, Result};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use serde_json::{Map, Value, json};
use url::Url;

use super::catalog::{self, CatalogError};
use super::exec::{PgScanExec, PgScanSpec};
use super::provider::{PgTableProvider, PgTableSpec};
use crate::ident::QualifiedName;
use crate::pool::{PoolError, PoolRegistry, redact_connection_url, session_is_encrypted};
use crate::preview::postgres::Previewer;
use crate::preview::{Condition, Preview, PreviewError};
use crate::seal::ClusterKey;
use crate::source::{ColumnInfo, Database, DiscoveredTable, Engine, EngineError, Fit, Health, SourceContext};
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
            .map_err(engine_error)?;
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
        Some(to_json(provider.spec()))
    }

    fn decode_table(&self, payload: &[u8]) -> Result<Arc<dyn TableProvider>> {
        let spec: PgTableSpec = from_json(payload)?;
        Ok(Arc::new(PgTableProvider::from_spec(spec, None)))
    }

    fn encode_scan(&self, scan: &dyn ExecutionPlan) -> Option<Result<Vec<u8>>> {
        let scan = scan.downcast_ref::<PgScanExec>()?;
        Some(to_json(scan.spec()))
    }

    fn decode_scan(
        &self,
        payload: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        key: Option<&ClusterKey>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let spec: PgScanSpec = from_json(payload)?;
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

fn to_json(payload: &impl serde::Serialize) -> Result<Vec<u8>> {
    serde_json::to_vec(payload)
        .map_err(|e| DataFusionError::Internal(format!("encoding a Postgres scan: {e}")))
}

fn from_json<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T> {
    serde_json::from_slice(payload).map_err(|e| {
        DataFusionError::Internal(format!(
            "cannot decode a Postgres scan ({e}); client, scheduler and executors must run the same Kalla build"
        ))
    })
}

/// Errors unless the database's TLS settings are usable here and its host is one this process
/// may connect to; a host that does not resolve (yet) is not refused, only reported when read.
async fn check_database(connection_url: &str) -> Result<(), EngineError> {
    let pools = PoolRegistry::global();
    pools
        .check_tls(connection_url)
        .map_err(|e| EngineError::InvalidLocation(e.to_string()))?;
    match pools.check_host(connection_url).await {
        Err(error) if error.is_refusal() => Err(EngineError::NotAllowed(error.to_string())),
        Err(error @ PoolError::InvalidUrl { .. }) => Err(EngineError::InvalidLocation(error.to_string())),
        _ => Ok(()),
    }
}

/// A pool that could not be had, as the engine reports it.
fn engine_error(error: PoolError) -> EngineError {
    if error.is_refusal() {
        EngineError::NotAllowed(error.to_string())
    } else {
        EngineError::Unreachable(error.to_string())
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
        let mut shown = Map::new();
        shown.insert("host".into(), json!(stored.host_str()));
        shown.insert("port".into(), json!(stored.port().unwrap_or(DEFAULT_PORT)));
        shown.insert("database".into(), json!(stored.path().trim_start_matches('/')));
        shown.insert("user".into(), json!(stored.username()));
        if has_password {
            shown.insert("password".into(), json!("***"));
        }
        for (key, value) in stored.query_pairs() {
            shown.insert(key.into_owned(), json!(value));
        }
        Value::Object(shown)
    }

    fn table_location(&self, database: &Url, table: &QualifiedName) -> Url {
        let mut location = database.clone();
        location
            .query_pairs_mut()
            .append_pair("table", &table.to_string());
        location
    }

    async fn discover(&self, database: &Url) -> Result<Vec<DiscoveredTable>, EngineError> {
        let unreachable = |e: &dyn std::fmt::Display| EngineError::Unreachable(e.to_string());
        let pool = PoolRegistry::global()
            .get(database.as_str())
            .await
            .map_err(engine_error)?;
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

/// Fields of a config given by parts; the last three name TLS settings as libpq's parameters do.
const FIELDS: [&str; 8] = [
    "host",
    "port",
    "database",
    "user",
    "password",
    "sslmode",
    "sslrootcert",
    "sslcert",
];

/// A Postgres `config`: `{"uri": "postgres://…"}` or `{host, port?, database, user, password?,
/// sslmode?, sslrootcert?, sslcert?}` (certificates by the names the operator configured).
fn database_url(config: &Value) -> Result<Url, EngineError> {
    let invalid = |message: String| EngineError::InvalidLocation(message);
    let Some(fields) = config.as_object() else {
        return Err(invalid("config must be an object".into()));
    };
    if let Some(uri) = fields.get("uri") {
        if fields.len() > 1 {
            return Err(invalid(
                "give either uri or host/port/database/user/password/sslmode/sslrootcert/sslcert, not both"
                    .into(),
            ));
        }
        let uri = uri
            .as_str()
            .ok_or_else(|| invalid("uri must be a string".into()))?;
        let url = Url::parse(uri).map_err(|e| invalid(format!("{e} (in {})", redact_connection_url(uri))))?;
        if !is_postgres_scheme(&url) || url.host_str().is_none_or(str::is_empty) {
            return Err(invalid(format!(
                "expected postgres://user@host:port/database, got {}",
                redact_connection_url(uri)
            )));
        }
        if url.query_pairs().any(|(k, _)| k == "table") {
            return Err(invalid(
                "a connection is a whole database: remove the table parameter".into(),
            ));
        }
        return Ok(url);
    }
    if let Some(unknown) = fields.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(invalid(format!(
            "unknown field {unknown:?}; expected uri or {}",
            FIELDS.join(", ")
        )));
    }
    let text = |name: &str, required: bool| -> Result<Option<String>, EngineError> {
        match fields.get(name) {
            None | Some(Value::Null) if required => Err(invalid(format!("{name} is required"))),
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if required && s.is_empty() => Err(invalid(format!("{name} is empty"))),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(invalid(format!("{name} must be a string"))),
        }
    };
    let port = match fields.get("port") {
        None | Some(Value::Null) => DEFAULT_PORT,
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| invalid(format!("port {n} is not a TCP port")))?,
        Some(_) => return Err(invalid("port must be a number".into())),
    };
    let host = text("host", true)?.unwrap_or_default();
    let database = text("database", true)?.unwrap_or_default();
    let user = text("user", true)?.unwrap_or_default();
    let mut url = Url::parse("postgres://localhost/").expect("static URL");
    url.set_host(Some(&host))
        .map_err(|e| invalid(format!("host {host:?}: {e}")))?;
    url.set_port(Some(port)).map_err(|()| invalid("port".into()))?;
    url.set_username(&user).map_err(|()| invalid("user".into()))?;
    url.path_segments_mut()
        .map_err(|()| invalid("database".into()))?
        .clear()
        .push(&database);
    if let Some(password) = text("password", false)?.filter(|p| !p.is_empty()) {
        url.set_password(Some(&password))
            .map_err(|()| invalid("password".into()))?;
    }
    for parameter in ["sslmode", "sslrootcert", "sslcert"] {
        if let Some(value) = text(parameter, false)? {
            url.query_pairs_mut().append_pair(parameter, &value);
        }
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
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
