//! Postgres as a distributed source: catalog discovery, ctid partitioning, filter pushdown,
//! and binary COPY decoded straight into Arrow.

pub mod catalog;
pub mod copy;
pub mod exec;
pub mod filter;
pub mod grant;
pub mod partition;
pub mod provider;
pub mod types;

pub use exec::PgScanExec;
pub use partition::PartitionOptions;
pub use provider::{PgTableProvider, ScanOptions};
