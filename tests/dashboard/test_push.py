"""The capacity push against the platform simulator's receiver (a real HTTP server on loopback): signed CloudEvents,
versions, a platform outage with a restart of the job in the middle, duplicates and reordering, refusals,
410, Retry-After, thin events, and a push at once on a significant change."""

import base64
import json
import os
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agent.config import CapacitySettings, PushEndpoint, PushSettings
from agent.core.schema import Point
from dashboard.push import CHANGED_TYPE, EVENT_TYPE, PushBusy, PushJob, sign
from simulators.broker import free_port
from simulators.harness import wait_until
from simulators.platform import Platform, make_server
from tests.dashboard.conftest import SITE, t

SECRET = "whsec_" + base64.b64encode(b"platform-secret-for-tests-0001").decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"the-key-before-the-rotation-02").decode()
OUTAGE_S = float(os.environ.get("SHOPFLOOR_PLATFORM_OUTAGE_S", "8"))


class Receiver:
    """The platform simulator's receiver on a free port; `down()` and `up()` take it away and bring it back on
    the same port with the same state."""

    def __init__(self, tmp_path, secrets=(SECRET,)):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/events"
        self.platform = Platform(list(secrets), tmp_path / "platform-state.json")
        self.server = None
        self.secrets = list(secrets)
        self.tmp_path = tmp_path
        self.up()

    def up(self):
        self.platform = Platform(self.secrets, self.tmp_path / "platform-state.json")  # a restarted platform
        self.server = make_server(self.platform, "127.0.0.1", self.port)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def down(self):
        self.server.shutdown()
        self.server.server_close()

    def versions(self):
        return {line: held["version"] for line, held in self.platform.snapshot()["lines"].items()}


@pytest.fixture
def receiver(tmp_path):
    r = Receiver(tmp_path)
    yield r
    r.down()


def push_job(app, tmp_path, url, secret_env=SECRET, **settings):
    os.environ["SHOPFLOOR_TEST_PUSH_SECRET"] = secret_env
    ext = app.extensions["shopfloor"]
    cfg = ext["cfg"].model_copy(update={"capacity": CapacitySettings(push=PushSettings(
        endpoints=[PushEndpoint(name="platform", url=url, secrets=["${SHOPFLOOR_TEST_PUSH_SECRET}"], timeout_s=2)],
        **settings))})
    ext["capacity"].cfg = cfg
    ext["capacity"].history.cfg = cfg
    return PushJob(cfg, ext["capacity"], tmp_path / "push", feed_url="http://127.0.0.1:8080",
                   now_ns=ext["now_ns"])


@pytest.fixture
def jobs():
    started = []
    yield started
    for job in started:
        job.stop()


def test_each_line_gets_a_signed_cloudevent_with_a_growing_version(app, tmp_path, receiver, jobs):
    job = push_job(app, tmp_path, receiver.url)
    jobs.append(job)
    job.start()
    wait_until(lambda: len(receiver.versions()) == 2, 20, "the first snapshot")
    first = receiver.versions()
    assert job.produce() == 2
    wait_until(lambda: receiver.versions() == job.endpoints[0].versions, 20, "the second snapshot")
    assert all(receiver.versions()[line] > first[line] for line in first)  # the version only grows
    held = receiver.platform.snapshot()["lines"]["line-1"]
    assert held["type"] == EVENT_TYPE and held["data"]["line"] == "line-1"
    bucket = held["data"]["lines"][0]["buckets"][0]  # Monday's day shift, as the feed says it
    assert (bucket["key"], bucket["committed_s"], bucket["available_s"]) == ("2026-11-23/day", 4500.0, 13068.0)
    health = job.health()["endpoints"][0]
    assert health["queue"] == 0 and health["delivered"] == 4 and health["last_delivery"] is not None


def test_the_platform_rejects_tampered_wrongly_signed_and_old_events(receiver):
    body = json.dumps({"specversion": "1.0", "id": "x.1", "source": "urn:test", "type": EVENT_TYPE,
                       "data": {"line": "line-1", "version": 99}})
    now = int(time.time())
    platform = receiver.platform
    assert platform.receive(body.encode(), sign([SECRET], "m-1", now, body))[0] == 200
    assert platform.receive(body.replace("99", "999").encode(), sign([SECRET], "m-2", now, body))[0] == 401
    assert platform.receive(body.encode(), sign([OLD_SECRET], "m-3", now, body))[0] == 401
    assert platform.receive(body.encode(), sign([SECRET], "m-4", now - 600, body))[0] == 401
    assert platform.receive(body.encode(), {"webhook-id": "m-5"})[0] == 401
    # the same message again (a retry after a lost answer) is taken once
    assert platform.receive(body.encode(), sign([SECRET], "m-1", now, body)) == (200, {"duplicate": True})
    state = platform.snapshot()
    assert state["accepted"] == 1 and state["duplicates"] == 1 and sum(state["rejected"].values()) == 4
    assert state["lines"]["line-1"]["version"] == 99


