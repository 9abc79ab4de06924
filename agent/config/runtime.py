"""How the agent itself runs: its id, data directory and HTTP port (`agent:`), the outbox, the historian it
writes to (SQLite, or InfluxDB 1.x/2.x/3.x) and the live topics it publishes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from agent.config.base import (
    SECRET_KEYS,
    Issue,
    Model,
    NoCredentials,
    SecretRef,
    Slug,
    unreadable_file,
    unset_secret,
)


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
               "bucket", "token", "token_file", "timeout_s", "batch_lines", "gzip", "verify_tls", "ca_file",
               "in_flight")


class HistorianSettings(Model):
    kind: Literal["sqlite", "influxdb"] = "sqlite"
    path: Path | None = Field(default=None, description="sqlite: default <data-dir>/historian.sqlite3")
    retention_days: Annotated[int, Field(ge=1)] | None = Field(
        default=400, description="sqlite: default 400; influxdb: unset, the database's retention policy decides")
    # InfluxDB: 1.x through /write (database, retention_policy, username/password) with api: v1;
    # 2.x, 3.x and Cloud (org, bucket, token) with api: v2.
    url: Annotated[str, NoCredentials, Field(pattern=r"^https?://[^\s/@?#]+(/[^\s?#]*)?$",
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
    in_flight: Annotated[int, Field(ge=1, le=16, description="influxdb: write requests at once")] = 4

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


def check_live(live: LiveSettings, mqtt_ids: set[str]) -> list[Issue]:
    """Live topics go to the broker of an MQTT source of this config."""
    if live.mqtt is not None and live.mqtt not in mqtt_ids:
        return [(("live", "mqtt"), live.mqtt, "the id of an MQTT source: " + ", ".join(sorted(mqtt_ids)))]
    return []


def check_historian(h: HistorianSettings, resolve_secrets: bool) -> list[Issue]:
    """The historian has the keys of its kind and API and no others; its secrets come from one place each and
    (when resolving) can be read."""
    out: list[Issue] = []
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
        if resolve_secrets:
            out += unset_secret(loc + (secret,), ref)
            out += unreadable_file(loc + (file,), path)
    if h.ca_file is not None and resolve_secrets and not h.ca_file.is_file():
        out.append((loc + ("ca_file",), str(h.ca_file), "a readable CA certificate file (PEM)"))
    return out
