//! The `kalla` CLI's commands that talk to a runner: sources, recipes, runs, jobs, tokens and the
//! audit log.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::client::{RunnerClient, parse_condition, path_segment};
use crate::output::{self, Format};

/// Where a runner keeps its state unless told otherwise, and where the CLI looks for its token.
pub const DEFAULT_DATA_DIR: &str = "./.kalla";

/// Where the runner is and how to authenticate (flags, or `KALLA_RUNNER` / `KALLA_API_TOKEN`).
#[derive(clap::Args, Debug)]
pub struct RunnerArgs {
    /// The runner's URL.
    #[arg(long, global = true, default_value = "http://127.0.0.1:8080")]
    pub runner: String,
    /// API token (default: the one a local runner generated into --data-dir).
    #[arg(long, global = true, hide_env_values = true)]
    pub api_token: Option<String>,
    /// The local runner's data dir, where it keeps a generated token.
    #[arg(long, global = true, default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Trust only this CA (PEM) for an https:// runner, instead of the system's roots.
    #[arg(long, global = true)]
    pub cacert: Option<PathBuf>,
}

impl RunnerArgs {
    pub fn client(&self) -> anyhow::Result<RunnerClient> {
        RunnerClient::new(
            &self.runner,
            self.api_token.as_deref(),
            &self.data_dir,
            self.cacert.as_deref(),
        )
    }
}

