"""Config checks of a machine's PLC tags: per-machine node ids, product tags."""

import pytest

from agent.config import ConfigError, load, parse_node_id
from agent.core.mapping import Mapper
from tests.test_config_cli import variant

PRESS_1 = 'node_prefix: "nsu=urn:shopfloor:plc-sim;s=line-1.press-1."}'
PRESS_NODES = ["StateCode", "TotalCount", "GoodCount", "RejectCount", "Speed", "Temperature", "Pressure", "AlarmCode"]


def press_1(tmp_path, keys):
    """config/factory.yaml with press-1's `node_prefix: ...}` replaced by `keys}`."""
    return variant(tmp_path, PRESS_1, keys + "}")


def problems(path):
    with pytest.raises(ConfigError) as caught:
        load(path)
    return [(p.path, p.found, p.expected) for p in caught.value.problems]


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("ns=3;i=1042", (3, "i", "1042")), ("i=2258", (0, "i", "2258")),
     ("nsu=urn:vendor:plc;i=7", ("urn:vendor:plc", "i", "7")),
     ("ns=2;s=Line 1;State", (2, "s", "Line 1;State")), ("nsu=http://x/y;s=a;i=1", ("http://x/y", "s", "a;i=1")),
     ("ns=2;g=72962b91-fa75-4ae6-8d28-b404dc7daf63", (2, "g", "72962b91-fa75-4ae6-8d28-b404dc7daf63")),
     ("ns=2;b=M/RbKBsRVkePCePcx24oRA==", (2, "b", "M/RbKBsRVkePCePcx24oRA=="))],
)
def test_every_node_id_form_is_read(text, parsed):
    assert parse_node_id(text) == parsed


def test_node_ids_name_a_machines_tags_instead_of_the_prefix(tmp_path):
    cfg = load(press_1(tmp_path, 'node_prefix: "ns=4;s=P1.", node_ids: {StateCode: "ns=3;i=1042", '
                                 'GoodCount: "nsu=urn:vendor:plc;g=72962b91-fa75-4ae6-8d28-b404dc7daf63", '
                                 'AlarmCode: "ns=3;b=M/RbKBsRVkePCePcx24oRA=="}'))
    nodes = {b.spec.node: b.node_id for b in Mapper(cfg.mapping_plan()).bindings if b.machine == "press-1"}
    assert nodes["StateCode"] == "ns=3;i=1042"
    assert nodes["GoodCount"] == "nsu=urn:vendor:plc;g=72962b91-fa75-4ae6-8d28-b404dc7daf63"
    assert nodes["AlarmCode"] == "ns=3;b=M/RbKBsRVkePCePcx24oRA=="
    assert nodes["TotalCount"] == "ns=4;s=P1.TotalCount"  # the others keep prefix + node
    # press-2, of the same machine type, is untouched
    assert {b.node_id for b in Mapper(cfg.mapping_plan()).bindings if b.machine == "press-2" and b.spec.node == "StateCode"} == {
        "nsu=urn:shopfloor:plc-sim;s=line-1.press-2.StateCode"}


def test_a_machine_with_every_tag_in_node_ids_needs_no_prefix(tmp_path):
    ids = ", ".join(f'{node}: "ns=3;i={1040 + i}"' for i, node in enumerate(PRESS_NODES))
    cfg = load(press_1(tmp_path, "node_ids: {" + ids + "}"))
    assert sorted(b.node_id for b in Mapper(cfg.mapping_plan()).bindings if b.machine == "press-1") == [
        f"ns=3;i={1040 + i}" for i in range(8)]


BAD_ID = "lines[0].machines[0].node_ids.StateCode"


@pytest.mark.parametrize(
    ("node_id", "expected"),
    [("ns=3;x=1042", "an OPC UA NodeId: ns=<index>; or nsu=<namespace URI>; then i=<number>, s=<text>, g=<GUID> "
                     "or b=<base64> (e.g. ns=3;i=1042)"),
     ("3;i=1042", "an OPC UA NodeId"),
     ("ns=3;i=-1", "a whole number from 0 to 4294967295 after i="),
     ("ns=3;i=4294967296", "a whole number from 0 to 4294967295 after i="),
     ("ns=3;i=١٢", "a whole number from 0 to 4294967295 after i="),
     ("ns=70000;i=1", "a namespace index from 0 to 65535 after ns="),
     ("ns=two;i=1", "a namespace index from 0 to 65535 after ns="),
     ("nsu=;i=1", "a namespace URI after nsu="),
     ("ns=2;s=", "a name after s="),
     ("ns=2;g=72962b91-fa75-4ae6-8d28", "a GUID like 72962b91-fa75-4ae6-8d28-b404dc7daf63 after g="),
     ("ns=2;b=not base64!", "bytes in base64"),
     ("ns=2;b=", "bytes in base64")],
)
def test_a_bad_node_id_names_its_key_and_the_forms(tmp_path, node_id, expected):
    path = press_1(tmp_path, PRESS_1.removesuffix("}") + f", node_ids: {{StateCode: {node_id!r}}}")
    ((where, found, wanted),) = problems(path)
    assert (where, found) == (BAD_ID, repr(node_id)) and wanted.startswith(expected)


