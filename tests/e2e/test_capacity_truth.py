"""Capacity against what the simulated plant really made (bench/capacity_truth.py, shortened): the Total
promised a day ahead of each shift against the ideal time of the good units made in it, and each order's
promised completion against when it really finished. `make bench` runs the same over 14 scored days."""

import pytest

from bench.capacity_truth import measure


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_capacity_promised_a_day_ahead_agrees_with_what_the_plant_made():
    found = measure(days=4, warmup_days=2)
    assert found["orders_with_promise"] >= 20
    for line, figures in found["lines"].items():
        assert figures["shifts"] >= 3, line
        assert figures["mape"] <= 0.10, (line, figures)
    assert found["dates_met"] >= 0.95
