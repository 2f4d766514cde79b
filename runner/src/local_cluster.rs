//! `kalla cluster up|down|status`: a scheduler, executors and a runner as local processes, with
//! logs and pid files — the Kubernetes topology without containers.
//!
//! Everything lives in the runner's data dir, so the `kalla` CLI finds the runner's token there as
//! it does for an embedded runner: `secret.key` (the runner's secrets key), `api-token`, and `cluster/` with one `<process>.pid` and `<process>.log` each, the
//! executors' work dirs and `cluster.json` (where the runner and scheduler listen).
//!
//! The scheduler and runner listen where the user says. Executors must be told their ports (they
//! register them with the scheduler), so `up` reserves them (see [`crate::ports`]); a process that
//! binds one without reserving it can still take it first, and that executor is started again on
//! new ports.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Subcommand;
use kalla_core::ClusterKey;
use kalla_core::seal::{CLUSTER_KEY_ENV, SECRET_KEY_ENV};
use serde::{Deserialize, Serialize};
use sysinfo::{Pid, ProcessRefreshKind, ProcessStatus, ProcessesToUpdate, Signal, System};

use crate::local_ca::LocalCertificates;
use crate::local_state;
use crate::ports::{self, PortError, PortReservation};

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Start a scheduler, executors and a runner; wait until they are ready.
    Up(UpArgs),
    /// Stop every process of the local cluster (SIGTERM, then SIGKILL after --grace-secs).
    Down {
        /// Seconds each process gets to stop before it is killed.
        #[arg(long, default_value_t = 15)]
        grace_secs: u64,
    },
    /// Show each process and whether the scheduler and runner are ready (exit 1 if not).
    Status,
}

#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// Executors to start.
    #[arg(long, default_value_t = 2)]
    pub executors: usize,
    /// Task slots each executor offers.
    #[arg(long, default_value_t = 2)]
    pub vcores: usize,
    /// Address of the runner's HTTP API.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,
    /// The scheduler's port on 127.0.0.1 (executors' ports are reserved from 20000–31999).
    #[arg(long, default_value_t = 50050)]
    pub scheduler_port: u16,
    /// The scheduler's plaintext probe port on 127.0.0.1 (`/healthz`, `/readyz`, `/api/metrics`).
    #[arg(long, default_value_t = 50060)]
    pub scheduler_health_port: u16,
    /// Metadata database (default: SQLite in the data dir); the variable keeps a password out
    /// of `ps`.
    #[arg(long, env = "KALLA_CLUSTER_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Cache and results location (default: the data dir; every process must reach it).
    #[arg(long)]
    pub cache_dir: Option<String>,
    /// Directories file sources live in (comma-separated file:///dir/ or s3://bucket/prefix/):
    /// plans may read files only there and in the cache location.
    #[arg(long, value_delimiter = ',')]
    pub data_locations: Vec<String>,
    /// Where kalla-scheduler, kalla-executor and kalla-runner are (default: next to `kalla`).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Seconds to wait for the cluster to become ready.
    #[arg(long, default_value_t = 120)]
    pub timeout_secs: u64,
}

/// Where the runner and scheduler of a started cluster listen.
#[derive(Debug, Serialize, Deserialize)]
struct Endpoints {
    runner: String,
    /// The scheduler's plaintext probe server.
    scheduler_probes: String,
}

impl Endpoints {
    /// Answers while the scheduler runs, ready or not.
    fn scheduler_health(&self) -> String {
        format!("{}/healthz", self.scheduler_probes)
    }

