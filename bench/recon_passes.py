"""The waterfall benchmark's data and its DuckDB anchor (run by bench/recon-passes.sh).

  recon_passes.py generate DIR      invoices and payments as parquet in DIR/invoices, DIR/payments
  recon_passes.py duckdb DIR OUT    the three passes in DuckDB SQL over DIR, outputs in OUT/*.parquet
  recon_passes.py compare KALLA OUT every output of Kalla's job (KALLA/<output>/) against OUT's

The passes are those of the recipe bench/recon-passes.sh stores: `reference` (invoice_id =
invoice_ref, one to one, amount within 0.01 and paid 0..30 days after issue), `split` (the same
key, one invoice to many payments, their sum within 0.01 of the invoice, at most 10 rows a group)
and `customer_amount` (customer_id and amount equal, the nearest payment date within 3 days);
the payments' `payment_id` is carried into every output.
"""
import glob
import json
import os
import sys
import time

import duckdb

# INVOICES: a smaller set to try the script on (the benchmark is 5M).
INVOICES = int(os.environ.get("INVOICES", 5_000_000))
# Each output's columns, as Kalla writes them: every column a pass reads, and the payments' id,
# which the recipe carries.
LEFT = ["left_invoice_id", "left_customer_id", "left_amount", "left_issued_on"]
RIGHT = ["right_invoice_ref", "right_customer_id", "right_amount", "right_paid_on", "right_payment_id"]
DIFFERENCES = ["amount_diff", "issued_on_days"]
DECIDED = ["pass", "group_id", "side", *LEFT, *RIGHT, *DIFFERENCES]
OUTPUT_COLUMNS = {
    "matched": DECIDED,
    "mismatched": [*DECIDED, "failed_rules"],
    "left_only": ["pass", *LEFT],
    "right_only": ["pass", *RIGHT],
    "duplicates": ["pass", "side", *LEFT, *RIGHT],
    "exceptions": ["pass", "group_id", "side", *LEFT, *RIGHT, "reason"],
    "ambiguous": ["pass", "group_id", *LEFT, *RIGHT],
}
MAX_GROUP_SIZE = 10


def connect():
    return duckdb.connect(config={"threads": 2})


