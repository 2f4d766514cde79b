//! `kalla demo`: the demo data set (see `kalla_core::demo`), queried on an embedded cluster.

use datafusion::arrow::array::RecordBatch;
use kalla_core::ClusterKey;
use kalla_core::cluster_tls::ClusterTransport;
use kalla_core::source::{ScanOptions, SourceContext};

use crate::cluster::{self, TableSource};

pub use kalla_core::demo::seed;

/// The database `kalla demo` seeds unless told another.
pub const DEMO_DATABASE: &str = "kalla_demo";

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
    let tables = ["invoices", "payments"]
        .map(|name| format!("{name}={demo_url}?table=public.{name}").parse::<TableSource>())
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    let context = SourceContext {
        scans: ScanOptions::in_partitions(4),
        ..SourceContext::new(key)
    };
    cluster::register_tables(&ctx, &tables, &context).await?;
    Ok(ctx.sql(DEMO_SQL).await?.collect().await?)
}
