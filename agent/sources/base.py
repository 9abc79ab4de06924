"""What every source is to the agent, and what the agent is to a source.

A source owns one connection (an OPC UA server, a broker, a Modbus device, an S7 PLC). It reads, converts the
protocol's own status (OPC UA status codes, Modbus exception responses, S7 error codes, timeouts) into a
`Quality`, and hands typed `Reading`s (or raw broker messages) to a narrow `Ingest`. It never sees the
pipeline, the mapper or the outbox. It reconnects by itself (backoff capped at `BACKOFF_CAP_S`), keeps its
`SourceHealth` up to date, and never raises out of `run` for anything the network or the device does.

Adding a protocol: docs/adding-a-source.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from agent.health import AgentState, SourceHealth

BACKOFF_CAP_S = 10.0


class Quality(IntEnum):
    """How far a reading can be trusted; the board and the historian know nothing finer."""

    GOOD = 0
    UNCERTAIN = 1
    BAD = 2

    @property
    def text(self) -> str:
        return ("Good", "Uncertain", "Bad")[self]


class Reading(NamedTuple):
    """One value of one tag, as the source read it."""

    tag: int  # TagRef.index of the tag
    value: Any  # None when the quality is BAD and there is no value
    quality: Quality
    status: int  # the protocol's own code (OPC UA status code, Modbus exception code, S7 error code); 0 = fine
    status_text: str  # e.g. "Good", "BadCommunicationError", "Modbus exception 2 (illegal data address)"
    source_ns: int  # when the value was true (the device's time where it gives one, else when it was read)
    server_ns: int | None = None  # the server's own timestamp, where the protocol has one


@dataclass(frozen=True)
class TagRef:
    """A tag a source reads: where it is on the device, and the few facts the reading needs."""

    index: int  # the number a Reading carries back
    address: str  # in the protocol's syntax (a NodeId, a Modbus register, an S7 address)
    machine: str
    signal: str  # state, state_bit, count, process_value, alarm, product
    name: str  # the tag's node in its machine type (process values: their name)
    poll_ms: int | None = None  # read every poll_ms; None: the protocol's default (OPC UA: subscribe)
    sampling_ms: float = 100.0
    queue_size: int = 10
    deadband: tuple[str, float] | None = None  # ("absolute" | "percent", value)


class Ingest(Protocol):
    """The agent, as a source sees it. Every method may be called from any thread."""

    def readings(self, source: str, readings: list[Reading]) -> None:
        """Values of tags; mapped in the order they were handed over."""

    def message(self, source: str, topic: str, payload: bytes, received_ns: int, ack: Any = None) -> None:
        """A raw broker message; `ack` goes back to the source's acknowledger after the durable commit."""

    def register_acknowledger(self, source: str, acknowledge: Callable[[list[Any]], None]) -> None:
        """Who receives the `ack` tokens of `source`, all of one commit in one call."""

    def down(self, source: str, reason: str) -> None:
        """The connection is lost: every machine read through `source` goes OFFLINE now."""

    def up(self, source: str) -> None:
        """A session works again. Call it before the session's first reading."""

    def live_values(self, values: list[tuple[str, int, bytes]]) -> None:
        """Live topic values (topic, ts in epoch ms, payload) that a receiver process mapped and stored itself;
        the agent's live publisher keeps the newest per topic."""


@dataclass
class SourceContext:
    """What the agent gives a source when it builds it."""

    ingest: Ingest
    state: AgentState
    tags: list[TagRef]  # the tags read through this source (empty for a broker)
    data_dir: Path
    site_id: str
    agent_id: str
    now_ns: Callable[[], int]  # the agent's clock; a source never reads time.time_ns() itself

    def health(self, source_id: str, kind: str) -> SourceHealth:
        return self.state.source(source_id, kind)


class Source(Protocol):
    """One connection. `run` connects, reads and reconnects until `stop` is set; it returns only then."""

    id: str
    kind: str

    async def run(self, stop: asyncio.Event) -> None: ...

    def pause(self) -> None:
        """Stop handing over new input: the agent commits what it has, then calls `close`."""

    async def close(self) -> None:
        """Disconnect; idempotent."""


class Backoff:
    """Reconnect delays with jitter: 0.5 s doubling to BACKOFF_CAP_S, afresh after a session that worked."""

    def __init__(self, first: float = 0.5, cap: float = BACKOFF_CAP_S) -> None:
        self.first = first
        self.cap = cap
        self.current = first

    def reset(self) -> None:
        self.current = self.first

    def next(self) -> float:
        delay = random.uniform(self.current / 2, self.current)
        self.current = min(self.current * 2, self.cap)
        return delay

    async def sleep(self, stop: asyncio.Event) -> None:
        """Wait the next delay, or less if `stop` is set meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=self.next())
