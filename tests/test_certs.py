"""`shopfloor certs`: listing, trusting and rejecting OPC UA server certificates in the agent's store; and the
whole path against a real asyncua PLC with Basic256Sha256: refused, trusted from the command line, connected
without a restart."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest

from shopfloor.cli import main
from simulators.broker import Broker, free_port
from simulators.pki import ensure_self_signed
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> dict[str, Path]:
    """Two server certificates (DER) and the agent's own, made once."""
    tmp = tmp_path_factory.mktemp("certs")
    return {name: ensure_self_signed(tmp / name, f"urn:test:{name}", name).certificate
            for name in ("plc-a", "plc-b", "agent")}


@pytest.fixture
def store(tmp_path, certs) -> Path:
    """A store as the agent leaves it: its own certificate, plc-a refused (new layout), plc-b refused (old)."""
    from agent.sources.opcua.pki import load_der, save_rejected

    pki = tmp_path / "pki"
    pki.mkdir()
    shutil.copy(certs["agent"], pki / "agent-cert.der")
    save_rejected(pki, load_der(certs["plc-a"]))
    shutil.copy(certs["plc-b"], pki / f"untrusted-{thumb(certs['plc-b'])}.der")
    return pki


def thumb(path: Path) -> str:
    from agent.sources.opcua.pki import load_der, thumbprint

    return thumbprint(load_der(path))


def certs_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["certs", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_list_shows_subject_thumbprint_expiry_and_state(capsys, store, certs):
    code, out, _ = certs_cli(capsys, "list", "--pki", str(store))
    assert code == 0
    rows = {line.split()[1]: line.split()[0] for line in out.splitlines()[2:]}
    assert rows == {thumb(certs["agent"]): "own", thumb(certs["plc-a"]): "rejected",
                    thumb(certs["plc-b"]): "rejected"}
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3650)).strftime("%Y-%m-%d")[:4]
    line_a = next(line for line in out.splitlines() if thumb(certs["plc-a"]) in line)
    assert "CN=plc-a" in line_a and f" {expires}-" in line_a and str(store / "rejected") in line_a


def test_trust_moves_a_rejected_certificate_and_reject_moves_it_back(capsys, store, certs):
    a = thumb(certs["plc-a"])
    code, out, _ = certs_cli(capsys, "trust", a[:8].upper(), "--pki", str(store))
    assert code == 0 and out.startswith("trusted O=Shopfloor simulator,CN=plc-a (") and "no restart needed" in out
    assert (store / "trusted" / f"{a}.der").read_bytes() == certs["plc-a"].read_bytes()
    assert not (store / "rejected" / f"{a}.der").exists()
    # the old layout's file is found too, thumbprint written as a server shows it (with colons)
    b = thumb(certs["plc-b"])
    code, out, _ = certs_cli(capsys, "trust", ":".join(b[i:i + 2] for i in range(0, 12, 2)), "--pki", str(store))
    assert code == 0 and (store / "trusted" / f"{b}.der").exists() and not list(store.glob("untrusted-*"))
    from agent.sources.opcua.pki import trusted_thumbprints

    assert trusted_thumbprints(store) == {a, b}
    code, out, _ = certs_cli(capsys, "reject", a[:10], "--pki", str(store))
    assert code == 0 and out.startswith("rejected O=Shopfloor simulator,CN=plc-a (")
    assert (store / "rejected" / f"{a}.der").exists() and trusted_thumbprints(store) == {b}


def test_trust_a_certificate_file(capsys, tmp_path, certs):
    pki = tmp_path / "pki"
    pki.mkdir()
    code, out, _ = certs_cli(capsys, "trust", str(certs["plc-b"]), "--pki", str(pki))
    assert code == 0 and (pki / "trusted" / f"{thumb(certs['plc-b'])}.der").exists()
    code, out, _ = certs_cli(capsys, "trust", str(certs["plc-b"]), "--pki", str(pki))
    assert code == 0 and "is already trusted" in out


@pytest.mark.parametrize(("argv", "message"), [
    (["trust", "zz12"], "'zz12' is not a thumbprint: give at least 6 of its hex digits"),
    (["trust", "abcdef0123"], "no rejected certificate has thumbprint abcdef0123 in"),
    (["reject", "abcdef0123"], "no trusted certificate has thumbprint abcdef0123 in"),
])
def test_bad_thumbprints_say_what_is_wrong_and_move_nothing(capsys, store, argv, message):
    before = sorted(p.relative_to(store) for p in store.rglob("*"))
    code, out, err = certs_cli(capsys, *argv, "--pki", str(store))
    assert code == 1 and message in err and out == ""
    assert sorted(p.relative_to(store) for p in store.rglob("*")) == before


def test_a_certificate_the_config_trusts_is_not_rejected_here(capsys, tmp_path, certs):
    import yaml

    data = yaml.safe_load((ROOT / "config" / "factory.yaml").read_text(encoding="utf-8"))
    data["agent"]["data_dir"] = str(tmp_path / "data")
    data["sources"]["opcua"][0]["security"] = {"policy": "Basic256Sha256", "mode": "Sign",
                                               "trusted_server_certificates": [str(certs["plc-a"])]}
    config = tmp_path / "factory.yaml"
    config.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    code, out, _ = certs_cli(capsys, "list", "--config", str(config))
    assert code == 0 and f"trusted (config plc-1)  {thumb(certs['plc-a'])}" in out
    code, out, err = certs_cli(capsys, "reject", thumb(certs["plc-a"]), "--config", str(config))
    assert code == 1 and "is trusted by the config: sources.opcua[plc-1].security.trusted_server_certificates" in err


def test_trusted_from_the_command_line_the_agent_connects_without_restart(capsys, tmp_path):
    """A real asyncua server with Basic256Sha256 SignAndEncrypt only, serving one variable the agent collects."""
    from asyncua import ua

    from tests.e2e.conftest import System, wait_until
    from tests.e2e.opcua_server import ServerThread, serve_secured

    async def setup(server):
        await serve_secured(server, tmp_path / "server-pki")
        ns = await server.register_namespace("urn:test:certs")
        boiler = await server.nodes.objects.add_object(ns, "Boiler")
        await boiler.add_variable(ua.NodeId("Boiler.T", ns), "T", 61.5)

    with ServerThread(setup) as server, Broker(port=free_port(), data_dir=tmp_path / "broker") as broker:
        def secure(data):
            for line in data["lines"]:
                line["machines"] = []
            data["sources"]["opcua"][0].update(endpoint=server.endpoint,
                                               security={"policy": "Basic256Sha256", "mode": "SignAndEncrypt"})
            data["collect"] = {"plc-1": [{"name": "Boiler.T", "address": "nsu=urn:test:certs;s=Boiler.T"}]}

        system = System(tmp_path, broker, secure)
        try:
            system.agent()
            error = wait_until(lambda: system.health()["sources"]["plc-1"]["last_error"], 20, "the refusal")
            server_thumb = thumb(tmp_path / "server-pki" / "cert.der")
            assert f"run `shopfloor certs trust {server_thumb[:12]}`" in error
            code, listed, _ = certs_cli(capsys, "list", "--config", str(system.config))
            assert code == 0 and any(line.split()[:2] == ["rejected", server_thumb] for line in listed.splitlines())
            code, out, err = certs_cli(capsys, "trust", server_thumb[:12], "--config", str(system.config))
            assert code == 0, err
            wait_until(lambda: system.health()["sources"]["plc-1"]["connected"], 30, "the trusted connection")
        finally:
            system.close()
