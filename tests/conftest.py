"""Shared fixtures. Servers the tests need (Mosquitto, the PLC simulator) are started by fixtures in
tests/e2e/conftest.py on free loopback ports."""

from pathlib import Path

import pytest

from agent.config import FactoryConfig, load

ROOT = Path(__file__).resolve().parent.parent
FACTORY_YAML = ROOT / "config" / "factory.yaml"


@pytest.fixture(scope="session")
def factory_cfg() -> FactoryConfig:
    return load(FACTORY_YAML)


@pytest.fixture(scope="session")
def influx_server(tmp_path_factory):
    """A real InfluxDB 1.x server (Debian's `influxdb`) on a free loopback port, for the whole session."""
    from simulators.influxdb import InfluxServer

    with InfluxServer(tmp_path_factory.mktemp("influxdb")) as server:
        yield server


def pytest_collection_modifyitems(config, items):
    # Long tests first: under pytest-xdist they start at once on one worker while the others take the rest.
    items.sort(key=lambda item: item.get_closest_marker("long") is None)
