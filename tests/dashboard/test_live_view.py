"""The dashboard's live view: what a live topic changes on a board, and what it refuses."""

import json

import pytest

from dashboard.live import LiveView

P = "shopfloor/v1/cixi-1/"


@pytest.fixture
def live(factory_cfg):
    view = LiveView(factory_cfg)
    view.connected = True  # as after a connect; these tests feed messages straight to accept()
    return view


def msg(body):
    return json.dumps(body).encode()


def test_signals_land_per_line_unit_and_signal(live):
    assert live.accept(P + "line-1/press-1/state", msg({"v": "FAULT", "ts": 5, "raw": "3"})) == ("line-1", "state")
    assert live.accept(P + "line-1/press-1/pv/mold_temp", msg({"v": 61.5, "ts": 6, "q": "Good"})) == \
        ("line-1", "pv/mold_temp")
    assert live.accept(P + "line-2/_line/material/alu-bar", msg({"v": 80.5, "ts": 7})) == \
        ("line-2", "material/alu-bar")
    assert live.line_values("line-1") == {("press-1", "state"): {"v": "FAULT", "ts": 5, "raw": "3"},
                                          ("press-1", "pv/mold_temp"): {"v": 61.5, "ts": 6, "q": "Good"}}


@pytest.mark.parametrize("payload", [b"not json", b"[1, 2]", b"", b"\xff\xfe", b'"text"'])
def test_malformed_payloads_are_counted_and_keep_the_last_good_value(live, payload):
    live.accept(P + "line-1/press-1/state", msg({"v": "RUNNING", "ts": 1}))
    assert live.accept(P + "line-1/press-1/state", payload) is None
    assert live.malformed == 1
    assert live.line_values("line-1")[("press-1", "state")]["v"] == "RUNNING"


def test_other_sites_probes_and_short_topics_change_nothing(live):
    for topic in ("shopfloor/v1/other-site/line-1/press-1/state", P + "_agents/edge-1/probe/line-bus", P + "line-1"):
        assert live.accept(topic, msg({"v": 1})) is None
    assert live.line_values("line-1") == {}


def test_machines_go_offline_with_their_agent_and_the_broker(live):
    assert live.offline_reason("line-1", "press-1") is None  # no agent heard of yet: trust the values
    live.accept(P + "_agents/edge-7/status", msg({"v": "online", "machines": ["line-1/press-1"]}))
    live.accept(P + "_agents/edge-7/status", msg({"v": "offline", "machines": ["line-1/press-1"]}))
    assert live.offline_reason("line-1", "press-1") == "agent edge-7 offline"
    # press-2 is read by no announced agent: the config's own agent id decides, and edge-1 was never seen
    assert live.offline_reason("line-1", "press-2") is None
    live.accept(P + "_agents/edge-1/status", msg({"v": "offline"}))  # an old agent's will, without a machine list
    assert live.offline_reason("line-1", "press-2") == "agent edge-1 offline"
    live.accept(P + "_agents/edge-7/status", msg({"v": "online"}))  # a birth without a list keeps the known one
    assert live.offline_reason("line-1", "press-1") is None
    live.connected = False
    assert live.offline_reason("line-1", "press-1") == "dashboard lost the live broker"
