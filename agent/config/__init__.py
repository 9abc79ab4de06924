"""Factory configuration: pydantic models and the one loader.

Every problem found on load is reported with the file, the YAML line, the key path, what was found and what is
expected. Secrets are never inline: a secret key holds a `${ENV_VAR}` reference, or a sibling `*_file` key names
a file that holds it.
"""

from __future__ import annotations

import base64
import os
import re
import zoneinfo
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from agent.config.base import HHMM, SECRET_KEYS, SLUG, Model, SecretRef, Slug, resolve_secret
from agent.core.plan import MappingPlan, RoutePlan, TagBinding, TagPlan
from agent.core.states import BitRule, BoardState, StateMapper
from agent.sources.modbus.model import ModbusSourceConfig
from agent.sources.modbus.model import parse_address as parse_modbus_address
from agent.sources.s7.model import S7SourceConfig
from agent.sources.s7.model import parse_address as parse_s7_address

# --- site, calendar, products, people, materials ---------------------------------------------------------


class Site(Model):
    id: Slug
    name: str
    timezone: str = Field(description="IANA time zone of the site, e.g. Asia/Shanghai")
    language: Literal["zh-CN", "en"] = "zh-CN"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError("an IANA time zone such as Asia/Shanghai") from None
        return value


class Break(Model):
    start: HHMM
    end: HHMM
    name: str = "break"


class Shift(Model):
    id: Slug
    name: str
    start: HHMM
    end: HHMM = Field(description="may be earlier than start: the shift then crosses midnight")
    breaks: list[Break] = []
    days: list[Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]] = [
        "mon", "tue", "wed", "thu", "fri", "sat",
    ]


class Product(Model):
    sku: Annotated[str, Field(min_length=1, max_length=64)]
    name: str
    ideal_cycle_s: dict[str, Annotated[float, Field(gt=0)]] = Field(
        description="ideal cycle time per unit in seconds, per line id (ISO 22400 PRU)"
    )
    setup_min: Annotated[float, Field(ge=0)] = 0
    bom: dict[str, Annotated[float, Field(gt=0)]] = Field(default={}, description="material id -> qty per unit")
    price: Annotated[float, Field(ge=0)] | None = None
    currency: str = "CNY"


class Material(Model):
    id: Slug
    name: str
    unit: str
    reorder_point: Annotated[float, Field(ge=0)] = 0


class Operator(Model):
    id: Slug
    name: str
    badge: Annotated[str, Field(min_length=1)]
    skills: list[str] = []


class Station(Model):
    id: Slug
    name: str = ""
    skill: str | None = Field(default=None, description="skill an operator needs to work here")
    planned_headcount: Annotated[int, Field(ge=0)] = 1


# --- OPC UA node ids ---------------------------------------------------------------------------------------

NODE_ID_FORMS = "ns=<index>; or nsu=<namespace URI>; then i=<number>, s=<text>, g=<GUID> or b=<base64>"
_NODE_ID = re.compile(r"(?:ns=(?P<ns>[^;]*);|nsu=(?P<uri>.*?);)?(?P<kind>[isgb])=(?P<id>.*)\Z", re.DOTALL)
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")


def parse_node_id(text: str) -> tuple[int | str, str, str]:
    """An OPC UA NodeId in its text form as (namespace index or URI, identifier type i/s/g/b, identifier).

    No namespace means namespace 0. Raises ValueError saying what is wrong.
    """
    m = _NODE_ID.match(text)
    if m is None:
        raise ValueError(f"an OPC UA NodeId: {NODE_ID_FORMS} (e.g. ns=3;i=1042)")
    kind, identifier = m.group("kind"), m.group("id")
    namespace: int | str = 0
    if m.group("uri") is not None:
        namespace = m.group("uri")
        if not namespace:
            raise ValueError("a namespace URI after nsu= (e.g. nsu=urn:vendor:plc;i=1042)")
    elif m.group("ns") is not None:
        if not m.group("ns").isdigit() or int(m.group("ns")) > 65535:
            raise ValueError("a namespace index from 0 to 65535 after ns=")
        namespace = int(m.group("ns"))
    if kind == "i" and not (identifier.isdigit() and identifier.isascii() and int(identifier) < 2**32):
        raise ValueError("a whole number from 0 to 4294967295 after i=")
    if kind == "s" and not identifier:
        raise ValueError("a name after s=")
    if kind == "g" and not _GUID.match(identifier):
        raise ValueError("a GUID like 72962b91-fa75-4ae6-8d28-b404dc7daf63 after g=")
    if kind == "b":
        try:
            if not base64.b64decode(identifier, validate=True):
                raise ValueError
        except ValueError:
            raise ValueError("bytes in base64 (e.g. M/RbKBsRVkePCePcx24oRA==) after b=") from None
    return namespace, kind, identifier


# How each kind of PLC source reads a tag's address; a ValueError says what is expected.
ADDRESS_PARSERS: dict[str, Callable[[str], object]] = {
    "opcua": parse_node_id, "modbus": parse_modbus_address, "s7": parse_s7_address}
