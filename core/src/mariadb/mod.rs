//! MariaDB (and MySQL) as a distributed source: `information_schema` discovery, key-range
//! partitions, the text protocol decoded straight into Arrow, and the engine that puts all this
//! behind the source seam. Tested on MariaDB 10.11; MySQL-only behaviour (`caching_sha2_password`
//! over plaintext, `utf8mb4_0900_*` collations) is untested.

pub mod catalog;
pub mod decode;
pub mod engine;
pub mod exec;
pub mod filter;
pub mod location;
pub mod partition;
pub mod pool;
pub mod provider;
pub mod types;

pub use engine::MariaDbEngine;
pub use exec::MariaScanExec;
pub use provider::MariaTableProvider;
