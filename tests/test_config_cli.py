"""`shopfloor check-config`: exit codes and the exact messages users see."""

import re
import socket
import subprocess
import sys

import pytest

from shopfloor.cli import main
from tests.conftest import FACTORY_YAML, ROOT


@pytest.fixture
def check(capsys):
    def run(path):
        try:
            code = main(["check-config", str(path)])
        except SystemExit as exc:
            code = exc.code
        captured = capsys.readouterr()
        return code, captured.out, captured.err
    return run


def test_command_line_exit_code(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("site: 1\n", encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "shopfloor", "check-config", str(bad)], capture_output=True, text=True,
                       cwd=ROOT)
    assert r.returncode == 2 and "bad.yaml:1: site" in r.stderr


def variant(tmp_path, old, new):
    text = FACTORY_YAML.read_text(encoding="utf-8")
    assert old in text, old
    path = tmp_path / "factory.yaml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


def test_example_config_is_valid(check):
    code, out, err = check(FACTORY_YAML)
    assert (code, err) == (0, "") and out.strip().endswith("valid")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("timezone: Asia/Shanghai", "timezone: Asia/Shanghia",
         "factory.yaml:8: site.timezone\n  found:    'Asia/Shanghia'\n"
         "  expected: an IANA time zone such as Asia/Shanghai"),
        ("type: press, source: plc-1, station: mold-2", "type: presss, source: plc-1, station: mold-2",
         "factory.yaml:84: lines[0].machines[1].type\n  found:    'presss'\n"
         "  expected: one of the machine_types: cnc, packer, press"),
        ("publishing_interval_ms: 100", "publishing_interval_ms: -5",
         "factory.yaml:166: sources.opcua[0].publishing_interval_ms\n  found:    -5\n"
         "  expected: a number greater than 0"),
        ("      watchdog_s: 5\n", "      watchdog_s: 5\n      pasword: x\n",
         "factory.yaml:168: sources.opcua[0].pasword\n  found:    'x'\n"
         "  expected: no such key here (check the spelling; see config/README.md)"),
        ("      watchdog_s: 5\n", "      watchdog_s: 5\n      username: plc\n      password: hunter2\n",
         "factory.yaml:169: sources.opcua[0].password\n  found:    an inline value (not shown)\n"
         "  expected: an environment reference like ${PLC_PASSWORD} (secrets are never inline)"),
        ("      watchdog_s: 5\n", "      watchdog_s: 5\n      username: plc\n      password: ${PLC_PW_UNSET}\n",
         "factory.yaml:169: sources.opcua[0].password\n  found:    '${PLC_PW_UNSET}'\n"
         "  expected: environment variable PLC_PW_UNSET to be set"),
        ("- {id: op-002, name: 李强, badge: \"B1002\"", "- {id: op-002, name: 李强, badge: \"B1001\"",
         "factory.yaml:63: operators[1].badge\n  found:    'B1001'\n  expected: a badge id not used before (ids are unique)"),
        ("ideal_cycle_s: {line-2: 8.0}", "ideal_cycle_s: {line-3: 8.0}",
         "factory.yaml:42: products[2].ideal_cycle_s.line-3\n  found:    'line-3'\n  expected: a line id: line-1, line-2"),
        ("  - id: line-1\n", "  - id: Line 1\n",
         "expected: a short id of lower-case letters, digits, '-' or '_' (at most 48)"),
        ("shifts:\n", "shiftz:\n", "factory.yaml:12: shiftz\n  found:    [{'id': 'day'"),
        ("end: \"20:00\"", "end: \"25:00\"", "found:    '25:00'\n  expected: text matching"),
    ],
)
def test_bad_config_exits_2_with_file_line_path_found_expected(check, tmp_path, old, new, expected):
    code, out, err = check(variant(tmp_path, old, new))
    assert code == 2 and out == ""
    assert err.startswith("shopfloor: the config has ")
    assert expected in err.replace(str(tmp_path) + "/", "")
    assert "hunter2" not in err  # a secret is never echoed


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('fields: {badge: "$.badge"}', 'fields: {badge: "badge"}', "JSON path 'badge' must start with $"),
        ('tags: {line: "{line}", station: "{station}", event: "$.action"}',
         'tags: {line: "{line}", station: "{stn}", event: "$.action"}',
         "tag station: {stn} is not a capture of pattern 'line/{line}/{station}/badge'"),
        ('pattern: "line/{line}/order"', 'pattern: "line/{line}/{line}"', "capture {line} must be a unique name"),
        ('pattern: "line/{line}/order"', 'pattern: "line/{line}/ord+er"', "mixes a wildcard with text"),
    ],
)
def test_route_mistakes_are_config_problems(check, tmp_path, old, new, expected):
    code, _, err = check(variant(tmp_path, old, new))
    assert code == 2 and "sources.mqtt[0].routes[" in err and expected in err


