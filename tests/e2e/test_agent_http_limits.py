"""The agent's /healthz and /metrics against clients that open connections and never ask anything: a bounded
pool of threads serves them, idle connections are closed, and a health check still gets its answer."""

from __future__ import annotations

import contextlib
import socket
import time
import urllib.error
import urllib.request

import psutil

from agent.http import THREADS, StatusServer
from agent.webserver import Limits
from tests.e2e.conftest import wait_until


def idle_connection(source: str, port: int) -> socket.socket | None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    sock.settimeout(5)
    try:
        sock.connect(("127.0.0.1", port))
    except OSError:
        sock.close()
        return None
    return sock


def test_700_idle_connections_cost_no_thread_each_and_healthz_answers(make_system):
    system = make_system()
    agent = system.agent()
    assert agent.popen is not None
    wait_until(lambda: system.http("/healthz")[0] in (200, 503), 30, "the agent's /healthz")
    process = psutil.Process(agent.popen.pid)
    threads_before = process.num_threads()
    # 700 connections from 10 addresses of the plant network, none of which sends a byte
    socks = [idle_connection(f"127.0.5.{i % 10 + 1}", system.agent_port) for i in range(700)]
    try:
        time.sleep(1)
        threads_during = process.num_threads()
        start = time.monotonic()
        status, body = system.http("/healthz")
        took = time.monotonic() - start
        refused = 0
        for sock in socks:
            if sock is None:
                continue
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                refused += sock.recv(100).startswith(b"HTTP/1.1 503")
    finally:
        for sock in socks:
            if sock is not None:
                sock.close()
    assert threads_during <= threads_before + THREADS, \
        f"the agent went from {threads_before} to {threads_during} threads with 700 idle connections"
    assert status in (200, 503) and '"outbox"' in body
    assert took < 2, f"/healthz took {took:.1f} s beside 700 idle connections"
    assert refused >= 700 - 10 * 16, f"{refused} connections over 16 per address were refused with 503"


def test_connections_that_ask_nothing_or_dawdle_are_closed():
    server = StatusServer("127.0.0.1", 0, {"/healthz": lambda: (200, "application/json", b"{}")},
                          limits=Limits(header_timeout_s=1, body_timeout_s=1))
    server.start()
    try:
        silent = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        slow = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        slow.sendall(b"GET /healthz HTTP/1.1\r\n")
        for _ in range(3):  # a byte every half second: never idle, never done
            time.sleep(0.5)
            slow.sendall(b"X")
        assert silent.recv(100) == b"", "a connection that sent nothing was not closed"  # silently: a browser's
        # connection opened ahead of need is no request
        assert slow.recv(100).startswith(b"HTTP/1.1 408")
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5) as resp:
            assert resp.read() == b"{}"
        try:
            urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{server.port}/healthz", data=b"",
                                                          method="POST"),
                                   timeout=5)
        except urllib.error.HTTPError as exc:
            assert exc.code == 405 and exc.headers["Allow"] == "GET"
        else:
            raise AssertionError("a POST was served")
    finally:
        server.stop()
    assert not server.thread.is_alive()