def generate(directory):
    """5M invoices in buckets of `b` (0..99), and their payments:

    - 0..72 paid by one payment with the reference; 99 too, plus a payment referring to no
      invoice (customer 0): matched by `reference`, and right only;
    - 73 paid 5.00 too much, 74 paid 45 days late: mismatched by `reference`;
    - 75..94 paid in 1 to 4 parts (1, 2, 3, 4 in 10%, 30%, 30%, 30%), one in a thousand in 12
      parts, one in fifty 1.00 short: parts of one are matched by `reference`, the rest by `split`
      (matched, mismatched, or exceptions for 13 rows);
    - 95..97 paid without a reference, within 3 days of issue: found by `customer_amount`. In 97,
      a customer's invoices of an odd period repeat the amount of the period before, so two
      invoices and two payments share customer and amount, and only the dates tell them apart;
    - 98 unpaid (left only), one in ten of them twice in the file.

    A customer's invoices of one period (id // 250,000) have amounts in their own range, so
    customer and amount are unique but for bucket 97's repeats.
    """
    con = connect()
    con.execute(f"""
        CREATE TABLE invoices AS
        WITH base AS (
          SELECT id AS invoice_id, (id % 250000 + 1)::BIGINT AS customer_id,
                 (((id - 1) // 250000) * 50000 + (id * 2654435761) % 49000 + 1000) AS own_cents,
                 DATE '2026-01-01' + (id % 330)::INTEGER AS issued_on, (id * 7919 + 13) % 100 AS b
          FROM range(1, {INVOICES + 1}) t(id))
        SELECT invoice_id, customer_id,
               (CASE WHEN b = 97 AND ((invoice_id - 1) // 250000) % 2 = 1
                     THEN own_cents - 50000 - (invoice_id * 2654435761) % 49000
                          + ((invoice_id - 250000) * 2654435761) % 49000
                     ELSE own_cents END * 0.01)::DECIMAL(12,2) AS amount,
               issued_on, b
        FROM base""")
    con.execute("INSERT INTO invoices SELECT * FROM invoices WHERE b = 98 AND (invoice_id // 100) % 10 = 0")
    con.execute("""
        CREATE TABLE payments AS
        WITH one AS (
          SELECT invoice_id AS invoice_ref, customer_id,
                 CASE WHEN b = 73 THEN amount + 5 ELSE amount END AS amount,
                 issued_on + CASE WHEN b = 74 THEN 45 ELSE (invoice_id % 25)::INTEGER END AS paid_on
          FROM invoices WHERE b < 75 OR b = 99),
        split AS (
          SELECT *, (amount * 100)::BIGINT AS cents,
                 CASE WHEN (invoice_id // 100) % 1000 = 7 THEN 12
                      ELSE [1, 2, 2, 2, 3, 3, 3, 4, 4, 4][(invoice_id // 100) % 10 + 1] END AS k
          FROM invoices WHERE b BETWEEN 75 AND 94),
        parts AS (
          SELECT invoice_id AS invoice_ref, customer_id,
                 (CASE WHEN p < k THEN cents // k
                       ELSE cents - (k - 1) * (cents // k) - CASE WHEN k > 1 AND (invoice_id // 1000) % 50 = 0 THEN 100 ELSE 0 END
                  END * 0.01)::DECIMAL(12,2) AS amount,
                 issued_on + 3 * p::INTEGER AS paid_on
          FROM split, range(1, 13) r(p) WHERE p <= k),
        unreferenced AS (
          SELECT NULL::BIGINT AS invoice_ref, customer_id, amount,
                 issued_on + ((invoice_id % 7) - 3)::INTEGER AS paid_on
          FROM invoices WHERE b BETWEEN 95 AND 97),
        strays AS (
          SELECT invoice_id + 100000000 AS invoice_ref, 0::BIGINT AS customer_id, amount, issued_on + 1 AS paid_on
          FROM invoices WHERE b = 99)
        SELECT row_number() OVER (ORDER BY paid_on, invoice_ref, amount) AS payment_id,
               invoice_ref, customer_id, amount::DECIMAL(12,2) AS amount, paid_on
        FROM (SELECT * FROM one UNION ALL SELECT * FROM parts UNION ALL SELECT * FROM unreferenced
              UNION ALL SELECT * FROM strays)""")
    # Four files a side, so that both systems read them in parallel.
    con.execute("SET threads = 4")
    for table, columns in [("invoices", "invoice_id, customer_id, amount, issued_on"),
                           ("payments", "payment_id, invoice_ref, customer_id, amount, paid_on")]:
        con.execute(f"COPY (SELECT {columns} FROM {table}) TO '{directory}/{table}' "
                    "(FORMAT parquet, PER_THREAD_OUTPUT true, OVERWRITE true)")
    counts = con.execute("SELECT (SELECT count(*) FROM invoices), (SELECT count(*) FROM payments), "
                         "(SELECT count(*) FROM payments WHERE invoice_ref IS NULL)").fetchone()
    print(json.dumps(dict(zip(["invoices", "payments", "payments_without_reference"], counts))))


def select(columns, values):
    """`values` (output column → SQL) in the output's column order; NULL where absent."""
    return ", ".join(f"{values.get(c, 'NULL')} AS {c}" for c in columns)


def side_values(alias, left):
    columns, prefix = (LEFT, "left_") if left else (RIGHT, "right_")
    return {c: f"{alias}.{c[len(prefix):]}" for c in columns}