    /// Each service's readiness URL: the scheduler's once its executors registered, the runner's.
    fn readiness(&self) -> [(&'static str, String); 2] {
        [
            ("scheduler", format!("{}/readyz", self.scheduler_probes)),
            ("runner", format!("{}/ready", self.runner)),
        ]
    }
}

async fn answers_ready(http: &reqwest::Client, url: &str) -> bool {
    http.get(url).send().await.is_ok_and(|r| r.status().is_success())
}

/// The local cluster kept in `data_dir` (the runner's data dir).
pub struct LocalCluster {
    data_dir: PathBuf,
    dir: PathBuf,
}

impl LocalCluster {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
            dir: data_dir.join("cluster"),
        }
    }

    pub async fn run(&self, command: ClusterCommand) -> anyhow::Result<()> {
        match command {
            ClusterCommand::Up(args) => self.up(args).await,
            ClusterCommand::Down { grace_secs } => self.down(Duration::from_secs(grace_secs)),
            ClusterCommand::Status => self.status().await,
        }
    }

    async fn up(&self, args: UpArgs) -> anyhow::Result<()> {
        let running = self.running();
        if !running.is_empty() {
            bail!(
                "a local cluster is already running from {} ({}); stop it with `kalla cluster down`",
                self.dir.display(),
                running.join(", ")
            );
        }
        fs::create_dir_all(&self.dir).with_context(|| format!("cannot create {}", self.dir.display()))?;
        // Left by a cluster that died without `down`: they name no process of ours any more.
        for (_, pid_file) in self.pid_files() {
            fs::remove_file(&pid_file).with_context(|| format!("cannot remove {}", pid_file.display()))?;
        }
        let _ = fs::remove_file(self.dir.join("cluster.json"));
        let (secrets_key, _) = local_state::load_or_generate(
            &self.data_dir,
            local_state::KEY_FILE,
            None,
            local_state::generate_key,
        )?;
        // The cluster key lives only in the processes' environments, for as long as they run.
        let keys = Keys {
            secrets: secrets_key,
            cluster: ClusterKey::generate_base64(),
        };
        let bin_dir = match args.bin_dir.clone() {
            Some(dir) => dir,
            None => sibling_dir()?,
        };
        let endpoints = Endpoints {
            runner: format!("http://{}", args.bind),
            scheduler_probes: format!("http://127.0.0.1:{}", args.scheduler_health_port),
        };
        let mut started = Started::default();
        let result = self
            .start_all(&args, &bin_dir, &keys, &endpoints, &mut started)
            .await;
        if let Err(error) = result {
            let logs = started.log_tails(&self.dir);
            started.kill_all();
            for (_, pid_file) in self.pid_files() {
                let _ = fs::remove_file(pid_file);
            }
            return Err(error.context(format!("the local cluster did not start; it was stopped\n{logs}")));
        }
        fs::write(
            self.dir.join("cluster.json"),
            serde_json::to_vec_pretty(&endpoints)?,
        )?;
        let token = self.data_dir.join(local_state::TOKEN_FILE);
        println!(
            "Kalla local cluster is up: 1 scheduler, {} executors, runner at {}",
            args.executors, endpoints.runner
        );
        println!("logs and pid files: {}", self.dir.display());
        println!("  export KALLA_RUNNER={}", endpoints.runner);
        println!("  export KALLA_API_TOKEN=$(cat {})", token.display());
        println!("stop it with: kalla cluster down");
        Ok(())
    }

    async fn start_all(
        &self,
        args: &UpArgs,
        bin_dir: &Path,
        keys: &Keys,
        endpoints: &Endpoints,
        started: &mut Started,
    ) -> anyhow::Result<()> {
        refuse_taken(
            SocketAddr::from(([127, 0, 0, 1], args.scheduler_port)),
            "--scheduler-port",
        )?;
        refuse_taken(
            SocketAddr::from(([127, 0, 0, 1], args.scheduler_health_port)),
            "--scheduler-health-port",
        )?;
        refuse_taken(args.bind, "--bind")?;
        let certificates = LocalCertificates::issue(&self.dir.join("tls"))?;
        // Reserved before the scheduler starts, so no other reserver takes them meanwhile; held
        // until the executors are up.
        let executors = (0..args.executors)
            .map(|_| ExecutorPorts::reserve().map(|ports| (ports, 1)))
            .collect::<Result<Vec<_>, _>>()?;
        let mut startup = Startup {
            cluster: self,
            args,
            bin_dir,
            keys,
            certificates,
            started,
            executors,
        };
        startup.run(endpoints).await
    }

    /// A service's command: its log in the cluster dir, its own process group (a Ctrl-C in the
    /// shell that started it does not reach it), and none of the shell's `KALLA_*` settings, so a
    /// shell set up for another runner does not change this cluster.
    fn command(&self, bin_dir: &Path, binary: &str) -> Command {
        let mut command = Command::new(bin_dir.join(binary));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("KALLA_") {
                command.env_remove(name);
            }
        }
        command.stdin(Stdio::null()).process_group(0);
        command
    }

    fn down(&self, grace: Duration) -> anyhow::Result<()> {
        if self.pid_files().is_empty() {
            println!("no local cluster in {}", self.dir.display());
            return Ok(());
        }
        for (name, stopped) in self.stop_all(grace) {
            println!("{name}: {stopped}");
        }
        let _ = fs::remove_file(self.dir.join("cluster.json"));
        Ok(())
    }

    /// Stops the runner first, the scheduler last, so no job is submitted to a half-stopped
    /// cluster; returns what happened to each process.
    fn stop_all(&self, grace: Duration) -> Vec<(String, String)> {
        self.pid_files()
            .into_iter()
            .rev()
            .map(|(name, path)| {
                let outcome = match read_pid(&path) {
                    Some(pid) => stop(pid, &binary_of(&name), grace),
                    None => "no valid pid file".to_string(),
                };
                let _ = fs::remove_file(&path);
                (name, outcome)
            })
            .collect()
    }

    async fn status(&self) -> anyhow::Result<()> {
        let pid_files = self.pid_files();
        if pid_files.is_empty() {
            bail!(
                "no local cluster in {} (start one with `kalla cluster up`)",
                self.dir.display()
            );
        }
        let mut problems = Vec::new();
        for (name, path) in &pid_files {
            let pid = read_pid(path);
            let alive = pid.is_some_and(|pid| is_running(pid, &binary_of(name)));
            let pid = pid.map_or("?".to_string(), |p| p.to_string());
            println!(
                "{name:<12} pid {pid:<8} {}",
                if alive { "running" } else { "stopped" }
            );
            if !alive {
                problems.push(format!("{name} is not running"));
            }
        }
        let endpoints: Endpoints = serde_json::from_slice(
            &fs::read(self.dir.join("cluster.json")).context("the cluster never became ready")?,
        )?;
        let http = reqwest::Client::new();
        for (name, url) in endpoints.readiness() {
            let ready = answers_ready(&http, &url).await;
            println!("{name:<12} {url} {}", if ready { "ready" } else { "not ready" });
            if !ready {
                problems.push(format!("{name} is not ready"));
            }
        }
        if !problems.is_empty() {
            bail!("{}", problems.join("; "));
        }
        Ok(())
    }

    /// `(process name, pid file)` for every pid file in the cluster dir, in start order:
    /// scheduler, executors, runner.
    fn pid_files(&self) -> Vec<(String, PathBuf)> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut pid_files: Vec<(String, PathBuf)> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter_map(|path| {
                let name = path.file_name()?.to_str()?.strip_suffix(".pid")?.to_string();
                Some((name, path))
            })
            .collect();
        pid_files.sort_by_key(|(name, _)| {
            let rank = match name.as_str() {
                "scheduler" => 0,
                "runner" => 2,
                _ => 1,
            };
            (rank, name.clone())
        });
        pid_files
    }

    /// Names of the processes whose pid file names a live process.
    fn running(&self) -> Vec<String> {
        self.pid_files()
            .into_iter()
            .filter(|(name, path)| read_pid(path).is_some_and(|pid| is_running(pid, &binary_of(name))))
            .map(|(name, _)| name)
            .collect()
    }
}

