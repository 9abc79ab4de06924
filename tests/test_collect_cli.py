"""A collect-only config on the command line: for `shopfloor agent` a taken HTTP port and a wrong --historian are
one clear line and an exit code, never a traceback; the dashboard serves it (with no lines), sync refuses it in
one line."""

import json
import os
import socket
import subprocess
import sys
import urllib.request

import pytest

from simulators.broker import free_port
from simulators.harness import wait_until
from tests.conftest import ROOT

CONFIG = """\
site: {id: plant-a, name: Plant A, timezone: Europe/Berlin}
sources:
  opcua: [{id: plc-1, endpoint: "opc.tcp://127.0.0.1:9/none"}]
historian: {kind: sqlite}
collect:
  plc-1: [{name: Boiler1.Temperature, address: "ns=2;s=Boiler1.Temperature", unit: degC}]
"""


def agent(tmp_path, *args, env=None):
    config = tmp_path / "collect.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    return subprocess.run([sys.executable, "-m", "shopfloor", "--log-level", "WARNING", "agent", "--config",
                           str(config), "--data-dir", str(tmp_path / "data"), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None})


def test_a_taken_http_port_is_one_line_and_exit_3(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = agent(tmp_path, "--agent-port", str(port))
    assert done.returncode == 3
    assert done.stderr.splitlines() == [
        f"shopfloor agent: cannot listen on 127.0.0.1:{port}: Address already in use (another program has the "
        "port? choose one with --agent-port or agent.http_port)"]


@pytest.mark.parametrize(
    ("url", "env", "line"),
    [("http://127.0.0.1:8086/plant", {},
      "shopfloor agent: --historian 'http://127.0.0.1:8086/plant': expected influxdb://[user@]host:port/database or "
      "influxdb2://host:port/bucket?org=ORG"),
     ("influxdb://edge:secret@127.0.0.1:8086/plant", {},
      "shopfloor agent: --historian influxdb://127.0.0.1: put the password in INFLUX_PASSWORD, not in the URL"),
     ("influxdb://edge@127.0.0.1:8086/plant", {"INFLUX_PASSWORD": None},
      "shopfloor agent: --historian influxdb://edge@127.0.0.1:8086/plant: historian.password: expected "
      "environment variable INFLUX_PASSWORD to be set"),
     ("influxdb2://127.0.0.1:8086/plant", {},
      "shopfloor agent: --historian 'influxdb2://127.0.0.1:8086/plant': add ?org=ORG (the InfluxDB organisation of "
      "the bucket)")],
)
def test_a_wrong_historian_url_is_one_line_and_exit_2(tmp_path, url, env, line):
    done = agent(tmp_path, "--historian", url, env=env)
    assert (done.returncode, done.stderr.splitlines()) == (2, [line])
    assert not (tmp_path / "data").exists()  # refused before anything was opened


def test_the_dashboard_serves_a_collect_only_config_and_sync_refuses_it_in_one_line(tmp_path):
    config = tmp_path / "collect.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    port = free_port()
    log = (tmp_path / "dashboard.log").open("wb")
    dashboard = subprocess.Popen([sys.executable, "-m", "shopfloor", "dashboard", "--config", str(config),
                                  "--data-dir", str(tmp_path / "data"), "--port", str(port)],
                                 cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        overview = wait_until(lambda: json.loads(urllib.request.urlopen(
            f"http://127.0.0.1:{port}/api/v1/overview", timeout=5).read()), 60, "the dashboard's overview")
        assert (overview["site"]["id"], overview["line_ids"], overview["lines"]) == ("plant-a", [], {})
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as page:
            assert page.status == 200 and b"Plant A" in page.read()
        assert "Traceback" not in (tmp_path / "dashboard.log").read_text(errors="replace")
    finally:
        dashboard.terminate()
        dashboard.wait(20)
        log.close()
    done = subprocess.run([sys.executable, "-m", "shopfloor", "sync", "--config", str(config), "--data-dir",
                           str(tmp_path / "data"), "--port", str(free_port())],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr.splitlines()) == (
        2, ["shopfloor sync: capacity.push.endpoints is empty: there is nowhere to push to"])


def test_a_taken_port_is_an_oserror_saying_so_for_every_status_server():
    """`shopfloor sync` prints the OSError's strerror of its own status server: the same words as before."""
    from agent.http import ListenError, StatusServer

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ListenError) as caught:
            StatusServer("127.0.0.1", port, {})
    assert isinstance(caught.value, OSError)
    assert (caught.value.strerror, str(caught.value)) == (
        "Address already in use", f"cannot listen on 127.0.0.1:{port}: Address already in use")
