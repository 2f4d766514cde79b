//! Reconciliations larger than the executors' memory: on real executors with tiny memory pools
//! the pairing spills to their work dirs and gives exactly the outputs of an unbounded run.

use std::path::Path;
use std::time::Duration;

use datafusion::prelude::{ParquetReadOptions, SessionContext};
use kalla_e2e::cluster::{Cluster, ClusterOptions};
use kalla_e2e::postgres::TestDatabase;
use kalla_e2e::runner::Runner;
use serde_json::{Value, json};
use tempfile::TempDir;

const OUTPUTS: [&str; 5] = ["matched", "mismatched", "left_only", "right_only", "duplicates"];
/// The reconciliation's shuffle partitions: small enough that the tables need more of them than
/// the cluster's 4 task slots.
const PAIR_PARTITION_MIB: u64 = 16;

/// 1,000,000 rows a side. Left: 950,000 invoices with their own ids, and 50,000 (5%) under one
/// hot id, `INV-HOT`. Right: a payment for every 10th invoice id missing, every 7th paid 1.00
/// more, every 13th twice, `INV-HOT` once, and the rest for ids no invoice has.
const DATA: &str = "
CREATE TABLE invoices AS
SELECT CASE WHEN i <= 950000 THEN 'INV-' || lpad(i::text, 8, '0') ELSE 'INV-HOT' END AS invoice_id,
       ((i % 9973) / 100.0)::numeric(12,2) AS amount
FROM generate_series(1::int8, 1000000::int8) AS i;
CREATE TABLE payments AS
SELECT 'INV-' || lpad(i::text, 8, '0') AS invoice_ref,
       ((i % 9973) / 100.0 + CASE WHEN i % 7 = 0 THEN 1 ELSE 0 END)::numeric(12,2) AS amount
FROM generate_series(1::int8, 950000::int8) AS i WHERE i % 10 <> 0;
INSERT INTO payments SELECT invoice_ref, amount FROM payments WHERE right(invoice_ref, 8)::int8 % 13 = 0;
INSERT INTO payments VALUES ('INV-HOT', 1.00);
INSERT INTO payments
SELECT 'INV-9' || lpad(j::text, 8, '0'), 2.00
FROM generate_series(1::int8, 1000000::int8 - (SELECT count(*) FROM payments)) AS j;
ANALYZE invoices;
ANALYZE payments;
";

async fn reconcile(db: &TestDatabase, executor_pool: &str) -> (Value, TempDir, Cluster) {
    let cluster = Cluster::start(ClusterOptions {
        executor_args: vec!["--memory-pool-size".into(), executor_pool.into()],
        ..ClusterOptions::default()
    })
    .await;
    let results = tempfile::Builder::new()
        .prefix("kalla-results-")
        .tempdir()
        .unwrap();
    let results_url = url::Url::from_directory_path(results.path()).unwrap().to_string();
    let runner_args = cluster.runner_args();
    let mut args: Vec<&str> = runner_args.iter().map(String::as_str).collect();
    let pair_partition_mib = PAIR_PARTITION_MIB.to_string();
    args.extend(["--cache-dir", &results_url, "--scan-partition-mib", "16"]);
    args.extend(["--pair-partition-mib", &pair_partition_mib]);
    let runner = Runner::start_in(TempDir::new().unwrap(), None, &args).await;
    for table in ["invoices", "payments"] {
        let uri = db.source_uri(&format!("public.{table}"));
        runner.register_source(table, &uri).await;
    }
    let recipe = json!({
        "name": "invoices-vs-payments",
        "left": {"source": "invoices", "key": ["invoice_id"]},
        "right": {"source": "payments", "key": ["invoice_ref"]},
        "rules": [{"kind": "numeric", "left": "amount", "right": "amount", "abs_tol": 0.01}]
    });
    let id = runner
        .submit_job(json!({"type": "recon", "recipe": recipe}))
        .await;
    let job = runner.wait_for_job(&id, Duration::from_secs(600)).await;
    assert_eq!(
        job["status"],
        "succeeded",
        "{job}\n{}\n{}",
        runner.logs(),
        cluster.log_tails()
    );
    (job, results, cluster)
}

