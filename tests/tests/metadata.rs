//! The metadata catalog on both backends: SQLite files and Postgres databases.

use kalla_core::SecretsKey;
use kalla_e2e::postgres::TestDatabase;
use std::time::Duration;

use kalla_runner::metadata::{
    AuditFilter, By, Carried, CarryCounts, CarryRun, CarryStart, Claim, DiscoveredTable, JobEnd, JobStatus,
    Kind, Lease, MetadataDb, MetadataError, NewAuditEntry, NewJob, NewRegistration, NewSchedule, NewToken,
    NewVersion, SecretRef, SeenItem, TableSync, TickRecord, after, ago,
};

/// Runs `check` with a freshly migrated SQLite database, then a Postgres one, and their URLs.
async fn each_backend(check: impl AsyncFn(MetadataDb, &str)) {
    let dir = tempfile::tempdir().unwrap();
    let sqlite_url = format!("sqlite://{}?mode=rwc", dir.path().join("kalla.db").display());
    check(
        MetadataDb::open(&sqlite_url).await.expect("sqlite metadata"),
        &sqlite_url,
    )
    .await;
    let database = TestDatabase::create().await;
    check(
        MetadataDb::open(&database.url).await.expect("postgres metadata"),
        &database.url,
    )
    .await;
}

#[tokio::test]
async fn named_secrets_outlive_what_uses_them_and_replaced_ones_do_not() {
    each_backend(async |db: MetadataDb, _: &str| {
        let key = SecretsKey::generate();
        let named_id = MetadataDb::new_secret_id();
        let named = db
            .create_named_secret(&named_id, "shared", &key.seal(&named_id, "pw"))
            .await
            .unwrap();
        assert_eq!((named.name.as_str(), named.used_by), ("shared", 0));
        let (other_id, other) = (MetadataDb::new_secret_id(), key.seal("x", "pw"));
        let taken = db.create_named_secret(&other_id, "shared", &other).await;
        assert!(matches!(taken, Err(MetadataError::Duplicate { .. })));
        let own_id = MetadataDb::new_secret_id();
        let source = |name, secret| NewRegistration {
            kind: Kind::Source,
            name,
            location: "postgres://app@h/db?table=t",
            engine: "postgres",
            secret: Some(secret),
        };
        let own = SecretRef::New {
            id: own_id.clone(),
            sealed: key.seal(&own_id, "pw"),
        };
        db.register(source("a", own)).await.unwrap();
        db.register(source("b", SecretRef::Named(named_id.clone())))
            .await
            .unwrap();
        assert_eq!(db.named_secret("shared").await.unwrap().used_by, 1);

        // Pointed at the named secret, "a" leaves its own secret unused: it goes.
        let moved = db
            .replace_secret(Kind::Source, By::Name("a"), SecretRef::Named(named_id.clone()))
            .await
            .unwrap();
        assert_eq!(moved.secret_id.as_deref(), Some(named_id.as_str()));
        assert!(matches!(
            db.secret(&own_id).await,
            Err(MetadataError::NotFound { .. })
        ));
        let in_use = db.delete_named_secret("shared").await.unwrap_err();
        assert!(
            matches!(in_use, MetadataError::InUse { users: 2, .. }),
            "{in_use}"
        );

        // A named secret stays when what used it goes, until it is deleted by name.
        for alias in ["a", "b"] {
            db.unregister(Kind::Source, By::Name(alias), Duration::ZERO)
                .await
                .unwrap();
        }
        assert_eq!(db.named_secrets().await.unwrap()[0].used_by, 0);
        let resealed = key.seal(&named_id, "pw2");
        let stale = db.secret(&named_id).await.unwrap();
        assert!(db.reseal_secret(&named_id, &stale, &resealed).await.unwrap());
        assert!(
            !db.reseal_secret(&named_id, &stale, &resealed).await.unwrap(),
            "changed meanwhile"
        );
        db.delete_named_secret("shared").await.unwrap();
        assert!(db.named_secrets().await.unwrap().is_empty());
        let missing = db.replace_secret(Kind::Source, By::Name("a"), SecretRef::Named(named_id.clone()));
        assert!(matches!(missing.await, Err(MetadataError::NotFound { .. })));
    })
    .await;
}

