//! Harness for Kalla's end-to-end tests: a real Postgres database per test, and the real
//! `kalla-scheduler`, `kalla-executor`, `kalla-runner` and `kalla` binaries as separate processes;
//! and a headless Chromium for the web console ([`browser`]).

pub mod browser;
pub mod cluster;
pub mod demo;
pub mod mariadb;
pub mod ports;
pub mod postgres;
pub mod proxy;
pub mod reconciliation;
pub mod runner;
pub mod s3;
pub mod tls;
pub mod values;

/// Polls `check` every 100 ms until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: std::time::Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// An external tool from the environment variable `variable`, else `PATH`; panics saying how to
/// get it (README's test command, `scripts/test`, installs every tool the tests use).
pub fn tool(name: &str, variable: &str, install: &str) -> std::path::PathBuf {
    if let Some(path) = std::env::var_os(variable) {
        return path.into();
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!("{name} not found on PATH or in {variable}: run the tests with scripts/test, which installs it, or {install}")
        })
}

/// Every file below `dir`, in any depth.
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut pending = vec![dir.to_path_buf()];
    let mut files = Vec::new();
    while let Some(dir) = pending.pop() {
        for path in std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
        {
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// Runs `task` to its end on a thread and runtime of its own: a `Drop` may run inside a runtime
/// that is shutting down, where nothing could be awaited.
pub fn run_detached<F: std::future::Future<Output = ()> + Send + 'static>(task: F) {
    let _ = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(task);
    })
    .join();
}
