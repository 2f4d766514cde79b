//! The executor binary accepts Ballista's stock flags, their `KALLA_*` variables, and refuses
//! to start without a valid cluster key.

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

#[test]
fn refuses_to_start_without_a_valid_cluster_key() {
    for (key, expected) in [
        (None, "KALLA_SECRET_KEY is not set"),
        (Some("c2hvcnQ="), "exactly 32 bytes"),
    ] {
        let mut command = Command::new(BIN);
        command.env_remove("KALLA_SECRET_KEY").args([
            "--scheduler-port",
            "1",
            "--scheduler-connect-timeout-seconds",
            "0",
        ]);
        if let Some(key) = key {
            command.env("KALLA_SECRET_KEY", key);
        }
        let output = command.output().unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(stderr.contains(expected), "{stderr}");
    }
}
