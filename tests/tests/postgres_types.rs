//! Every Postgres type Kalla maps, read through `PgTableProvider` from a real server:
//! exact values, NULLs, and a clear error naming the column where a value has no Arrow form.

use std::sync::Arc;

use datafusion::arrow::array::Array;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::prelude::SessionContext;
use kalla_core::postgres::{PgTableProvider, ScanOptions};
use kalla_core::{ClusterKey, SourceUri};
use kalla_e2e::postgres::TestDatabase;
use kalla_e2e::values::displayed;

fn key() -> ClusterKey {
    ClusterKey::generate()
}

async fn provider(db: &TestDatabase, table: &str) -> Result<PgTableProvider, String> {
    let uri = SourceUri::parse(&db.source_uri(table)).unwrap();
    PgTableProvider::connect(&uri, &key(), &ScanOptions::default())
        .await
        .map_err(|e| e.to_string())
}

/// Reads column `v` of `table` ordered by `id`, each value as Arrow displays it.
async fn read(db: &TestDatabase, table: &str) -> Result<(DataType, bool, Vec<Option<String>>), String> {
    let provider = provider(db, table).await?;
    let ctx = SessionContext::new();
    ctx.register_table("t", Arc::new(provider)).unwrap();
    let df = ctx
        .sql("SELECT v FROM t ORDER BY id")
        .await
        .map_err(|e| e.to_string())?;
    let field = df.schema().field(0).clone();
    let batches = df.collect().await.map_err(|e| e.to_string())?;
    let values = displayed(&batches);
    Ok((field.data_type().clone(), field.is_nullable(), values))
}

/// Creates `table(id serial, v <pg_type>)` with `values` (SQL literals, in order).
async fn table_of(db: &TestDatabase, table: &str, pg_type: &str, values: &[&str]) {
    db.execute(&format!(
        "CREATE TABLE {table} (id serial PRIMARY KEY, v {pg_type})"
    ))
    .await;
    for value in values {
        db.execute(&format!("INSERT INTO {table} (v) VALUES ({value})"))
            .await;
    }
}

async fn check(db: &TestDatabase, pg_type: &str, expected_type: DataType, cases: &[(&str, Option<&str>)]) {
    let table = format!("t_{}", pg_type.replace(|c: char| !c.is_ascii_alphanumeric(), "_"));
    let literals: Vec<&str> = cases.iter().map(|(literal, _)| *literal).collect();
    table_of(db, &table, pg_type, &literals).await;
    let (data_type, nullable, values) = read(db, &table)
        .await
        .unwrap_or_else(|e| panic!("{pg_type}: {e}"));
    assert_eq!(data_type, expected_type, "{pg_type}");
    assert!(nullable, "{pg_type} column is nullable");
    let expected: Vec<Option<String>> = cases.iter().map(|(_, v)| v.map(str::to_string)).collect();
    assert_eq!(values, expected, "{pg_type}");
}

#[tokio::test]
async fn integers_floats_and_booleans() {
    let db = TestDatabase::create().await;
    check(
        &db,
        "int2",
        DataType::Int16,
        &[
            ("-32768", Some("-32768")),
            ("32767", Some("32767")),
            ("NULL", None),
        ],
    )
    .await;
    check(
        &db,
        "int4",
        DataType::Int32,
        &[
            ("-2147483648", Some("-2147483648")),
            ("2147483647", Some("2147483647")),
            ("NULL", None),
        ],
    )
    .await;
    check(
        &db,
        "int8",
        DataType::Int64,
        &[
            ("-9223372036854775808", Some("-9223372036854775808")),
            ("9223372036854775807", Some("9223372036854775807")),
            ("NULL", None),
        ],
    )
    .await;
    check(
        &db,
        "float4",
        DataType::Float32,
        &[
            ("1.5", Some("1.5")),
            ("'-Infinity'", Some("-inf")),
            ("'NaN'", Some("NaN")),
            ("NULL", None),
        ],
    )
    .await;
    check(
        &db,
        "float8",
        DataType::Float64,
        &[("-0.1", Some("-0.1")), ("1e300", Some("1e300")), ("NULL", None)],
    )
    .await;
    check(
        &db,
        "bool",
        DataType::Boolean,
        &[("true", Some("true")), ("false", Some("false")), ("NULL", None)],
    )
    .await;
}

