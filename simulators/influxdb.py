"""Private time-series servers for the demo, the tests and the benchmarks.

`InfluxServer` runs a real InfluxDB 1.x (`influxd` from Debian's `influxdb` package) as a subprocess on a free
loopback port, with a config written into its data directory: data, meta and WAL in that directory, no usage
reporting, no `_internal` monitor database, quiet logs, and the RPC (backup) port on a second free port so
that several servers can run at once. With `auth=True` it enables authentication and creates an admin user.

`VictoriaMetrics` runs a real single-node VictoriaMetrics, which takes the InfluxDB line protocol on both
/write and /api/v2/write: it is what the tests use to exercise the agent's InfluxDB v2 write path.

    with InfluxServer(tmp_path / "influxdb") as server:
        server.create_database("plant")
        run_something_against(server.url, database="plant")
        print(server.query("SELECT COUNT(*) FROM machine_count", db="plant"))

Both keep their port and their data across `restart()`; `kill()` stops them as a crash would.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, Self

from simulators.broker import HOST, free_port

log = logging.getLogger(__name__)

_BIN_PLACES = ("/usr/bin", "/usr/local/bin")


class ServerError(RuntimeError):
    """A server did not start, or refused a request; `status` is the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _find(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for folder in _BIN_PLACES:
        place = os.path.join(folder, name)
        if os.path.isfile(place) and os.access(place, os.X_OK):
            return place
    return None


def find_influxd() -> str | None:
    """Path of the InfluxDB 1.x server binary (on PATH, then /usr/bin, /usr/local/bin), or None."""
    return _find("influxd")


def find_victoria_metrics() -> str | None:
    """Path of the single-node VictoriaMetrics binary (on PATH, then /usr/bin, /usr/local/bin), or None."""
    return _find("victoria-metrics")


def _http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
          timeout: float = 30.0) -> tuple[int, bytes]:
    """(status, body) of one request; an HTTP error status is returned, not raised."""
    request = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code), exc.read()


class _ServerProcess(ABC):
    """What both servers share: a subprocess on a loopback port, its log file, start/stop/kill/restart."""

    name = "server"
    log_name = "server.log"

    def __init__(self, binary: str | None, data_dir: str | Path, port: int, start_timeout_s: float) -> None:
        if binary is None:
            raise ServerError(f"{self.name} is not installed (not on PATH nor in {', '.join(_BIN_PLACES)})")
        self.binary = binary
        self._data_dir = Path(data_dir)
        self._port = port
        self.start_timeout_s = start_timeout_s
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def port(self) -> int:
        """The HTTP port; 0 until the first start when a free port is to be picked."""
        return self._port

    @property
    def url(self) -> str:
        """http://127.0.0.1:<port>, the base URL clients are given."""
        return f"http://{HOST}:{self._port}"

    @property
    def data_dir(self) -> Path:
        """Where the server keeps its data, its config and its log."""
        return self._data_dir

    @property
    def log_file(self) -> Path:
        """The server's stdout and stderr, appended to across restarts."""
        return self._data_dir / self.log_name

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> Self:
        """Start the server and return once it answers its health check; raise ServerError quoting the end of
        its log if it does not within `start_timeout_s`. A started server is left as it is."""
        if self.running:
            return self
        self._data_dir.mkdir(parents=True, exist_ok=True)
        # Ports picked here were free a moment ago; another process may take one before the server binds
        # it, so a first start with picked ports tries again with new ones. A restart keeps its ports.
        pick_ports = self._port == 0
        attempts_left = 3 if pick_ports else 1
        while True:
            attempts_left -= 1
            if pick_ports:
                self._pick_ports()
            log_start = self.log_file.stat().st_size if self.log_file.exists() else 0
            if self._launch():
                log.info("%s listening on %s (data in %s)", self.name, self.url, self._data_dir)
                self._after_start()
                return self
            code = self._process.poll() if self._process is not None else None
            tail = self._log_tail(log_start)
            self._reap()
            if attempts_left > 0 and "address already in use" in tail:
                log.warning("%s lost its port %s to another process; trying other ports", self.name, self._port)
                continue
            what = (f"exited with code {code}" if code is not None
                    else f"did not answer within {self.start_timeout_s:.0f} s")
            raise ServerError(f"{self.name} for {self.url} {what}; the end of {self.log_file}:\n{tail}")

    def stop(self) -> None:
        """Stop the server cleanly (SIGTERM, then SIGKILL after 15 s) and wait for it to exit."""
        process = self._process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                log.warning("%s on port %s did not stop within 15 s; killing it", self.name, self._port)
                process.kill()
        self._reap()

    def kill(self) -> None:
        """Stop the server the hard way (SIGKILL), as a crash or a power cut would."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
        self._reap()

    def restart(self) -> None:
        """Stop cleanly and start again on the same port with the same data."""
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # --- for the subclasses -------------------------------------------------------------------------------

    def _pick_ports(self) -> None:
        self._port = free_port()

    @abstractmethod
    def _command(self) -> list[str]:
        """The server's command line."""

    def _environment(self) -> dict[str, str]:
        return dict(os.environ)

    @abstractmethod
    def _ready(self) -> bool:
        """True once the server answers its health check."""

    def _after_start(self) -> None:  # noqa: B027 - a hook: most servers need nothing after start
        """Runs once the server answers, on every start."""

    # --- process ------------------------------------------------------------------------------------------

    def _launch(self) -> bool:
        self._log = open(self.log_file, "ab")  # noqa: SIM115 - lives as long as the process
        self._process = subprocess.Popen(
            self._command(), stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            cwd=self._data_dir, env=self._environment(),
        )
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline and self._process.poll() is None:
            with contextlib.suppress(OSError):
                if self._ready():
                    return True
            time.sleep(0.05)
        return False

    def _reap(self) -> None:
        if self._process is not None:
            process, self._process = self._process, None
            if process.poll() is None:
                process.kill()
            process.wait(timeout=15)
        if self._log is not None:
            self._log.close()
            self._log = None

    def _log_tail(self, offset: int = 0, lines: int = 20) -> str:
        try:
            with open(self.log_file, "rb") as f:
                f.seek(offset)
                text = f.read().decode("utf-8", errors="replace")
        except OSError:
            return "(no log output)"
        return "\n".join(text.splitlines()[-lines:]) or "(no log output)"


def _quote_ident(name: str) -> str:
    """An InfluxQL identifier in double quotes, so that any name (dashes, spaces, keywords) is taken."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _quote_string(value: str) -> str:
    """An InfluxQL string literal; InfluxQL refuses a raw newline in one, hence the escape."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


class InfluxServer(_ServerProcess):
    """A real InfluxDB 1.x on 127.0.0.1 that lives as long as this object is started.

    `port=0` picks a free port on first start (and a second one for the RPC service, which InfluxDB would
    otherwise bind to 8088 on every server); `restart()` keeps both, the databases and the users. With
    `auth=True`, HTTP authentication is on and `admin` (user, password) is created as an admin user on first
    start; `query`, `write_lines` and `influx_cli` then log in as that user.
    """

    name = "influxd"
    log_name = "influxd.log"

    def __init__(self, data_dir: str | Path, port: int = 0, auth: bool = False,
                 admin: tuple[str, str] = ("admin", "admin-secret"), start_timeout_s: float = 30.0) -> None:
        super().__init__(find_influxd(), data_dir, port, start_timeout_s)
        self.auth = auth
        self.admin = admin
        self._rpc_port = 0

    @property
    def config_file(self) -> Path:
        """The influxd config this object writes on every start."""
        return self.data_dir / "influxdb.conf"

    def query(self, q: str, db: str | None = None) -> dict[str, Any]:
        """Run InfluxQL `q` (several statements may be separated by ";") and return the parsed JSON answer,
        times as integer nanoseconds. Raise ServerError when the server or any statement reports an error."""
        form = {"q": q, "epoch": "ns"}
        if db is not None:
            form["db"] = db
        status, body = self._request("POST", "/query", urllib.parse.urlencode(form).encode(),
                                     {"Content-Type": "application/x-www-form-urlencoded"})
        try:
            doc: dict[str, Any] = json.loads(body) if body else {}
        except ValueError:
            doc = {"error": body.decode("utf-8", errors="replace").strip()}
        errors = [doc.get("error")] + [r.get("error") for r in doc.get("results", [])]
        if status != 200 or any(errors):
            reason = "; ".join(e for e in errors if e) or body.decode("utf-8", errors="replace").strip()
            raise ServerError(f"InfluxDB refused {q!r} ({status}): {reason}", status)
        return doc

    def write_lines(self, db: str, lines: str | Iterable[str], precision: str = "ns") -> None:
        """Write line-protocol `lines` into `db` through /write; raise ServerError unless the server says 204."""
        text = lines if isinstance(lines, str) else "\n".join(lines)
        params = urllib.parse.urlencode({"db": db, "precision": precision})
        status, body = self._request("POST", f"/write?{params}", text.encode("utf-8"))
        if status != 204:
            raise ServerError(f"InfluxDB refused the write into {db!r} ({status}): "
                              f"{body.decode('utf-8', errors='replace').strip()}", status)

    def create_database(self, name: str) -> None:
        """Create database `name` (no error when it exists)."""
        self.query(f"CREATE DATABASE {_quote_ident(name)}")

    def create_user(self, name: str, password: str, admin: bool = False) -> None:
        """Create user `name`; `admin=True` gives all privileges. Without grants a plain user can do nothing."""
        suffix = " WITH ALL PRIVILEGES" if admin else ""
        self.query(f"CREATE USER {_quote_ident(name)} WITH PASSWORD {_quote_string(password)}{suffix}")

    def grant(self, privilege: Literal["READ", "WRITE", "ALL"], db: str, user: str) -> None:
        """Give `user` the READ, WRITE or ALL privilege on database `db` (WRITE does not include READ)."""
        if privilege not in ("READ", "WRITE", "ALL"):
            raise ValueError(f"privilege must be READ, WRITE or ALL, not {privilege!r}")
        self.query(f"GRANT {privilege} ON {_quote_ident(db)} TO {_quote_ident(user)}")

    def influx_cli(self, *args: str, timeout_s: float = 60.0) -> str:
        """Run the server's own command-line client (`influx -host 127.0.0.1 -port PORT ...args`, logged in as
        the admin with auth on) and return its stdout; raise ServerError with its output on a non-zero exit."""
        binary = _find("influx")
        if binary is None:
            raise ServerError("the influx command-line client is not installed (Debian: influxdb-client)")
        command = [binary, "-host", HOST, "-port", str(self.port)]
        if self.auth:
            command += ["-username", self.admin[0], "-password", self.admin[1]]
        command += list(args)
        # The client takes INFLUX_USERNAME/INFLUX_PASSWORD from the environment; only ours should count.
        env = {k: v for k, v in os.environ.items() if not k.startswith("INFLUX_")}
        done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env,
                              timeout=timeout_s, check=False)
        if done.returncode != 0:
            raise ServerError(f"influx {' '.join(args)} exited with {done.returncode}:\n"
                              f"{done.stderr.strip()}\n{done.stdout.strip()}".rstrip())
        return done.stdout

    # --- internals ----------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None, as_admin: bool = True) -> tuple[int, bytes]:
        headers = dict(headers or {})
        if self.auth and as_admin:
            token = base64.b64encode(f"{self.admin[0]}:{self.admin[1]}".encode()).decode("ascii")
            headers["Authorization"] = f"Basic {token}"
        return _http(method, self.url + path, body, headers)

    def _pick_ports(self) -> None:
        self._port = free_port()
        self._rpc_port = free_port()
        while self._rpc_port == self._port:
            self._rpc_port = free_port()

    def _command(self) -> list[str]:
        if self._rpc_port == 0:  # a port given by the caller: the RPC port is still ours to pick
            self._rpc_port = free_port()
        self.config_file.write_text(self._config_text(), encoding="utf-8")
        return [self.binary, "-config", str(self.config_file)]

    def _environment(self) -> dict[str, str]:
        # influxd lets INFLUXDB_* variables override any config key; a stray one must not move our ports.
        return {k: v for k, v in os.environ.items() if not k.startswith("INFLUXDB_")}

    def _config_text(self) -> str:
        data = self.data_dir.resolve()
        return "\n".join([
            "# written by shopfloor simulators/influxdb.py; rewritten on every start",
            "reporting-enabled = false",
            f'bind-address = "{HOST}:{self._rpc_port}"',
            "[meta]",
            f'  dir = "{(data / "meta").as_posix()}"',
            "  logging-enabled = false",
            "[data]",
            f'  dir = "{(data / "data").as_posix()}"',
            f'  wal-dir = "{(data / "wal").as_posix()}"',
            "  query-log-enabled = false",
            "[monitor]",
            # Otherwise every server writes its own statistics into an _internal database every 10 s.
            "  store-enabled = false",
            "[http]",
            f'  bind-address = "{HOST}:{self._port}"',
            f"  auth-enabled = {'true' if self.auth else 'false'}",
            "  log-enabled = false",
            "[continuous_queries]",
            "  log-enabled = false",
            "[logging]",
            '  level = "warn"',
            "  suppress-logo = true",
        ]) + "\n"

    def _ready(self) -> bool:
        # /ping needs no credentials even with auth on.
        return _http("GET", self.url + "/ping", timeout=1.0)[0] == 204

    def _after_start(self) -> None:
        if not self.auth:
            return
        status, _ = self._request("POST", "/query", urllib.parse.urlencode({"q": "SHOW USERS"}).encode(),
                                  {"Content-Type": "application/x-www-form-urlencoded"})
        if status == 200:  # the admin exists from an earlier start
            return
        if status != 403:  # 403 "create admin user first": anything else means other users are in the way
            self.stop()
            raise ServerError(f"the InfluxDB in {self.data_dir} already has users and refuses the admin "
                              f"credentials of {self.admin[0]!r} ({status})", status)
        # InfluxDB takes one statement without credentials while no admin user exists: creating that admin.
        user, password = self.admin
        q = f"CREATE USER {_quote_ident(user)} WITH PASSWORD {_quote_string(password)} WITH ALL PRIVILEGES"
        status, body = self._request("POST", "/query", urllib.parse.urlencode({"q": q}).encode(),
                                     {"Content-Type": "application/x-www-form-urlencoded"}, as_admin=False)
        if status != 200 or b'"error"' in body:
            self.stop()
            raise ServerError(f"could not create the admin user {user!r} ({status}): "
                              f"{body.decode('utf-8', errors='replace').strip()}", status)


