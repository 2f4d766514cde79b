"""Flight SQL over TLS, driven by tests/tests/flight_sql.rs: a client trusting the runner's CA gets
an answer; one trusting another CA, and one speaking plain gRPC, are refused.

Usage: flight_sql_tls.py HOST:PORT TOKEN CA_PEM OTHER_CA_PEM
Prints one JSON object of what it saw.
"""

import json
import sys
import warnings

import adbc_driver_flightsql as flightsql
import adbc_driver_flightsql.dbapi as dbapi

warnings.simplefilter("ignore")
address, token, ca, other_ca = sys.argv[1:5]


def answer(url, ca_path):
    options = {flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {token}"}
    if ca_path:
        with open(ca_path) as pem:
            options[flightsql.DatabaseOptions.TLS_ROOT_CERTS.value] = pem.read()
    try:
        with dbapi.connect(url, db_kwargs=options) as conn, conn.cursor() as cursor:
            cursor.execute("SELECT 41 + 1 AS n")
            return cursor.fetchall()
    except Exception as error:  # the driver's errors carry the Flight status and message
        return str(error)


print(json.dumps({
    "trusted": answer(f"grpc+tls://{address}", ca),
    "untrusted": answer(f"grpc+tls://{address}", other_ca),
    "plain": answer(f"grpc://{address}", None),
}))
