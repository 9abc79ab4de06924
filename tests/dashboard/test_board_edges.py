"""Edges of the boards: stops that began before the shift, stops written as several points, the materials rate
off the minute, boards nobody watched, a historian that stops answering, and the hub at rest."""

import base64
import time

import psutil

from agent.sinks.influx import InfluxHistorian
from dashboard.hub import WATCH_S
from simulators.broker import free_port
from tests.dashboard.conftest import NOW, PASSWORD, state, t
from tests.dashboard.test_api import feed, login

BASIC = {"Authorization": "Basic " + base64.b64encode(f"lead:{PASSWORD}".encode()).decode()}


def historian(app):
    return app.extensions["shopfloor"]["historian"]


def test_a_stop_that_began_before_the_shift_keeps_its_start_and_takes_a_reason(app, client):
    historian(app).write([state("line-1", "press-2", "07:30", "FAULT")])
    stops = client.get("/api/v1/lines/line-1/stops?machine=press-2").get_json()["stops"]
    assert [(s["state"], s["id"], s["start_ms"], s["open"]) for s in stops] == [
        ("FAULT", str(t("07:30")), t("07:30") // 10**6, True)]
    resp = client.post(f"/api/v1/lines/line-1/machines/press-2/stops/{t('07:30')}/reason",
                       json={"reason": "breakdown"}, headers=BASIC)
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["end_ms"] == NOW // 10**6  # still going
    feed(app, "line-1/press-2/state", {"v": "FAULT", "ts": t("07:30") // 10**6})
    app.extensions["shopfloor"]["hub"].live_changed("line-1", "state")
    tile = client.get("/api/v1/lines/line-1").get_json()["machines"]["press-2"]
    assert tile["stop"] == {"state": "FAULT", "since_ms": t("07:30") // 10**6, "reason": "breakdown"}


def test_a_stop_written_as_several_points_is_one_open_stop(app, client):
    historian(app).write([state("line-1", "press-1", "09:40", "STOPPED"), state("line-1", "press-1", "09:50",
                                                                                 "STOPPED")])
    stops = client.get("/api/v1/lines/line-1/stops?machine=press-1").get_json()["stops"]
    assert [(s["state"], s["start_ms"], s["end_ms"], s["open"]) for s in stops] == [
        ("STOPPED", t("09:40") // 10**6, NOW // 10**6, True), ("FAULT", t("09:00") // 10**6, t("09:30") // 10**6,
                                                               False)]


def test_materials_rate_is_measured_up_to_where_the_data_reaches_not_to_now(app, client, clock):
    clock[0] = NOW + 90 * 10**9  # 10:01:30, but the line's data reaches 10:00 (late data is not "no output")
    materials = client.get("/api/v1/lines/line-1").get_json()["materials"]
    assert materials["rate_per_min"] == 10.0  # 150 units over the 15 minutes before 10:00, not over 16.5
    resin = next(i for i in materials["items"] if i["id"] == "resin-pp")
    assert resin["minutes_to_shortage"] == 20.0


def test_a_board_nobody_watched_is_rebuilt_when_asked_for(app, client):
    hub = app.extensions["shopfloor"]["hub"]
    feed(app, "line-1/press-1/state", {"v": "RUNNING", "ts": t("09:30") // 10**6})
    assert client.get("/api/v1/lines/line-1").get_json()["machines"]["press-1"]["state"] == "RUNNING"
    feed(app, "line-1/press-1/state", {"v": "FAULT", "ts": t("09:59") // 10**6})
    hub._scopes["line/line-1"].watched -= WATCH_S + 1  # the rebuild thread stopped keeping it current
    assert client.get("/api/v1/lines/line-1").get_json()["machines"]["press-1"]["state"] == "FAULT"


def test_when_the_historian_stops_answering_live_states_go_on_and_the_board_says_so(app, client):
    hub = app.extensions["shopfloor"]["hub"]
    seq, board = hub.get("line/line-1")
    assert board["history_error"] is None
    # a real InfluxDB client at a port nobody listens on: every read fails
    hub.historian = InfluxHistorian(f"http://127.0.0.1:{free_port()}", database="gone", timeout_s=1)
    hub.kpi_refresh_s = 0
    feed(app, "line-1/press-1/state", {"v": "FAULT", "ts": t("09:59") // 10**6})
    hub._rebuild({"line/line-1"}, force_history=False)
    _, board = hub.get("line/line-1")
    assert board["machines"]["press-1"]["state"] == "FAULT"  # the live half still moves
    assert board["history_error"] and board["machines"]["press-1"]["oee"]["availability"] == 0.75  # last figures
    assert hub.failing
    health = client.get("/api/v1/health").get_json()
    assert health["boards_failing"] == hub.failing


def test_the_hub_rests_when_nobody_watches(app):
    hub = app.extensions["shopfloor"]["hub"]
    hub.start()
    try:
        hub.live_changed("line-1", "state")  # a change nobody looks at
        me = psutil.Process()
        before = sum(me.cpu_times()[:2])
        time.sleep(1.5)
        used = sum(me.cpu_times()[:2]) - before
        assert used < 0.5, f"the board thread used {used:.2f} s of CPU in 1.5 s with nobody watching"
        assert hub.rebuilds == 0
    finally:
        hub.stop()


def test_head_requests_and_early_drops_give_stream_slots_back(client):
    for _ in range(3):  # more than max_streams (2)
        resp = client.head("/api/v1/stream?scope=line/line-1")
        assert resp.status_code == 200
        resp.close()  # what a WSGI server does after the headers of a HEAD: the body never runs
    assert client.get("/api/v1/health").get_json()["streams"] == 0
    resp = client.get("/api/v1/stream?scope=overview", buffered=False)
    resp.close()  # gone before the first byte
    assert client.get("/api/v1/health").get_json()["streams"] == 0


def test_a_session_with_another_authorization_header_still_needs_the_csrf_token(client):
    login(client)
    resp = client.post(f"/api/v1/lines/line-1/machines/press-1/stops/{t('09:00')}/reason",
                       json={"reason": "tooling"}, headers={"Authorization": "Bearer anything"})
    assert resp.status_code == 403


def test_odd_stop_ids_are_404_not_500(client):
    resp = client.post("/api/v1/lines/line-1/machines/press-1/stops/%C2%B2/reason", json={"reason": "tooling"},
                       headers=BASIC)
    assert resp.status_code == 404