#[tokio::test]
async fn sources_and_their_secrets_live_and_die_together() {
    each_backend(async |db: MetadataDb, _: &str| {
        let key = SecretsKey::generate();
        let secret_id = MetadataDb::new_secret_id();
        let sealed = key.seal(&secret_id, "pw");
        let created = db
            .register(NewRegistration {
                kind: Kind::Source,
                name: "invoices",
                location: "postgres://app@h/db?table=t",
                engine: "postgres",
                secret: Some(SecretRef::New {
                    id: secret_id.clone(),
                    sealed: sealed.clone(),
                }),
            })
            .await
            .unwrap();
        assert!(
            created.id.starts_with("src_") && created.id.len() == 25,
            "{}",
            created.id
        );
        assert_eq!(
            db.registration(Kind::Source, By::Name("invoices")).await.unwrap(),
            created
        );
        assert_eq!(db.secret(&secret_id).await.unwrap(), sealed);
        db.register(NewRegistration {
            kind: Kind::Source,
            name: "payments",
            location: "file:///x.csv",
            engine: "csv",
            secret: None,
        })
        .await
        .unwrap();
        let aliases: Vec<String> = db
            .registrations(Kind::Source)
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(aliases, ["invoices", "payments"]);

        let duplicate = db
            .register(NewRegistration {
                kind: Kind::Source,
                name: "invoices",
                location: "file:///y.csv",
                engine: "csv",
                secret: Some(SecretRef::New {
                    id: MetadataDb::new_secret_id(),
                    sealed: sealed.clone(),
                }),
            })
            .await
            .unwrap_err();
        assert!(
            matches!(duplicate, MetadataError::Duplicate { .. }),
            "{duplicate}"
        );

        db.unregister(Kind::Source, By::Name("invoices"), Duration::ZERO)
            .await
            .unwrap();
        assert!(matches!(
            db.registration(Kind::Source, By::Name("invoices")).await,
            Err(MetadataError::NotFound { .. })
        ));
        assert!(matches!(
            db.secret(&secret_id).await,
            Err(MetadataError::NotFound { .. })
        ));
        assert!(matches!(
            db.unregister(Kind::Source, By::Name("invoices"), Duration::ZERO)
                .await,
            Err(MetadataError::NotFound { .. })
        ));
        let secrets: i64 = sqlx::query_scalar("SELECT count(*) FROM secrets")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(
            secrets, 0,
            "neither the deleted source's nor the rejected duplicate's secret remains"
        );
    })
    .await;
}

#[tokio::test]
async fn an_edited_migration_is_refused_by_name() {
    each_backend(async |db: MetadataDb, url: &str| {
        sqlx::query("UPDATE _sqlx_migrations SET checksum = $1 WHERE version = 1")
            .bind(vec![0u8; 48])
            .execute(db.pool())
            .await
            .unwrap();
        let reopened = MetadataDb::open(url).await.unwrap_err().to_string();
        assert!(
            reopened.contains("migration 1 (sources and secrets) was edited"),
            "{reopened}"
        );
    })
    .await;
}

/// Publishes `version` at `url` under `lease`; whether the table took it.
async fn publish(db: &MetadataDb, table_id: &str, lease: &str, version: &str, url: &str, rows: i64) -> bool {
    let version = NewVersion { version, url, rows };
    db.publish_version(table_id, lease, version, Duration::ZERO)
        .await
        .unwrap()
}

fn discovered(schema: &str, name: &str, columns: &str) -> DiscoveredTable {
    DiscoveredTable {
        schema_name: schema.into(),
        table_name: name.into(),
        arrow_schema_json: columns.into(),
    }
}

