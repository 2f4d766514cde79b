"""A Flight SQL client of Kalla's runner, driven by tests/tests/flight_sql.rs.

Connects with ADBC (adbc-driver-flightsql) and pyarrow.flight, runs what the test asks and prints
one JSON object of what it saw: the test compares it with Postgres's own answers.
Usage: flight_sql_client.py URL OPERATOR_TOKEN VIEWER_TOKEN REVOKED_TOKEN QUERY_JOB_ID
"""

import json
import sys
import warnings

import adbc_driver_flightsql as flightsql
import adbc_driver_flightsql.dbapi as dbapi
import pyarrow.flight as flight

warnings.simplefilter("ignore")
url, operator, viewer, revoked, query_job = sys.argv[1:6]
seen = {}


def connect(token):
    header = flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value
    return dbapi.connect(url, db_kwargs={header: f"Bearer {token}"})


def refusal(token, sql, parameters=None):
    try:
        with connect(token) as conn, conn.cursor() as cursor:
            cursor.execute(sql, parameters)
            cursor.fetchall()
        return None
    except Exception as error:  # the driver's errors carry the Flight status and message
        return str(error)


def texts(rows):
    return [[str(v) if v is not None else None for v in row] for row in rows]


LATEST = "results.latest_invoices_vs_payments"


with connect(operator) as conn:
    with conn.cursor() as cursor:
        cursor.execute("SELECT id, amount, note FROM shop.public.invoices ORDER BY id")
        table = cursor.fetch_arrow_table()
        seen["types"] = [str(field.type) for field in table.schema]
        seen["rows"] = texts(row.values() for row in table.to_pylist())
        # A connection's table joined with a query job's output, on the cluster.
        cursor.execute(
            "SELECT i.id, i.note, r.doubled FROM shop.public.invoices i "
            f"JOIN results.{query_job}.result r ON i.id = r.id ORDER BY i.id"
        )
        seen["joined"] = texts(cursor.fetchall())
        # A prepared statement: ADBC creates it, binds the row of values, then executes it.
        cursor.execute(
            "SELECT id, amount FROM shop.public.invoices WHERE id BETWEEN $1 AND $2 ORDER BY id",
            (7, 11),
        )
        seen["prepared"] = texts(cursor.fetchall())
    objects = conn.adbc_get_objects(depth="columns").read_all().to_pylist()
    seen["catalog"] = [
        {
            "catalog": c["catalog_name"],
            "schema": s["db_schema_name"],
            "table": t["table_name"],
            "columns": [col["column_name"] for col in (t["table_columns"] or [])],
        }
        for c in objects
        for s in c["catalog_db_schemas"] or []
        for t in s["db_schema_tables"] or []
    ]
    seen["info"] = {k: v for k, v in conn.adbc_get_info().items() if k.startswith("vendor")}

def field(number, payload):
    """A length-delimited protobuf field."""
    length, size = bytearray(), len(payload)
    while True:
        length.append((size & 0x7F) | (0x80 if size > 0x7F else 0))
        size >>= 7
        if not size:
            break
    return bytes([number << 3 | 2]) + bytes(length) + payload


def statement(sql):
    """Flight SQL's CommandStatementQuery{query}, wrapped in google.protobuf.Any."""
    type_url = b"type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery"
    return field(1, type_url) + field(2, field(1, sql.encode()))


# pyarrow.flight: the handshake with the token as a Basic password, then its bearer header.
client = flight.FlightClient(url)
bearer = client.authenticate_basic_token("anyone", operator)
options = flight.FlightCallOptions(headers=[bearer])
descriptor = flight.FlightDescriptor.for_command(statement("SELECT count(*) AS n FROM shop.public.invoices"))
info = client.get_flight_info(descriptor, options)
seen["pyarrow_count"] = client.do_get(info.endpoints[0].ticket, options).read_all().to_pylist()

with connect(viewer) as conn, conn.cursor() as cursor:
    cursor.execute(f"SELECT count(*) FROM {LATEST}.matched")
    seen["viewer_results"] = cursor.fetchall()
    cursor.execute(f"SELECT count(*) FROM {LATEST}.mismatched WHERE left_amount < $1", (0,))
    seen["viewer_prepared"] = cursor.fetchall()

seen["viewer_sql"] = refusal(viewer, "SELECT count(*) FROM shop.public.invoices")
seen["bad_parameter"] = refusal(operator, "SELECT id FROM shop.public.invoices WHERE id = $1", ("seven",))
seen["revoked"] = refusal(revoked, "SELECT 1")
seen["wrong"] = refusal("kalla_not_a_token", "SELECT 1")
seen["unknown_table"] = refusal(operator, "SELECT * FROM shop.public.nothing")
print(json.dumps(seen))
