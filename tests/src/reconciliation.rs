//! The reconciliation data set the tests share: invoices and payments generated in Postgres with
//! every kind of outcome, the truth about them computed independently in Postgres SQL, and the
//! recipe that reconciles them.

use serde_json::{Value, json};

use crate::postgres::TestDatabase;

/// The data set with `n` invoices. Invoice `i` falls in bucket `b = (i·7919 + 11) mod 100` (every bucket equally often):
/// - 0..=79 and 97: one payment, same amount, paid 0..=30 days later (matched; 1 in 7 payments
///   spells the currency in lower case with spaces, which the rule ignores), except 97: no currency;
/// - 80..=84: one payment, amount ± 0.01 (matched within the tolerance of exactly 0.01);
/// - 85..=87: amount + 5.00 (mismatched: amount); 88, 89: paid 45 days later (mismatched: date);
///   90, 91: both;
/// - 92..=94: no payment (left only); 98: a void payment, filtered out (left only);
/// - 95: the invoice twice (both rows duplicates; the payment is right only);
/// - 96: two payments (both duplicates; the invoice is left only);
/// - 99: matched.
///
/// Plus n/20 payments for unknown invoices and n/1000 with no invoice reference (right only),
/// and n/2000 invoices without an id (left only).
pub fn data(n: u64) -> String {
    format!(
        "
CREATE TABLE base AS
SELECT i, (i * 7919 + 11) % 100 AS b,
       'INV-' || lpad(i::text, 8, '0') AS invoice_id,
       ((100 + (i * 37) % 99900) / 100.0)::numeric(12,2) AS amount,
       (ARRAY['EUR','USD','GBP'])[1 + (i % 3)::int] AS currency,
       DATE '2024-01-01' + (i % 365)::int AS issued_on
FROM generate_series(1::int8, {n}::int8) AS i;
CREATE TABLE invoices AS SELECT invoice_id, amount, currency, issued_on FROM base;
INSERT INTO invoices SELECT invoice_id, amount, currency, issued_on FROM base WHERE b = 95;
INSERT INTO invoices SELECT NULL, 1.00, 'EUR', DATE '2024-01-01' FROM generate_series(1, {n} / 2000);
CREATE TABLE payments AS
SELECT 'PAY-' || i AS payment_id, invoice_id AS invoice_ref,
       (amount + CASE WHEN b BETWEEN 80 AND 84 THEN CASE WHEN i % 2 = 0 THEN 0.01 ELSE -0.01 END
                      WHEN b BETWEEN 85 AND 87 OR b IN (90, 91) THEN 5.00 ELSE 0 END)::numeric(12,2) AS amount,
       CASE WHEN b = 97 THEN NULL WHEN i % 7 = 0 THEN ' ' || lower(currency) || ' ' ELSE currency END AS currency,
       issued_on + CASE WHEN b BETWEEN 88 AND 91 THEN 45 ELSE (i % 31)::int END AS paid_on,
       CASE WHEN b = 98 THEN 'void' ELSE 'ok' END AS status
FROM base WHERE b NOT IN (92, 93, 94);
INSERT INTO payments
SELECT p.payment_id || '-2', p.invoice_ref, p.amount, p.currency, p.paid_on, p.status
FROM payments p JOIN base ON base.invoice_id = p.invoice_ref WHERE base.b = 96;
INSERT INTO payments
SELECT 'PAY-X' || j, 'INV-9' || lpad(j::text, 7, '0'), (j % 1000) + 0.50, 'EUR', DATE '2024-06-01', 'ok'
FROM generate_series(1, {n} / 20) AS j;
INSERT INTO payments SELECT 'PAY-N' || j, NULL, 10.00, 'EUR', DATE '2024-06-01', 'ok' FROM generate_series(1, {n} / 1000) AS j;
DROP TABLE base;
ANALYZE invoices;
ANALYZE payments;
"
    )
}