/// The two keys of a local cluster: the runner holds both, the executors only the cluster key.
struct Keys {
    secrets: String,
    cluster: String,
}

/// One `kalla cluster up`: starts the services, and starts again an executor whose port another
/// process took before it could listen.
struct Startup<'a> {
    cluster: &'a LocalCluster,
    args: &'a UpArgs,
    bin_dir: &'a Path,
    keys: &'a Keys,
    certificates: LocalCertificates,
    started: &'a mut Started,
    /// Each executor's ports, and how many times it was started.
    executors: Vec<(ExecutorPorts, usize)>,
}

impl Startup<'_> {
    async fn run(&mut self, endpoints: &Endpoints) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(self.args.timeout_secs);
        self.spawn(Service::Scheduler)?;
        // Executors started once the scheduler answers register at once instead of retrying.
        self.wait_until_ready(&endpoints.scheduler_health(), deadline)
            .await?;
        for index in 0..self.executors.len() {
            self.spawn(Service::Executor(index))?;
        }
        self.spawn(Service::Runner)?;
        for (_, url) in endpoints.readiness() {
            self.wait_until_ready(&url, deadline).await?;
        }
        Ok(())
    }

    fn spawn(&mut self, service: Service) -> anyhow::Result<()> {
        let mut command = self.command(service)?;
        self.started.spawn(&self.cluster.dir, service, &mut command)
    }

    /// `--data-locations` for the scheduler and executors: the cache location, and the
    /// directories of file sources.
    fn data_locations(&self) -> anyhow::Result<String> {
        let cache = match &self.args.cache_dir {
            Some(location) => location.clone(),
            None => {
                let dir = fs::canonicalize(&self.cluster.data_dir)
                    .with_context(|| format!("cannot open {}", self.cluster.data_dir.display()))?;
                url::Url::from_directory_path(&dir)
                    .map_err(|()| anyhow::anyhow!("the data dir {} is not an absolute path", dir.display()))?
                    .to_string()
            }
        };
        Ok(std::iter::once(cache)
            .chain(self.args.data_locations.iter().cloned())
            .collect::<Vec<_>>()
            .join(","))
    }

    /// The runner's `--file-roots` and `--allowed-buckets`: where `--data-locations` points.
    fn file_source_flags(&self) -> Vec<String> {
        let locations: Vec<url::Url> = self
            .args
            .data_locations
            .iter()
            .filter_map(|location| url::Url::parse(location).ok())
            .collect();
        let roots: Vec<String> = locations
            .iter()
            .filter_map(|location| location.to_file_path().ok())
            .map(|dir| dir.display().to_string())
            .collect();
        let buckets: Vec<&str> = locations
            .iter()
            .filter(|location| location.scheme() == "s3")
            .filter_map(|location| location.host_str())
            .collect();
        let mut flags = Vec::new();
        if !roots.is_empty() {
            flags.extend(["--file-roots".to_string(), roots.join(",")]);
        }
        if !buckets.is_empty() {
            flags.extend(["--allowed-buckets".to_string(), buckets.join(",")]);
        }
        flags
    }

    fn command(&self, service: Service) -> anyhow::Result<Command> {
        let scheduler_port = self.args.scheduler_port.to_string();
        let mut command = self.cluster.command(self.bin_dir, &service.binary());
        if matches!(service, Service::Scheduler | Service::Executor(_)) {
            command.args(["--data-locations", &self.data_locations()?]);
        }
        if matches!(service, Service::Runner | Service::Executor(_)) {
            // Every process runs on this machine, where sources on loopback are its own.
            command.args(["--allowed-hosts", LOCAL_HOSTS]);
        }
        match service {
            Service::Scheduler => {
                command
                    .args(["--bind-host", "127.0.0.1", "--external-host", "127.0.0.1"])
                    .args(["--bind-port", &scheduler_port])
                    .args(["--bind-health-port", &self.args.scheduler_health_port.to_string()])
                    .args(self.certificates.service_flags(&self.certificates.scheduler))
                    .args(["--min-ready-executors", &self.args.executors.to_string()]);
            }
            Service::Executor(index) => {
                let work_dir = self.cluster.dir.join(format!("{}-work", service.name()));
                fs::create_dir_all(&work_dir)
                    .with_context(|| format!("cannot create {}", work_dir.display()))?;
                command
                    .args(["--bind-host", "127.0.0.1", "--external-host", "127.0.0.1"])
                    .args([
                        "--scheduler-host",
                        "127.0.0.1",
                        "--scheduler-port",
                        &scheduler_port,
                    ])
                    .args(["--scheduler-connect-timeout-seconds", "60"])
                    .args(self.executors[index].0.flags())
                    .args(["--vcores", &self.args.vcores.to_string()])
                    .args(self.certificates.service_flags(&self.certificates.executor))
                    .arg("--work-dir")
                    .arg(&work_dir)
                    .env(CLUSTER_KEY_ENV, &self.keys.cluster);
            }
            Service::Runner => {
                command
                    .args(["--bind", &self.args.bind.to_string()])
                    .arg("--data-dir")
                    .arg(&self.cluster.data_dir)
                    .args(["--scheduler", &format!("df://127.0.0.1:{scheduler_port}")])
                    .args(self.file_source_flags())
                    .args(self.certificates.runner_flags())
                    .env(CLUSTER_KEY_ENV, &self.keys.cluster)
                    .env(SECRET_KEY_ENV, &self.keys.secrets);
                if let Some(url) = &self.args.database_url {
                    command.env("KALLA_DATABASE_URL", url);
                }
                if let Some(location) = &self.args.cache_dir {
                    command.args(["--cache-dir", location]);
                }
            }
        }
        Ok(command)
    }

    async fn wait_until_ready(&mut self, url: &str, deadline: Instant) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        loop {
            self.handle_exits()?;
            if answers_ready(&http, url).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{url} did not answer ready within {} s", self.args.timeout_secs);
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = tokio::signal::ctrl_c() => bail!("interrupted"),
            }
        }
    }

    /// Starts again each executor that exited because another process took one of its ports;
    /// any other exit ends `up`.
    fn handle_exits(&mut self) -> anyhow::Result<()> {
        while let Some(exit) = self.started.next_exit(&self.cluster.dir)? {
            let lost_a_port = exit.log.contains(ADDRESS_IN_USE);
            match exit.service {
                Service::Executor(index) if lost_a_port && self.executors[index].1 < EXECUTOR_STARTS => {
                    self.restart_executor(index)?;
                }
                Service::Scheduler if lost_a_port => bail!(
                    "another process took port {} before the scheduler could listen on it; \
                     choose another with --scheduler-port",
                    self.args.scheduler_port
                ),
                Service::Runner if lost_a_port => bail!(
                    "another process took {} before the runner could listen on it; choose another \
                     with --bind",
                    self.args.bind
                ),
                service => bail!("{} exited ({})", service.name(), exit.status),
            }
        }
        Ok(())
    }

    fn restart_executor(&mut self, index: usize) -> anyhow::Result<()> {
        let service = Service::Executor(index);
        let (ports, starts) = &mut self.executors[index];
        let taken = ports.to_string();
        *ports = ExecutorPorts::reserve()?;
        *starts += 1;
        let note = format!(
            "{} could not listen on one of its ports ({taken}): another process took it; starting it \
             again on ports {ports} (start {starts} of {EXECUTOR_STARTS})",
            service.name()
        );
        println!("{note}");
        let mut command = self.command(service)?;
        self.started
            .restart(&self.cluster.dir, service, &mut command, &note)
    }
}

