//! The `kalla` binary's argument handling. Declaring this test also makes `cargo test --workspace`
//! build the binary, which the end-to-end tests in `tests/` drive.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_kalla");

#[test]
fn help_lists_the_subcommands() {
    let output = Command::new(BIN).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for subcommand in ["query", "demo"] {
        assert!(help.contains(subcommand), "missing {subcommand}: {help}");
    }
}

#[test]
fn a_table_without_a_name_is_rejected_before_anything_runs() {
    let output = Command::new(BIN)
        .args(["query", "--table", "postgres://u@h/db?table=t", "SELECT 1"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("NAME=URI"), "{stderr}");
}
