"""What the line simulator publishes: ISO timestamps strictly increasing per topic, and malformed messages for
the agent's dead-letter path (not JSON, wrong types, unknown topics, 1 MB payloads, missing fields)."""

from __future__ import annotations

import itertools
import json
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from agent.config import FactoryConfig
from simulators.clock import US

SIGNALS = ("operator_event", "andon_event", "material_level", "material_event", "order_event")
MALFORMED_KINDS = ("not_json", "wrong_type", "unknown_topic", "huge", "missing_field")
HUGE_BYTES = 1_000_000


@lru_cache(maxsize=4096)
def _second_text(epoch_s: int) -> str:
    return (datetime(1970, 1, 1) + timedelta(seconds=epoch_s)).strftime("%Y-%m-%dT%H:%M:%S")


def iso_us(epoch_us: int) -> str:
    """`2026-11-22T03:59:01.123456Z` for microseconds since the epoch (the whole-second part is cached)."""
    seconds, micros = divmod(epoch_us, US)
    return f"{_second_text(seconds)}.{micros:06d}Z"


class TopicStamps:
    """Hands out timestamps that strictly increase per topic, bumping by 1 us when the clock has not moved."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def stamp(self, topic: str, epoch_us: int) -> str:
        last = self._last.get(topic)
        if last is not None and epoch_us <= last:
            epoch_us = last + 1
        self._last[topic] = epoch_us
        return iso_us(epoch_us)


class MalformedMaker:
    """Bad messages for the agent's dead-letter path, cycling through the kinds and, within a kind, variants."""

    def __init__(self, cfg: FactoryConfig) -> None:
        line = cfg.lines[0]
        self.line = line.id
        self.station = line.stations[0].id if line.stations else "station-1"
        used = [m for p in cfg.products if line.id in p.ideal_cycle_s for m in p.bom]
        self.material = used[0] if used else (cfg.materials[0].id if cfg.materials else "material-1")
        known = {ln.id for ln in cfg.lines}
        self.unknown_line = next(f"line-{n}" for n in itertools.count(9) if f"line-{n}" not in known)
        self._kinds = itertools.cycle(MALFORMED_KINDS)
        self._variant = dict.fromkeys(MALFORMED_KINDS, 0)

    def next(self, stamps: TopicStamps, now_us: int) -> tuple[str, str, bytes]:
        """(kind, topic, payload) of the next malformed message."""
        kind = next(self._kinds)
        variant = self._variant[kind]
        self._variant[kind] += 1
        topic, payload = getattr(self, "_" + kind)(variant, stamps, now_us)
        return kind, topic, payload

    def _json(self, topic: str, body: dict[str, Any], stamps: TopicStamps, now_us: int) -> tuple[str, bytes]:
        # A bad message still takes a fresh timestamp, so that if it were wrongly accepted it could not overwrite
        # a valid point of the same series.
        body["ts"] = stamps.stamp(topic, now_us)
        return topic, json.dumps(body, separators=(",", ":")).encode()

    def _not_json(self, variant: int, stamps: TopicStamps, now_us: int) -> tuple[str, bytes]:
        topic = f"line/{self.line}/{self.station}/badge"
        payloads = (b'{"badge": "B1001", "action": "in", "ts": ', b"\xff\xfe\x00garbage", b"level=12.5;ok")
        return topic, payloads[variant % len(payloads)]

    def _wrong_type(self, variant: int, stamps: TopicStamps, now_us: int) -> tuple[str, bytes]:
        choice = variant % 3
        if choice == 0:
            return self._json(f"line/{self.line}/material/{self.material}/level", {"level": "abc"}, stamps, now_us)
        if choice == 1:
            body = {"order_id": "SO-BAD-1", "sku": "KT-100", "target_qty": "lots", "event": "start"}
            return self._json(f"line/{self.line}/order", body, stamps, now_us)
        body2: dict[str, Any] = {"material": self.material, "lot": "L-BAD-1", "qty": [1]}
        return self._json(f"line/{self.line}/{self.station}/lot", body2, stamps, now_us)

    def _unknown_topic(self, variant: int, stamps: TopicStamps, now_us: int) -> tuple[str, bytes]:
        if variant % 2 == 0:
            return self._json(f"line/{self.line}/{self.station}/teleport", {"to": "mars"}, stamps, now_us)
        body = {"order_id": "SO-BAD-2", "sku": "KT-100", "target_qty": 10, "event": "start"}
        return self._json(f"line/{self.unknown_line}/order", body, stamps, now_us)

    def _huge(self, variant: int, stamps: TopicStamps, now_us: int) -> tuple[str, bytes]:
        body = {"level": 1.0, "padding": "x" * HUGE_BYTES}
        return self._json(f"line/{self.line}/material/{self.material}/level", body, stamps, now_us)

    def _missing_field(self, variant: int, stamps: TopicStamps, now_us: int) -> tuple[str, bytes]:
        choice = variant % 3
        if choice == 0:
            body: dict[str, Any] = {"order_id": "SO-BAD-3", "target_qty": 10, "event": "start"}
            return self._json(f"line/{self.line}/order", body, stamps, now_us)
        if choice == 1:
            return self._json(f"line/{self.line}/material/{self.material}/level", {}, stamps, now_us)
        body = {"event": "call", "kind": "quality", "badge": "B1001"}
        return self._json(f"line/{self.line}/{self.station}/andon", body, stamps, now_us)
