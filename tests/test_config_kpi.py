"""Config checks of the kpi section: micro-stop threshold, planned rates, watermark lag."""

import pytest

from agent.config import ConfigError, load
from tests.conftest import FACTORY_YAML

ANCHOR = "\nagent:\n"


def with_kpi(tmp_path, kpi_yaml):
    text = FACTORY_YAML.read_text(encoding="utf-8")
    assert ANCHOR in text
    path = tmp_path / "factory.yaml"
    path.write_text(text.replace(ANCHOR, "\nkpi:\n" + kpi_yaml + ANCHOR, 1), encoding="utf-8")
    return path


def problems(path):
    with pytest.raises(ConfigError) as caught:
        load(path)
    return [(p.path, p.found, p.expected) for p in caught.value.problems]


def test_planned_rates_the_most_specific_entry_wins(tmp_path):
    cfg = load(with_kpi(tmp_path, "  planned_oee: 0.8\n  plans:\n    - {line: line-1, sku: KT-100, units_per_hour: 480}\n"
                                  "    - {line: line-1, oee: 0.7}\n"))
    assert cfg.kpi.planned_units_per_hour("line-1", "KT-100", 6.0) == 480
    assert cfg.kpi.planned_units_per_hour("line-1", "KT-200", 5.0) == pytest.approx(0.7 * 720)
    assert cfg.kpi.planned_units_per_hour("line-2", "FN-300", 8.0) == pytest.approx(0.8 * 450)
    assert load(FACTORY_YAML).kpi.microstop_s == 120  # the default


@pytest.mark.parametrize(("kpi", "path", "expected"), [
    ("  plans:\n    - {line: line-9, oee: 0.8}\n", "kpi.plans[0].line", "a line id: line-1, line-2"),
    ("  plans:\n    - {line: line-1, sku: FN-300, oee: 0.8}\n", "kpi.plans[0].sku",
     "a SKU made on line line-1: KT-100, KT-200"),
    ("  plans:\n    - {line: line-1, oee: 0.8, units_per_hour: 400}\n", "kpi.plans[0]",
     "exactly one of oee or units_per_hour"),
    ("  plans:\n    - {line: line-1, oee: 0.8}\n    - {line: line-1, oee: 0.7}\n", "kpi.plans[1].sku",
     "a line and SKU not used before (ids are unique)"),
    ("  microstop_s: -5\n", "kpi.microstop_s", "a number greater than or equal to 0"),
    ("  planned_oee: 1.5\n", "kpi.planned_oee", "a number less than or equal to 1"),
    ("  microstop: 60\n", "kpi.microstop", "no such key here (check the spelling; see config/README.md)"),
])
def test_kpi_mistakes_name_their_key(tmp_path, kpi, path, expected):
    found = problems(with_kpi(tmp_path, kpi))
    assert any(p == path and expected in e for p, _, e in found), found
