//! The runner reaches sources only through `kalla_core::source`: no file of `runner/src` names
//! an engine's module, one of its types, or matches on an engine's name. (The metadata DB's
//! own backend, `src/metadata/`, may be Postgres: it is not a source.)

use std::path::{Path, PathBuf};

/// What naming an engine looks like, and why each is refused.
const ENGINE_NAMES: &[(&str, &str)] = &[
    ("kalla_core::postgres", "an engine's module"),
    ("kalla_core::files", "an engine's module"),
    ("preview::postgres", "an engine's previews"),
    ("preview::files", "an engine's previews"),
    ("sqlx::postgres", "a database driver"),
    ("PostgresEngine", "an engine type"),
    ("FileEngine", "an engine type"),
    ("FileFormat", "an engine type"),
    ("SourceUri", "an engine's URI type"),
    ("\"postgres\"", "an engine's name"),
    ("\"postgresql\"", "an engine's name"),
];

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if !path.ends_with("metadata") {
                rust_files(&path, found);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// `Pg` followed by an upper-case letter starts a Postgres type (`PgTableProvider`, `PgPool`).
fn names_a_postgres_type(line: &str) -> bool {
    line.match_indices("Pg").any(|(at, _)| {
        let before = line[..at].chars().next_back();
        let after = line[at + 2..].chars().next();
        !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
            && after.is_some_and(|c| c.is_ascii_uppercase())
    })
}

#[test]
fn runner_sources_name_no_engine() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 20, "found only {files:?}");
    let mut offences = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (number, line) in text.lines().enumerate() {
            let at = format!("{}:{}", file.strip_prefix(&src).unwrap().display(), number + 1);
            for (pattern, what) in ENGINE_NAMES {
                if line.contains(pattern) {
                    offences.push(format!("{at}: {what} ({pattern}): {}", line.trim()));
                }
            }
            if names_a_postgres_type(line) {
                offences.push(format!("{at}: a Postgres type: {}", line.trim()));
            }
        }
    }
    assert!(
        offences.is_empty(),
        "the runner names engines:\n{}",
        offences.join("\n")
    );
}

#[test]
fn the_check_sees_what_it_looks_for() {
    assert!(names_a_postgres_type("use x::PgTableProvider;"));
    assert!(names_a_postgres_type("let pool: PgPool"));
    assert!(!names_a_postgres_type("let upgrade = Pgx;"));
    assert!(!names_a_postgres_type("fn pg_thing(UpgReq)"));
}