/// Connections, their tables and cache versions: ids are `conn_…`/`tbl_…` text, discovery syncs
/// tables, a version is published only under its lease, and replaced versions are queued.
#[tokio::test]
async fn connections_tables_and_cache_versions() {
    each_backend(async |db: MetadataDb, _: &str| {
        let key = SecretsKey::generate();
        let secret_id = MetadataDb::new_secret_id();
        let connection = db
            .register(NewRegistration {
                kind: Kind::Connection,
                name: "shop",
                engine: "postgres",
                location: "postgres://app@h/db",
                secret: Some(SecretRef::New {
                    id: secret_id.clone(),
                    sealed: key.seal(&secret_id, "pw"),
                }),
            })
            .await
            .unwrap();
        assert!(
            connection.id.starts_with("conn_") && connection.id.len() == 26,
            "{}",
            connection.id
        );
        let duplicate = db
            .register(NewRegistration {
                kind: Kind::Connection,
                name: "shop",
                engine: "postgres",
                location: "postgres://h/other",
                secret: None,
            })
            .await;
        assert!(
            matches!(duplicate, Err(MetadataError::Duplicate { .. })),
            "{duplicate:?}"
        );

        let grace = Duration::ZERO;
        let sync = db
            .sync_tables(
                &connection.id,
                &[
                    discovered("public", "orders", "[1]"),
                    discovered("public", "items", "[2]"),
                ],
                grace,
            )
            .await
            .unwrap();
        assert_eq!(
            sync,
            TableSync {
                added: 2,
                ..TableSync::default()
            }
        );
        let orders = db.table(&connection.id, "public", "orders").await.unwrap();
        assert!(orders.id.starts_with("tbl_"), "{}", orders.id);
        assert_eq!(orders.cache_url, None);

        // Only the lease holder publishes; a second refresh cannot take the lease meanwhile.
        assert!(
            db.take_refresh_lease(&orders.id, "lease_a", Duration::from_secs(60))
                .await
                .unwrap()
        );
        assert!(
            !db.take_refresh_lease(&orders.id, "lease_b", Duration::from_secs(60))
                .await
                .unwrap()
        );
        assert!(!publish(&db, &orders.id, "lease_b", "v1", "file:///c/v1/", 10).await);
        assert!(publish(&db, &orders.id, "lease_a", "v1", "file:///c/v1/", 10).await);
        let orders = db.table(&connection.id, "public", "orders").await.unwrap();
        assert_eq!(
            (orders.cache_version.as_deref(), orders.row_count),
            (Some("v1"), Some(10))
        );
        assert!(orders.last_sync.is_some());
        assert!(db.due_deletions(10).await.unwrap().is_empty());

        assert!(
            db.take_refresh_lease(&orders.id, "lease_c", Duration::from_secs(60))
                .await
                .unwrap()
        );
        assert!(publish(&db, &orders.id, "lease_c", "v2", "file:///c/v2/", 11).await);
        let due = db.due_deletions(10).await.unwrap();
        assert_eq!(
            due.iter().map(|d| d.url.as_str()).collect::<Vec<_>>(),
            ["file:///c/v1/"]
        );
        db.deletion_failed(&due[0].id, "disk on fire", Duration::from_secs(3600))
            .await
            .unwrap();
        assert!(
            db.due_deletions(10).await.unwrap().is_empty(),
            "retried later, not now"
        );
        assert_eq!(db.pending_deletion_count().await.unwrap(), 1);

        // A released lease can be taken again; an expired one too.
        assert!(
            db.take_refresh_lease(&orders.id, "lease_d", Duration::ZERO)
                .await
                .unwrap()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(
            db.take_refresh_lease(&orders.id, "lease_e", Duration::from_secs(60))
                .await
                .unwrap()
        );
        db.release_refresh_lease(&orders.id, "lease_e").await.unwrap();

        // Discovery: a changed table is updated, a vanished one removed with its cache queued.
        let sync = db
            .sync_tables(&connection.id, &[discovered("public", "items", "[3]")], grace)
            .await
            .unwrap();
        assert_eq!(
            sync,
            TableSync {
                changed: 1,
                removed: 1,
                ..TableSync::default()
            }
        );
        assert!(matches!(
            db.table(&connection.id, "public", "orders").await,
            Err(MetadataError::NotFound { .. })
        ));
        assert_eq!(db.pending_deletion_count().await.unwrap(), 2);

        let items = db.table(&connection.id, "public", "items").await.unwrap();
        assert!(
            db.take_refresh_lease(&items.id, "lease_f", Duration::from_secs(60))
                .await
                .unwrap()
        );
        assert!(publish(&db, &items.id, "lease_f", "v1", "file:///i/v1/", 1).await);
        assert!(db.purge_table_cache(&items.id, grace).await.unwrap());
        assert!(
            !db.purge_table_cache(&items.id, grace).await.unwrap(),
            "nothing left to purge"
        );
        assert_eq!(db.pending_deletion_count().await.unwrap(), 3);

        assert!(
            db.take_refresh_lease(&items.id, "lease_g", Duration::from_secs(60))
                .await
                .unwrap()
        );
        assert!(publish(&db, &items.id, "lease_g", "v2", "file:///i/v2/", 1).await);
        db.unregister(Kind::Connection, By::Id(&connection.id), grace)
            .await
            .unwrap();
        assert_eq!(
            db.pending_deletion_count().await.unwrap(),
            4,
            "the served version is queued too"
        );
        assert!(db.list_tables(Some(&connection.id)).await.unwrap().is_empty());
        assert!(matches!(
            db.secret(&secret_id).await,
            Err(MetadataError::NotFound { .. })
        ));
        assert!(matches!(
            db.unregister(Kind::Connection, By::Id(&connection.id), grace)
                .await,
            Err(MetadataError::NotFound { .. })
        ));
    })
    .await;
}

/// The connection-id invariant: the schema and the code never give a connection id an integer type.
#[test]
fn connection_ids_are_never_integers() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for backend in ["sqlite", "postgres"] {
        for entry in std::fs::read_dir(root.join("migrations").join(backend)).unwrap() {
            let path = entry.unwrap().path();
            let sql = std::fs::read_to_string(&path).unwrap().to_lowercase();
            let mut table = String::new();
            for line in sql.lines().map(|l| l.split("--").next().unwrap().trim()) {
                if let Some(rest) = line.strip_prefix("create table ") {
                    table = rest.split_whitespace().next().unwrap_or_default().to_string();
                }
                let mut words = line.split_whitespace();
                let (Some(column), Some(column_type)) = (words.next(), words.next()) else {
                    continue;
                };
                if column == "connection_id" || (table == "connections" && column == "id") {
                    assert_eq!(
                        column_type.trim_end_matches(','),
                        "text",
                        "{}: {line}",
                        path.display()
                    );
                }
            }
        }
    }
    let integer = integer_connection_ids(&root);
    assert!(integer.is_empty(), "integer connection ids in code: {integer:?}");
}

