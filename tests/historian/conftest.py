"""Every historian backend runs the same contract tests: add a backend to `BACKENDS`.

The InfluxDB backend runs against a real InfluxDB 1.x server (Debian's `influxdb`), one database per test.
"""

import uuid

import pytest

from agent.sinks.influx import InfluxHistorian
from agent.sinks.sqlite_historian import SqliteHistorian


def _sqlite(tmp_path, request):
    return SqliteHistorian(tmp_path / "historian.sqlite3", retention_days=30)


def _influxdb(tmp_path, request):
    server = request.getfixturevalue("influx_server")
    database = f"contract_{uuid.uuid4().hex[:12]}"
    server.create_database(database)
    return InfluxHistorian(server.url, database=database, retention_days=30)


BACKENDS = {"sqlite": _sqlite, "influxdb": _influxdb}


@pytest.fixture(params=sorted(BACKENDS))
def historian(request, tmp_path):
    h = BACKENDS[request.param](tmp_path, request)
    yield h
    h.close()