/// Starts of one executor before `up` gives up on its ports being taken by other processes.
const EXECUTOR_STARTS: usize = 3;

/// `--allowed-hosts` of a cluster on one machine: any host, and loopback too.
const LOCAL_HOSTS: &str = "*,127.0.0.0/8,::1";

/// What a server's log says when its port is taken: `strerror(EADDRINUSE)` on Linux and macOS,
/// in both an `io::Error`'s message and its debug form. An executor exits whichever of its ports
/// is taken: with an error for its gRPC port (before it registers) and its health port
/// (kalla-executor's doing: Ballista's health server only ends its task), with status 0 for its
/// Arrow Flight port (after it registered, telling the scheduler it stops).
const ADDRESS_IN_USE: &str = "Address already in use";

/// Fails naming `flag` when `address` cannot be listened on.
fn refuse_taken(address: SocketAddr, flag: &str) -> anyhow::Result<()> {
    match TcpListener::bind(address) {
        Ok(_) => Ok(()),
        Err(error) => bail!("cannot listen on {address} ({error}); choose another with {flag}"),
    }
}

/// An executor's reserved ports, for its Arrow Flight, gRPC and health servers.
struct ExecutorPorts([PortReservation; 3]);

impl ExecutorPorts {
    fn reserve() -> Result<Self, PortError> {
        Ok(Self([ports::reserve()?, ports::reserve()?, ports::reserve()?]))
    }

