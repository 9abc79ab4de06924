"""/healthz and /metrics as factory IT and Prometheus see them."""

from tests.e2e.conftest import wait_until

METRICS = [
    "shopfloor_points_in_total", "shopfloor_messages_in_total", "shopfloor_points_out_total",
    "shopfloor_dead_letters_total", "shopfloor_source_reconnects_total", "shopfloor_sink_write_errors_total",
    "shopfloor_outbox_depth_points", "shopfloor_outbox_bytes", "shopfloor_outbox_oldest_age_seconds",
    "shopfloor_outbox_dropped_points", "shopfloor_source_connected", "shopfloor_source_lag_seconds",
    "shopfloor_historian_last_write_timestamp_seconds",
]


def test_metrics_and_health_report_the_flow(make_system):
    system = make_system()
    system.plc(speed=60)
    system.agent()
    system.line("--speed", "60")
    wait_until(lambda: system.metric("shopfloor_points_out_total") > 50, 30, "points through to the historian")
    status, text = system.http("/metrics")
    assert status == 200
    for name in METRICS:
        assert f"\n{name}" in text, name
    assert 'shopfloor_source_connected{source="plc-1"} 1.0' in text
    assert 'shopfloor_source_connected{source="line-bus"} 1.0' in text
    health = wait_until(lambda: (h := system.health())["historian"]["last_write_age_s"] is not None and h, 10,
                        "a historian write")
    assert system.http("/healthz")[0] == 200 and health["status"] == "ok"
    assert health["historian"]["last_write_age_s"] < 5 and health["historian"]["last_error"] is None
    assert set(health["outbox"]) >= {"points", "bytes", "oldest_age_s", "dropped_points", "dead_letters"}
    assert system.metric("shopfloor_source_lag_seconds") < 5
    assert system.http("/nope")[0] == 404
