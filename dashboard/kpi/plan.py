"""What the plan expects a line to have made by a time: planned rate x planned busy time, order by order.

The plan runs only while an order runs (between orders the line is idle by plan) and never in a break. Its rate
is the line's and SKU's planned rate in units per hour (config `kpi`: a target OEE of the ideal rate, or units
per hour; by default 85 % of the ideal rate), so a line running as planned is on plan, not behind.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from dashboard.kpi.oee import Order
from dashboard.kpi.shifts import NS


def planned_units(start_ns: int, end_ns: int, breaks: Sequence[tuple[int, int]], orders: Sequence[Order],
                  units_per_hour: Callable[[str], float | None]) -> float | None:
    """Units planned over [start, end): each order's busy time in it (breaks out) x its SKU's planned rate.
    None when no order ran in it or no running SKU has a planned rate."""
    total, planned = 0.0, False
    for order in orders:
        a, b = max(start_ns, order.start_ns), min(end_ns, order.end_ns)
        if b <= a:
            continue
        rate = units_per_hour(order.sku)
        if rate is None:
            continue
        busy = (b - a) - sum(max(0, min(b, b1) - max(a, b0)) for b0, b1 in breaks)
        total += max(0, busy) / NS / 3600 * rate
        planned = True
    return total if planned else None
