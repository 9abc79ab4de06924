"""A line lead acknowledges an andon call from the board: POST /api/v1/lines/<line>/andon/<call_id>/ack on the real
app over a SQLite historian holding the calls. The acknowledgement is an andon_event like a station's ack button
writes, at the dashboard's clock, so the andon KPI and the boards show it; who did it is in the point's badge
and in the audit log."""

import base64
import logging
import time

import pytest
from argon2 import PasswordHasher

from agent.config import DashboardSettings, DashboardUser
from agent.core.schema import validate
from agent.sinks.sqlite_historian import SqliteHistorian
from dashboard import create_app
from dashboard.kpi.andon import andon_calls
from tests.dashboard.conftest import MON, NOW, SHOP_FLOOR, event, t
from tests.kpi.test_oee_golden import at

HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)  # cheap: the suite's machine is shared
PASSWORDS = {"lead": "lead of the early shift", "boss": "admin pass 1", "tv": "viewer pass 1"}
# a maintenance call at assy-1 at 09:40 that nobody has acknowledged yet (A-1 is acknowledged by its station,
# A-0 resolved); A-9 is called at 10:05 by a station whose clock runs ahead of the dashboard's
OPEN_CALL = event("andon_event", "09:40", {"call_id": "A-2", "badge": "B1003"}, station="assy-1", event="call",
                  kind="maintenance")
AHEAD = event("andon_event", "10:05", {"call_id": "A-9"}, station="mold-2", event="call", kind="quality")
ACK_URL = "/api/v1/lines/line-1/andon/{}/ack"


@pytest.fixture
def historian(tmp_path):
    h = SqliteHistorian(tmp_path / "historian.sqlite3", retention_days=3650)
    h.write([*SHOP_FLOOR, OPEN_CALL, AHEAD])
    yield h
    h.close()


@pytest.fixture
def app(factory_cfg, tmp_path, historian):
    users = [DashboardUser(name="lead", password_hash=HASHER.hash(PASSWORDS["lead"])),
             DashboardUser(name="boss", role="admin", password_hash=HASHER.hash(PASSWORDS["boss"])),
             DashboardUser(name="tv", role="viewer", password_hash=HASHER.hash(PASSWORDS["tv"]))]
    cfg = factory_cfg.model_copy(update={"dashboard": DashboardSettings(users=users)})
    app = create_app(cfg, data_dir=tmp_path, historian=historian, now_ns=lambda: NOW, start_live=False)
    yield app
    app.extensions["shopfloor"]["sessions"].close()
    app.extensions["shopfloor"]["holds"].close()


@pytest.fixture
def client(app):
    return app.test_client()


def basic(user):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{PASSWORDS[user]}".encode()).decode()}


def acks(historian):
    return [p for p in historian.events("andon_event", t("00:00"), at(MON, "23:59"), line="line-1")
            if p.tags["event"] == "ack"]


def call(historian, call_id):
    events = historian.events("andon_event", t("00:00"), at(MON, "23:59"), line="line-1")
    return next(c for c in andon_calls(events) if c.call_id == call_id)


def audit_lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "shopfloor.audit"]


def board_andon(client, call_id):
    """The line board's acked_ms of an open call, as the board's JSON has it."""
    people = client.get("/api/v1/lines/line-1").get_json()["people"]
    return [c["acked_ms"] for c in people["andon"] if c["call_id"] == call_id], people


