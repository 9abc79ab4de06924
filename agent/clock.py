"""The clock of a run: the wall clock, or a simulated one for demos (the simulators' --start and --speed)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any


class SimulatedClock:
    """Epoch nanoseconds on a clock that starts at `start` and runs `speed` times faster than real time: every
    process of a demo runs on the same one, so states, counts and shifts line up."""

    def __init__(self, start: datetime, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self._start_ns = int(start.timestamp() * 1e9)
        self._t0 = time.monotonic_ns()

    def __call__(self) -> int:
        return self._start_ns + int((time.monotonic_ns() - self._t0) * self.speed)

    def spec(self) -> dict[str, float]:
        """What another process needs to run the same clock (`from_spec`): the time now on it, by the wall clock."""
        return {"now_ns": self(), "wall_ns": time.time_ns(), "speed": self.speed}

    @classmethod
    def from_spec(cls, spec: dict[str, float]) -> SimulatedClock:
        behind_s = max(0.0, (time.time_ns() - spec["wall_ns"]) / 1e9)
        start = datetime.fromtimestamp(spec["now_ns"] / 1e9 + behind_s * spec["speed"], tz=UTC)
        return cls(start, spec["speed"])


def simulated_clock(start: datetime, speed: float = 1.0) -> Callable[[], int]:
    """A `SimulatedClock`."""
    return SimulatedClock(start, speed)


def caught_up(start: datetime | None, speed: float, anchor_s: float | None) -> datetime | None:
    """The simulated time now on a clock that read `start` at the wall-clock time `anchor_s` (epoch seconds):
    processes started one after another share one clock when each starts its own from this."""
    if start is None or anchor_s is None:
        return start
    return start + timedelta(seconds=max(0.0, time.time() - anchor_s) * speed)


def add_anchor_argument(parser: Any) -> None:
    parser.add_argument("--sim-anchor", type=float, default=None, metavar="EPOCH_S",
                        help="the wall-clock time (epoch seconds) at which the simulated clock read its start "
                             "(default: when this process starts); the demo gives every process the same one")
