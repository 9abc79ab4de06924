"""The HTTP server of the dashboard and of the agent's endpoints: waitress, guarded against slow, greedy and
crowding clients.

waitress reads requests on one asyncore loop and runs the application on a fixed pool of threads, so a request
that arrives one byte at a time costs no thread; what it costs is a connection slot, and waitress holds every
slot until `channel_timeout` of silence, which a client sending one byte every few seconds never reaches. Once
`connection_limit` slots are held, waitress stops accepting and every page waits in the kernel's backlog. So:

- a request's headers must arrive within `header_timeout_s` of its first byte (of the connection's opening for
  the first request), its body within `body_timeout_s` more; otherwise the connection is closed, with 408 when
  part of a request had come;
- a connection idle between requests is closed after `idle_timeout_s`;
- one client address holds at most `per_client` connections; one more is answered 503 and closed at once
  (a trusted reverse proxy's address is exempt: it speaks for many clients and limits them itself);
- a client that does not read what it asked for (a live stream nobody reads) has at most `send_buffer_bytes`
  waiting for it in the server, and as much in the kernel (SO_SNDBUF, which otherwise grows to megabytes); once
  that is reached, the response waits at most `send_timeout_s` for the client to read, then the connection is
  closed and the thread goes back to the pool. Memory stays bounded by connections times `send_buffer_bytes`,
  and a screen that stopped reading reconnects or polls.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from waitress.adjustments import Adjustments
from waitress.channel import ClientDisconnected, HTTPChannel
from waitress.server import TcpWSGIServer

log = logging.getLogger(__name__)

REFUSED = (b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 10\r\n"
           b"Content-Type: text/plain\r\nContent-Length: 58\r\n\r\n"
           b"too many connections from your address at once; retry soon")
TIMED_OUT = (b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: text/plain\r\n"
             b"Content-Length: 42\r\n\r\nthe request did not arrive in time; retry\n")
_WARN_EVERY_S = 60.0  # one warning per address and kind of trouble in this time


@dataclass(frozen=True)
class Limits:
    """What one server allows its clients (the docstring of this module says why each exists)."""

    connections: int = 1000  # connections held at once, all clients together
    per_client: int = 32  # connections one client address holds at once
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    idle_timeout_s: float = 60.0
    send_timeout_s: float = 15.0
    send_buffer_bytes: int = 256 * 1024
    exempt: frozenset[str] = field(default_factory=frozenset)  # addresses without a per-client cap


class GuardedChannel(HTTPChannel):
    """One client connection: knows when its current request began and gives up on a client that stops reading."""

    server: GuardedServer

    def __init__(self, server: GuardedServer, sock: socket.socket, addr: Any, adj: Adjustments,
                 map: dict[int, Any] | None = None) -> None:  # noqa: A002 - waitress's signature
        self.request_started = time.monotonic()  # the first request's clock runs from the connection's opening
        self.heard = False  # a byte has come from the client
        self.counted: str | None = None  # the address this connection counts against
        super().__init__(server, sock, addr, adj, map=map)
        self.counted = server.client_opened(addr)

    def received(self, data: bytes) -> bool:
        if self.request is None and self.heard:  # the first byte of a later request on this connection
            self.request_started = time.monotonic()
        self.heard = True
        return bool(super().received(data))

    def del_channel(self, map: dict[int, Any] | None = None) -> None:  # noqa: A002
        if self.counted is not None:
            self.server.client_closed(self.counted)
            self.counted = None
        super().del_channel(map)

    def _flush_outbufs_below_high_watermark(self) -> None:
        """waitress blocks the application's thread here while more than the high watermark waits for the
        client; it would wait forever for a client that never reads. This one waits `send_timeout_s`."""
        if self.total_outbufs_len <= self.adj.outbuf_high_watermark:
            return
        limit = self.server.limits.send_timeout_s
        deadline = time.monotonic() + limit
        with self.outbuf_lock:
            _, failed = self._flush_exception(self._flush_some, do_close=False)
            if failed:
                self.server.pull_trigger()
                self.outbuf_lock.wait(1.0)
                return
            while self.connected and self.total_outbufs_len > self.adj.outbuf_high_watermark:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.server.note(self.addr, "stalled",
                                     "%s read nothing of the last %d bytes sent to it for %.0f s; connection closed",
                                     self.total_outbufs_len, limit)
                    self.will_close = True
                    self.server.pull_trigger()
                    raise ClientDisconnected
                self.server.pull_trigger()
                self.outbuf_lock.wait(min(left, 1.0))

    def time_out(self, kind: str, limit: float) -> None:
        """Close a connection whose request did not arrive in time (main loop only): with 408 and a warning when
        part of a request came, silently when nothing did (a browser opens connections ahead of need)."""
        if self.heard:
            self.server.note(self.addr, kind, "%s: request %s not complete after %.0f s; connection closed", kind,
                             limit)
            with contextlib.suppress(OSError):
                self.socket.send(TIMED_OUT)
        else:
            self.server.timed_out += 1
        self.server.close_soon(self)


class GuardedServer(TcpWSGIServer):
    """waitress's TCP server with the limits of `Limits`; `stop()` ends `run()` from any thread."""

    channel_class = GuardedChannel

    def __init__(self, application: Callable[..., Any], limits: Limits, **settings: Any) -> None:
        self.limits = limits
        self.per_address: dict[str, int] = {}
        self.refused = 0
        self.timed_out = 0
        self.stalled = 0
        self._warned: dict[tuple[str, str], float] = {}
        self._stopping = threading.Event()
        self._closing: list[GuardedChannel] = []  # channels to close after this poll round
        raise_open_files(limits.connections + 64)
        adj = Adjustments(
            connection_limit=limits.connections, cleanup_interval=1, channel_timeout=limits.idle_timeout_s,
            outbuf_high_watermark=limits.send_buffer_bytes, asyncore_use_poll=True, **settings)
        super().__init__(application, adj=adj)

    # --- connections per client -----------------------------------------------------------------------------

    def client_opened(self, addr: Any) -> str:
        host = _host(addr)
        self.per_address[host] = self.per_address.get(host, 0) + 1
        return host

    def client_closed(self, host: str) -> None:
        left = self.per_address.get(host, 0) - 1
        if left > 0:
            self.per_address[host] = left
        else:
            self.per_address.pop(host, None)

    def handle_accept(self) -> None:
        try:
            accepted = self.accept()
        except OSError:
            return
        if accepted is None:
            return
        conn, addr = accepted
        host = _host(addr)
        if host not in self.limits.exempt and self.per_address.get(host, 0) >= self.limits.per_client:
            self.note(addr, "refused", "%s holds %d connections, the most one address may; one more refused (503)",
                      self.limits.per_client)
            try:
                conn.setblocking(False)
                conn.send(REFUSED)
            except OSError:
                pass
            conn.close()
            return
        try:
            self.set_socket_options(conn)
            # the kernel's share of what waits for this client: without a size it grows to megabytes for a
            # client that does not read
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.limits.send_buffer_bytes)
        except OSError:
            conn.close()
            return
        self.channel_class(self, conn, self.fix_addr(addr), self.adj, map=self._map)

    # --- timeouts -------------------------------------------------------------------------------------------

    def maintenance(self, now: float) -> None:
        """Every second (cleanup_interval): close connections whose request is late or that sit idle."""
        limits = self.limits
        mono = time.monotonic()
        for channel in list(self.active_channels.values()):
            if not isinstance(channel, GuardedChannel):
                continue
            if channel.will_close and not channel.requests:
                # waitress closes a channel when its socket turns writable, which a client that reads nothing
                # never lets happen
                self.close_soon(channel)
                continue
            if channel.requests:
                continue  # a response is under way (a stream may last hours); the send timeout guards it
            request = channel.request
            if request is not None or not channel.heard:
                headers_done = request is not None and request.headers_finished
                limit = limits.header_timeout_s + (limits.body_timeout_s if headers_done else 0.0)
                if mono - channel.request_started > limit:
                    channel.time_out("body" if headers_done else "headers", limit)
            elif channel.total_outbufs_len and now - channel.last_activity > limits.send_timeout_s:
                channel.will_close = True  # the rest of a finished response that the client does not take
            elif now - channel.last_activity > limits.idle_timeout_s:
                channel.will_close = True

    def close_soon(self, channel: GuardedChannel) -> None:
        """Close `channel` once the current poll round is over. maintenance() runs while the round is being set up;
        a descriptor closed then may be reused by a connection accepted in the same round, which the round's
        stale result for that descriptor would then close instead."""
        channel.will_close = True
        self._closing.append(channel)

    def _close_pending(self) -> None:
        closing, self._closing = self._closing, []
        for channel in closing:
            if channel._fileno is not None:  # not closed meanwhile
                channel.handle_close()

    def note(self, addr: Any, kind: str, message: str, *args: Any) -> None:
        """Count a client's trouble and log it, once a minute per address and kind."""
        if kind == "refused":
            self.refused += 1
        elif kind == "stalled":
            self.stalled += 1
        else:
            self.timed_out += 1
        host = _host(addr)
        now = time.monotonic()
        if now - self._warned.get((host, kind), -_WARN_EVERY_S) >= _WARN_EVERY_S:
            if len(self._warned) > 10000:
                self._warned.clear()
            self._warned[(host, kind)] = now
            log.warning("%s: " + message + " (logged once a minute per address)", self.adj.ident or "http",
                        host, *args)

    # --- running --------------------------------------------------------------------------------------------

    def run(self, wake: Callable[[], None] | None = None) -> None:
        """Serve until stop(); then close every connection, call `wake` (what wakes the application's threads
        waiting for something, such as live streams) and let the threads finish (5 s at most)."""
        try:
            while not self._stopping.is_set():
                self.asyncore.loop(timeout=self.adj.asyncore_loop_timeout, map=self._map, use_poll=True, count=1)
                self._close_pending()
        finally:
            for dispatcher in list(self._map.values()):
                with contextlib.suppress(OSError):
                    dispatcher.close()
            if wake is not None:
                wake()
            self.task_dispatcher.shutdown(timeout=5)

    def stop(self) -> None:
        self._stopping.set()
        with contextlib.suppress(OSError):
            self.pull_trigger()


def _host(addr: Any) -> str:
    return str(addr[0]) if isinstance(addr, tuple) and addr else str(addr)


def raise_open_files(wanted: int) -> None:
    """Lift the soft limit on open files towards `wanted` (each connection is one), as far as the hard limit
    allows; the default soft limit of 1024 is below what the connection limits ask for."""
    if sys.platform == "win32":
        return  # no such limit there
    import resource

    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning("cannot raise the limit on open files to %d: %s", wanted, exc)
