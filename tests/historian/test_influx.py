"""The InfluxDB historian against real servers: InfluxDB 1.x (Debian's `influxdb`) for /write and /query,
VictoriaMetrics for the v2 write path, and a fault-injecting proxy in front of the real InfluxDB for the
errors a loaded server or a reverse proxy gives (413, 429, 5xx, timeouts)."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import uuid

import pytest

from agent.core.schema import Point
from agent.health import AgentState
from agent.historian import HistorianError
from agent.outbox import Outbox
from agent.pipeline import DRAIN_BATCH_FACTOR, Pipeline
from agent.sinks.influx import InfluxHistorian
from simulators.faults import FaultProxy
from simulators.harness import wait_until
from simulators.influxdb import InfluxServer, VictoriaMetrics
from tests.conftest import FACTORY_YAML, ROOT

S = 1_000_000_000
T0 = 1_795_219_200 * S
SITE = {"site": "cixi-1", "line": "line-1"}


def counts(n, machine="press-1", start=0):
    return [Point("machine_count", {**SITE, "machine": machine, "counter": "total"}, {"delta": 1, "value": start + i},
                  T0 + (start + i) * 1000) for i in range(n)]


def temps(n, machine="press-1"):
    return [Point("process_value", {**SITE, "machine": machine, "name": "mold_temp"},
                  {"value": 60.0 + i / 1000, "quality": "Good", "status": 0}, T0 + i * 1000) for i in range(n)]


def stored_total(historian, machine="press-1"):
    return sum(b.delta for b in historian.count_sums(T0, T0 + 3600 * S, 3600, machine=machine))


@pytest.fixture
def database(influx_server):
    name = f"t_{uuid.uuid4().hex[:12]}"
    influx_server.create_database(name)
    return name


@pytest.fixture
def proxy(influx_server):
    with FaultProxy(influx_server.url) as p:
        yield p


class Drain:
    """A pipeline with a real outbox writing into `historian`: what the agent does, without sources."""

    def __init__(self, tmp_path, cfg, historian, claim_points=None):
        self.outbox = Outbox(tmp_path / "outbox.sqlite3", 10**9)
        self.state = AgentState("test")
        self.pipeline = Pipeline(cfg, self.outbox, historian, self.state)
        if claim_points is not None:  # smaller claims: several writes in flight for a few thousand points
            self.pipeline.batch_points = claim_points // DRAIN_BATCH_FACTOR
        self.pipeline.start()

    def send(self, points, batch=None):
        """Commit the points to the outbox, in batches of `batch` points (one batch when None)."""
        batch = batch or len(points)
        for start in range(0, len(points), batch):
            self.outbox.enqueue(points[start:start + batch])

    def wait_empty(self, timeout=20):
        wait_until(lambda: self.outbox.depth()[1] == 0, timeout, "the outbox to drain")

    def close(self):
        self.pipeline.stop()
        self.outbox.close()


@pytest.fixture
def drain(tmp_path, factory_cfg):
    made = []

    def make(historian, claim_points=None):
        d = Drain(tmp_path, factory_cfg, historian, claim_points)
        made.append(d)
        return d
    yield make
    for d in made:
        d.close()


def test_points_read_back_with_the_servers_own_client(influx_server, database):
    historian = InfluxHistorian(influx_server.url, database=database)
    tags = {"site": "cixi-1", "line": "一号线 'A'", "station": 'st "x"\\y', "event": "in"}
    historian.write([Point("operator_event", tags, {"badge": "B'1", "operator": "王芳"}, T0 + 123),
                     *counts(3)])
    out = influx_server.influx_cli("-database", database, "-format", "json", "-execute",
                                   "SELECT * FROM operator_event; SELECT SUM(delta) FROM machine_count")
    docs = json.loads(out)
    (event,) = docs["results"][0]["series"]
    row = dict(zip(event["columns"], event["values"][0], strict=True))
    assert row == {"time": T0 + 123, "badge": "B'1", "operator": "王芳", **tags}
    assert docs["results"][1]["series"][0]["values"][0][1] == 3


def test_batches_are_gzip_and_at_most_5000_lines(influx_server, database, proxy):
    historian = InfluxHistorian(proxy.url, database=database)
    assert historian.write(temps(12_000)).accepted == 12_000
    writes = [r for r in proxy.requests if r.path.startswith("/write")]
    assert len(writes) == 3 and all(r.status == 204 for r in writes)
    # 5,000 lines of about 90 bytes each, compressed
    assert all(r.body_len < 5000 * 90 / 4 for r in writes)
    assert len(historian.series("process_value", "value", T0, T0 + S, machine="press-1")) == 12_000


@pytest.mark.parametrize("in_flight", [1, 4])
def test_too_large_requests_are_split_until_the_server_takes_them(influx_server, database, proxy, drain,
                                                                  in_flight):
    proxy.max_body_bytes = 4_000  # a reverse proxy's body limit: about 1,000 compressed lines
    historian = InfluxHistorian(proxy.url, database=database, in_flight=in_flight)
    d = drain(historian, claim_points=2000)
    d.send(counts(5000), batch=2000)  # three claims: 2,000, 2,000 and 1,000 points
    d.wait_empty()
    statuses = [r.status for r in proxy.requests if r.path.startswith("/write")]
    assert 413 in statuses and statuses.count(204) >= 3
    assert all(r.body_len <= 4_000 for r in proxy.requests if r.status == 204)
    assert stored_total(historian) == 5000 and d.outbox.dead_letters() == []


@pytest.mark.parametrize("in_flight", [1, 4])
def test_a_partial_write_keeps_the_good_lines_and_dead_letters_the_refused_ones(influx_server, database, drain,
                                                                                in_flight):
    # A real refusal from the server: another program already wrote `delta` of press-9 as a float, so
    # InfluxDB refuses integer deltas for that measurement in this shard ("field type conflict").
    influx_server.write_lines(database, f"machine_count,site=x,line=x,machine=x,counter=x delta=1.5 {T0}")
    historian = InfluxHistorian(influx_server.url, database=database, in_flight=in_flight)
    d = drain(historian, claim_points=500)
    good = temps(2000)
    refused = counts(3, machine="press-9")
    # five claims; the refused lines are in the second and the third, written at once with the others
    d.send(good[:999] + refused + good[999:], batch=500)
    d.wait_empty()
    assert len(historian.series("process_value", "value", T0, T0 + S, machine="press-1")) == 2000
    dead = d.outbox.dead_letters()
    assert len(dead) == 3 and all(x["source"] == "historian" for x in dead)
    assert all("field type conflict" in x["reason"] and "(400)" in x["reason"] for x in dead)
    assert d.state.metrics.dead_letters.labels("historian")._value.get() == 3


def test_writes_in_flight_a_failed_one_is_written_again_and_nothing_is_lost_or_doubled(influx_server, database,
                                                                                        proxy, drain):
    proxy.fail_next(503, body='{"error":"busy"}')  # the first request to arrive fails
    proxy.stall_next(3.0, count=3)  # the next three are answered late (the client waits 10 s)
    historian = InfluxHistorian(proxy.url, database=database, in_flight=4)
    d = drain(historian, claim_points=1000)
    d.send(counts(5000), batch=1000)  # five claims of 1,000 counts
    d.wait_empty()
    writes = [r for r in proxy.requests if r.path.startswith("/write")]
    # four requests at once: all four arrived while the late ones were still held (a drain writing one
    # request after the other would have waited 3 s for each answer)
    first_four = sorted(r.at for r in writes)[:4]
    assert first_four[-1] - first_four[0] < 3.0
    # each claim was confirmed once; the failed one was written again after the others had ended
    assert sorted(r.status for r in writes) == [204] * 5 + [503]
    assert d.state.metrics.write_errors.labels("historian")._value.get() == 1
    assert stored_total(historian) == 5000 and d.outbox.dead_letters() == []
    assert sorted(p.fields["value"] for p in historian.events("machine_count", T0, T0 + S)) == list(range(5000))


# The agent's drain in a process of its own, killed while writes are in flight.
DRAIN_PROCESS = """
import sys, threading
from pathlib import Path
from agent.config import load
from agent.health import AgentState
from agent.outbox import Outbox
from agent.pipeline import Pipeline
from agent.sinks.influx import InfluxHistorian
outbox_path, url, database, factory_yaml = sys.argv[1:]
pipeline = Pipeline(load(Path(factory_yaml)), Outbox(Path(outbox_path), 10**9),
                    InfluxHistorian(url, database=database, in_flight=4), AgentState("killed"))
