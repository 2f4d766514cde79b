//! The real `kalla-runner` binary as a child process, and an HTTP client for it.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tempfile::TempDir;

use crate::cluster::bin_path;
use crate::ports::free_port;
use crate::postgres::TestDatabase;

/// A running `kalla-runner` (embedded cluster) with its own data dir; killed when dropped.
pub struct Runner {
    pub base_url: String,
    pub data_dir: TempDir,
    pub token: String,
    child: Child,
    http: reqwest::Client,
}

impl Runner {
    /// Starts a runner on a free port; `database_url` `None` means SQLite in the data dir.
    pub async fn start(database_url: Option<&str>) -> Self {
        Self::start_in(TempDir::new().expect("data dir"), database_url, &[]).await
    }

    pub async fn start_in(data_dir: TempDir, database_url: Option<&str>, extra_args: &[&str]) -> Self {
        Self::start_serving(data_dir, database_url, extra_args, None).await
    }

    /// A runner serving HTTPS (`extra_args` give `--tls-cert`/`--tls-key` for `localhost`),
    /// called by a client that trusts only `ca`.
    pub async fn start_https(data_dir: TempDir, extra_args: &[&str], ca: &Path) -> Self {
        Self::start_serving(data_dir, None, extra_args, Some(ca)).await
    }

    async fn start_serving(
        data_dir: TempDir,
        database_url: Option<&str>,
        extra_args: &[&str],
        https_ca: Option<&Path>,
    ) -> Self {
        let port = free_port();
        let mut child = spawn(data_dir.path(), port, database_url, extra_args);
        let (base_url, http) = match https_ca {
            None => (format!("http://127.0.0.1:{port}"), reqwest::Client::new()),
            Some(ca) => {
                let pem = std::fs::read(ca).expect("read the CA");
                let client = reqwest::Client::builder()
                    .tls_built_in_root_certs(false)
                    .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("a PEM CA"))
                    .build()
                    .expect("HTTPS client");
                (format!("https://localhost:{port}"), client)
            }
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().expect("runner status") {
                panic!(
                    "kalla-runner exited with {status}:\n{}",
                    read_log(data_dir.path())
                );
            }
            if http.get(format!("{base_url}/health")).send().await.is_ok() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "kalla-runner did not come up:\n{}",
                read_log(data_dir.path())
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let token = std::fs::read_to_string(data_dir.path().join("api-token"))
            .expect("generated token")
            .trim()
            .to_string();
        Self {
            base_url,
            data_dir,
            token,
            child,
            http,
        }
    }

