//! The scheduler binary accepts Ballista's stock flags and their `KALLA_*` variables.

use std::process::Command;

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
