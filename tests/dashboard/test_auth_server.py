"""Access control through `shopfloor dashboard` (waitress) over real sockets: 50 clients guessing a password at once
get no more tries than the throttle allows, and the right password still works for another account and after the
lockout; a cookie copied before logout opens nothing after it; a 1 GB body is refused after its headers."""

from __future__ import annotations

import base64
import http.client
import json
import logging
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from agent.config import DashboardSettings, DashboardUser
from agent.config.dashboard import LoginThrottle
from dashboard import create_app
from dashboard.security import problem_413
from simulators.harness import wait_until

LEAD_PW, ADMIN_PW = "lead pass of the day", "admin pass of the day"
HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)  # cheap: the test machine is shared
# authenticated, this write finds no such machine (404); unauthenticated it is 401, locked 429
WRITE = "/api/v1/lines/line-1/machines/no-such-machine/stops/1/reason"
LOCKOUT_S = 5


class Served:
    """The dashboard app served by waitress on a free loopback port, in a thread of this process."""

    def __init__(self, app, max_body_bytes):
        import waitress

        self.app = app
        self.server = waitress.create_server(app, host="127.0.0.1", port=0, threads=16, ident="shopfloor",
                                             max_request_body_size=max_body_bytes + 1)
        problem_413(self.server)
        self.port = self.server.effective_port
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()

    def close(self):
        self.server.task_dispatcher.shutdown(timeout=5)
        self.server.close()


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory, factory_cfg):
    tmp: Path = tmp_path_factory.mktemp("auth-server")
    settings = DashboardSettings(
        users=[DashboardUser(name="lead", password_hash=HASHER.hash(LEAD_PW)),
               DashboardUser(name="boss", role="admin", password_hash=HASHER.hash(ADMIN_PW))],
        login_throttle=LoginThrottle(max_failures=10, lockout_s=LOCKOUT_S))
    cfg = factory_cfg.model_copy(update={"dashboard": settings})
    app = create_app(cfg, data_dir=tmp, start_live=False)
    served = Served(app, settings.max_body_bytes)
    yield served
    served.close()
    for part in ("historian", "holds", "sessions"):
        app.extensions["shopfloor"][part].close()


@pytest.fixture
def warnings(caplog):
    caplog.set_level(logging.WARNING, "dashboard.auth")
    return caplog


def request(dashboard, method, path, headers=None, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", dashboard.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def basic(user, password):
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode(),
            "Content-Type": "application/json"}


def write_as(dashboard, user, password):
    return request(dashboard, "POST", WRITE, basic(user, password), b'{"reason": "tooling"}')


def test_fifty_parallel_guessers_get_the_throttles_tries_and_no_more(dashboard, warnings):
    started = time.monotonic()
    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(lambda i: write_as(dashboard, "lead", f"guess {i}"), range(400)))
    took = time.monotonic() - started
    statuses = [status for status, _, _ in answers]
    lockouts = [m for m in warnings.messages if m.startswith("dashboard: account lead locked")]
    assert lockouts[0] == f"dashboard: account lead locked for {LOCKOUT_S} s after 10 failed logins from 127.0.0.1 " \
                          "(basic)"
    # 10 guesses checked per lockout; a second lockout (twice as long) only if the guessing outlasted the first
    assert len(lockouts) <= 1 + int(took / LOCKOUT_S), (lockouts, took)
    assert statuses.count(401) == 10 * len(lockouts), statuses
    assert statuses.count(429) == 400 - 10 * len(lockouts)
    locked = next(a for a in answers if a[0] == 429)
    assert locked[1]["Content-Type"] == "application/problem+json"
    assert 1 <= int(locked[1]["Retry-After"]) <= 2 * LOCKOUT_S
    assert write_as(dashboard, "lead", LEAD_PW)[0] == 429  # locked, the right password too
    assert write_as(dashboard, "boss", ADMIN_PW)[0] == 404  # another account logs in meanwhile
    wait_until(lambda: write_as(dashboard, "lead", LEAD_PW)[0] == 404, 2 * LOCKOUT_S + 10,
               "lead in after the lockout")
    print(f"400 guesses from 50 clients in {took:.2f} s: {statuses.count(401)} checked, {statuses.count(429)} "
          "refused with 429")


def login(dashboard, user, password):
    status, headers, page = request(dashboard, "GET", "/login")
    cookie = headers["Set-Cookie"].split(";")[0]
    token = re.search(rb'name="csrf_token" value="([^"]+)"', page).group(1).decode()
    form = f"user={user}&password={password.replace(' ', '+')}&csrf_token={token}&next=/"
    status, headers, _ = request(dashboard, "POST", "/login", {
        "Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"}, form.encode())
    assert status == 302, status
    return headers["Set-Cookie"].split(";")[0]


def test_a_cookie_copied_before_logout_is_refused_after_it(dashboard):
    cookie = login(dashboard, "boss", ADMIN_PW)
    assert request(dashboard, "GET", "/lines/line-1/stops", {"Cookie": cookie})[0] == 200
    status, headers, _ = request(dashboard, "POST", "/logout", {"Cookie": cookie})
    assert status == 302 and "Max-Age=0" in headers["Set-Cookie"]
    status, headers, _ = request(dashboard, "GET", "/lines/line-1/stops", {"Cookie": cookie})
    assert status == 302 and headers["Location"].startswith("/login")


def rss_kb():
    return int(re.search(r"VmRSS:\s+(\d+)", Path("/proc/self/status").read_text()).group(1))


GIGABYTE_POST = (b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                 b"Content-Length: 1073741824\r\n\r\n")


def test_a_huge_body_is_refused_after_its_headers(dashboard):
    with socket.create_connection(("127.0.0.1", dashboard.port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(GIGABYTE_POST)
        answer = b""
        while chunk := sock.recv(65536):  # the answer, then the close, without a byte of the gigabyte
            answer += chunk
        took = time.monotonic() - started
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b"Content-Type: application/problem+json" in head
    problem = json.loads(body)
    assert problem["status"] == 413 and "1048576 bytes" in problem["detail"]
    assert took < 5


def push(port, megabytes):
    """Send a gigabyte POST's first `megabytes` MB; how many were taken before the server closed."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(GIGABYTE_POST)
            block = b"x" * 1024 * 1024
            for _ in range(megabytes):
                sock.sendall(block)
                sent += 1
        except OSError:
            pass  # refused and closed
    return sent


def test_bodies_pushed_at_the_server_do_not_grow_its_memory(dashboard):
    before = rss_kb()
    with ThreadPoolExecutor(4) as pool:
        taken = list(pool.map(lambda _: push(dashboard.port, 64), range(4)))
    grown_mb = (rss_kb() - before) / 1024
    assert grown_mb < 32, grown_mb  # 4 x 64 MB offered
    assert max(taken) < 64, taken  # the server closed each connection long before
    assert request(dashboard, "GET", "/api/v1/health")[0] == 200  # and still serves
    print(f"4 x 64 MB pushed: at most {max(taken)} MB sent before the close, RSS {grown_mb:+.1f} MB")