pipeline.batch_points = 250
pipeline.start()
print("draining", flush=True)
threading.Event().wait()
"""


def test_a_drain_killed_with_writes_in_flight_resumes_and_the_historian_equals_the_input(
        influx_server, database, proxy, tmp_path, factory_cfg):
    points = counts(20_000)
    outbox = Outbox(tmp_path / "outbox.sqlite3", 10**9)
    for start in range(0, len(points), 1000):  # 20 claims of 1,000 counts
        outbox.enqueue(points[start:start + 1000])
    outbox.close()
    child = subprocess.Popen([sys.executable, "-c", DRAIN_PROCESS, str(tmp_path / "outbox.sqlite3"), proxy.url,
                              database, str(FACTORY_YAML)], cwd=ROOT)
    try:
        def waiting():
            with sqlite3.connect(tmp_path / "outbox.sqlite3") as conn:
                return conn.execute("SELECT COALESCE(SUM(n_points), 0) FROM batch").fetchone()[0]

        wait_until(lambda: waiting() <= 17_000, 60, "the first claims to settle")
        # From now on every request is held, longer than this test lasts: writes stay in flight, and what they
        # carry reaches InfluxDB only if the restarted agent writes it again.
        proxy.stall_next(120.0, count=100)
        stall = proxy._stalls[0]  # noqa: SLF001 - how many requests the proxy has taken to hold so far
        wait_until(lambda: child.poll() is not None or stall.count < 100, 10, "a write held in flight")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    at_kill = waiting()
    assert 0 < at_kill < 20_000  # killed mid-drain: some claims settled, others in flight or waiting
    proxy.reset()
    # the restarted agent drains the same outbox, straight into InfluxDB
    historian = InfluxHistorian(influx_server.url, database=database, in_flight=4)
    outbox = Outbox(tmp_path / "outbox.sqlite3", 10**9)
    pipeline = Pipeline(factory_cfg, outbox, historian, AgentState("restarted"))
    pipeline.batch_points = 250
    pipeline.start()
    try:
        wait_until(lambda: outbox.depth()[1] == 0, 60, "the outbox to drain")
    finally:
        pipeline.stop()
        outbox.close()
    stored = historian.events("machine_count", T0, T0 + S)
    assert sorted(stored, key=lambda p: p.fields["value"]) == points  # every point, once, as it was
    assert stored_total(historian) == 20_000


@pytest.mark.parametrize("status", [429, 500, 503])
def test_overload_and_server_errors_are_retried_honouring_retry_after(influx_server, database, proxy, drain,
                                                                      status):
    proxy.fail_next(status, count=2, body='{"error":"busy"}', headers={"Retry-After": "1"})
    historian = InfluxHistorian(proxy.url, database=database)
    d = drain(historian)
    d.send(counts(100))
    d.wait_empty()
    writes = [r for r in proxy.requests if r.path.startswith("/write")]
    assert [r.status for r in writes] == [status, status, 204]
    assert writes[1].at - writes[0].at >= 0.95 and writes[2].at - writes[1].at >= 0.95  # Retry-After: 1
    assert stored_total(historian) == 100 and d.outbox.dead_letters() == []


def test_a_timeout_is_retried_and_nothing_is_doubled(influx_server, database, proxy, drain):
    proxy.stall_next(2.0)  # the request reaches the server late: after the client gave up
    historian = InfluxHistorian(proxy.url, database=database, timeout_s=0.5)
    d = drain(historian)
    d.send(counts(100))
    d.wait_empty()
    assert d.state.metrics.write_errors.labels("historian")._value.get() == 1  # the timed-out attempt
    # the stalled request lands too, after the client gave up: the same 100 points, written twice
    wait_until(lambda: len(proxy.requests) == 2, 5, "the stalled request to reach the server")
    assert [r.status for r in proxy.requests] == [204, 204]
    assert stored_total(historian) == 100


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    with InfluxServer(tmp_path_factory.mktemp("influx-auth"), auth=True) as server:
        server.create_database("plant")
        server.create_user("agent", "agent-secret")
        server.create_user("viewer", "viewer-secret")
        server.grant("READ", "plant", "viewer")
        yield server


def test_wrong_credentials_stop_writes_with_a_clear_message_and_keep_the_points(secured, drain):
    historian = InfluxHistorian(secured.url, database="plant", username="agent", password="wrong", auth_retry_s=0.5)
    with pytest.raises(HistorianError) as err:
        historian.write(counts(1))
    assert "refused the credentials" in str(err.value) and "(401" in str(err.value) and err.value.retry

    no_rights = InfluxHistorian(secured.url, database="plant", username="agent", password="agent-secret",
                                auth_retry_s=0.5)
    d = drain(no_rights)
    d.send(counts(50))
    wait_until(lambda: "(403" in d.state.last_write_error, 10, "the write to be refused")
    # the 50 counts wait (with the pipeline's heartbeats, one every few seconds)
    assert "username/password" in d.state.last_write_error and d.outbox.depth()[1] >= 50
    secured.grant("ALL", "plant", "agent")  # the administrator fixes the rights; the agent carries on
    d.wait_empty()
    assert stored_total(no_rights) == 50 and d.outbox.dead_letters() == []


def test_check_connection_names_what_is_wrong(influx_server, secured, database):
    assert InfluxHistorian(influx_server.url, database=database).check_connection() == []
    (unreachable,) = InfluxHistorian("http://127.0.0.1:9", database=database).check_connection()
    assert "not reachable" in unreachable
    problems = InfluxHistorian(influx_server.url, database="no_such_db").check_connection()
    assert any("no such database" in p for p in problems) and any("database not found" in p for p in problems)
    viewer = InfluxHistorian(secured.url, database="plant", username="viewer", password="viewer-secret")
    (write,) = viewer.check_connection()
    assert write.startswith("write:") and "refused the write right (403" in write
    wrong = InfluxHistorian(secured.url, database="plant", username="viewer", password="nope").check_connection()
    assert len(wrong) == 2 and all("401" in p for p in wrong)


@pytest.fixture(scope="module")
def victoria(tmp_path_factory):
    with VictoriaMetrics(tmp_path_factory.mktemp("victoria")) as server:
        yield server


def test_a_refused_request_as_a_whole_keeps_every_point_waiting(influx_server, database, proxy, drain):
    # a 400 that is not about lines (a proxy in front of InfluxDB) and a 200 page that is not InfluxDB's
    proxy.fail_next(400, body="<html>The plain HTTP request was sent to HTTPS port</html>")
    proxy.fail_next(200, body="<html>login</html>")
    historian = InfluxHistorian(proxy.url, database=database, auth_retry_s=0.3)
    d = drain(historian)
    d.send(counts(200))
    d.wait_empty()
    statuses = [r.status for r in proxy.requests if r.path.startswith("/write")]
    assert statuses == [400, 200, 204]  # one request each: nothing was split, nothing dead-lettered
    assert stored_total(historian) == 200 and d.outbox.dead_letters() == []


def test_a_query_answer_that_is_not_influxdbs_is_an_error(influx_server, database, proxy):
    proxy.fail_next(404, body='{"code":"not found","message":"page not found"}', path="/query")
    with pytest.raises(HistorianError, match="query answered 404"):
        InfluxHistorian(proxy.url, database=database).count_sums(T0, T0 + S, 60)


def test_v2_errors_keep_the_points(victoria):
    with FaultProxy(victoria.url) as proxy:
        proxy.fail_next(503, body="busy", headers={"Retry-After": "2"}, path="/api/v2/write")
        historian = InfluxHistorian(proxy.url, api="v2", org="factory", bucket="shopfloor", token="t")
        with pytest.raises(HistorianError) as err:
            historian.write(counts(3))
        assert err.value.retry and err.value.retry_after == 2.0 and "(503" in str(err.value)
        assert historian.write(counts(3)).accepted == 3
        historian.close()
    # TLS to a server that speaks plain HTTP: no answer, never a success
    tls = InfluxHistorian(victoria.url.replace("http:", "https:"), api="v2", org="o", bucket="b", token="t")
    with pytest.raises(HistorianError, match="write failed|no answer"):
        tls.write(counts(1))
    tls.close()


def test_v2_write_path_through_influxdb_client(victoria):
    historian = InfluxHistorian(victoria.url, api="v2", org="factory", bucket="shopfloor", token="unused")
    points = [Point("machine_count", {**SITE, "machine": "press-7", "counter": "total"}, {"delta": 1, "value": i},
                    T0 + i * 1_000_000 + 999) for i in range(5)]
    points.append(Point("material_level", {**SITE, "material": "resin-pp"}, {"level": 182.5}, T0 + 7 * S))
    assert historian.write(points).accepted == 6
    historian.close()
    victoria.flush()
    series = victoria.export('{__name__=~"machine_count_delta|material_level_level"}')
    by_name = {s["metric"]["__name__"]: s for s in series if s["metric"].get("machine") in ("press-7", None)}
    delta = by_name["machine_count_delta"]
    assert {k: delta["metric"][k] for k in ("site", "line", "machine", "counter")} == {
        **SITE, "machine": "press-7", "counter": "total"}
    assert delta["values"] == [1, 1, 1, 1, 1]
    # the nanosecond times arrive as sent; VictoriaMetrics keeps them to the millisecond
    assert delta["timestamps"] == [T0 // 1_000_000 + i for i in range(5)]
    assert by_name["material_level_level"]["values"] == [182.5]


SQLITE_HISTORIAN = "historian:\n  kind: sqlite\n  retention_days: 400\n"


def with_historian(tmp_path, historian):
    text = FACTORY_YAML.read_text(encoding="utf-8")
    assert SQLITE_HISTORIAN in text
    path = tmp_path / "factory.yaml"
    path.write_text(text.replace(SQLITE_HISTORIAN, historian, 1), encoding="utf-8")
    return path


def test_in_flight_is_an_influxdb_setting_from_1_to_16(tmp_path):
    from agent.config import ConfigError, load

    influx = "historian:\n  kind: influxdb\n  url: http://db:8086\n  database: plant\n"
    assert load(with_historian(tmp_path, influx)).historian.in_flight == 4
    assert load(with_historian(tmp_path, influx + "  in_flight: 1\n")).historian.in_flight == 1
    for value in ("0", "17", "two"):
        with pytest.raises(ConfigError) as err:
            load(with_historian(tmp_path, influx + f"  in_flight: {value}\n"))
        assert "historian.in_flight" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load(with_historian(tmp_path, SQLITE_HISTORIAN + "  in_flight: 2\n"))
    assert "historian.in_flight" in str(err.value) and "this key is for kind: influxdb" in str(err.value)