def test_key_rotation_signs_with_every_secret(receiver):
    body = '{"specversion":"1.0","id":"a","source":"s","type":"t","data":{"line":"line-2","version":3}}'
    headers = sign([OLD_SECRET, SECRET], "rot-1", int(time.time()), body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert receiver.platform.receive(body.encode(), headers)[0] == 200


@pytest.mark.timeout(OUTAGE_S + 240)
def test_a_platform_outage_and_a_restart_of_the_job_lose_nothing(app, tmp_path, receiver, jobs):
    job = push_job(app, tmp_path, receiver.url)
    jobs.append(job)
    job.start()
    wait_until(lambda: len(receiver.versions()) == 2, 20, "the first snapshot")
    receiver.down()
    for _ in range(3):
        job.produce()
    time.sleep(OUTAGE_S / 2)
    job.stop()  # the job stops with everything still waiting; a new one takes over from the same data
    jobs.remove(job)
    job = push_job(app, tmp_path, receiver.url)
    jobs.append(job)
    job.start()  # its first run pushes version 5
    assert job.health()["endpoints"][0]["queue"] >= 6
    time.sleep(OUTAGE_S / 2)
    assert job.health()["endpoints"][0]["failures"] > 0
    receiver.up()
    wait_until(lambda: job.health()["endpoints"][0]["queue"] == 0, OUTAGE_S + 90, "every event delivered")
    state = receiver.platform.snapshot()
    assert receiver.versions() == job.endpoints[0].versions  # the platform holds the newest of every line
    # every one of the 5 snapshots of every line arrived once, in order (none older than one before it)
    assert sorted(k.split(":")[0] for k in state["received_at"]) == ["line-1"] * 5 + ["line-2"] * 5
    assert state["stale"] == 0 and state["duplicates"] == 0 and not state["rejected"]


def test_duplicated_and_reordered_deliveries_end_in_the_same_state(tmp_path):
    events = []
    for version in range(1, 8):
        for line in ("line-1", "line-2"):
            body = json.dumps({"specversion": "1.0", "id": f"{line}.{version}", "source": "urn:test",
                               "type": EVENT_TYPE, "data": {"line": line, "version": version, "v": version * 10}})
            events.append((f"{line}.{version}", body))
    in_order = Platform([SECRET])
    for msg_id, body in events:
        in_order.receive(body.encode(), sign([SECRET], msg_id, int(time.time()), body))
    shuffled = Platform([SECRET])
    mixed = events + random.Random(7).sample(events, 6)
    random.Random(3).shuffle(mixed)
    for msg_id, body in mixed:
        assert shuffled.receive(body.encode(), sign([SECRET], msg_id, int(time.time()), body))[0] == 200
    strip = {line: (held["version"], held["data"]) for line, held in in_order.snapshot()["lines"].items()}
    assert {line: (held["version"], held["data"]) for line, held in shuffled.snapshot()["lines"].items()} == strip
    assert shuffled.snapshot()["duplicates"] == 6


class Scripted(BaseHTTPRequestHandler):
    """Answers POSTs with the statuses in `server.script` (then 200), noting when each came."""

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        self.server.calls.append(time.monotonic())
        status, headers = self.server.script.pop(0) if self.server.script else (200, {})
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


@pytest.fixture
def scripted():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    server.script, server.calls = [], []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def test_retry_after_is_honoured_and_a_refused_event_becomes_a_dead_letter(app, tmp_path, scripted, jobs):
    scripted.script = [(503, {"Retry-After": "3"}), (400, {})]
    job = push_job(app, tmp_path, f"http://127.0.0.1:{scripted.server_address[1]}/events")
    jobs.append(job)
    job.start()
    wait_until(lambda: job.health()["endpoints"][0]["delivered"] == 1, 30, "the events through")
    calls = scripted.calls
    assert calls[1] - calls[0] >= 2.9  # not sooner than the platform asked
    health = job.health()["endpoints"][0]
    assert health["refused"] == 1 and health["failures"] == 1 and health["queue"] == 0
    letters = job.endpoints[0].outbox.dead_letters()
    assert len(letters) == 1 and "answered 400" in letters[0]["reason"]


def test_410_disables_the_endpoint_until_its_url_changes(app, tmp_path, scripted, jobs, caplog):
    scripted.script = [(410, {})]
    url = f"http://127.0.0.1:{scripted.server_address[1]}/events"
    job = push_job(app, tmp_path, url)
    jobs.append(job)
    job.start()
    wait_until(lambda: job.health()["endpoints"][0]["disabled"], 20, "the endpoint disabled")
    time.sleep(1.5)
    assert len(scripted.calls) == 1 and job.health()["endpoints"][0]["queue"] == 2  # kept, not sent
    assert [r for r in caplog.records if "disabled" in r.getMessage()][0].levelname == "ERROR"
    job.stop()
    jobs.remove(job)
    again = push_job(app, tmp_path, url)  # restarted with the same URL: still disabled
    assert again.health()["endpoints"][0]["disabled"]
    again.close()
    moved = push_job(app, tmp_path, url + "?v=2")
    jobs.append(moved)
    moved.start()
    wait_until(lambda: moved.health()["endpoints"][0]["queue"] == 0, 20, "the kept events delivered")


def test_a_large_snapshot_goes_as_a_thin_changed_event(app, tmp_path, receiver, jobs):
    job = push_job(app, tmp_path, receiver.url, max_event_kb=1)
    jobs.append(job)
    job.start()
    wait_until(lambda: len(receiver.versions()) == 2, 20, "the first snapshot")
    held = receiver.platform.snapshot()["lines"]["line-2"]
    assert held["type"] == CHANGED_TYPE
    assert held["data"] == {"version": job.endpoints[0].versions["line-2"], "line": "line-2",
                            "as_of": "2026-11-23T02:00:00Z", "pull": "http://127.0.0.1:8080/v1/capacity?line=line-2"}


def test_a_machine_going_down_is_pushed_at_once(app, tmp_path, receiver, jobs):
    job = push_job(app, tmp_path, receiver.url)
    jobs.append(job)
    assert job.check() is False  # the first look only remembers
    app.extensions["shopfloor"]["historian"].write([
        Point("machine_state", {**SITE, "line": "line-2", "machine": "cnc-1"}, {"state": "FAULT", "raw": "r"},
              t("09:59"))])
    assert job.check() is True and job.health()["endpoints"][0]["queue"] == 2
    job.start()
    wait_until(lambda: "line-2" in receiver.versions(), 20, "the change delivered")
    reasons = [c["reason"] for c in receiver.platform.snapshot()["lines"]["line-2"]["data"]["lines"][0]["constraints"]]
    assert "machine_down" in reasons


def test_healthz_and_metrics_show_the_push(app, tmp_path, receiver, jobs):
    job = push_job(app, tmp_path, receiver.url)
    jobs.append(job)
    app.extensions["shopfloor"]["push"] = job
    job.start()
    wait_until(lambda: job.health()["endpoints"][0]["delivered"] == 2, 20, "the first snapshot")
    client = app.test_client()
    health = client.get("/healthz").get_json()
    assert health["status"] == "ok" and health["push"]["endpoints"][0]["delivered"] == 2
    text = client.get("/metrics").get_data(as_text=True)
    assert 'shopfloor_push_delivered_total{endpoint="platform"} 2.0' in text
    assert 'shopfloor_push_queue_events{endpoint="platform"} 0.0' in text


def test_a_refused_key_or_a_redirect_is_retried_not_dropped(app, tmp_path, scripted, jobs, monkeypatch, caplog):
    import dashboard.push

    monkeypatch.setattr(dashboard.push, "AUTH_RETRY_S", 0.5)
    scripted.script = [(401, {}), (401, {}), (302, {"Location": "/elsewhere"})]
    job = push_job(app, tmp_path, f"http://127.0.0.1:{scripted.server_address[1]}/events")
    jobs.append(job)
    job.start()
    wait_until(lambda: job.health()["endpoints"][0]["delivered"] == 2, 30, "both events delivered")
    health = job.health()["endpoints"][0]
    assert health["refused"] == 0 and health["failures"] == 3 and job.endpoints[0].outbox.dead_letters() == []
    # one error line per kind of answer, not one per try
    assert len([r for r in caplog.records if "check the URL and the signing secrets" in r.getMessage()]) == 2


def test_a_missing_secret_file_or_a_huge_retry_after_does_not_stop_the_delivery(app, tmp_path, scripted, jobs):
    import dashboard.push

    assert dashboard.push.retry_after_s("1e12") == dashboard.push.MAX_RETRY_AFTER_S
    assert dashboard.push.retry_after_s("nan") is None
    secret = tmp_path / "rotating-secret"
    job = push_job(app, tmp_path, f"http://127.0.0.1:{scripted.server_address[1]}/events")
    job.endpoints[0].conf = job.endpoints[0].conf.model_copy(update={"secrets": [], "secret_files": [secret]})
    jobs.append(job)
    job.start()  # the file is not there yet: the delivery fails and is tried again
    wait_until(lambda: job.health()["endpoints"][0]["failures"] >= 1, 20, "a failed try")
    secret.write_text(SECRET)
    wait_until(lambda: job.health()["endpoints"][0]["delivered"] == 2, 30, "both events delivered")
    assert job.health()["status"] == "ok" and job.health()["endpoints"][0]["delivering"]


def test_one_process_pushes_from_a_data_dir(app, tmp_path, receiver, jobs):
    job = push_job(app, tmp_path, receiver.url)
    jobs.append(job)
    with pytest.raises(PushBusy, match="pushed by another process"):
        push_job(app, tmp_path, receiver.url)  # a second dashboard or shopfloor sync on the same data
    job.stop()
    jobs.remove(job)
    push_job(app, tmp_path, receiver.url).close()  # free again once the first let go
