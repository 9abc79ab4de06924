"""The simulators' clock: simulated UTC time that runs `speed` times faster than real time and can be paused."""

from __future__ import annotations

import time
from collections.abc import Callable

US = 1_000_000  # microseconds per second (the plant's unit of time)


class SimClock:
    """Simulated now in integer microseconds since the Unix epoch.

    It starts at `start_us` (default: the real now) and runs `speed` times faster than the monotonic clock while
    running; paused, it stands still. It is read afresh on every call, so time a simulator spends starting is not
    lost. `monotonic_ns` is injectable so that a test can drive it.
    """

    def __init__(self, start_us: int | None = None, speed: float = 1.0, *, running: bool = True,
                 monotonic_ns: Callable[[], int] = time.monotonic_ns) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self.start_us = start_us if start_us is not None else time.time_ns() // 1000
        self._monotonic_ns = monotonic_ns
        self._base_us = self.start_us
        self._since_ns: int | None = monotonic_ns() if running else None

    @property
    def running(self) -> bool:
        """Whether the clock runs (a paused clock stands still)."""
        return self._since_ns is not None

    def now_us(self) -> int:
        """Simulated now, microseconds since the Unix epoch."""
        if self._since_ns is None:
            return self._base_us
        return self._base_us + int((self._monotonic_ns() - self._since_ns) * self.speed / 1000)

    def set_running(self, running: bool) -> None:
        """Run or pause the clock; a paused clock resumes from where it stopped."""
        if running and self._since_ns is None:
            self._since_ns = self._monotonic_ns()
        elif not running and self._since_ns is not None:
            self._base_us, self._since_ns = self.now_us(), None
