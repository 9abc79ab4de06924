"""The InfluxDB historian: the same measurements as the SQLite one, in InfluxDB 1.x, 2.x, 3.x or Cloud.

Writes are line protocol with nanosecond source timestamps, gzip, at most `batch_lines` lines a request:
InfluxDB 1.x through `/write` (database, retention policy, user/password), 2.x/3.x/Cloud through
influxdb-client's write API (org, bucket, token). Reads are InfluxQL through `/query`, which every version
serves (2.x and 3.x through their v1-compatible API), so there is one query dialect.

What a failed write means for the outbox (the pipeline owns the retries):
- no answer, a timeout, 429 or 5xx: try again later (HistorianError, retry), after `Retry-After` when given;
- 413: the request was too large: the batch is split in halves until the server takes it;
- 400/422 (a partial write): writes are idempotent, so the batch is split in halves and sent again until the
  refused lines stand alone; those go to dead letters with the server's message, the rest is stored;
- 401/403 and 404 (no such database or bucket): nothing is dropped; the points wait in the outbox and the
  agent tries again every AUTH_RETRY_S, logging what to fix.
"""

from __future__ import annotations

import base64
import email.utils
import gzip
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from operator import itemgetter
from typing import Any
from urllib.parse import urlencode

import urllib3

from agent.core.schema import MEASUREMENTS, Point
from agent.historian import CountBucket, HistorianError, StateInterval, WriteResult
from agent.sinks.influx_protocol import (
    LineEncoder,
    QueryError,
    Series,
    field_value,
    parse_query_response,
    point_from_row,
    quote_ident,
    tag_filter,
    time_range,
    where,
)

log = logging.getLogger(__name__)

AUTH_RETRY_S = 30.0  # wrong credentials, missing rights or database: a person has to act; do not hammer
RETRY_AFTER_MAX_S = 300.0
GZIP_LEVEL = 1  # line protocol compresses about 10x at level 1; higher levels cost CPU for little more
QUERY_CHUNK = 20_000
IN_FLIGHT = 4  # write requests at once by default: enough to keep the encoder busy while the server answers


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (seconds or an HTTP date), capped at RETRY_AFTER_MAX_S."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return min(max(0.0, seconds), RETRY_AFTER_MAX_S)


# What InfluxDB 1.x, 2.x and 3.x say when they refuse some lines of a write and keep the rest. Limits on series
# or tag values are also reported per line, but writing those lines again later can succeed once someone
# raises the limit, so they keep the whole request waiting instead.
LINE_ERRORS = ("partial write", "unable to parse", "field type conflict", "points beyond retention policy",
               "invalid field format", "invalid tag format", "invalid timestamp")
LIMIT_ERRORS = ("max-values-per-tag", "max-series-per-database", "series cardinality", "too many")


def refused_lines(message: str) -> bool:
    """True when a 400/422 answer says some lines were refused (not the request, not a server limit)."""
    text = message.lower()
    return any(e in text for e in LINE_ERRORS) and not any(e in text for e in LIMIT_ERRORS)


class _Answer:
    """A write request's outcome: HTTP status, `Retry-After`, and the server's message."""

    def __init__(self, status: int, message: str = "", retry_after: str | None = None) -> None:
        self.status = status
        self.message = message.strip()[:500]
        self.retry_after = retry_after


