//! `kalla demo`: a small invoices-vs-payments data set in Postgres, queried on an embedded cluster.

use anyhow::Context;
use datafusion::arrow::array::RecordBatch;
use kalla_core::cluster_tls::ClusterTransport;
use kalla_core::ident::Ident;
use kalla_core::postgres::ScanOptions;
use kalla_core::{ClusterKey, SourceUri};
use sqlx::Connection;
use sqlx::postgres::PgConnection;

use crate::cluster::{self, TableSource};

/// The database `kalla demo` seeds unless told another.
pub const DEMO_DATABASE: &str = "kalla_demo";

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

/// The reconciliation-style question the demo answers.
pub const DEMO_SQL: &str = "
SELECT CASE
         WHEN p.invoice_ref IS NULL THEN 'left only (unpaid)'
         WHEN abs(i.amount - p.amount) <= 0.01 THEN 'matched'
         ELSE 'amount mismatch'
       END AS outcome,
       count(*) AS invoices,
       sum(i.amount) AS invoiced
FROM invoices i LEFT JOIN payments p ON p.invoice_ref = i.invoice_id
GROUP BY 1 ORDER BY 1";

/// Seeds `database` on the server at `server_url` and runs [`DEMO_SQL`] on an embedded cluster.
pub async fn run(server_url: &str, database: &str) -> anyhow::Result<Vec<RecordBatch>> {
    let demo_url = seed(server_url, database).await?;
    let key = ClusterKey::generate();
    let ctx = cluster::connect(None, key.clone(), ClusterTransport::Plaintext).await?;
    let tables = ["invoices", "payments"].map(|name| {
        SourceUri::parse(&format!("{demo_url}?table=public.{name}")).map(|uri| TableSource {
            name: name.into(),
            uri,
        })
    });
    let tables = tables.into_iter().collect::<Result<Vec<_>, _>>()?;
    let options = ScanOptions::in_partitions(4);
    cluster::register_tables(&ctx, &tables, &key, &options).await?;
    Ok(ctx.sql(DEMO_SQL).await?.collect().await?)
}

/// Creates `database` on the server at `server_url` unless it exists, and (re)creates the demo's
/// `invoices` and `payments` tables in it; returns the database's URL.
pub async fn seed(server_url: &str, database: &str) -> anyhow::Result<String> {
    let quoted = Ident::new(database).context("--database")?.quoted();
    let mut admin = PgConnection::connect(server_url).await.with_context(|| {
        format!(
            "cannot reach Postgres at {} (set --postgres)",
            kalla_core::pool::redact_connection_url(server_url)
        )
    })?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(database)
        .fetch_one(&mut admin)
        .await?;
    if !exists {
        sqlx::raw_sql(&format!("CREATE DATABASE {quoted}"))
            .execute(&mut admin)
            .await?;
    }
    let mut url = url::Url::parse(server_url).context("invalid --postgres URL")?;
    url.set_path(database);
    let mut demo = PgConnection::connect(url.as_str()).await?;
    sqlx::raw_sql(SEED)
        .execute(&mut demo)
        .await
        .context("cannot create the demo tables")?;
    Ok(url.to_string())
}
