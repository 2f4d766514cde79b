//! MariaDB as a source: every mapped type read exactly (edge values, NULLs, and a zero date
//! refused by name); filters pushed down only where MariaDB answers as DataFusion does; a table
//! of every type read through `kalla-scheduler` and two `kalla-executor` processes in 1, 2, 7
//! and 16 key ranges, every row exactly once, each executor within its connection cap, its
//! aggregates equal to MariaDB's own; a MariaDB connection and source in the runner, reconciled
//! against Postgres with Postgres's answer; and TLS to a server of the test's own that refuses
//! plaintext, from the runner and the executors, with the source's password nowhere on the
//! scheduler.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::prelude::SessionContext;
use kalla_core::ClusterKey;
use kalla_core::mariadb::MariaTableProvider;
use kalla_core::mariadb::location::TableLocation;
use kalla_core::postgres::ScanOptions;
use kalla_e2e::cluster::{Cluster, ClusterOptions};
use kalla_e2e::mariadb::{TestMariaDb, TlsMariaDb};
use kalla_e2e::postgres::TestDatabase;
use kalla_e2e::reconciliation::{data, recipe, truth};
use kalla_e2e::runner::Runner;
use kalla_e2e::tls::{TestCa, Usage};
use kalla_e2e::values::{df_row, displayed, same};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tempfile::TempDir;

const ROWS: i64 = 20_000;
const POOL_CAP: u32 = 2;

async fn provider(db: &TestMariaDb, table: &str, partitions: usize) -> Result<MariaTableProvider, String> {
    let location = TableLocation::parse(&url::Url::parse(&db.source_uri(table)).unwrap())?;
    MariaTableProvider::connect(
        &location,
        &ClusterKey::generate(),
        &ScanOptions::in_partitions(partitions),
    )
    .await
    .map_err(|e| e.to_string())
}

/// Column `v` of `table` ordered by `id`, each value as Arrow displays it, read in 3 ranges.
async fn read(db: &TestMariaDb, table: &str) -> Result<(DataType, Vec<Option<String>>), String> {
    let ctx = SessionContext::new();
    ctx.register_table("t", Arc::new(provider(db, table, 3).await?))
        .unwrap();
    let df = ctx
        .sql("SELECT v FROM t ORDER BY id")
        .await
        .map_err(|e| e.to_string())?;
    let data_type = df.schema().field(0).data_type().clone();
    let batches = df.collect().await.map_err(|e| e.to_string())?;
    let values = displayed(&batches);
    Ok((data_type, values))
}