ADDRESS_NAMES = {"opcua": "NodeId", "modbus": "Modbus address", "s7": "S7 address"}


class Machine(Model):
    id: Slug
    name: str = ""
    type: str = Field(description="a key of machine_types")
    source: str = Field(description="id of the OPC UA, Modbus or S7 source that reads this machine")
    node_prefix: str | None = Field(
        default=None, description="prepended to each tag's node of the machine type, e.g. nsu=...;s=L1.M1.; "
                                  "not needed when node_ids names every tag")
    node_ids: dict[str, str] = Field(
        default={}, description="the full NodeId of a tag of this machine, by the tag's node in the machine type "
                                "(e.g. StateCode: ns=3;i=1042); such a tag does not use node_prefix")
    station: str | None = None

    def node_id(self, tag: TagSpec) -> str:
        """The NodeId this machine reads `tag` from (the config check ensures there is one)."""
        return self.node_ids.get(tag.node) or (self.node_prefix or "") + tag.node


class Line(Model):
    id: Slug
    name: str
    stations: list[Station] = []
    machines: list[Machine]


# --- machine types and state maps ----------------------------------------------------------------------------


class Deadband(Model):
    kind: Literal["absolute", "percent"]
    value: Annotated[float, Field(ge=0)]


class TagSpec(Model):
    node: str = Field(description="node id suffix appended to the machine's node_prefix")
    signal: Literal["state", "state_bit", "count", "process_value", "alarm", "product"]
    bit: str | None = Field(default=None, description="bit name a state_bit tag feeds to the bits state map")
    name: str | None = Field(default=None, description="process value name (signal process_value)")
    counter: Literal["total", "good", "reject"] | None = None
    rollover: Annotated[int, Field(gt=1)] | None = Field(
        default=None, description="the counter wraps to 0 on reaching this value"
    )
    unit: str | None = None
    sampling_ms: Annotated[float, Field(ge=0)] = 100
    queue_size: Annotated[int, Field(ge=1)] = 10
    deadband: Deadband | None = None
    poll_ms: Annotated[int, Field(ge=50)] | None = Field(
        default=None, description="read this tag by polling at this period instead of subscribing"
    )
    codes: dict[int, Annotated[str, Field(min_length=1)]] | None = Field(
        default=None, description="signal product: the SKU each product code of the PLC stands for"
    )
    scale: float = Field(default=1.0, description="signal process_value: the value stored is raw * scale + offset")
    offset: float = 0.0

    def plan(self) -> TagPlan:
        return TagPlan(self.node, self.signal, self.bit, self.name, self.counter, self.rollover, self.poll_ms,
                       self.sampling_ms, self.queue_size,
                       (self.deadband.kind, self.deadband.value) if self.deadband else None,
                       dict(self.codes) if self.codes is not None else None, self.scale, self.offset)

    @model_validator(mode="after")
    def _signal_fields(self) -> TagSpec:
        if self.signal == "count" and self.counter is None:
            raise ValueError("a count tag needs counter: total, good or reject")
        if self.signal == "process_value" and not self.name:
            raise ValueError("a process_value tag needs a name")
        return self


class BitRuleSpec(Model):
    bit: str
    value: bool = True
    state: BoardState


class StateMapSpec(Model):
    kind: Literal["code", "packml", "bits"]
    codes: dict[int, BoardState] = {}
    names: dict[str, BoardState] = {}
    rules: list[BitRuleSpec] = []
    default: BoardState | None = None

    def mapper(self) -> StateMapper:
        if self.kind == "code":
            return StateMapper.for_codes(self.codes, self.default)
        if self.kind == "packml":
            return StateMapper.for_packml(self.names)
        return StateMapper.for_bits(
            [BitRule(r.bit, r.value, r.state) for r in self.rules], self.default or BoardState.STOPPED
        )


class MachineType(Model):
    description: str = ""
    state_map: str = Field(description="a key of state_maps")
    tags: list[TagSpec]
    alarm_texts: dict[int, str] = {}


# --- sources ------------------------------------------------------------------------------------------------


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
        for kind in ("opcua", "mqtt", "modbus", "s7"):
            for entry in getattr(self, kind):
                yield kind, entry

    def tag_kinds(self) -> dict[str, str]:
        """The kind of each source that reads machine tags (every kind but mqtt), by source id."""
        return {entry.id: kind for kind, entry in self.entries() if kind != "mqtt"}


# --- agent, outbox, historian, live -------------------------------------------------------------------------


class AgentSettings(Model):
    id: Slug = "agent-1"
    data_dir: Path = Path("data")
    http_host: str = "127.0.0.1"
    http_port: Annotated[int, Field(ge=0, le=65535)] = 9108


class OutboxSettings(Model):
    quota_mb: Annotated[float, Field(gt=0)] = 512
    commit_interval_ms: Annotated[int, Field(ge=1)] = 50
    batch_points: Annotated[int, Field(ge=1)] = 5000
    dead_letter_payload_max_bytes: Annotated[int, Field(ge=64)] = 65536