    fn flags(&self) -> Vec<String> {
        ["--bind-port", "--bind-grpc-port", "--bind-health-port"]
            .into_iter()
            .zip(&self.0)
            .flat_map(|(flag, reservation)| [flag.to_string(), reservation.port().to_string()])
            .collect()
    }
}

impl fmt::Display for ExecutorPorts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [flight, grpc, health] = self.0.each_ref().map(PortReservation::port);
        write!(f, "{flight}, {grpc}, {health}")
    }
}

/// A process of the local cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    Scheduler,
    Executor(usize),
    Runner,
}

impl Service {
    /// Its pid and log files' name.
    fn name(self) -> String {
        match self {
            Service::Scheduler => "scheduler".to_string(),
            Service::Executor(index) => format!("executor-{index}"),
            Service::Runner => "runner".to_string(),
        }
    }

    fn binary(self) -> String {
        binary_of(&self.name())
    }
}

/// A process `up` started, and where its own lines begin in its log.
struct Process {
    service: Service,
    child: Child,
    log_start: u64,
}

/// A process that exited while `up` waited for the cluster.
struct Exit {
    service: Service,
    status: ExitStatus,
    /// Its log since it started.
    log: String,
}

/// Processes `up` started so far, each with its log and pid file.
#[derive(Default)]
struct Started(Vec<Process>);

