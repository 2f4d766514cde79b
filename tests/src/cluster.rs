//! The real Kalla binaries as child processes on free loopback ports.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use datafusion::prelude::SessionContext;
use kalla_core::cluster_tls::{CLIENT_FLAGS, ClusterTransport, EXECUTOR_NAME};
use kalla_core::source::{ScanOptions, SourceContext};
use kalla_runner::cluster::{TableSource, connect, register_tables};
use tempfile::TempDir;

use crate::ports::free_port;

/// `--allowed-hosts` of the test clusters: any host, and loopback, where the test servers are.
pub const TEST_HOSTS: &str = "*,127.0.0.0/8,::1";
use crate::tls::{Issued, TestCa, Usage};

/// Where cargo put the workspace binaries: `KALLA_BIN_DIR`, else next to this test's `deps/`.
pub fn bin_path(name: &str) -> PathBuf {
    let dir = std::env::var_os("KALLA_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let exe = std::env::current_exe().expect("test executable path");
            exe.parent()
                .and_then(Path::parent)
                .expect("target/<profile>/deps")
                .to_path_buf()
        });
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: build the workspace binaries first (`cargo build --workspace --bins`)",
        path.display()
    );
    path
}

/// A fresh cluster key.
pub fn cluster_key() -> String {
    kalla_core::ClusterKey::generate_base64()
}

#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub executors: usize,
    pub vcores: usize,
    pub pool_cap: u32,
    /// Notice a dead executor within seconds instead of minutes (for fault tests).
    pub fast_failure_detection: bool,
    /// More flags for the scheduler and every executor (e.g. S3 settings).
    pub extra_args: Vec<String>,
    /// More flags for every executor only (e.g. `--tls-ca-dir`).
    pub executor_args: Vec<String>,
    /// Where plans may read and write files (`--data-locations` of the scheduler and executors);
    /// by default the temp dir, where tests keep their data dirs.
    pub data_locations: Vec<String>,
    /// Run the cluster plane without TLS (`--plaintext`); by default it is mutual TLS with a CA
    /// of the cluster's own.
    pub plaintext: bool,
    /// The executors' `--allowed-hosts`.
    pub executor_hosts: &'static str,
    /// Executors read the cluster key from [`Cluster::key_file`] (`KALLA_CLUSTER_KEY_FILE`)
    /// rather than from `KALLA_CLUSTER_KEY`.
    pub key_file: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            executors: 2,
            vcores: 2,
            pool_cap: 2,
            fast_failure_detection: false,
            extra_args: Vec::new(),
            executor_args: Vec::new(),
            data_locations: vec![temp_dir_location()],
            plaintext: false,
            executor_hosts: TEST_HOSTS,
            key_file: false,
        }
    }
}

/// The temp dir as a data location.
pub fn temp_dir_location() -> String {
    let dir = std::fs::canonicalize(std::env::temp_dir()).expect("the temp dir");
    url::Url::from_directory_path(dir)
        .expect("an absolute path")
        .to_string()
}

/// The cluster's CA and the certificates it issued, in the cluster's directory.
pub struct ClusterCertificates {
    pub ca: TestCa,
    pub scheduler: Issued,
    pub executor: Issued,
    /// A client's (the runner's, a test's).
    pub client: Issued,
}

impl ClusterCertificates {
    fn issue(dir: &Path) -> Self {
        let ca = TestCa::new(dir, "cluster-ca");
        let scheduler = ca.issue(
            "scheduler",
            "kalla-scheduler",
            &["IP:127.0.0.1", "DNS:localhost"],
            Usage::Peer,
        );
        let executor_name = format!("DNS:{EXECUTOR_NAME}");
        let executor = ca.issue("executor", EXECUTOR_NAME, &[&executor_name], Usage::Peer);
        let client = ca.issue("client", "kalla-runner", &[], Usage::Client);
        Self {
            ca,
            scheduler,
            executor,
            client,
        }
    }

