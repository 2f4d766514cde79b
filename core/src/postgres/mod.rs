//! Postgres as a distributed source: catalog discovery, ctid partitioning, filter pushdown,
//! binary COPY decoded straight into Arrow, and the engine that puts all this behind the source
//! seam.

pub mod catalog;
pub mod copy;
pub mod engine;
pub mod exec;
pub mod filter;
pub mod partition;
pub mod provider;
pub mod types;

pub use exec::PgScanExec;
pub use partition::PartitionOptions;
pub use provider::{PgTableProvider, ScanOptions};
