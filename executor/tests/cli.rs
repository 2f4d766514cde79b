//! The executor binary accepts Ballista's stock flags, their `KALLA_*` variables, honours its log
//! flags, and refuses to start without a valid cluster key.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_kalla-executor");

#[test]
fn help_lists_stock_and_kalla_flags() {
    let output = Command::new(BIN).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for flag in [
        "--scheduler-host",
        "--scheduler-port",
        "--bind-grpc-port",
        "--bind-health-port",
        "--vcores",
        "--work-dir",
        "--source-pool-max-connections",
    ] {
        assert!(help.contains(flag), "missing {flag}");
    }
    assert!(help.contains("KALLA_SCHEDULER_PORT"));
}

/// The executor, told to give up at once on a scheduler that is not there.
fn without_a_scheduler() -> Command {
    let mut command = Command::new(BIN);
    command.args([
        "--plaintext",
        "--scheduler-port",
        "1",
        "--scheduler-connect-timeout-seconds",
        "0",
    ]);
    command
}

#[test]
fn refuses_to_start_without_a_valid_cluster_key_or_with_the_secrets_key() {
    let key = kalla_core::ClusterKey::generate_base64();
    for (variables, expected) in [
        (vec![], "KALLA_CLUSTER_KEY is not set"),
        (vec![("KALLA_CLUSTER_KEY", "c2hvcnQ=")], "exactly 32 bytes"),
        (
            vec![
                ("KALLA_CLUSTER_KEY", key.as_str()),
                ("KALLA_SECRET_KEY", key.as_str()),
            ],
            "executors must not hold the runner's secrets key",
        ),
    ] {
        let mut command = without_a_scheduler();
        command
            .env_remove("KALLA_SECRET_KEY")
            .env_remove("KALLA_CLUSTER_KEY")
            .envs(variables);
        let output = command.output().unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(stderr.contains(expected), "{stderr}");
    }
}

/// `--log-dir` as Ballista's stock executor honours it: the lines go, JSON when
/// `KALLA_LOG_FORMAT=json`, to `executor_<external host>_<port>` there, down to the last one
/// before the executor gives up on an unreachable scheduler; only that final error goes to stderr.
#[test]
fn log_lines_go_to_the_log_dir_until_the_process_ends() {
    let dir = std::env::temp_dir().join(format!("kalla-executor-logs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let output = without_a_scheduler()
        .args(["--bind-host", "127.0.0.1", "--external-host", "127.0.0.1"])
        .args([
            "--bind-port",
            "0",
            "--bind-grpc-port",
            "0",
            "--bind-health-port",
            "0",
        ])
        .args(["--log-rotation-policy", "never", "--log-dir"])
        .arg(&dir)
        .env("KALLA_CLUSTER_KEY", kalla_core::ClusterKey::generate_base64())
        .env("KALLA_LOG_FORMAT", "json")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();

    assert!(!output.status.success(), "no scheduler listens on port 1");
    assert!(
        output.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.starts_with("Error: executor stopped with an error"),
        "{stderr}"
    );
    let text = std::fs::read_to_string(dir.join("executor_127.0.0.1_0")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines
            .iter()
            .all(|line| line.starts_with('{') && line.ends_with('}')),
        "JSON lines: {text}"
    );
    assert!(text.contains(r#""message":"kalla-executor starting""#), "{text}");
    assert!(
        text.contains(r#""threadName":"#),
        "--print-thread-info is on by default: {text}"
    );
    assert!(
        lines
            .last()
            .is_some_and(|line| line.contains("Executor memory pool")),
        "the last line before the executor tries the scheduler and exits is there: {text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
