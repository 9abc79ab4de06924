"""KPI settings: when a stop is a microstop, the planned rate per line and SKU, when data counts as lagging."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from agent.config.base import Issue, Model, unique
from agent.config.site import Product


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


def check_kpi(kpi: KpiSettings, line_ids: list[str], products: list[Product]) -> list[Issue]:
    """One plans entry per line and SKU; each names a line, and a SKU made on that line."""
    out = unique([f"{p.line}/{p.sku or '*'}" for p in kpi.plans], ("kpi", "plans"), "sku", "line and SKU")
    for pi, plan in enumerate(kpi.plans):
        if plan.line not in line_ids:
            out.append((("kpi", "plans", pi, "line"), plan.line, "a line id: " + ", ".join(line_ids)))
        elif plan.sku is not None and not any(p.sku == plan.sku and plan.line in p.ideal_cycle_s for p in products):
            skus = [p.sku for p in products if plan.line in p.ideal_cycle_s]
            out.append((("kpi", "plans", pi, "sku"), plan.sku,
                        f"a SKU made on line {plan.line}: " + (", ".join(skus) or "(none)")))
    return out
