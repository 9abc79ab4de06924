"""A machine whose tags have numeric (and GUID, ByteString) NodeIds, read by the agent from a real asyncua
server: per-machine node_ids instead of node_prefix + node. Its PLC also reports the product it makes."""

from __future__ import annotations

import uuid

from asyncua import ua

from tests.e2e.conftest import wait_until
from tests.e2e.opcua_server import ServerThread

VENDOR_NS = "urn:shopfloor:test-vendor-plc"
GUID = "72962b91-fa75-4ae6-8d28-b404dc7daf63"
# press tag node -> (NodeId as the config gives it, as the server serves it, type, first value)
TAGS = {
    "StateCode": ("ns=2;i=1042", ua.NodeId(1042, 2), ua.VariantType.Int32, 1),
    "TotalCount": (f"nsu={VENDOR_NS};i=1043", ua.NodeId(1043, 2), ua.VariantType.UInt32, 7),
    "GoodCount": (f"ns=2;g={GUID}", ua.NodeId(uuid.UUID(GUID), 2, ua.NodeIdType.Guid), ua.VariantType.UInt32, 5),
    "RejectCount": ("ns=2;b=UmVqZWN0", ua.NodeId(b"Reject", 2, ua.NodeIdType.ByteString), ua.VariantType.UInt32, 2),
    "Speed": ("ns=2;i=1044", ua.NodeId(1044, 2), ua.VariantType.Double, 12.0),
    "Temperature": ("ns=2;i=1045", ua.NodeId(1045, 2), ua.VariantType.Double, 61.5),
    "Pressure": ("ns=2;i=1046", ua.NodeId(1046, 2), ua.VariantType.Double, 120.0),
    "AlarmCode": ("ns=2;i=1047", ua.NodeId(1047, 2), ua.VariantType.Int32, 0),
    "ProductCode": ("ns=2;i=1048", ua.NodeId(1048, 2), ua.VariantType.Int32, 1),
}


def numeric_plc():
    async def setup(server):
        assert await server.register_namespace(VENDOR_NS) == 2
        plc = await server.nodes.objects.add_object(ua.NodeId(1000, 2), "Press1")
        for node, (_, node_id, vtype, value) in TAGS.items():
            await plc.add_variable(node_id, node, ua.Variant(value, vtype))
    return ServerThread(setup)


def only_press_1_on(endpoint):
    def change(data):
        data["sources"]["opcua"][0]["endpoint"] = endpoint
        line_1, line_2 = data["lines"]
        press_1 = next(m for m in line_1["machines"] if m["id"] == "press-1")
        del press_1["node_prefix"]
        press_1["node_ids"] = {node: text for node, (text, *_) in TAGS.items()}
        line_1["machines"], line_2["machines"] = [press_1], []
        data["machine_types"]["press"]["tags"].append(
            {"node": "ProductCode", "signal": "product", "codes": {1: "KT-100", 2: "KT-200"}})
    return change


def test_a_machine_read_by_numeric_node_ids(make_system):
    with numeric_plc() as plc:
        system = make_system(only_press_1_on(plc.endpoint))
        system.agent()
        wait_until(lambda: system.sql("SELECT state, raw FROM machine_state WHERE machine = 'press-1'")
                   == [("RUNNING", "1")], 20, "press-1 RUNNING from ns=2;i=1042")
        assert system.health()["sources"]["plc-1"]["connected"] is True
        wait_until(lambda: dict(system.sql("SELECT counter, value FROM machine_count_last")) == {
            "total": 7, "good": 5, "reject": 2}, 10, "the counters read from i=, g= and b= NodeIds")
        wait_until(lambda: system.sql("SELECT COUNT(DISTINCT name) FROM process_value")[0][0] == 3, 10,
                   "the process values, the polled one included")
        state = plc.server.get_node(TAGS["StateCode"][1])
        plc.call(state.write_value(ua.DataValue(ua.Variant(3, ua.VariantType.Int32))))
        wait_until(lambda: system.sql("SELECT state FROM machine_state_last WHERE machine = 'press-1'")
                   == [("FAULT",)], 10, "a change of ns=2;i=1042 to arrive")
        product = plc.server.get_node(TAGS["ProductCode"][1])
        plc.call(product.write_value(ua.DataValue(ua.Variant(2, ua.VariantType.Int32))))
        wait_until(lambda: system.sql("SELECT sku, raw FROM machine_product WHERE machine = 'press-1' ORDER BY time")
                   == [("KT-100", "1"), ("KT-200", "2")], 10, "the product codes as SKUs")