def test_node_id_mistakes_in_the_command_line_message(tmp_path, capsys):
    from shopfloor.cli import main

    path = press_1(tmp_path, PRESS_1.removesuffix("}") + ', node_ids: {StateCode: "ns=3;i=x"}')
    with pytest.raises(SystemExit) as exited:
        main(["check-config", str(path)])
    assert exited.value.code == 2
    err = capsys.readouterr().err.replace(str(tmp_path) + "/", "")
    line = path.read_text(encoding="utf-8").splitlines().index("         " + PRESS_1.removesuffix("}")
                                                               + ', node_ids: {StateCode: "ns=3;i=x"}}') + 1
    assert (f"factory.yaml:{line}: lines[0].machines[0].node_ids.StateCode\n  found:    'ns=3;i=x'\n"
            "  expected: a whole number from 0 to 4294967295 after i=") in err


@pytest.mark.parametrize(
    ("keys", "expected"),
    [(PRESS_1.removesuffix("}") + ', node_ids: {Statecode: "ns=3;i=1"}',
      [("lines[0].machines[0].node_ids.Statecode", "'Statecode'",
        "the node of a tag of machine type press: " + ", ".join(PRESS_NODES))]),
     ('node_ids: {StateCode: "ns=3;i=1"}',
      [("lines[0].machines[0].node_prefix", "'nothing (key missing)'",
        "a prefix for the tags' nodes (e.g. nsu=urn:vendor:plc;s=line-1.press-1.), or a full NodeId in node_ids "
        "for " + ", ".join(PRESS_NODES[1:]))]),
     ('node_prefix: "ns=2;x=P1."',
      [("lines[0].machines[0].node_prefix", "'ns=2;x=P1.'",
        "an OPC UA NodeId: ns=<index>; or nsu=<namespace URI>; then i=<number>, s=<text>, g=<GUID> or "
        "b=<base64> (e.g. ns=3;i=1042), once a tag's node is appended (here ns=2;x=P1.StateCode)")])],
)
def test_every_tag_needs_a_node_id(tmp_path, keys, expected):
    assert problems(press_1(tmp_path, keys)) == expected


# --- product tags ---

PRESS_ALARM = "      - {node: AlarmCode, signal: alarm}\n  cnc:"


def press_tag(tmp_path, tag):
    """config/factory.yaml with `tag` (a flow mapping) added to the press machine type, as its tags[8]."""
    return variant(tmp_path, PRESS_ALARM, f"      - {{node: AlarmCode, signal: alarm}}\n      - {tag}\n  cnc:")


def test_a_product_tag_needs_no_name_and_its_codes_name_skus(tmp_path):
    cfg = load(press_tag(tmp_path, "{node: Product, signal: product, codes: {1: KT-100, 2: KT-200}}"))
    (tag,) = [t for t in cfg.machine_types["press"].tags if t.signal == "product"]
    assert tag.codes == {1: "KT-100", 2: "KT-200"} and tag.name is None
    load(press_tag(tmp_path, "{node: Sku, signal: product}"))  # the SKU as text: no codes


@pytest.mark.parametrize(
    ("tag", "expected"),
    [("{node: Product, signal: product, codes: {1: KT-100, 3: KT-999}}",
      [("machine_types.press.tags[8].codes[3]", "'KT-999'", "a SKU of products: FN-300, FN-310, KT-100, KT-200")]),
     ("{node: Product, signal: product, codes: {1: ''}}",
      [("machine_types.press.tags[8].codes[1]", "''", "String should have at least 1 character")]),
     ("{node: Count2, signal: count, counter: good, codes: {1: KT-100}}",
      [("machine_types.press.tags", "'2 tags with counter good'",
        "at most one count tag per counter (total, good, reject)"),
       ("machine_types.press.tags[8].codes", "{1: 'KT-100'}", "nothing: codes is for a tag with signal: product")]),
     ("{node: Product, signal: product}\n      - {node: Sku, signal: product}",
      [("machine_types.press.tags", "'several product tags'", "at most one tag with signal: product")])],
)
def test_product_tag_mistakes(tmp_path, tag, expected):
    assert problems(press_tag(tmp_path, tag)) == expected
