"""Where and how every `shopfloor` command logs: text or JSON lines, on stderr or in a file that rotates by size.

JSON lines carry `ts` (UTC, ISO 8601 with milliseconds), `level`, `logger`, `message`, the `extra={...}` fields a
log call passed, and `exc` with the traceback when there is one: one object per line, for journald, Loki, Elastic
or a plain `jq`. A log file rotates when the next line would pass `max_bytes`: `agent.log` becomes `agent.log.1`,
the `.1` becomes `.2`, and so on up to `backups` files; the oldest is deleted. The file is opened once at start,
so only one process may write it (each service gets its own file).
"""

from __future__ import annotations

import argparse
import json
import logging
import logging.handlers
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_BACKUPS = 5
_MARK = "shopfloor_log_handler"  # set on the handler `setup` installs, so a second call replaces it

# What every LogRecord has; anything else on a record came from `extra=` and goes into the JSON line.
_RECORD_FIELDS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime",
                                                                                        "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, message, the record's extra fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        # default=str: an extra field of any type (a Path, a datetime) is written rather than lost with the line
        return json.dumps(entry, ensure_ascii=False, default=str)


def add_arguments(parser: argparse.ArgumentParser, after_command: bool = False) -> None:
    """The logging options every command takes: `shopfloor --log-format json agent ...`, or with
    `after_command` on a command's own parser, `shopfloor agent ... --log-format json` (given there, they
    override the ones before the command; not given, they leave them)."""
    def option(name: str, default: Any, **kwargs: Any) -> None:
        if name not in parser._option_string_actions:  # a command with an option of that name keeps its own
            parser.add_argument(name, default=argparse.SUPPRESS if after_command else default, **kwargs)

    option("--log-level", "INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    option("--log-format", "text", choices=("text", "json"),
           help="text (default) or json: one JSON object per line with ts, level, logger, message and the "
                "line's extra fields")
    option("--log-file", None, metavar="PATH", help="log to this file instead of stderr; it rotates at "
                                                    "--log-max-bytes")
    option("--log-max-bytes", DEFAULT_MAX_BYTES, type=_positive, metavar="BYTES",
           help=f"size at which the log file rotates (default {DEFAULT_MAX_BYTES})")
    option("--log-backups", DEFAULT_BACKUPS, type=_not_negative, metavar="N",
           help=f"rotated log files kept: PATH.1 to PATH.N (default {DEFAULT_BACKUPS})")


def add_to_commands(parser: argparse.ArgumentParser) -> None:
    """`add_arguments(after_command=True)` on every command below `parser`, and on their commands."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for command in dict.fromkeys(action.choices.values()):
                add_arguments(command, after_command=True)
                add_to_commands(command)


def _whole(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text}: not a whole number") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"{text}: must be {least} or more")
    return value


def _positive(text: str) -> int:
    return _whole(text, 1)


def _not_negative(text: str) -> int:
    return _whole(text, 0)


def setup(level: str = "INFO", fmt: str = "text", file: str | Path | None = None,
          max_bytes: int = DEFAULT_MAX_BYTES, backups: int = DEFAULT_BACKUPS) -> logging.Handler | None:
    """Configure the root logger of this process; returns the handler it writes through. Raises OSError when
    the log file cannot be opened (the caller says so and exits).

    A handler installed by an earlier call is replaced. Logging that something else set up (a test runner
    calling the command line in its own process) is left as it is unless a log file is asked for: then
    None is returned, as `logging.basicConfig` would do nothing there."""
    root = logging.getLogger()
    foreign = [h for h in root.handlers if not getattr(h, _MARK, False)]
    if foreign and not file:
        return None
    handler: logging.Handler
    if file:
        path = Path(file)
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups,
                                                       encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    setattr(handler, _MARK, True)
    for old in root.handlers[:]:
        if getattr(old, _MARK, False):
            root.removeHandler(old)
            old.close()
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    # asyncua logs every reconnect attempt at length; the agent reports connection state itself.
    logging.getLogger("asyncua").setLevel(logging.ERROR if level.upper() != "DEBUG" else logging.DEBUG)
    return handler


def setup_from_args(args: argparse.Namespace, prog: str = "shopfloor") -> None:
    """`setup` from the options of `add_arguments`; exit 2 with one line when the log file cannot be opened."""
    try:
        setup(args.log_level, args.log_format, args.log_file, args.log_max_bytes, args.log_backups)
    except OSError as exc:
        print(f"{prog}: cannot write the log file {args.log_file}: {exc.strerror or exc}", file=sys.stderr)
        raise SystemExit(2) from None