def run_passes(directory, out):
    """The waterfall in DuckDB SQL, each output written as one parquet file in `out`."""
    start = time.perf_counter()
    con = connect()
    run = con.execute
    os.makedirs(out, exist_ok=True)
    run(f"CREATE TEMP TABLE l0 AS SELECT invoice_id, customer_id, amount, issued_on "
        f"FROM read_parquet('{directory}/invoices/*.parquet')")
    run(f"CREATE TEMP TABLE r0 AS SELECT invoice_ref, customer_id, amount, paid_on, payment_id "
        f"FROM read_parquet('{directory}/payments/*.parquet')")
    parts = {output: [] for output in OUTPUT_COLUMNS}
    left, right = side_values("l", True), side_values("r", False)

    # Pass 1, reference: pairs of a key with one row on each side.
    run("""CREATE TEMP TABLE d1 AS
        SELECT l.rowid AS lrn, r.rowid AS rrn,
               coalesce(abs(r.amount - l.amount) <= 0.01, false) AS ok_amount,
               coalesce((r.paid_on - l.issued_on) BETWEEN 0 AND 30, false) AS ok_date
        FROM l0 l JOIN r0 r ON l.invoice_id = r.invoice_ref
        WHERE l.invoice_id IN (SELECT invoice_id FROM l0 GROUP BY 1 HAVING count(*) = 1)
          AND r.invoice_ref IN (SELECT invoice_ref FROM r0 GROUP BY 1 HAVING count(*) = 1)""")
    pair = {**left, **right, "pass": "'reference'", "group_id": "'reference:' || l.invoice_id",
            "amount_diff": "r.amount - l.amount", "issued_on_days": "r.paid_on - l.issued_on",
            "failed_rules": "concat_ws(',', CASE WHEN NOT ok_amount THEN 'amount' END, "
                            "CASE WHEN NOT ok_date THEN 'issued_on' END)"}
    pairs = "FROM d1 JOIN l0 l ON l.rowid = d1.lrn JOIN r0 r ON r.rowid = d1.rrn"
    parts["matched"].append((f"SELECT {{matched}} {pairs} WHERE ok_amount AND ok_date", pair))
    parts["mismatched"].append((f"SELECT {{mismatched}} {pairs} WHERE NOT (ok_amount AND ok_date)", pair))
    run("CREATE TEMP TABLE l1 AS SELECT * FROM l0 WHERE rowid NOT IN (SELECT lrn FROM d1)")
    run("CREATE TEMP TABLE r1 AS SELECT * FROM r0 WHERE rowid NOT IN (SELECT rrn FROM d1)")

    # Pass 2, split: an invoice alone on its key with every payment of that key.
    run("""CREATE TEMP TABLE g2 AS
        SELECT l.rowid AS lrn, any_value(l.invoice_id) AS invoice_id,
               sum(r.amount) - any_value(l.amount) AS amount_diff, count(*) + 1 AS size
        FROM l1 l JOIN r1 r ON l.invoice_id = r.invoice_ref
        WHERE l.invoice_id IN (SELECT invoice_id FROM l1 GROUP BY 1 HAVING count(*) = 1)
        GROUP BY l.rowid""")
    within = f"size <= {MAX_GROUP_SIZE}"
    ok = "abs(g.amount_diff) <= 0.01"
    for side, values_of_side, rows in [
            ("left", left, "FROM g2 g JOIN l1 l ON l.rowid = g.lrn"),
            ("right", right, "FROM g2 g JOIN r1 r ON r.invoice_ref = g.invoice_id")]:
        member = {**values_of_side, "pass": "'split'", "group_id": "'split:' || g.invoice_id",
                  "side": f"'{side}'", "amount_diff": "g.amount_diff", "failed_rules": "'amount'",
                  "reason": f"'a group of ' || size || ' rows, more than max_group_size {MAX_GROUP_SIZE}'"}
        for output, condition in [("matched", f"{within} AND {ok}"), ("mismatched", f"{within} AND NOT {ok}"),
                                  ("exceptions", f"NOT {within}")]:
            parts[output].append((f"SELECT {{{output}}} {rows} WHERE {condition}", member))
    run("CREATE TEMP TABLE l2 AS SELECT * FROM l1 WHERE rowid NOT IN (SELECT lrn FROM g2)")
    run("CREATE TEMP TABLE r2 AS SELECT * FROM r1 WHERE invoice_ref IS NULL "
        "OR invoice_ref NOT IN (SELECT invoice_id FROM g2)")

    # Pass 3, customer_amount: candidates within 3 days. Greedy nearest-first takes every
    # candidate when no row has two; the data is made so, and that is checked, not assumed.
    run("""CREATE TEMP TABLE c3 AS
        SELECT l.rowid AS lrn, r.rowid AS rrn,
               row_number() OVER (PARTITION BY l.customer_id, l.amount
                                  ORDER BY abs(r.paid_on - l.issued_on), l.issued_on, r.paid_on) AS rank
        FROM l2 l JOIN r2 r ON l.customer_id = r.customer_id AND l.amount = r.amount
        WHERE abs(r.paid_on - l.issued_on) <= 3""")
    most = run("SELECT max(n) FROM (SELECT count(*) AS n FROM c3 GROUP BY lrn "
               "UNION ALL SELECT count(*) FROM c3 GROUP BY rrn)").fetchone()[0]
    if most is not None and most > 1:
        sys.exit(f"a row has {most} candidates in pass customer_amount: this SQL does not break ties")
    last = "'customer_amount'"
    near = {**left, **right, "pass": last,
            "group_id": "'customer_amount:' || l.customer_id || '|' || l.amount || '#' || rank"}
    parts["matched"].append((
        "SELECT {matched} FROM c3 JOIN l2 l ON l.rowid = c3.lrn JOIN r2 r ON r.rowid = c3.rrn", near))
    parts["left_only"].append(("SELECT {left_only} FROM l2 l WHERE rowid NOT IN (SELECT lrn FROM c3)",
                               {**left, "pass": last}))
    parts["right_only"].append(("SELECT {right_only} FROM r2 r WHERE rowid NOT IN (SELECT rrn FROM c3)",
                                {**right, "pass": last}))
    for output in ["duplicates", "ambiguous"]:
        parts[output].append((f"SELECT {{{output}}} WHERE false", {}))
    for output, columns in OUTPUT_COLUMNS.items():
        queries = [sql.format(**{output: select(columns, values)}) for sql, values in parts[output]]
        run(f"COPY ({' UNION ALL '.join(queries)}) TO '{out}/{output}.parquet' (FORMAT parquet)")
    counts = {o: run(f"SELECT count(*) FROM '{out}/{o}.parquet'").fetchone()[0] for o in OUTPUT_COLUMNS}
    print(json.dumps(dict(counts, seconds=round(time.perf_counter() - start, 3))))


def compare(kalla, out):
    """Each output's rows (as text), Kalla's against DuckDB's: rows only one of them has."""
    con = connect()
    report = {}
    for output, columns in OUTPUT_COLUMNS.items():
        texts = ", ".join(f"CAST({c} AS VARCHAR) AS {c}" for c in columns)
        files = glob.glob(f"{kalla}/{output}/*.parquet")
        mine = f"SELECT {texts} FROM read_parquet({files})" if files else f"SELECT {texts} FROM '{out}/{output}.parquet' WHERE false"
        theirs = f"SELECT {texts} FROM '{out}/{output}.parquet'"
        only = lambda a, b: con.execute(f"SELECT count(*) FROM ({a} EXCEPT ALL {b})").fetchone()[0]
        rows = con.execute(f"SELECT count(*) FROM ({mine})").fetchone()[0]
        report[output] = {"rows": rows, "only_kalla": only(mine, theirs), "only_duckdb": only(theirs, mine)}
    print(json.dumps(report))
    if any(r["only_kalla"] or r["only_duckdb"] for r in report.values()):
        sys.exit(f"Kalla's and DuckDB's outputs differ: {report}")


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"generate": generate, "duckdb": run_passes, "compare": compare}[command](*args)