#[derive(Subcommand, Debug)]
pub enum SourcesCommand {
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
    /// Show one source.
    Show { alias: String },
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

#[derive(Subcommand, Debug)]
pub enum RecipesCommand {
    /// Store a recipe from a JSON file (checked against its sources' schemas).
    Create {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// List stored recipes.
    List,
    /// Show a recipe (by id or name) as JSON.
    Show { recipe: String },
    /// Delete a recipe (by id or name).
    Delete { recipe: String },
}

#[derive(Subcommand, Debug)]
pub enum SchedulesCommand {
    /// Run a stored recipe on a timetable: --cron "0 6 * * *" (with --timezone) or --every 15m.
    Create {
        name: String,
        /// The recipe's id or name.
        #[arg(long)]
        recipe: String,
        /// A standard 5-field cron expression.
        #[arg(long, conflicts_with = "every", required_unless_present = "every")]
        cron: Option<String>,
        /// An interval: seconds, or a number with s, m, h or d.
        #[arg(long)]
        every: Option<String>,
        /// The IANA time zone the cron expression and the tick's date are read in (default UTC).
        #[arg(long)]
        timezone: Option<String>,
        /// A recipe parameter for each run, NAME=VALUE; the value may name the tick's date as
        /// {tick_date}, {tick_date-1}, ….
        #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
        params: Vec<(String, String)>,
        #[arg(long)]
        callback_url: Option<String>,
    },
    /// List schedules with their next run.
    List,
    /// Show a schedule (by id or name): next run times and recent ticks.
    Show { schedule: String },
    /// Stop running a schedule's ticks.
    Pause { schedule: String },
    /// Run a paused schedule again, from its next tick.
    Resume { schedule: String },
    /// Delete a schedule (the jobs it made stay).
    Delete { schedule: String },
    /// Run one of a schedule's past ticks now (a missed day, or a day again): prints the tick and
    /// its job; a tick that has a job keeps it.
    Fire {
        schedule: String,
        /// The tick: a date (its first tick that day, in the schedule's time zone) or an RFC 3339
        /// time.
        #[arg(long)]
        at: String,
    },
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The recipe's id or name.
    pub recipe: String,
    /// Wait for the job, showing its progress, and print its summary.
    #[arg(long)]
    pub wait: bool,
    /// POST progress and completion to this URL.
    #[arg(long)]
    pub callback_url: Option<String>,
    /// A value of one of the recipe's parameters, as NAME=VALUE (e.g. run_date=2026-11-30);
    /// repeat for more. Declared defaults fill the rest.
    #[arg(long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
}

fn parse_param(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(format!("expected NAME=VALUE, got {text:?}")),
    }
}

#[derive(Subcommand, Debug)]
pub enum JobsCommand {
    /// List jobs, newest first.
    List {
        /// Only jobs with this status (queued, running, succeeded, failed, cancelled).
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Show a job as JSON.
    Show { job: String },
    /// Cancel a queued or running job.
    Cancel { job: String },
    /// Print or download one output of a finished job.
    Results {
        job: String,
        /// matched, mismatched, left_only, right_only, duplicates (recon) or result (query).
        output: String,
        /// table (a page, printed), csv or parquet (the whole output).
        #[arg(long, default_value = "table")]
        format: String,
        /// Write to this file instead of stdout.
        #[arg(short = 'o', long = "output-file")]
        output_file: Option<PathBuf>,
        /// Rows to skip.
        #[arg(long, default_value_t = 0)]
        offset: usize,
        /// Rows to return (table: default 100; csv/parquet: all).
        #[arg(long)]
        limit: Option<usize>,
    },
}

pub async fn sources(runner: &RunnerArgs, command: SourcesCommand) -> anyhow::Result<()> {
    let client = runner.client()?;
    let mut stdout = std::io::stdout().lock();
    match command {
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
        SourcesCommand::Show { alias } => {
            let source: Value = client
                .get(&format!("/api/sources/{}", path_segment(&alias)))
                .await?;
            writeln!(stdout, "{}", serde_json::to_string_pretty(&source)?)?;
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

pub async fn recipes(runner: &RunnerArgs, command: RecipesCommand) -> anyhow::Result<()> {
    let client = runner.client()?;
    let mut stdout = std::io::stdout().lock();
    match command {
        RecipesCommand::Create { file } => {
            let text =
                std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let recipe: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", file.display()))?;
            let created: Value = client.post("/api/recipes", &recipe).await?;
            writeln!(
                stdout,
                "created recipe {} ({})",
                created["name"].as_str().unwrap_or("?"),
                created["id"].as_str().unwrap_or("?")
            )?;
        }
        RecipesCommand::List => {
            let recipes: Vec<Value> = client.get("/api/recipes").await?;
            output::write_json_table(&["name", "id", "updated_at"], &recipes, &mut stdout)?;
        }
        RecipesCommand::Show { recipe } => {
            let shown: Value = client
                .get(&format!("/api/recipes/{}", path_segment(&recipe)))
                .await?;
            writeln!(stdout, "{}", serde_json::to_string_pretty(&shown)?)?;
        }
        RecipesCommand::Delete { recipe } => {
            client
                .delete::<Value>(&format!("/api/recipes/{}", path_segment(&recipe)))
                .await?;
            writeln!(stdout, "deleted {recipe}")?;
        }
    }
    Ok(())
}

pub async fn schedules(runner: &RunnerArgs, command: SchedulesCommand) -> anyhow::Result<()> {
    let client = runner.client()?;
    let mut stdout = std::io::stdout().lock();
    let path = |schedule: &str| format!("/api/schedules/{}", path_segment(schedule));
    let shown: Value = match command {
        SchedulesCommand::Create {
            name,
            recipe,
            cron,
            every,
            timezone,
            params,
            callback_url,
        } => {
            let body = json!({
                "name": name, "recipe": recipe, "cron": cron, "every": every, "timezone": timezone,
                "params": params_object(params), "callback_url": callback_url,
            });
            client.post("/api/schedules", &body).await?
        }
        SchedulesCommand::List => {
            let mut schedules: Vec<Value> = client.get("/api/schedules").await?;
            for schedule in &mut schedules {
                schedule["next_run"] = schedule["next_runs"][0].clone();
            }
            let columns = [
                "name",
                "id",
                "cron",
                "every_secs",
                "timezone",
                "paused",
                "next_run",
            ];
            output::write_json_table(&columns, &schedules, &mut stdout)?;
            return Ok(());
        }
        SchedulesCommand::Show { schedule } => client.get(&path(&schedule)).await?,
        SchedulesCommand::Pause { schedule } => {
            client
                .post(&format!("{}/pause", path(&schedule)), &json!({}))
                .await?
        }
        SchedulesCommand::Resume { schedule } => {
            client
                .post(&format!("{}/resume", path(&schedule)), &json!({}))
                .await?
        }
        SchedulesCommand::Fire { schedule, at } => {
            client
                .post(&format!("{}/ticks", path(&schedule)), &json!({ "at": at }))
                .await?
        }
        SchedulesCommand::Delete { schedule } => {
            client.delete::<Value>(&path(&schedule)).await?;
            writeln!(stdout, "deleted {schedule}")?;
            return Ok(());
        }
    };
    writeln!(stdout, "{}", serde_json::to_string_pretty(&shown)?)?;
    Ok(())
}

/// `--param NAME=VALUE` pairs as a JSON object of text values.
fn params_object(params: Vec<(String, String)>) -> serde_json::Map<String, Value> {
    params
        .into_iter()
        .map(|(name, value)| (name, Value::String(value)))
        .collect()
}

/// Submits a recon job; with `--wait`, follows it to the end. Fails unless the job succeeds.
pub async fn run(runner: &RunnerArgs, args: RunArgs) -> anyhow::Result<()> {
    let client = runner.client()?;
    let body = json!({
        "type": "recon", "recipe_id": args.recipe, "params": params_object(args.params),
        "callback_url": args.callback_url,
    });
    let job: Value = client.post("/api/jobs", &body).await?;
    let id = job["id"]
        .as_str()
        .context("the runner's answer has no job id")?
        .to_string();
    if !args.wait {
        println!("{id}");
        return Ok(());
    }
    eprintln!("job {id} submitted");
    let finished = follow(&client, &id).await?;
    let mut stdout = std::io::stdout().lock();
    write_summary(&finished, &mut stdout)?;
    match finished["status"].as_str() {
        Some("succeeded") => Ok(()),
        status => bail!(
            "job {id} {}: {}",
            status.unwrap_or("ended"),
            finished["error"].as_str().unwrap_or("no reason given")
        ),
    }
}

/// Polls the job until it ends, with a progress bar on stderr.
async fn follow(client: &RunnerClient, id: &str) -> anyhow::Result<Value> {
    let bar = ProgressBar::new(100);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos:>3}% {msg}")
            .expect("a valid template"),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    loop {
        let job: Value = client.get(&format!("/api/jobs/{}", path_segment(id))).await?;
        let status = job["status"].as_str().unwrap_or("?");
        if matches!(status, "succeeded" | "failed" | "cancelled") {
            bar.finish_and_clear();
            return Ok(job);
        }
        let progress = &job["progress"];
        if let Some(percent) = progress["percent_complete"].as_u64() {
            bar.set_position(percent);
        }
        let phase = progress["phase"].as_str().unwrap_or(status);
        bar.set_message(phase.to_string());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The outputs and their row counts (and each pass's, for a reconciliation of several), then
/// the time it took.
fn write_summary(job: &Value, out: &mut impl Write) -> anyhow::Result<()> {
    let summary = &job["summary"];
    let counts: Vec<Value> = summary["outputs"]
        .as_object()
        .map(|outputs| {
            outputs
                .iter()
                .map(|(name, rows)| json!({"output": name, "rows": rows}))
                .collect()
        })
        .unwrap_or_default();
    writeln!(
        out,
        "job {} {}",
        job["id"].as_str().unwrap_or("?"),
        job["status"].as_str().unwrap_or("?")
    )?;
    if !counts.is_empty() {
        output::write_json_table(&["output", "rows"], &counts, out)?;
    }
    let passes = summary["passes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if passes.len() > 1 {
        writeln!(out, "by pass:")?;
        output::write_json_table(&PASS_COLUMNS, &pass_rows(passes), out)?;
    }
    if let Some(duration) = summary["duration_ms"].as_u64() {
        writeln!(out, "took {:.2} s", duration as f64 / 1000.0)?;
    }
    Ok(())
}

const PASS_COLUMNS: [&str; 9] = [
    "pass",
    "matched",
    "mismatched",
    "exceptions",
    "left_only",
    "right_only",
    "duplicates",
    "passed_on_left",
    "passed_on_right",
];

/// Each pass of a summary as one flat row of [`PASS_COLUMNS`].
fn pass_rows(passes: &[Value]) -> Vec<Value> {
    passes
        .iter()
        .map(|pass| {
            let mut row = pass["outputs"].clone();
            row["pass"] = pass["pass"].clone();
            if let Some(passed_on) = pass["passed_on"].as_object() {
                row["passed_on_left"] = passed_on["left"].clone();
                row["passed_on_right"] = passed_on["right"].clone();
            }
            row
        })
        .collect()
}

pub async fn jobs(runner: &RunnerArgs, command: JobsCommand) -> anyhow::Result<()> {
    let client = runner.client()?;
    let mut stdout = std::io::stdout().lock();
    match command {
        JobsCommand::List { status, limit } => {
            let mut path = format!("/api/jobs?limit={limit}");
            if let Some(status) = status {
                path.push_str(&format!("&status={}", path_segment(&status)));
            }
            let jobs: Vec<Value> = client.get(&path).await?;
            output::write_json_table(
                &["id", "type", "status", "created_at", "finished_at"],
                &jobs,
                &mut stdout,
            )?;
        }
        JobsCommand::Show { job } => {
            let shown: Value = client.get(&format!("/api/jobs/{}", path_segment(&job))).await?;
            writeln!(stdout, "{}", serde_json::to_string_pretty(&shown)?)?;
        }
        JobsCommand::Cancel { job } => {
            let cancelled: Value = client
                .delete(&format!("/api/jobs/{}", path_segment(&job)))
                .await?;
            writeln!(
                stdout,
                "job {job} {}",
                cancelled["status"].as_str().unwrap_or("?")
            )?;
        }
        JobsCommand::Results {
            job,
            output: name,
            format,
            output_file,
            offset,
            limit,
        } => {
            let mut path = format!(
                "/api/jobs/{}/results/{}?offset={offset}",
                path_segment(&job),
                path_segment(&name)
            );
            if let Some(limit) = limit {
                path.push_str(&format!("&limit={limit}"));
            }
            if format == "table" {
                let page: Value = client.get(&format!("{path}&format=json")).await?;
                return output::write_rows(&page, Format::Table, &mut stdout);
            }
            if !matches!(format.as_str(), "csv" | "parquet") {
                bail!("--format must be table, csv or parquet, not {format:?}");
            }
            let path = format!("{path}&format={format}");
            match output_file {
                Some(file) => {
                    let mut target = std::fs::File::create(&file)
                        .with_context(|| format!("cannot create {}", file.display()))?;
                    let bytes = client.download(&path, &mut target).await?;
                    eprintln!("wrote {bytes} bytes to {}", file.display());
                }
                None => {
                    client.download(&path, &mut stdout).await?;
                }
            }
        }
    }
    Ok(())
}

#[derive(Subcommand, Debug)]
pub enum TokensCommand {
    /// Make a token: kalla tokens create NAME --role viewer|operator|admin [--expires-in-secs N].
    /// Prints its value, which is shown this once.
    Create {
        name: String,
        #[arg(long)]
        role: String,
        #[arg(long)]
        expires_in_secs: Option<u64>,
    },
    /// List tokens (never their values).
    List,
    /// Revoke a token: it is refused from now on.
    Revoke { name: String },
}

pub async fn tokens(runner: &RunnerArgs, command: TokensCommand) -> anyhow::Result<()> {
    let client = runner.client()?;
    let mut stdout = std::io::stdout().lock();
    match command {
        TokensCommand::Create {
            name,
            role,
            expires_in_secs,
        } => {
            let body = json!({"name": name, "role": role, "expires_in_secs": expires_in_secs});
            let created: Value = client.post("/api/tokens", &body).await?;
            writeln!(stdout, "{}", created["token"].as_str().unwrap_or_default())?;
        }
        TokensCommand::List => {
            let tokens: Vec<Value> = client.get("/api/tokens").await?;
            let columns = [
                "name",
                "role",
                "created_at",
                "expires_at",
                "revoked_at",
                "last_used_at",
            ];
            output::write_json_table(&columns, &tokens, &mut stdout)?;
        }
        TokensCommand::Revoke { name } => {
            let _: Value = client
                .delete(&format!("/api/tokens/{}", path_segment(&name)))
                .await?;
            writeln!(stdout, "revoked {name}")?;
        }
    }
    Ok(())
}

/// Filters of `kalla audit`; entries print newest first.
#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    /// Only this token's entries.
    #[arg(long)]
    token: Option<String>,
    /// Only succeeded, failed or refused entries.
    #[arg(long)]
    outcome: Option<String>,
    #[arg(long, default_value_t = 100)]
    limit: u32,
}

pub async fn audit(runner: &RunnerArgs, args: AuditArgs) -> anyhow::Result<()> {
    let client = runner.client()?;
    let mut query = vec![format!("limit={}", args.limit)];
    for (name, value) in [("token", &args.token), ("outcome", &args.outcome)] {
        if let Some(value) = value {
            query.push(format!("{name}={}", path_segment(value)));
        }
    }
    let entries: Vec<Value> = client.get(&format!("/api/audit?{}", query.join("&"))).await?;
    let columns = ["at", "token_name", "method", "path", "status", "outcome"];
    output::write_json_table(&columns, &entries, &mut std::io::stdout().lock())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_of_several_passes_shows_each() {
        let job = json!({"id": "job_1", "status": "succeeded", "summary": {
            "outputs": {"matched": 5, "left_only": 1},
            "passes": [
                {"pass": "reference", "outputs": {"matched": 3, "mismatched": 0},
                 "passed_on": {"left": 3, "right": 2}},
                {"pass": "amount_and_date", "outputs": {"matched": 2, "left_only": 1}}
            ],
            "duration_ms": 1250}});
        let mut written = Vec::new();
        write_summary(&job, &mut written).unwrap();
        let text = String::from_utf8(written).unwrap();
        assert!(text.starts_with("job job_1 succeeded"), "{text}");
        let reference = text.lines().find(|l| l.contains("reference")).unwrap();
        let cells: Vec<&str> = reference.split_whitespace().filter(|c| *c != "|").collect();
        assert_eq!(cells, ["reference", "3", "0", "3", "2"], "{text}");
        assert!(
            text.contains("amount_and_date") && text.ends_with("took 1.25 s\n"),
            "{text}"
        );
    }
}