/// The same classification, written independently in Postgres SQL.
pub const TRUTH: &str = "
WITH l AS (SELECT * FROM invoices),
r AS (SELECT * FROM payments WHERE status <> 'void'),
lk AS (SELECT invoice_id AS k, count(*) AS n FROM l WHERE invoice_id IS NOT NULL GROUP BY 1),
rk AS (SELECT invoice_ref AS k, count(*) AS n FROM r WHERE invoice_ref IS NOT NULL GROUP BY 1),
pairs AS (
  SELECT l.amount, l.currency, l.issued_on, r.amount AS r_amount, r.currency AS r_currency, r.paid_on
  FROM l JOIN lk ON lk.k = l.invoice_id AND lk.n = 1
         JOIN r ON r.invoice_ref = l.invoice_id
         JOIN rk ON rk.k = r.invoice_ref AND rk.n = 1),
judged AS (
  SELECT (abs(r_amount - amount) <= 0.01) IS TRUE AS amount_ok,
         (paid_on - issued_on BETWEEN 0 AND 30) IS TRUE AS date_ok,
         (upper(btrim(currency)) = upper(btrim(r_currency))) IS TRUE AS currency_ok,
         r_amount <> amount AS differs
  FROM pairs)
SELECT ARRAY[
  (SELECT count(*) FROM judged WHERE amount_ok AND date_ok AND currency_ok),
  (SELECT count(*) FROM judged WHERE NOT (amount_ok AND date_ok AND currency_ok)),
  (SELECT count(*) FROM l LEFT JOIN lk ON lk.k = l.invoice_id WHERE lk.n IS NULL OR lk.n = 1)
    - (SELECT count(*) FROM pairs),
  (SELECT count(*) FROM r LEFT JOIN rk ON rk.k = r.invoice_ref WHERE rk.n IS NULL OR rk.n = 1)
    - (SELECT count(*) FROM pairs),
  (SELECT count(*) FROM l JOIN lk ON lk.k = l.invoice_id WHERE lk.n > 1)
    + (SELECT count(*) FROM r JOIN rk ON rk.k = r.invoice_ref WHERE rk.n > 1),
  (SELECT count(*) FROM judged WHERE amount_ok AND date_ok AND currency_ok AND differs),
  (SELECT count(*) FROM judged WHERE NOT amount_ok),
  (SELECT count(*) FROM judged WHERE NOT date_ok),
  (SELECT count(*) FROM judged WHERE NOT currency_ok)
]";

/// Postgres's truth: rows per output, then matched-within-tolerance and failures per rule.
#[derive(Debug, PartialEq, Eq)]
pub struct Truth {
    pub outputs: Value,
    pub within_tolerance: i64,
    pub amount_failed: i64,
    pub date_failed: i64,
    pub currency_failed: i64,
}

pub async fn truth(db: &TestDatabase) -> Truth {
    // The CTEs are materialized without statistics; nested loops over them would take hours.
    let mut tx = db.pool.begin().await.unwrap();
    sqlx::query("SET LOCAL enable_nestloop = off")
        .execute(&mut *tx)
        .await
        .unwrap();
    let numbers: Vec<i64> = sqlx::query_scalar(TRUTH).fetch_one(&mut *tx).await.unwrap();
    tx.commit().await.unwrap();
    Truth {
        outputs: json!({
            "matched": numbers[0], "mismatched": numbers[1], "left_only": numbers[2],
            "right_only": numbers[3], "duplicates": numbers[4], "exceptions": 0, "ambiguous": 0,
        }),
        within_tolerance: numbers[5],
        amount_failed: numbers[6],
        date_failed: numbers[7],
        currency_failed: numbers[8],
    }
}

pub fn recipe(name: &str, left: &str, right: &str) -> Value {
    json!({
        "name": name,
        "left": {"source": left, "key": ["invoice_id"]},
        "right": {"source": right, "key": ["invoice_ref"],
                  "filters": [{"column": "status", "op": "neq", "value": "void"}]},
        "rules": [
            {"kind": "numeric", "left": "amount", "right": "amount", "abs_tol": 0.01},
            {"kind": "date_window", "left": "issued_on", "right": "paid_on", "min_days": 0, "max_days": 30},
            {"kind": "equal", "left": "currency", "right": "currency", "trim": true, "case_insensitive": true}
        ]
    })
}
