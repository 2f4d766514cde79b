//! The distributed Postgres scan through a real cluster: `kalla-scheduler` and two
//! `kalla-executor` processes reading a 200,000-row table of every mapped type.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kalla_core::postgres::ScanOptions;
use kalla_e2e::cluster::{Cluster, ClusterOptions, kalla_cli};
use kalla_e2e::postgres::TestDatabase;
use kalla_e2e::values::{df_row, same};

const ROWS: i64 = 200_000;
const POOL_CAP: u32 = 2;

const CREATE: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE all_types (
  id            int8 PRIMARY KEY,
  c_int2        int2,
  c_int4        int4,
  c_int8        int8,
  c_float4      float4,
  c_float8      float8,
  c_numeric     numeric(15,2),
  c_numeric_any numeric,
  c_bool        bool,
  c_text        text,
  c_varchar     varchar(20),
  c_char        char(5),
  c_name        name,
  c_date        date,
  c_ts          timestamp,
  c_tstz        timestamptz,
  c_time        time,
  c_interval    interval,
  c_uuid        uuid,
  c_json        json,
  c_jsonb       jsonb,
  c_bytea       bytea,
  c_enum        mood,
  c_int_array   int4[],
  c_text_array  text[],
  c_inet        inet
);
INSERT INTO all_types
SELECT g,
  CASE WHEN g % 11 = 0 THEN NULL ELSE (g % 30000 - 15000)::int2 END,
  CASE WHEN g % 13 = 0 THEN NULL ELSE (g * 7919 % 2000000 - 1000000)::int4 END,
  CASE WHEN g % 17 = 0 THEN NULL ELSE g * 1000003 - 4000000000 END,
  CASE WHEN g % 19 = 0 THEN NULL ELSE (g % 1000) / 8.0 END,
  CASE WHEN g % 23 = 0 THEN NULL ELSE g / 64.0 - 1000 END,
  CASE WHEN g % 29 = 0 THEN NULL ELSE ((g * 37 % 10000000) - 5000000) / 100.0 END,
  CASE WHEN g % 31 = 0 THEN NULL ELSE g / 1024.0 END,
  CASE WHEN g % 37 = 0 THEN NULL ELSE g % 3 = 0 END,
  CASE WHEN g % 41 = 0 THEN NULL ELSE 'text-' || md5(g::text) || CASE WHEN g % 5 = 0 THEN ' ünïcødé ✓' ELSE '' END END,
  CASE WHEN g % 43 = 0 THEN NULL ELSE left(md5((g + 1)::text), (g % 20)::int) END,
  CASE WHEN g % 47 = 0 THEN NULL ELSE left(md5((g + 2)::text), (g % 5)::int) END,
  CASE WHEN g % 53 = 0 THEN NULL ELSE ('n' || g)::name END,
  CASE WHEN g % 59 = 0 THEN NULL ELSE date '1970-01-01' + (g * 7 % 40000)::int - 10000 END,
  CASE WHEN g % 61 = 0 THEN NULL ELSE timestamp '2000-01-01' + (g * 12345678) * interval '1 microsecond' - interval '10 years' END,
  CASE WHEN g % 67 = 0 THEN NULL ELSE timestamptz '2021-06-01 12:00:00+02' + g * interval '1 second 7 microseconds' END,
  CASE WHEN g % 71 = 0 THEN NULL ELSE time '00:00' + (g * 431) * interval '1 millisecond' END,
  CASE WHEN g % 73 = 0 THEN NULL ELSE make_interval(0, (g % 14)::int, 0, (g % 40)::int - 20, 0, 0, (g % 1000) / 7.0) END,
  CASE WHEN g % 79 = 0 THEN NULL ELSE md5(g::text)::uuid END,
  CASE WHEN g % 83 = 0 THEN NULL ELSE json_build_object('g', g, 'tag', 'x' || (g % 9)) END,
  CASE WHEN g % 89 = 0 THEN NULL ELSE jsonb_build_object('g', g, 'list', jsonb_build_array(g % 4, 'y')) END,
  CASE WHEN g % 97 = 0 THEN NULL ELSE decode(md5(g::text), 'hex') END,
  CASE WHEN g % 101 = 0 THEN NULL ELSE (ARRAY['sad','ok','happy']::mood[])[1 + g % 3] END,
  CASE WHEN g % 103 = 0 THEN NULL WHEN g % 10 = 0 THEN '{}'::int4[]
       ELSE ARRAY[g::int4, NULL, -(g % 100)::int4] END,
  CASE WHEN g % 107 = 0 THEN NULL ELSE ARRAY['a' || g, NULL, 'ç'] END,
  CASE WHEN g % 109 = 0 THEN NULL ELSE ('10.' || (g % 256) || '.' || (g / 256 % 256) || '.1/32')::inet END
