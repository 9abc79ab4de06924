from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from shopfloor.demo import demo_config, simulated_start

SH = ZoneInfo("Asia/Shanghai")


@pytest.mark.parametrize(
    ("now", "start"),
    [
        (datetime(2026, 11, 23, 10, 0, tzinfo=SH), "2026-11-23T07:59:50+08:00"),  # Monday, day shift on: its start
        (datetime(2026, 11, 22, 12, 0, tzinfo=SH), "2026-11-21T19:59:50+08:00"),  # Sunday: Saturday's night shift
        (datetime(2026, 11, 23, 8, 30, tzinfo=SH), "2026-11-23T07:59:50+08:00"),  # the day shift just began
        (datetime(2026, 11, 24, 1, 0, tzinfo=SH), "2026-11-23T19:59:50+08:00"),  # a night shift over midnight
    ],
)
def test_the_demo_clock_starts_just_before_a_shift(factory_cfg, now, start):
    assert simulated_start(factory_cfg, now.timestamp()) == start


def test_demo_config_points_at_the_demo_servers(tmp_path, factory_cfg):
    from tests.conftest import FACTORY_YAML

    path = demo_config(FACTORY_YAML, tmp_path, "mqtt://127.0.0.1:1999", 4999, 9999)
    text = path.read_text(encoding="utf-8")
    assert "opc.tcp://127.0.0.1:4999/shopfloor/plc" in text and "mqtt://127.0.0.1:1999" in text
    assert "http_port: 9999" in text