def test_yaml_syntax_error_names_the_line(check, tmp_path):
    code, _, err = check(variant(tmp_path, "  id: cixi-1\n", "  id: [cixi-1\n"))
    assert code == 2 and "factory.yaml:" in err and "(syntax)" in err and "expected: valid YAML" in err


def test_missing_file(check, tmp_path):
    code, _, err = check(tmp_path / "nope.yaml")
    assert code == 2 and "nope.yaml: (file)\n  found:    No such file or directory\n  expected: a readable YAML file" in err


def test_missing_top_level_key_has_no_misleading_line(check, tmp_path):
    code, _, err = check(variant(tmp_path, "site:\n", "sitez:\n"))  # site is the one section always required
    assert "factory.yaml: site\n  found:    nothing (key missing)\n  expected: this key (it is required)" in err


def test_every_problem_is_listed_not_just_the_first(check, tmp_path):
    path = variant(tmp_path, "timezone: Asia/Shanghai", "timezone: Mars/Olympus")
    path.write_text(path.read_text(encoding="utf-8").replace("publishing_interval_ms: 100", "publishing_interval_ms: 0"),
                    encoding="utf-8")
    code, _, err = check(path)
    assert code == 2 and "2 problem(s)" in err and "site.timezone" in err and "publishing_interval_ms" in err


SQLITE = "historian:\n  kind: sqlite\n  retention_days: 400\n"


@pytest.mark.parametrize(
    ("historian", "expected"),
    [
        ("historian:\n  kind: influxdb\n  database: plant\n",
         "historian.url\n  found:    'nothing (key missing)'\n  expected: the InfluxDB URL, e.g. http://127.0.0.1:8086"),
        ("historian:\n  kind: influxdb\n  url: http://db:8086\n",
         "historian.database\n  found:    'nothing (key missing)'\n  expected: the InfluxDB 1.x database to write to"),
        ("historian:\n  kind: influxdb\n  url: http://db:8086\n  api: v2\n  org: plant\n  bucket: sf\n",
         "historian.token\n  found:    'nothing (key missing)'\n  expected: an API token as ${ENV_VAR}, or token_file"),
        ("historian:\n  kind: influxdb\n  url: http://db:8086\n  api: v2\n  org: plant\n  bucket: sf\n"
         "  token: s3cr3t-token\n",
         "historian.token\n  found:    an inline value (not shown)\n"
         "  expected: an environment reference like ${PLC_PASSWORD} (secrets are never inline)"),
        ("historian:\n  kind: influxdb\n  url: http://db:8086\n  api: v2\n  org: plant\n  bucket: sf\n"
         "  token: ${INFLUX_TOKEN_UNSET}\n",
         "historian.token\n  found:    '${INFLUX_TOKEN_UNSET}'\n  expected: environment variable INFLUX_TOKEN_UNSET to be set"),
        ("historian:\n  kind: influxdb\n  url: http://db:8086\n  api: v2\n  org: plant\n  bucket: sf\n"
         "  token_file: /nonexistent/token\n  retention_days: 30\n",
         "historian.retention_days\n  found:    30\n  expected: nothing with api: v2: set the bucket's retention period"),
        ("historian:\n  kind: sqlite\n  url: http://db:8086\n",
         "historian.url\n  found:    'http://db:8086'\n  expected: nothing: this key is for kind: influxdb"),
        ("historian:\n  kind: influxdb\n  url: db:8086\n  database: plant\n",
         "historian.url\n  found:    'db:8086'\n  expected: text matching"),
        ("historian:\n  kind: influxdb\n  url: http://edge:s3cr3t-token@db:8086\n  database: plant\n",
         "historian.url\n  found:    'http://edge:(not shown)@db:8086'\n  expected: a URL with no user or password"),
        ("historian:\n  kind: influxdb\n  url: http://db:8086\n  database: plant\n  password: ${HOME}\n",
         "historian.username\n  found:    'nothing (key missing)'\n  expected: the user the password belongs to"),
        ("historian:\n  kind: influxdb\n  url: http://db:8086\n  database: plant\n  batch_lines: 10000\n",
         "historian.batch_lines\n  found:    10000\n  expected: a number less than or equal to 5000"),
    ],
)
def test_historian_mistakes(check, tmp_path, historian, expected):
    code, out, err = check(variant(tmp_path, SQLITE, historian))
    assert code == 2 and out == ""
    assert expected in err.replace(str(tmp_path) + "/", ""), err
    assert "s3cr3t-token" not in err


