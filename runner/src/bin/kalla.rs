//! `kalla`: the command-line client.

use anyhow::Context;
use clap::{Parser, Subcommand};
use kalla_core::pool::{PoolRegistry, PoolSettings};
use kalla_core::postgres::PartitionOptions;
use kalla_core::{ClusterKey, process};
use std::io::Write;

use kalla_runner::client::{RunnerClient, parse_condition};
use kalla_runner::cluster::{self, TableSource};
use kalla_runner::output::{self, Format};

#[derive(Parser, Debug)]
#[command(
    name = "kalla",
    version,
    about = "Kalla: distributed reconciliation and federated queries"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run SQL over Postgres tables on a Kalla cluster (or an embedded one).
    Query(QueryArgs),
    /// Seed a small invoices/payments data set in Postgres and reconcile it on an embedded cluster.
    Demo(DemoArgs),
    /// Register, list, preview and remove sources on a runner.
    Sources(SourcesArgs),
}

#[derive(clap::Args, Debug)]
struct SourcesArgs {
    /// The runner's URL.
    #[arg(long, global = true, default_value = "http://127.0.0.1:8080")]
    runner: String,
    /// API token (default: the one a local runner generated into --data-dir).
    #[arg(long, global = true, hide_env_values = true)]
    api_token: Option<String>,
    /// The local runner's data dir, where it keeps a generated token.
    #[arg(long, global = true, default_value = "./.kalla")]
    data_dir: std::path::PathBuf,
    #[command(subcommand)]
    command: SourcesCommand,
}

#[derive(Subcommand, Debug)]
enum SourcesCommand {
    /// Register a source: kalla sources add ALIAS URI [--type csv].
    Add {
        alias: String,
        uri: String,
        /// postgres, csv or parquet (default: from the URI).
        #[arg(long = "type")]
        source_type: Option<String>,
    },
    /// List registered sources.
    List,
    /// Show the first rows of a source matching conditions.
    Preview {
        alias: String,
        /// A condition `COLUMN OP [VALUE]` (repeatable), e.g. --where "amount gte 100".
        #[arg(long = "where", value_name = "CONDITION")]
        conditions: Vec<String>,
        /// Rows to show (at most 1000).
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Remove a source and its stored secret.
    Remove { alias: String },
}

#[derive(clap::Args, Debug)]
struct DemoArgs {
    /// Postgres server to create the `kalla_demo` database on.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    postgres: String,
}

#[derive(clap::Args, Debug)]
struct QueryArgs {
    /// Scheduler to run on, as df://HOST:PORT; without it an embedded cluster runs in this process.
    #[arg(long)]
    scheduler: Option<String>,
    /// A table to register, as NAME=postgres://user:pass@host:port/db?table=schema.table (repeatable).
    #[arg(long = "table", value_name = "NAME=URI")]
    tables: Vec<TableSource>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Split each Postgres table into exactly this many partitions (default: by size).
    #[arg(long)]
    partitions: Option<usize>,
    /// The SQL to run.
    sql: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli: Cli = process::parse_args();
    process::init_tracing("warn");
    match cli.command {
        Command::Query(args) => query(args).await,
        Command::Demo(args) => {
            let batches = kalla_runner::demo::run(&args.postgres).await?;
            println!("{}", kalla_runner::demo::DEMO_SQL.trim());
            output::write(&batches, Format::Table, &mut std::io::stdout().lock())
        }
        Command::Sources(args) => sources(args).await,
    }
}

async fn sources(args: SourcesArgs) -> anyhow::Result<()> {
    let client = RunnerClient::new(&args.runner, args.api_token.as_deref(), &args.data_dir)?;
    let mut stdout = std::io::stdout().lock();
    match args.command {
        SourcesCommand::Add {
            alias,
            uri,
            source_type,
        } => {
            let source = client.add_source(&alias, &uri, source_type.as_deref()).await?;
            let field = |name: &str| source[name].as_str().unwrap_or_default().to_string();
            writeln!(
                stdout,
                "registered {} ({}): {}",
                field("alias"),
                field("source_type"),
                field("uri")
            )?;
        }
        SourcesCommand::List => {
            let sources = client.list_sources().await?;
            output::write_json_table(&["alias", "source_type", "uri", "id"], &sources, &mut stdout)?;
        }
        SourcesCommand::Preview {
            alias,
            conditions,
            limit,
        } => {
            let conditions = conditions
                .iter()
                .map(|c| parse_condition(c))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let preview = client.preview(&alias, conditions, limit).await?;
            output::write_preview(&preview, &mut stdout)?;
        }
        SourcesCommand::Remove { alias } => {
            client.remove_source(&alias).await?;
            writeln!(stdout, "removed {alias}")?;
        }
    }
    Ok(())
}

async fn query(args: QueryArgs) -> anyhow::Result<()> {
    let key = cluster_key(args.scheduler.is_some())?;
    PoolRegistry::global().configure(PoolSettings {
        application_name: "kalla-cli".into(),
        ..PoolSettings::default()
    });
    let ctx = cluster::connect(args.scheduler.as_deref(), key.clone()).await?;
    let options = PartitionOptions {
        partitions: args.partitions,
        ..PartitionOptions::default()
    };
    cluster::register_tables(&ctx, &args.tables, &key, &options).await?;
    let batches = ctx
        .sql(&args.sql)
        .await
        .context("cannot plan the query")?
        .collect()
        .await
        .context("query failed")?;
    output::write(&batches, args.format, &mut std::io::stdout().lock())
}

/// The cluster key: required to talk to a remote cluster; an embedded one can use a throwaway key.
fn cluster_key(remote: bool) -> anyhow::Result<ClusterKey> {
    match ClusterKey::from_env() {
        Ok(key) => Ok(key),
        Err(kalla_core::seal::SealError::MissingKey) if !remote => {
            Ok(ClusterKey::from_base64(&ClusterKey::generate_base64())?)
        }
        Err(error) => Err(error).context("a remote cluster needs the cluster key its executors use"),
    }
}
