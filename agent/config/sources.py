"""The sources the agent reads: OPC UA servers and MQTT brokers here, Modbus TCP and S7 with their source kind
(agent/sources/<kind>/model.py), all under `sources:`."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from agent.config.base import Issue, Model, SecretRef, Slug, unreadable_file, unset_secret
from agent.core.mapping import compile_route
from agent.core.plan import RoutePlan
from agent.sources.modbus.model import ModbusSourceConfig
from agent.sources.s7.model import S7SourceConfig

SOURCE_KINDS = ("opcua", "mqtt", "modbus", "s7")


class OpcUaSecurity(Model):
    policy: Literal["None", "Basic256Sha256"] = "None"
    mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    certificate_dir: Path | None = Field(
        default=None, description="where the client certificate is generated once and kept (default <data-dir>/pki)"
    )
    trusted_server_certificates: list[Path] = Field(
        default=[], description="server certificates (DER or PEM) this agent trusts"
    )

    @model_validator(mode="after")
    def _policy_mode(self) -> OpcUaSecurity:
        if (self.policy == "None") != (self.mode == "None"):
            raise ValueError("policy None goes with mode None; Basic256Sha256 needs mode Sign or SignAndEncrypt")
        return self


class OpcUaSource(Model):
    id: Slug
    endpoint: Annotated[str, Field(pattern=r"^opc\.tcp://")]
    security: OpcUaSecurity = OpcUaSecurity()
    username: str | None = None
    password: SecretRef | None = None
    password_file: Path | None = None
    publishing_interval_ms: Annotated[float, Field(gt=0)] = 100
    watchdog_s: Annotated[float, Field(gt=0)] = 5.0
    timeout_s: Annotated[float, Field(gt=0)] = 4.0


class MqttTls(Model):
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False


class MqttRoute(Model):
    pattern: str = Field(description="topic with {name} captures (one level each), '+' and '#'")
    signal: Literal[
        "operator_event", "andon_event", "material_level", "material_event", "order_event",
        "machine_state", "process_value", "alarm",
    ]
    tags: dict[str, str] = Field(default={}, description="tag -> constant or {capture}")
    fields: dict[str, str] = Field(description="field -> JSON path in the payload ($.a.b[0])")
    time: str | None = Field(default="$.ts", description="JSON path of the source timestamp (ISO 8601 or epoch)")

    def plan(self) -> RoutePlan:
        return RoutePlan(self.pattern, self.signal, dict(self.tags), dict(self.fields), self.time)


class MqttSource(Model):
    id: Slug
    url: Annotated[str, Field(pattern=r"^mqtts?://[^/]+$")]
    protocol: Literal["3.1.1", "5"] = "5"
    client_id: str
    username: str | None = None
    password: SecretRef | None = None
    password_file: Path | None = None
    tls: MqttTls | None = None
    qos: Literal[0, 1] = 1
    session_expiry_s: Annotated[int, Field(ge=0)] = 86400
    receive_maximum: Annotated[int, Field(ge=1, le=65535)] = 1000
    max_payload_bytes: Annotated[int, Field(ge=64)] = Field(
        default=262144, description="larger messages are dead-lettered, not parsed")
    subscribe: list[str] = Field(description="topic filters to subscribe to")
    routes: list[MqttRoute]


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
