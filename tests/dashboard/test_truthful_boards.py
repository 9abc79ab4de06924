"""Boards that tell the truth, on the known shop floor of tests/dashboard/conftest.py: figures up to how far each
machine's data reaches, units the board cannot attribute shown with their count, plans at a planned rate, the
hour in progress planned pro rata, live micro-stops, and one computation for a machine's tile and its page."""

from agent.config import KpiSettings, PlannedRate
from agent.core.schema import Point
from tests.dashboard.conftest import NOW, SITE, count, pv, state, t
from tests.dashboard.test_api import feed

S = 10**9


def historian(app):
    return app.extensions["shopfloor"]["historian"]


def line_board(client, line="line-1"):
    return client.get(f"/api/v1/lines/{line}").get_json()


def test_figures_stop_where_a_machines_data_stops_and_the_board_says_how_far_it_reaches(app, client):
    # press-2 ran from 08:00; its data reaches 09:00 only (a PLC clock behind, a slow link): the board must not
    # assume it ran on until 10:00
    historian(app).write([state("line-1", "press-2", "08:00", "RUNNING"),
                          count("line-1", "press-2", "08:30", "total", 540),
                          count("line-1", "press-2", "08:30", "good", 540),
                          pv("line-1", "press-2", t("09:00"))])
    # the fixture's point of press-2 at 10:00 is gone: rewrite it far in the past of the shift
    historian(app).write([pv("line-1", "press-2", NOW - 10**6, 60.0)])
    board = line_board(client)
    press = board["machines"]["press-2"]
    assert press["reach_ms"] == NOW // 10**6 - 1  # the fixture's 09:59:59.999 point
    # a machine whose newest point is an hour old: only 08:00-09:00 counts
    historian(app).write([Point("process_value", {**SITE, "line": "line-2", "machine": "cnc-1", "name": "load"},
                                {"value": 1.0, "quality": "Good"}, t("09:00")),
                          Point("machine_state", {**SITE, "line": "line-2", "machine": "cnc-1"},
                                {"state": "RUNNING", "raw": "20"}, t("08:00"))])
    cnc = line_board(client, "line-2")["machines"]["cnc-1"]
    assert cnc["reach_ms"] == t("09:00") // 10**6 and cnc["data_lags"] is True
    assert cnc["oee"]["up_to_ms"] == t("09:00") // 10**6
    assert (cnc["oee"]["pbt_s"], cnc["oee"]["apt_s"], cnc["oee"]["availability"]) == (3600.0, 3600.0, 1.0)
    # with no point at all the machine's figures are not invented either: nothing reaches anywhere
    cnc2 = line_board(client, "line-2")["machines"]["cnc-2"]
    assert cnc2["reach_ms"] is None and cnc2["data_lags"] is True


def test_units_made_with_no_order_are_counted_and_shown(app, client):
    # line 2 has no order: 120 units made on cnc-1 between 08:00 and 10:00
    historian(app).write([state("line-2", "cnc-1", "08:00", "RUNNING"),
                          count("line-2", "cnc-1", "08:30", "total", 120),
                          count("line-2", "cnc-1", "08:30", "good", 118),
                          pv("line-2", "cnc-1", NOW - 10**6)])
    cnc = line_board(client, "line-2")["machines"]["cnc-1"]
    assert cnc["unattributed"] == {"no_order": 120, "other_sku": 0}
    assert cnc["oee"]["unattributed"] == 120 and cnc["oee"]["effectiveness"] == 0.0  # no SKU, no ideal time
    # between orders the tile shows what the shift made, not an empty order count
    assert cnc["count"] == {"good": 118, "total": 120, "reject": 2, "target": None, "scope": "shift"}


def test_plan_uses_the_planned_rate_per_line_and_sku_and_the_hour_in_progress_pro_rata(app, client, clock):
    ext = app.extensions["shopfloor"]
    ext["cfg"] = cfg = ext["cfg"].model_copy(update={"kpi": KpiSettings(
        plans=[PlannedRate(line="line-1", sku="KT-100", units_per_hour=450)])})
    ext["hub"].cfg = cfg
    clock[0] = t("09:30")
    historian(app).write([pv("line-1", m, t("09:30") - 10**6) for m in ("press-1", "press-2", "packer-1")])
    board = line_board(client)
    # KT-100 ran all of 08:00-09:30 at 450 an hour: 675 planned by now, not 900 for the whole of 09:00-10:00
    assert board["output"]["plan"] == 675
    detail = client.get("/api/v1/lines/line-1/machines/press-1").get_json()
    assert [h["plan"] for h in detail["hourly"]] == [450, 225]