/// `connection_id: <integer type>` anywhere in the workspace's Rust sources.
fn integer_connection_ids(root: &std::path::Path) -> Vec<String> {
    const INTEGERS: [&str; 8] = ["i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64"];
    let mut found = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            if path.is_dir() && !name.starts_with('.') && name != "target" {
                pending.push(path);
            } else if name.ends_with(".rs") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                for line in text.lines() {
                    let compact: String = line.split_whitespace().collect();
                    if INTEGERS.iter().any(|t| {
                        compact.contains(&format!("connection_id:{t}"))
                            || compact.contains(&format!("connection_id:Option<{t}>"))
                    }) {
                        found.push(format!("{}: {}", path.display(), line.trim()));
                    }
                }
            }
        }
    }
    found
}

/// A lease of runner `owner` for `secs` seconds from now (negative: one that has passed).
fn lease_for(owner: &str, secs: i64) -> (String, String) {
    let delay = Duration::from_secs(secs.unsigned_abs());
    let until = if secs < 0 { ago(delay) } else { after(delay) };
    (owner.to_string(), until)
}

fn lease<'a>((owner, until): &'a (String, String)) -> Lease<'a> {
    Lease { owner, until }
}

fn new_job(id: &str) -> NewJob<'_> {
    NewJob {
        id,
        job_type: "recon",
        recipe_id: None,
        spec_json: "{}",
        inputs_json: None,
        callback_url: None,
    }
}

