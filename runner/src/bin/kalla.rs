//! `kalla`: the command-line client.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kalla_core::cluster_tls::{ClientTlsArgs, ClusterTransport};
use kalla_core::pool::{PoolRegistry, PoolSettings};
use kalla_core::seal::{CLUSTER_KEY_ENV, CLUSTER_KEY_FILE_ENV};
use kalla_core::source::{PartitionOptions, ScanOptions, SourceContext};
use kalla_core::tls::CertificateArgs;
use kalla_core::{ClusterKey, process};
use serde_json::{Value, json};

use kalla_runner::cli::{
    self, AuditArgs, JobsCommand, RecipesCommand, RunArgs, RunnerArgs, SchedulesCommand, SourcesCommand,
    TokensCommand,
};
use kalla_runner::client::RunnerClient;
use kalla_runner::cluster::{self, TableSource};
use kalla_runner::local_cluster::{ClusterCommand, LocalCluster};
use kalla_runner::output::{self, Format};
use kalla_runner::query::MAX_QUERY_ROWS;

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
    /// Run SQL: through a runner (--runner), on a cluster as one of its peers (--scheduler), or on
    /// an embedded cluster in this process.
    Query(QueryArgs),
    /// Seed a small invoices/payments data set in Postgres and reconcile it on an embedded cluster.
    Demo(DemoArgs),
    /// Register, list, show, preview and remove sources on a runner.
    Sources {
        #[command(flatten)]
        runner: RunnerArgs,
        #[command(subcommand)]
        command: SourcesCommand,
    },
    /// Store, list and show reconciliation recipes on a runner.
    Recipes {
        #[command(flatten)]
        runner: RunnerArgs,
        #[command(subcommand)]
        command: RecipesCommand,
    },
    /// Run stored recipes on a timetable: create, list, show, pause, resume and delete schedules.
    Schedules {
        #[command(flatten)]
        runner: RunnerArgs,
        #[command(subcommand)]
        command: SchedulesCommand,
    },
    /// Run a recipe on the runner's cluster: kalla run RECIPE [--wait].
    Run {
        #[command(flatten)]
        runner: RunnerArgs,
        #[command(flatten)]
        args: RunArgs,
    },
    /// List, show and cancel jobs, and fetch their results.
    Jobs {
        #[command(flatten)]
        runner: RunnerArgs,
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Make, list and revoke named API tokens (admin).
    Tokens {
        #[command(flatten)]
        runner: RunnerArgs,
        #[command(subcommand)]
        command: TokensCommand,
    },
    /// Read the audit log: changes, results downloads and refused requests (admin).
    Audit {
        #[command(flatten)]
        runner: RunnerArgs,
        #[command(flatten)]
        args: AuditArgs,
    },
    /// Start, stop and check a local cluster: scheduler, executors and runner as processes.
    Cluster {
        /// The runner's data dir; the cluster's logs and pid files go to its `cluster/`.
        #[arg(long, global = true, default_value = cli::DEFAULT_DATA_DIR)]
        data_dir: PathBuf,
        #[command(subcommand)]
        command: ClusterCommand,
    },
}

#[derive(clap::Args, Debug)]
struct DemoArgs {
    /// Postgres server to create the demo database on.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    postgres: String,
    /// The demo database's name (created unless it exists; its demo tables are recreated).
    #[arg(long, default_value = kalla_runner::demo::DEMO_DATABASE)]
    database: String,
    /// Only create the demo tables (for a runner or local cluster to use); run no query.
    #[arg(long)]
    seed_only: bool,
}

