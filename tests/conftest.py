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
