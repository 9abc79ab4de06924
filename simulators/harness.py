"""Helpers shared by the end-to-end tests and the benchmarks, which both drive real processes."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from typing import Any


def die_with_parent() -> None:
    """A `preexec_fn`: the child gets SIGTERM when the process that started it dies, even by SIGKILL, so no
    simulator or broker outlives a demo (Linux's PR_SET_PDEATHSIG; elsewhere nothing). Only for children started
    from a thread that lives as long as they should: the signal comes when that thread ends."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def wait_until(condition: Callable[[], Any], timeout: float, what: str, every: float = 0.1,
               error: type[Exception] = AssertionError) -> Any:
    """Poll `condition` until it returns something truthy and return that; raise `error` naming `what` on
    timeout. Exceptions from `condition` count as "not yet": the thing waited for may not exist yet."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except Exception as exc:
            last_exc = exc
        time.sleep(every)
    raise error(f"timed out after {timeout:.0f} s waiting for {what}"
                + (f" (last error: {last_exc!r})" if last_exc else ""))
