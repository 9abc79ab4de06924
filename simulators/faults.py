"""A fault-injecting HTTP reverse proxy, for testing clients against the errors real servers give under load.

`FaultProxy` sits on a free loopback port in front of a real HTTP server (an `InfluxServer`) and forwards
every request unchanged: method, path and query, headers (Authorization, Content-Encoding: gzip) and the raw
body bytes; the answer comes back the same way. On request it instead answers the next requests itself
(429 with Retry-After, 5xx, 401, ...), refuses bodies over a size limit with 413 as a reverse proxy does, or
holds requests back so that the client times out. Every request is recorded, so a test can check what the
client sent and when.

    with FaultProxy(influx.url) as proxy:
        proxy.fail_next(429, headers={"Retry-After": "1"})
        client_under_test(proxy.url).write(points)
        assert [r.status for r in proxy.requests] == [429, 204]
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from simulators.broker import HOST

log = logging.getLogger(__name__)

# Headers about one connection rather than the message; a proxy must not pass them on (RFC 9110, 7.6.1).
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                         "trailer", "transfer-encoding", "upgrade", "proxy-connection"})


@dataclass(frozen=True)
class ProxyRecord:
    """One request the proxy saw: `path` with its query string, the status the client got, the request
    body's size as sent (compressed if it was), whether it reached the upstream, and `at`, the
    time.monotonic() at which it arrived."""

    method: str
    path: str
    status: int
    body_len: int
    forwarded: bool
    at: float


@dataclass
class _Failure:
    status: int
    count: int
    body: bytes
    headers: dict[str, str]
    path: str


@dataclass
class _Stall:
    seconds: float
    count: int
    path: str


class FaultProxy:
    """An HTTP/1.1 reverse proxy on 127.0.0.1 in front of `upstream` (http://host:port), with faults on
    request. `port=0` picks a free port. All controls may be used from any thread while it runs."""

    def __init__(self, upstream: str, port: int = 0, upstream_timeout_s: float = 60.0) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(f"upstream must be an http://host:port URL, not {upstream!r}")
        self.upstream = upstream
        self._upstream_host = parsed.hostname
        self._upstream_port = parsed.port or 80
        self._upstream_netloc = parsed.netloc
        self.upstream_timeout_s = upstream_timeout_s
        self._port = port
        # A reverse proxy's body limit (nginx's client_max_body_size): larger bodies get 413. None: no limit.
        self.max_body_bytes: int | None = None
        self._lock = threading.Lock()
        self._failures: list[_Failure] = []
        self._stalls: list[_Stall] = []
        self._records: list[ProxyRecord] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._clients: set[socket.socket] = set()

    # --- life -------------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The proxy's port; 0 until the first start when a free port is to be picked."""
        return self._port

    @property
    def url(self) -> str:
        """http://127.0.0.1:<port>, to give the client under test instead of the upstream's URL."""
        return f"http://{HOST}:{self._port}"

    @property
    def running(self) -> bool:
        """True while the proxy accepts connections."""
        return self._server is not None

    def start(self) -> Self:
        """Listen and serve in a background thread; a started proxy is left as it is. A restarted proxy
        keeps its port."""
        if self._server is not None:
            return self
        handler = type("_BoundHandler", (_Handler,), {"proxy": self})
        self._server = ThreadingHTTPServer((HOST, self._port), handler)
        self._server.daemon_threads = True
        self._port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"fault-proxy-{self._port}",
                                        daemon=True)
        self._thread.start()
        log.info("fault proxy on %s in front of %s", self.url, self.upstream)
        return self

    def stop(self) -> None:
        """Stop listening and cut the open client connections, as a proxy going down would. A request being
        forwarded at that moment still reaches the upstream."""
        if self._server is None:
            return
        server, self._server = self._server, None
        server.shutdown()
        server.server_close()
        with self._lock:
            clients = list(self._clients)
        for sock in clients:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # --- faults -----------------------------------------------------------------------------------------

    def fail_next(self, status: int, count: int = 1, body: str = "", headers: dict[str, str] | None = None,
                  path: str = "/write") -> None:
        """Answer the next `count` requests whose path starts with `path` with `status`, `body` and
        `headers` (e.g. {"Retry-After": "1"}) without forwarding them. Rules set earlier are used up first."""
        with self._lock:
            self._failures.append(_Failure(status, count, body.encode("utf-8"), dict(headers or {}), path))

    def stall_next(self, seconds: float, count: int = 1, path: str = "/write") -> None:
        """Hold the next `count` requests whose path starts with `path` for `seconds` before forwarding them:
        a client with a shorter timeout gives up, and the request reaches the server anyway, late."""
        with self._lock:
            self._stalls.append(_Stall(seconds, count, path))

    def reset(self) -> None:
        """Forget all pending failures and stalls and the body limit; the records stay."""
        with self._lock:
            self._failures.clear()
            self._stalls.clear()
        self.max_body_bytes = None

    @property
    def requests(self) -> list[ProxyRecord]:
        """The requests answered so far, in the order they arrived (a copy). A request is listed before its
        answer goes out; one still being held or forwarded is not listed yet."""
        with self._lock:
            return sorted(self._records, key=lambda r: r.at)

    def clear_requests(self) -> None:
        """Forget the records of the requests seen so far."""
        with self._lock:
            self._records.clear()

    # --- for the handler --------------------------------------------------------------------------------

    def _take_failure(self, path: str) -> _Failure | None:
        with self._lock:
            rule = next((r for r in self._failures if path.startswith(r.path)), None)
            if rule is not None:
                rule.count -= 1
                self._failures = [r for r in self._failures if r.count > 0]
            return rule

    def _take_stall(self, path: str) -> float:
        with self._lock:
            rule = next((r for r in self._stalls if path.startswith(r.path)), None)
            if rule is None:
                return 0.0
            rule.count -= 1
            self._stalls = [r for r in self._stalls if r.count > 0]
            return rule.seconds

    def _record(self, record: ProxyRecord) -> None:
        with self._lock:
            self._records.append(record)

    def _track(self, sock: socket.socket, open_: bool) -> None:
        with self._lock:
            if open_:
                self._clients.add(sock)
            else:
                self._clients.discard(sock)