INFLUX_KEYS = ("url", "api", "database", "retention_policy", "username", "password", "password_file", "org",
               "bucket", "token", "token_file", "timeout_s", "batch_lines", "gzip", "verify_tls", "ca_file")


class HistorianSettings(Model):
    kind: Literal["sqlite", "influxdb"] = "sqlite"
    path: Path | None = Field(default=None, description="sqlite: default <data-dir>/historian.sqlite3")
    retention_days: Annotated[int, Field(ge=1)] | None = Field(
        default=400, description="sqlite: default 400; influxdb: unset, the database's retention policy decides")
    # InfluxDB: 1.x through /write (database, retention_policy, username/password) with api: v1;
    # 2.x, 3.x and Cloud (org, bucket, token) with api: v2.
    url: Annotated[str, Field(pattern=r"^https?://[^\s/@?#]+(/[^\s?#]*)?$",
                              description="no user, password or query in it")] | None = None
    api: Literal["v1", "v2"] = "v1"
    database: str | None = Field(default=None, description="v1: the database; v2: read through this "
                                                           "database mapping (default: the bucket)")
    retention_policy: str | None = None
    username: str | None = None
    password: SecretRef | None = None
    password_file: Path | None = None
    org: str | None = None
    bucket: str | None = None
    token: SecretRef | None = None
    token_file: Path | None = None
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    batch_lines: Annotated[int, Field(ge=1, le=5000)] = 5000
    gzip: bool = True
    verify_tls: bool = True
    ca_file: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _influx_keeps_server_retention(cls, data: Any) -> Any:
        # Deleting from a factory's own InfluxDB is the database's retention policy's job unless asked for.
        if isinstance(data, dict) and data.get("kind") == "influxdb" and "retention_days" not in data:
            return {**data, "retention_days": None}
        return data


class LiveSettings(Model):
    enabled: bool = True
    mqtt: str | None = Field(default=None, description="id of the MQTT source whose broker gets live topics")
    min_interval_ms: Annotated[int, Field(ge=0)] = 200


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
    stop_reasons: list[StopReason] = DEFAULT_STOP_REASONS
    kiosk: KioskSettings = KioskSettings()


class PlannedRate(Model):
    line: str = Field(description="the line this planned rate is for")
    sku: str | None = Field(default=None, description="the SKU (default: every SKU of the line)")
    oee: Annotated[float, Field(gt=0, le=1)] | None = Field(
        default=None, description="planned rate as a share of the ideal rate (units = oee x time / ideal cycle)")
    units_per_hour: Annotated[float, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _one_rate(self) -> PlannedRate:
        if (self.oee is None) == (self.units_per_hour is None):
            raise ValueError("exactly one of oee or units_per_hour")
        return self


class KpiSettings(Model):
    microstop_s: Annotated[float, Field(ge=0, le=3600)] = Field(
        default=120, description="an unplanned stop (STOPPED) shorter than this is a MICROSTOP")
    planned_oee: Annotated[float, Field(gt=0, le=1)] = Field(
        default=0.85, description="the plan's rate where no plans entry names the line and SKU: this share of "
                                  "the ideal rate")
    plans: list[PlannedRate] = Field(default=[], description="planned rates per line and SKU")
    watermark_lag_s: Annotated[float, Field(ge=0)] = Field(
        default=10, description="a board says 'data up to ...' when a machine's data lags now by more than this")

    def planned_units_per_hour(self, line: str, sku: str, ideal_cycle_s: float) -> float:
        """The plan's units per hour of `sku` on `line`: the most specific plans entry, else planned_oee."""
        for wanted in (sku, None):
            for plan in self.plans:
                if plan.line == line and plan.sku == wanted:
                    return plan.units_per_hour if plan.units_per_hour is not None \
                        else (plan.oee or 0.0) * 3600 / ideal_cycle_s
        return self.planned_oee * 3600 / ideal_cycle_s


class MaintenanceWindow(Model):
    line: str = Field(description="the line that is not worked over the window")
    start: datetime = Field(description="local time of the site unless it names its offset, e.g. 2026-12-05 08:00")
    end: datetime
    note: str = ""

    @model_validator(mode="after")
    def _ordered(self) -> MaintenanceWindow:
        if self.end <= self.start:
            raise ValueError("end after start")
        return self


class FeedToken(Model):
    name: Annotated[str, Field(min_length=1, max_length=64)] = Field(description="who holds the token (logs)")
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] = Field(
        description="SHA-256 (hex) of the token; `shopfloor token` makes a token and prints this")


class PushEndpoint(Model):
    name: Slug = Field(description="names the endpoint in logs, /healthz and /metrics")
    url: Annotated[str, Field(pattern=r"^https?://[^\s/@?#]+(/[^\s#]*)?$")] = Field(
        description="where capacity events are POSTed")
    secrets: list[SecretRef] = Field(default=[], description="Standard Webhooks secrets (whsec_...), from the "
                                                             "environment; every one signs (key rotation)")
    secret_files: list[Path] = Field(default=[], description="files each holding one secret")
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0