    /// Sends a request with the runner's token; returns the status and the JSON body (`Null` if none).
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        answer(self.request(method, path, body)).await
    }

    /// [`Runner::call`] with an `Idempotency-Key` header.
    pub async fn call_with_key(
        &self,
        method: Method,
        path: &str,
        key: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        answer(
            self.request(method, path, Some(body))
                .header("Idempotency-Key", key),
        )
        .await
    }

    /// [`Runner::call`] with `token` instead of the runner's own (`None`: no token at all).
    pub async fn call_as(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        answer(self.request_as(token, method, path, body)).await
    }

    fn request(&self, method: Method, path: &str, body: Option<Value>) -> reqwest::RequestBuilder {
        self.request_as(Some(&self.token), method, path, body)
    }

    fn request_as(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::RequestBuilder {
        let mut request = self.http.request(method, format!("{}{path}", self.base_url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        match body {
            Some(body) => request.json(&body),
            None => request,
        }
    }

    /// Registers a source and returns the runner's answer; panics unless it is 201 Created.
    pub async fn register_source(&self, alias: &str, uri: &str) -> Value {
        let body = serde_json::json!({"alias": alias, "uri": uri});
        let (status, body) = self.call(Method::POST, "/api/sources", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "registering {alias}: {body}");
        body
    }

    /// Registers `uri` as `alias` and asserts that previewing it fails with 502 Bad Gateway and a
    /// message containing `says` (what the database or TLS refused); returns the message.
    pub async fn assert_preview_refused(&self, alias: &str, uri: &str, says: &str) -> String {
        self.register_source(alias, uri).await;
        let path = format!("/api/sources/{alias}/load-scoped");
        let (status, answer) = self.call(Method::POST, &path, Some(serde_json::json!({}))).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{alias}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{alias} must say {says:?}: {answer}");
        message.to_string()
    }

    /// Registers a Postgres connection to the database at `uri`; panics unless it is 201 Created.
    /// Returns the runner's answer.
    pub async fn create_connection(&self, name: &str, uri: &str) -> Value {
        let body = serde_json::json!({"name": name, "source_type": "postgres", "config": {"uri": uri}});
        let (status, answer) = self.call(Method::POST, "/api/connections", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        answer
    }

    /// Submits a job; panics unless it is accepted. Returns its id.
    pub async fn submit_job(&self, body: Value) -> String {
        let (status, job) = self.call(Method::POST, "/api/jobs", Some(body.clone())).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}: {job}");
        job["id"].as_str().expect("a job id").to_string()
    }

    /// Submits a job and waits until its first Ballista job runs. Returns its id.
    pub async fn start_job(&self, body: Value) -> String {
        let id = self.submit_job(body).await;
        crate::wait_for(
            &format!("job {id} to run on the cluster"),
            Duration::from_secs(120),
            || async {
                let (_, job) = self.call(Method::GET, &format!("/api/jobs/{id}"), None).await;
                assert!(
                    !matches!(job["status"].as_str(), Some("failed" | "succeeded")),
                    "{job}"
                );
                let running = job["status"] == "running"
                    && job["ballista_job_ids"]
                        .as_array()
                        .is_some_and(|ids| !ids.is_empty());
                running.then_some(())
            },
        )
        .await;
        id
    }

    /// Waits until the job ends; returns its final state.
    pub async fn wait_for_job(&self, id: &str, timeout: Duration) -> Value {
        crate::wait_for(&format!("job {id} to end"), timeout, || async {
            let (_, job) = self.call(Method::GET, &format!("/api/jobs/{id}"), None).await;
            matches!(job["status"].as_str(), Some("succeeded" | "failed" | "cancelled")).then_some(job)
        })
        .await
    }

    /// Sends a request in the background, so a fault can be injected while it is served.
    pub fn spawn_call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> tokio::task::JoinHandle<(StatusCode, Value)> {
        tokio::spawn(answer(self.request(method, path, body)))
    }

    /// Sends `method path` in the background, again and again until a run is caught copying from
    /// `db`, and returns that run still going. Runs that ended before they were caught (too quick
    /// to be seen between two looks) must have succeeded; the last one's answer is returned too.
    pub async fn spawn_caught_copying(
        &self,
        db: &TestDatabase,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (tokio::task::JoinHandle<(StatusCode, Value)>, Option<Value>) {
        let mut ended = None;
        for _ in 0..5 {
            let run = self.spawn_call(method.clone(), path, body.clone());
            if db.wait_for_copy_during(&run).await {
                return (run, ended);
            }
            let (status, answer) = run.await.expect("the request task");
            assert_eq!(
                status,
                StatusCode::OK,
                "{method} {path}, which nothing struck: {answer}"
            );
            ended = Some(answer);
        }
        panic!(
            "{method} {path} ended five times before a COPY from {} was seen",
            db.name
        );
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    pub fn logs(&self) -> String {
        read_log(self.data_dir.path())
    }

    /// What `/metrics` answers now.
    pub async fn metrics(&self) -> String {
        let response = self.http.get(format!("{}/metrics", self.base_url)).send().await;
        response
            .expect("runner answers")
            .text()
            .await
            .expect("metrics text")
    }

    /// `kalla ARGS` against this runner with `token`; panics unless it succeeds. Its standard output.
    pub fn kalla(&self, token: &str, args: &[&str]) -> String {
        let output = Command::new(bin_path("kalla"))
            .args(args)
            .args(["--runner", &self.base_url, "--api-token", token])
            .output()
            .expect("run kalla");
        assert!(
            output.status.success(),
            "kalla {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("UTF-8 output")
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(self) -> (ExitStatus, TempDir) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        self.wait_for_exit()
    }

    /// Kills the process (SIGKILL): no shutdown of its own.
    pub fn kill(mut self) -> TempDir {
        let _ = self.child.kill();
        self.wait_for_exit().1
    }

    fn wait_for_exit(mut self) -> (ExitStatus, TempDir) {
        let status = self.child.wait().expect("runner exits");
        self.assert_answers_documented();
        let data_dir = std::mem::replace(&mut self.data_dir, TempDir::new().expect("placeholder dir"));
        (status, data_dir)
    }

    /// Every answer the runner gave is one its API document lists: it logs any other (see
    /// `check_documented` in the runner), and a test that provoked one fails here.
    fn assert_answers_documented(&self) {
        if std::thread::panicking() {
            return;
        }
        let logs = self.logs();
        let undocumented: Vec<&str> = logs
            .lines()
            .filter(|line| line.contains(UNDOCUMENTED_ANSWER))
            .collect();
        assert!(
            undocumented.is_empty(),
            "the runner gave answers its OpenAPI document lacks:\n{}",
            undocumented.join("\n")
        );
    }
}

/// What the runner logs for an answer its OpenAPI document does not list.
/// A documented path pattern (`/api/jobs/{id}`) with every parameter naming nothing that exists.
pub fn concrete_path(pattern: &str) -> String {
    pattern
        .split('/')
        .map(|part| {
            if part.starts_with('{') {
                "no_such_thing"
            } else {
                part
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

pub const UNDOCUMENTED_ANSWER: &str = "undocumented answer";

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.assert_answers_documented();
    }
}

/// The status and JSON body (`Null` if none, the text if not JSON) of the answer to `request`.
async fn answer(request: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.expect("runner answers");
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// The temp dir and the repository, comma-separated.
pub fn test_file_roots() -> String {
    let repository = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    format!("{},{}", std::env::temp_dir().display(), repository.display())
}

fn spawn(data_dir: &Path, port: u16, database_url: Option<&str>, extra_args: &[&str]) -> Child {
    let log = File::create(data_dir.join("runner.log")).expect("runner log");
    let mut command = Command::new(bin_path("kalla-runner"));
    command
        .arg("--bind")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("KALLA_API_TOKEN")
        .env_remove("KALLA_SECRET_KEY")
        .env_remove("KALLA_CLUSTER_KEY")
        .env_remove("KALLA_SCHEDULER")
        .env_remove("KALLA_DATABASE_URL")
        .args(extra_args)
        // Tests keep their files in temporary directories and read the repository's examples; a
        // test of the roots gives its own.
        .env("KALLA_FILE_ROOTS", test_file_roots())
        .env("RUST_LOG", "debug,sqlx=debug,hyper=info,h2=info,tower=info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log handle"))
        .stderr(log);
    if let Some(url) = database_url {
        command.arg("--database-url").arg(url);
    }
    command.spawn().expect("start kalla-runner")
}

/// Runs `kalla-runner` expecting it to refuse to start; returns its exit status and output.
pub fn run_to_exit(data_dir: &Path, database_url: Option<&str>, extra_args: &[&str]) -> (ExitStatus, String) {
    let mut child = spawn(data_dir, free_port(), database_url, extra_args);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().expect("runner status") {
            return (status, read_log(data_dir));
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "kalla-runner was expected to exit but kept running:\n{}",
                read_log(data_dir)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read_log(data_dir: &Path) -> String {
    std::fs::read_to_string(data_dir.join("runner.log")).unwrap_or_default()
}