#[derive(clap::Args, Debug)]
struct QueryArgs {
    /// Run through this runner's `/api/query`, over its sources and connections: this client then
    /// holds no key (the way for users of a remote cluster). Takes --api-token / KALLA_API_TOKEN.
    #[arg(long, value_name = "URL", conflicts_with_all = ["scheduler", "tables", "partitions"])]
    runner: Option<String>,
    /// With --runner: its API token (default: the one a local runner generated into ./.kalla).
    #[arg(long, hide_env_values = true)]
    api_token: Option<String>,
    /// With --runner: trust only this CA (PEM) for an https:// runner, not the system's roots.
    #[arg(long)]
    cacert: Option<PathBuf>,
    /// With --runner: the local runner's data dir, where it keeps a generated token.
    #[arg(long, default_value = cli::DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// Scheduler to run on, as df://HOST:PORT, as a peer of the cluster: this client then needs
    /// the cluster key (KALLA_CLUSTER_KEY) and a cluster certificate, like the runner. Without
    /// --runner or --scheduler an embedded cluster runs in this process.
    #[arg(long)]
    scheduler: Option<String>,
    /// A table to register, as NAME=postgres://user:pass@host:port/db?table=schema.table (repeatable).
    #[arg(long = "table", value_name = "NAME=URI")]
    tables: Vec<TableSource>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Split each database table (Postgres, MariaDB) into exactly this many partitions (default: by
    /// size).
    #[arg(long)]
    partitions: Option<usize>,
    #[command(flatten)]
    database_tls: CertificateArgs,
    #[command(flatten)]
    cluster_tls: ClientTlsArgs,
    /// The SQL to run.
    sql: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    process::exit_code(run().await)
}

async fn run() -> anyhow::Result<()> {
    // A shell set up for another runner (KALLA_DATABASE_URL, KALLA_BIND, …) must not change the
    // local cluster: its flags read no variables but the ones they name themselves.
    let cli: Cli =
        process::parse_args_with(|command| command.mut_subcommand("cluster", process::without_env_fallbacks));
    process::init_tracing("warn", process::Console::Stderr);
    match cli.command {
        Command::Query(args) => query(args).await,
        Command::Demo(args) if args.seed_only => {
            let url = kalla_runner::demo::seed(&args.postgres, &args.database).await?;
            println!(
                "demo tables invoices and payments ready in {}",
                kalla_core::pool::redact_connection_url(&url)
            );
            Ok(())
        }
        Command::Demo(args) => {
            let batches = kalla_runner::demo::run(&args.postgres, &args.database).await?;
            println!("{}", kalla_runner::demo::DEMO_SQL.trim());
            output::write(&batches, Format::Table, &mut std::io::stdout().lock())
        }
        Command::Sources { runner, command } => cli::sources(&runner, command).await,
        Command::Recipes { runner, command } => cli::recipes(&runner, command).await,
        Command::Schedules { runner, command } => cli::schedules(&runner, command).await,
        Command::Run { runner, args } => cli::run(&runner, args).await,
        Command::Jobs { runner, command } => cli::jobs(&runner, command).await,
        Command::Tokens { runner, command } => cli::tokens(&runner, command).await,
        Command::Audit { runner, args } => cli::audit(&runner, args).await,
        Command::Cluster { data_dir, command } => LocalCluster::new(&data_dir).run(command).await,
    }
}

async fn query(args: QueryArgs) -> anyhow::Result<()> {
    if let Some(runner) = &args.runner {
        return query_through_runner(runner, &args).await;
    }
    let key = cluster_key(args.scheduler.is_some())?;
    PoolRegistry::global().configure(PoolSettings {
        application_name: "kalla-cli".into(),
        certificates: args.database_tls.open()?,
        ..PoolSettings::default()
    });
    let transport = match args.scheduler {
        Some(_) => args.cluster_tls.transport()?,
        None => ClusterTransport::Plaintext,
    };
    let ctx = cluster::connect(args.scheduler.as_deref(), key.clone(), transport).await?;
    let context = SourceContext {
        scans: ScanOptions {
            partitions: PartitionOptions {
                partitions: args.partitions,
                ..PartitionOptions::default()
            },
            ..ScanOptions::default()
        },
        ..SourceContext::new(key)
    };
    cluster::register_tables(&ctx, &args.tables, &context).await?;
    let batches = ctx
        .sql(&args.sql)
        .await
        .context("cannot plan the query")?
        .collect()
        .await
        .context("query failed")?;
    output::write(&batches, args.format, &mut std::io::stdout().lock())
}

/// SQL sent to a runner, which plans it over its own catalog and answers with rows as text.
async fn query_through_runner(runner: &str, args: &QueryArgs) -> anyhow::Result<()> {
    let client = RunnerClient::new(
        runner,
        args.api_token.as_deref(),
        &args.data_dir,
        args.cacert.as_deref(),
    )?;
    let request = json!({ "sql": args.sql, "limit": MAX_QUERY_ROWS });
    let response: Value = client.post("/api/query", &request).await?;
    output::write_rows(&response, args.format, &mut std::io::stdout().lock())?;
    if response["truncated"] == Value::Bool(true) {
        eprintln!(
            "only the first {} rows: the runner caps /api/query; run larger results as a job",
            response["row_count"]
        );
    }
    Ok(())
}

/// The cluster key: required to talk to a remote cluster; an embedded one can use a throwaway key.
fn cluster_key(remote: bool) -> anyhow::Result<ClusterKey> {
    let configured = [CLUSTER_KEY_ENV, CLUSTER_KEY_FILE_ENV]
        .iter()
        .any(|variable| std::env::var_os(variable).is_some());
    if !remote && !configured {
        return Ok(ClusterKey::generate());
    }
    ClusterKey::from_env().context(
        "a remote cluster needs the cluster key its executors use (or use --runner, which needs none)",
    )
}
