"""Telling systemd how a Shopfloor service is doing (sd_notify), without a library.

Under a unit of `Type=notify`, systemd passes the path of a datagram socket in NOTIFY_SOCKET; a process writes
newline-separated `KEY=value` lines to it: READY=1 once it serves, RELOADING=1 while it re-reads its config,
STOPPING=1 when it begins to stop, WATCHDOG=1 at least every WatchdogSec (systemd passes the period in
WATCHDOG_USEC, and the process it means in WATCHDOG_PID). A name beginning with `@` is an abstract socket.
Outside systemd (no NOTIFY_SOCKET, as on Windows or in a terminal) every call does nothing.

A process sends WATCHDOG=1 only after checking that its own work goes on (the agent: its pipeline commits;
the dashboard: it answers a request), so that systemd restarts a process that hangs, not only one that dies.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable

log = logging.getLogger(__name__)


def notify(*states: str) -> bool:
    """Send `states` (e.g. "READY=1") to systemd; False when there is no NOTIFY_SOCKET or it cannot be reached."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address or not hasattr(socket, "AF_UNIX"):
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            # Never wait: a receiver whose queue is full (systemd swamped, or a test not reading) would block
            # the caller, the agent's event loop among them; a notification that cannot go now is dropped.
            sock.setblocking(False)
            sock.connect(address)
            sock.send("\n".join(states).encode("utf-8"))
    except OSError as exc:
        log.debug("sd_notify %s to %s failed: %s", states, address, exc)
        return False
    return True


def ready(status: str = "") -> bool:
    return notify("READY=1", *([f"STATUS={status}"] if status else []))


def reloading() -> bool:
    # MONOTONIC_USEC lets systemd tell this reload from an earlier one (systemd.service, Type=notify-reload)
    return notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")


def stopping() -> bool:
    return notify("STOPPING=1")


def watchdog_period() -> float | None:
    """How often to send WATCHDOG=1 (half of WatchdogSec, in seconds), or None when systemd watches no one
    here: no WATCHDOG_USEC, or WATCHDOG_PID names another process."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 1e6 / 2


class Vitals:
    """Logs the watchdog being held back once, and its recovery once."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.withheld = False

    def report(self, healthy: bool, why: str = "") -> None:
        """Send WATCHDOG=1 when `healthy`; log the first check that is not, and the first that is again."""
        if healthy:
            notify("WATCHDOG=1")
            if self.withheld:
                log.info("%s works again; watchdog notifications resume", self.service)
            self.withheld = False
        elif not self.withheld:
            self.withheld = True
            log.error("%s does not work (%s): watchdog notifications held back; systemd restarts it after "
                      "WatchdogSec", self.service, why)


class HttpWatchdog:
    """For a server whose main loop is not ours (waitress): a thread that GETs `url` on the server itself every
    watchdog period and sends WATCHDOG=1 only when it answered. Does nothing unless systemd asked for it."""

    def __init__(self, url: str, service: str, timeout: float | None = None) -> None:
        self.url = url
        self.period = watchdog_period()
        self.timeout = timeout or (self.period or 5.0)
        self.vitals = Vitals(service)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> HttpWatchdog:
        if self.period is not None:
            self._thread = threading.Thread(target=self._run, name="shopfloor-watchdog", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        assert self.period is not None
        while not self._stop.wait(self.period):
            self.vitals.report(*self.probe())

    def probe(self) -> tuple[bool, str]:
        # The server's own certificate names the plant's host name, not the loopback: the probe asks whether
        # the server answers, not who it is.
        context = ssl._create_unverified_context() if self.url.startswith("https:") else None  # noqa: S323
        try:
            with urllib.request.urlopen(self.url, timeout=self.timeout, context=context) as resp:  # noqa: S310
                resp.read()
            return True, ""
        except urllib.error.HTTPError:
            return True, ""  # an answer, if only "log in first" (401), is the server at work
        except OSError as exc:
            return False, f"{self.url}: {exc}"


def local_url(host: str, port: int, path: str, scheme: str = "http") -> str:
    """The URL of `path` on a server of this machine listening on `host` (a wildcard address is reached on the
    loopback)."""
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"{scheme}://[{host}]:{port}{path}" if ":" in host else f"{scheme}://{host}:{port}{path}"


def serving(host: str, port: int, service: str, path: str = "/healthz", scheme: str = "http") -> Callable[[], None]:
    """READY=1 now, and a watchdog that GETs `path` on the server at `host:port` (`scheme` "https" for a server
    that speaks TLS itself); returns what to call when the server stops (STOPPING=1). The hook for servers that
    run someone else's loop: `done = notify.serving(host, port, "dashboard")` ... `done()`."""
    watchdog = HttpWatchdog(local_url(host, port, path, scheme), service).start()
    ready()

    def done() -> None:
        watchdog.stop()
        stopping()
    return done
