"""The pure parts of `shopfloor browse`: NodeId text, names from browse paths, the YAML it prints."""

import uuid

import pytest
import yaml
from asyncua import ua

from agent.config import parse_node_id
from shopfloor.browse import FoundTag, collect_yaml, node_id_text, tag_name, unique_names

NAMESPACES = ["http://opcfoundation.org/UA/", "urn:vendor:server", "urn:vendor:plc"]
GUID = "72962b91-fa75-4ae6-8d28-b404dc7daf63"


@pytest.mark.parametrize(
    ("node_id", "text"),
    [(ua.NodeId(2258, 0), "i=2258"),
     (ua.NodeId(1042, 2), "nsu=urn:vendor:plc;i=1042"),
     (ua.NodeId("Line 1.Press;1", 2), "nsu=urn:vendor:plc;s=Line 1.Press;1"),
     (ua.NodeId(uuid.UUID(GUID), 2, ua.NodeIdType.Guid), f"nsu=urn:vendor:plc;g={GUID}"),
     (ua.NodeId(b"Reject", 2, ua.NodeIdType.ByteString), "nsu=urn:vendor:plc;b=UmVqZWN0"),
     (ua.NodeId(7, 9), "ns=9;i=7")],  # an index the namespace array does not have stays an index
)
def test_node_ids_are_written_as_collect_addresses(node_id, text):
    assert node_id_text(node_id, NAMESPACES) == text
    parse_node_id(text)  # and the config reads them back


@pytest.mark.parametrize(
    ("path", "name"),
    [(("Press1", "Temperature"), "Press1.Temperature"),
     ((" Press 1 ", "Temp\nC"), "Press 1.Temp C"),
     (("Hall", "Temp/RH", "a+b#"), "Hall.Temp_RH.a_b_"),
     (("Dir\\",), "Dir"),
     (("",), "_")],
)
def test_names_from_browse_paths_are_valid_collect_names(path, name):
    assert tag_name(path) == name


def test_a_repeated_name_gets_a_suffix():
    tags = [FoundTag("P.T", "i=1", None, "Double"), FoundTag("P.T", "i=2", None, "Double"),
            FoundTag("P.S", "i=3", None, "Double"), FoundTag("P.T", "i=4", None, "Double")]
    assert [t.name for t in unique_names(tags)] == ["P.T", "P.T~2", "P.S", "P.T~3"]


def test_the_yaml_reads_back_as_the_tags_found():
    tags = [FoundTag('Oven "A".Temp', 'ns=2;s=Oven "A": T', "°C", "Double"),
            FoundTag("Oven.Count", "ns=2;i=7", None, "UInt32")]
    left_out = [FoundTag("Oven.Recipe", "ns=2;i=8", None, "String")]
    text = collect_yaml("plc-1", tags, left_out, "shopfloor browse ...\n2 variables")
    assert text.startswith("# shopfloor browse ...\n# 2 variables\ncollect:\n")
    assert yaml.safe_load(text) == {"collect": {"plc-1": [
        {"name": 'Oven "A".Temp', "address": 'ns=2;s=Oven "A": T', "unit": "°C"},
        {"name": "Oven.Count", "address": "ns=2;i=7"}]}}
    assert text.endswith("# left out: 1 variables whose values are not single numbers\n"
                         "#   Oven.Recipe (String): ns=2;i=8\n")
    assert yaml.safe_load(collect_yaml("plc-1", [], [], "none")) == {"collect": {"plc-1": []}}
