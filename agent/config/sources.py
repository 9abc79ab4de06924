"""The sources the agent reads, all under `sources:`; each kind's config model lives with its source
(agent/sources/<kind>/model.py)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from agent.config.base import Issue, Model, unreadable_file, unset_secret
from agent.core.mapping import compile_route
from agent.sources.modbus.model import ModbusSourceConfig
from agent.sources.mqtt.model import MqttSource
from agent.sources.opcua.model import OpcUaSource
from agent.sources.s7.model import S7SourceConfig

SOURCE_KINDS = ("opcua", "mqtt", "modbus", "s7")


class Sources(Model):
    opcua: list[OpcUaSource] = []
    mqtt: list[MqttSource] = []
    modbus: list[ModbusSourceConfig] = []
    s7: list[S7SourceConfig] = []

    def entries(self) -> Iterable[tuple[str, Any]]:
        """(kind, entry) of every configured source, kind as under `sources:`."""
        for kind in SOURCE_KINDS:
            for entry in getattr(self, kind):
                yield kind, entry

    def tag_kinds(self) -> dict[str, str]:
        """The kind of each source that reads machine tags (every kind but mqtt), by source id."""
        return {entry.id: kind for kind, entry in self.entries() if kind != "mqtt"}


def check_source_ids(sources: Sources) -> list[Issue]:
    """Source ids are unique across all kinds of source (a machine names its source by id alone)."""
    out: list[Issue] = []
    seen: set[str] = set()
    for kind in SOURCE_KINDS:
        for si, entry in enumerate(getattr(sources, kind)):
            if entry.id in seen:
                out.append((("sources", kind, si, "id"), entry.id,
                            "a source id not used before (ids are unique across all kinds of source)"))
            seen.add(entry.id)
    return out


def check_routes(sources: Sources) -> list[Issue]:
    """Every MQTT route compiles: its pattern, captures and JSON paths make sense together."""
    out: list[Issue] = []
    for si, mqtt_source in enumerate(sources.mqtt):
        for ri, route in enumerate(mqtt_source.routes):
            try:
                compile_route(route.plan())
            except ValueError as exc:
                out.append((("sources", "mqtt", si, "routes", ri), route.pattern, str(exc)))
    return out


def check_source_secrets(sources: Sources, resolve_secrets: bool) -> list[Issue]:
    """An OPC UA or MQTT password comes from one place, and (when resolving) that place can be read."""
    out: list[Issue] = []
    holders: list[tuple[str, int, OpcUaSource | MqttSource]] = [
        *(("opcua", i, s) for i, s in enumerate(sources.opcua)),
        *(("mqtt", i, s) for i, s in enumerate(sources.mqtt))]
    for kind, si, source in holders:
        loc = ("sources", kind, si)
        if source.password is not None and source.password_file is not None:
            out.append((loc + ("password_file",), str(source.password_file),
                        "either password or password_file, not both"))
        if resolve_secrets:
            out += unset_secret(loc + ("password",), source.password)
            out += unreadable_file(loc + ("password_file",), source.password_file)
    return out
