"""The clock of a run: the wall clock, or a simulated one for demos (the simulators' --start and --speed)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime


def simulated_clock(start: datetime, speed: float = 1.0) -> Callable[[], int]:
    """Epoch nanoseconds on a clock that starts at `start` and runs `speed` times faster than real time: every
    process of a demo runs on the same one, so states, counts and shifts line up."""
    if speed <= 0:
        raise ValueError("speed must be positive")
    start_ns = int(start.timestamp() * 1e9)
    t0 = time.monotonic_ns()
    return lambda: start_ns + int((time.monotonic_ns() - t0) * speed)
