"""`python -m bench.chaos_clock OFFSET_FILE shopfloor-args...`: run a `shopfloor` command whose wall clock is off
by the seconds written in OFFSET_FILE, read again every 0.2 s, so the chaos suite can jump the edge PC's clock
back and forward under a running agent.

A real clock jump moves CLOCK_REALTIME for the whole machine (root, and every other process on this shared box
would jump with it). libfaketime would move it for one process, but Debian's 0.9.10 breaks Python 3.11's
`time.sleep` when the monotonic clock is left alone (clock_nanosleep with TIMER_ABSTIME gets a negative time:
wolfcw/libfaketime#426), and faking the monotonic clock too is not what a wall-clock jump does. So the jump is
made where the agent reads the wall clock: `time.time` and `time.time_ns`, before any of Shopfloor is imported
(the agent's injectable clock, `Agent(now_ns=...)`, defaults to `time.time_ns`). The monotonic clock runs on, as
it does when NTP or an operator steps the clock.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from pathlib import Path

REREAD_S = 0.2


class JumpingClock:
    """The wall clock plus an offset in seconds taken from a file (a missing or unreadable file: no offset)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset_ns = 0
        self._real_time_ns = time.time_ns
        self._lock = threading.Lock()
        self._next_read = 0.0

    def _offset(self) -> int:
        now = time.monotonic()
        if now >= self._next_read:
            with self._lock:
                self._next_read = now + REREAD_S
                with contextlib.suppress(OSError, ValueError):
                    self.offset_ns = int(float(self.path.read_text(encoding="utf-8").strip() or 0) * 1e9)
        return self.offset_ns

    def time_ns(self) -> int:
        return self._real_time_ns() + self._offset()

    def time(self) -> float:
        return self.time_ns() / 1e9


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m bench.chaos_clock OFFSET_FILE shopfloor-args...", file=sys.stderr)
        return 2
    clock = JumpingClock(Path(argv[0]))
    time.time_ns = clock.time_ns
    time.time = clock.time
    from shopfloor.cli import main as shopfloor_main

    return int(shopfloor_main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
