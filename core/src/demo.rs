//! The demo data set: 10,000 invoices and the payments against them (some missing, some a cent
//! or more off), seeded into a database on a Postgres server.

use sqlx::Connection;
use sqlx::postgres::PgConnection;
use thiserror::Error;

use crate::ident::{Ident, IdentError};
use crate::pool::redact_connection_url;

#[derive(Debug, Error)]
pub enum DemoError {
    #[error("invalid demo database name: {0}")]
    InvalidName(#[from] IdentError),
    #[error("invalid Postgres server URL {0}")]
    InvalidUrl(String),
    #[error("cannot reach Postgres at {url} (set --postgres): {source}")]
    Unreachable {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot create the demo tables: {0}")]
    Seed(#[source] sqlx::Error),
}

const SEED: &str = "
DROP TABLE IF EXISTS payments;
DROP TABLE IF EXISTS invoices;
CREATE TABLE invoices AS
  SELECT 'INV-' || lpad(i::text, 5, '0') AS invoice_id,
         round((100 + i * 37 % 9900)::numeric / 3, 2)::numeric(12,2) AS amount,
         date '2024-01-01' + (i % 90) AS issued_on
  FROM generate_series(1, 10000) i;
CREATE TABLE payments AS
  SELECT invoice_id AS invoice_ref,
         (amount + CASE WHEN i % 50 = 0 THEN 0.01 WHEN i % 97 = 0 THEN 12.50 ELSE 0 END)::numeric(12,2) AS amount,
         issued_on + (i % 20) AS paid_on
  FROM (SELECT *, substr(invoice_id, 5)::int AS i FROM invoices) v
  WHERE i % 40 <> 0;
";

/// Creates `database` on the server at `server_url` unless it exists, and (re)creates the demo's
/// `invoices` and `payments` tables in it; returns the database's URL.
pub async fn seed(server_url: &str, database: &str) -> Result<String, DemoError> {
    let quoted = Ident::new(database)?.quoted();
    let unreachable = |source| DemoError::Unreachable {
        url: redact_connection_url(server_url),
        source,
    };
    let mut admin = PgConnection::connect(server_url).await.map_err(unreachable)?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(database)
        .fetch_one(&mut admin)
        .await
        .map_err(DemoError::Seed)?;
    if !exists {
        sqlx::raw_sql(&format!("CREATE DATABASE {quoted}"))
            .execute(&mut admin)
            .await
            .map_err(DemoError::Seed)?;
    }
    let mut url =
        url::Url::parse(server_url).map_err(|_| DemoError::InvalidUrl(redact_connection_url(server_url)))?;
    url.set_path(database);
    let mut demo = PgConnection::connect(url.as_str()).await.map_err(unreachable)?;
    sqlx::raw_sql(SEED)
        .execute(&mut demo)
        .await
        .map_err(DemoError::Seed)?;
    Ok(url.to_string())
}