/// Creates `table(id, v <sql_type>)` with `cases`' SQL literals and checks what Kalla reads.
async fn check(db: &TestMariaDb, sql_type: &str, expected_type: DataType, cases: &[(&str, Option<&str>)]) {
    let table = format!(
        "t_{}",
        sql_type.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    );
    db.execute(&format!(
        "CREATE TABLE {table} (id INT NOT NULL AUTO_INCREMENT PRIMARY KEY, v {sql_type})"
    ))
    .await;
    for (literal, _) in cases {
        db.execute(&format!("INSERT INTO {table} (v) VALUES ({literal})"))
            .await;
    }
    let (data_type, values) = read(db, &table)
        .await
        .unwrap_or_else(|e| panic!("{sql_type}: {e}"));
    assert_eq!(data_type, expected_type, "{sql_type}");
    let expected: Vec<Option<String>> = cases.iter().map(|(_, v)| v.map(str::to_string)).collect();
    assert_eq!(values, expected, "{sql_type}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_at_its_edges() {
    let db = TestMariaDb::create().await;
    let null = ("NULL", None);
    check(
        &db,
        "BIGINT UNSIGNED",
        DataType::UInt64,
        &[
            ("18446744073709551615", Some("18446744073709551615")),
            ("0", Some("0")),
            null,
        ],
    )
    .await;
    check(
        &db,
        "BIGINT",
        DataType::Int64,
        &[
            ("-9223372036854775808", Some("-9223372036854775808")),
            ("9223372036854775807", Some("9223372036854775807")),
            null,
        ],
    )
    .await;
    check(
        &db,
        "TINYINT",
        DataType::Int8,
        &[("-128", Some("-128")), ("127", Some("127")), null],
    )
    .await;
    check(
        &db,
        "SMALLINT UNSIGNED",
        DataType::UInt16,
        &[("65535", Some("65535")), null],
    )
    .await;
    check(
        &db,
        "MEDIUMINT",
        DataType::Int32,
        &[("-8388608", Some("-8388608")), ("8388607", Some("8388607"))],
    )
    .await;
    check(
        &db,
        "INT UNSIGNED",
        DataType::UInt32,
        &[("4294967295", Some("4294967295")), null],
    )
    .await;
    check(
        &db,
        "DECIMAL(38,10)",
        DataType::Decimal128(38, 10),
        &[
            (
                "-9999999999999999999999999999.9999999999",
                Some("-9999999999999999999999999999.9999999999"),
            ),
            ("0.0000000001", Some("0.0000000001")),
            null,
        ],
    )
    .await;
    check(
        &db,
        "DECIMAL(65,30)",
        DataType::Utf8,
        &[
            (
                "99999999999999999999999999999999999.999999999999999999999999999999",
                Some("99999999999999999999999999999999999.999999999999999999999999999999"),
            ),
            (
                "-0.000000000000000000000000000001",
                Some("-0.000000000000000000000000000001"),
            ),
            null,
        ],
    )
    .await;
    check(
        &db,
        "FLOAT",
        DataType::Float32,
        &[
            ("1.5", Some("1.5")),
            ("-3.4028234e38", Some("-3.4028235e38")),
            ("1.17549435e-38", Some("1.1754944e-38")),
            null,
        ],
    )
    .await;
    check(
        &db,
        "DOUBLE",
        DataType::Float64,
        &[
            ("0.1", Some("0.1")),
            ("1.7976931348623157e308", Some("1.7976931348623157e308")),
            ("-2.2250738585072014e-308", Some("-2.2250738585072014e-308")),
            null,
        ],
    )
    .await;
    check(
        &db,
        "DATE",
        DataType::Date32,
        &[
            ("'1000-01-01'", Some("1000-01-01")),
            ("'9999-12-31'", Some("9999-12-31")),
            null,
        ],
    )
    .await;
    check(
        &db,
        "DATETIME(6)",
        DataType::Timestamp(TimeUnit::Microsecond, None),
        &[
            ("'1000-01-01 00:00:00'", Some("1000-01-01T00:00:00")),
            ("'9999-12-31 23:59:59.999999'", Some("9999-12-31T23:59:59.999999")),
            null,
        ],
    )
    .await;
    check(
        &db,
        "TIMESTAMP(3) NULL",
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        &[
            ("'1970-01-01 00:00:01.5'", Some("1970-01-01T00:00:01.500Z")),
            ("'2038-01-19 03:14:07.999'", Some("2038-01-19T03:14:07.999Z")),
            null,
        ],
    )
    .await;
    check(
        &db,
        "TIME(6)",
        DataType::Duration(TimeUnit::Microsecond),
        &[
            ("'-838:59:59'", Some("-PT3020399S")),
            ("'838:59:59'", Some("PT3020399S")),
            ("'00:00:00.000001'", Some("PT0.000001S")),
            null,
        ],
    )
    .await;
    check(
        &db,
        "YEAR",
        DataType::UInt16,
        &[
            ("1901", Some("1901")),
            ("2155", Some("2155")),
            ("0", Some("0")),
            null,
        ],
    )
    .await;
    check(
        &db,
        "BIT(64)",
        DataType::UInt64,
        &[
            (
                "b'1111111111111111111111111111111111111111111111111111111111111111'",
                Some("18446744073709551615"),
            ),
            ("b'101'", Some("5")),
            null,
        ],
    )
    .await;
    check(
        &db,
        "VARCHAR(20) COLLATE utf8mb4_unicode_ci",
        DataType::Utf8,
        &[("'😀 ünï '", Some("😀 ünï ")), ("''", Some("")), null],
    )
    .await;
    check(
        &db,
        "JSON",
        DataType::Utf8,
        &[("'{\"a\": [1, 2]}'", Some("{\"a\": [1, 2]}")), null],
    )
    .await;
    check(
        &db,
        "ENUM('low','high')",
        DataType::Utf8,
        &[("'high'", Some("high")), null],
    )
    .await;
    check(
        &db,
        "SET('x','y')",
        DataType::Utf8,
        &[("'x,y'", Some("x,y")), ("''", Some(""))],
    )
    .await;
    check(
        &db,
        "BLOB",
        DataType::Binary,
        &[("x'00ff10'", Some("00ff10")), null],
    )
    .await;
    check(
        &db,
        "UUID",
        DataType::Utf8,
        &[
            (
                "'123e4567-e89b-12d3-a456-426614174000'",
                Some("123e4567-e89b-12d3-a456-426614174000"),
            ),
            null,
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_dates_are_refused_naming_table_and_column() {
    let db = TestMariaDb::create().await;
    db.execute(
        "SET SESSION sql_mode = '';
         CREATE TABLE legacy (id INT PRIMARY KEY, booked DATE, stamped DATETIME);
         INSERT INTO legacy VALUES (1, '2024-01-02', '2024-01-02 10:00:00'), (2, '0000-00-00', '2024-00-00 00:00:00');",
    )
    .await;
    let ctx = SessionContext::new();
    ctx.register_table("legacy", Arc::new(provider(&db, "legacy", 1).await.unwrap()))
        .unwrap();
    for column in ["booked", "stamped"] {
        let error = ctx
            .sql(&format!("SELECT {column} FROM legacy"))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(&format!("{}.legacy", db.name))
                && error.contains(&format!("column {column}"))
                && error.contains("zero date"),
            "{error}"
        );
    }
}

/// The ids `sql` selects from `table`, read in 2 ranges, or the error.
async fn ids(db: &TestMariaDb, table: &str, sql: &str) -> Result<Vec<i32>, String> {
    let ctx = SessionContext::new();
    ctx.register_table(table, Arc::new(provider(db, table, 2).await?))
        .unwrap();
    let batches = ctx
        .sql(sql)
        .await
        .map_err(|e| e.to_string())?
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(displayed(&batches)
        .into_iter()
        .map(|id| id.unwrap().parse().unwrap())
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_reach_mariadb_only_where_it_answers_as_datafusion_does() {
    let db = TestMariaDb::create().await;
    // Rows 1 to 3 hold a zero date, which fails any scan that reads it: a query selecting it
    // succeeds only if MariaDB itself filtered those rows out.
    db.execute(
        "SET SESSION sql_mode = '';
         CREATE TABLE ledger (id INT PRIMARY KEY, amount DECIMAL(10,2) NOT NULL, booked DATE NOT NULL,
           at DATETIME(6) NOT NULL, code VARCHAR(10) COLLATE utf8mb4_nopad_bin NOT NULL, poison DATE);
         INSERT INTO ledger VALUES
           (1, 1.00, '2024-01-01', '2024-01-01 10:00:00', 'old', '0000-00-00'),
           (2, 2.00, '2024-01-02', '2024-01-02 10:00:00', 'old', '0000-00-00'),
           (3, 3.00, '2024-01-03', '2024-01-03 10:00:00', 'old', '0000-00-00'),
           (4, 4.00, '2024-01-04', '2024-01-04 10:00:00', 'new', '2024-02-01'),
           (5, 5.00, '2024-01-05', '2024-01-05 10:00:00.000001', 'new', NULL);",
    )
    .await;
    for filter in [
        "id > 3",
        "id NOT IN (1, 2, 3)",
        "id BETWEEN 4 AND 9",
        "amount >= CAST(3.01 AS DECIMAL(10, 2))",
        "booked > DATE '2024-01-03'",
        "at > TIMESTAMP '2024-01-03 10:00:00'",
        "code = 'new'",
        "code < 'o' OR id >= 5",
        "NOT (code = 'old') AND poison IS NULL OR id = 4",
    ] {
        let sql = format!("SELECT id, poison FROM ledger WHERE {filter} ORDER BY id");
        let read = ids(&db, "ledger", &sql).await;
        assert_eq!(
            read,
            Ok(vec![4, 5]),
            "{filter}: pushed down, the zero dates are never read"
        );
    }
    let unfiltered = ids(&db, "ledger", "SELECT id, poison FROM ledger ORDER BY id").await;
    assert!(
        unfiltered.unwrap_err().contains("zero date"),
        "a scan that reads the zero dates fails"
    );

    // Collations that fold case or ignore trailing spaces would answer otherwise: DataFusion
    // evaluates those filters, byte-wise as everywhere else.
    db.execute(
        "CREATE TABLE words (id INT PRIMARY KEY, exact VARCHAR(5) COLLATE utf8mb4_nopad_bin,
           padded VARCHAR(5) COLLATE utf8mb4_bin, folded VARCHAR(5) COLLATE utf8mb4_general_ci,
           fixed CHAR(5) COLLATE utf8mb4_nopad_bin);
         INSERT INTO words VALUES (1, 'a', 'a', 'a', 'a'), (2, 'a ', 'a ', 'a ', 'a '),
           (3, 'A', 'A', 'A', 'A'), (4, 'ä', 'ä', 'ä', 'ä');",
    )
    .await;
    for (filter, expected) in [
        ("exact = 'a'", vec![1]),
        ("padded = 'a'", vec![1]),
        ("folded = 'a'", vec![1]),
        ("exact < 'a'", vec![3]),
        ("folded < 'b'", vec![1, 2, 3]),
        ("padded > 'a'", vec![2, 4]),
        ("fixed = 'a'", vec![1, 2]),
    ] {
        let sql = format!("SELECT id FROM words WHERE {filter} ORDER BY id");
        assert_eq!(ids(&db, "words", &sql).await, Ok(expected), "{filter}");
    }
}

const CREATE: &str = r#"
CREATE TABLE all_types (
  id         BIGINT NOT NULL PRIMARY KEY,
  c_tiny     TINYINT,
  c_utiny    TINYINT UNSIGNED,
  c_medium   MEDIUMINT,
  c_int      INT,
  c_ubig     BIGINT UNSIGNED,
  c_dec      DECIMAL(15,2),
  c_wide     DECIMAL(65,30),
  c_float    FLOAT,
  c_double   DOUBLE,
  c_date     DATE,
  c_datetime DATETIME(6),
  c_ts       TIMESTAMP(6) NULL,
  c_time     TIME(6),
  c_year     YEAR,
  c_bit      BIT(12),
  c_text     VARCHAR(60) COLLATE utf8mb4_unicode_ci,
  c_json     JSON,
  c_enum     ENUM('sad', 'ok', 'happy'),
  c_blob     BLOB,
  c_uuid     UUID
);
INSERT INTO all_types
SELECT seq * 3 - 30000,
  IF(seq % 11 = 0, NULL, seq % 256 - 128),
  IF(seq % 13 = 0, NULL, seq % 256),
  IF(seq % 17 = 0, NULL, seq * 419 % 16000000 - 8000000),
  IF(seq % 19 = 0, NULL, seq * 7919 % 2000000 - 1000000),
  IF(seq % 23 = 0, NULL, 18446744073709551615 - seq * 1000003),
  IF(seq % 29 = 0, NULL, (seq * 37 % 10000000 - 5000000) / 100),
  IF(seq % 31 = 0, NULL, CAST(CONCAT(seq * 99991, '.', LPAD(seq, 30, '7')) AS DECIMAL(65,30))),
  IF(seq % 37 = 0, NULL, (seq % 1000) / 8),
  IF(seq % 41 = 0, NULL, seq / 64 - 1000),
  IF(seq % 43 = 0, NULL, DATE '1990-01-01' + INTERVAL (seq * 7 % 20000) DAY),
  IF(seq % 47 = 0, NULL, TIMESTAMP '1995-06-01 00:00:00' + INTERVAL (seq * 7777777) SECOND + INTERVAL (seq % 1000000) MICROSECOND),
  IF(seq % 53 = 0, NULL, TIMESTAMP '2001-01-01 00:00:00' + INTERVAL (seq * 3333) SECOND + INTERVAL seq MICROSECOND),
  IF(seq % 59 = 0, NULL, SEC_TO_TIME(seq * 150 - 1500000) + INTERVAL (seq % 1000) MICROSECOND),
  IF(seq % 61 = 0, NULL, 1901 + seq % 255),
  IF(seq % 67 = 0, NULL, seq % 4096),
  IF(seq % 71 = 0, NULL, CONCAT('text-', MD5(seq), IF(seq % 5 = 0, ' ünïcødé ✓ 😀', ''))),
  IF(seq % 73 = 0, NULL, JSON_OBJECT('n', seq, 'tags', JSON_ARRAY('a', seq % 3))),
  IF(seq % 79 = 0, NULL, ELT(1 + seq % 3, 'sad', 'ok', 'happy')),
  IF(seq % 83 = 0, NULL, UNHEX(MD5(seq))),
  IF(seq % 89 = 0, NULL, UUID())
FROM (SELECT CAST(seq AS SIGNED) AS seq FROM seq_1_to_20000) AS s;
"#;

/// (column, MariaDB's aggregate, Kalla's aggregate over the same rows).
const CHECKS: &[(&str, &str, &str)] = &[
    ("id", "SUM(id)", "sum(id)"),
    ("c_tiny", "SUM(c_tiny)", "sum(c_tiny)"),
    ("c_utiny", "SUM(c_utiny)", "sum(c_utiny)"),
    ("c_medium", "SUM(c_medium)", "sum(c_medium)"),
    ("c_int", "SUM(c_int)", "sum(c_int)"),
    ("c_ubig", "MIN(c_ubig)", "min(c_ubig)"),
    ("c_ubig", "MAX(c_ubig)", "max(c_ubig)"),
    ("c_ubig", "SUM(c_ubig MOD 1000000)", "sum(c_ubig % 1000000)"),
    ("c_dec", "SUM(c_dec)", "sum(c_dec)"),
    ("c_wide", "SUM(LENGTH(c_wide))", "sum(character_length(c_wide))"),
    ("c_wide", "COUNT(DISTINCT c_wide)", "count(DISTINCT c_wide)"),
    ("c_float", "SUM(c_float)", "sum(c_float)"),
    ("c_double", "SUM(c_double)", "sum(c_double)"),
    ("c_date", "MIN(c_date)", "min(c_date)"),
    (
        "c_date",
        "SUM(TO_DAYS(c_date) - 719528)",
        "sum(CAST(c_date AS INT))",
    ),
    (
        "c_datetime",
        "SUM(TIMESTAMPDIFF(SECOND, '1970-01-01', c_datetime))",
        "sum(CAST(c_datetime AS BIGINT) / 1000000)",
    ),
    (
        "c_datetime",
        "SUM(MICROSECOND(c_datetime))",
        "sum(CAST(c_datetime AS BIGINT) % 1000000)",
    ),
    (
        "c_ts",
        "SUM(UNIX_TIMESTAMP(c_ts) DIV 1)",
        "sum(CAST(c_ts AS BIGINT) / 1000000)",
    ),
    (
        "c_ts",
        "SUM(MICROSECOND(c_ts))",
        "sum(CAST(c_ts AS BIGINT) % 1000000)",
    ),
    (
        "c_time",
        "SUM(TIME_TO_SEC(c_time))",
        "sum(CAST(c_time AS BIGINT)) / 1000000.0",
    ),
    ("c_year", "SUM(c_year)", "sum(c_year)"),
    ("c_bit", "SUM(c_bit)", "sum(c_bit)"),
    (
        "c_text",
        "SUM(CHAR_LENGTH(c_text))",
        "sum(character_length(c_text))",
    ),
    (
        "c_text",
        "COUNT(DISTINCT BINARY c_text)",
        "count(DISTINCT c_text)",
    ),
    ("c_json", "SUM(LENGTH(c_json))", "sum(octet_length(c_json))"),
    ("c_enum", "SUM(LENGTH(c_enum))", "sum(octet_length(c_enum))"),
    (
        "c_blob",
        "SUM(LENGTH(c_blob))",
        "sum(character_length(encode(c_blob, 'hex'))) / 2",
    ),
    ("c_uuid", "COUNT(DISTINCT c_uuid)", "count(DISTINCT c_uuid)"),
];

/// The local ports of process `pid`'s established TCP connections to `port`, from `/proc`.
/// Each socket once: `/proc/net/tcp` is read a page at a time while sockets come and go, so one
/// line can be read twice.
fn connections_to(pid: u32, port: u16) -> Vec<u16> {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
                .filter_map(|link| {
                    let link = link.to_string_lossy().into_owned();
                    Some(link.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    let remote = format!(":{port:04X}");
    let sockets: BTreeMap<String, u16> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|table| table.lines().skip(1).map(str::to_string).collect::<Vec<_>>())
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let established = fields.len() > 9
                && fields[2].ends_with(&remote)
                && fields[3] == "01"
                && inodes.contains(fields[9]);
            let (_, local_port) = fields.get(1)?.rsplit_once(':')?;
            let local_port = u16::from_str_radix(local_port, 16).ok()?;
            established.then(|| (fields[9].to_string(), local_port))
        })
        .collect();
    sockets.into_values().collect()
}

/// The most connections each executor held to MariaDB while `stop` was unset, and, for one that
/// held more than [`POOL_CAP`], what it held then: its sockets' local ports and the server's
/// processlist of the test's database (each connection's client port, state and statement,
/// whose `/* kalla-executor-N */` comment names the process).
fn watch_connections(
    db: &TestMariaDb,
    executors: Vec<(String, u32)>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(HashMap<String, usize>, Vec<String>)> {
    let (pool, name) = (db.pool.clone(), db.name.clone());
    tokio::spawn(async move {
        let mut peaks: HashMap<String, usize> = HashMap::new();
        let mut evidence = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            for (executor, pid) in &executors {
                let ports = connections_to(*pid, 3306);
                let peak = peaks.entry(executor.clone()).or_default();
                if ports.len() > (*peak).max(POOL_CAP as usize) {
                    let processlist: Vec<(String, String, i64, String, String)> = sqlx::query_as(
                        "SELECT HOST, COMMAND, TIME, COALESCE(STATE, ''), COALESCE(LEFT(INFO, 60), '') \
                         FROM information_schema.PROCESSLIST WHERE DB = ?",
                    )
                    .bind(&name)
                    .fetch_all(&pool)
                    .await
                    .unwrap_or_default();
                    evidence.push(format!("{executor} ports {ports:?}; processlist {processlist:?}"));
                }
                *peak = (*peak).max(ports.len());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (peaks, evidence)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_row_exactly_once_through_two_executors() {
    let db = TestMariaDb::create().await;
    db.execute(CREATE).await;
    db.execute("ANALYZE TABLE all_types").await;
    let cluster = Cluster::start(ClusterOptions {
        executors: 2,
        vcores: 4,
        pool_cap: POOL_CAP,
        ..ClusterOptions::default()
    })
    .await;
    let uri = db.source_uri("all_types");
    let executors = cluster.pids("executor-");
    assert_eq!(executors.len(), 2);

    let mut used = HashMap::new();
    for partitions in [1, 2, 7, 16] {
        let ctx = cluster
            .session_with_table("t", &uri, &ScanOptions::in_partitions(partitions))
            .await;
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = watch_connections(&db, executors.clone(), stop.clone());
        let counts = df_row(&ctx, "SELECT count(*), count(DISTINCT id), sum(id) FROM t").await;
        stop.store(true, Ordering::Relaxed);
        let (peaks, evidence) = watcher.await.unwrap();
        let expected = db
            .text_row("SELECT COUNT(*), COUNT(DISTINCT id), SUM(id) FROM all_types")
            .await;
        assert_eq!(expected[0], Some(ROWS.to_string()));
        assert_eq!(
            counts, expected,
            "count, distinct ids and sum(id) with {partitions} partitions"
        );
        assert!(
            peaks.values().all(|&peak| peak <= POOL_CAP as usize),
            "an executor exceeded its pool cap of {POOL_CAP} with {partitions} partitions: {peaks:?}\n{}",
            evidence.join("\n")
        );
        for (name, peak) in peaks {
            *used.entry(name).or_insert(0) += peak;
        }
    }
    assert!(
        used.values().any(|&peak| peak > 0),
        "no executor connected to MariaDB: {used:?}"
    );

    let ctx = cluster
        .session_with_table("t", &uri, &ScanOptions::in_partitions(7))
        .await;
    let maria: Vec<String> = CHECKS
        .iter()
        .enumerate()
        .flat_map(|(i, (column, maria, _))| {
            [
                format!("{maria} AS v{i}"),
                format!("COUNT(*) - COUNT({column}) AS n{i}"),
            ]
        })
        .collect();
    let kalla: Vec<String> = CHECKS
        .iter()
        .enumerate()
        .flat_map(|(i, (column, _, kalla))| {
            [
                format!("{kalla} AS v{i}"),
                format!("count(*) - count({column}) AS n{i}"),
            ]
        })
        .collect();
    let expected = db
        .text_row(&format!("SELECT {} FROM all_types", maria.join(", ")))
        .await;
    let actual = df_row(&ctx, &format!("SELECT {} FROM t", kalla.join(", "))).await;
    for (i, (column, maria, kalla)) in CHECKS.iter().enumerate() {
        let (value, nulls) = (2 * i, 2 * i + 1);
        assert!(
            same(&expected[value], &actual[value]),
            "{column}: MariaDB {maria} = {:?}, Kalla {kalla} = {:?}",
            expected[value],
            actual[value]
        );
        assert_eq!(expected[nulls], actual[nulls], "{column}: NULL count");
        if *column != "id" {
            assert_ne!(
                expected[nulls],
                Some("0".into()),
                "{column}: the data set must hold NULLs"
            );
        }
    }

    // The executors' statements say who sent them (what MariaDB's processlist shows), read by
    // key range, and a LIMIT reaches MariaDB.
    let limited = df_row(&ctx, "SELECT count(*) FROM (SELECT id FROM t LIMIT 10)").await;
    assert_eq!(limited[0], Some("10".into()));
    let logs = cluster.all_logs();
    assert!(
        logs.contains("/* kalla-executor-"),
        "statements carry no executor tag"
    );
    assert!(logs.contains("WHERE `id` >= "), "no key range reached MariaDB");
}

/// Copies Postgres's `payments` into a MariaDB table of the same columns (and an integer key).
async fn copy_payments(pg: &TestDatabase, maria: &TestMariaDb) {
    maria
        .execute(
            "CREATE TABLE payments (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, \
             payment_id VARCHAR(40) NOT NULL, invoice_ref VARCHAR(20), amount DECIMAL(12,2), \
             currency VARCHAR(8), paid_on DATE, status VARCHAR(8))",
        )
        .await;
    type Payment = (String, Option<String>, String, Option<String>, String, String);
    let rows: Vec<Payment> = sqlx::query_as(
        "SELECT payment_id, invoice_ref, amount::text, currency, paid_on::text, status FROM payments",
    )
    .fetch_all(&pg.pool)
    .await
    .unwrap();
    for chunk in rows.chunks(2000) {
        let mut insert = sqlx::QueryBuilder::<sqlx::MySql>::new(
            "INSERT INTO payments (payment_id, invoice_ref, amount, currency, paid_on, status) ",
        );
        insert.push_values(chunk, |mut row, payment| {
            row.push_bind(&payment.0)
                .push_bind(&payment.1)
                .push_bind(&payment.2)
                .push_bind(&payment.3)
                .push_bind(&payment.4)
                .push_bind(&payment.5);
        });
        insert.build().execute(&maria.pool).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_invoices_reconcile_with_mariadb_payments() {
    let pg = TestDatabase::create().await;
    pg.execute(&data(20_000)).await;
    let truth = truth(&pg).await;
    assert!(truth.outputs["matched"].as_i64().unwrap() > 15_000, "{truth:?}");
    let maria = TestMariaDb::create().await;
    copy_payments(&pg, &maria).await;
    let runner = Runner::start_in(TempDir::new().unwrap(), None, &["--scan-partition-mib", "1"]).await;

    // A connection: discovered, healthy (plaintext: the shared server has no TLS), queried live.
    let (status, connection) = runner
        .call(
            Method::POST,
            "/api/connections",
            Some(json!({"name": "books", "source_type": "mariadb", "config": {"uri": maria.url}})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{connection}");
    let id = connection["id"].as_str().unwrap();
    let (_, schema) = runner
        .call(
            Method::GET,
            &format!("/api/information_schema?connection_id={id}"),
            None,
        )
        .await;
    let tables = schema.to_string();
    assert!(
        tables.contains("\"payments\"") && tables.contains("decimal(12,2)"),
        "{schema}"
    );
    let (status, health) = runner
        .call(Method::GET, &format!("/api/connections/{id}/health"), None)
        .await;
    assert_eq!(
        (status, &health["reachable"]),
        (StatusCode::OK, &json!(true)),
        "{health}"
    );
    let void: i64 = sqlx::query_scalar("SELECT count(*) FROM payments WHERE status = 'void'")
        .fetch_one(&pg.pool)
        .await
        .unwrap();
    let sql = format!(
        "SELECT count(*) FROM books.{}.payments WHERE status = 'void'",
        maria.name
    );
    let rows = live_rows(&runner, &sql).await;
    assert_eq!(rows[0][0], json!(void.to_string()), "{rows}");

    // Sources of both engines: a filtered preview, then the reconciliation.
    runner
        .register_source("invoices", &pg.source_uri("public.invoices"))
        .await;
    runner
        .register_source("payments", &maria.source_uri("payments"))
        .await;
    let (status, preview) = runner
        .call(
            Method::POST,
            "/api/sources/payments/load-scoped",
            Some(json!({"conditions": [{"column": "status", "op": "eq", "value": "void"}], "limit": 5})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!(preview["total_rows"], json!(void), "{preview}");
    assert_eq!(preview["rows"].as_array().unwrap().len(), 5);

    let id = runner
        .submit_job(json!({"type": "recon", "recipe": recipe("mixed", "invoices", "payments")}))
        .await;
    let job = runner.wait_for_job(&id, Duration::from_secs(300)).await;
    assert_eq!(job["status"], "succeeded", "{job}\n{}", runner.logs());
    assert_eq!(job["summary"]["outputs"], truth.outputs, "{job}");
}

/// The rows of `sql`, read live through the runner's `/api/query`.
async fn live_rows(runner: &Runner, sql: &str) -> serde_json::Value {
    let body = json!({"sql": sql, "live": true});
    let (status, answer) = runner.call(Method::POST, "/api/query", Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{sql}: {answer}");
    answer["rows"].clone()
}

/// The password of the TLS server's user: a canary that must never reach the scheduler.
const CANARY: &str = "canary-pw-7d21e";

/// MariaDB over TLS only: a server of the test's own that refuses plaintext TCP, a runner and
/// two executor processes that know the test's CA by name. Connections verify the server or fail
/// saying why; the executors read over TLS; the password never reaches the scheduler.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_from_the_runner_and_every_executor_and_no_password_on_the_scheduler() {
    let files = TempDir::new().unwrap();
    let ca = TestCa::new(files.path(), "kalla-test-ca");
    let other = TestCa::new(files.path(), "other-ca");
    let issued = ca.issue("server", "localhost", &["DNS:localhost"], Usage::Server);
    let server = TlsMariaDb::start(&issued.cert, &issued.key, &ca.cert());
    server.admin(&format!(
        "CREATE DATABASE shop;
         CREATE TABLE shop.orders (id INT PRIMARY KEY, amount DECIMAL(12,2) NOT NULL);
         INSERT INTO shop.orders SELECT seq, seq * 1.5 FROM shop.seq_1_to_20000;
         CREATE USER kalla@'%' IDENTIFIED BY '{CANARY}';
         GRANT SELECT ON shop.* TO kalla@'%';"
    ));
    let certificates = TempDir::new().unwrap();
    for (name, cert) in [("test-ca", ca.cert()), ("other-ca", other.cert())] {
        std::fs::create_dir(certificates.path().join(name)).unwrap();
        std::fs::copy(cert, certificates.path().join(name).join("ca.crt")).unwrap();
    }
    let dir = certificates.path().display().to_string();
    let cluster = Cluster::start(ClusterOptions {
        executors: 2,
        executor_args: vec!["--tls-ca-dir".into(), dir.clone()],
        ..ClusterOptions::default()
    })
    .await;
    let mut args = cluster.runner_args();
    args.extend(["--tls-ca-dir".to_string(), dir]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let runner = Runner::start_in(TempDir::new().unwrap(), None, &args).await;
    let uri = |host: &str, query: &str| {
        format!(
            "mysql://kalla:{CANARY}@{host}:{}/shop?table=orders&{query}",
            server.port
        )
    };

    for (alias, uri) in [
        (
            "verified",
            uri("localhost", "sslmode=verify-full&sslrootcert=test-ca"),
        ),
        ("required", uri("127.0.0.1", "sslmode=require")),
    ] {
        runner.register_source(alias, &uri).await;
        let path = format!("/api/sources/{alias}/load-scoped");
        let filter = json!({"conditions": [{"column": "id", "op": "lte", "value": "10"}]});
        let (status, preview) = runner.call(Method::POST, &path, Some(filter)).await;
        assert_eq!(
            (status, &preview["total_rows"]),
            (StatusCode::OK, &json!(10)),
            "{alias}: {preview}"
        );
    }
    for (alias, uri, says) in [
        (
            "another_ca",
            uri("localhost", "sslmode=verify-full&sslrootcert=other-ca"),
            "UnknownIssuer",
        ),
        (
            "wrong_name",
            uri("127.0.0.1", "sslmode=verify-full&sslrootcert=test-ca"),
            "not valid for name",
        ),
        ("plaintext", uri("127.0.0.1", "sslmode=disable"), "kalla"),
    ] {
        let message = runner.assert_preview_refused(alias, &uri, says).await;
        assert!(!message.contains(CANARY), "{alias}: {message}");
    }

    // A connection over TLS: healthy and encrypted, queried live on the executors.
    let config = json!({"uri": uri("localhost", "sslmode=verify-full&sslrootcert=test-ca").replace("table=orders&", "")});
    let (status, connection) = runner
        .call(
            Method::POST,
            "/api/connections",
            Some(json!({"name": "shop", "source_type": "mariadb", "config": config})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{connection}");
    let id = connection["id"].as_str().unwrap();
    let (status, health) = runner
        .call(Method::GET, &format!("/api/connections/{id}/health"), None)
        .await;
    assert_eq!(
        (status, &health["reachable"], &health["encrypted"]),
        (StatusCode::OK, &json!(true), &json!(true)),
        "{health}"
    );
    let sql = "SELECT count(*), sum(amount) FROM shop.shop.orders WHERE id > 100";
    let rows = live_rows(&runner, sql).await;
    assert_eq!(rows[0], json!(["19900", "300007425.00"]), "{rows}");
    let executor_sessions: usize = cluster
        .pids("executor-")
        .iter()
        .map(|(_, pid)| connections_to(*pid, server.port).len())
        .sum();
    assert!(
        executor_sessions > 0,
        "the executors read the table (over TLS: the server refuses anything else)"
    );

    // The password reaches no log and no view of the scheduler's.
    assert!(!cluster.all_logs().contains(CANARY), "a log shows the password");
    assert!(
        !runner.logs().contains(CANARY),
        "the runner's log shows the password"
    );
    let (jobs, job_ids) = cluster.rest_jobs().await;
    assert!(!job_ids.is_empty() && !jobs.contains(CANARY), "{jobs}");
    for id in job_ids {
        for view in ["", "/config", "/stages", "/dot"] {
            let body = cluster.rest_get(&format!("/api/job/{id}{view}")).await;
            assert!(!body.contains(CANARY), "/api/job/{id}{view} shows the password");
        }
    }
    let (_, sources) = runner.call(Method::GET, "/api/sources", None).await;
    assert!(!sources.to_string().contains(CANARY), "{sources}");
}
