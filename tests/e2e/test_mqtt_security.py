"""MQTT over TLS with username and password, against a real Mosquitto."""

from __future__ import annotations

import datetime as dt
import ipaddress
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from simulators.broker import Broker, free_port
from tests.e2e.conftest import System, wait_until


def _cert(subject: str, issuer_key, issuer_name, key, ca: bool) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(issuer_name or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_tls(tmp: Path) -> tuple[Path, Path, Path]:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("Shopfloor test CA", ca_key, None, ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    server = _cert("127.0.0.1", ca_key, ca.subject, key, ca=False)
    paths = (tmp / "ca.pem", tmp / "server.pem", tmp / "server.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


@pytest.fixture
def tls_broker(tmp_path):
    tls = make_tls(tmp_path)
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "edge", "line-secret"], check=True)
    with Broker(port=free_port(), data_dir=tmp_path / "broker", tls=tls, password_file=passwd) as broker:
        yield broker, tls[0]


def tls_config(ca: Path):
    def change(data):
        data["sources"]["opcua"] = []
        for line in data["lines"]:
            line["machines"] = []
        source = data["sources"]["mqtt"][0]
        source.update({"username": "edge", "password": "${LINE_BUS_PW}", "tls": {"ca_file": str(ca)}})
    return change


def test_tls_with_username_and_password(tmp_path, tls_broker):
    broker, ca = tls_broker
    system = System(tmp_path, broker, tls_config(ca))
    try:
        assert broker.url.startswith("mqtts://")
        system.agent(env={"LINE_BUS_PW": "line-secret"})
        wait_until(lambda: system.health()["sources"]["line-bus"]["connected"], 15, "a TLS connection")
        assert system.http("/healthz")[0] == 200  # the only source is up
    finally:
        system.close()


def test_wrong_password_is_refused_and_reported(tmp_path, tls_broker):
    broker, ca = tls_broker
    system = System(tmp_path, broker, tls_config(ca))
    try:
        system.agent(env={"LINE_BUS_PW": "nope"})
        health = wait_until(lambda: (h := system.health())["sources"]["line-bus"]["last_error"] and h, 15,
                            "the refusal on /healthz")
        assert health["sources"]["line-bus"]["last_error"] == "broker refused the connection: Not authorized"
        assert not health["sources"]["line-bus"]["connected"] and system.http("/healthz")[0] == 503
    finally:
        system.close()
