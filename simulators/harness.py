"""Helpers shared by the end-to-end tests and the benchmarks, which both drive real processes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


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
