"""The C2M pull feed (/v1/) on the known shop floor of tests/dashboard/conftest.py (Monday 10:00, Asia/Shanghai,
no finished shift in the history: a cold start). Figures are worked out by hand; every answer is validated
against docs/openapi.yaml."""

import hashlib
import json

import pytest
from openapi_core import Config, OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from agent.config import CapacitySettings, FeedToken
from agent.core.schema import Point
from tests.conftest import ROOT
from tests.dashboard.conftest import SITE, t

TOKEN = "feed-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SPEC = OpenAPI.from_file_path(str(ROOT / "docs" / "openapi.yaml"), config=Config(
    extra_media_type_deserializers={"application/problem+json": json.loads}))


def check(resp):
    """Validate a test client's response against docs/openapi.yaml (the request is rebuilt without its body,
    which the app has read)."""
    sent = resp.request
    request = Request(EnvironBuilder(method=sent.method, path=sent.path, query_string=sent.query_string.decode(),
                                     headers=dict(sent.headers)).get_environ())
    SPEC.validate_response(WerkzeugOpenAPIRequest(request), WerkzeugOpenAPIResponse(resp))


@pytest.fixture
def feed_app(app):
    ext = app.extensions["shopfloor"]
    ext["cfg"] = cfg = ext["cfg"].model_copy(update={"capacity": CapacitySettings(
        tokens=[FeedToken(name="platform", sha256=hashlib.sha256(TOKEN.encode()).hexdigest())],
        finished_goods={"KT-100": 1200})})
    ext["capacity"].cfg = cfg
    ext["capacity"].history.cfg = cfg
    return app


@pytest.fixture
def get(feed_app):
    client = feed_app.test_client()

    def get(path, headers=AUTH, status=200):
        resp = client.get(path, headers=headers)
        check(resp)
        assert resp.status_code == status, resp.get_data(as_text=True)
        if status >= 400:
            assert resp.mimetype == "application/problem+json"
        return resp
    return get


def line(doc, line_id):
    return next(x for x in doc["lines"] if x["line"] == line_id)


