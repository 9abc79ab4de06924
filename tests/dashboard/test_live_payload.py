"""What the live view takes from a live topic's payload, and what it refuses (dashboard/live.py parse_payload)."""

import json

import pytest

from dashboard.live import MAX_DEPTH, MAX_PAYLOAD_BYTES, LiveView, MalformedPayload, parse_payload

P = "shopfloor/v1/cixi-1/"


@pytest.mark.parametrize(("payload", "body"), [
    (b'{"v": "RUNNING", "ts": 1714550400123, "raw": "1"}', {"v": "RUNNING", "ts": 1714550400123, "raw": "1"}),
    ('{"v": 101, "text": "模温过高"}'.encode(), {"v": 101, "text": "模温过高"}),
    (b'{"v": "\\u6a21", "emoji": "\\ud83d\\ude00"}', {"v": "模", "emoji": "\U0001f600"}),  # a surrogate *pair*
    (b'{"v": "online", "machines": ["line-1/press-1"]}', {"v": "online", "machines": ["line-1/press-1"]}),
    (b'{"v": null, "q": "Bad"}', {"v": None, "q": "Bad"}),
    (json.dumps({"v": 1, "pad": "x" * (MAX_PAYLOAD_BYTES - 20)}).encode(),
     {"v": 1, "pad": "x" * (MAX_PAYLOAD_BYTES - 20)}),
], ids=["state", "chinese", "escapes", "agent status", "bad pv", "just under the size limit"])
def test_live_payloads_are_taken(payload, body):
    assert parse_payload(payload) == body


def nested(depth: int) -> bytes:
    return b'{"v": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


@pytest.mark.parametrize(("payload", "kind"), [
    (b"", "not JSON"),
    (b"not json", "not JSON"),
    (b"probe", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'"text"', "not a JSON object"),
    (b"\xff\xfe", "not UTF-8"),
    (b'{"v": "\xed\xa0\x80"}', "not UTF-8"),  # a surrogate encoded as UTF-8 bytes
    (bytes(range(256)), "not UTF-8"),
    ('{"v": 1}'.encode("utf-16"), "not UTF-8"),
    (b'{"v": "\\ud800"}', "lone surrogate"),
    (b'{"v": "ok", "raw": ["\\udfff"]}', "lone surrogate"),
    (b'{"\\ud800": 1}', "lone surrogate"),
    (b'{"v": NaN}', "not JSON"),
    (b'{"v": -Infinity}', "not JSON"),
    (b'{"v": 1e400}', "not a finite number"),
    (b'{"v": ' + b"9" * 5000 + b"}", "not JSON"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"v": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
    (b'{"v": ' + b"[" * 100_000, "nested too deeply"),  # never closed
    (nested(MAX_DEPTH + 1), "nested too deeply"),
    (b'{"v": "' + b"x" * MAX_PAYLOAD_BYTES + b'"}', "too large"),
])
def test_anything_else_is_refused_with_its_kind(payload, kind):
    with pytest.raises(MalformedPayload) as refused:
        parse_payload(payload)
    assert refused.value.kind == kind


def test_nesting_up_to_the_limit_is_taken():
    assert parse_payload(nested(MAX_DEPTH))["v"] is not None


@pytest.mark.parametrize("topic", ["_agents/edge-1/probe/line-bus", "_agents/edge-1/probe/plant-bus/extra",
                                   "_agents/edge-1/something-new"])
def test_agent_topics_other_than_status_are_ignored_before_parsing(factory_cfg, topic):
    live = LiveView(factory_cfg)
    assert live.accept(P + topic, b"probe") is None
    assert live.accept(P + topic, b"[" * 100_000) is None
    assert live.malformed == 0


def test_a_failing_on_change_is_counted_and_the_next_message_taken(factory_cfg):
    seen = []

    def on_change(line, signal):
        if signal == "state":
            raise KeyError("a board bug")
        seen.append(signal)

    class Msg:
        def __init__(self, topic: str, payload: bytes) -> None:
            self.topic, self.payload = topic, payload

    live = LiveView(factory_cfg, on_change)
    live._on_message(None, None, Msg(P + "line-1/press-1/state", b'{"v": "RUNNING"}'))  # type: ignore[arg-type]
    live._on_message(None, None, Msg(P + "line-1/press-1/alarm", b'{"v": 0}'))  # type: ignore[arg-type]
    assert (live.failed, live.malformed, seen) == (1, 0, ["alarm"])
    assert live.line_values("line-1")[("press-1", "state")] == {"v": "RUNNING"}
