"""The protocols an agent can read, and how the runner builds a source of each kind.

Each protocol is a folder beside this file: `model.py` (its config model and address syntax, imported by the
config check), `source.py` (the runtime, imported only when a source of that kind is configured, so an agent
without S7 PLCs never loads snap7), and a README with a sample config.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from agent.sources.base import Source, SourceContext


@dataclass(frozen=True)
class SourceKind:
    kind: str  # the key under `sources:` in the config
    runtime: str  # "module:Class"; the class takes (config entry, SourceContext)
    reads_tags: bool  # True: machines name it as their `source` and it reads their tags

    def build(self, entry: Any, ctx: SourceContext) -> Source:
        module, _, name = self.runtime.partition(":")
        cls = getattr(importlib.import_module(module), name)
        source: Source = cls(entry, ctx)
        return source


KINDS: dict[str, SourceKind] = {k.kind: k for k in (
    SourceKind("opcua", "agent.sources.opcua.source:OpcUaSource", reads_tags=True),
    SourceKind("mqtt", "agent.sources.mqtt.source:MqttSource", reads_tags=False),
    SourceKind("modbus", "agent.sources.modbus.source:ModbusSource", reads_tags=True),
    SourceKind("s7", "agent.sources.s7.source:S7Source", reads_tags=True),
)}
