"""HTTPS behind nginx: the sample deploy/nginx/shopfloor.conf (only its ports, certificate and dashboard address
changed) in front of a real dashboard process with dashboard.trusted_proxy, a self-signed certificate made with
cryptography. Pages answer over HTTPS with Secure cookies, plain HTTP is sent to HTTPS, live streams come through
unbuffered, and a client that is not the proxy cannot claim HTTPS with a header."""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from simulators.broker import free_port
from simulators.harness import wait_until
from tests.conftest import ROOT
from tests.e2e.conftest import Proc, write_config

pytestmark = pytest.mark.slow

SAMPLE = ROOT / "deploy" / "nginx" / "shopfloor.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shopfloor.plant.local")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    crt, pem = tmp / "dashboard.crt", tmp / "dashboard.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return crt, pem


def sample_on(tmp: Path, http_port: int, https_port: int, dashboard_port: int, crt: Path, key: Path) -> str:
    """The sample config with this test's ports, certificate and dashboard: nothing else changed."""
    text = SAMPLE.read_text(encoding="utf-8")
    for old, new in [("    listen [::]:80;\n", ""), ("    listen [::]:443 ssl http2;\n", ""),
                     ("listen 80;", f"listen 127.0.0.1:{http_port};"),
                     ("listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;"),
                     ("/etc/shopfloor/tls/dashboard.crt", str(crt)), ("/etc/shopfloor/tls/dashboard.key", str(key)),
                     ("server 127.0.0.1:8080;", f"server 127.0.0.1:{dashboard_port};")]:
        assert old in text, f"{SAMPLE} no longer has {old!r}: update this test with it"
        text = text.replace(old, new)
    temp = "\n".join(f"{kind}_temp_path {tmp / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    user = "user root;\n" if os.geteuid() == 0 else ""
    return (f"{user}daemon off;\npid {tmp / 'nginx.pid'};\nerror_log {tmp / 'error.log'} info;\n"
            f"events {{ worker_connections 256; }}\nhttp {{\naccess_log {tmp / 'access.log'};\n{temp}\n{text}\n}}\n")


class Site:
    def __init__(self, https_port: int, http_port: int, dashboard_port: int, crt: Path) -> None:
        self.https = f"https://127.0.0.1:{https_port}"
        self.http = f"http://127.0.0.1:{http_port}"
        self.dashboard = f"http://127.0.0.1:{dashboard_port}"
        self.tls = ssl.create_default_context(cafile=str(crt))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    assert os.path.exists(NGINX), "nginx is not installed (apt-get install nginx-light; make test installs it)"
    tmp = tmp_path_factory.mktemp("https")
    crt, key = self_signed(tmp)

    def behind_nginx(data: dict[str, Any]) -> None:
        data["dashboard"] = {"trusted_proxy": "127.0.0.1", "heartbeat_s": 1}

    config = write_config(tmp / "factory.yaml", f"mqtt://127.0.0.1:{free_port()}", free_port(), free_port(),
                          tmp / "agent", behind_nginx)
    dashboard_port, http_port, https_port = free_port(), free_port(), free_port()
    dashboard = Proc("dashboard", ["dashboard", "--config", str(config), "--port", str(dashboard_port)], tmp)
    dashboard.start(ready="shopfloor dashboard: http://")
    conf = tmp / "nginx.conf"
    conf.write_text(sample_on(tmp, http_port, https_port, dashboard_port, crt, key), encoding="utf-8")
    check = subprocess.run([NGINX, "-t", "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(conf)],
                           capture_output=True, text=True)
    assert check.returncode == 0, f"nginx -t refused the sample:\n{check.stderr}"
    nginx = subprocess.Popen([NGINX, "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(conf)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: socket.create_connection(("127.0.0.1", https_port), timeout=1).close() or True, 10,
                   "nginx listening")
        yield Site(https_port, http_port, dashboard_port, crt)
    finally:
        nginx.terminate()
        nginx.wait(10)
        dashboard.stop()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def test_pages_over_https_with_secure_cookies(site: Site) -> None:
    with urllib.request.urlopen(site.https + "/login", context=site.tls, timeout=10) as resp:
        assert resp.status == 200
        page = resp.read().decode()
        cookie = resp.headers["Set-Cookie"] or ""
    assert "<form" in page
    assert "; Secure" in cookie and "HttpOnly" in cookie, cookie


def test_plain_http_is_sent_to_https(site: Site) -> None:
    opener = urllib.request.build_opener(NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as caught:
        opener.open(site.http + "/boards/line-1", timeout=10)
    assert caught.value.code == 301
    assert caught.value.headers["Location"].startswith("https://127.0.0.1/boards/line-1")


def test_live_stream_comes_through_unbuffered(site: Site) -> None:
    request = urllib.request.Request(site.https + "/api/v1/stream?scope=overview")
    seen = b""
    with urllib.request.urlopen(request, context=site.tls, timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        start = time.monotonic()
        while b"event: heartbeat" not in seen and time.monotonic() - start < 8:
            seen += resp.read1(65536)
    # a heartbeat of some 60 bytes every second arrives as it is sent, not when nginx's buffer fills (the
    # dashboard asks for that with X-Accel-Buffering: no; the sample turns buffering off for streams as well)
    assert b"event: snapshot" in seen and b"event: heartbeat" in seen, seen[-500:]


def test_a_client_that_is_not_the_proxy_cannot_claim_https(site: Site) -> None:
    # straight to the dashboard from another address of the plant network, claiming to have come over HTTPS
    port = int(site.dashboard.rsplit(":", 1)[1])
    sock = socket.socket()
    sock.bind(("127.0.0.9", 0))
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /login HTTP/1.1\r\nHost: dashboard\r\nX-Forwarded-Proto: https\r\n"
                 b"X-Forwarded-For: 10.0.0.1\r\nConnection: close\r\n\r\n")
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    sock.close()
    head = answer.split(b"\r\n\r\n", 1)[0].decode()
    assert head.startswith("HTTP/1.1 200"), head
    cookies = [line for line in head.split("\r\n") if line.lower().startswith("set-cookie:")]
    assert cookies and all("Secure" not in c for c in cookies), cookies


def test_the_proxy_is_not_held_to_the_per_client_limit(site: Site) -> None:
    # 40 screens, each on its own address, open a live stream through nginx: the dashboard sees 40 connections
    # from nginx's one address, more than dashboard.limits.per_client (32), and serves them all
    https_port = int(site.https.rsplit(":", 1)[1])
    screens = []
    try:
        for i in range(40):
            raw = socket.socket()
            raw.bind((f"127.0.6.{i + 1}", 0))
            raw.settimeout(10)
            raw.connect(("127.0.0.1", https_port))
            tls = site.tls.wrap_socket(raw, server_hostname="localhost")
            tls.sendall(b"GET /api/v1/stream?scope=overview HTTP/1.1\r\nHost: localhost\r\n\r\n")
            screens.append(tls)
        heads = [screen.recv(4096).split(b"\r\n", 1)[0] for screen in screens]
    finally:
        for screen in screens:
            screen.close()
    assert heads == [b"HTTP/1.1 200 OK"] * 40, sorted(set(heads))
