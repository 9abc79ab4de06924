"""The dashboard: where it listens, its live streams, who may give stop reasons, the reasons and the kiosk."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, IPvAnyAddress, model_validator

from agent.config.base import Issue, Model, SecretRef, Slug, unique, unreadable_file, unset_secret


class StopReason(Model):
    code: Slug
    name: dict[Literal["zh-CN", "en"], str] = Field(description="the reason's label per language")


class DashboardUser(Model):
    name: Annotated[str, Field(min_length=1, max_length=64)]
    password: SecretRef | None = None
    password_file: Path | None = None

    @model_validator(mode="after")
    def _one_password(self) -> DashboardUser:
        if (self.password is None) == (self.password_file is None):
            raise ValueError("exactly one of password (${ENV_VAR}) or password_file")
        return self


class ConnectionLimits(Model):
    connections: Annotated[int, Field(ge=16, le=20000)] = Field(
        default=1000, description="connections held at once by all clients together, beside max_streams")
    per_client: Annotated[int, Field(ge=1, le=10000)] = Field(
        default=32, description="connections one client address holds at once; one more is refused with 503")
    header_timeout_s: Annotated[float, Field(ge=1, le=300)] = Field(
        default=10, description="a request's headers arrive within this, or the connection is closed (408)")
    body_timeout_s: Annotated[float, Field(ge=1, le=3600)] = Field(
        default=30, description="a request's body arrives within this after its headers")
    idle_timeout_s: Annotated[float, Field(ge=1, le=3600)] = Field(
        default=60, description="a connection idle between requests is closed after this")
    send_timeout_s: Annotated[float, Field(ge=1, le=300)] = Field(
        default=15, description="a client that reads nothing while send_buffer_kb waits for it is dropped after "
                                "this (a stream nobody reads)")
    send_buffer_kb: Annotated[int, Field(ge=16, le=65536)] = Field(
        default=256, description="what may wait in the dashboard for one slow client")


class KioskSettings(Model):
    lines: list[str] = Field(default=[], description="line ids the kiosk rotates through (default: every line)")
    rotate_s: Annotated[int, Field(ge=5)] = 30
    reload_h: Annotated[float, Field(gt=0, le=168)] = Field(
        default=6, description="the kiosk page reloads itself this often, so nothing builds up over days")


DEFAULT_STOP_REASONS = [
    StopReason(code="material", name={"zh-CN": "缺料", "en": "Material shortage"}),
    StopReason(code="breakdown", name={"zh-CN": "设备故障", "en": "Breakdown"}),
    StopReason(code="tooling", name={"zh-CN": "模具/刀具", "en": "Tooling"}),
    StopReason(code="quality", name={"zh-CN": "质量问题", "en": "Quality problem"}),
    StopReason(code="operator", name={"zh-CN": "人员不足", "en": "No operator"}),
    StopReason(code="changeover", name={"zh-CN": "换型", "en": "Changeover"}),
    StopReason(code="other", name={"zh-CN": "其他", "en": "Other"}),
]


class DashboardSettings(Model):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    mqtt: str | None = Field(default=None, description="id of the MQTT source whose broker has the live topics "
                                                       "(default: live.mqtt, else the first MQTT source)")
    max_streams: Annotated[int, Field(ge=1, le=2000)] = Field(
        default=200, description="live streams held at once; one more gets 503 and polls instead")
    stream_interval_ms: Annotated[int, Field(ge=50, le=5000)] = Field(
        default=250, description="changes within this window go out as one update")
    heartbeat_s: Annotated[float, Field(gt=0, le=10)] = 3.0
    kpi_refresh_s: Annotated[float, Field(ge=1, le=300)] = Field(
        default=10, description="how often shift KPIs are recomputed from the historian while a board is open")
    users: list[DashboardUser] = Field(default=[], description="who may give stop reasons")
    secret_key: SecretRef | None = Field(default=None, description="signs login sessions (default: a random key "
                                                                   "kept in <data-dir>/dashboard-secret)")
    secret_key_file: Path | None = None
    limits: ConnectionLimits = ConnectionLimits()
    trusted_proxy: IPvAnyAddress | None = Field(
        default=None, description="address of the reverse proxy (nginx) in front of the dashboard: its "
                                  "X-Forwarded-* headers are believed (HTTPS, the client's address), and it is "
                                  "exempt from limits.per_client")
    trusted_proxy_headers: list[Literal["x-forwarded-for", "x-forwarded-host", "x-forwarded-proto",
                                        "x-forwarded-port", "forwarded"]] = Field(
        default=["x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-forwarded-port"],
        description="the headers taken from the trusted proxy")
    stop_reasons: list[StopReason] = DEFAULT_STOP_REASONS
    kiosk: KioskSettings = KioskSettings()


def check_dashboard(dashboard: DashboardSettings, line_ids: list[str], mqtt_ids: set[str]) -> list[Issue]:
    """The dashboard's MQTT source and kiosk lines are of this config; stop reason codes are unique."""
    out: list[Issue] = []
    if dashboard.mqtt is not None and dashboard.mqtt not in mqtt_ids:
        out.append((("dashboard", "mqtt"), dashboard.mqtt,
                    "the id of an MQTT source: " + ", ".join(sorted(mqtt_ids))))
    for ki, line_id in enumerate(dashboard.kiosk.lines):
        if line_id not in line_ids:
            out.append((("dashboard", "kiosk", "lines", ki), line_id, "a line id: " + ", ".join(line_ids)))
    out += unique([r.code for r in dashboard.stop_reasons], ("dashboard", "stop_reasons"), "code", "stop reason code")
    return out


def check_dashboard_users(dashboard: DashboardSettings) -> list[Issue]:
    """User names are unique."""
    return unique([u.name for u in dashboard.users], ("dashboard", "users"), "name", "user name")


def check_dashboard_secrets(dashboard: DashboardSettings, resolve_secrets: bool) -> list[Issue]:
    """The session key comes from one place; (when resolving) every user's password and the key can be read."""
    out: list[Issue] = []
    if dashboard.secret_key is not None and dashboard.secret_key_file is not None:
        out.append((("dashboard", "secret_key_file"), str(dashboard.secret_key_file),
                    "either secret_key or secret_key_file, not both"))
    if not resolve_secrets:
        return out
    holders: list[tuple[tuple[Any, ...], str, SecretRef | None, Path | None]] = [
        (("dashboard", "users", ui), "password", u.password, u.password_file)
        for ui, u in enumerate(dashboard.users)]
    holders.append((("dashboard",), "secret_key", dashboard.secret_key, dashboard.secret_key_file))
    for loc, key, ref, file in holders:
        out += unset_secret(loc + (key,), ref)
        out += unreadable_file(loc + (key + "_file",), file)
    return out
