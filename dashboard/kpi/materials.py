"""Line-side stock against consumption: minutes to shortage and the line's output rate."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dashboard.kpi.oee import Count
from dashboard.kpi.shifts import NS


@dataclass(frozen=True)
class MaterialOutlook:
    material: str
    stock: float
    per_unit: float  # BOM quantity of the SKU running now
    units_per_min: float
    minutes_to_shortage: float | None  # None: nothing is consumed at this rate
    below_reorder_point: bool


def rate_per_min(counts: Sequence[Count], now_ns: int, window_s: float = 900) -> float:
    """Units made per minute over the last `window_s` seconds before `now_ns`: the `total` counter, or good +
    reject for a machine without a total counter (every unit made takes its material, good or not)."""
    since = now_ns - round(window_s * NS)
    has_total = any(c.counter == "total" for c in counts)
    kinds = ("total",) if has_total else ("good", "reject")
    made = sum(c.delta for c in counts if c.counter in kinds and since <= c.time_ns < now_ns)
    return made / (window_s / 60)


def outlook(material: str, stock: float, per_unit: float, units_per_min: float,
            reorder_point: float = 0.0) -> MaterialOutlook:
    """Minutes until the stock runs out: stock / (BOM qty x current rate); 0 when it is already out."""
    use_per_min = per_unit * units_per_min
    minutes = max(0.0, stock) / use_per_min if use_per_min > 0 else None
    return MaterialOutlook(material, stock, per_unit, units_per_min, minutes, stock < reorder_point)
