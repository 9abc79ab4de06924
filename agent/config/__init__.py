"""Factory configuration: one pydantic model per section of the YAML file, and the one loader.

Every problem found on load is reported with the file, the YAML line, the key path, what was found and what is
expected. Secrets are never inline: a secret key holds a `${ENV_VAR}` reference, or a sibling `*_file` key names
a file that holds it.

The modules (a section's module holds its models and the checks of its rules across sections):

- base.py           the strict base model, ids, local times, secret references, helpers the checks share
- site.py           site, shifts and breaks, products, materials, operators
- plant.py          lines, stations, machines and the addresses they are read from
- machine_types.py  machine types, their tags, state maps
- collect.py        plain tags collected per source as process values, with no machine model
- addresses.py      the address syntax each kind of PLC source reads a tag with
- sources.py        sources (each kind's model from agent/sources/<kind>/model.py)
- runtime.py        agent, outbox, historian, live
- dashboard.py      dashboard: users, stop reasons, kiosk
- kpi.py            microstops and planned rates
- capacity.py       capacity publishing: calendar, tokens, push endpoints
- factory.py        FactoryConfig (the whole file), its mapping plan, the order of the checks across sections
- loader.py         load and check: YAML with line numbers, problems in the words a user needs

Code outside the package imports from `agent.config`; the modules are how it is kept, not how it is used.
"""

from agent.config.addresses import ADDRESS_NAMES, ADDRESS_PARSERS
from agent.config.base import HHMM, SECRET_KEYS, SLUG, Model, SecretRef, Slug, resolve_secret
from agent.config.capacity import CapacitySettings, FeedToken, MaintenanceWindow, PushEndpoint, PushSettings
from agent.config.collect import COLLECT_LINE, CollectTag
from agent.config.dashboard import (
    DEFAULT_STOP_REASONS,
    DashboardSettings,
    DashboardUser,
    KioskSettings,
    StopReason,
)
from agent.config.factory import FactoryConfig
from agent.config.kpi import KpiSettings, PlannedRate
from agent.config.loader import ConfigError, Problem, check, load
from agent.config.machine_types import BitRuleSpec, Deadband, MachineType, StateMapSpec, TagSpec
from agent.config.plant import Line, Machine, Station
from agent.config.runtime import INFLUX_KEYS, AgentSettings, HistorianSettings, LiveSettings, OutboxSettings
from agent.config.site import Break, Material, Operator, Product, Shift, Site
from agent.config.sources import Sources
from agent.sources.modbus.model import ModbusSourceConfig
from agent.sources.mqtt.model import MqttRoute, MqttSource, MqttTls
from agent.sources.opcua.model import NODE_ID_FORMS, OpcUaSecurity, OpcUaSource, parse_node_id
from agent.sources.s7.model import S7SourceConfig

__all__ = [
    # loading
    "ConfigError", "Problem", "check", "load",
    # the whole file
    "FactoryConfig",
    # base
    "HHMM", "SECRET_KEYS", "SLUG", "Model", "SecretRef", "Slug", "resolve_secret",
    # site
    "Break", "Material", "Operator", "Product", "Shift", "Site",
    # plant, machine types, addresses
    "Line", "Machine", "Station",
    "BitRuleSpec", "Deadband", "MachineType", "StateMapSpec", "TagSpec",
    "ADDRESS_NAMES", "ADDRESS_PARSERS", "NODE_ID_FORMS", "parse_node_id",
    # plain tags collected with no machine model
    "COLLECT_LINE", "CollectTag",
    # sources
    "ModbusSourceConfig", "MqttRoute", "MqttSource", "MqttTls", "OpcUaSecurity", "OpcUaSource", "S7SourceConfig",
    "Sources",
    # agent, outbox, historian, live
    "INFLUX_KEYS", "AgentSettings", "HistorianSettings", "LiveSettings", "OutboxSettings",
    # dashboard, kpi, capacity
    "DEFAULT_STOP_REASONS", "DashboardSettings", "DashboardUser", "KioskSettings", "StopReason",
    "KpiSettings", "PlannedRate",
    "CapacitySettings", "FeedToken", "MaintenanceWindow", "PushEndpoint", "PushSettings",
]