#[tokio::test]
async fn jobs_record_their_attempts_ballista_jobs_and_passes() {
    each_backend(async |db: MetadataDb, _: &str| {
        let a = lease_for("runner_a", 60);
        let job = db.insert_job(new_job("job_a"), lease(&a)).await.unwrap();
        assert_eq!(
            (
                job.status,
                job.attempts,
                job.passes_json.as_str(),
                job.owner.as_deref()
            ),
            (JobStatus::Queued, 0, "[]", Some("runner_a"))
        );
        let b = lease_for("runner_b", 60);
        assert!(
            !db.start_job("job_a", lease(&b)).await.unwrap(),
            "only the runner holding a job starts it"
        );
        assert!(db.start_job("job_a", lease(&a)).await.unwrap());
        assert!(
            !db.start_job("job_a", lease(&a)).await.unwrap(),
            "only a queued job starts"
        );

        db.add_ballista_job("job_a", "B1").await.unwrap();
        db.add_ballista_job("job_a", "B2").await.unwrap();
        db.set_job_passes("job_a", r#"[{"ballista_job_id":"B1","written":[]}]"#)
            .await
            .unwrap();
        let job = db.job("job_a").await.unwrap();
        assert_eq!(job.ballista_job_ids, ["B1", "B2"]);
        assert!(job.passes_json.contains("B1"), "{}", job.passes_json);
        assert_eq!((job.status, job.attempts), (JobStatus::Running, 1));

        // Its runner lets it go; another takes it over, puts it back in the queue and starts it;
        // it keeps what it recorded.
        assert_eq!(db.release_leases("runner_a").await.unwrap(), 1);
        let unheld = db.unheld_jobs().await.unwrap();
        assert_eq!(unheld.len(), 1);
        assert!(db.take_over_job("job_a", lease(&b)).await.unwrap());
        db.requeue_job("job_a").await.unwrap();
        let job = db.job("job_a").await.unwrap();
        assert_eq!(
            (job.status, job.owner.as_deref()),
            (JobStatus::Queued, Some("runner_b"))
        );
        assert_eq!(job.ballista_job_ids, ["B1", "B2"]);
        assert!(db.start_job("job_a", lease(&b)).await.unwrap());
        assert_eq!(db.job("job_a").await.unwrap().attempts, 2);

        let end = |owner| JobEnd {
            owner,
            status: JobStatus::Succeeded,
            counts_json: Some(r#"{"matched":1}"#),
            result_url: Some("file:///r/"),
            error: None,
        };
        assert!(
            !db.finish_job("job_a", end(Some("runner_a"))).await.unwrap(),
            "a runner that no longer holds a job cannot end it"
        );
        assert!(db.finish_job("job_a", end(Some("runner_b"))).await.unwrap());
        assert!(
            !db.finish_job("job_a", end(None)).await.unwrap(),
            "a job ends once"
        );
        assert!(db.unheld_jobs().await.unwrap().is_empty());
        assert!(
            db.renew_leases(lease(&b)).await.unwrap().is_empty(),
            "a finished job is not held"
        );
    })
    .await;
}

/// A job is taken over only once its lease has passed, and by one of the runners that try at once;
/// renewing a lease returns the jobs its runner still holds.
#[tokio::test]
async fn a_job_is_taken_over_once_its_lease_passes_by_one_runner() {
    each_backend(async |db: MetadataDb, _: &str| {
        let a = lease_for("runner_a", 60);
        db.insert_job(new_job("job_held"), lease(&a)).await.unwrap();
        db.insert_job(new_job("job_other"), lease(&a)).await.unwrap();
        assert!(db.unheld_jobs().await.unwrap().is_empty());
        let b = lease_for("runner_b", 60);
        assert!(
            !db.take_over_job("job_held", lease(&b)).await.unwrap(),
            "the lease holds"
        );

        // runner_a stops renewing: its lease passes.
        let passed = lease_for("runner_a", -1);
        let mut held = db.renew_leases(lease(&passed)).await.unwrap();
        held.sort();
        assert_eq!(held, ["job_held", "job_other"]);
        let unheld: Vec<String> = db
            .unheld_jobs()
            .await
            .unwrap()
            .into_iter()
            .map(|j| j.id)
            .collect();
        assert_eq!(unheld, ["job_held", "job_other"]);

        let runners: Vec<_> = (0..8).map(|i| lease_for(&format!("runner_{i}"), 60)).collect();
        let tries = runners
            .iter()
            .map(|runner| db.take_over_job("job_held", lease(runner)));
        let won = futures::future::join_all(tries)
            .await
            .into_iter()
            .map(Result::unwrap)
            .filter(|won| *won)
            .count();
        assert_eq!(won, 1, "exactly one runner takes the job over");
        let owner = db.job("job_held").await.unwrap().owner.unwrap();
        assert!(owner.starts_with("runner_") && owner != "runner_a", "{owner}");

        // runner_a, renewing late, learns which job it still holds.
        assert_eq!(db.renew_leases(lease(&a)).await.unwrap(), ["job_other"]);
        assert!(db.unheld_jobs().await.unwrap().is_empty());
        assert_eq!(db.release_all_leases().await.unwrap(), 2);
        assert_eq!(db.unheld_jobs().await.unwrap().len(), 2);
    })
    .await;
}

fn seen(side: &str, key: &str) -> SeenItem {
    SeenItem {
        side: side.into(),
        key_json: format!("[\"{key}\"]"),
        rows: 1,
    }
}

/// A carry_forward recipe's runs move its open items forward one at a time: each run's items
/// are opened, kept, or closed as matched or referred; a run overtaken after it read the items
/// records nothing, one recorded before records nothing again; resolving needs an open item.
#[tokio::test]
async fn open_items_move_forward_one_run_at_a_time() {
    each_backend(async |db: MetadataDb, _: &str| {
        let none = std::collections::HashSet::new();
        let first = [seen("left", "A"), seen("left", "B"), seen("right", "C")];
        let run = |job: &'static str, date: &'static str, read: Option<&'static str>| CarryRun {
            recipe_id: "rcp_a",
            job_id: job,
            run_date: date,
            read,
            open: &[],
            matched: &none,
        };
        let start = |job: &'static str| {
            let db = &db;
            async move { db.begin_carry("rcp_a", job).await.unwrap() }
        };
        let fresh = CarryStart {
            read: None,
            recorded: false,
        };
        assert_eq!(start("job_1").await, fresh);
        assert_eq!(start("job_x").await, fresh);
        let recorded = db
            .record_carry(CarryRun {
                open: &first,
                ..run("job_1", "2026-10-01", None)
            })
            .await
            .unwrap();
        assert_eq!(recorded, Carried::Recorded);
        assert_eq!(
            db.carry_counts("rcp_a", "job_1").await.unwrap(),
            CarryCounts {
                opened: 3,
                ..Default::default()
            }
        );
        // Another run that read nothing either is overtaken; job_1 again records nothing twice.
        let late = db.record_carry(run("job_x", "2026-10-01", None)).await.unwrap();
        assert_eq!(late, Carried::Overtaken { by: "job_1".into() });
        let again = db
            .record_carry(CarryRun {
                open: &first,
                ..run("job_1", "2026-10-01", None)
            })
            .await
            .unwrap();
        assert_eq!(again, Carried::AlreadyRecorded);
        assert_eq!(
            start("job_1").await,
            CarryStart {
                read: None,
                recorded: true
            },
            "a run started again knows it recorded"
        );
        let after_first = CarryStart {
            read: Some("job_1".into()),
            recorded: false,
        };
        assert_eq!(start("job_2").await, after_first);
        assert_eq!(start("job_y").await, after_first);

        // job_2 keeps B open, matches A and leaves C to another output.
        let matched = std::collections::HashSet::from([("left".to_string(), "[\"A\"]".to_string())]);
        let second = [seen("left", "B"), seen("left", "D")];
        let recorded = db
            .record_carry(CarryRun {
                open: &second,
                matched: &matched,
                ..run("job_2", "2026-10-09", Some("job_1"))
            })
            .await
            .unwrap();
        assert_eq!(recorded, Carried::Recorded);
        assert_eq!(
            db.carry_counts("rcp_a", "job_2").await.unwrap(),
            CarryCounts {
                opened: 1,
                still_open: 1,
                matched: 1,
                referred: 1
            }
        );
        let stale = db
            .record_carry(run("job_y", "2026-10-09", Some("job_1")))
            .await
            .unwrap();
        assert_eq!(stale, Carried::Overtaken { by: "job_2".into() });
        assert_eq!(
            start("job_y").await,
            after_first,
            "a run reads what it read at first, however often it starts"
        );
        let carried = db.carried_forward("rcp_a").await.unwrap().unwrap();
        assert_eq!(
            (carried.job_id.as_str(), carried.run_date.as_str()),
            ("job_2", "2026-10-09")
        );
        assert_eq!(
            db.open_items_by_first_seen("rcp_a").await.unwrap(),
            std::collections::BTreeMap::from([("2026-10-01".to_string(), 1), ("2026-10-09".to_string(), 1)])
        );
        let open = db
            .open_items("rcp_a", Some("open"), None, None, 10)
            .await
            .unwrap();
        let b = open.iter().find(|item| item.key_json == "[\"B\"]").unwrap();
        assert_eq!((b.runs_seen, b.last_job.as_str()), (2, "job_2"));
        let closed = db
            .open_items("rcp_a", Some("closed"), Some("left"), None, 10)
            .await
            .unwrap();
        assert_eq!(closed.len(), 1, "{closed:?}");
        assert_eq!(
            (closed[0].state.as_str(), closed[0].closed_by_job.as_deref()),
            ("matched", Some("job_2"))
        );
        let page = db.open_items("rcp_a", None, None, None, 2).await.unwrap();
        let rest = db
            .open_items("rcp_a", None, None, Some(&page[1].id), 10)
            .await
            .unwrap();
        assert_eq!((page.len(), rest.len()), (2, 2), "four items, paged by id");

        let resolved = db
            .resolve_open_item("rcp_a", &b.id, "written off", Some("alice"))
            .await
            .unwrap()
            .expect("B was open");
        assert_eq!(resolved.state, "resolved");
        assert!(resolved.history_json.contains("written off") && resolved.history_json.contains("alice"));
        assert_eq!(
            db.resolve_open_item("rcp_a", &b.id, "twice", None).await.unwrap(),
            None,
            "a closed item is not resolved again"
        );
        assert_eq!(
            db.resolved_items("rcp_a", "job_2").await.unwrap(),
            [("left".to_string(), "[\"B\"]".to_string())]
        );
        assert!(matches!(
            db.resolve_open_item("rcp_b", &b.id, "elsewhere", None).await,
            Err(MetadataError::NotFound { .. })
        ));

        // A run that read B before it was resolved still carries it: B stays resolved, and no
        // new item opens for its key.
        start("job_3").await;
        let third = [seen("left", "B"), seen("left", "D")];
        let recorded = db
            .record_carry(CarryRun {
                open: &third,
                ..run("job_3", "2026-10-10", Some("job_2"))
            })
            .await
            .unwrap();
        assert_eq!(recorded, Carried::Recorded);
        let items = db
            .open_items("rcp_a", None, Some("left"), None, 10)
            .await
            .unwrap();
        let keyed_b: Vec<&str> = items
            .iter()
            .filter(|item| item.key_json == "[\"B\"]")
            .map(|item| item.state.as_str())
            .collect();
        assert_eq!(keyed_b, ["resolved"], "{items:?}");
    })
    .await;
}

