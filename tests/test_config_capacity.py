"""Config checks of the capacity section: calendar (holidays, maintenance), stock, feed tokens."""

from datetime import date, datetime

import pytest

from agent.config import load
from tests.conftest import FACTORY_YAML
from tests.test_config_kpi import problems

ANCHOR = "\nagent:\n"
SHA = "a" * 64


def with_capacity(tmp_path, body):
    text = FACTORY_YAML.read_text(encoding="utf-8")
    path = tmp_path / "factory.yaml"
    path.write_text(text.replace(ANCHOR, "\ncapacity:\n" + body + ANCHOR, 1), encoding="utf-8")
    return path


def test_a_full_capacity_section_loads(tmp_path):
    cfg = load(with_capacity(tmp_path, "  horizon_days: 7\n  bucket: day\n  holidays: [2026-12-25]\n"
                                       "  maintenance:\n    - {line: line-1, start: 2026-12-05 08:00, end: 2026-12-05 12:00}\n"
                                       "  finished_goods: {KT-100: 300}\n"
                                       f"  tokens:\n    - {{name: platform, sha256: {SHA}}}\n"))
    assert (cfg.capacity.horizon_days, cfg.capacity.bucket, cfg.capacity.holidays) == (7, "day", [date(2026, 12, 25)])
    assert cfg.capacity.maintenance[0].start == datetime(2026, 12, 5, 8, 0)
    assert load(FACTORY_YAML).capacity.trailing_days == 28  # the defaults


@pytest.mark.parametrize(("body", "path", "expected"), [
    ("  maintenance:\n    - {line: line-9, start: 2026-12-05 08:00, end: 2026-12-05 12:00}\n",
     "capacity.maintenance[0].line", "a line id: line-1, line-2"),
    ("  maintenance:\n    - {line: line-1, start: 2026-12-05 08:00, end: 2026-12-05 07:00}\n",
     "capacity.maintenance[0]", "end after start"),
    ("  finished_goods: {XX-1: 3}\n", "capacity.finished_goods.XX-1", "a SKU of the products: FN-300, FN-310, "
                                                                     "KT-100, KT-200"),
    ("  tokens:\n    - {name: platform, sha256: not-a-hash}\n", "capacity.tokens[0].sha256", "64"),
    (f"  tokens:\n    - {{name: a, sha256: {SHA}}}\n    - {{name: a, sha256: {SHA}}}\n", "capacity.tokens[1].name",
     "a token name not used before"),
    ("  horizon_days: 0\n", "capacity.horizon_days", "greater than or equal to 1"),
    ("  holidays: [christmas]\n", "capacity.holidays[0]", "date"),
])
def test_a_bad_capacity_section_names_the_key(tmp_path, body, path, expected):
    found = problems(with_capacity(tmp_path, body))
    assert any(p == path and expected in e for p, _, e in found), found
