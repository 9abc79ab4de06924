"""deploy/prometheus/shopfloor-rules.yml: every metric its alerts use is one a running agent or `shopfloor sync`
really exposes, and Prometheus' own checker (`promtool`, Debian's prometheus package) accepts the rules and
their unit tests."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from simulators.broker import free_port
from tests.conftest import ROOT
from tests.e2e.conftest import Proc, wait_until

pytestmark = pytest.mark.slow

RULES_DIR = ROOT / "deploy" / "prometheus"
RULES = RULES_DIR / "shopfloor-rules.yml"
# Series Prometheus makes itself for every scrape target, not the targets' /metrics.
PROMETHEUS_OWN = {"up"}
PROMQL_WORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset",
                "bool", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: what is left once strings, label matchers, grouping
    clauses, ranges, functions and keywords are taken out."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    names = set()
    for m in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", expr):
        if expr[m.end():].lstrip().startswith("(") or m.group().lower() in PROMQL_WORDS:
            continue
        names.add(m.group())
    return names


def exposed(text: str) -> dict[str, set[str]]:
    """Metric name -> label names of its samples, from a /metrics page; a metric declared (# TYPE) but with
    no sample yet (a labelled counter before its first event) has an empty label set."""
    out: dict[str, set[str]] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            out.setdefault(line.split()[2], set())
        elif line and not line.startswith("#"):
            name, _, rest = line.partition("{")
            labels = set(re.findall(r'(\w+)="', rest.split("}")[0])) if rest else set()
            out.setdefault(name.split(" ")[0], set()).update(labels)
    return out


def rules() -> list[dict[str, Any]]:
    return [r for group in yaml.safe_load(RULES.read_text())["groups"] for r in group["rules"]]


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


def test_expression_parsing_finds_the_metrics_and_only_them() -> None:
    expr = ('sum by (instance, source) (increase(shopfloor_a_total{job="x", source=~"plc.*"}[15m])) > 0 '
            'and (time() - shopfloor_b_seconds offset 5m) > 1e3 unless on(instance) up == 0')
    assert metric_names(expr) == {"shopfloor_a_total", "shopfloor_b_seconds", "up"}


def test_every_metric_of_the_rules_is_exposed_by_a_running_agent_and_sync(make_system, tmp_path: Path) -> None:
    secret = tmp_path / "platform-secret"
    secret.write_text("whsec_" + base64.b64encode(b"a-key-for-the-rules-test-00001").decode())
    platform_port, sync_port = free_port(), free_port()

    def push_to_platform(data: dict[str, Any]) -> None:
        data["capacity"] = {"push": {"in_dashboard": False, "endpoints": [{
            "name": "platform", "url": f"http://127.0.0.1:{platform_port}/events", "secret_files": [str(secret)]}]}}
        data.setdefault("outbox", {})["quota_mb"] = 64  # ShopfloorOutboxNearQuota compares with the agent's own

    system = make_system(push_to_platform)
    # No PLC simulator: every metric is on /metrics from the start (labelled per source once the source
    # exists); the line simulator's messages are enough to write, and to make dead letters.
    system.agent()
    system.line("--speed", "60", "--malformed-every", "20")
    platform = Proc("platform", ["simulate", "platform", "--port", str(platform_port), "--secret-file",
                                 str(secret)], tmp_path).start(ready="platform simulator listening")
    sync = Proc("sync", ["sync", "--config", str(system.config), "--port", str(sync_port)], tmp_path)
    system.procs += [platform, sync]
    sync.start(ready="shopfloor sync: pushing capacity")
    wait_until(lambda: system.metric("shopfloor_dead_letters_total") > 0 and
               system.metric("shopfloor_historian_last_write_timestamp_seconds") > 0, 60,
               "points written and a malformed message kept as a dead letter")
    wait_until(lambda: "shopfloor_push_last_delivery_timestamp_seconds{" in get(
        f"http://127.0.0.1:{sync_port}/metrics"), 30, "a capacity event delivered")
    assert system.metric("shopfloor_outbox_quota_bytes") == 64 * 1024 * 1024
    agent = exposed(system.http("/metrics")[1])
    pushing = exposed(get(f"http://127.0.0.1:{sync_port}/metrics"))

    checked = set()
    for rule in rules():
        names = metric_names(rule["expr"])
        assert names, rule["alert"]
        templates = " ".join(rule["annotations"].values())
        for name in names - PROMETHEUS_OWN:
            assert name in agent or name in pushing, f"{rule['alert']}: {name} is on no /metrics page"
            labels = agent.get(name) or pushing.get(name) or set()
            # labels the alert's text names must be labels of its series (when the series has samples here)
            if labels:
                for label in re.findall(r"\$labels\.(\w+)", templates):
                    assert label in labels | {"instance", "job"}, f"{rule['alert']}: {name} has no label {label}"
            checked.add(name)
    # the alerts cover both processes: the agent's flow and the capacity push
    assert {"shopfloor_source_connected", "shopfloor_outbox_oldest_age_seconds", "shopfloor_sink_write_errors_total",
            "shopfloor_dead_letters_total", "shopfloor_source_read_errors_total", "shopfloor_outbox_bytes",
            "shopfloor_outbox_quota_bytes", "shopfloor_push_failures_total"} <= checked


def test_rule_names_and_severities_are_what_the_operations_guide_lists() -> None:
    guide = (ROOT / "docs" / "operations.md").read_text()
    for rule in rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        assert rule["alert"] in guide, f"{rule['alert']} is not in docs/operations.md"


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not installed (Debian package prometheus; `make test` installs it)")
    return found


@pytest.mark.parametrize("argv", [["check", "rules", "shopfloor-rules.yml"],
                                  ["check", "config", "prometheus.yml"],
                                  ["test", "rules", "shopfloor-rules.test.yml"]],
                         ids=["check-rules", "check-config", "unit-tests"])
def test_promtool_accepts_the_rules(argv: list[str]) -> None:
    done = subprocess.run([_promtool(), *argv], cwd=RULES_DIR, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr
