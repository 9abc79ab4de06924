"""The dashboard: where it listens, its live streams, who may give stop reasons, the reasons and the kiosk."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, IPvAnyAddress, model_validator

from agent.config.base import Issue, Model, SecretRef, Slug, unique, unreadable_file, unset_secret

log = logging.getLogger(__name__)


class StopReason(Model):
    code: Slug
    name: dict[Literal["zh-CN", "en"], str] = Field(description="the reason's label per language")


Role = Literal["viewer", "lead", "admin"]
# what `shopfloor passwd` prints: an argon2id hash in the PHC string format
ARGON2_HASH = r"^\$argon2(id|i|d)\$v=\d+\$m=\d+,t=\d+,p=\d+\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+$"


class DashboardUser(Model):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^:\s][^:]*$")]
    role: Role = Field(default="lead", description="viewer: reads only; lead: gives stop reasons; admin: all a "
                                                   "lead may, and whatever later needs more")
    password_hash: Annotated[str, Field(pattern=ARGON2_HASH)] | None = Field(
        default=None, description="the argon2 hash `shopfloor passwd` prints")
    password: SecretRef | None = None
    password_file: Path | None = None

    @model_validator(mode="after")
    def _one_password(self) -> DashboardUser:
        if sum(x is not None for x in (self.password_hash, self.password, self.password_file)) != 1:
            raise ValueError("exactly one of password_hash (from `shopfloor passwd`), password (${ENV_VAR}) or "
                             "password_file")
        return self


class KioskToken(Model):
    name: Slug = Field(description="the screen, e.g. tv-hall-1 (audit log lines name it)")
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] = Field(
        description="SHA-256 of the token (hex), as `shopfloor token` prints it; the token itself goes into the "
                    "TV's URL (?kiosk_token=) or an Authorization: Bearer header")


class LoginThrottle(Model):
    max_failures: Annotated[int, Field(ge=1, le=1000)] = Field(
        default=10, description="failed logins of one account before it is locked")
    max_failures_per_client: Annotated[int, Field(ge=1, le=10000)] = Field(
        default=50, description="failed logins (any account, password or token) from one address before it is "
                                "locked")
    lockout_s: Annotated[float, Field(ge=1, le=86400)] = Field(
        default=60, description="the first lockout; each further one of the same account or address doubles")
    max_lockout_s: Annotated[float, Field(ge=1, le=7 * 86400)] = 3600


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
    users: list[DashboardUser] = Field(default=[], description="who may log in, and their role")
    kiosk_tokens: list[KioskToken] = Field(default=[], description="tokens that log a TV in as a viewer")
    anonymous_read: bool = Field(default=True, description="boards are readable without logging in; false: every "
                                                           "page and API read needs a user or a kiosk token")
    login_throttle: LoginThrottle = LoginThrottle()
    session_idle_h: Annotated[float, Field(gt=0, le=24 * 90)] = Field(
        default=12, description="a login session unused this long ends (a kiosk's, always in use, stays)")
    secure_cookies: Literal["auto"] | bool = Field(
        default="auto", description="auto: Secure cookies when the request came over HTTPS")
    max_body_bytes: Annotated[int, Field(ge=1024, le=1024**3)] = Field(
        default=1024 * 1024, description="a request body larger than this is refused with 413 unread")
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
    out += unique([k.name for k in dashboard.kiosk_tokens], ("dashboard", "kiosk_tokens"), "name", "kiosk token name")
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
    plain = [u.name for u in dashboard.users if u.password_hash is None]
    if plain:
        log.warning("dashboard.users: %s %s a plain-text password; run `shopfloor passwd` and put the hash it "
                    "prints under password_hash instead", ", ".join(plain), "has" if len(plain) == 1 else "have")
    return out
