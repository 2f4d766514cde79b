//! The scheduler binary accepts Ballista's stock flags and their `KALLA_*` variables, and honours
//! its log flags.

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_kalla-scheduler");

#[test]
fn help_lists_the_stock_flags() {
    let output = Command::new(BIN).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for flag in [
        "--bind-host",
        "--bind-port",
        "--external-host",
        "--scheduler-policy",
        "--task-distribution",
    ] {
        assert!(help.contains(flag), "missing {flag}");
    }
    assert!(
        help.contains("KALLA_BIND_PORT"),
        "flags should name their environment variables"
    );
}

#[test]
fn environment_values_are_validated_like_flags() {
    let output = Command::new(BIN)
        .env("KALLA_BIND_PORT", "not-a-port")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("not-a-port") && stderr.contains("--bind-port"),
        "{stderr}"
    );
}

#[test]
fn a_rotation_policy_without_a_log_dir_is_refused() {
    let output = Command::new(BIN)
        .args(["--log-rotation-policy", "hourly", "--check-config"])
        .env_remove("KALLA_LOG_DIR")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("--log-dir"), "{stderr}");
}

/// `--log-dir` as Ballista's stock scheduler honours it: every line, down to the last one before
/// a SIGTERM ends the process, goes to `scheduler_<namespace>_<external host>_<port>` there, and
/// none to stdout.
#[test]
fn log_lines_go_to_the_log_dir_until_the_process_ends() {
    let dir = std::env::temp_dir().join(format!("kalla-scheduler-logs-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let mut scheduler = Command::new(BIN)
        .args([
            "--bind-host",
            "127.0.0.1",
            "--bind-port",
            "0",
            "--bind-health-port",
            "0",
        ])
        .arg("--plaintext")
        .args(["--log-rotation-policy", "never", "--log-dir"])
        .arg(&dir)
        .env_remove("RUST_LOG")
        .env_remove("KALLA_LOG_FORMAT")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = dir.join("scheduler_ballista_localhost_0");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !fs::read_to_string(&log).is_ok_and(|text| text.contains("kalla-scheduler starting")) {
        assert!(
            Instant::now() < deadline && scheduler.try_wait().unwrap().is_none(),
            "no start-up line in {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let terminated = Command::new("kill")
        .arg(scheduler.id().to_string())
        .status()
        .unwrap();
    assert!(terminated.success());
    let output = scheduler.wait_with_output().unwrap();

    assert!(output.status.success(), "{output:?}");
    assert!(
        output.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert!(
        output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.contains("kalla-scheduler stopping on SIGTERM"), "{text}");
    assert!(
        text.contains("ThreadId("),
        "--print-thread-info is on by default: {text}"
    );
    let files: Vec<_> = fs::read_dir(&dir).unwrap().collect();
    assert_eq!(files.len(), 1, "{files:?}");
    fs::remove_dir_all(&dir).unwrap();
}