/// Schedules by id or name, paused and resumed (a resume moves where ticks count from), and
/// their ticks: recorded once however many runners record one, newest first, gone with the
/// schedule.
#[tokio::test]
async fn schedules_record_each_tick_once() {
    each_backend(async |db: MetadataDb, _: &str| {
        let made = db
            .insert_schedule(NewSchedule {
                name: "nightly",
                recipe_id: "rcp_a",
                cron: None,
                every_secs: Some(5),
                timezone: "UTC",
                params_json: "{}",
                callback_url: None,
            })
            .await
            .unwrap();
        assert_eq!(db.schedule("nightly").await.unwrap(), made);
        let twin = NewSchedule {
            name: "nightly",
            recipe_id: "rcp_b",
            cron: Some("0 6 * * *"),
            every_secs: None,
            timezone: "UTC",
            params_json: "{}",
            callback_url: None,
        };
        assert!(matches!(
            db.insert_schedule(twin).await,
            Err(MetadataError::Duplicate { .. })
        ));

        assert!(db.set_schedule_paused(&made.id, true).await.unwrap().paused);
        tokio::time::sleep(Duration::from_millis(5)).await;
        let resumed = db.set_schedule_paused(&made.id, false).await.unwrap();
        assert!(!resumed.paused);
        assert!(
            resumed.ticks_from > made.ticks_from,
            "ticks count from the resume"
        );

        let last_tick = || async {
            let active = db.active_schedules().await.unwrap();
            let (_, last) = active.into_iter().find(|(s, _)| s.id == made.id).unwrap();
            last
        };
        assert_eq!(last_tick().await, None);
        let tick = |at: &str, job: &str| TickRecord {
            tick_at: at.into(),
            job_id: Some(job.into()),
            missed: 0,
            error: None,
        };
        for _ in 0..3 {
            db.record_tick(&made.id, &tick("2026-12-01T00:00:05.000000Z", "job_1"))
                .await
                .unwrap();
        }
        db.record_tick(&made.id, &tick("2026-12-01T00:00:10.000000Z", "job_2"))
            .await
            .unwrap();
        let ticks = db.ticks(&made.id, 10).await.unwrap();
        assert_eq!(
            ticks
                .iter()
                .map(|t| t.job_id.as_deref().unwrap())
                .collect::<Vec<_>>(),
            ["job_2", "job_1"]
        );
        assert_eq!(last_tick().await.as_deref(), Some("2026-12-01T00:00:10.000000Z"));
        db.set_schedule_paused(&made.id, true).await.unwrap();
        assert!(
            db.active_schedules().await.unwrap().is_empty(),
            "a paused schedule is not active"
        );
        db.delete_schedule(&made.id).await.unwrap();
        assert!(db.ticks(&made.id, 10).await.unwrap().is_empty());
        assert!(matches!(
            db.schedule(&made.id).await,
            Err(MetadataError::NotFound { .. })
        ));
    })
    .await;
}

