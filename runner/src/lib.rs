//! The Kalla runner: the service users talk to, and the `kalla` command-line client.
//!
//! - [`cluster`]: connecting to a Ballista cluster (remote, or an embedded in-process one)
//!   and registering sources as tables;
//! - [`demo`]: the quickstart data set and query;
//! - [`output`]: printing query results as a table, CSV or JSON.

pub mod cluster;
pub mod demo;
pub mod output;
