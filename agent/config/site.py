"""The site and what it works with: the site itself, its shifts and breaks, products, materials and operators."""

from __future__ import annotations

import zoneinfo
from typing import Annotated, Literal

from pydantic import Field, field_validator

from agent.config.base import HHMM, Issue, Model, Slug, unique


class Site(Model):
    id: Slug
    name: str = Field(default="", description="display name; the id when empty")
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


def check_site_ids(shifts: list[Shift], products: list[Product], operators: list[Operator],
                   materials: list[Material]) -> list[Issue]:
    """Shift ids, SKUs, badges, operator ids and material ids are each unique."""
    return [
        *unique([s.id for s in shifts], ("shifts",), "id", "shift id"),
        *unique([p.sku for p in products], ("products",), "sku", "SKU"),
        *unique([o.badge for o in operators], ("operators",), "badge", "badge id"),
        *unique([o.id for o in operators], ("operators",), "id", "operator id"),
        *unique([m.id for m in materials], ("materials",), "id", "material id"),
    ]


def check_products(products: list[Product], line_ids: list[str], material_ids: set[str]) -> list[Issue]:
    """A product's cycle times name lines and its bill of materials names materials of this config."""
    out: list[Issue] = []
    for pi, product in enumerate(products):
        for line_id in product.ideal_cycle_s:
            if line_id not in line_ids:
                out.append((("products", pi, "ideal_cycle_s", line_id), line_id, "a line id: " + ", ".join(line_ids)))
        for material_id in product.bom:
            if material_id not in material_ids:
                out.append((("products", pi, "bom", material_id), material_id,
                            "a material id: " + ", ".join(sorted(material_ids))))
    return out