class PushSettings(Model):
    endpoints: list[PushEndpoint] = []
    in_dashboard: bool = Field(default=True, description="the dashboard pushes (false: leave it to shopfloor sync)")
    interval_min: Annotated[float, Field(gt=0, le=1440)] = Field(
        default=5, description="every line's capacity is pushed this often")
    check_s: Annotated[float, Field(ge=1, le=300)] = Field(
        default=5, description="how often the job looks for a significant change (a machine down or back, an "
                               "order started or finished) and pushes at once")
    max_event_kb: Annotated[int, Field(ge=1, le=10240)] = Field(
        default=256, description="a larger event is sent as a thin 'changed' event with a pull URL")
    feed_url: Annotated[str, Field(pattern=r"^https?://[^\s/@?#]+(/[^\s?#]*)?$")] | None = Field(
        default=None, description="base URL of the /v1 feed the platform pulls (default the dashboard's)")
    quota_mb: Annotated[float, Field(gt=0)] = Field(default=64, description="disk for events waiting per endpoint")


class CapacitySettings(Model):
    horizon_days: Annotated[int, Field(ge=1, le=92)] = Field(default=14, description="days of capacity published")
    bucket: Literal["shift", "day"] = Field(default="shift", description="the feed's default granularity")
    trailing_days: Annotated[int, Field(ge=1, le=365)] = Field(
        default=28, description="the OEE of a line is the median of its finished shifts over these days")
    min_shifts: Annotated[int, Field(ge=1)] = Field(
        default=3, description="fewer finished shifts with data than this is a cold start")
    cold_start_oee: Annotated[float, Field(gt=0, le=1)] = Field(
        default=0.6, description="the efficiency a line is planned with on a cold start")
    holidays: list[date] = Field(default=[], description="local days on which no shift is worked")
    maintenance: list[MaintenanceWindow] = Field(default=[], description="planned maintenance windows per line")
    finished_goods: dict[str, Annotated[float, Field(ge=0)]] = Field(
        default={}, description="finished-goods stock per SKU, published with the capacity")
    tokens: list[FeedToken] = Field(default=[], description="bearer tokens that may read the /v1 feed")
    frozen_hours: Annotated[float, Field(ge=0, le=720)] = Field(
        default=0, description="a promise is not planned into the next hours: the plan there is fixed")
    material_lead_time_h: Annotated[float, Field(ge=0, le=2160)] = Field(
        default=0, description="hours to get material for a new promise; it is planned after them")
    constraint_horizon_min: Annotated[float, Field(gt=0, le=1440)] = Field(
        default=60, description="operators missing and material running short are expected to last this long")
    hold_ttl_s: Annotated[int, Field(ge=60, le=7 * 86400)] = Field(
        default=3600, description="how long a hold lasts when the request does not say")
    push: PushSettings = PushSettings()


class FactoryConfig(Model):
    site: Site
    shifts: list[Shift]
    products: list[Product] = []
    materials: list[Material] = []
    operators: list[Operator] = []
    lines: list[Line]
    machine_types: dict[str, MachineType]
    state_maps: dict[str, StateMapSpec]
    sources: Sources = Sources()
    agent: AgentSettings = AgentSettings()
    outbox: OutboxSettings = OutboxSettings()
    historian: HistorianSettings = HistorianSettings()
    live: LiveSettings = LiveSettings()
    dashboard: DashboardSettings = DashboardSettings()
    kpi: KpiSettings = KpiSettings()
    capacity: CapacitySettings = CapacitySettings()

    def machines(self) -> Iterable[tuple[Line, Machine]]:
        for line in self.lines:
            for machine in line.machines:
                yield line, machine

    def state_mapper(self, machine_type: str) -> StateMapper:
        return self.state_maps[self.machine_types[machine_type].state_map].mapper()

    def mapping_plan(self) -> MappingPlan:
        """What the mapper (agent/core) needs of this config, as plain data."""
        bindings = []
        for line, machine in self.machines():
            mtype = self.machine_types[machine.type]
            mapper = self.state_mapper(machine.type)
            for spec in mtype.tags:
                pv_tags = {"site": self.site.id, "line": line.id, "machine": machine.id,
                           "name": spec.name or spec.node}
                bindings.append(TagBinding(machine.source, machine.node_id(spec), line.id, machine.id, spec.plan(),
                                           mapper, dict(mtype.alarm_texts), pv_tags))
        return MappingPlan(
            site=self.site.id,
            stations={ln.id: frozenset(s.id for s in ln.stations) for ln in self.lines},
            machines={m.id: (ln.id, m.source) for ln, m in self.machines()},
            materials=frozenset(m.id for m in self.materials),
            skus=frozenset(p.sku for p in self.products),
            badges={o.badge: o.id for o in self.operators},
            routes={s.id: [r.plan() for r in s.routes] for s in self.sources.mqtt},
            max_payload={s.id: s.max_payload_bytes for s in self.sources.mqtt},
            bindings=bindings,
            microstop_s=self.kpi.microstop_s)


# --- loading and errors -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a config file, in the words a user needs to fix it."""

    file: str
    line: int | None
    path: str
    found: str
    expected: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path}\n  found:    {self.found}\n  expected: {self.expected}"


class ConfigError(Exception):
    """The config cannot be used; `problems` lists every issue found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def _key_path(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _line_index(node: yaml.Node, path: tuple[Any, ...], index: dict[tuple[Any, ...], int]) -> None:
    index[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = _scalar_key(key_node)
            index[path + (key,)] = key_node.start_mark.line + 1
            _line_index(value_node, path + (key,), index)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_index(item, path + (i,), index)


def _scalar_key(key_node: yaml.Node) -> Any:
    value = key_node.value
    if key_node.tag.endswith(":int"):
        try:
            return int(value)
        except ValueError:
            return value
    return value


def _line_for(index: dict[tuple[Any, ...], int], loc: tuple[Any, ...]) -> int | None:
    for n in range(len(loc), 0, -1):
        if loc[:n] in index:
            return index[loc[:n]]
    return None


def _value_at(data: Any, loc: tuple[Any, ...]) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _expected_from_pydantic(err: dict[str, Any]) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "missing":
        return "this key (it is required)"
    if kind == "extra_forbidden":
        return "no such key here (check the spelling; see config/README.md)"
    if kind == "literal_error":
        return "one of " + str(ctx.get("expected", ""))
    if kind == "enum":
        return "one of " + str(ctx.get("expected", ""))
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        if pattern == SLUG:
            return "a short id of lower-case letters, digits, '-' or '_' (at most 48)"
        return f"text matching {pattern}"
    msg = str(err["msg"])
    if kind == "value_error":
        return msg.removeprefix("Value error, ")
    if kind in ("greater_than", "greater_than_equal", "less_than_equal", "less_than"):
        return "a number " + msg.removeprefix("Input should be ")
    return msg.removeprefix("Input should be ")


def _hide_url_password(value: Any) -> Any:
    """A URL with `user:password@` in it, echoed in an error, shows the user but not the password."""
    if isinstance(value, str):
        return re.sub(r"^([a-z][a-z0-9+.-]*://[^/:@\s]*):[^@/\s]*@", r"\1:(not shown)@", value)
    return value


def _cross_check(cfg: FactoryConfig, resolve_secrets: bool) -> list[tuple[tuple[Any, ...], Any, str]]:
    """Rules across sections: references resolve, ids are unique."""
    out: list[tuple[tuple[Any, ...], Any, str]] = []
    line_ids = [ln.id for ln in cfg.lines]
    material_ids = {m.id for m in cfg.materials}
    product_skus = {p.sku for p in cfg.products}
    tag_kinds = cfg.sources.tag_kinds()
    mqtt_ids = {s.id for s in cfg.sources.mqtt}

    def unique(items: list[str], loc: tuple[Any, ...], key: str, what: str) -> None:
        seen: set[str] = set()
        for i, item in enumerate(items):
            if item in seen:
                out.append((loc + (i, key), item, f"a {what} not used before (ids are unique)"))
            seen.add(item)

    unique(line_ids, ("lines",), "id", "line id")
    unique([s.id for s in cfg.shifts], ("shifts",), "id", "shift id")
    unique([p.sku for p in cfg.products], ("products",), "sku", "SKU")
    unique([o.badge for o in cfg.operators], ("operators",), "badge", "badge id")
    unique([o.id for o in cfg.operators], ("operators",), "id", "operator id")
    unique([m.id for m in cfg.materials], ("materials",), "id", "material id")
    seen_source: set[str] = set()
    for kind in ("opcua", "mqtt", "modbus", "s7"):
        for si, entry in enumerate(getattr(cfg.sources, kind)):
            if entry.id in seen_source:
                out.append((("sources", kind, si, "id"), entry.id,
                            "a source id not used before (ids are unique across all kinds of source)"))
            seen_source.add(entry.id)
    for li, line in enumerate(cfg.lines):
        unique([s.id for s in line.stations], ("lines", li, "stations"), "id", "station id on this line")
    seen_machine: set[str] = set()
    for li, line in enumerate(cfg.lines):
        station_ids = {s.id for s in line.stations}
        for mi, machine in enumerate(line.machines):
            loc = ("lines", li, "machines", mi)
            if machine.id in seen_machine:
                out.append((loc + ("id",), machine.id, "a machine id not used before (ids are unique per site)"))
            seen_machine.add(machine.id)
            if machine.type not in cfg.machine_types:
                out.append((loc + ("type",), machine.type,
                            "one of the machine_types: " + ", ".join(sorted(cfg.machine_types))))
            if machine.source not in tag_kinds:
                out.append((loc + ("source",), machine.source,
                            "the id of an OPC UA, Modbus or S7 source: "
                            + (", ".join(sorted(tag_kinds)) or "(none defined)")))
            if machine.station is not None and machine.station not in station_ids:
                out.append((loc + ("station",), machine.station,
                            f"a station of line {line.id}: " + ", ".join(sorted(station_ids))))
            if machine.type in cfg.machine_types:
                out += _check_node_ids(machine, cfg.machine_types[machine.type], loc,
                                       tag_kinds.get(machine.source, "opcua"))
    for name, mtype in cfg.machine_types.items():
        if mtype.state_map not in cfg.state_maps:
            out.append((("machine_types", name, "state_map"), mtype.state_map,
                        "one of the state_maps: " + ", ".join(sorted(cfg.state_maps))))
        counters = [t.counter for t in mtype.tags if t.signal == "count"]
        for counter in sorted({c for c in counters if counters.count(c) > 1}, key=str):
            out.append((("machine_types", name, "tags"), f"{counters.count(counter)} tags with counter {counter}",
                        "at most one count tag per counter (total, good, reject)"))
        if sum(1 for t in mtype.tags if t.signal == "product") > 1:
            out.append((("machine_types", name, "tags"), "several product tags", "at most one tag with signal: product"))
        for ti, tag in enumerate(mtype.tags):
            if tag.codes is not None and tag.signal != "product":
                out.append((("machine_types", name, "tags", ti, "codes"), tag.codes,
                            "nothing: codes is for a tag with signal: product"))
            for code, sku in (tag.codes or {}).items() if tag.signal == "product" else ():
                if sku not in product_skus:
                    out.append((("machine_types", name, "tags", ti, "codes", code), sku,
                                "a SKU of products: " + (", ".join(sorted(product_skus)) or "(none defined)")))
        if sum(1 for t in mtype.tags if t.signal == "alarm") > 1:
            out.append((("machine_types", name, "tags"), "several alarm tags", "at most one tag with signal: alarm"))
        state_map = cfg.state_maps.get(mtype.state_map)
        n_state = sum(1 for t in mtype.tags if t.signal == "state")
        n_bits = sum(1 for t in mtype.tags if t.signal == "state_bit")
        if state_map is not None and state_map.kind == "bits":
            if n_state or not n_bits:
                out.append((("machine_types", name, "tags"), f"{n_state} state and {n_bits} state_bit tags",
                            "state_bit tags (one per bit of the bits state map) and no state tag"))
            for ti, tag in enumerate(mtype.tags):
                if tag.signal == "state_bit" and (tag.bit or tag.node) not in {r.bit for r in state_map.rules}:
                    out.append((("machine_types", name, "tags", ti, "bit"), tag.bit or tag.node,
                                "a bit named in the rules of state map " + mtype.state_map))
        elif n_state != 1 or n_bits:
            out.append((("machine_types", name, "tags"), f"{n_state} state and {n_bits} state_bit tags",
                        "exactly one tag with signal: state (state_bit tags go with a bits state map)"))
    for pi, product in enumerate(cfg.products):
        for line_id in product.ideal_cycle_s:
            if line_id not in line_ids:
                out.append((("products", pi, "ideal_cycle_s", line_id), line_id, "a line id: " + ", ".join(line_ids)))
        for material_id in product.bom:
            if material_id not in material_ids:
                out.append((("products", pi, "bom", material_id), material_id,
                            "a material id: " + ", ".join(sorted(material_ids))))
    from agent.core.mapping import compile_route

    for si, mqtt_source in enumerate(cfg.sources.mqtt):
        for ri, route in enumerate(mqtt_source.routes):
            try:
                compile_route(route.plan())
            except ValueError as exc:
                out.append((("sources", "mqtt", si, "routes", ri), route.pattern, str(exc)))
    if cfg.dashboard.mqtt is not None and cfg.dashboard.mqtt not in mqtt_ids:
        out.append((("dashboard", "mqtt"), cfg.dashboard.mqtt,
                    "the id of an MQTT source: " + ", ".join(sorted(mqtt_ids))))
    for ki, line_id in enumerate(cfg.dashboard.kiosk.lines):
        if line_id not in line_ids:
            out.append((("dashboard", "kiosk", "lines", ki), line_id, "a line id: " + ", ".join(line_ids)))
    unique([r.code for r in cfg.dashboard.stop_reasons], ("dashboard", "stop_reasons"), "code", "stop reason code")
    unique([f"{p.line}/{p.sku or '*'}" for p in cfg.kpi.plans], ("kpi", "plans"), "sku", "line and SKU")
    for pi, plan in enumerate(cfg.kpi.plans):
        if plan.line not in line_ids:
            out.append((("kpi", "plans", pi, "line"), plan.line, "a line id: " + ", ".join(line_ids)))
        elif plan.sku is not None and not any(p.sku == plan.sku and plan.line in p.ideal_cycle_s
                                              for p in cfg.products):
            skus = [p.sku for p in cfg.products if plan.line in p.ideal_cycle_s]
            out.append((("kpi", "plans", pi, "sku"), plan.sku,
                        f"a SKU made on line {plan.line}: " + (", ".join(skus) or "(none)")))
    for wi, window in enumerate(cfg.capacity.maintenance):
        if window.line not in line_ids:
            out.append((("capacity", "maintenance", wi, "line"), window.line, "a line id: " + ", ".join(line_ids)))
    for sku in cfg.capacity.finished_goods:
        if sku not in product_skus:
            out.append((("capacity", "finished_goods", sku), sku,
                        "a SKU of the products: " + (", ".join(sorted(product_skus)) or "(none)")))
    unique([t.name for t in cfg.capacity.tokens], ("capacity", "tokens"), "name", "token name")
    unique([e.name for e in cfg.capacity.push.endpoints], ("capacity", "push", "endpoints"), "name", "endpoint name")
    for ei, endpoint in enumerate(cfg.capacity.push.endpoints):
        at = ("capacity", "push", "endpoints", ei)
        if not endpoint.secrets and not endpoint.secret_files:
            out.append((at, endpoint.name, "secrets or secret_files: the key the platform verifies events with"))
        for si, secret_ref in enumerate(endpoint.secrets):
            if resolve_secrets and resolve_secret(secret_ref, None) is None:
                out.append((at + ("secrets", si), str(secret_ref), f"environment variable {secret_ref[2:-1]} to be set"))
        for si, path in enumerate(endpoint.secret_files):
            if resolve_secrets and not (path.is_file() and os.access(path, os.R_OK)):
                out.append((at + ("secret_files", si), str(path), "a readable file"))
    unique([u.name for u in cfg.dashboard.users], ("dashboard", "users"), "name", "user name")
    if cfg.live.mqtt is not None and cfg.live.mqtt not in mqtt_ids:
        out.append((("live", "mqtt"), cfg.live.mqtt, "the id of an MQTT source: " + ", ".join(sorted(mqtt_ids))))
    secret_holders: list[tuple[str, int, OpcUaSource | MqttSource]] = [
        *(("opcua", i, s) for i, s in enumerate(cfg.sources.opcua)),
        *(("mqtt", i, s) for i, s in enumerate(cfg.sources.mqtt))]
    for kind, si, source in secret_holders:
        if source.password is not None and source.password_file is not None:
            out.append((("sources", kind, si, "password_file"), str(source.password_file),
                        "either password or password_file, not both"))
        if resolve_secrets and source.password is not None and resolve_secret(source.password, None) is None:
            out.append((("sources", kind, si, "password"), str(source.password),
                        f"environment variable {source.password[2:-1]} to be set"))
        if resolve_secrets and source.password_file is not None and not (
                source.password_file.is_file() and os.access(source.password_file, os.R_OK)):
            out.append((("sources", kind, si, "password_file"), str(source.password_file), "a readable file"))
    dashboard_secrets: list[tuple[tuple[Any, ...], SecretRef | None, Path | None]] = [
        (("dashboard", "users", ui), u.password, u.password_file) for ui, u in enumerate(cfg.dashboard.users)]
    dashboard_secrets.append((("dashboard",), cfg.dashboard.secret_key, cfg.dashboard.secret_key_file))
    if cfg.dashboard.secret_key is not None and cfg.dashboard.secret_key_file is not None:
        out.append((("dashboard", "secret_key_file"), str(cfg.dashboard.secret_key_file),
                    "either secret_key or secret_key_file, not both"))
    for loc, ref, file in dashboard_secrets if resolve_secrets else []:
        key = "secret_key" if loc == ("dashboard",) else "password"
        if ref is not None and resolve_secret(ref, None) is None:
            out.append((loc + (key,), str(ref), f"environment variable {ref[2:-1]} to be set"))
        if file is not None and not (file.is_file() and os.access(file, os.R_OK)):
            out.append((loc + (key + "_file",), str(file), "a readable file"))
    out += _check_historian(cfg.historian, resolve_secrets)
    return out


def _check_node_ids(machine: Machine, mtype: MachineType, loc: tuple[Any, ...],
                    kind: str) -> list[tuple[tuple[Any, ...], Any, str]]:
    """Every tag of the machine has an address its source can read: from node_ids, or node_prefix + the tag's
    node, in the syntax of the source's kind (an OPC UA NodeId, a Modbus or an S7 address)."""
    out: list[tuple[tuple[Any, ...], Any, str]] = []
    parse = ADDRESS_PARSERS[kind]
    nodes = list(dict.fromkeys(t.node for t in mtype.tags))
    for node, address in machine.node_ids.items():
        if node not in nodes:
            out.append((loc + ("node_ids", node), node, f"the node of a tag of machine type {machine.type}: "
                        + ", ".join(nodes)))
            continue
        try:
            parse(address)
        except ValueError as exc:
            out.append((loc + ("node_ids", node), address, str(exc)))
    prefixed = [node for node in nodes if node not in machine.node_ids]
    if prefixed and machine.node_prefix is None and kind == "opcua":
        out.append((loc + ("node_prefix",), "nothing (key missing)",
                    "a prefix for the tags' nodes (e.g. nsu=urn:vendor:plc;s=line-1.press-1.), or a full NodeId "
                    "in node_ids for " + ", ".join(prefixed)))
        return out
    prefix = machine.node_prefix or ""
    for node in prefixed:
        try:
            parse(f"{prefix}{node}")
        except ValueError as exc:
            where = "node_prefix" if machine.node_prefix is not None else "type"
            out.append((loc + (where,), machine.node_prefix if machine.node_prefix is not None else machine.type,
                        f"{exc}, once a tag's node is appended (here {prefix}{node})"))
            break
    return out


def _check_historian(h: HistorianSettings, resolve_secrets: bool) -> list[tuple[tuple[Any, ...], Any, str]]:
    out: list[tuple[tuple[Any, ...], Any, str]] = []
    loc = ("historian",)
    if h.kind == "sqlite":
        for key in INFLUX_KEYS:
            if key in h.model_fields_set:
                out.append((loc + (key,), getattr(h, key) if key not in SECRET_KEYS else "(not shown)",
                            "nothing: this key is for kind: influxdb"))
        return out
    if h.path is not None:
        out.append((loc + ("path",), str(h.path), "nothing: path is for kind: sqlite"))
    if h.url is None:
        out.append((loc + ("url",), "nothing (key missing)", "the InfluxDB URL, e.g. http://127.0.0.1:8086"))
    if h.api == "v1":
        if not h.database:
            out.append((loc + ("database",), "nothing (key missing)", "the InfluxDB 1.x database to write to"))
        for key in ("org", "bucket", "token", "token_file"):
            if key in h.model_fields_set:
                out.append((loc + (key,), "(set)", "nothing with api: v1 (org, bucket and token are for api: v2)"))
        if (h.password is not None or h.password_file is not None) and not h.username:
            out.append((loc + ("username",), "nothing (key missing)", "the user the password belongs to"))
    else:
        for key in ("org", "bucket"):
            if not getattr(h, key):
                out.append((loc + (key,), "nothing (key missing)", f"the InfluxDB {key} (api: v2)"))
        if h.token is None and h.token_file is None:
            out.append((loc + ("token",), "nothing (key missing)",
                        "an API token as ${ENV_VAR}, or token_file (api: v2)"))
        if h.retention_days is not None:
            out.append((loc + ("retention_days",), h.retention_days,
                        "nothing with api: v2: set the bucket's retention period in InfluxDB"))
        for key in ("username", "password", "password_file", "retention_policy"):
            if key in h.model_fields_set:
                out.append((loc + (key,), "(set)", "nothing with api: v2 (use org, bucket and token)"))
    for secret, file in (("password", "password_file"), ("token", "token_file")):
        ref, path = getattr(h, secret), getattr(h, file)
        if ref is not None and path is not None:
            out.append((loc + (file,), str(path), f"either {secret} or {file}, not both"))
        if resolve_secrets and ref is not None and resolve_secret(ref, None) is None:
            out.append((loc + (secret,), str(ref), f"environment variable {ref[2:-1]} to be set"))
        if resolve_secrets and path is not None and not (path.is_file() and os.access(path, os.R_OK)):
            out.append((loc + (file,), str(path), "a readable file"))
    if h.ca_file is not None and resolve_secrets and not h.ca_file.is_file():
        out.append((loc + ("ca_file",), str(h.ca_file), "a readable CA certificate file (PEM)"))
    return out


