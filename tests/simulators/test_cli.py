"""`shopfloor simulate plc` and `shopfloor simulate line` refuse bad options with one line and exit status 2,
before serving or publishing anything."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from simulators import line, opcua

FACTORY_YAML = Path(__file__).resolve().parents[2] / "config" / "factory.yaml"


def plc(*extra: str) -> int:
    return opcua.main(["--config", str(FACTORY_YAML), "--endpoint", "opc.tcp://127.0.0.1:0/shopfloor/plc", *extra])


def line_sim(*extra: str) -> int:
    parser = argparse.ArgumentParser(prog="shopfloor simulate line")
    line.add_arguments(parser)
    return line.run(parser.parse_args(["--config", str(FACTORY_YAML), *extra]))


@pytest.mark.parametrize(("options", "said"), [
    (("--source", "plc-9"), "no OPC UA source 'plc-9' (sources.opcua)"),
    (("--speed", "0"), "plc simulator: speed must be positive"),
    (("--bench-tags", "150"), "plc simulator: bench tags come in machines of 100: a multiple of 100 expected, "
                              "not 150"),
    (("--bench-tags", "200", "--bench-offset", "999"), "bench machines are numbered m000..m999"),
    (("--bench-tags", "100", "--bench-period-ms", "0"), "plc simulator: the bench period must be positive"),
    (("--username", "op", "--password-env", "SHOPFLOOR_TEST_UNSET_PW"),
     "--username needs a password in the environment variable SHOPFLOOR_TEST_UNSET_PW"),
])
def test_the_plc_simulator_refuses_bad_options(capsys, monkeypatch, options, said):
    monkeypatch.delenv("SHOPFLOOR_TEST_UNSET_PW", raising=False)
    assert plc(*options) == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err


def test_the_plc_simulator_names_a_config_it_cannot_read(capsys, tmp_path):
    missing = tmp_path / "nowhere.yaml"
    assert opcua.main(["--config", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err


@pytest.mark.parametrize(("options", "said"), [
    (("--mqtt", "http://127.0.0.1:1883"), "line simulator: MQTT URL like mqtt://host:1883 expected, got "
                                          "'http://127.0.0.1:1883'"),
    (("--speed", "0"), "line simulator: speed must be positive"),
    (("--flood", "10", "--flood-rate", "-5"), "line simulator: flood rate must be positive"),
])
def test_the_line_simulator_refuses_bad_options(capsys, options, said):
    assert line_sim(*options) == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err


def test_a_bad_flood_lane_is_an_option_error(capsys):
    with pytest.raises(SystemExit) as stop:
        line_sim("--flood", "10", "--flood-lane", "3/2")
    assert stop.value.code == 2
    assert "K/N with 0 <= K < N expected, not '3/2'" in capsys.readouterr().err
