//! `examples/quickstart.sh`, the README's first command, where no Postgres answers at
//! `KALLA_DEMO_PG_URL`: it starts a throwaway Postgres of its own, runs the whole quick start on it
//! (its reconciliation job succeeds), and stops that server and its runner when it ends, leaving no
//! process behind. It takes about a minute.

use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kalla_e2e::cluster::bin_path;
use kalla_e2e::ports::free_port;

/// The dir holding the workspace binaries the test harness runs, for the script to use as built.
fn bin_dir() -> PathBuf {
    bin_path("kalla-runner")
        .parent()
        .expect("binary in a dir")
        .to_path_buf()
}

/// The processes whose command line names `path`, as `pid: command line`.
fn processes_naming(path: &Path) -> Vec<String> {
    let needle = path.display().to_string();
    std::fs::read_dir("/proc")
        .expect("read /proc")
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|entry| {
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline
                .contains(&needle)
                .then(|| format!("{}: {cmdline}", entry.file_name().to_string_lossy()))
        })
        .collect()
}

#[test]
fn quickstart_starts_a_throwaway_postgres_when_none_answers_and_leaves_nothing_behind() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart.sh");
    // A reserved free port: nothing answers there.
    let absent_url = format!("postgres://postgres@127.0.0.1:{}/postgres", free_port());
    let runner_port = free_port();
    // The script's TMPDIR, so its Postgres dir is made here; under root that server runs as the
    // postgres user, which must reach it.
    let tmp = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
    let data_dir = tmp.path().join("kalla");

    let started = Instant::now();
    let output = Command::new(&script)
        .env("KALLA_DEMO_PG_URL", &absent_url)
        .env("KALLA_QUICKSTART_PORT", runner_port.to_string())
        .env("KALLA_QUICKSTART_DATA_DIR", &data_dir)
        .env("KALLA_QUICKSTART_BIN_DIR", bin_dir())
        .env("TMPDIR", tmp.path())
        .env_remove("KEEP_RUNNING")
        .output()
        .expect("run examples/quickstart.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let shown = format!(
        "{} ({}, after {:?})\n--- stdout\n{stdout}\n--- stderr\n{}",
        script.display(),
        output.status,
        started.elapsed(),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{shown}");

    let announced = format!("no Postgres answers at {absent_url}; started a throwaway one at ");
    let throwaway_url = stdout
        .lines()
        .find_map(|line| line.strip_prefix(&announced))
        .and_then(|rest| rest.split_once(' '))
        .map(|(url, _)| url)
        .unwrap_or_else(|| panic!("no line starting {announced:?}:\n{shown}"));
    assert!(
        stdout.contains(&format!("$ kalla demo --postgres {throwaway_url}\n")),
        "the demo must run on the throwaway server:\n{shown}"
    );
    assert!(
        stdout
            .lines()
            .any(|line| line.starts_with("job ") && line.ends_with(" succeeded")),
        "no `job … succeeded` from `kalla run --wait`:\n{shown}"
    );
    let left_only = std::fs::read_to_string(data_dir.join("left_only.csv")).unwrap_or_default();
    assert!(
        left_only.lines().count() > 1,
        "the job's left_only rows were not written to {}/left_only.csv: {left_only:?}\n{shown}",
        data_dir.display()
    );

    // Stopped servers are gone by the time the script ends; allow only for a process's exit in flight.
    let deadline = Instant::now() + Duration::from_secs(5);
    let left = loop {
        let left = processes_naming(tmp.path());
        if left.is_empty() || Instant::now() > deadline {
            break left;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        left.is_empty(),
        "processes left naming {} (the throwaway Postgres's dir or the runner's data dir):\n{}\n{shown}",
        tmp.path().display(),
        left.join("\n")
    );
    let throwaway_port: u16 = throwaway_url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("no port in {throwaway_url}"));
    for (what, port) in [("throwaway Postgres", throwaway_port), ("runner", runner_port)] {
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "the {what} still answers on port {port}\n{shown}"
        );
    }
    let pg_dirs: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("read temp dir")
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("kalla-quickstart-pg."))
        .collect();
    assert!(
        pg_dirs.is_empty(),
        "the throwaway Postgres's dir was not removed: {pg_dirs:?}\n{shown}"
    );
}
