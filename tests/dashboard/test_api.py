"""The JSON API behind the boards, on a known shop floor (tests/dashboard/conftest.py), checked against figures
computed by hand."""

import json

import pytest

from tests.dashboard.conftest import NOW, PASSWORD, t


def feed(app, topic, body):
    live = app.extensions["shopfloor"]["live"]
    live.accept("shopfloor/v1/cixi-1/" + topic, json.dumps(body).encode())


def test_line_board_figures(app, client):
    feed(app, "line-1/press-1/state", {"v": "RUNNING", "ts": t("09:30") // 10**6, "raw": "1"})
    feed(app, "line-1/press-1/pv/mold_temp", {"v": 61.5, "ts": t("09:59") // 10**6, "q": "Good"})
    feed(app, "line-1/press-1/alarm", {"v": 101, "ts": t("09:58") // 10**6, "text": "Mold over-temperature"})
    board = client.get("/api/v1/lines/line-1").get_json()
    assert board["now_ms"] == NOW // 10**6
    assert board["shift"]["id"] == "day" and board["shift"]["on"] is True
    assert board["order"]["order_id"] == "PO-1" and board["order"]["target_qty"] == 900
    assert board["machine_ids"] == ["press-1", "press-2", "packer-1"]
    press = board["machines"]["press-1"]
    assert (press["state"], press["since_ms"], press["offline_reason"]) == ("RUNNING", t("09:30") // 10**6, None)
    assert press["alarm"] == {"code": 101, "text": "Mold over-temperature", "since_ms": t("09:58") // 10**6}
    assert press["pv"]["mold_temp"] == {"value": 61.5, "unit": "degC", "q": "Good", "ts_ms": t("09:59") // 10**6}
    assert press["count"] == {"good": 490, "total": 500, "reject": 0, "target": 900, "scope": "order"}
    assert press["reach_ms"] == NOW // 10**6 - 1 and press["data_lags"] is False  # its data reaches now
    assert press["unattributed"] == {"no_order": 0, "other_sku": 0}
    # 08:00-10:00: PBT 7200 s, RUNNING 5400 s; 500 units of KT-100 at 6 s; 490 good
    oee = press["oee"]
    assert (oee["pbt_s"], oee["apt_s"], oee["failures"], oee["mttr_s"]) == (7200, 5400, 1, 1800)
    assert oee["availability"] == 0.75
    assert oee["effectiveness"] == round(500 * 6 / 5400, 4)
    assert oee["quality"] == 0.98
    assert oee["oee"] == round(0.75 * 500 * 6 / 5400 * 0.98, 4)
    assert oee["coverage"] == 1.0
    # no live value yet for the others: OFFLINE, with why
    assert board["machines"]["press-2"]["state"] == "OFFLINE"
    assert board["machines"]["press-2"]["offline_reason"] == "no data yet"
    assert board["states"] == {"RUNNING": 1, "OFFLINE": 2}
    # the line delivers what its last machine makes; the plan: 7200 s of KT-100 at the default planned rate,
    # 85 % of the ideal 600 units per hour
    assert board["output"] == {"machine": "packer-1", "produced": 150, "good": 150, "no_order": 0, "other_sku": 0,
                               "plan": 1020, "up_to_ms": NOW // 10**6 - 1}


def test_people_panel(client):
    people = client.get("/api/v1/lines/line-1").get_json()["people"]
    stations = {s["id"]: s for s in people["stations"]}
    assert [p["badge"] for p in stations["mold-1"]["present"]] == ["B1001"]
    assert stations["mold-1"]["present"][0]["skilled"] is True
    assert stations["mold-2"]["present"] == [{"badge": "B1006", "operator": "op-006", "name": "杨磊",
                                              "skilled": False}]  # a machinist at a molding station
    assert (stations["assy-1"]["present"], stations["assy-1"]["missing"]) == ([], 2)
    assert people["headcount"] == {"planned": 5, "present": 2}
    assert people["output_per_operator"] == 75.0  # 150 good from the line's end, 2 people on the line
    assert people["operator_output"]["B1001"] == 490  # press-1's good units while B1001 was at its station
    assert people["andon"] == [{"call_id": "A-1", "station": "mold-1", "kind": "quality",
                                "called_ms": t("09:50") // 10**6, "acked_ms": t("09:52") // 10**6}]
    assert people["andon_shift"] == {"calls": 2, "mean_ack_s": 90.0, "mean_resolve_s": 600.0}


def test_materials_panel(client):
    materials = client.get("/api/v1/lines/line-1").get_json()["materials"]
    assert materials["rate_per_min"] == 10.0  # 150 units at the line's end in the last 15 minutes
    resin = next(i for i in materials["items"] if i["id"] == "resin-pp")
    # 84 kg / (0.42 kg per kettle x 10 kettles per minute)
    assert (resin["stock"], resin["per_unit"], resin["use_per_min"], resin["minutes_to_shortage"]) == \
        (84.0, 0.42, 4.2, 20.0)
    assert resin["below_reorder"] is True  # reorder point 150 kg
    assert [i["id"] for i in materials["items"]] == ["resin-pp", "heater-1k8", "carton-s"]  # the running SKU's BOM
    assert materials["lots"] == [{"station": "mold-1", "material": "resin-pp", "lot": "L-7", "qty": 25.0,
                                  "since_ms": t("09:00") // 10**6}]
    assert [c["call_id"] for c in materials["calls"]] == ["C-1"]  # C-0 was delivered


def test_overview(app, client):
    feed(app, "line-1/press-1/state", {"v": "FAULT", "ts": t("09:55") // 10**6})
    overview = client.get("/api/v1/overview").get_json()
    assert overview["line_ids"] == ["line-1", "line-2"]
    one = overview["lines"]["line-1"]
    assert one["states"] == {"FAULT": 1, "OFFLINE": 2}
    assert (one["andon_open"], one["shortages"], one["output"]["good"]) == (1, ["resin-pp"], 150)
    assert overview["lines"]["line-2"]["states"] == {"OFFLINE": 3}


def test_machine_detail(client):
    detail = client.get("/api/v1/lines/line-1/machines/press-1").get_json()
    assert [(s["state"], s["start_ms"], s["end_ms"]) for s in detail["timeline"]] == [
        ("RUNNING", t("08:00") // 10**6, t("09:00") // 10**6), ("FAULT", t("09:00") // 10**6, t("09:30") // 10**6),
        ("RUNNING", t("09:30") // 10**6, NOW // 10**6 - 1)]  # as far as its data reaches
    assert [(h["start_ms"], h["good"], h["plan"]) for h in detail["hourly"]] == [
        (t("08:00") // 10**6, 490, 510), (t("09:00") // 10**6, 0, 510)]  # 85 % of 600 an hour
    assert detail["pareto"] == [{"reason": "FAULT", "seconds": 1800.0}]  # no reason given yet: the state
    assert detail["kpi"]["mtbf_s"] == 2700.0  # APT 5400 s / (1 failure + 1)
    assert detail["units"]["mold_temp"] == "degC"


@pytest.mark.parametrize("url", ["/api/v1/lines/line-9", "/api/v1/lines/line-1/machines/cnc-1",
                                 "/api/v1/lines/line-9/stops", "/api/v1/stream?scope=line/line-9"])
def test_unknown_things_are_404_problems(client, url):
    resp = client.get(url)
    assert resp.status_code == 404
    assert resp.mimetype == "application/problem+json"
    assert resp.get_json()["detail"]


def login(client):
    page = client.get("/login")
    assert page.status_code == 200
    with client.session_transaction() as s:
        token = s["csrf"]
    resp = client.post("/login", data={"user": "lead", "password": PASSWORD, "csrf_token": token, "next": "/"})
    assert resp.status_code == 302
    client.get("/lines/line-1/stops")  # the page a user gives reasons on: it holds the new session's token
    with client.session_transaction() as s:
        assert s["csrf"] != token  # a login starts a new session
        return s["csrf"]


def reason_url(start_hhmm="09:00"):
    return f"/api/v1/lines/line-1/machines/press-1/stops/{t(start_hhmm)}/reason"


def test_giving_a_stop_reason(app, client):
    stops = client.get("/api/v1/lines/line-1/stops").get_json()
    assert [(s["machine"], s["state"], s["id"], s["reason"]) for s in stops["stops"]] == [
        ("press-1", "FAULT", str(t("09:00")), "")]
    assert "material" in [r["code"] for r in stops["reasons"]]
    token = login(client)
    resp = client.post(reason_url(), json={"reason": "tooling"}, headers={"X-CSRF-Token": token})
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["state"] == "FAULT"
    assert client.get("/api/v1/lines/line-1/stops").get_json()["stops"][0]["reason"] == "tooling"
    detail = client.get("/api/v1/lines/line-1/machines/press-1").get_json()
    assert detail["pareto"] == [{"reason": "tooling", "seconds": 1800.0}]


@pytest.mark.parametrize("how,status", [("anonymous", 401), ("no csrf", 403), ("wrong password", 401),
                                        ("unknown reason", 422), ("not a stop", 404)])
def test_stop_reason_refusals_say_why_and_change_nothing(app, client, how, status):
    headers = {}
    body = {"reason": "tooling"}
    url = reason_url()
    if how != "anonymous" and how != "wrong password":
        headers["X-CSRF-Token"] = login(client)
    if how == "no csrf":
        headers = {}
    if how == "wrong password":
        headers["Authorization"] = "Basic bGVhZDp3cm9uZw=="  # lead:wrong
    if how == "unknown reason":
        body = {"reason": "aliens"}
    if how == "not a stop":
        url = reason_url("09:30")  # press-1 starts RUNNING then
    resp = client.post(url, json=body, headers=headers)
    assert resp.status_code == status
    assert resp.mimetype == "application/problem+json" and resp.get_json()["detail"]
    assert client.get("/api/v1/lines/line-1/stops").get_json()["stops"][0]["reason"] == ""


def test_basic_auth_works_for_scripts(client):
    resp = client.post(reason_url(), json={"reason": "material"},
                       headers={"Authorization": "Basic " + __import__("base64").b64encode(
                           f"lead:{PASSWORD}".encode()).decode()})
    assert resp.status_code == 200


def test_stream_starts_with_a_snapshot_and_refuses_beyond_max_streams(client):
    opened = [client.get("/api/v1/stream?scope=line/line-1", buffered=False) for _ in range(2)]
    first = b""
    chunks = iter(opened[0].response)
    while b"event: snapshot" not in first or not first.endswith(b"\n\n"):
        first += next(chunks)
    snapshot = json.loads(first.split(b"data: ", 1)[1])
    assert snapshot["board"]["line"]["id"] == "line-1" and snapshot["seq"] >= 1
    next(iter(opened[1].response))
    refused = client.get("/api/v1/stream?scope=line/line-1")
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "30"
    for resp in opened:
        resp.close()
    assert client.get("/api/v1/health").get_json()["streams"] == 0


@pytest.mark.parametrize("query,line", [("", "line-1"), ("?start=line-2", "line-2"), ("?i=1", "line-2"),
                                        ("?i=x&rotate=abc&lines=nope", "line-1"), ("?lines=line-2,nope", "line-2")])
def test_kiosk_urls_with_typos_still_show_a_board(client, query, line):
    resp = client.get("/kiosk" + query)
    assert resp.status_code == 200
    page = resp.get_data(as_text=True)
    config = json.loads(page.split('<script id="sf-config" type="application/json">', 1)[1].split("</script>")[0])
    assert config["line"]["id"] == line and config["api"]["board"] == f"/api/v1/lines/{line}"
    assert config["kiosk"]["rotate_s"] == 30  # the config's, whatever the URL said


@pytest.mark.parametrize("url", ["/lines/line-9", "/lines/line-1/machines/cnc-1"])
def test_unknown_pages_are_404(client, url):
    assert client.get(url).status_code == 404
