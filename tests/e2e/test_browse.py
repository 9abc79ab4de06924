"""`shopfloor browse`: an OPC UA server's variables under a node as a `collect:` section, from the real PLC
simulator and from a server with engineering units, numeric NodeIds and values that are not numbers; the output
is a config section the loader takes as it is; a wrong endpoint or node is one line and exit 2 or 3."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from asyncua import ua

from agent.config import load
from simulators.broker import free_port
from tests.conftest import ROOT
from tests.e2e.conftest import SIM_NS
from tests.e2e.opcua_server import ServerThread

VENDOR_NS = "urn:shopfloor:test-vendor-plc"


def browse(*args):
    return subprocess.run([sys.executable, "-m", "shopfloor", "browse", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def tags_of(stdout, source_id="plc-1"):
    return yaml.safe_load(stdout)["collect"][source_id]


def loads_as_config(tmp_path, stdout, endpoint, source_id="plc-1"):
    """The browse output pasted under a minimal config is a valid config."""
    path = tmp_path / "browsed.yaml"
    path.write_text("site: {id: plant-a, name: Plant A, timezone: Europe/Berlin}\n"
                    f'sources:\n  opcua: [{{id: {source_id}, endpoint: "{endpoint}"}}]\n' + stdout, encoding="utf-8")
    return load(path)


def test_browsing_a_line_of_the_plc_simulator(make_system, tmp_path):
    system = make_system()
    system.plc()
    done = browse(system.endpoint, "--under", f"nsu={SIM_NS};s=line-1", "--source-id", "press-plc")
    assert done.returncode == 0, done.stderr
    tags = tags_of(done.stdout, "press-plc")
    by_name = {t["name"]: t["address"] for t in tags}
    assert by_name["press-1.Temperature"] == f"nsu={SIM_NS};s=line-1.press-1.Temperature"
    assert by_name["packer-1.TotalCount"] == f"nsu={SIM_NS};s=line-1.packer-1.TotalCount"
    assert by_name["press-2.Truth.Total"] == f"nsu={SIM_NS};s=line-1.press-2.Truth.Total"  # a folder deeper
    # depth first, in the server's order: a machine's tags together
    names = [t["name"] for t in tags]
    assert names.index("press-1.Truth.Total") < names.index("press-2.StateCode")
    assert not any(name.startswith("line-2") or name.startswith("cnc") for name in names)  # only under line-1
    # text variables are left out, and listed as comments
    assert "press-1.Force" not in by_name and "packer-1.PackMLState" not in by_name
    assert f"#   packer-1.PackMLState (String): nsu={SIM_NS};s=line-1.packer-1.PackMLState" in done.stdout
    assert done.stderr.splitlines() == [f"shopfloor browse: {len(tags)} variables found, 7 left out (not single numbers)"]
    cfg = loads_as_config(tmp_path, done.stdout, system.endpoint, "press-plc")
    assert len(cfg.mapping_plan().bindings) == len(tags)

    # one level down: the machines' own tags, not their Truth folders
    shallow = tags_of(browse(system.endpoint, "--under", f"nsu={SIM_NS};s=line-1", "--depth", "2").stdout)
    assert "press-1.Temperature" in {t["name"] for t in shallow}
    assert not any(".Truth." in t["name"] for t in shallow)


def vendor_plc():
    """Objects/Boiler1 (numeric NodeIds) with a temperature in degC, a flow without a unit, a running flag, a
    status text and a recipe array; Boiler1/Pump/Speed one level deeper."""
    async def setup(server):
        ns = await server.register_namespace(VENDOR_NS)
        boiler = await server.nodes.objects.add_object(ua.NodeId(1000, ns), "Boiler1")
        temperature = await boiler.add_variable(ua.NodeId(1001, ns), "Temperature", 61.5, ua.VariantType.Double)
        await temperature.add_property(ua.NodeId(1101, ns), ua.QualifiedName("EngineeringUnits", 0),
                                       ua.EUInformation(NamespaceUri="http://www.opcfoundation.org/UA/units/un/cefact",
                                                        UnitId=4408652, DisplayName=ua.LocalizedText("°C")))
        await boiler.add_variable(ua.NodeId("Boiler1.Flow", ns), "Flow", 3, ua.VariantType.UInt16)
        await boiler.add_variable(ua.NodeId(1003, ns), "Running", True, ua.VariantType.Boolean)
        await boiler.add_variable(ua.NodeId(1004, ns), "Status", "ok", ua.VariantType.String)
        await boiler.add_variable(ua.NodeId(1005, ns), "Recipe", [1.0, 2.0], ua.VariantType.Double)
        pump = await boiler.add_object(ua.NodeId(1010, ns), "Pump")
        await pump.add_variable(ua.NodeId(1011, ns), "Speed", 1450.0, ua.VariantType.Float)
    return ServerThread(setup)


def test_units_numeric_node_ids_and_what_is_left_out(tmp_path):
    with vendor_plc() as plc:
        done = browse(plc.endpoint, "--under", f"nsu={VENDOR_NS};i=1000")
        assert done.returncode == 0, done.stderr
        assert tags_of(done.stdout) == [
            {"name": "Temperature", "address": f"nsu={VENDOR_NS};i=1001", "unit": "°C"},
            {"name": "Flow", "address": f"nsu={VENDOR_NS};s=Boiler1.Flow"},
            {"name": "Running", "address": f"nsu={VENDOR_NS};i=1003"},
            {"name": "Pump.Speed", "address": f"nsu={VENDOR_NS};i=1011"}]
        assert f"#   Status (String): nsu={VENDOR_NS};i=1004" in done.stdout
        assert f"#   Recipe (Double): nsu={VENDOR_NS};i=1005" in done.stdout  # an array is not one value
        loads_as_config(tmp_path, done.stdout, plc.endpoint)
        # from the Objects folder (the default): the server's own nodes are not listed
        everything = tags_of(browse(plc.endpoint).stdout)
        assert [t["name"] for t in everything] == ["Boiler1.Temperature", "Boiler1.Flow", "Boiler1.Running",
                                                   "Boiler1.Pump.Speed"]


def test_problems_are_one_line_with_exit_2_or_3():
    port = free_port()
    nobody = f"opc.tcp://127.0.0.1:{port}/none"
    done = browse(nobody)
    assert (done.returncode, done.stdout) == (3, "")
    assert done.stderr.splitlines() == [f"shopfloor browse: cannot reach {nobody}: Connect call failed ('127.0.0.1', "
                                        f"{port})"]
    with vendor_plc() as plc:
        cases = [
            (["--under", "ns=2;i=999"], 3,
             "shopfloor browse: --under ns=2;i=999: no such node on this server (BadNodeIdUnknown)"),
            (["--under", "nsu=urn:nobody;i=1"], 3,
             "shopfloor browse: --under nsu=urn:nobody;i=1: namespace urn:nobody is not on this server (it has: "
             f"urn:shopfloor:test-server, {VENDOR_NS})"),
            (["--under", "ns=2;x=1"], 2,
             "shopfloor browse: --under ns=2;x=1: expected an OPC UA NodeId: ns=<index>; or nsu=<namespace URI>; "
             "then i=<number>, s=<text>, g=<GUID> or b=<base64> (e.g. ns=3;i=1042)"),
            (["--source-id", "PLC 1"], 2,
             "shopfloor browse: --source-id PLC 1: expected a short id of lower-case letters, digits, '-' or '_'"),
            (["--depth", "0"], 2, "shopfloor browse: --depth 0: expected 1 or more"),
        ]
        for args, code, line in cases:
            done = browse(plc.endpoint, *args)
            assert (done.returncode, done.stdout, done.stderr.splitlines()) == (code, "", [line]), args
    done = browse("http://127.0.0.1:4840")
    assert (done.returncode, done.stderr.splitlines()) == (
        2, ["shopfloor browse: http://127.0.0.1:4840: expected an endpoint opc.tcp://host:port[/path]"])


@pytest.mark.parametrize("depth", ["x", "1.5"])
def test_a_depth_that_is_not_a_number_is_an_argument_error(depth):
    done = browse("opc.tcp://127.0.0.1:4840", "--depth", depth)
    assert done.returncode == 2 and "--depth: invalid int value" in done.stderr


def test_a_thousand_tags_are_browsed_and_collected_as_one_config(make_system, tmp_path):
    system = make_system()
    system.plc("--bench-tags", "1000", "--bench-only")
    done = browse(system.endpoint, "--under", f"nsu={SIM_NS};s=bench")
    assert done.returncode == 0, done.stderr
    tags = tags_of(done.stdout)
    assert len(tags) == 1010  # ten machines of a State and t00..t99, more than one Browse request per level
    assert tags[0] == {"name": "m000.State", "address": f"nsu={SIM_NS};s=bench.m000.State"}
    assert tags[-1] == {"name": "m009.t99", "address": f"nsu={SIM_NS};s=bench.m009.t99"}
    assert len({t["name"] for t in tags}) == 1010
    cfg = loads_as_config(tmp_path, done.stdout, system.endpoint)
    assert len(cfg.mapping_plan().bindings) == 1010
