"""OPC UA Basic256Sha256 SignAndEncrypt with username/password, and server-certificate trust."""

from __future__ import annotations

import time

from tests.e2e.conftest import wait_until

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
    saved = list((system.data_dir / "pki").glob("untrusted-*.der"))
    assert len(saved) == 1 and str(saved[0]) in error
    assert "is not trusted" in agent.log()
    time.sleep(2)
    assert system.sql("SELECT COUNT(*) FROM machine_count") in ([], [(0,)])  # not one value read
    assert health["sources"]["plc-1"]["connected"] is False and system.http("/healthz")[0] == 503


def test_wrong_password_is_refused(make_system):
    system = make_system(secure(trust=True))
    start_secure_plc(system)
    system.agent(env={"PLC_PW": "wrong"})
    health = wait_until(lambda: (h := system.health())["sources"]["plc-1"]["last_error"] and h, 20,
                        "the refusal to show on /healthz")
    assert "BadUserAccessDenied" in health["sources"]["plc-1"]["last_error"]
    assert health["sources"]["plc-1"]["connected"] is False