def load(path: str | Path, resolve_secrets: bool = True) -> FactoryConfig:
    """Read, validate and cross-check a factory config; raise ConfigError listing every problem.

    `resolve_secrets=False` skips checking that referenced environment variables and files exist (for tools
    such as the simulators that read the factory layout but never connect with the agent's credentials).
    """
    path = Path(path)
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Problem(file, None, "(file)", exc.strerror or str(exc), "a readable YAML file")]) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([Problem(file, line, "(syntax)", str(problem), "valid YAML")]) from None
    if not isinstance(data, dict):
        raise ConfigError([Problem(file, 1, "(top level)", _describe(data), "a mapping with site, shifts, lines, ...")])
    index: dict[tuple[Any, ...], int] = {}
    if root is not None:
        _line_index(root, (), index)
    try:
        cfg = FactoryConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            if err["type"] == "missing":
                found = "nothing (key missing)"
            elif loc and loc[-1] in SECRET_KEYS:
                found = "an inline value (not shown)"
            else:
                found = _describe(_hide_url_password(_value_at(data, loc)))
            problems.append(Problem(file, _line_for(index, loc), _key_path(loc), found, _expected_from_pydantic(dict(err))))
        raise ConfigError(problems) from None
    cross = _cross_check(cfg, resolve_secrets)
    if cross:
        raise ConfigError([
            Problem(file, _line_for(index, loc), _key_path(loc), _describe(found), expected)
            for loc, found, expected in cross
        ])
    return cfg


def check(path: str | Path) -> list[Problem]:
    """Every problem in a config file; an empty list when it is valid."""
    try:
        load(path)
    except ConfigError as exc:
        return exc.problems
    return []
