"""A Flight SQL client of Kalla's runner, driven by tests/tests/flight_sql.rs.

Connects with ADBC (adbc-driver-flightsql) and pyarrow.flight, runs what the test asks and prints
one JSON object of what it saw: the test compares it with Postgres's own answers.
Usage: flight_sql_client.py URL OPERATOR_TOKEN VIEWER_TOKEN REVOKED_TOKEN
"""

import json
import sys
import warnings

import adbc_driver_flightsql as flightsql
import adbc_driver_flightsql.dbapi as dbapi
import pyarrow.flight as flight

warnings.simplefilter("ignore")
url, operator, viewer, revoked = sys.argv[1:5]
seen = {}


def connect(token):
    header = flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value
    return dbapi.connect(url, db_kwargs={header: f"Bearer {token}"})


def refusal(token, sql):
    try:
        with connect(token) as conn, conn.cursor() as cursor:
            cursor.execute(sql)
            cursor.fetchall()
        return None
    except Exception as error:  # the driver's errors carry the Flight status and message
        return str(error)


with connect(operator) as conn:
    with conn.cursor() as cursor:
        cursor.execute("SELECT id, amount, note FROM shop.public.invoices ORDER BY id")
        table = cursor.fetch_arrow_table()
        seen["types"] = [str(field.type) for field in table.schema]
        seen["rows"] = [[str(v) if v is not None else None for v in row.values()] for row in table.to_pylist()]
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

seen["viewer_sql"] = refusal(viewer, "SELECT count(*) FROM shop.public.invoices")
seen["revoked"] = refusal(revoked, "SELECT 1")
seen["wrong"] = refusal("kalla_not_a_token", "SELECT 1")
seen["unknown_table"] = refusal(operator, "SELECT * FROM shop.public.nothing")
print(json.dumps(seen))