def test_capacity_of_a_cold_start_worked_out_by_hand(get):
    doc = get("/v1/capacity").get_json()
    assert doc["granularity"] == "shift" and doc["as_of"] == "2026-11-23T02:00:00Z"
    one = line(doc, "line-1")
    assert one["oee"] == {"value": 0.6, "basis": "configured", "shifts": 0}  # no finished shift yet
    day, night, tuesday = one["buckets"][:3]
    # Monday day shift from 10:00: 10 h to 20:00 minus the 12:00 and 16:00 breaks (1 h) = 9 h
    assert (day["key"], day["pbt_s"], day["total_s"]) == ("2026-11-23/day", 32400.0, 19440.0)
    # 2 of the 5 planned operators are in: 3/5 of the line is lost for the next hour; resin-pp (84 kg at 0.42 kg
    # a unit, 10 units a minute, no call open) runs out at 10:20 and stops the line to the end of that hour
    assert one["constraints"] == [
        {"reason": "operators_missing", "from": "2026-11-23T02:00:00Z", "to": "2026-11-23T03:00:00Z", "share": 0.6},
        {"reason": "material_short", "from": "2026-11-23T02:20:00Z", "to": "2026-11-23T03:00:00Z", "share": 1.0}]
    # 10:00-11:00 at 60 %: the operators take 0.6 of it (1,296 s); 10:20-11:00 the resin takes the rest (0.4 x
    # 0.6 x 2,400 = 576 s): the line is down, not more than down
    assert day["unattainable_s"] == {"operators_missing": 1296.0, "material_short": 576.0}
    # PO-1: 900 to make, 150 good so far at the packer: 750 x 6 s = 4,500 s, booked into the day shift
    assert (day["committed_s"], day["available_s"]) == (4500.0, 19440.0 - 1872.0 - 4500.0)
    assert day["available_qty"] == {"KT-100": (13068 - 1500) // 6, "KT-200": (13068 - 1500) // 5}
    # PO-1 is done at 13:42: 10:00-10:20 at 0.24 (288 s), nothing until 11:00, 11:00-12:00 at 0.6 (2,160 s),
    # the lunch, then the last 2,052 s at 0.6 from 12:45
    assert one["committed"] == [{"ref": "PO-1", "kind": "order", "sku": "KT-100", "qty": 750, "seconds": 4500.0,
                                 "completion": "2026-11-23T05:42:00Z"}]
    assert (night["pbt_s"], night["total_s"], night["committed_s"], night["available_s"]) == \
        (39600.0, 23760.0, 0.0, 23760.0)
    # per SKU: (available - setup 25 min) / ideal cycle
    assert night["available_qty"] == {"KT-100": (23760 - 1500) // 6, "KT-200": (23760 - 1500) // 5}
    assert tuesday["available_s"] == tuesday["total_s"] == 23760.0
    for b in one["buckets"]:
        assert b["total_s"] == pytest.approx(b["committed_s"] + b["available_s"] + sum(b["unattainable_s"].values()))
    # 14 days of shifts, Sundays off
    assert one["buckets"][-1]["key"] == "2026-12-07/day" and len(one["buckets"]) == 2 * 12 + 1


def test_a_machine_down_takes_the_line_until_its_expected_repair(feed_app, get):
    historian = feed_app.extensions["shopfloor"]["historian"]
    historian.write([Point("machine_state", {**SITE, "line": "line-2", "machine": "cnc-1"},
                           {"state": "FAULT", "raw": "r"}, t("09:50"))])
    two = line(get("/v1/capacity?line=line-2").get_json(), "line-2")
    # no repair in its history: 30 minutes from the fault's start, so down until 10:20
    assert {"reason": "machine_down", "from": "2026-11-23T02:00:00Z", "to": "2026-11-23T02:20:00Z",
            "share": 1.0} in two["constraints"]


def test_filters_by_line_sku_span_and_granularity(get):
    doc = get("/v1/capacity?line=line-2&sku=FN-310&from=2026-11-24&to=2026-11-24&granularity=day").get_json()
    assert [x["line"] for x in doc["lines"]] == ["line-2"]
    # buckets that overlap Tuesday: Monday's (its night shift ends Tuesday 08:00) and Tuesday's
    monday, tuesday = line(doc, "line-2")["buckets"]
    assert monday["key"] == "2026-11-23" and monday["end"] == "2026-11-24T00:00:00Z"
    # Tuesday as a day: its day shift and its night shift (22 h of work), at 0.6
    assert tuesday["key"] == "2026-11-24" and tuesday["pbt_s"] == 79200.0
    assert tuesday["available_qty"] == {"FN-310": int((0.6 * 79200 - 2400) // 9.5)}


def test_an_unchanged_answer_is_304_with_its_etag(get):
    first = get("/v1/capacity")
    etag = first.headers["ETag"]
    again = get("/v1/capacity", headers={**AUTH, "If-None-Match": etag}, status=304)
    assert again.get_data() == b"" and again.headers["ETag"] == etag
    assert get("/v1/capacity", headers={**AUTH, "If-None-Match": '"other"'}).headers["ETag"] == etag
    assert get("/v1/capacity?line=line-1").headers["ETag"] != etag


def test_orders_with_progress_and_genealogy(get):
    (po,) = get("/v1/orders").get_json()["orders"]
    assert po == {"order_id": "PO-1", "line": "line-1", "sku": "KT-100", "target_qty": 900, "status": "running",
                  "start": "2026-11-22T23:30:00Z", "stop": None, "good": 150, "rejected": 0,
                  "estimated_completion": "2026-11-23T05:42:00Z",
                  "lots": [{"material": "resin-pp", "lot": "L-7", "station": "mold-1",
                            "loaded": "2026-11-23T01:00:00Z"}]}
    assert get("/v1/orders?line=line-2").get_json()["orders"] == []


def test_inventory_and_prices(get):
    items = {i["sku"]: i for i in get("/v1/inventory").get_json()["items"]}
    assert items["KT-100"] == {"sku": "KT-100", "qty": 1200, "unit": "pcs", "source": "config"}
    assert items["FN-300"]["qty"] is None  # no stock on record, not "0"
    prices = {i["sku"]: (i["price"], i["currency"]) for i in get("/v1/prices").get_json()["items"]}
    assert prices["KT-100"] == (38.5, "CNY")


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}])
def test_a_request_without_a_known_token_is_refused(get, headers):
    resp = get("/v1/capacity", headers=headers, status=401)
    assert resp.headers["WWW-Authenticate"].startswith("Bearer") and "lines" not in resp.get_json()


@pytest.mark.parametrize("query, status, param", [
    ("granularity=week", 400, "granularity"), ("line=line-9", 404, "line"), ("sku=XX", 404, "sku"),
    ("from=yesterday", 400, "from"), ("from=2026-11-25&to=2026-11-24", 400, "to"), ("colour=red", 400, "colour"),
    ("line=line-1&line=line-2", 400, "line"),
])
def test_bad_capacity_filters_get_a_problem_naming_the_parameter(get, query, status, param):
    body = get(f"/v1/capacity?{query}", status=status).get_json()
    assert body["status"] == status and param in [p["name"] for p in body["invalid_params"]]


def test_bad_orders_span_and_unknown_paths_get_problems(feed_app, get):
    assert get("/v1/orders?from=2026-01-01&to=2026-11-24", status=400).get_json()["invalid_params"]
    client = feed_app.test_client()
    for resp in (client.get("/v1/nothing", headers=AUTH), client.post("/v1/capacity", headers=AUTH)):
        assert resp.status_code in (404, 405) and resp.mimetype == "application/problem+json"


def test_the_oee_is_the_median_of_the_finished_shifts_with_data(feed_app, get):
    # line 1's packer (its last machine) made KT-100 in the day shifts of Thursday to Saturday: good units worth
    # 50 %, 80 % and 70 % of the shifts' planned busy time (12 h less the 1 h of breaks) at the ideal cycle, with
    # 100 rejects a shift; the nights were planned stops
    from datetime import date

    from tests.kpi.test_oee_golden import at
    historian = feed_app.extensions["shopfloor"]["historian"]
    tags = {**SITE, "line": "line-1", "machine": "packer-1"}
    points = [Point("order_event", {**SITE, "line": "line-1", "event": "start"},
                    {"order_id": "PO-0", "sku": "KT-100", "target_qty": 99999}, at(date(2026, 11, 19), "07:00"))]
    for day, share in ((19, 0.5), (20, 0.8), (21, 0.7)):
        good = int(share * 39600 / 6)
        points += [
            Point("machine_state", tags, {"state": "RUNNING", "raw": "r"}, at(date(2026, 11, day), "08:00")),
            Point("machine_state", tags, {"state": "PLANNED_STOP", "raw": "r"}, at(date(2026, 11, day), "20:00")),
            Point("machine_count", {**tags, "counter": "good"}, {"delta": good, "value": good},
                  at(date(2026, 11, day), "10:00")),
            Point("machine_count", {**tags, "counter": "total"}, {"delta": good + 100, "value": good + 100},
                  at(date(2026, 11, day), "10:00")),
        ]
    historian.write(points)
    one = line(get("/v1/capacity?line=line-1").get_json(), "line-1")
    assert (one["oee"]["basis"], one["oee"]["shifts"]) == ("trailing_median", 3)
    assert one["oee"]["value"] == 0.7  # Saturday's, the middle of 0.5, 0.7 and 0.8
    made = sum(int(s * 39600 / 6) for s in (0.5, 0.8, 0.7))
    assert one["first_pass_yield"]["KT-100"] == round(made / (made + 300), 4)
    night = one["buckets"][1]
    assert night["total_s"] == pytest.approx(0.7 * 39600)


def test_a_line_whose_data_does_not_reach_now_says_so(get):
    doc = get("/v1/capacity").get_json()
    # line 1's machines all sent data 1 ms before 10:00; line 2's have none at all
    assert (line(doc, "line-1")["data_up_to"], line(doc, "line-1")["data_lags"]) == ("2026-11-23T01:59:59Z", False)
    assert (line(doc, "line-2")["data_up_to"], line(doc, "line-2")["data_lags"]) == (None, True)
