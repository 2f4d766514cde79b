-- The invoices/payments pair of ../shared/data/20_recon.sql at any size (psql variables `rows`
-- and `suffix`: tables invoices_<suffix> and payments_<suffix>), for the memory benchmark.
-- The same buckets and values as 20_recon.sql, so at 5,000,000 rows its counts are that file's
-- truth; what changes with the size:
--   * ids are 9 digits wide (INV-000000001 .. INV-999999999), 20_recon.sql's 7 would truncate at
--     10,000,000 and make distinct invoices collide;
--   * the right-only payments are rows/50 of them (2%, 100,000 at 5M) and refer to invoices
--     rows+1 .., beyond the largest invoice id, so none of them matches by accident.
-- The truth for each size is written into recon_scale_truth from the bucket definitions alone,
-- not by joining the tables, so a wrong join cannot agree with it by construction.
--   psql -v rows=50000000 -v suffix=50m -f 00_helpers.sql -f bench/recon_scale.sql
\set ON_ERROR_STOP on
SET max_parallel_workers_per_gather = 0;
SET work_mem = '512MB';
BEGIN;
DROP TABLE IF EXISTS payments_:suffix;
DROP TABLE IF EXISTS invoices_:suffix;
CREATE TABLE invoices_:suffix (
  invoice_id  text          NOT NULL,
  customer_id int8          NOT NULL,
  amount      numeric(12,2) NOT NULL,
  currency    char(3)       NOT NULL,
  issued_on   date          NOT NULL,
  reference   text
);
INSERT INTO invoices_:suffix
SELECT 'INV-' || lpad(i::text, 9, '0'),
       1 + kb_h(i, 201) % 100000,
       ((100 + kb_h(i, 202) % 9999900) / 100.0)::numeric(12,2),
       (ARRAY['USD','EUR','GBP','CHF'])[1 + kb_h(i, 203) % 4],
       date '2023-01-01' + (kb_h(i, 204) % 730)::int,
       'PO-' || lpad((kb_h(i, 205) % 1000000)::text, 6, '0')
FROM generate_series(1::int8, :rows::int8) AS i;

CREATE TABLE payments_:suffix (
  payment_id  text          NOT NULL,
  invoice_ref text          NOT NULL,
  amount      numeric(12,2) NOT NULL,
  currency    char(3)       NOT NULL,
  paid_on     date          NOT NULL,
  memo        text
);
INSERT INTO payments_:suffix
SELECT 'PAY-' || lpad((row_number() OVER (ORDER BY shuffle, invoice_ref))::text, 10, '0'),
       invoice_ref, amount, currency, paid_on, memo
FROM (
  SELECT inv.invoice_id AS invoice_ref,
         (CASE
            WHEN inv.b < 92 THEN inv.amount
            WHEN inv.b < 96 THEN inv.amount + CASE WHEN kb_h(inv.n, 302) % 2 = 0 THEN 0.01 ELSE -0.01 END
            ELSE CASE WHEN kb_h(inv.n, 303) % 2 = 0 OR inv.amount - inv.d <= 0
                      THEN inv.amount + inv.d ELSE inv.amount - inv.d END
          END)::numeric(12,2)                                       AS amount,
         inv.currency,
         inv.issued_on + (kb_h(inv.n, 304) % 31)::int               AS paid_on,
         (ARRAY['ACH','WIRE','CARD','CHECK'])[1 + kb_h(inv.n, 306) % 4] || ' ' || inv.invoice_id AS memo,
         kb_h(inv.n, 305)                                           AS shuffle
  FROM (SELECT i.*, substr(i.invoice_id, 5)::int8 AS n,
               kb_h(substr(i.invoice_id, 5)::int8, 301) % 100 AS b,
               (0.02 + (kb_h(substr(i.invoice_id, 5)::int8, 307) % 100000) / 100.0) AS d
        FROM invoices_:suffix i) AS inv
  WHERE inv.b < 98
  UNION ALL
  SELECT 'INV-' || lpad((:rows::int8 + j)::text, 9, '0'),
         ((100 + kb_h(j, 402) % 9999900) / 100.0)::numeric(12,2),
         (ARRAY['USD','EUR','GBP','CHF'])[1 + kb_h(j, 403) % 4],
         date '2023-01-01' + (kb_h(j, 404) % 760)::int,
         (ARRAY['ACH','WIRE','CARD','CHECK'])[1 + kb_h(j, 406) % 4] || ' ' || 'INV-' || lpad((:rows::int8 + j)::text, 9, '0'),
         kb_h(:rows::int8 + j, 305)
  FROM generate_series(1::int8, :rows::int8 / 50) AS j
) src;

CREATE TABLE IF NOT EXISTS recon_scale_truth (
  suffix text PRIMARY KEY, matched int8, mismatched int8, left_only int8, right_only int8
);
DELETE FROM recon_scale_truth WHERE suffix = :'suffix';
INSERT INTO recon_scale_truth
SELECT :'suffix',
       count(*) FILTER (WHERE b < 96),
       count(*) FILTER (WHERE b >= 96 AND b < 98),
       count(*) FILTER (WHERE b >= 98),
       :rows::int8 / 50
FROM (SELECT kb_h(i, 301) % 100 AS b FROM generate_series(1::int8, :rows::int8) AS i) AS buckets;
COMMENT ON TABLE payments_:suffix IS 'kalla-bench:payments-scale:v1';
COMMIT;
VACUUM (ANALYZE) invoices_:suffix;
VACUUM (ANALYZE) payments_:suffix;
