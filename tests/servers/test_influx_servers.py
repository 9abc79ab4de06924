"""The private time-series servers (simulators/influxdb.py) and the fault proxy (simulators/faults.py), against
the real InfluxDB 1.x and VictoriaMetrics binaries."""

from __future__ import annotations

import base64
import gzip
import http.client
import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest

from simulators.broker import HOST, free_port
from simulators.faults import FaultProxy
from simulators.influxdb import (
    InfluxServer,
    ServerError,
    VictoriaMetrics,
    find_influxd,
    find_victoria_metrics,
)

pytestmark = pytest.mark.skipif(not (find_influxd() and find_victoria_metrics()),
                                reason="needs Debian's influxdb and victoria-metrics packages")

T0 = 1_795_219_200 * 10**9  # 2026-11-21T00:00:00Z


def post(url, body=b"", headers=None, timeout=10.0):
    """(status, headers, body) of a POST; error statuses are returned, not raised."""
    request = urllib.request.Request(url, data=body, headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers, exc.read()


def write_url(base, db):
    return f"{base}/write?{urllib.parse.urlencode({'db': db, 'precision': 'ns'})}"


def rows(doc, statement=0):
    (series,) = doc["results"][statement]["series"]
    return [dict(zip(series["columns"], values, strict=True)) for values in series["values"]]


@pytest.fixture(scope="module")
def influx(tmp_path_factory):
    with InfluxServer(tmp_path_factory.mktemp("influxdb")) as server:
        yield server


@pytest.fixture
def db(influx):
    name = f"t_{uuid.uuid4().hex[:10]}"
    influx.create_database(name)
    return name


def test_a_gzip_write_reads_back_through_query_and_the_influx_client(influx, db):
    assert influx.running and influx.port > 0 and influx.url == f"http://{HOST}:{influx.port}"
    body = gzip.compress(f"press,machine=p1 count=5i,temp=61.5 {T0 + 1}\npress,machine=p2 count=7i {T0 + 2}"
                         .encode())
    status, _, answer = post(write_url(influx.url, db), body, {"Content-Encoding": "gzip"})
    assert (status, answer) == (204, b"")

    assert rows(influx.query("SELECT * FROM press", db=db)) == [
        {"time": T0 + 1, "count": 5, "temp": 61.5, "machine": "p1"},
        {"time": T0 + 2, "count": 7, "temp": None, "machine": "p2"}]
    out = influx.influx_cli("-database", db, "-execute", "SELECT count, machine FROM press", "-format", "json",
                            "-precision", "rfc3339")
    assert rows(json.loads(out)) == [
        {"time": "2026-11-21T00:00:00.000000001Z", "count": 5, "machine": "p1"},
        {"time": "2026-11-21T00:00:00.000000002Z", "count": 7, "machine": "p2"}]

    with pytest.raises(ServerError, match="database not found"):
        influx.query("SELECT * FROM press", db="no_such_db")
    with pytest.raises(ServerError, match="exited with 1"):
        influx.influx_cli("-execute", "SELECT FROM")


def test_influxd_answers_that_clients_depend_on(influx, db):
    """What InfluxDB 1.6 does at the edges of /write, so that a change of server version shows here."""
    assert post(write_url(influx.url, db), b"")[::2] == (204, b"")  # an empty body is quietly accepted
    assert post(write_url(influx.url, "no_such_db"), b"m f=1 1")[::2] == (
        404, b'{"error":"database not found: \\"no_such_db\\""}\n')
    # A raw newline inside a string field is taken as part of the string. In a tag value a backslash is an
    # ordinary character unless it comes before a comma, space or equals sign, so "\\" stays two of them.
    lines = b'm,t=a\\b,u=a\\\\b,v=a\\ b s="one\ntwo",e="q\\"\\\\" 1'
    assert post(write_url(influx.url, db), lines)[0] == 204
    assert rows(influx.query("SELECT * FROM m", db=db)) == [
        {"time": 1, "s": "one\ntwo", "e": 'q"\\', "t": "a\\b", "u": "a\\\\b", "v": "a b"}]
    # ... so a tag value cannot end in a backslash: it escapes the separator after it
    status, _, answer = post(write_url(influx.url, db), b"m,t=a\\ f=1 2")
    assert status == 400 and b"invalid tag format" in answer


def test_two_servers_at_once_and_a_restart_keeps_the_data(tmp_path):
    with InfluxServer(tmp_path / "a") as a, InfluxServer(tmp_path / "b") as b:
        assert a.port != b.port
        assert a.config_file.read_text() != b.config_file.read_text()  # the RPC ports differ as well
        for server, value in ((a, 1), (b, 2)):
            server.create_database("plant")
            server.write_lines("plant", f"m f={value} {T0}")
        port = a.port
        a.restart()
        assert a.port == port and rows(a.query("SELECT f FROM m", db="plant")) == [{"time": T0, "f": 1}]
        a.kill()
        assert not a.running and b.running
        a.start()
        assert rows(a.query("SELECT f FROM m", db="plant")) == [{"time": T0, "f": 1}]
        assert rows(b.query("SELECT f FROM m", db="plant")) == [{"time": T0, "f": 2}]


def test_a_server_that_cannot_start_says_why(tmp_path):
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        server = InfluxServer(tmp_path / "influxdb", port=taken.getsockname()[1])
        with pytest.raises(ServerError, match="address already in use"):
            server.start()
        assert not server.running


def test_auth_refuses_anonymous_queries_and_keeps_its_users_over_a_restart(tmp_path):
    with InfluxServer(tmp_path / "influxdb", auth=True) as server:
        status, _, answer = post(f"{server.url}/query", urllib.parse.urlencode({"q": "SHOW DATABASES"}).encode(),
                                 {"Content-Type": "application/x-www-form-urlencoded"})
        assert status == 401 and b"unable to parse authentication credentials" in answer
        server.create_database("plant")
        server.create_user("agent", "agent-secret")
        agent = {"Authorization": "Basic " + base64.b64encode(b"agent:agent-secret").decode()}
        status, _, answer = post(write_url(server.url, "plant"), b"m f=1 1", agent)
        assert status == 403 and b'user is not authorized to write to database' in answer
        server.grant("WRITE", "plant", "agent")
        assert post(write_url(server.url, "plant"), b"m f=1 1", agent)[0] == 204

        server.restart()  # the admin exists now: it is not created twice
        users = rows(server.query("SHOW USERS"))
        assert users == [{"user": "admin", "admin": True}, {"user": "agent", "admin": False}]
        assert "plant" in server.influx_cli("-execute", "SHOW DATABASES")


def test_victoria_metrics_takes_the_v2_write_path(tmp_path):
    with VictoriaMetrics(tmp_path / "victoria") as victoria:
        lines = f"machine_count,site=cixi-1,machine=p1 delta=1i,value=41i {T0 + 1_999_999}\n"
        status, _, _ = post(f"{victoria.url}/api/v2/write?org=o&bucket=b&precision=ns",
                            gzip.compress(lines.encode()), {"Content-Encoding": "gzip"})
        assert status == 204
        victoria.flush()
        series = {s["metric"]["__name__"]: s for s in victoria.export('{__name__=~"machine_count_.*"}')}
        assert series["machine_count_delta"]["metric"] == {
            "__name__": "machine_count_delta", "site": "cixi-1", "machine": "p1"}  # no label from the bucket
        assert series["machine_count_value"]["values"] == [41]
        assert series["machine_count_value"]["timestamps"] == [T0 // 10**6 + 1]  # milliseconds, cut down


@pytest.fixture
def proxy(influx):
    with FaultProxy(influx.url) as p:
        yield p


def test_the_proxy_forwards_writes_and_keeps_connections_alive(influx, db, proxy):
    conn = http.client.HTTPConnection(HOST, proxy.port, timeout=10)
    sizes, sockets = [], set()
    for i in range(3):  # one connection for all three, as a client's pool does
        body = gzip.compress(f"m f={i}{'0' * i} {T0 + i}".encode())
        sizes.append(len(body))
        conn.request("POST", f"/write?db={db}&precision=ns", body, {"Content-Encoding": "gzip"})
        response = conn.getresponse()
        assert (response.status, response.read()) == (204, b"")
        sockets.add(conn.sock)
    conn.close()
    assert len(sockets) == 1 and None not in sockets
    assert [r["f"] for r in rows(influx.query("SELECT f FROM m", db=db))] == [0, 10, 200]
    assert [(r.method, r.path, r.status, r.body_len, r.forwarded) for r in proxy.requests] == [
        ("POST", f"/write?db={db}&precision=ns", 204, size, True) for size in sizes]


def test_the_proxy_injects_an_overload_answer_once(influx, db, proxy):
    proxy.fail_next(429, body='{"error":"busy"}', headers={"Retry-After": "3"})
    status, headers, answer = post(write_url(proxy.url, db), b"m f=1 1")
    assert (status, headers["Retry-After"], answer) == (429, "3", b'{"error":"busy"}')
    assert post(write_url(proxy.url, db), b"m f=1 1")[0] == 204
    assert post(f"{proxy.url}/query", b"q=SHOW+DATABASES", {"Content-Type": "application/x-www-form-urlencoded"}
                )[0] == 200
    first, second, third = proxy.requests
    assert (first.status, first.forwarded, second.status, second.forwarded) == (429, False, 204, True)
    assert first.at <= second.at <= third.at and third.path == "/query"


def test_the_proxy_refuses_large_bodies_and_holds_requests(influx, db, proxy):
    proxy.max_body_bytes = 100
    status, _, answer = post(write_url(proxy.url, db), b"m f=1 1\n" * 20)
    assert status == 413 and b"Request Entity Too Large" in answer
    assert post(write_url(proxy.url, db), b"m f=1 1")[0] == 204
    assert [(r.status, r.body_len, r.forwarded) for r in proxy.requests] == [(413, 160, False), (204, 7, True)]

    proxy.stall_next(1.0)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        post(write_url(proxy.url, db), b"late f=1 1", timeout=0.3)
    assert time.monotonic() - started < 0.9
    time.sleep(1.0)  # the held request reaches the server anyway, after the client gave up
    assert rows(influx.query("SELECT f FROM late", db=db)) == [{"time": 1, "f": 1}]
    proxy.reset()
    assert proxy.max_body_bytes is None and post(write_url(proxy.url, db), b"m f=1 1\n" * 20)[0] == 204


def test_the_proxy_answers_502_when_the_upstream_is_down():
    with FaultProxy(f"http://{HOST}:{free_port()}") as proxy:
        status, _, answer = post(f"{proxy.url}/ping", b"")
        assert status == 502 and answer.startswith(b"Bad Gateway")
        assert proxy.requests[0].forwarded is False
