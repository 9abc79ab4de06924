"""Config checks of the dashboard's limits on clients and of its trusted proxy (docs/https.md)."""

import ipaddress

import pytest

from agent.config import ConfigError, load
from dashboard.server import limits_of, server_settings
from tests.conftest import FACTORY_YAML

ANCHOR = "\nagent:\n"


def with_dashboard(tmp_path, dashboard_yaml):
    text = FACTORY_YAML.read_text(encoding="utf-8")
    assert ANCHOR in text and "\ndashboard:" not in text
    path = tmp_path / "factory.yaml"
    path.write_text(text.replace(ANCHOR, "\ndashboard:\n" + dashboard_yaml + ANCHOR, 1), encoding="utf-8")
    return path


def test_limits_and_proxy_reach_the_server(tmp_path):
    cfg = load(with_dashboard(tmp_path, "  max_streams: 50\n  trusted_proxy: 127.0.0.1\n"
                                        "  limits: {per_client: 8, header_timeout_s: 5, send_buffer_kb: 64}\n"))
    limits = limits_of(cfg.dashboard)
    assert (limits.connections, limits.per_client, limits.header_timeout_s) == (1050, 8, 5)
    assert limits.send_buffer_bytes == 64 * 1024 and limits.exempt == {"127.0.0.1"}
    settings = server_settings(cfg.dashboard)
    assert settings["trusted_proxy"] == "127.0.0.1" and "x-forwarded-proto" in settings["trusted_proxy_headers"]
    assert settings["max_request_body_size"] == cfg.dashboard.max_body_bytes + 1
    plain = load(FACTORY_YAML).dashboard
    assert plain.trusted_proxy is None and "trusted_proxy" not in server_settings(plain)
    assert limits_of(plain).exempt == frozenset()


def test_an_ipv6_proxy_is_taken_as_written(tmp_path):
    cfg = load(with_dashboard(tmp_path, "  trusted_proxy: '::1'\n"))
    assert cfg.dashboard.trusted_proxy == ipaddress.ip_address("::1")
    assert limits_of(cfg.dashboard).exempt == {"::1"}


@pytest.mark.parametrize(("dashboard", "path", "expected"), [
    ("  trusted_proxy: nginx.plant.local\n", "dashboard.trusted_proxy", "IP"),
    ("  trusted_proxy: '*'\n", "dashboard.trusted_proxy", "IP"),
    ("  trusted_proxy_headers: [x-real-ip]\n", "dashboard.trusted_proxy_headers[0]", "x-forwarded-proto"),
    ("  limits: {per_client: 0}\n", "dashboard.limits.per_client", "greater than or equal to 1"),
    ("  limits: {header_timeout_s: 0}\n", "dashboard.limits.header_timeout_s", "greater than or equal to 1"),
    ("  limits: {send_buffer_kb: 1}\n", "dashboard.limits.send_buffer_kb", "greater than or equal to 16"),
    ("  limits: {timeout: 5}\n", "dashboard.limits.timeout", "no such key here"),
])
def test_limit_and_proxy_mistakes_name_their_key(tmp_path, dashboard, path, expected):
    with pytest.raises(ConfigError) as caught:
        load(with_dashboard(tmp_path, dashboard))
    found = [(p.path, p.found, p.expected) for p in caught.value.problems]
    assert any(p == path and expected in e for p, _, e in found), found
