"""MQTT over TLS against a real Mosquitto: with user name and password, and with client certificates (mutual TLS,
the certificate's common name as the user name of the ACL); what a wrong CA, a missing certificate or a missing
file shows in the log and on /healthz."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import subprocess
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion

from simulators.broker import Broker, free_port
from tests.conftest import ROOT
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


def _write(cert: x509.Certificate, key, cert_path: Path, key_path: Path) -> None:
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))


def make_tls(tmp: Path, clients: tuple[str, ...] = ()) -> tuple[Path, Path, Path]:
    """A CA, the broker's certificate for 127.0.0.1 and key, and a certificate and key per client common name
    (tmp/<name>.pem, tmp/<name>.key); returns the CA, broker certificate and broker key paths."""
    tmp.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("Shopfloor test CA", ca_key, None, ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    server = _cert("127.0.0.1", ca_key, ca.subject, key, ca=False)
    paths = (tmp / "ca.pem", tmp / "server.pem", tmp / "server.key")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    _write(server, key, paths[1], paths[2])
    for name in clients:
        client_key = ec.generate_private_key(ec.SECP256R1())
        _write(_cert(name, ca_key, ca.subject, client_key, ca=False), client_key, tmp / f"{name}.pem",
               tmp / f"{name}.key")
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


# --- mutual TLS -------------------------------------------------------------------------------------------------


def mtls_config(tmp: Path, other_ca: Path):
    """Four MQTT sources on one broker that asks every client for a certificate: line-bus with the agent's
    certificate, and three that cannot connect (no certificate, the CA of another broker, a CA file missing)."""
    def change(data):
        data["sources"]["opcua"] = []
        for line in data["lines"]:
            line["machines"] = []
        good = data["sources"]["mqtt"][0]
        good.update(workers=1, tls={"ca_file": str(tmp / "ca.pem"), "cert_file": str(tmp / "shopfloor-agent.pem"),
                                    "key_file": str(tmp / "shopfloor-agent.key")})
        bad = []
        for n, tls in enumerate(({"ca_file": str(tmp / "ca.pem")}, {"ca_file": str(other_ca)},
                                 {"ca_file": str(tmp / "no-such-ca.pem")}), start=2):
            bad.append({**good, "id": f"line-bus-{n}", "client_id": f"shopfloor-agent-{n}", "tls": tls})
        data["sources"]["mqtt"] += bad
    return change


def test_client_certificates_and_what_a_wrong_one_shows(tmp_path):
    tls = make_tls(tmp_path / "pki", clients=("shopfloor-agent", "line-gateway"))
    other_ca = make_tls(tmp_path / "other-pki")[0]
    pki = tmp_path / "pki"
    with Broker(port=free_port(), data_dir=tmp_path / "broker", tls=tls, require_certificate=True,
                acl_file=ROOT / "deploy" / "mosquitto" / "acl") as broker:
        system = System(tmp_path, broker, mtls_config(pki, other_ca))
        try:
            agent = system.agent()
            wait_until(lambda: system.health()["sources"]["line-bus"]["connected"], 20, "the mutual TLS connection")
            # a device with its own certificate (CN=line-gateway: its user name for the ACL) reaches the agent
            device = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="gateway", protocol=mqtt.MQTTv5)
            device.tls_set(ca_certs=str(tls[0]), certfile=str(pki / "line-gateway.pem"),
                           keyfile=str(pki / "line-gateway.key"))
            device.connect("127.0.0.1", broker.port)
            device.loop_start()
            device.publish("line/line-1/material/resin-pp/level", json.dumps({"level": 77.0}),
                           qos=1).wait_for_publish(10)
            device.disconnect()
            device.loop_stop()
            wait_until(lambda: system.sql("SELECT level FROM material_level") == [(77.0,)], 20, "the device's level")

            def errors():
                sources = system.health()["sources"]
                return {s: sources[s]["last_error"] for s in ("line-bus-2", "line-bus-3", "line-bus-4")}

            shown = wait_until(lambda: all((e := errors()).values()) and e, 20, "the three refusals on /healthz")
            where = f"127.0.0.1:{broker.port}"
            assert shown["line-bus-2"] == (
                f"TLS: the broker at {where} refused the connection (TLSV13_ALERT_CERTIFICATE_REQUIRED): it asks "
                "for a client certificate; set tls.cert_file and tls.key_file")
            assert shown["line-bus-3"].startswith(f"TLS: the broker's certificate at {where} is not trusted (")
            assert shown["line-bus-3"].endswith(f"): tls.ca_file ({other_ca}) must hold the CA that signed it, and "
                                                "the URL's host must be named in it")
            assert shown["line-bus-4"] == f"TLS: tls.ca_file {pki / 'no-such-ca.pem'} does not exist or is not a file"
            health = system.health()
            assert health["sources"]["line-bus"]["connected"] and not health["sources"]["line-bus"]["last_error"]
            assert not any(health["sources"][s]["connected"] for s in shown)
            log = agent.log()
            for source, error in shown.items():
                assert f"MQTT source {source} (" in log and error in log
        finally:
            system.close()


@pytest.mark.parametrize(("files", "error"), [
    ({"ca_file": "junk.pem"}, "TLS: tls.ca_file {tmp}/junk.pem holds no PEM certificate"),
    ({"ca_file": "ca.pem", "cert_file": "server.pem", "key_file": "other/server.key"},
     "TLS: tls.key_file {tmp}/other/server.key is not the private key of tls.cert_file {tmp}/server.pem"),
    ({"ca_file": "ca.pem", "key_file": "server.key"},
     "TLS: tls.key_file is set without tls.cert_file (the client certificate it belongs to)"),
    ({"cert_file": "nowhere.pem", "key_file": "server.key"},
     "TLS: tls.cert_file {tmp}/nowhere.pem does not exist or is not a file"),
])
def test_tls_files_that_cannot_be_loaded_are_named_and_never_connect(tmp_path, files, error):
    from agent.config import MqttTls
    from agent.mqtt_client import ConnectFailed, make_client

    make_tls(tmp_path)
    make_tls(tmp_path / "other")
    (tmp_path / "junk.pem").write_text("not a certificate")
    tls = MqttTls(**{key: tmp_path / name for key, name in files.items()})
    client, host, port = make_client("t", "mqtts://127.0.0.1:1", "5", None, None, tls)
    assert client.setup_error == error.format(tmp=tmp_path)
    with pytest.raises(ConnectFailed):  # nothing goes out, not even in the clear
        client.connect(host, port)
    assert client.connect_error == client.setup_error
