//! The Kalla runner: the service users talk to, and the `kalla` command-line client.
//!
//! - [`config`]: the runner's settings (flags, `KALLA_*` variables, TOML file);
//! - [`server`] and [`api`]: start-up and the HTTP API; [`https`]: serving it over TLS;
//!   [`console`]: the web console's files, served beside the API;
//! - [`access`]: roles, named tokens and who a request acts as;
//! - [`metadata`]: the metadata DB (SQLite or Postgres) — only the runner touches it;
//! - [`secrets`]: passwords sealed under the secrets key, put back only to connect;
//! - [`registry`]: the one registry of sources and connections: names, engines, sealed passwords;
//! - [`sources`]: registering sources by URI, and previewing them;
//! - [`connections`]: databases registered once, and the discovery of their tables;
//! - [`cache`]: refreshing tables into versioned parquet on the cluster, and deleting old versions;
//! - [`catalog`]: the names statements and recipes use, resolved to tables on the cluster;
//! - [`query`]: `/api/query`'s SQL over the catalog;
//! - [`recipes`] and [`jobs`]: reconciliation recipes, and the job queue that runs them (and large
//!   queries) on the cluster; [`job_outputs`] finds a job's outputs (by id, or a recipe's latest
//!   run) and [`results`] reads them back; [`stall`] notices a job that
//!   a lost executor left hanging; [`reattach`] follows a job an earlier runner submitted;
//!   [`schedules`] run stored recipes on a timetable; [`open_items`] shows what `carry_forward`
//!   recipes' runs left unmatched, and resolves it by hand;
//! - [`local_state`]: the token and key the runner generates into its data dir;
//! - [`client`] and [`cli`]: the `kalla` CLI's HTTP client for a runner, and its commands;
//!   [`local_cluster`]: `kalla cluster up|down|status`, the services as local processes, on
//!   loopback ports [`ports`] reserves, with mutual TLS from the throwaway CA [`local_ca`] makes;
//! - [`cluster`]: connecting to a Ballista cluster (remote, or an embedded in-process one);
//!   [`scheduler_api`] reads a remote scheduler's REST API;
//! - [`demo`]: the quickstart data set and query;
//! - [`output`]: printing query results as a table, CSV or JSON.

pub mod access;
pub mod api;
pub mod cache;
pub mod catalog;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod connections;
pub mod console;
pub mod demo;
pub mod flight;
pub mod https;
pub mod job_outputs;
pub mod jobs;
pub mod local_ca;
pub mod local_cluster;
pub mod local_state;
pub mod metadata;
pub mod open_items;
pub mod output;
pub mod output_reads;
pub mod ports;
pub mod query;
pub mod reattach;
pub mod recipes;
pub mod registry;
pub mod results;
pub mod scheduler_api;
pub mod schedules;
pub mod secrets;
pub mod server;
pub mod sources;
pub mod stall;