    fn flags(issued: &Issued, ca: &Path) -> Vec<String> {
        let path = |p: &Path| p.display().to_string();
        vec![
            "--tls-cert".into(),
            path(&issued.cert),
            "--tls-key".into(),
            path(&issued.key),
            "--tls-ca".into(),
            path(ca),
        ]
    }
}

/// A scheduler and executors; every process is killed when this is dropped.
pub struct Cluster {
    pub scheduler_port: u16,
    /// The scheduler's plaintext probe port (`/healthz`, `/readyz`, `/api/metrics`).
    pub health_port: u16,
    pub key: String,
    /// `None` when the cluster plane runs plaintext.
    pub certificates: Option<ClusterCertificates>,
    processes: Vec<(String, Child)>,
    logs: TempDir,
}

impl Cluster {
    pub async fn start(options: ClusterOptions) -> Self {
        let logs = tempfile::Builder::new()
            .prefix("kalla-cluster-")
            .tempdir()
            .expect("log dir");
        let certificates = (!options.plaintext).then(|| ClusterCertificates::issue(logs.path()));
        let mut cluster = Self {
            scheduler_port: free_port(),
            health_port: free_port(),
            key: cluster_key(),
            certificates,
            processes: Vec::new(),
            logs,
        };
        let (scheduler_tls, executor_tls) = match &cluster.certificates {
            Some(c) => (
                ClusterCertificates::flags(&c.scheduler, &c.ca.cert()),
                ClusterCertificates::flags(&c.executor, &c.ca.cert()),
            ),
            None => (vec!["--plaintext".to_string()], vec!["--plaintext".to_string()]),
        };
        let port = cluster.scheduler_port.to_string();
        let data_locations = ["--data-locations".to_string(), options.data_locations.join(",")];
        cluster.spawn(
            "scheduler",
            Command::new(bin_path("kalla-scheduler"))
                .args([
                    "--bind-host",
                    "127.0.0.1",
                    "--external-host",
                    "127.0.0.1",
                    "--bind-port",
                    &port,
                    "--task-distribution",
                    "round-robin",
                    "--bind-health-port",
                    &cluster.health_port.to_string(),
                    "--min-ready-executors",
                    &options.executors.to_string(),
                ])
                .args(&data_locations)
                .args(&scheduler_tls)
                .args(if options.fast_failure_detection {
                    &[
                        "--executor-timeout-seconds",
                        "4",
                        "--expire-dead-executor-interval-seconds",
                        "1",
                    ][..]
                } else {
                    &[][..]
                })
                .args(&options.extra_args),
        );
        for i in 0..options.executors {
            let work_dir = cluster.logs.path().join(format!("executor-{i}-work"));
            std::fs::create_dir_all(&work_dir).expect("work dir");
            let mut command = Command::new(bin_path("kalla-executor"));
            command
                .args(["--bind-host", "127.0.0.1", "--external-host", "127.0.0.1"])
                .args(["--scheduler-host", "127.0.0.1", "--scheduler-port", &port])
                // A loaded machine may start the scheduler after its executors, which by default
                // try to reach it once and exit.
                .args(["--scheduler-connect-timeout-seconds", "60"])
                .args(["--bind-port", &free_port().to_string()])
                .args(["--bind-grpc-port", &free_port().to_string()])
                .args(["--bind-health-port", &free_port().to_string()])
                .args(["--vcores", &options.vcores.to_string()])
                .args(&data_locations)
                .args(&executor_tls)
                .args(["--source-pool-max-connections", &options.pool_cap.to_string()])
                .args(["--allowed-hosts", options.executor_hosts])
                .arg("--work-dir")
                .arg(&work_dir)
                .args(if options.fast_failure_detection {
                    &["--executor-heartbeat-interval-seconds", "1"][..]
                } else {
                    &[][..]
                })
                .args(&options.extra_args)
                .args(&options.executor_args);
            if options.key_file {
                std::fs::write(cluster.key_file(), &cluster.key).expect("write the key file");
                command.env("KALLA_CLUSTER_KEY_FILE", cluster.key_file());
            } else {
                command.env("KALLA_CLUSTER_KEY", &cluster.key);
            }
            cluster.spawn(&format!("executor-{i}"), &mut command);
        }
        cluster.wait_for_executors().await;
        cluster
    }

