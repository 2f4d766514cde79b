//! Kalla's shared library: everything that touches data lives here once.
//!
//! The scheduler, executor and runner binaries are thin wiring around this crate:
//! - [`source`]: the seam every source engine sits behind, and the registry of engines;
//! - [`uri`]: parsing and redacting Postgres source URIs;
//! - [`seal`]: the cluster key and authenticated encryption of credentials in plans;
//! - [`postgres`]: the Postgres engine: partitioned table provider and binary COPY reader;
//! - [`mariadb`]: the MariaDB (MySQL) engine: key-range partitions read over the text protocol;
//! - [`grant`]: scan grants, a source's credentials sealed for one table's scan;
//! - [`files`]: the CSV and Parquet file engines;
//! - [`plan_check`]: what a plan may do on a cluster (operators, data locations);
//! - [`pool`]: the process-wide registry of bounded source connection pools;
//! - [`scan`]: the cluster operator every database engine's scan is (a reader above descriptors);
//! - [`pushdown`]: filters rendered into a database's own `WHERE` where it answers exactly;
//! - [`allow`]: which hosts connections may go to (allow-lists, internal addresses);
//! - [`tls`]: `sslmode` and the operator's named certificates for database TLS;
//! - [`preview`]: load-scoped previews of one source (Postgres, CSV, Parquet);
//! - [`recon`]: reconciliation recipes and the plans that classify two sources' rows;
//! - [`storage`]: object stores for file sources and the cache (local files, S3);
//! - [`cluster_tls`]: mutual TLS between the runner, the scheduler and the executors;
//! - [`codec`] and [`session`]: what every Ballista process needs to plan and run Kalla scans;
//! - [`process`]: flag/environment handling and logging shared by the binaries;
//! - [`demo`]: the demo data set `kalla demo` seeds.

pub mod allow;
pub mod cache;
pub mod cluster_tls;
pub mod codec;
pub mod connection_config;
pub mod demo;
pub mod files;
pub mod grant;
pub mod ident;
pub mod json_rows;
pub mod mariadb;
pub mod plan_check;
pub mod pool;
pub mod postgres;
pub mod preview;
pub mod process;
pub mod pushdown;
pub mod recon;
pub mod scan;
pub mod seal;
pub mod session;
pub mod source;
pub mod storage;
pub mod tls;
pub mod uri;

pub use seal::{ClusterKey, SecretsKey};
pub use uri::SourceUri;
