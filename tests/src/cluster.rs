//! The real Kalla binaries as child processes on free loopback ports.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::ports::free_port;

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
        }
    }
}

/// A scheduler and executors; every process is killed when this is dropped.
pub struct Cluster {
    pub scheduler_port: u16,
    pub key: String,
    processes: Vec<(String, Child)>,
    logs: TempDir,
}

impl Cluster {
    pub async fn start(options: ClusterOptions) -> Self {
        let logs = tempfile::Builder::new()
            .prefix("kalla-cluster-")
            .tempdir()
            .expect("log dir");
        let mut cluster = Self {
            scheduler_port: free_port(),
            key: cluster_key(),
            processes: Vec::new(),
            logs,
        };
        let port = cluster.scheduler_port.to_string();
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
                ])
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
                .args(["--source-pool-max-connections", &options.pool_cap.to_string()])
                .arg("--work-dir")
                .arg(&work_dir)
                .args(if options.fast_failure_detection {
                    &["--executor-heartbeat-interval-seconds", "1"][..]
                } else {
                    &[][..]
                })
                .args(&options.extra_args)
                .args(&options.executor_args)
                .env("KALLA_SECRET_KEY", &cluster.key);
            cluster.spawn(&format!("executor-{i}"), &mut command);
        }
        cluster.wait_for_executors(options.executors).await;
        cluster
    }

    pub fn scheduler_url(&self) -> String {
        format!("df://127.0.0.1:{}", self.scheduler_port)
    }

    pub fn rest_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.scheduler_port)
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

    async fn wait_for_executors(&mut self, count: usize) {
        let url = self.rest_url("/api/executors");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            self.assert_running();
            if let Ok(response) = reqwest::get(&url).await
                && let Ok(body) = response.json::<serde_json::Value>().await
                && body.as_array().is_some_and(|executors| executors.len() >= count)
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
        let jobs = reqwest::get(self.rest_url("/api/jobs"))
            .await
            .expect("the scheduler's REST API answers")
            .text()
            .await
            .expect("a job list");
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
        .env("KALLA_SECRET_KEY", key)
        .stdin(Stdio::null())
        .output()
        .expect("run kalla")
}