impl Started {
    /// Starts `service` with a fresh log.
    fn spawn(&mut self, dir: &Path, service: Service, command: &mut Command) -> anyhow::Result<()> {
        let log_path = log_path(dir, service);
        let log = File::create(&log_path).with_context(|| format!("cannot create {}", log_path.display()))?;
        let process = launch(dir, service, command, log, 0)?;
        self.0.push(process);
        Ok(())
    }

    /// Starts `service` again in place of its exited process, keeping its log with `note` added.
    fn restart(
        &mut self,
        dir: &Path,
        service: Service,
        command: &mut Command,
        note: &str,
    ) -> anyhow::Result<()> {
        let log_path = log_path(dir, service);
        let mut log = OpenOptions::new()
            .append(true)
            .open(&log_path)
            .and_then(|mut log| writeln!(log, "--- kalla cluster up: {note} ---").map(|()| log))
            .with_context(|| format!("cannot write {}", log_path.display()))?;
        let log_start = log.seek(SeekFrom::End(0))?;
        let process = launch(dir, service, command, log, log_start)?;
        match self.0.iter_mut().find(|started| started.service == service) {
            Some(exited) => *exited = process,
            None => self.0.push(process),
        }
        Ok(())
    }

    /// Ends every process started so far (a cluster that failed to start holds nothing of value).
    fn kill_all(&mut self) {
        for process in &mut self.0 {
            let _ = process.child.kill();
            let _ = process.child.wait();
        }
    }

