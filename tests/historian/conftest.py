"""Every historian backend runs the same contract tests: add a backend to `BACKENDS`."""

import pytest

from agent.sinks.sqlite_historian import SqliteHistorian


def _sqlite(tmp_path):
    return SqliteHistorian(tmp_path / "historian.sqlite3", retention_days=30)


BACKENDS = {"sqlite": _sqlite}


@pytest.fixture(params=sorted(BACKENDS))
def historian(request, tmp_path):
    h = BACKENDS[request.param](tmp_path)
    yield h
    h.close()