/// A metadata DB made before engines were open (migrations 1–4), with a connection, its table and
/// a source, keeps every row when migration 5 drops the `source_type` checks, on both backends;
/// afterwards any engine's name is stored.
#[tokio::test]
async fn opening_engine_names_keeps_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite_url = format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display());
    let database = TestDatabase::create().await;
    sqlx::any::install_default_drivers();
    for (url, backend) in [
        (sqlite_url.as_str(), "sqlite"),
        (database.url.as_str(), "postgres"),
    ] {
        let pool = sqlx::AnyPool::connect(url).await.unwrap();
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../migrations")
            .join(backend);
        let mut before = sqlx::migrate::Migrator::new(path).await.unwrap();
        let older: Vec<_> = before
            .migrations
            .iter()
            .filter(|m| m.version < 5)
            .cloned()
            .collect();
        assert_eq!(older.len(), 4, "{backend}");
        before.migrations = older.into();
        before.run(&pool).await.unwrap();
        sqlx::raw_sql(
            "INSERT INTO connections VALUES ('conn_old', 'shop', 'postgres', '{}', NULL, 't', 't');
             INSERT INTO tables (id, connection_id, schema_name, table_name, arrow_schema_json, discovered_at)
                 VALUES ('tbl_old', 'conn_old', 'public', 'orders', '[]', 't');
             INSERT INTO sources VALUES ('src_old', 'inv', 'file:///x.csv', 'csv', NULL, 't', 't')",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;

        let db = MetadataDb::open(url).await.expect(backend);
        let tables = db.list_tables(None).await.unwrap();
        assert_eq!(tables.len(), 1, "{backend}: the connection's table survives");
        assert_eq!(tables[0].connection_id, "conn_old", "{backend}");
        assert_eq!(
            db.registration(Kind::Source, By::Name("inv"))
                .await
                .unwrap()
                .engine,
            "csv",
            "{backend}"
        );
        db.register(NewRegistration {
            kind: Kind::Source,
            name: "ledger",
            location: "toy://ledger/invoices",
            engine: "toy",
            secret: None,
        })
        .await
        .expect(backend);
        db.register(NewRegistration {
            kind: Kind::Connection,
            name: "books",
            engine: "toy",
            location: "toy://books",
            secret: None,
        })
        .await
        .expect(backend);
        db.unregister(Kind::Connection, By::Id("conn_old"), Duration::from_secs(60))
            .await
            .expect(backend);
        assert!(
            db.list_tables(None).await.unwrap().is_empty(),
            "{backend}: tables still cascade"
        );
    }
}