/// The shuffle partitions the scheduler sized the reconciliation's pairing to.
fn shuffle_partitions(cluster: &Cluster) -> u64 {
    let log = cluster.log("scheduler");
    let line = log
        .lines()
        .find(|line| line.contains("a reconciliation's shuffle is sized"))
        .unwrap_or_else(|| panic!("no sizing in the scheduler's log:\n{log}"));
    let (_, partitions) = line.split_once("partitions=").unwrap();
    partitions.trim().parse().unwrap()
}

/// Rows of `output` in one run's results that the other run's lack, counting repeats.
async fn rows_apart(first: &Path, first_job: &str, second: &Path, second_job: &str, output: &str) -> usize {
    let ctx = SessionContext::new();
    for (name, dir, job) in [("a", first, first_job), ("b", second, second_job)] {
        let url = format!("{}/", dir.join("results").join(job).join(output).display());
        ctx.register_parquet(name, &url, ParquetReadOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{output} of {job}: {e}"));
    }
    let apart = ctx
        .sql("SELECT count(*) FROM (SELECT * FROM a EXCEPT ALL SELECT * FROM b)")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let count = kalla_core::preview::text_rows(&apart).unwrap()[0][0].clone();
    count.unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_hot_key_on_executors_with_32_mb_spills_and_changes_no_row() {
    let db = TestDatabase::create().await;
    db.execute(DATA).await;

    let (bounded, bounded_results, bounded_cluster) = reconcile(&db, "32MB").await;
    let bounded_partitions = shuffle_partitions(&bounded_cluster);
    drop(bounded_cluster);
    let (unbounded, unbounded_results, unbounded_cluster) = reconcile(&db, "0").await;

    let skew = &bounded["summary"]["skew"];
    assert!(skew["spilled_bytes"].as_u64().unwrap() > 0, "{bounded}");
    let hot_keys = skew["hot_keys"].to_string();
    assert!(hot_keys.contains("INV-HOT (50000 rows)"), "{bounded}");
    assert_eq!(unbounded["summary"]["skew"]["spilled_bytes"], 0, "{unbounded}");
    assert_eq!(
        skew["hot_keys"].as_array().unwrap().len(),
        1,
        "only the hot key: {bounded}"
    );
    // Sized by the tables' heaps (every column of both is read), not by the task slots.
    let heaps: i64 =
        sqlx::query_scalar("SELECT (pg_relation_size('invoices') + pg_relation_size('payments'))::int8")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let sized = (heaps as u64).div_ceil(PAIR_PARTITION_MIB << 20);
    assert!(sized > 4, "{heaps} bytes of heap");
    assert_eq!(bounded_partitions, sized);
    assert_eq!(shuffle_partitions(&unbounded_cluster), sized);
    assert!(skew["largest_task_rows"].as_u64().unwrap() > 50_000, "{bounded}");

    let outputs = &bounded["summary"]["outputs"];
    assert_eq!(*outputs, unbounded["summary"]["outputs"]);
    assert_eq!(outputs["duplicates"], 50_000 + 2 * 65_769, "{outputs}");
    assert!(outputs["mismatched"].as_u64().unwrap() > 100_000, "{outputs}");
    let (bounded_id, unbounded_id) = (bounded["id"].as_str().unwrap(), unbounded["id"].as_str().unwrap());
    for output in OUTPUTS {
        let (a, b) = (bounded_results.path(), unbounded_results.path());
        assert_eq!(
            rows_apart(a, bounded_id, b, unbounded_id, output).await,
            0,
            "{output}"
        );
        assert_eq!(
            rows_apart(b, unbounded_id, a, bounded_id, output).await,
            0,
            "{output}"
        );
    }
}