class VictoriaMetrics(_ServerProcess):
    """A real single-node VictoriaMetrics on 127.0.0.1, for the InfluxDB v2 write path.

    What VictoriaMetrics 1.79 makes of the line protocol, as seen on /api/v2/write?org=..&bucket=..:

    - each field becomes its own series named `{measurement}_{field}` (`machine_count` with fields `delta`
      and `value` gives `machine_count_delta` and `machine_count_value`); tags become labels as they are;
    - `org` and `bucket` are dropped: no label says where a point was written (only /write?db=NAME adds a
      `db="NAME"` label, and a tag called `db` is kept as written);
    - every value is a float: integers as they are, booleans as 1 and 0, and a string field as 0 (not
      refused, not skipped);
    - timestamps are kept in milliseconds, nanoseconds cut down (not rounded): two points less than 1 ms
      apart get the same timestamp and are both kept. With `precision=ns` given (the influxdb-client does)
      the number is read as nanoseconds; without it, VictoriaMetrics guesses the unit from its size;
    - the answer is 204 even for lines it could not parse (it skips them and logs an error) and for points
      more than 2 days in the future (silently dropped); an empty body and a gzip body are fine too.

    Points written become searchable only after an internal flush, about 10 s later; `flush()` forces it.
    `restart()` keeps the port and the data. `kill()` loses the points of the last 5 s or so, flushed or
    not: `flush()` makes points searchable, not durable (they reach the disk within about 5 s).
    """

    name = "victoria-metrics"
    log_name = "victoria-metrics.log"

    def __init__(self, data_dir: str | Path, port: int = 0, start_timeout_s: float = 30.0) -> None:
        super().__init__(find_victoria_metrics(), data_dir, port, start_timeout_s)

    def flush(self) -> None:
        """Make every point written so far visible to searches and exports (/internal/force_flush)."""
        status, body = _http("GET", self.url + "/internal/force_flush")
        if status != 200:
            raise ServerError(f"victoria-metrics refused the flush ({status}): {body[:500]!r}", status)

    def export(self, match: str) -> list[dict[str, Any]]:
        """Every stored series matching the series selector `match` (e.g. '{__name__=~"machine_count_.*"}'),
        as dicts with "metric" (labels, the name under "__name__"), "values" and "timestamps" (milliseconds).
        Points written since the last `flush()` may be missing."""
        # Without an explicit end the export leaves out about the last second, i.e. what was just written;
        # nothing is stored beyond 2 days ahead, so 3 days covers everything.
        end = int(time.time()) + 3 * 86400
        query = urllib.parse.urlencode({"match[]": match, "start": "0", "end": str(end)})
        status, body = _http("GET", f"{self.url}/api/v1/export?{query}")
        if status != 200:
            raise ServerError(f"victoria-metrics refused the export of {match!r} ({status}): "
                              f"{body.decode('utf-8', errors='replace').strip()}", status)
        return [json.loads(line) for line in body.decode("utf-8").splitlines() if line.strip()]

    def _command(self) -> list[str]:
        return [
            self.binary,
            f"-httpListenAddr={HOST}:{self.port}",
            f"-storageDataPath={self.data_dir.resolve() / 'data'}",
            # The tests write fixed timestamps that may lie years back; the default 1 month would drop them.
            "-retentionPeriod=100y",
            # By default the last 30 s are left out of query results as possibly incomplete.
            "-search.latencyOffset=0s",
            # A cached query_range answer would hide points written after it.
            "-search.disableCache",
            "-loggerLevel=ERROR",
        ]

    def _ready(self) -> bool:
        return _http("GET", self.url + "/health", timeout=1.0)[0] == 200
