"""shopfloor/logs.py: JSON lines, rotation by size, and the logging options of every command."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from shopfloor import logs
from shopfloor.cli import build_parser, main


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Whatever `logs.setup` installs on the root logger is taken off again after the test."""
    root = logging.getLogger()
    level = root.level
    yield
    for handler in root.handlers[:]:
        if getattr(handler, logs._MARK, False):
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


def record(msg: str, *args: object, exc: bool = False, **extra: object) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("outbox locked")
        except ValueError:
            import sys
            exc_info = sys.exc_info()
    rec = logging.LogRecord("agent.runner", logging.WARNING, __file__, 1, msg, args, exc_info)
    rec.__dict__.update(extra)
    return rec


def test_json_line_has_ts_level_logger_message_and_the_extra_fields():
    line = logs.JsonFormatter().format(record("source %s down: %s", "plc-1", "timeout", source="plc-1",
                                              problems=["a", "b"], path=Path("/var/lib/shopfloor")))
    entry = json.loads(line)
    assert entry["level"] == "WARNING" and entry["logger"] == "agent.runner"
    assert entry["message"] == "source plc-1 down: timeout"
    assert entry["ts"].endswith("Z") and "T" in entry["ts"]
    assert entry["source"] == "plc-1" and entry["problems"] == ["a", "b"] and entry["path"] == "/var/lib/shopfloor"
    assert "\n" not in line


def test_json_line_keeps_the_traceback_and_chinese_text_as_is():
    entry = json.loads(logs.JsonFormatter().format(record("慈溪一厂 %s", "停机", exc=True)))
    assert entry["message"] == "慈溪一厂 停机"
    assert entry["exc"].startswith("Traceback") and "ValueError: outbox locked" in entry["exc"]


def test_log_file_rotates_at_its_size_and_keeps_the_backups_asked_for(tmp_path, root_logging):
    path = tmp_path / "logs" / "agent.log"  # the folder is made
    logs.setup("INFO", "json", path, max_bytes=1000, backups=2)
    log = logging.getLogger("agent.pipeline")
    for i in range(100):
        log.info("batch %s committed", i, extra={"points": i})
    files = sorted(path.parent.iterdir())
    assert [f.name for f in files] == ["agent.log", "agent.log.1", "agent.log.2"]
    for f in files:
        assert 0 < f.stat().st_size <= 1000
        assert all(json.loads(line)["logger"] == "agent.pipeline" for line in f.read_text().splitlines())
    newest = [json.loads(line) for line in path.read_text().splitlines()]
    assert newest[-1]["message"] == "batch 99 committed" and newest[-1]["points"] == 99
    # a second setup (another command in the same process) replaces the handler instead of adding one
    logs.setup("INFO", "text", path, max_bytes=1000, backups=2)
    assert len([h for h in logging.getLogger().handlers if getattr(h, logs._MARK, False)]) == 1


@pytest.mark.parametrize("argv", [
    ["--log-format", "json", "--log-file", "x.log", "token"],
    ["token", "--log-format", "json", "--log-file", "x.log"],
    ["--log-format", "text", "token", "--log-format", "json", "--log-file", "x.log"],  # after the command wins
])
def test_logging_options_go_before_or_after_the_command(argv):
    args = build_parser().parse_args(argv)
    assert (args.log_format, args.log_file, args.log_max_bytes) == ("json", "x.log", logs.DEFAULT_MAX_BYTES)


def test_logging_options_reach_the_simulators_too():
    args = build_parser().parse_args(["simulate", "line", "--config", "f.yaml", "--log-format", "json"])
    assert args.log_format == "json" and args.log_level == "INFO"


@pytest.mark.parametrize(("argv", "says"), [
    (["--log-max-bytes", "0", "token"], "--log-max-bytes: 0: must be 1 or more"),
    (["--log-max-bytes", "10MB", "token"], "--log-max-bytes: 10MB: not a whole number"),
    (["--log-backups", "-1", "token"], "--log-backups: -1: must be 0 or more"),
    (["--log-format", "xml", "token"], "invalid choice: 'xml'"),
])
def test_bad_logging_options_are_refused_with_the_option_named(argv, says, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and says in capsys.readouterr().err


def test_a_log_file_that_cannot_be_written_is_one_line_and_exit_2(tmp_path, capsys, root_logging):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.raises(SystemExit) as exit_:
        main(["--log-file", str(blocker / "agent.log"), "token"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"cannot write the log file {blocker / 'agent.log'}" in err
    assert "Traceback" not in err