FROM generate_series(1::int8, 200000::int8) AS g;
"#;

/// (column, Postgres aggregate, DataFusion aggregate): each pair must agree.
const CHECKS: &[(&str, &str, &str)] = &[
    ("id", "sum(id)", "sum(id)"),
    ("c_int2", "sum(c_int2)", "sum(c_int2)"),
    ("c_int4", "sum(c_int4)", "sum(c_int4)"),
    ("c_int8", "sum(c_int8)", "sum(c_int8)"),
    (
        "c_float4",
        "sum(c_float4::float8)",
        "sum(CAST(c_float4 AS DOUBLE))",
    ),
    ("c_float8", "sum(c_float8)", "sum(c_float8)"),
    ("c_numeric", "sum(c_numeric)", "sum(c_numeric)"),
    ("c_numeric_any", "sum(c_numeric_any)", "sum(c_numeric_any)"),
    ("c_bool", "sum(c_bool::int)", "sum(CAST(c_bool AS INT))"),
    ("c_text", "sum(octet_length(c_text))", "sum(octet_length(c_text))"),
    ("c_text", "max(c_text COLLATE \"C\")", "max(c_text)"),
    (
        "c_varchar",
        "sum(octet_length(c_varchar))",
        "sum(octet_length(c_varchar))",
    ),
    ("c_char", "sum(octet_length(c_char))", "sum(octet_length(c_char))"),
    (
        "c_name",
        "sum(octet_length(c_name::text))",
        "sum(octet_length(c_name))",
    ),
    (
        "c_date",
        "sum(c_date - date '1970-01-01')",
        "sum(CAST(c_date AS INT))",
    ),
    (
        "c_ts",
        "sum((extract(epoch FROM c_ts) * 1000000)::int8 % 1000000007)",
        "sum(CAST(c_ts AS BIGINT) % 1000000007)",
    ),
    (
        "c_tstz",
        "sum((extract(epoch FROM c_tstz) * 1000000)::int8 % 1000000007)",
        "sum(CAST(c_tstz AS BIGINT) % 1000000007)",
    ),
    (
        "c_time",
        "sum((extract(epoch FROM c_time) * 1000000)::int8)",
        "sum(CAST(c_time AS BIGINT))",
    ),
    (
        "c_interval",
        "sum(extract(month FROM c_interval) + 12 * extract(year FROM c_interval))",
        "sum(date_part('month', c_interval) + 12 * date_part('year', c_interval))",
    ),
    (
        "c_interval",
        "sum(extract(day FROM c_interval))",
        "sum(date_part('day', c_interval))",
    ),
    ("c_uuid", "max(c_uuid::text)", "max(c_uuid)"),
    ("c_uuid", "min(c_uuid::text)", "min(c_uuid)"),
    (
        "c_json",
        "sum(octet_length(c_json::text))",
        "sum(octet_length(c_json))",
    ),
    (
        "c_jsonb",
        "sum(octet_length(c_jsonb::text))",
        "sum(octet_length(c_jsonb))",
    ),
    (
        "c_bytea",
        "sum(octet_length(c_bytea))",
        "sum(length(encode(c_bytea, 'hex')) / 2)",
    ),
    (
        "c_enum",
        "sum(octet_length(c_enum::text))",
        "sum(octet_length(c_enum))",
    ),
    (
        "c_int_array",
        "sum(cardinality(c_int_array))",
        "sum(cardinality(c_int_array))",
    ),
    ("c_int_array", "sum(c_int_array[1])", "sum(c_int_array[1])"),
    ("c_int_array", "sum(c_int_array[3])", "sum(c_int_array[3])"),
    (
        "c_text_array",
        "sum(octet_length(c_text_array[1]))",
        "sum(octet_length(c_text_array[1]))",
    ),
    (
        "c_text_array",
        "sum(octet_length(array_to_string(c_text_array, ',')))",
        "sum(octet_length(array_to_string(c_text_array, ',')))",
    ),
    (
        "c_inet",
        "sum(octet_length(c_inet::text))",
        "sum(octet_length(c_inet))",
    ),
];