def test_a_lead_acknowledges_an_open_call(app, client, historian, caplog):
    caplog.set_level(logging.INFO, "shopfloor.audit")
    hub = app.extensions["shopfloor"]["hub"]
    hub.start()  # the boards' rebuild thread, as the dashboard runs it: the board read below stays watched
    try:
        assert board_andon(client, "A-2")[0] == [None]
        resp = client.post(ACK_URL.format("A-2"), headers=basic("lead"))
        assert resp.status_code == 200, resp.get_json()
        # the board shows it acknowledged soon (its historian half is otherwise re-read every kpi_refresh_s, 10 s)
        deadline = time.monotonic() + 5
        while (seen := board_andon(client, "A-2"))[0] == [None] and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        hub.stop()
    acked_ms, people = seen
    assert acked_ms == [NOW // 10**6]
    # the shift's mean time to acknowledge takes it in (60, 120 and 1200 s)
    assert people["andon_shift"]["mean_ack_s"] == pytest.approx((60 + 120 + 1200) / 3)
    assert resp.get_json() == {"line": "line-1", "call_id": "A-2", "station": "assy-1", "kind": "maintenance",
                               "called_ms": t("09:40") // 10**6, "acked_ms": NOW // 10**6,
                               "time_to_acknowledge_s": 1200.0, "by": "lead"}
    # the andon KPI over the historian's events: acknowledged at the dashboard's now, 20 minutes after the call
    acked = call(historian, "A-2")
    assert (acked.acked_ns, acked.time_to_acknowledge_s, acked.resolved_ns, acked.open) == (NOW, 1200.0, None, True)
    # one point, valid by the schema, with the call's station and kind and the user in the badge
    [point] = [p for p in acks(historian) if p.fields["call_id"] == "A-2"]
    assert validate(point) == point
    assert point.tags == {"site": "cixi-1", "line": "line-1", "station": "assy-1", "event": "ack",
                          "kind": "maintenance"}
    assert point.fields == {"call_id": "A-2", "badge": "dashboard:lead"}
    assert audit_lines(caplog) == ["user=lead role=lead client=127.0.0.1 action=andon_ack line=line-1 call=A-2 "
                                   "station=assy-1 kind=maintenance waited_s=1200.0"]


def test_an_admin_may_acknowledge_too(client, historian):
    assert client.post(ACK_URL.format("A-2"), headers=basic("boss")).status_code == 200
    assert [p.fields["badge"] for p in acks(historian) if p.fields["call_id"] == "A-2"] == ["dashboard:boss"]


def test_a_viewer_or_nobody_is_refused_and_nothing_is_written(client, historian, caplog):
    caplog.set_level(logging.INFO, "shopfloor.audit")
    before = acks(historian)
    viewer = client.post(ACK_URL.format("A-2"), headers=basic("tv"))
    assert viewer.status_code == 403 and viewer.mimetype == "application/problem+json"
    assert viewer.get_json()["detail"] == "tv has the role viewer; this needs lead or above (dashboard.users[].role)"
    nobody = client.post(ACK_URL.format("A-2"))
    assert nobody.status_code == 401 and nobody.headers["WWW-Authenticate"] == 'Basic realm="shopfloor"'
    assert acks(historian) == before
    assert call(historian, "A-2").acked_ns is None
    assert "andon_ack" not in " ".join(audit_lines(caplog))


def test_a_session_needs_the_csrf_header(client, historian):
    client.get("/login")
    with client.session_transaction() as s:
        token = s["csrf"]
    login = client.post("/login", data={"user": "lead", "password": PASSWORDS["lead"], "csrf_token": token,
                                        "next": "/"})
    assert login.status_code == 302
    page = client.get("/lines/line-1")  # the line board gives the lead the CSRF token and the ack URL
    assert page.status_code == 200
    with client.session_transaction() as s:
        token = s["csrf"]
    assert f'<meta name="csrf-token" content="{token}">' in page.get_data(as_text=True)
    assert '"ack": "/api/v1/lines/{line}/andon/{call_id}/ack"' in page.get_data(as_text=True)
    refused = client.post(ACK_URL.format("A-2"))
    assert refused.status_code == 403 and refused.get_json()["title"] == "CSRF token missing or wrong"
    assert call(historian, "A-2").acked_ns is None
    assert client.post(ACK_URL.format("A-2"), headers={"X-CSRF-Token": token}).status_code == 200
    assert call(historian, "A-2").acked_ns == NOW


@pytest.mark.parametrize("headers", [None, "tv"])
def test_the_board_offers_no_acknowledgement_to_a_viewer(client, headers):
    page = client.get("/lines/line-1", headers=basic(headers) if headers else None).get_data(as_text=True)
    assert "/andon/" not in page and 'name="csrf-token"' not in page
    assert "andon.ack" in page  # the label is there for the script; only the URL decides the button


def test_the_kiosk_board_offers_no_acknowledgement_even_to_a_lead(client):
    page = client.get("/kiosk?start=line-1", headers=basic("lead")).get_data(as_text=True)
    assert "/andon/" not in page


def test_an_unknown_call_or_line_is_404_and_nothing_is_written(client, historian):
    before = acks(historian)
    for url in (ACK_URL.format("A-404"), "/api/v1/lines/line-9/andon/A-2/ack"):
        resp = client.post(url, headers=basic("lead"))
        assert resp.status_code == 404 and resp.mimetype == "application/problem+json", url
    assert client.post(ACK_URL.format("A-404"), headers=basic("lead")).get_json()["title"] == "No such andon call"
    # A-2 is a call of line 1, not of line 2
    assert client.post("/api/v1/lines/line-2/andon/A-2/ack", headers=basic("lead")).status_code == 404
    assert acks(historian) == before


def test_a_call_already_acknowledged_or_resolved_is_409(client, historian):
    assert client.post(ACK_URL.format("A-2"), headers=basic("lead")).status_code == 200
    again = client.post(ACK_URL.format("A-2"), headers=basic("boss"))
    assert again.status_code == 409 and again.mimetype == "application/problem+json"
    assert "already acknowledged" in again.get_json()["detail"]
    station_acked = client.post(ACK_URL.format("A-1"), headers=basic("lead"))  # by its station at 09:52
    assert station_acked.status_code == 409 and "already acknowledged" in station_acked.get_json()["detail"]
    resolved = client.post(ACK_URL.format("A-0"), headers=basic("lead"))
    assert resolved.status_code == 409 and "already resolved" in resolved.get_json()["detail"]
    # the first acknowledgement stands: one ack of A-2, by the lead, at now; A-1's is still its station's
    assert [(p.fields["badge"], p.time_ns) for p in acks(historian) if p.fields["call_id"] == "A-2"] == [
        ("dashboard:lead", NOW)]
    assert call(historian, "A-1").acked_ns == t("09:52")


def test_a_call_dated_after_the_dashboard_clock_is_not_listed_nor_acknowledged(client, historian):
    # a station's clock 5 minutes ahead: the board does not list the call yet, so it cannot be acknowledged (an
    # acknowledgement before its call would be a negative time to acknowledge)
    assert "A-9" not in [c["call_id"] for c in client.get("/api/v1/lines/line-1").get_json()["people"]["andon"]]
    assert client.post(ACK_URL.format("A-9"), headers=basic("lead")).status_code == 404
    assert call(historian, "A-9").acked_ns is None