def test_a_live_stop_shorter_than_the_threshold_shows_as_a_microstop(app, client):
    feed(app, "line-1/press-1/state", {"v": "STOPPED", "ts": NOW // 10**6 - 30_000})
    feed(app, "line-1/press-2/state", {"v": "STOPPED", "ts": NOW // 10**6 - 121_000})
    tiles = line_board(client)["machines"]
    assert tiles["press-1"]["state"] == "MICROSTOP"  # stopped for 30 s: under the 120 s threshold
    assert tiles["press-2"]["state"] == "STOPPED" and tiles["press-2"]["stop"]["state"] == "STOPPED"  # needs a reason


def test_a_machine_page_shows_the_figures_of_its_tile(app, client):
    hub = app.extensions["shopfloor"]["hub"]
    hub.kpi_refresh_s = 3600  # the tile keeps the figures it computed first
    tile = line_board(client)["machines"]["press-1"]["oee"]
    # more data arrives before the page is opened: the page still shows what the tile shows
    historian(app).write([count("line-1", "press-1", "09:40", "total", 60),
                          count("line-1", "press-1", "09:40", "good", 60)])
    page = client.get("/api/v1/lines/line-1/machines/press-1").get_json()["kpi"]
    assert page == tile and page["oee"] is not None


def test_the_sku_the_plc_reports_decides_effectiveness_and_other_skus_are_shown(app, client):
    # line 2 runs an order of FN-300 (8 s) from 08:00, but cnc-1's program reports FN-310 (9.5 s) from 09:00
    line2 = {**SITE, "line": "line-2"}
    historian(app).write([
        Point("order_event", {**line2, "event": "start"}, {"order_id": "SO-9", "sku": "FN-300", "target_qty": 900},
              t("08:00")),
        Point("machine_product", {**line2, "machine": "cnc-1"}, {"sku": "FN-300", "raw": "300"}, t("07:00")),
        Point("machine_product", {**line2, "machine": "cnc-1"}, {"sku": "FN-310", "raw": "310"}, t("09:00")),
        state("line-2", "cnc-1", "08:00", "RUNNING"),
        count("line-2", "cnc-1", "08:30", "total", 400), count("line-2", "cnc-1", "09:30", "total", 300),
        pv("line-2", "cnc-1", NOW - 10**6)])
    cnc = line_board(client, "line-2")["machines"]["cnc-1"]
    assert cnc["unattributed"] == {"no_order": 0, "other_sku": 300}
    # E = (400 x 8 + 300 x 9.5) / 7200: each unit at the SKU it was made as
    assert cnc["oee"]["effectiveness"] == round((400 * 8 + 300 * 9.5) / 7200, 4)
    # cnc-2 has the same product tag but reported nothing: the order decides
    historian(app).write([state("line-2", "cnc-2", "08:00", "RUNNING"), count("line-2", "cnc-2", "08:30", "total", 450),
                          pv("line-2", "cnc-2", NOW - 10**6)])
    hub = app.extensions["shopfloor"]["hub"]
    hub._scopes["line/line-2"].watched = 0  # read the board afresh
    hub.kpi_refresh_s = 0
    cnc2 = line_board(client, "line-2")["machines"]["cnc-2"]
    assert cnc2["oee"]["effectiveness"] == round(450 * 8 / 7200, 4) and cnc2["unattributed"]["other_sku"] == 0


def test_a_machine_whose_values_do_not_change_still_reaches_now_by_its_sources_heartbeat(app, client):
    # cnc-1 has been in FAULT since 09:00 with no point since; the agent's heartbeat for plc-1 says it is alive
    historian(app).write([state("line-2", "cnc-1", "08:00", "RUNNING"), state("line-2", "cnc-1", "09:00", "FAULT"),
                          Point("source_heartbeat", {**SITE, "source": "plc-1"}, {"connected": True}, NOW - 2 * S)])
    cnc = line_board(client, "line-2")["machines"]["cnc-1"]
    assert cnc["reach_ms"] == (NOW - 2 * S) // 10**6 and cnc["data_lags"] is False
    # the fault counts until the heartbeat: A = 3600 / 7198, not 1.0 as if the data ended at 09:00
    assert cnc["oee"]["availability"] == round(3600 / 7198, 4)


def test_a_point_from_a_clock_in_the_future_does_not_stretch_the_figures(app, client):
    historian(app).write([state("line-2", "cnc-2", "08:00", "RUNNING"), pv("line-2", "cnc-2", t("09:00")),
                          Point("process_value", {**SITE, "line": "line-2", "machine": "cnc-2", "name": "load"},
                                {"value": 1.0, "quality": "Good"}, NOW + 3600 * S)])  # a clock an hour ahead
    cnc2 = line_board(client, "line-2")["machines"]["cnc-2"]
    assert cnc2["reach_ms"] == t("09:00") // 10**6


def test_a_young_open_stop_is_a_micro_stop_so_far_and_takes_no_reason(app, client):
    import base64

    from tests.dashboard.conftest import PASSWORD
    historian(app).write([Point("machine_state", {**SITE, "line": "line-1", "machine": "press-2"},
                                {"state": "STOPPED", "raw": "0"}, NOW - 30 * S)])
    stops = client.get("/api/v1/lines/line-1/stops?machine=press-2").get_json()["stops"]
    assert not any(s["state"] == "STOPPED" for s in stops)
    basic = {"Authorization": "Basic " + base64.b64encode(f"lead:{PASSWORD}".encode()).decode()}
    resp = client.post(f"/api/v1/lines/line-1/machines/press-2/stops/{NOW - 30 * S}/reason",
                       json={"reason": "tooling"}, headers=basic)
    assert resp.status_code == 409 and resp.mimetype == "application/problem+json"
    assert historian(app).events("machine_state", NOW - 60 * S, NOW + 1, machine="press-2")[0].fields.get(
        "reason") in (None, "")