#[tokio::test]
async fn numerics_keep_every_digit() {
    let db = TestDatabase::create().await;
    check(
        &db,
        "numeric(15,2)",
        DataType::Decimal128(15, 2),
        &[
            ("1234567890123.45", Some("1234567890123.45")),
            ("-0.01", Some("-0.01")),
            ("0", Some("0.00")),
            ("7.5", Some("7.50")),
            ("NULL", None),
        ],
    )
    .await;
    check(
        &db,
        "numeric(38,0)",
        DataType::Decimal128(38, 0),
        &[(
            "99999999999999999999999999999999999999",
            Some("99999999999999999999999999999999999999"),
        )],
    )
    .await;
    check(
        &db,
        "numeric",
        DataType::Decimal128(38, 10),
        &[
            ("1.0000000001", Some("1.0000000001")),
            ("-123456789012345678.5", Some("-123456789012345678.5000000000")),
            ("NULL", None),
        ],
    )
    .await;
    // Wider than Decimal128 can hold: the exact text.
    check(
        &db,
        "numeric(50,2)",
        DataType::Utf8,
        &[(
            "123456789012345678901234567890123456789012345.67",
            Some("123456789012345678901234567890123456789012345.67"),
        )],
    )
    .await;
}

#[tokio::test]
async fn unrepresentable_values_fail_naming_the_column() {
    let db = TestDatabase::create().await;
    for (pg_type, good, bad, expected) in [
        ("numeric", "1", "1.00000000001", "more than 10 fractional digits"),
        ("numeric", "1", "'NaN'", "NaN"),
        ("numeric", "1", "1e30", "does not fit Decimal128(38,10)"),
        ("date", "'2020-01-01'", "'infinity'", "±infinity"),
        ("timestamp", "'2020-01-01'", "'-infinity'", "±infinity"),
        (
            "int4[]",
            "'{1}'",
            "'{{1,2},{3,4}}'",
            "only one-dimensional arrays",
        ),
    ] {
        let table = format!("bad_{}", rand_suffix());
        table_of(&db, &table, pg_type, &[good, bad]).await;
        let error = read(&db, &table)
            .await
            .expect_err("an unrepresentable value must fail the scan");
        assert!(
            error.contains(&format!("column \"v\" of public.{table}")),
            "{pg_type}: {error}"
        );
        assert!(error.contains(expected), "{pg_type}: {error}");
    }
}

fn rand_suffix() -> String {
    format!("{:x}", rand::random::<u32>())
}

