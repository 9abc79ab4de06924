"""Config model of an MQTT source: the broker connection and the routes that turn topics and JSON payloads into
points (no paho here: the config check imports this module)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator

from agent.config.base import Model, NoCredentials, SecretRef, Slug
from agent.core.plan import RoutePlan


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
    url: Annotated[str, NoCredentials, Field(pattern=r"^mqtts?://[^/]+$")]
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
    workers: Annotated[int, Field(ge=1, le=32)] | Literal["auto"] = Field(
        default="auto", description="receiver processes on a shared subscription (docs/scaling.md); auto (the "
                                    "default): one per core, at most 4; 1: one connection in the agent's own "
                                    "process")
    share_group: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] | None = Field(
        default=None, description="subscribe as $share/<group>/<filter>; agents that split one line's traffic "
                                  "set the same group (default with workers > 1: a group of this agent's own)")

    @field_validator("subscribe")
    @classmethod
    def _plain_filters(cls, filters: list[str]) -> list[str]:
        for f in filters:
            if f.startswith("$share/"):
                raise ValueError(f"{f!r}: write the plain filter and set share_group instead")
        return filters
