"""queries.py is the only code of the dashboard that reads the historian: the boards (board.py), their pages and
their API ask it, so every board reads SQLite and InfluxDB the same way."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import dashboard

PACKAGE = Path(dashboard.__file__).parent
READS = {"state_intervals", "count_sums", "last_values", "series", "events"}
# Not yet moved into queries.py: the capacity model's order reads and the push's check of machines down.
NOT_YET = {"c2m.py", "push.py"}


def historian_reads(source: str) -> list[str]:
    """Calls of a historian read method on something named like a historian, as `name.method` at `line`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in READS:
            receiver = ast.unparse(node.func.value)
            if "historian" in receiver.lower():
                found.append(f"{receiver}.{node.func.attr} at line {node.lineno}")
    return found


@pytest.mark.parametrize("path", sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")
                                        if p.name != "queries.py" and p.name not in NOT_YET))
def test_only_queries_reads_the_historian(path):
    assert historian_reads((PACKAGE / path).read_text(encoding="utf-8")) == []


def test_a_direct_read_is_found():
    source = "def stops(historian, ext):\n    historian.state_intervals(0, 1)\n    ext['historian'].events('x', 0, 1)\n"
    assert historian_reads(source) == ["historian.state_intervals at line 2", "ext['historian'].events at line 3"]