class InfluxHistorian:
    """Historian on an InfluxDB server. Thread-safe: writes and queries may come from several threads at once
    (urllib3's pool manager is; the line encoder's series cache is taken under a lock)."""

    def __init__(self, url: str, api: str = "v1", database: str | None = None, retention_policy: str | None = None,
                 username: str | None = None, password: str | None = None, org: str | None = None,
                 bucket: str | None = None, token: str | None = None, timeout_s: float = 10.0,
                 batch_lines: int = 5000, use_gzip: bool = True, verify_tls: bool = True,
                 ca_file: str | None = None, retention_days: int | None = None,
                 auth_retry_s: float = AUTH_RETRY_S, in_flight: int = IN_FLIGHT) -> None:
        if api not in ("v1", "v2"):
            raise ValueError(f"api must be v1 or v2, not {api!r}")
        if in_flight < 1:
            raise ValueError(f"in_flight must be at least 1, not {in_flight}")
        # How many `write` calls the agent's drain may have going at once (agent/pipeline.py): each encodes
        # on its own thread while the others wait for the server.
        self.in_flight = in_flight
        self.url = url.rstrip("/")
        self.api = api
        self.database = database or bucket or ""
        self.retention_policy = retention_policy
        self.org = org
        self.bucket = bucket
        self.batch_lines = batch_lines
        self.use_gzip = use_gzip
        self.retention_days = retention_days
        self.auth_retry_s = auth_retry_s
        self.timeout = urllib3.Timeout(connect=min(timeout_s, 5.0), read=timeout_s)
        self._headers: dict[str, str] = {}
        if api == "v2" and token:
            self._headers["Authorization"] = f"Token {token}"
        elif username:
            basic = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
            self._headers["Authorization"] = f"Basic {basic}"
        tls: dict[str, Any] = {}
        if self.url.startswith("https:"):
            tls = {"cert_reqs": "CERT_REQUIRED" if verify_tls else "CERT_NONE"}
            if ca_file:
                tls["ca_certs"] = ca_file
        # a connection for every write in flight, and one for the dashboard's or a check's queries
        self._http = urllib3.PoolManager(num_pools=4, maxsize=in_flight + 1, retries=False, **tls)
        self._encoder = LineEncoder()
        self._encoder_lock = threading.Lock()
        self._v2_writer: Any = None
        if api == "v2":
            from influxdb_client import InfluxDBClient
            from influxdb_client.client.write_api import SYNCHRONOUS

            # retries=False: the agent's pipeline owns retries, so a write call reports its real outcome
            self._v2_client = InfluxDBClient(url=self.url, token=token or "", org=org or "", timeout=int(timeout_s * 1000),
                                             enable_gzip=use_gzip, retries=False, verify_ssl=verify_tls,
                                             ssl_ca_cert=ca_file)
            self._v2_writer = self._v2_client.write_api(write_options=SYNCHRONOUS)

    def describe(self) -> str:
        where_to = f"bucket {self.bucket} (org {self.org})" if self.api == "v2" else f"database {self.database}"
        return f"InfluxDB {self.url} {where_to}"

    # --- writes ---

    def write(self, points: Sequence[Point]) -> WriteResult:
        with self._encoder_lock:
            lines, kept, refused = self._encoder.lines(points)
        rejected = [(p, f"missing tag {exc.args[0]}" if isinstance(exc, KeyError) else str(exc))
                    for p, exc in refused]
        result = WriteResult(accepted=0, rejected=rejected)
        for start in range(0, len(lines), self.batch_lines):
            end = min(len(lines), start + self.batch_lines)
            self._write_lines(lines[start:end], kept[start:end], result)
        return result

    def _write_lines(self, lines: list[str], points: list[Point], result: WriteResult) -> None:
        answer = self._post(lines)
        status = answer.status
        if status == 204 or (200 <= status < 300 and not answer.message):
            result.accepted += len(lines)
            return
        if status == 413 or (status in (400, 422) and refused_lines(answer.message)):
            if len(lines) == 1:
                reason = ("InfluxDB refused the point as too large (413)" if status == 413
                          else f"InfluxDB refused the point ({status}): {answer.message}")
                result.rejected.append((points[0], reason))
                return
            if status == 413:
                log.info("%s: request too large (413); splitting %s lines in two", self.describe(), len(lines))
            half = len(lines) // 2
            self._write_lines(lines[:half], points[:half], result)
            self._write_lines(lines[half:], points[half:], result)
            return
        if status in (401, 403):
            raise HistorianError(
                f"{self.describe()} refused the credentials or the write right ({status}: {answer.message}); "
                f"check historian.{'token' if self.api == 'v2' else 'username/password'} and the user's rights. "
                "Points wait in the outbox.", retry=True, retry_after=self.auth_retry_s)
        if status in (400, 404, 422) or 200 <= status < 400:
            # the request as a whole, not some of its lines: a missing database, a limit, a proxy or a page
            # that is not InfluxDB. A person has to act; the points wait.
            what = "not found" if status == 404 else "refused the request"
            raise HistorianError(
                f"{self.describe()}: {what} ({status}: {answer.message or 'no message'}); check the URL, the "
                "database or bucket, and the server's limits. Points wait in the outbox.", retry=True,
                retry_after=self.auth_retry_s)
        raise HistorianError(f"{self.describe()}: write failed ({status or 'no HTTP status'}: {answer.message})",
                             retry=True, retry_after=retry_after_seconds(answer.retry_after))

    def _post(self, lines: list[str]) -> _Answer:
        body = "\n".join(lines).encode("utf-8")
        if self._v2_writer is not None:
            return self._post_v2(body)
        params = {"db": self.database, "precision": "ns"}
        if self.retention_policy:
            params["rp"] = self.retention_policy
        headers = {**self._headers, "Content-Type": "text/plain; charset=utf-8"}
        if self.use_gzip:
            body = gzip.compress(body, GZIP_LEVEL)
            headers["Content-Encoding"] = "gzip"
        try:
            resp = self._http.request("POST", f"{self.url}/write?{urlencode(params)}", body=body, headers=headers,
                                      timeout=self.timeout)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise HistorianError(f"{self.describe()}: no answer ({exc.__class__.__name__}: {exc})") from exc
        return _Answer(resp.status, resp.data.decode("utf-8", "replace"), resp.headers.get("Retry-After"))

    def _post_v2(self, body: bytes) -> _Answer:
        from influxdb_client.rest import ApiException

        try:
            self._v2_writer.write(bucket=self.bucket, org=self.org, record=body)
        except ApiException as exc:
            headers: Any = exc.headers or {}
            data = exc.body.decode("utf-8", "replace") if isinstance(exc.body, bytes) else str(exc.body or "")
            return _Answer(int(exc.status or 0), data or str(exc.reason or ""), headers.get("Retry-After"))
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise HistorianError(f"{self.describe()}: no answer ({exc.__class__.__name__}: {exc})") from exc
        return _Answer(204)

    # --- reads ---

    def query(self, statements: Sequence[str]) -> list[list[Series]]:
        """Run InfluxQL statements in one request; the series of each, in order."""
        params = {"db": self.database, "q": ";".join(statements), "epoch": "ns", "chunked": "true",
                  "chunk_size": str(QUERY_CHUNK)}
        if self.retention_policy:
            params["rp"] = self.retention_policy
        try:
            resp = self._http.request("POST", f"{self.url}/query", fields=params, encode_multipart=False,
                                      headers=self._headers, timeout=self.timeout)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise HistorianError(f"{self.describe()}: no answer to a query ({exc})") from exc
        if resp.status in (401, 403):
            raise HistorianError(f"{self.describe()} refused a query ({resp.status}): check the read right",
                                 retry=True, retry_after=self.auth_retry_s)
        if resp.status >= 500 or resp.status == 429:
            raise HistorianError(f"{self.describe()}: query failed ({resp.status})",
                                 retry_after=retry_after_seconds(resp.headers.get("Retry-After")))
        if resp.status != 200:
            raise HistorianError(f"{self.describe()}: query answered {resp.status}: "
                                 f"{resp.data[:200].decode('utf-8', 'replace')}", retry=False)
        try:
            return parse_query_response(resp.data, len(statements))
        except QueryError as exc:
            raise HistorianError(f"{self.describe()}: query failed: {exc}", retry=False) from exc
        except ValueError as exc:
            raise HistorianError(f"{self.describe()}: unreadable query answer ({resp.status}): "
                                 f"{resp.data[:200]!r}", retry=resp.status >= 500) from exc

    def _filter(self, measurement: str, tags: dict[str, str | None]) -> list[str]:
        try:
            return tag_filter(measurement, tags)
        except ValueError as exc:
            raise HistorianError(str(exc), retry=False) from None

    def state_intervals(self, start_ns: int, end_ns: int, line: str | None = None,
                        machine: str | None = None) -> list[StateInterval]:
        cond = self._filter("machine_state", {"line": line, "machine": machine})
        cols = 'SELECT "state", "raw", "reason" FROM ' + quote_ident("machine_state")
        group = ' GROUP BY "line", "machine"'
        before, inside = self.query([
            # the state in force at `start`: the newest change before it, per machine
            cols + where([*cond, f"time < {int(start_ns)}"]) + group + " ORDER BY time DESC LIMIT 1",
            cols + where([*cond, *time_range(start_ns, end_ns)]) + group,
        ])
        by_machine: dict[tuple[str, str], list[tuple[int, str, str, str]]] = defaultdict(list)
        # rows are [time, state, raw, reason], as selected; a month of a line is tens of thousands of them
        for s in before:
            by_machine[(s.tags["line"], s.tags["machine"])] += [
                (start_ns, state, raw or "", reason or "") for _t, state, raw, reason in s.values]
        for s in inside:
            by_machine[(s.tags["line"], s.tags["machine"])] += [
                (t, state, raw or "", reason or "") for t, state, raw, reason in s.values]
        out: list[StateInterval] = []
        for (ln, mc), changes in sorted(by_machine.items()):
            changes.sort(key=itemgetter(0))
            ends = [c[0] for c in changes[1:]] + [end_ns]
            out += [StateInterval(ln, mc, state, t, end, raw, reason)
                    for (t, state, raw, reason), end in zip(changes, ends, strict=True) if end > t]
        return out

    def count_sums(self, start_ns: int, end_ns: int, bucket_s: int, line: str | None = None,
                   machine: str | None = None) -> list[CountBucket]:
        cond = self._filter("machine_count", {"line": line, "machine": machine})
        (series,) = self.query([
            'SELECT SUM("delta") FROM ' + quote_ident("machine_count")
            + where([*cond, *time_range(start_ns, end_ns)])
            + f' GROUP BY time({int(bucket_s)}s), "line", "machine", "counter" fill(none)'])
        out = [CountBucket(s.tags["line"], s.tags["machine"], s.tags["counter"], int(r[0]), int(r[1]))
               for s in series for r in s.values if r[1] is not None]
        out.sort(key=lambda b: (b.line, b.machine, b.counter, b.bucket_start_ns))
        return out

    def _known(self, measurement: str) -> None:
        if measurement not in MEASUREMENTS:
            raise HistorianError(f"unknown measurement {measurement}", retry=False)

    def last_values(self, measurement: str, **tags: str) -> list[Point]:
        self._known(measurement)
        m = MEASUREMENTS[measurement]
        (series,) = self.query(["SELECT * FROM " + quote_ident(measurement)
                                + where(self._filter(measurement, dict(tags)))
                                + " GROUP BY * ORDER BY time DESC LIMIT 1"])
        points = [point_from_row(measurement, s.tags, r) for s in series for r in s.rows()]
        points.sort(key=lambda p: tuple(p.tags.get(t, "") for t in m.tags))
        return points

    def series(self, measurement: str, field_name: str, start_ns: int, end_ns: int,
               **tags: str) -> list[tuple[int, Any]]:
        if measurement not in MEASUREMENTS or field_name not in MEASUREMENTS[measurement].fields:
            raise HistorianError(f"unknown field {measurement}.{field_name}", retry=False)
        kind = MEASUREMENTS[measurement].fields[field_name]
        (series,) = self.query([
            f"SELECT {quote_ident(field_name)} FROM " + quote_ident(measurement)
            + where([*self._filter(measurement, dict(tags)), *time_range(start_ns, end_ns)])])
        out = [(int(r[0]), field_value(kind, r[1])) for s in series for r in s.values if r[1] is not None]
        out.sort(key=lambda tv: tv[0])
        return out

    def events(self, measurement: str, start_ns: int, end_ns: int, **tags: str) -> list[Point]:
        self._known(measurement)
        (series,) = self.query([
            "SELECT * FROM " + quote_ident(measurement)
            + where([*self._filter(measurement, dict(tags)), *time_range(start_ns, end_ns)])])
        points = [point_from_row(measurement, s.tags, r) for s in series for r in s.rows()]
        points.sort(key=lambda p: p.time_ns)
        return points

    def apply_retention(self, now_ns: int) -> int:
        """With `retention_days` set (InfluxDB 1.x only), delete older points; otherwise the server's own
        retention policy or bucket retention decides, and nothing is deleted here."""
        if not self.retention_days:
            return 0
        cutoff = now_ns - self.retention_days * 86400 * 1_000_000_000
        names = list(MEASUREMENTS)
        counted = self.query([f"SELECT COUNT(*) FROM {quote_ident(n)} WHERE time < {cutoff}" for n in names])
        removed = 0
        for series in counted:
            for s in series:
                for row in s.values:
                    removed += max((int(v) for v in row[1:] if v is not None), default=0)
        if removed:
            self.query([f"DELETE FROM {quote_ident(n)} WHERE time < {cutoff}" for n in names])
        return removed

    # --- set-up checks ---

    def check_connection(self) -> list[str]:
        """What stops this historian from working: unreachable, wrong credentials, missing rights or
        database. An empty list when a write and a read both succeed (the write carries no points)."""
        problems: list[str] = []
        try:
            resp = self._http.request("GET", f"{self.url}/ping", headers=self._headers, timeout=self.timeout)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            return [f"{self.url} is not reachable: {exc.__class__.__name__}: {exc}"]
        if resp.status >= 300:
            return [f"{self.url}/ping answered {resp.status}: is this an InfluxDB server?"]
        version = resp.headers.get("X-Influxdb-Version", "unknown version")
        try:
            self.query(["SHOW MEASUREMENTS LIMIT 1"])
        except HistorianError as exc:
            problems.append(f"read: {exc}")
        try:
            self._check_write()
        except HistorianError as exc:
            problems.append(f"write: {exc}")
        if not problems:
            log.info("%s (%s): reachable, read and write allowed", self.describe(), version)
        return problems

    def _check_write(self) -> None:
        # An empty write leaves no trace: the server checks the credentials, the write right and the database
        # first, then accepts it (204; InfluxDB 2.x may answer 400 "no points" after the same checks).
        answer = self._post([])
        if answer.status < 300 or answer.status == 400:
            return
        what = {401: "refused the credentials", 403: "refused the write right", 404: "has no such database"}
        raise HistorianError(f"{self.describe()} {what.get(answer.status, 'answered')} "
                             f"({answer.status}: {answer.message})", retry=False)

    def close(self) -> None:
        if self._v2_writer is not None:
            self._v2_writer.close()
            self._v2_client.close()
        self._http.clear()
