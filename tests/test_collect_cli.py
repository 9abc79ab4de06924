"""`shopfloor agent` on a collect-only config: a taken HTTP port and a wrong --historian are one clear line and
an exit code, never a traceback."""

import os
import socket
import subprocess
import sys

import pytest

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