/// Runs `SELECT items FROM from` on Postgres and returns the single row's values as text.
async fn pg_row(db: &TestDatabase, items: &[String], from: &str) -> Vec<Option<String>> {
    let list: Vec<String> = items.iter().map(|item| format!("({item})::text")).collect();
    let sql = format!("SELECT ARRAY[{}] FROM {from}", list.join(", "));
    sqlx::query_scalar(&sql)
        .fetch_one(&db.pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The URI the cluster reads: with a canary password when the server does not need one, so
/// the test can prove the password never reaches the scheduler.
fn uri_with_password(db: &TestDatabase) -> (String, String) {
    let mut url = url::Url::parse(&db.url).unwrap();
    let password = match url.password() {
        Some(real) => real.to_string(),
        None => {
            url.set_password(Some("canary-pw-5f1c")).unwrap();
            "canary-pw-5f1c".to_string()
        }
    };
    (format!("{url}?table=public.all_types"), password)
}

/// Highest number of connections each executor held to `database` while `watching` was set.
fn watch_connections(
    db: &TestDatabase,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<HashMap<String, i64>> {
    let (pool, name) = (db.pool.clone(), db.name.clone());
    tokio::spawn(async move {
        let mut peaks: HashMap<String, i64> = HashMap::new();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let rows: Vec<(String, i64)> = sqlx::query_as(
                "SELECT application_name, count(*) FROM pg_stat_activity \
                 WHERE datname = $1 AND application_name LIKE 'kalla-executor-%' GROUP BY 1",
            )
            .bind(&name)
            .fetch_all(&pool)
            .await
            .unwrap();
            for (app, count) in rows {
                let peak = peaks.entry(app).or_default();
                *peak = (*peak).max(count);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        peaks
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_type_every_row_exactly_once_through_two_executors() {
    let db = TestDatabase::create().await;
    db.execute(CREATE).await;
    // VACUUM cannot run inside the implicit transaction of a multi-statement query.
    db.execute("VACUUM ANALYZE all_types").await;
    let cluster = Cluster::start(ClusterOptions {
        executors: 2,
        vcores: 4,
        pool_cap: POOL_CAP,
        ..ClusterOptions::default()
    })
    .await;
    let (uri, password) = uri_with_password(&db);

    for partitions in [1, 2, 7, 16] {
        let ctx = cluster
            .session_with_table("t", &uri, &ScanOptions::in_partitions(partitions))
            .await;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = watch_connections(&db, stop.clone());
        let counts = df_row(&ctx, "SELECT count(*), count(DISTINCT id), sum(id) FROM t").await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let peaks = watcher.await.unwrap();
        let expected = Some(ROWS.to_string());
        assert_eq!(counts[0], expected, "row count with {partitions} partitions");
        assert_eq!(
            counts[1], expected,
            "distinct ids with {partitions} partitions (duplicates?)"
        );
        assert_eq!(
            counts[2],
            Some((ROWS * (ROWS + 1) / 2).to_string()),
            "sum(id) with {partitions} partitions"
        );
        assert!(
            peaks.values().all(|&peak| peak <= POOL_CAP as i64),
            "an executor exceeded its pool cap: {peaks:?}"
        );
        if partitions >= 7 {
            // Which executor pulls which task is the scheduler's choice: on a loaded machine one
            // may take every short task of a run, so the spread is checked over up to six runs.
            let mut seen = peaks;
            for _ in 0..5 {
                if seen.len() == 2 {
                    break;
                }
                let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let watcher = watch_connections(&db, stop.clone());
                df_row(&ctx, "SELECT count(*) FROM t").await;
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                seen.extend(watcher.await.unwrap());
            }
            assert_eq!(
                seen.len(),
                2,
                "both executors should have connected with {partitions} partitions: {seen:?}"
            );
        }
    }

    let ctx = cluster
        .session_with_table("t", &uri, &ScanOptions::in_partitions(7))
        .await;
    let pg_sql: Vec<String> = CHECKS
        .iter()
        .flat_map(|(column, pg, _)| [pg.to_string(), format!("count(*) - count({column})")])
        .collect();
    let df_sql: Vec<String> = CHECKS
        .iter()
        .flat_map(|(column, _, df)| [df.to_string(), format!("count(*) - count({column})")])
        .collect();
    let expected = pg_row(&db, &pg_sql, "all_types").await;
    let aliased: Vec<String> = df_sql
        .iter()
        .enumerate()
        .map(|(i, e)| format!("{e} AS v{i}"))
        .collect();
    let actual = df_row(&ctx, &format!("SELECT {} FROM t", aliased.join(", "))).await;
    for (i, (column, pg, df)) in CHECKS.iter().enumerate() {
        let (value, nulls) = (2 * i, 2 * i + 1);
        assert!(
            same(&expected[value], &actual[value]),
            "{column}: Postgres {pg} = {:?}, Kalla {df} = {:?}",
            expected[value],
            actual[value]
        );
        assert_eq!(expected[nulls], actual[nulls], "{column}: NULL count");
        if *column != "id" {
            // Every column but the primary key holds NULLs, so their decoding is checked too.
            assert_ne!(
                expected[nulls],
                Some("0".into()),
                "{column}: the data set must hold NULLs"
            );
        }
    }

    // Projection and pushed-down filters give Postgres's answer, and reach Postgres as SQL.
    let filter = "c_int4 > 1000 AND c_date >= DATE '1980-01-01' AND c_text < 'text-8' AND c_numeric BETWEEN -1000 AND 20000.5 AND c_bool";
    let pg_filter = filter.replace("c_text <", "c_text COLLATE \"C\" <");
    let pg = pg_row(
        &db,
        &["count(*)".into(), "sum(id)".into()],
        &format!("all_types WHERE {pg_filter}"),
    )
    .await;
    let kalla = df_row(
        &ctx,
        &format!("SELECT count(*), sum(id) FROM (SELECT id, c_text FROM t WHERE {filter})"),
    )
    .await;
    assert_eq!(pg, kalla, "filtered count and sum");
    assert_ne!(pg[0], Some("0".into()));
    let logs = cluster.all_logs();
    assert!(
        logs.contains(r#"("c_int4" > 1000)"#) && logs.contains(r#"COLLATE "C" < 'text-8'"#),
        "filters were not pushed into the COPY statement"
    );
    assert!(
        logs.contains(r#"COPY (SELECT "id" FROM"#),
        "projection was not pushed into the COPY statement"
    );

    // A LIMIT is pushed down too, and the answer is still exact.
    let limited = df_row(&ctx, "SELECT count(*) FROM (SELECT id FROM t LIMIT 10)").await;
    assert_eq!(limited[0], Some("10".into()));

    // The password never reaches the scheduler: not in its logs, not in its REST job views.
    let scheduler_log = cluster.all_logs();
    assert!(
        !scheduler_log.contains(&password),
        "a password appeared in the cluster's logs"
    );
    let (jobs, job_ids) = cluster.rest_jobs().await;
    assert!(!jobs.contains(&password));
    assert!(!job_ids.is_empty(), "scheduler REST listed no jobs: {jobs}");
    for id in job_ids {
        for path in [
            format!("/api/job/{id}"),
            format!("/api/job/{id}/config"),
            format!("/api/job/{id}/stages"),
            format!("/api/job/{id}/dot"),
        ] {
            let body = cluster.rest_get(&path).await;
            assert!(!body.contains(&password), "{path} shows the password");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cli_runs_sql_on_the_cluster() {
    let db = TestDatabase::create().await;
    db.execute("CREATE TABLE orders AS SELECT g AS id, (g % 7)::int4 AS bucket, g * 1.25::numeric(10,2) AS amount FROM generate_series(1, 5000) g").await;
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let remote_query: Vec<String> = ["query".to_string(), "--scheduler".into(), cluster.scheduler_url()]
        .into_iter()
        .chain(cluster.client_tls_args())
        .collect();
    let remote_query: Vec<&str> = remote_query.iter().map(String::as_str).collect();
    let table = format!("orders={}", db.source_uri("orders"));
    let output = kalla_cli(
        &cluster.key,
        &[
            &remote_query[..],
            &[
                "--table",
                &table,
                "--format",
                "json",
                "--partitions",
                "3",
                "SELECT bucket, count(*) AS n, sum(amount) AS total FROM orders GROUP BY bucket ORDER BY bucket",
            ],
        ]
        .concat(),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "kalla query failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        cluster.log_tails()
    );
    let rows: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 7);
    assert_eq!(rows[0]["bucket"], 0);
    assert_eq!(rows.iter().map(|r| r["n"].as_i64().unwrap()).sum::<i64>(), 5000);

    let output = kalla_cli(
        &cluster.key,
        &[&remote_query[..], &["--table", "x=postgres://h/db", "SELECT 1"]].concat(),
    );
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no `table` parameter"));

    let output = kalla_cli(
        &cluster.key,
        &[
            &remote_query[..],
            &["--table", &format!("x={}", db.source_uri("missing")), "SELECT 1"],
        ]
        .concat(),
    );
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("public.missing does not exist"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn source_dropped_mid_scan_fails_the_query_clearly() {
    let db = TestDatabase::create().await;
    // A view that trickles rows out, so the scan is still running when the source goes away.
    db.execute("CREATE VIEW slow AS SELECT g AS id FROM generate_series(1, 100000) g, LATERAL (SELECT pg_sleep(0.002) WHERE g > 0) s").await;
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let ctx = cluster
        .session_with_table("slow", &db.source_uri("slow"), &ScanOptions::default())
        .await;

    let query = tokio::spawn(async move { ctx.sql("SELECT count(*) FROM slow").await?.collect().await });
    let observer = db.pool.clone();
    let name = db.name.clone();
    kalla_e2e::wait_for("an executor to start reading", Duration::from_secs(30), || {
        let (observer, name) = (observer.clone(), name.clone());
        async move {
            let active: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name LIKE 'kalla-executor-%' AND state = 'active'",
            )
            .bind(name)
            .fetch_one(&observer)
            .await
            .ok()?;
            (active > 0).then_some(())
        }
    })
    .await;
    db.drop_now().await;

    let outcome = tokio::time::timeout(Duration::from_secs(90), query)
        .await
        .expect("the query must fail within bounded time, not hang")
        .unwrap();
    let error = outcome
        .expect_err("a scan whose source vanished must not report success")
        .to_string();
    eprintln!("query failed as expected: {error}");
    assert!(
        error.contains("public.slow")
            || error.contains("does not exist")
            || error.contains("terminating connection"),
        "unclear error: {error}"
    );
}