class _Handler(BaseHTTPRequestHandler):
    """One client connection: HTTP/1.1, kept alive across requests as long as the client wants."""

    protocol_version = "HTTP/1.1"
    proxy: FaultProxy  # set on the subclass made in FaultProxy.start()
    # An idle client connection is closed after this long, so that forgotten ones do not pile up.
    timeout = 120

    def setup(self) -> None:
        super().setup()
        self.proxy._track(self.connection, True)

    def finish(self) -> None:
        self.proxy._track(self.connection, False)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("fault proxy: %s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._relay()

    do_POST = do_PUT = do_DELETE = do_HEAD = do_OPTIONS = do_PATCH = do_GET

    def _relay(self) -> None:
        # Each request is recorded before its answer is sent: a client holding the answer finds the record.
        arrived = time.monotonic()
        body = self._read_body()
        if body is None:
            return
        proxy = self.proxy
        limit = proxy.max_body_bytes
        if limit is not None and len(body) > limit:
            proxy._record(ProxyRecord(self.command, self.path, 413, len(body), False, arrived))
            self._answer(413, b"Request Entity Too Large\n", {"Content-Type": "text/plain"})
            return
        failure = proxy._take_failure(self.path)
        if failure is not None:
            kind = "application/json" if failure.body.startswith(b"{") else "text/plain"
            proxy._record(ProxyRecord(self.command, self.path, failure.status, len(body), False, arrived))
            self._answer(failure.status, failure.body, {"Content-Type": kind, **failure.headers})
            return
        stall = proxy._take_stall(self.path)
        if stall:
            time.sleep(stall)
        try:
            status, reason, upstream_headers, answer = self._forward(body)
        except OSError as exc:
            log.warning("fault proxy: upstream %s did not answer %s %s: %s", proxy.upstream, self.command,
                        self.path, exc)
            proxy._record(ProxyRecord(self.command, self.path, 502, len(body), False, arrived))
            self._answer(502, f"Bad Gateway: {exc}\n".encode(), {"Content-Type": "text/plain"})
            return
        proxy._record(ProxyRecord(self.command, self.path, status, len(body), True, arrived))
        self._answer(status, answer, upstream_headers, reason)

    def _read_body(self) -> bytes | None:
        """The raw request body, or None when the request cannot be read (the connection is then closed)."""
        try:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                return self._read_chunks()
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            self._answer(400, b"Bad request framing\n", {"Content-Type": "text/plain"})
            self.close_connection = True
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _read_chunks(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            size = int(self.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers, then the blank line
                    pass
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline()

    def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        proxy = self.proxy
        # A fresh upstream connection per request: simple, and a stalled request cannot hold up others.
        conn = http.client.HTTPConnection(proxy._upstream_host, proxy._upstream_port,
                                          timeout=proxy.upstream_timeout_s)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", proxy._upstream_netloc)
            for name, value in self.headers.items():
                if name.lower() not in _HOP_BY_HOP and name.lower() not in ("host", "content-length"):
                    conn.putheader(name, value)
            if body or self.command in ("POST", "PUT", "PATCH"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            response = conn.getresponse()
            answer = response.read()  # undoes chunking; a gzip body stays gzip, its header goes along
            headers = [(k, v) for k, v in response.getheaders()
                       if k.lower() not in _HOP_BY_HOP and k.lower() != "content-length"]
            return response.status, response.reason, headers, answer
        finally:
            conn.close()

    def _answer(self, status: int, body: bytes, headers: dict[str, str] | list[tuple[str, str]],
                reason: str | None = None) -> None:
        if reason is None:
            with contextlib.suppress(ValueError):
                reason = HTTPStatus(status).phrase
        items = list(headers.items() if isinstance(headers, dict) else headers)
        try:
            # send_response() would add a second Date and Server to the upstream's own.
            self.send_response_only(status, reason)
            self.log_request(status, len(body))
            for name, value in items:
                if name.lower() != "content-length":
                    self.send_header(name, value)
            if not any(name.lower() == "date" for name, _ in items):
                self.send_header("Date", self.date_time_string())
            if status >= 200 and status not in (204, 304):
                # Always a length: the client keeps the connection and knows where this answer ends.
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD" and status not in (204, 304) and body:
                self.wfile.write(body)
        except OSError:  # the client gave up (a timeout): it never sees this answer
            self.close_connection = True
