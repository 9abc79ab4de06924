"""How many login attempts the dashboard accepts: a failure counter per account and per client address, for every
way of logging in (the form, HTTP Basic, feed and kiosk tokens).

An attempt is taken before a slow password check (argon2) and settled after, so attempts in flight count against
the limit: 50 clients guessing in parallel get no more tries than one client guessing in turn. (A quick check, of a
token or a plain password, runs first and is then taken and settled at once: auth.py.) When an account's (or
an address's) failures reach the limit, it is locked for `lockout_s`; each further lockout of the same key within a
day doubles, up to `max_lockout_s`. A success clears its account's failures, not its address's (a user who knows
one password must not be able to reset the count of guesses at others).

No Flask, no clock reads of its own: the clock is passed in, so the rules are tested alone.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("dashboard.auth")
LOCK_MEMORY_S = 86400.0  # a key locked again within this long after its last lockout gets a longer one
MAX_KEYS = 20000  # keys kept at once; beyond, the oldest ones not locked are forgotten


@dataclass
class _Key:
    failures: int = 0
    first_failure: float = 0.0
    in_flight: int = 0
    locked_until: float = 0.0
    lockouts: int = 0
    last_seen: float = 0.0
    clients: list[str] = field(default_factory=list)  # the last few addresses that failed, for the log line
    ways: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Attempt:
    """One login attempt under way: settle it with `LoginThrottle.settle` whatever the outcome."""

    keys: tuple[tuple[str, str], ...]
    client: str
    way: str


class LoginThrottle:
    def __init__(self, max_failures: int, max_failures_per_client: int, lockout_s: float, max_lockout_s: float,
                 clock: Callable[[], float], window_s: float = 900.0) -> None:
        self.limits = {"account": max_failures, "client": max_failures_per_client}
        self.lockout_s, self.max_lockout_s, self.window_s = lockout_s, max(lockout_s, max_lockout_s), window_s
        self.clock = clock
        self._keys: dict[tuple[str, str], _Key] = {}
        self._lock = threading.Lock()
        self.lockouts = 0  # how many lockouts so far (for /api/v1/health)

    def attempt(self, client: str, account: str | None, way: str) -> Attempt | float:
        """An Attempt to go ahead with, or the seconds to wait (>= 1) while the client or account is locked or
        as many attempts as the limit allows are already in flight."""
        keys: list[tuple[str, str]] = [("client", client)]
        if account is not None:
            keys.append(("account", account[:64]))
        now = self.clock()
        with self._lock:
            wait = 0.0
            states = [self._state(k, now) for k in keys]
            for (kind, _), st in zip(keys, states, strict=True):
                if st.locked_until > now:
                    wait = max(wait, st.locked_until - now)
                elif st.failures + st.in_flight >= self.limits[kind]:
                    wait = max(wait, 1.0)  # the attempts in flight decide whether a lockout follows
            if wait:
                return max(1.0, wait)
            for st in states:
                st.in_flight += 1
                st.last_seen = now
        return Attempt(tuple(keys), client, way)

    def settle(self, attempt: Attempt, ok: bool) -> None:
        """The outcome of `attempt`: a failure counts (and may lock), a success clears its account's failures."""
        now = self.clock()
        with self._lock:
            for kind, name in attempt.keys:
                st = self._state((kind, name), now)
                st.in_flight = max(0, st.in_flight - 1)
                if ok:
                    if kind == "account":
                        st.failures = 0
                    continue
                if st.failures == 0:
                    st.first_failure = now
                st.failures += 1
                for seen, item in ((st.clients, attempt.client), (st.ways, attempt.way)):
                    if item in seen:
                        seen.remove(item)
                    seen.append(item)
                    del seen[:-5]
                if st.failures >= self.limits[kind]:
                    self._lock_out(kind, name, st, now)

    def locked(self, client: str, account: str | None = None) -> float:
        """Seconds the client (or the account) stays locked; 0 when it is not."""
        now = self.clock()
        with self._lock:
            keys = [("client", client)] + ([("account", account[:64])] if account is not None else [])
            return max([0.0, *(self._keys[k].locked_until - now for k in keys if k in self._keys)])

    def _lock_out(self, kind: str, name: str, st: _Key, now: float) -> None:
        if now - st.locked_until > LOCK_MEMORY_S:
            st.lockouts = 0
        period = min(self.max_lockout_s, self.lockout_s * 2 ** st.lockouts)
        st.lockouts += 1
        st.locked_until = now + period
        failures, st.failures = st.failures, 0
        self.lockouts += 1
        if kind == "account":
            log.warning("dashboard: account %s locked for %.0f s after %d failed logins from %s (%s)", name, period,
                        failures, ", ".join(st.clients), ", ".join(st.ways))
        else:
            log.warning("dashboard: client %s locked for %.0f s after %d failed logins (%s)", name, period, failures,
                        ", ".join(st.ways))

    def _state(self, key: tuple[str, str], now: float) -> _Key:
        st = self._keys.get(key)
        if st is None:
            if len(self._keys) >= MAX_KEYS:
                self._forget(now)
            st = self._keys[key] = _Key(last_seen=now)
        elif st.failures and now - st.first_failure > self.window_s:
            st.failures = 0  # failures this old no longer count
        return st

    def _forget(self, now: float) -> None:
        """Drop keys that hold nothing (no lockout to remember, nothing in flight), oldest first, until a tenth of
        the room is free."""
        idle = sorted((st.last_seen, k) for k, st in self._keys.items()
                      if st.in_flight == 0 and now - st.locked_until > LOCK_MEMORY_S)
        for _, k in idle[:max(1, MAX_KEYS // 10)]:
            del self._keys[k]
