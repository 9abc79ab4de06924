"""A dashboard app around a temporary SQLite historian, on a fixed clock: Monday 2026-11-23 10:00 in Cixi."""

from datetime import date

import pytest

from agent.config import DashboardSettings, DashboardUser
from agent.core.schema import Point
from agent.sinks.sqlite_historian import SqliteHistorian
from dashboard import create_app
from tests.kpi.test_oee_golden import at

MON = date(2026, 11, 23)
NOW = at(MON, "10:00")
SITE = {"site": "cixi-1"}
PASSWORD = "correct horse battery staple"


def t(hhmm):
    return at(MON, hhmm)


def state(line, machine, hhmm, value):
    return Point("machine_state", {**SITE, "line": line, "machine": machine}, {"state": value, "raw": "r"}, t(hhmm))


def count(line, machine, hhmm, counter, delta):
    return Point("machine_count", {**SITE, "line": line, "machine": machine, "counter": counter},
                 {"delta": delta, "value": delta}, t(hhmm) + 5 * 10**9)


def pv(line, machine, ns, value=60.0):
    """A process value at `ns`: the newest point of a machine is how far its data reaches (its watermark)."""
    return Point("process_value", {**SITE, "line": line, "machine": machine, "name": "mold_temp"},
                 {"value": value, "quality": "Good"}, ns)


def event(measurement, hhmm, fields, **tags):
    return Point(measurement, {**SITE, "line": "line-1", **tags}, fields, t(hhmm))


SHOP_FLOOR = [
    state("line-1", "press-1", "07:00", "RUNNING"), state("line-1", "press-1", "09:00", "FAULT"),
    state("line-1", "press-1", "09:30", "RUNNING"),
    event("order_event", "07:30", {"order_id": "PO-1", "sku": "KT-100", "target_qty": 900}, event="start"),
    count("line-1", "press-1", "08:10", "total", 500), count("line-1", "press-1", "08:10", "good", 490),
    count("line-1", "packer-1", "09:50", "total", 150), count("line-1", "packer-1", "09:50", "good", 150),
    event("operator_event", "07:55", {"badge": "B1001", "operator": "op-001"}, station="mold-1", event="in"),
    event("operator_event", "08:05", {"badge": "B1006", "operator": "op-006"}, station="mold-2", event="in"),
    event("operator_event", "08:00", {"badge": "B1003", "operator": "op-003"}, station="assy-1", event="in"),
    event("operator_event", "09:00", {"badge": "B1003", "operator": "op-003"}, station="assy-1", event="out"),
    event("andon_event", "08:20", {"call_id": "A-0"}, station="pack-1", event="call", kind="material"),
    event("andon_event", "08:21", {"call_id": "A-0"}, station="pack-1", event="ack", kind="material"),
    event("andon_event", "08:30", {"call_id": "A-0"}, station="pack-1", event="resolve", kind="material"),
    event("andon_event", "09:50", {"call_id": "A-1"}, station="mold-1", event="call", kind="quality"),
    event("andon_event", "09:52", {"call_id": "A-1"}, station="mold-1", event="ack", kind="quality"),
    event("material_level", "09:59", {"level": 84.0}, material="resin-pp"),
    event("material_event", "09:00", {"lot": "L-7", "qty": 25.0}, station="mold-1", material="resin-pp",
          event="lot_loaded"),
    event("material_event", "08:30", {"call_id": "C-0", "qty": 200.0}, station="pack-1", material="carton-s",
          event="call"),
    event("material_event", "08:50", {"call_id": "C-0"}, station="pack-1", material="carton-s", event="delivered"),
    event("material_event", "09:40", {"call_id": "C-1", "qty": 200.0}, station="pack-1", material="carton-s",
          event="call"),
    # every machine of line 1 has sent data up to now (a process value 1 ms ago)
    *(pv("line-1", m, NOW - 10**6) for m in ("press-1", "press-2", "packer-1")),
]


@pytest.fixture
def clock():
    """The dashboard's clock: a test moves it with `clock[0] = ...`."""
    return [NOW]


@pytest.fixture
def app(factory_cfg, tmp_path, monkeypatch, clock):
    monkeypatch.setenv("SHOPFLOOR_TEST_LEAD_PASSWORD", PASSWORD)
    cfg = factory_cfg.model_copy(update={"dashboard": DashboardSettings(
        users=[DashboardUser(name="lead", password="${SHOPFLOOR_TEST_LEAD_PASSWORD}")], max_streams=2)})
    historian = SqliteHistorian(tmp_path / "historian.sqlite3", retention_days=3650)
    historian.write(SHOP_FLOOR)
    app = create_app(cfg, data_dir=tmp_path, historian=historian, now_ns=lambda: clock[0], start_live=False)
    app.extensions["shopfloor"]["live"].connected = True
    yield app
    historian.close()


@pytest.fixture
def client(app):
    return app.test_client()
