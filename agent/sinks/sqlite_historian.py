"""The embedded historian: one SQLite file, one table per measurement, keyed by (time, tags...).

Tables and columns follow agent/core/schema.py (docs/data-model.md), so SQL and Grafana see the same names as
InfluxDB. `time` is UTC nanoseconds. Writes are INSERT OR REPLACE on the primary key, which makes a replay
after a crash harmless.

Layout, chosen for sustained writes: the key starts with time, so new points land at the end of the tree and
a commit touches few pages however many series it carries (a key that starts with the series touches one
page per series, and slows down as the file grows). Board reads go through an index on (line, unit, time),
where the unit is the machine, station or material. `<measurement>_last` holds the newest point of every
series, so latest-value reads never scan history.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import replace
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import Any

from agent.core.schema import MEASUREMENTS, Measurement, Point
from agent.historian import CountBucket, HistorianError, StateInterval, WriteResult

log = logging.getLogger(__name__)

ROWS_PER_STATEMENT = 500
_SQL_TYPE = {int: "INTEGER", float: "REAL", str: "TEXT", bool: "INTEGER"}


def _columns_sql(m: Measurement) -> str:
    cols = ["time INTEGER NOT NULL"] + [f"{t} TEXT NOT NULL" for t in m.tags]
    cols += [f"{f} {_SQL_TYPE[k]}" for f, k in m.fields.items()]
    return ", ".join(cols)


def _tables(m: Measurement) -> list[str]:
    return [
        f"CREATE TABLE IF NOT EXISTS {m.name} ({_columns_sql(m)}, PRIMARY KEY (time, {', '.join(m.tags)})) "
        "WITHOUT ROWID",
        f"CREATE INDEX IF NOT EXISTS {m.name}_unit ON {m.name} ({', '.join(m.unit_tags)}, time)",
        f"CREATE TABLE IF NOT EXISTS {m.name}_last ({_columns_sql(m)}, PRIMARY KEY ({', '.join(m.tags)})) "
        "WITHOUT ROWID",
    ]


# Measurements and fields added after 0001_measurements, each by a later migration: 0001 and 0002 keep creating
# the tables as they were, so a new file and an upgraded one end up with the same tables and columns.
_MEASUREMENTS_ADDED_LATER = ("machine_product", "source_heartbeat")
_FIELDS_ADDED_LATER = {name: ("source_time_ns",) for name in ("machine_state", "machine_count", "alarm")}
_FIRST_MEASUREMENTS = [m for m in MEASUREMENTS.values() if m.name not in _MEASUREMENTS_ADDED_LATER]


def _as_of_0001(m: Measurement) -> Measurement:
    later = _FIELDS_ADDED_LATER.get(m.name, ())
    return replace(m, fields={f: kind for f, kind in m.fields.items() if f not in later})


def _line_index(m: Measurement) -> str:
    return f"CREATE INDEX IF NOT EXISTS {m.name}_line ON {m.name} (line, time)"


def _add_field(measurement: str, field: str) -> list[str]:
    sql_type = _SQL_TYPE[MEASUREMENTS[measurement].fields[field]]
    return [f"ALTER TABLE {table} ADD COLUMN {field} {sql_type}" for table in (measurement, measurement + "_last")]


# Named migrations, applied once each and recorded; a new schema change is a new entry at the end.
MIGRATIONS: list[tuple[str, list[str]]] = [
    ("0001_measurements", [stmt for m in _FIRST_MEASUREMENTS for stmt in _tables(_as_of_0001(m))]),
    # line-level board reads (a line's counts, states, events) use a time range within one line; process
    # values, by far the most points, are read per machine and would only pay for this index on every write
    ("0002_line_time_index", [_line_index(m) for m in _FIRST_MEASUREMENTS if m.name != "process_value"]),
    # the source timestamp of a reading stamped at another time (after a reconnect), kept for audit
    ("0003_source_time_ns", [stmt for name in _FIELDS_ADDED_LATER for stmt in _add_field(name, "source_time_ns")]),
    # the SKU a machine's PLC reports it is making
    ("0004_machine_product", [*_tables(MEASUREMENTS["machine_product"]), _line_index(MEASUREMENTS["machine_product"])]),
    # how far each source's data reaches while its values do not change (the boards' watermark)
    ("0005_source_heartbeat", _tables(MEASUREMENTS["source_heartbeat"])),
]


def _row_builder(m: Measurement) -> Callable[[Point], tuple[Any, ...]]:
    tags = itemgetter(*m.tags)
    fields = tuple(m.fields)

    def row(p: Point) -> tuple[Any, ...]:
        got = p.fields.get
        return (p.time_ns, *tags(p.tags), *[got(f) for f in fields])
    return row


class SqliteHistorian:
    """Historian on a local SQLite file (WAL). Thread-safe: one lock serialises the connection."""

    def __init__(self, path: Path, retention_days: int | None = None) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.retention_days = retention_days
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
        self._wal()
        # FULL: the outbox lets a batch go once this commit returns, so the commit must be on disk.
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA cache_size=-32768")  # 32 MiB: the index tails and the _last tables
        self._lock = threading.Lock()
        self._migrate()
        # per measurement: a function from a point to its row (time, tags..., fields...), built once
        self._row_of = {m.name: _row_builder(m) for m in MEASUREMENTS.values()}
        self._insert_sql: dict[tuple[str, int, bool], str] = {}
        self._series_of = {m.name: itemgetter(*range(1, 1 + len(m.tags))) for m in MEASUREMENTS.values()}
        self._max_variables = self._conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)

    def _wal(self) -> None:
        """Switch the file to WAL. Another process migrating the same new file holds a lock that SQLite's busy
        timeout does not wait for here: try again for a while."""
        deadline = time.monotonic() + 30
        while True:
            try:
                self._conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _migrate(self) -> None:
        conn = self._conn
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_ns INTEGER)")
        done = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
        for name, statements in MIGRATIONS:
            if name in done:
                continue
            conn.execute("BEGIN IMMEDIATE")
            # another process (the dashboard beside the agent) may have applied it while this one waited
            if conn.execute("SELECT 1 FROM schema_migrations WHERE name = ?", (name,)).fetchone():
                conn.execute("COMMIT")
                continue
            for stmt in statements:
                conn.execute(stmt)
            conn.execute("INSERT INTO schema_migrations VALUES (?, CAST(strftime('%s','now') AS INTEGER) * 1000000000)",
                         (name,))
            conn.execute("COMMIT")
            log.info("historian %s: applied migration %s", self.path, name)

    def write(self, points: Sequence[Point]) -> WriteResult:
        rows: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
        rejected: list[tuple[Point, str]] = []
        row_of = self._row_of
        for p in points:
            build = row_of.get(p.measurement)
            if build is None:
                rejected.append((p, f"unknown measurement {p.measurement}"))
                continue
            try:
                row = build(p)
            except KeyError as exc:
                rejected.append((p, f"missing tag {exc.args[0]}"))
                continue
            rows[p.measurement].append(row)
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                for name, batch in rows.items():
                    self._insert(name, batch)
                    self._update_last(name, batch)
                self._conn.execute("COMMIT")
            except sqlite3.OperationalError as exc:  # locked, disk full, I/O: worth trying again
                self._rollback()
                raise HistorianError(f"SQLite historian {self.path}: {exc}") from exc
            except Exception as exc:  # a value SQLite cannot store: the same batch would fail again
                self._rollback()
                raise HistorianError(f"SQLite historian {self.path}: {exc}", retry=False) from exc
        return WriteResult(accepted=sum(len(b) for b in rows.values()), rejected=rejected)

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def _insert(self, name: str, rows: list[tuple[Any, ...]], last: bool = False) -> None:
        # Many rows per statement: sqlite3 gives up the GIL once per statement step, and with one row per
        # step a busy OPC UA thread would make this thread wait for the GIL thousands of times a second.
        width = len(rows[0])
        per = max(1, min(ROWS_PER_STATEMENT, self._max_variables // width))
        full = len(rows) - len(rows) % per
        for start in range(0, full, per):
            self._conn.execute(self._sql(name, per, last), list(chain.from_iterable(rows[start:start + per])))
        if full < len(rows):
            rest = rows[full:]
            self._conn.execute(self._sql(name, len(rest), last), list(chain.from_iterable(rest)))

    def _update_last(self, name: str, rows: list[tuple[Any, ...]]) -> None:
        newest: dict[Any, tuple[Any, ...]] = {}
        series_of = self._series_of[name]
        for row in rows:
            key = series_of(row)
            held = newest.get(key)
            if held is None or row[0] >= held[0]:
                newest[key] = row
        self._insert(name, list(newest.values()), last=True)

    def _sql(self, name: str, n_rows: int, last: bool) -> str:
        sql = self._insert_sql.get((name, n_rows, last))
        if sql is None:
            m = MEASUREMENTS[name]
            columns = ", ".join(("time", *m.tags, *m.fields))
            one = "(" + ", ".join("?" * (1 + len(m.tags) + len(m.fields))) + ")"
            values = ", ".join([one] * n_rows)
            if last:
                # newest point per series; an older point replayed later must not win
                updates = ", ".join(f"{c} = excluded.{c}" for c in ("time", *m.fields))
                sql = (f"INSERT INTO {name}_last ({columns}) VALUES {values} ON CONFLICT ({', '.join(m.tags)}) "
                       f"DO UPDATE SET {updates} WHERE excluded.time >= {name}_last.time")
            else:
                sql = f"INSERT OR REPLACE INTO {name} ({columns}) VALUES {values}"
            if len(self._insert_sql) < 512:
                self._insert_sql[(name, n_rows, last)] = sql
        return sql

    # --- reads ---

    def _query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise HistorianError(f"SQLite historian {self.path}: {exc}") from exc

    @staticmethod
    def _where(measurement: str, tags: dict[str, str]) -> tuple[str, list[Any]]:
        allowed = MEASUREMENTS[measurement].tags
        clauses, params = [], []
        for tag, value in tags.items():
            if value is None:
                continue
            if tag not in allowed:
                raise HistorianError(f"{measurement} has no tag {tag}", retry=False)
            clauses.append(f"{tag} = ?")
            params.append(value)
        return (" AND ".join(clauses) or "1"), params

    def state_intervals(self, start_ns: int, end_ns: int, line: str | None = None,
                        machine: str | None = None) -> list[StateInterval]:
        where, params = self._where("machine_state", {"line": line, "machine": machine})  # type: ignore[dict-item]
        machines = self._query(f"SELECT DISTINCT line, machine FROM machine_state_last WHERE {where}", params)
        carried = []
        for ln, mc in machines:
            # the state in force at `start`: one index seek per machine, never a scan of history
            carried += self._query(
                "SELECT line, machine, time, state, raw, reason FROM machine_state "
                "WHERE line = ? AND machine = ? AND time < ? ORDER BY time DESC LIMIT 1", [ln, mc, start_ns])
        inside = self._query(
            f"SELECT line, machine, time, state, raw, reason FROM machine_state "
            f"WHERE {where} AND time >= ? AND time < ? ORDER BY line, machine, time", [*params, start_ns, end_ns])
        by_machine: dict[tuple[str, str], list[tuple[int, str, str, str]]] = defaultdict(list)
        for ln, mc, _t, state, raw, reason in carried:
            by_machine[(ln, mc)].append((start_ns, state, raw or "", reason or ""))
        for ln, mc, t, state, raw, reason in inside:
            by_machine[(ln, mc)].append((t, state, raw or "", reason or ""))
        out: list[StateInterval] = []
        for (ln, mc), changes in sorted(by_machine.items()):
            for i, (t, state, raw, reason) in enumerate(changes):
                end = changes[i + 1][0] if i + 1 < len(changes) else end_ns
                if end > t:
                    out.append(StateInterval(ln, mc, state, t, end, raw, reason))
        return out

    def count_sums(self, start_ns: int, end_ns: int, bucket_s: int, line: str | None = None,
                   machine: str | None = None) -> list[CountBucket]:
        where, params = self._where("machine_count", {"line": line, "machine": machine})  # type: ignore[dict-item]
        bucket_ns = bucket_s * 1_000_000_000
        rows = self._query(
            f"SELECT line, machine, counter, (time / ?) * ? AS bucket, SUM(delta) FROM machine_count "
            f"WHERE {where} AND time >= ? AND time < ? GROUP BY line, machine, counter, bucket "
            f"ORDER BY line, machine, counter, bucket", [bucket_ns, bucket_ns, *params, start_ns, end_ns])
        return [CountBucket(r[0], r[1], r[2], r[3], int(r[4])) for r in rows]

    def _points(self, measurement: str, rows: list[tuple[Any, ...]]) -> list[Point]:
        m = MEASUREMENTS[measurement]
        n = len(m.tags)
        out = []
        for row in rows:
            fields = {f: v for f, v in zip(m.fields, row[1 + n:], strict=True) if v is not None}
            for f, kind in m.fields.items():
                if kind is bool and f in fields:
                    fields[f] = bool(fields[f])
            out.append(Point(measurement, dict(zip(m.tags, row[1:1 + n], strict=True)), fields, row[0]))
        return out

    def _columns(self, measurement: str) -> str:
        m = MEASUREMENTS[measurement]
        return ", ".join(("time", *m.tags, *m.fields))

    def last_values(self, measurement: str, **tags: str) -> list[Point]:
        if measurement not in MEASUREMENTS:
            raise HistorianError(f"unknown measurement {measurement}", retry=False)
        m = MEASUREMENTS[measurement]
        where, params = self._where(measurement, tags)
        rows = self._query(f"SELECT {self._columns(measurement)} FROM {measurement}_last WHERE {where} "
                           f"ORDER BY {', '.join(m.tags)}", params)
        return self._points(measurement, rows)

    def series(self, measurement: str, field_name: str, start_ns: int, end_ns: int,
               **tags: str) -> list[tuple[int, Any]]:
        if measurement not in MEASUREMENTS or field_name not in MEASUREMENTS[measurement].fields:
            raise HistorianError(f"unknown field {measurement}.{field_name}", retry=False)
        where, params = self._where(measurement, tags)
        rows = self._query(
            f"SELECT time, {field_name} FROM {measurement} WHERE {where} AND time >= ? AND time < ? "
            f"AND {field_name} IS NOT NULL ORDER BY time", [*params, start_ns, end_ns])
        if MEASUREMENTS[measurement].fields[field_name] is bool:
            return [(r[0], bool(r[1])) for r in rows]
        return [(r[0], r[1]) for r in rows]

    def events(self, measurement: str, start_ns: int, end_ns: int, **tags: str) -> list[Point]:
        if measurement not in MEASUREMENTS:
            raise HistorianError(f"unknown measurement {measurement}", retry=False)
        where, params = self._where(measurement, tags)
        rows = self._query(
            f"SELECT {self._columns(measurement)} FROM {measurement} WHERE {where} AND time >= ? AND time < ? "
            f"ORDER BY time", [*params, start_ns, end_ns])
        return self._points(measurement, rows)

    def apply_retention(self, now_ns: int) -> int:
        if not self.retention_days:
            return 0
        cutoff = now_ns - self.retention_days * 86400 * 1_000_000_000
        removed = 0
        with self._lock:
            try:
                for name in MEASUREMENTS:
                    removed += self._conn.execute(f"DELETE FROM {name} WHERE time < ?", (cutoff,)).rowcount
            except sqlite3.Error as exc:
                raise HistorianError(f"SQLite historian {self.path}: retention: {exc}") from exc
        return removed

    def close(self) -> None:
        with self._lock:
            self._conn.close()
