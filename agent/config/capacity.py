"""Capacity publishing: the horizon and buckets, how a line's efficiency is planned, holidays and maintenance,
finished goods, the tokens that may read the feed and the endpoints capacity events are pushed to."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from agent.config.base import (
    Issue,
    Model,
    NoCredentials,
    SecretRef,
    Slug,
    unique,
    unreadable_file,
    unset_secret,
)


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
    url: Annotated[str, NoCredentials, Field(pattern=r"^https?://[^\s/@?#]+(/[^\s#]*)?$")] = Field(
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
    feed_url: Annotated[str, NoCredentials, Field(pattern=r"^https?://[^\s/@?#]+(/[^\s?#]*)?$")] | None = Field(
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


def check_capacity(capacity: CapacitySettings, line_ids: list[str], product_skus: set[str],
                   resolve_secrets: bool) -> list[Issue]:
    """Maintenance windows name lines and finished goods SKUs of this config; token and endpoint names are
    unique; every endpoint has a signing secret and (when resolving) each can be read."""
    out: list[Issue] = []
    for wi, window in enumerate(capacity.maintenance):
        if window.line not in line_ids:
            out.append((("capacity", "maintenance", wi, "line"), window.line, "a line id: " + ", ".join(line_ids)))
    for sku in capacity.finished_goods:
        if sku not in product_skus:
            out.append((("capacity", "finished_goods", sku), sku,
                        "a SKU of the products: " + (", ".join(sorted(product_skus)) or "(none)")))
    out += unique([t.name for t in capacity.tokens], ("capacity", "tokens"), "name", "token name")
    out += unique([e.name for e in capacity.push.endpoints], ("capacity", "push", "endpoints"), "name",
                  "endpoint name")
    for ei, endpoint in enumerate(capacity.push.endpoints):
        at = ("capacity", "push", "endpoints", ei)
        if not endpoint.secrets and not endpoint.secret_files:
            out.append((at, endpoint.name, "secrets or secret_files: the key the platform verifies events with"))
        if resolve_secrets:
            for si, secret_ref in enumerate(endpoint.secrets):
                out += unset_secret(at + ("secrets", si), secret_ref)
            for si, path in enumerate(endpoint.secret_files):
                out += unreadable_file(at + ("secret_files", si), path)
    return out
