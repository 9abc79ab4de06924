"""What a polled PLC simulator (Modbus TCP, S7) keeps around the plant: the source it serves, its clock, the
machines' tags, a tick that runs the plant up to the clock, and the truth file. The protocol's server shows the
values; this part is the same for every protocol."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.config import FactoryConfig, Machine, TagSpec
from simulators.clock import SimClock
from simulators.machines.model import Machine as SimMachine
from simulators.machines.model import MachineTags, save_truth

log = logging.getLogger(__name__)

US = 1_000_000
TICK_S = 0.1
TRUTH_EVERY_S = 2.0


class ServedPlant(ABC):
    """The machines of one source of `kind` (a key under `sources:`), on a pausable simulated clock."""

    protocol = ""  # the protocol's name in messages: "Modbus", "S7"

    def __init__(self, cfg: FactoryConfig, kind: str, *, source: str | None, speed: float, seed: int, paused: bool,
                 start_time: datetime | None, origin: datetime | None, truth_file: Path | None) -> None:
        sources = {s.id: s for s in getattr(cfg.sources, kind)}
        source = source or next(iter(sources), None)
        if source not in sources:
            raise ValueError(f"no {self.protocol} source {source!r} in sources.{kind} "
                             f"({', '.join(sources) or 'none defined'})")
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.cfg = cfg
        self.source_config: Any = sources[source]
        self.clock = SimClock(int(start_time.timestamp() * US) if start_time is not None else None, speed,
                              running=not paused)
        origin_us = int(origin.timestamp() * US) if origin is not None else self.clock.start_us
        self.model = MachineTags(cfg, source, seed=seed, origin_us=origin_us, now_us=self.clock.start_us)
        self.truth_file = truth_file
        self._next_truth = 0.0
        self._task: asyncio.Task[None] | None = None

    def source_tags(self) -> Iterator[tuple[str, SimMachine, Machine, TagSpec]]:
        """(where, the machine's tags, the machine, the tag) for every tag the source's machines show, `where`
        naming it for a config message."""
        for line, machine in self.cfg.machines():
            if machine.source != self.source_config.id:
                continue
            sim = self.model.machine(line.id, machine.id)
            for tag in self.cfg.machine_types[machine.type].tags:
                if tag.node in sim.tags:
                    yield f"machine {line.id}.{machine.id} tag {tag.node}", sim, machine, tag

    def advance(self) -> None:
        """Run the plant up to the clock."""
        now = self.clock.now_us()
        if now > self.model.now_us:
            self.model.advance(now)

    @abstractmethod
    def tick(self) -> None:
        """Apply the controls, run the plant up to the clock and show it (each protocol's own)."""

    def start_ticking(self) -> None:
        self._task = asyncio.create_task(self._tick_loop(), name=f"{self.protocol.lower()}-sim-tick")

    async def stop_ticking(self) -> None:
        """Stop the tick and write the truth as it stands; safe to call twice."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.write_truth()

    def write_truth(self) -> None:
        if self.truth_file is not None:
            save_truth(self.truth_file, self.model.truth_json())

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(TICK_S)
            try:
                self.tick()
                if self.truth_file is not None and loop.time() >= self._next_truth:
                    self._next_truth = loop.time() + TRUTH_EVERY_S
                    await asyncio.to_thread(save_truth, self.truth_file, self.model.truth_json())
            except Exception:
                log.exception("%s simulator tick failed", self.protocol)