#[tokio::test]
async fn text_types_enums_and_json() {
    let db = TestDatabase::create().await;
    check(
        &db,
        "text",
        DataType::Utf8,
        &[
            ("'héllo ✓'", Some("héllo ✓")),
            ("''", Some("")),
            ("E'tab\\there'", Some("tab\there")),
            ("NULL", None),
        ],
    )
    .await;
    check(
        &db,
        "varchar(10)",
        DataType::Utf8,
        &[("'abc'", Some("abc")), ("NULL", None)],
    )
    .await;
    check(
        &db,
        "char(4)",
        DataType::Utf8,
        &[("'ab'", Some("ab  ")), ("NULL", None)],
    )
    .await;
    check(
        &db,
        "name",
        DataType::Utf8,
        &[("'pg_class'", Some("pg_class")), ("NULL", None)],
    )
    .await;
    db.execute("CREATE TYPE colour AS ENUM ('red', 'green')").await;
    check(
        &db,
        "colour",
        DataType::Utf8,
        &[("'green'", Some("green")), ("NULL", None)],
    )
    .await;
    check(
        &db,
        "json",
        DataType::Utf8,
        &[(r#"'{"a": [1, 2]}'"#, Some(r#"{"a": [1, 2]}"#)), ("NULL", None)],
    )
    .await;
    check(
        &db,
        "jsonb",
        DataType::Utf8,
        &[
            (r#"'{"b": 1, "a": [1, 2]}'"#, Some(r#"{"a": [1, 2], "b": 1}"#)),
            ("NULL", None),
        ],
    )
    .await;
    check(
        &db,
        "uuid",
        DataType::Utf8,
        &[
            (
                "'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'",
                Some("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            ),
            ("NULL", None),
        ],
    )
    .await;
    check(
        &db,
        "bytea",
        DataType::Binary,
        &[("'\\x00ff10'", Some("00ff10")), ("''", Some("")), ("NULL", None)],
    )
    .await;
    // Types without a binary decoder arrive as their text form.
    check(
        &db,
        "inet",
        DataType::Utf8,
        &[("'10.1.2.3/24'", Some("10.1.2.3/24")), ("NULL", None)],
    )
    .await;
    db.execute("CREATE DOMAIN positive AS int4 CHECK (VALUE > 0)")
        .await;
    check(
        &db,
        "positive",
        DataType::Int32,
        &[("5", Some("5")), ("NULL", None)],
    )
    .await;
}

#[tokio::test]
async fn dates_times_and_intervals() {
    let db = TestDatabase::create().await;
    check(
        &db,
        "date",
        DataType::Date32,
        &[
            ("'2024-02-29'", Some("2024-02-29")),
            ("'1900-01-01'", Some("1900-01-01")),
            ("'0044-03-15 BC'", Some("-0043-03-15")),
            ("NULL", None),
        ],
    )
    .await;
    check(
        &db,
        "timestamp",
        DataType::Timestamp(datafusion::arrow::datatypes::TimeUnit::Microsecond, None),
        &[
            ("'2024-01-02 03:04:05.123456'", Some("2024-01-02T03:04:05.123456")),
            ("'1969-12-31 23:59:59.999999'", Some("1969-12-31T23:59:59.999999")),
            ("NULL", None),
        ],
    )
    .await;
    check(
        &db,
        "timestamptz",
        DataType::Timestamp(
            datafusion::arrow::datatypes::TimeUnit::Microsecond,
            Some("UTC".into()),
        ),
        &[
            ("'2024-01-02 03:04:05+02'", Some("2024-01-02T01:04:05Z")),
            ("NULL", None),
        ],
    )
    .await;
    check(
        &db,
        "time",
        DataType::Time64(datafusion::arrow::datatypes::TimeUnit::Microsecond),
        &[("'23:59:59.999999'", Some("23:59:59.999999")), ("NULL", None)],
    )
    .await;
    let (_, _, values) = {
        table_of(
            &db,
            "t_interval",
            "interval",
            &["'1 year 2 months 3 days 04:05:06.5'", "'-7 days'", "NULL"],
        )
        .await;
        read(&db, "t_interval").await.unwrap()
    };
    assert_eq!(values.len(), 3);
    assert!(values[2].is_none());
    let provider = provider(&db, "t_interval").await.unwrap();
    let ctx = SessionContext::new();
    ctx.register_table("t", Arc::new(provider)).unwrap();
    let batches = ctx
        .sql("SELECT v FROM t ORDER BY id")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let column = cast(
        batches[0].column(0),
        &DataType::Interval(datafusion::arrow::datatypes::IntervalUnit::MonthDayNano),
    )
    .unwrap();
    let intervals = column
        .as_any()
        .downcast_ref::<datafusion::arrow::array::IntervalMonthDayNanoArray>()
        .unwrap();
    let exact = |i: usize| {
        let v = intervals.value(i);
        (v.months, v.days, v.nanoseconds)
    };
    assert_eq!(exact(0), (14, 3, 14_706_500_000_000));
    assert_eq!(exact(1), (0, -7, 0));
}

#[tokio::test]
async fn one_dimensional_arrays() {
    let db = TestDatabase::create().await;
    let list = |inner: DataType| {
        DataType::List(Arc::new(datafusion::arrow::datatypes::Field::new(
            "item", inner, true,
        )))
    };
    check(
        &db,
        "int4[]",
        list(DataType::Int32),
        &[
            ("'{1,NULL,-3}'", Some("[1, , -3]")),
            ("'{}'", Some("[]")),
            ("NULL", None),
        ],
    )
    .await;
    check(
        &db,
        "text[]",
        list(DataType::Utf8),
        &[("ARRAY['a', NULL, 'ç']", Some("[a, , ç]")), ("NULL", None)],
    )
    .await;
    check(
        &db,
        "numeric(6,2)[]",
        list(DataType::Decimal128(6, 2)),
        &[("'{1.5,-2}'", Some("[1.50, -2.00]"))],
    )
    .await;
    check(
        &db,
        "date[]",
        list(DataType::Date32),
        &[("'{2020-01-01}'", Some("[2020-01-01]"))],
    )
    .await;
    // Arrays of types without a decoder are read as text.
    check(
        &db,
        "inet[]",
        DataType::Utf8,
        &[("'{10.0.0.1}'", Some("{10.0.0.1}"))],
    )
    .await;
}

#[tokio::test]
async fn views_are_one_partition_and_not_null_columns_are_not_nullable() {
    let db = TestDatabase::create().await;
    db.execute("CREATE TABLE base AS SELECT g AS id, g * 2 AS v FROM generate_series(1, 50000) g; ALTER TABLE base ALTER id SET NOT NULL; CREATE VIEW doubled AS SELECT id, v FROM base WHERE id % 2 = 0").await;
    let options = ScanOptions::in_partitions(8);
    let key = key();
    let table = PgTableProvider::connect(&SourceUri::parse(&db.source_uri("base")).unwrap(), &key, &options)
        .await
        .unwrap();
    assert_eq!(table.spec().partitions.len(), 8);
    let view = PgTableProvider::connect(
        &SourceUri::parse(&db.source_uri("doubled")).unwrap(),
        &key,
        &options,
    )
    .await
    .unwrap();
    assert_eq!(view.spec().partitions.len(), 1);
    use datafusion::catalog::TableProvider;
    assert!(!table.schema().field(0).is_nullable());
    let ctx = SessionContext::new();
    ctx.register_table("base", Arc::new(table)).unwrap();
    ctx.register_table("doubled", Arc::new(view)).unwrap();
    let batches = ctx
        .sql("SELECT (SELECT count(*) FROM base) AS a, (SELECT count(*) FROM doubled) AS b, (SELECT sum(v) FROM base) AS c")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let formatted = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
        .unwrap()
        .to_string();
    assert!(
        formatted.contains("| 50000 ")
            && formatted.contains("| 25000 ")
            && formatted.contains("| 2500050000 "),
        "{formatted}"
    );
}

#[tokio::test]
async fn missing_relations_and_identifiers_with_quotes() {
    let db = TestDatabase::create().await;
    let error = provider(&db, "nope").await.unwrap_err();
    assert!(error.contains("public.nope does not exist"), "{error}");
    db.execute(r#"CREATE SCHEMA "we.ird"; CREATE TABLE "we.ird"."ta""ble" ("co""l" int4); INSERT INTO "we.ird"."ta""ble" VALUES (42)"#).await;
    let uri = SourceUri::parse(&format!("{}?table=%22we.ird%22.%22ta%22%22ble%22", db.url)).unwrap();
    let provider = PgTableProvider::connect(&uri, &key(), &ScanOptions::default())
        .await
        .unwrap();
    let ctx = SessionContext::new();
    ctx.register_table("t", Arc::new(provider)).unwrap();
    let batches = ctx
        .sql(r#"SELECT "co""l" FROM t WHERE "co""l" = 42"#)
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
}
