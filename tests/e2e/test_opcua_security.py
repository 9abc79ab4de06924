"""OPC UA Basic256Sha256 SignAndEncrypt with username/password, and server-certificate trust."""

from __future__ import annotations

import time

import pytest
from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.server.uaprocessor import UaProcessor

from tests.e2e.conftest import wait_until
from tests.e2e.opcua_server import ServerThread, refusing_open_secure_channel, serve_secured

SIM_ENV = {"SIM_PW": "s3cret-pw"}


def secure(trust: bool, password_var: str = "PLC_PW"):
    def change(data):
        source = data["sources"]["opcua"][0]
        source["username"] = "operator"
        source["password"] = "${" + password_var + "}"
        source["security"] = {"policy": "Basic256Sha256", "mode": "SignAndEncrypt",
                              "trusted_server_certificates": []}
        if trust:
            cert = data["agent"]["data_dir"].rsplit("/", 1)[0] + "/plc-pki/cert.der"
            source["security"]["trusted_server_certificates"] = [cert]
    return change


def start_secure_plc(system):
    return system.plc("--security", "secure", "--username", "operator", "--password-env", "SIM_PW", speed=60,
                      env=SIM_ENV)


def test_sign_and_encrypt_with_username_password(make_system):
    system = make_system(secure(trust=True))
    plc = start_secure_plc(system)
    assert "PLC simulator certificate" in plc.log()
    system.agent(env={"PLC_PW": "s3cret-pw"})
    wait_until(lambda: system.health()["sources"]["plc-1"]["connected"], 20, "a secure connection")
    wait_until(lambda: len(system.sql("SELECT DISTINCT machine FROM machine_state")) == 6, 20, "machine states")
    assert (system.data_dir / "pki" / "agent-cert.der").exists()
    cert_before = (system.data_dir / "pki" / "agent-cert.der").read_bytes()
    # the client certificate is generated once and kept across restarts
    system.procs[-1].stop()
    system.agent(env={"PLC_PW": "s3cret-pw"}, name="agent-2")
    wait_until(lambda: system.health()["sources"]["plc-1"]["connected"], 20, "a secure connection again")
    assert (system.data_dir / "pki" / "agent-cert.der").read_bytes() == cert_before


def test_untrusted_server_certificate_is_refused_with_a_clear_message(make_system):
    system = make_system(secure(trust=False))
    start_secure_plc(system)
    agent = system.agent(env={"PLC_PW": "s3cret-pw"})
    health = wait_until(lambda: (h := system.health())["sources"]["plc-1"]["last_error"] and h, 20,
                        "the refusal to show on /healthz")
    error = health["sources"]["plc-1"]["last_error"]
    assert "is not trusted" in error and "trusted_server_certificates" in error
    saved = list((system.data_dir / "pki" / "rejected").glob("*.der"))
    assert len(saved) == 1 and str(saved[0]) in error
    assert "is not trusted" in agent.log() and "config/README.md#trusting-certificates" in error
    time.sleep(2)
    assert system.sql("SELECT COUNT(*) FROM machine_count") in ([], [(0,)])  # not one value read
    assert health["sources"]["plc-1"]["connected"] is False and system.http("/healthz")[0] == 503
    # every attempt saves the certificate again: wait for two more, then the failure is still one line
    attempts = {saved[0].stat().st_mtime_ns}
    wait_until(lambda: attempts.add(saved[0].stat().st_mtime_ns) or len(attempts) >= 3, 40, "two more attempts")
    (line,) = one_line_per_failure(agent.log())
    assert system.endpoint in line and line.endswith(error) and "Traceback" not in agent.log()


def test_wrong_password_is_refused(make_system):
    system = make_system(secure(trust=True))
    start_secure_plc(system)
    system.agent(env={"PLC_PW": "wrong"})
    health = wait_until(lambda: (h := system.health())["sources"]["plc-1"]["last_error"] and h, 20,
                        "the refusal to show on /healthz")
    assert "BadUserAccessDenied" in health["sources"]["plc-1"]["last_error"]
    assert health["sources"]["plc-1"]["connected"] is False


# --- a server that refuses the agent's client certificate -----------------------------------------------------

TRUST_SECTION = "config/README.md#trusting-certificates"


def refusing_server(tmp_path, where, attempts):
    """A secured asyncua server that trusts no client certificate: it refuses when the secure channel opens
    (`channel`, as many PLCs do) or at CreateSession (`session`, asyncua's own trust list check)."""
    async def setup(server):
        await serve_secured(server, tmp_path / "server-pki")
        if where == "session":
            async def validate(certificate, application):
                attempts.append(certificate)
                raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)
            server.set_certificate_validator(validate)
    return ServerThread(setup)


def trust_test_server(server, tmp_path):
    def change(data):
        source = data["sources"]["opcua"][0]
        source["endpoint"] = server.endpoint
        source["security"] = {"policy": "Basic256Sha256", "mode": "SignAndEncrypt",
                              "trusted_server_certificates": [str(tmp_path / "server-pki" / "cert.der")]}
    return change


@pytest.mark.parametrize("where", ["channel", "session"])
def test_refused_client_certificate_is_one_line_naming_the_server_and_the_trust_step(make_system, tmp_path,
                                                                                   monkeypatch, where):
    attempts: list = []
    if where == "channel":
        monkeypatch.setattr(UaProcessor, "open_secure_channel",
                            refusing_open_secure_channel(ua.StatusCodes.BadCertificateUntrusted, attempts))
    with refusing_server(tmp_path, where, attempts) as server:
        system = make_system(trust_test_server(server, tmp_path))
        agent = system.agent()
        wait_until(lambda: len(attempts) >= 3, 40, "three connection attempts")
        error = system.health()["sources"]["plc-1"]["last_error"]
        log = agent.log()
    assert "Traceback" not in log and "AssertionError" not in log and "Got error status" not in log, log[-3000:]
    (line,) = one_line_per_failure(log)
    assert server.endpoint in line and line.endswith(error)
    assert "the agent's client certificate" in error and TRUST_SECTION in error
    assert str(system.data_dir / "pki" / "agent-cert.der") in error
    if where == "session":  # asyncua loses the status a server answers OpenSecureChannel with
        assert "BadCertificateUntrusted" in error


def one_line_per_failure(log):
    lines = [ln for ln in log.splitlines() if "OPC UA source plc-1" in ln and "is down" in ln]
    assert len(lines) == 1, lines  # one line for the failure, not one per retry
    return lines
