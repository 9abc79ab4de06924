"""The line simulator's payloads (pure): ISO timestamps strictly increasing per topic, and one malformed message
of every kind, each of which the agent must dead-letter."""

from __future__ import annotations

import json

import pytest

from simulators.line.payloads import MALFORMED_KINDS, MalformedMaker, TopicStamps, iso_us

T0 = 1_795_392_000_000_000  # 2026-11-23T00:00:00Z in microseconds


@pytest.mark.parametrize(("epoch_us", "text"), [
    (T0, "2026-11-23T00:00:00.000000Z"),
    (T0 + 1, "2026-11-23T00:00:00.000001Z"),
    (T0 + 86_399_999_999, "2026-11-23T23:59:59.999999Z"),
])
def test_iso_timestamps_keep_every_microsecond(epoch_us, text):
    assert iso_us(epoch_us) == text


def test_stamps_strictly_increase_per_topic_and_topics_do_not_share_a_clock():
    stamps = TopicStamps()
    got = [stamps.stamp("a", T0), stamps.stamp("a", T0), stamps.stamp("a", T0 - 5), stamps.stamp("b", T0)]
    assert got == [iso_us(T0), iso_us(T0 + 1), iso_us(T0 + 2), iso_us(T0)]


def test_every_malformed_kind_comes_in_turn_and_is_really_malformed(factory_cfg):
    maker, stamps = MalformedMaker(factory_cfg), TopicStamps()
    made = [maker.next(stamps, T0) for _ in range(2 * len(MALFORMED_KINDS))]
    assert [kind for kind, _, _ in made] == list(MALFORMED_KINDS) * 2
    for kind, topic, payload in made:
        assert topic.startswith("line/")
        if kind == "not_json":
            with pytest.raises(ValueError):
                json.loads(payload)
        elif kind == "huge":
            assert len(payload) > 1_000_000
        else:
            assert "ts" in json.loads(payload)