def test_influxdb_historian_config_is_valid_and_keeps_the_servers_retention(tmp_path, monkeypatch):
    from agent.config import load

    monkeypatch.setenv("INFLUX_TOKEN", "t")
    path = variant(tmp_path, SQLITE, "historian:\n  kind: influxdb\n  url: https://db.plant:8086\n  api: v2\n"
                                     "  org: plant\n  bucket: shopfloor\n  token: ${INFLUX_TOKEN}\n")
    h = load(path).historian
    assert (h.kind, h.api, h.bucket, h.retention_days, h.batch_lines, h.gzip) == (
        "influxdb", "v2", "shopfloor", None, 5000, True)


def test_connect_checks_the_historian_with_its_credentials_and_reaches_the_sources(capsys, tmp_path,
                                                                                 influx_server):
    influx_server.create_database("plant_ok")
    listener = socket.create_server(("127.0.0.1", 0))  # stands for the PLC and the broker: reachability only
    up_port = listener.getsockname()[1]
    # A port nothing listens on, rather than the example's own ports: a demo or simulator running on this machine
    # (10502, 10102, 1883) would otherwise answer for the sources that must be unreachable.
    with socket.create_server(("127.0.0.1", 0)) as closed:
        down_port = closed.getsockname()[1]

    def run(database, sources_up):
        path = variant(tmp_path, SQLITE, f"historian:\n  kind: influxdb\n  url: {influx_server.url}\n"
                                         f"  database: {database}\n")
        port = up_port if sources_up else down_port
        text = path.read_text(encoding="utf-8")
        text = re.sub(r"opc\.tcp://[^/]+/", f"opc.tcp://127.0.0.1:{port}/", text)
        text = re.sub(r"url: mqtt://[^\s]+", f"url: mqtt://127.0.0.1:{port}", text)
        text = re.sub(r"port: 10(502|102) ", f"port: {port} ", text)  # the Modbus device and the S7 PLC
        path.write_text(text, encoding="utf-8")
        try:
            code = main(["check-config", "--connect", str(path)])
        except SystemExit as exc:
            code = exc.code
        return code, capsys.readouterr()

    try:
        code, captured = run("plant_missing", sources_up=False)
        assert code == 3 and "connection problem(s)" in captured.err
        assert "historian: write: InfluxDB" in captured.err and "has no such database (404" in captured.err
        assert f"OPC UA source plc-1: 127.0.0.1:{down_port} is not reachable" in captured.err
        assert f"Modbus source plc-mb: 127.0.0.1:{down_port} is not reachable" in captured.err
        assert f"S7 source plc-s7: 127.0.0.1:{down_port} is not reachable" in captured.err
        assert f"MQTT source line-bus: 127.0.0.1:{down_port} is not reachable" in captured.err
        code, captured = run("plant_ok", sources_up=True)
        assert (code, captured.err) == (0, "") and "historian and sources reachable" in captured.out
    finally:
        listener.close()


@pytest.mark.parametrize(
    ("dashboard", "expected"),
    [
        ("dashboard:\n  kiosk:\n    lines: [line-9]\n",
         "dashboard.kiosk.lines[0]\n  found:    'line-9'\n  expected: a line id: line-1, line-2"),
        ("dashboard:\n  users:\n    - {name: lead, password: hunter2}\n",
         "dashboard.users[0].password\n  found:    an inline value (not shown)\n  expected: an environment reference"),
        ("dashboard:\n  users:\n    - name: lead\n      password: ${LEAD_PASSWORD_UNSET}\n",
         "dashboard.users[0].password\n  found:    '${LEAD_PASSWORD_UNSET}'\n  expected: environment variable "
         "LEAD_PASSWORD_UNSET to be set"),
        ("dashboard:\n  users:\n    - {name: lead}\n",
         "dashboard.users[0]\n  found:    {'name': 'lead'}\n  expected: exactly one of password"),
        ("dashboard:\n  stop_reasons:\n    - {code: jam, name: {en: Jam, fr: Bourrage}}\n",
         "dashboard.stop_reasons[0].name.fr"),
        ("dashboard:\n  max_streams: 0\n", "dashboard.max_streams\n  found:    0\n  expected: a number greater"),
        ("dashboard:\n  secret_key: ${HOME}\n  secret_key_file: /etc/hostname\n",
         "dashboard.secret_key_file\n  found:    '/etc/hostname'\n  expected: either secret_key or secret_key_file, "
         "not both"),
    ],
)
def test_dashboard_mistakes(check, tmp_path, dashboard, expected):
    code, out, err = check(variant(tmp_path, SQLITE, SQLITE + dashboard))
    assert code == 2 and out == ""
    assert expected in err.replace(str(tmp_path) + "/", ""), err
    assert "hunter2" not in err