/// Tokens and the audit log on both backends: hashes found, revocation kept, entries filtered and
/// paged newest first.
#[tokio::test]
async fn tokens_and_the_audit_log() {
    each_backend(async |db: MetadataDb, backend: &str| {
        let token = db
            .insert_token(NewToken {
                name: "ops",
                role: "operator",
                value_sha256: "ab12",
                created_by: "bootstrap",
                expires_in: Some(Duration::from_secs(60)),
            })
            .await
            .expect(backend);
        assert!(token.expires_at.is_some(), "{backend}");
        let found = db.token_by_hash("ab12").await.unwrap().expect(backend);
        assert_eq!(found.name, "ops", "{backend}");
        assert!(db.token_by_hash("cd34").await.unwrap().is_none(), "{backend}");
        assert!(
            db.revoke_token("ops").await.unwrap().revoked_at.is_some(),
            "{backend}"
        );
        assert!(matches!(
            db.revoke_token("nobody").await,
            Err(MetadataError::NotFound { .. })
        ));

        for (token_name, outcome) in [
            (Some("ops"), "succeeded"),
            (None, "refused"),
            (Some("ops"), "failed"),
        ] {
            db.record_audit(NewAuditEntry {
                token_name,
                method: "POST",
                route: "/api/jobs",
                path: "/api/jobs",
                resource: None,
                status: 202,
                outcome,
            })
            .await
            .expect(backend);
        }
        let all = AuditFilter {
            limit: 10,
            ..AuditFilter::default()
        };
        let entries = db.audit_entries(&all).await.expect(backend);
        let outcomes: Vec<&str> = entries.iter().map(|e| e.outcome.as_str()).collect();
        assert_eq!(
            outcomes,
            ["failed", "refused", "succeeded"],
            "{backend}: newest first"
        );
        let by_ops = AuditFilter {
            token_name: Some("ops"),
            limit: 10,
            ..AuditFilter::default()
        };
        assert_eq!(db.audit_entries(&by_ops).await.unwrap().len(), 2, "{backend}");
        let after_first = AuditFilter {
            before: Some(&entries[0].id),
            limit: 1,
            ..AuditFilter::default()
        };
        let page = db.audit_entries(&after_first).await.expect(backend);
        assert_eq!(page.len(), 1, "{backend}");
        assert_eq!(
            page[0].id, entries[1].id,
            "{backend}: the next page starts after `before`"
        );
    })
    .await;
}

/// Idempotency keys: the first claim wins; the same request then waits for, or gets, what the
/// first made; another request under the key is told apart; a failed request frees its key.
#[tokio::test]
async fn an_idempotency_key_is_claimed_once_and_bound_to_its_request() {
    each_backend(async |db, backend| {
        let claim = |key: &'static str, request: &'static str| {
            let db = db.clone();
            async move {
                db.claim_idempotency_key("POST /api/jobs", key, request)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(claim("k1", "sha-a").await, Claim::Claimed, "{backend}");
        assert_eq!(claim("k1", "sha-a").await, Claim::InFlight, "{backend}");
        assert_eq!(claim("k1", "sha-b").await, Claim::OtherRequest, "{backend}");
        db.settle_idempotency_key("POST /api/jobs", "k1", "job_1")
            .await
            .unwrap();
        assert_eq!(
            claim("k1", "sha-a").await,
            Claim::Made("job_1".into()),
            "{backend}"
        );
        // Keys are per route.
        let other_route = db
            .claim_idempotency_key("POST /api/schedules", "k1", "sha-b")
            .await
            .unwrap();
        assert_eq!(other_route, Claim::Claimed, "{backend}");

        assert_eq!(claim("k2", "sha-a").await, Claim::Claimed, "{backend}");
        db.release_idempotency_key("POST /api/jobs", "k2").await.unwrap();
        assert_eq!(claim("k2", "sha-b").await, Claim::Claimed, "{backend}");
        // A settled key is never released.
        db.release_idempotency_key("POST /api/jobs", "k1").await.unwrap();
        assert_eq!(
            claim("k1", "sha-a").await,
            Claim::Made("job_1".into()),
            "{backend}"
        );
    })
    .await;
}