    pub fn scheduler_url(&self) -> String {
        format!("df://127.0.0.1:{}", self.scheduler_port)
    }

    /// The scheduler's REST API at `path` (over TLS unless the cluster is plaintext).
    pub fn rest_url(&self, path: &str) -> String {
        let scheme = if self.certificates.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}{path}", self.scheduler_port)
    }

    /// An HTTP client of the scheduler's REST API, with the client certificate.
    pub fn rest_client(&self) -> reqwest::Client {
        let Some(certificates) = &self.certificates else {
            return reqwest::Client::new();
        };
        let read = |p: &Path| std::fs::read(p).expect("a certificate file");
        let identity = [read(&certificates.client.cert), read(&certificates.client.key)].concat();
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&read(&certificates.ca.cert())).unwrap())
            .identity(reqwest::Identity::from_pem(&identity).unwrap())
            .build()
            .unwrap()
    }

    /// The body of the scheduler's REST answer at `path`.
    pub async fn rest_get(&self, path: &str) -> String {
        let url = self.rest_url(path);
        self.rest_client()
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
            .text()
            .await
            .expect("a body")
    }

    /// The flags that give a runner (or `kalla query`) this cluster's client certificate.
    pub fn client_tls_args(&self) -> Vec<String> {
        let Some(certificates) = &self.certificates else {
            return vec![CLIENT_FLAGS.plaintext.to_string()];
        };
        let path = |p: &Path| p.display().to_string();
        vec![
            CLIENT_FLAGS.cert.to_string(),
            path(&certificates.client.cert),
            CLIENT_FLAGS.key.to_string(),
            path(&certificates.client.key),
            CLIENT_FLAGS.ca.to_string(),
            path(&certificates.ca.cert()),
        ]
    }

    /// Where executors started with [`ClusterOptions::key_file`] read the cluster key ring.
    pub fn key_file(&self) -> PathBuf {
        self.logs.path().join("cluster-key")
    }

    /// The flags that point a runner at this cluster: scheduler, the cluster key and a secrets key
    /// of the runner's own, and a client certificate.
    pub fn runner_args(&self) -> Vec<String> {
        let mut args = vec![
            "--scheduler".to_string(),
            self.scheduler_url(),
            "--cluster-key".to_string(),
            self.key.clone(),
            "--secret-key".to_string(),
            kalla_core::SecretsKey::generate_base64(),
            "--allowed-hosts".to_string(),
            TEST_HOSTS.to_string(),
            "--file-roots".to_string(),
            crate::runner::test_file_roots(),
            "--allowed-buckets".to_string(),
            "*".to_string(),
        ];
        args.extend(self.client_tls_args());
        args
    }

    /// A Ballista session on this cluster, as `kalla query` opens one, with the Postgres table at
    /// `uri` registered as `name`.
    pub async fn session_with_table(&self, name: &str, uri: &str, options: &ScanOptions) -> SessionContext {
        let key = kalla_core::ClusterKey::from_base64(&self.key).expect("the cluster key");
        let ctx = connect(Some(&self.scheduler_url()), key.clone(), self.transport())
            .await
            .expect("connect to the cluster");
        let table: TableSource = format!("{name}={uri}").parse().expect("a NAME=URI table");
        let context = SourceContext {
            scans: *options,
            ..SourceContext::new(key)
        };
        register_tables(&ctx, &[table], &context)
            .await
            .expect("register the table");
        ctx
    }

    /// How a test's own Ballista session reaches this cluster.
    pub fn transport(&self) -> ClusterTransport {
        let Some(certificates) = &self.certificates else {
            return ClusterTransport::Plaintext;
        };
        ClusterTransport::from_flags(
            Some(&certificates.client.cert),
            Some(&certificates.client.key),
            Some(&certificates.ca.cert()),
            false,
            CLIENT_FLAGS,
        )
        .expect("the cluster's client certificate")
    }

    fn spawn(&mut self, name: &str, command: &mut Command) {
        let log = File::create(self.logs.path().join(format!("{name}.log"))).expect("log file");
        let child = command
            .env("RUST_LOG", "info,kalla_core=debug")
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        self.processes.push((name.to_string(), child));
    }

    /// Waits until the scheduler's readiness probe says its executors registered.
    async fn wait_for_executors(&mut self) {
        let url = format!("http://127.0.0.1:{}/readyz", self.health_port);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            self.assert_running();
            if let Ok(response) = reqwest::get(&url).await
                && response.status().is_success()
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "executors did not register:\n{}",
                self.log_tails()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Kills the named process (`scheduler`, `executor-0`, …) with SIGKILL.
    pub fn kill(&mut self, name: &str) {
        let child = self.process(name);
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Stops `name` without killing it (SIGSTOP): a frozen node that holds its connections and
    /// shuffle files but answers nothing.
    pub fn freeze(&mut self, name: &str) {
        let pid = self.process(name).id();
        let stopped = Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .status()
            .expect("kill -STOP");
        assert!(stopped.success(), "cannot stop {name}");
    }

    /// The process ids of the processes whose names start with `prefix` (`executor-`), by name.
    pub fn pids(&self, prefix: &str) -> Vec<(String, u32)> {
        self.processes
            .iter()
            .filter(|(name, _)| name.starts_with(prefix))
            .map(|(name, child)| (name.clone(), child.id()))
            .collect()
    }

    fn process(&mut self, name: &str) -> &mut Child {
        self.processes
            .iter_mut()
            .find(|(n, _)| n == name)
            .map(|(_, child)| child)
            .unwrap_or_else(|| panic!("no process {name}"))
    }

    /// Panics with the logs if any process has exited.
    pub fn assert_running(&mut self) {
        let exited: Vec<String> = self
            .processes
            .iter_mut()
            .filter_map(|(name, child)| {
                child
                    .try_wait()
                    .ok()
                    .flatten()
                    .map(|status| format!("{name} exited: {status}"))
            })
            .collect();
        assert!(exited.is_empty(), "{}\n{}", exited.join("\n"), self.log_tails());
    }

    /// Everything `process` (`scheduler`, `executor-0`, …) has logged so far.
    pub fn log(&self, process: &str) -> String {
        std::fs::read_to_string(self.logs.path().join(format!("{process}.log"))).unwrap_or_default()
    }

    /// The last lines of every process's log, for failure messages.
    pub fn log_tails(&self) -> String {
        self.processes
            .iter()
            .map(|(name, _)| {
                let log =
                    std::fs::read_to_string(self.logs.path().join(format!("{name}.log"))).unwrap_or_default();
                let tail: Vec<&str> = log
                    .lines()
                    .rev()
                    .take(30)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                format!("--- {name} ---\n{}", tail.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The scheduler's REST list of jobs as it answered, and the ids of the jobs in it.
    pub async fn rest_jobs(&self) -> (String, Vec<String>) {
        let jobs = self.rest_get("/api/jobs").await;
        let ids = serde_json::from_str::<serde_json::Value>(&jobs)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|job| job["job_id"].as_str().map(str::to_string))
            .collect();
        (jobs, ids)
    }

    /// Panics unless the scheduler runs and queues no job.
    pub async fn assert_no_job_running(&self) {
        let (jobs, _) = self.rest_jobs().await;
        assert!(!jobs.contains("Running") && !jobs.contains("Queued"), "{jobs}");
    }

    /// The directory of the processes' logs and the executors' work dirs.
    pub fn dir(&self) -> &std::path::Path {
        self.logs.path()
    }

    /// Everything the processes logged so far.
    pub fn all_logs(&self) -> String {
        self.processes
            .iter()
            .map(|(name, _)| {
                std::fs::read_to_string(self.logs.path().join(format!("{name}.log"))).unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.processes {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs the `kalla` CLI with `args` and the cluster key; returns its output.
pub fn kalla_cli(key: &str, args: &[&str]) -> Output {
    Command::new(bin_path("kalla"))
        .args(args)
        .env("KALLA_CLUSTER_KEY", key)
        .stdin(Stdio::null())
        .output()
        .expect("run kalla")
}