    /// The first process found exited, if any.
    fn next_exit(&mut self, dir: &Path) -> anyhow::Result<Option<Exit>> {
        for process in &mut self.0 {
            if let Some(status) = process.child.try_wait()? {
                let log = fs::read(log_path(dir, process.service)).unwrap_or_default();
                let own_lines = log.get(process.log_start as usize..).unwrap_or_default();
                return Ok(Some(Exit {
                    service: process.service,
                    status,
                    log: String::from_utf8_lossy(own_lines).into_owned(),
                }));
            }
        }
        Ok(None)
    }

    fn log_tails(&self, dir: &Path) -> String {
        self.0
            .iter()
            .map(|process| {
                let name = process.service.name();
                let log = fs::read_to_string(log_path(dir, process.service)).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(10)..].join("\n");
                format!("--- {name}.log ---\n{tail}")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn log_path(dir: &Path, service: Service) -> PathBuf {
    dir.join(format!("{}.log", service.name()))
}

/// Starts `command` writing to `log`, and writes its pid file.
fn launch(
    dir: &Path,
    service: Service,
    command: &mut Command,
    log: File,
    log_start: u64,
) -> anyhow::Result<Process> {
    let program = command.get_program().to_string_lossy().into_owned();
    let child = command
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {program} (build it, or set --bin-dir)"))?;
    let pid_file = dir.join(format!("{}.pid", service.name()));
    let process = Process {
        service,
        child,
        log_start,
    };
    fs::write(&pid_file, format!("{}\n", process.child.id()))
        .with_context(|| format!("cannot write {}", pid_file.display()))?;
    Ok(process)
}

/// The directory of the running `kalla` binary, where cargo and the images put the services.
fn sibling_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the kalla binary's directory")?;
    exe.parent()
        .map(Path::to_path_buf)
        .context("the kalla binary has no directory")
}

fn binary_of(process: &str) -> String {
    match process {
        "scheduler" => "kalla-scheduler",
        "runner" => "kalla-runner",
        _ => "kalla-executor",
    }
    .to_string()
}

fn read_pid(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether `pid` is a live (not zombie) process of `binary`: a pid file outliving its process
/// must not make us signal whatever process reuses the number.
fn is_running(pid: u32, binary: &str) -> bool {
    let mut system = System::new();
    let pid = Pid::from_u32(pid);
    system.refresh_processes_specifics(
        ProcessesToUpdate::Some(&[pid]),
        true,
        ProcessRefreshKind::nothing().with_exe(sysinfo::UpdateKind::OnlyIfNotSet),
    );
    system.process(pid).is_some_and(|process| {
        // A binary rebuilt while its process runs shows as `kalla-runner (deleted)`.
        let name_matches = process
            .exe()
            .and_then(Path::file_name)
            .map(|exe| exe.to_string_lossy().into_owned())
            .map_or(process.name().to_string_lossy().starts_with(binary), |exe| {
                exe.strip_suffix(" (deleted)").unwrap_or(&exe) == binary
            });
        name_matches && !matches!(process.status(), ProcessStatus::Zombie | ProcessStatus::Dead)
    })
}

/// SIGTERM, then SIGKILL once `grace` is over; says what it took.
fn stop(pid: u32, binary: &str, grace: Duration) -> String {
    if !is_running(pid, binary) {
        return format!("pid {pid} was not running");
    }
    signal(pid, Signal::Term);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !is_running(pid, binary) {
            return format!("stopped (pid {pid})");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    signal(pid, Signal::Kill);
    for _ in 0..50 {
        if !is_running(pid, binary) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    format!("killed after {} s (pid {pid})", grace.as_secs())
}

fn signal(pid: u32, signal: Signal) {
    let mut system = System::new();
    let pid = Pid::from_u32(pid);
    system.refresh_processes(ProcessesToUpdate::Some(&[pid]), true);
    if let Some(process) = system.process(pid) {
        process.kill_with(signal);
    }
}
