"""The one loader: reads a factory config from YAML and reports every problem with the file, the YAML line, the
key path, what was found and what is expected."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from agent.config.base import SECRET_KEYS, SLUG
from agent.config.factory import FactoryConfig, cross_check

# libyaml's safe loader where PyYAML was built with it (4 times faster on a config of 10,000 collected tags);
# the pure-Python one, which reads the same YAML, elsewhere.
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a config file, in the words a user needs to fix it."""

    file: str
    line: int | None
    path: str
    found: str
    expected: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path}\n  found:    {self.found}\n  expected: {self.expected}"


class ConfigError(Exception):
    """The config cannot be used; `problems` lists every issue found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def load(path: str | Path, resolve_secrets: bool = True) -> FactoryConfig:
    """Read, validate and cross-check a factory config; raise ConfigError listing every problem.

    `resolve_secrets=False` skips checking that referenced environment variables and files exist (for tools
    such as the simulators that read the factory layout but never connect with the agent's credentials).
    """
    path = Path(path)
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Problem(file, None, "(file)", exc.strerror or str(exc), "a readable YAML file")]) from None
    try:
        root = yaml.compose(text, Loader=_LOADER)
        data = yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader (libyaml's when present)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([Problem(file, line, "(syntax)", str(problem), "valid YAML")]) from None
    if not isinstance(data, dict):
        raise ConfigError([Problem(file, 1, "(top level)", _describe(data), "a mapping with site, shifts, lines, ...")])
    index: dict[tuple[Any, ...], int] = {}
    if root is not None:
        _line_index(root, (), index)
    try:
        cfg = FactoryConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            if err["type"] == "missing":
                found = "nothing (key missing)"
            elif loc and loc[-1] in SECRET_KEYS:
                found = "an inline value (not shown)"
            else:
                found = _describe(_hide_url_password(_value_at(data, loc)))
            problems.append(Problem(file, _line_for(index, loc), _key_path(loc), found, _expected_from_pydantic(dict(err))))
        raise ConfigError(problems) from None
    cross = cross_check(cfg, resolve_secrets)
    if cross:
        raise ConfigError([
            Problem(file, _line_for(index, loc), _key_path(loc), _describe(found), expected)
            for loc, found, expected in cross
        ])
    return cfg


def check(path: str | Path) -> list[Problem]:
    """Every problem in a config file; an empty list when it is valid."""
    try:
        load(path)
    except ConfigError as exc:
        return exc.problems
    return []


# --- where a problem is, and how it reads -------------------------------------------------------------------


def _key_path(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _line_index(node: yaml.Node, path: tuple[Any, ...], index: dict[tuple[Any, ...], int]) -> None:
    index[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = _scalar_key(key_node)
            index[path + (key,)] = key_node.start_mark.line + 1
            _line_index(value_node, path + (key,), index)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_index(item, path + (i,), index)


def _scalar_key(key_node: yaml.Node) -> Any:
    value = key_node.value
    if key_node.tag.endswith(":int"):
        try:
            return int(value)
        except ValueError:
            return value
    return value


def _line_for(index: dict[tuple[Any, ...], int], loc: tuple[Any, ...]) -> int | None:
    for n in range(len(loc), 0, -1):
        if loc[:n] in index:
            return index[loc[:n]]
    return None


def _value_at(data: Any, loc: tuple[Any, ...]) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _expected_from_pydantic(err: dict[str, Any]) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "missing":
        return "this key (it is required)"
    if kind == "extra_forbidden":
        return "no such key here (check the spelling; see config/README.md)"
    if kind == "literal_error":
        return "one of " + str(ctx.get("expected", ""))
    if kind == "enum":
        return "one of " + str(ctx.get("expected", ""))
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        if pattern == SLUG:
            return "a short id of lower-case letters, digits, '-' or '_' (at most 48)"
        return f"text matching {pattern}"
    msg = str(err["msg"])
    if kind == "value_error":
        return msg.removeprefix("Value error, ")
    if kind in ("greater_than", "greater_than_equal", "less_than_equal", "less_than"):
        return "a number " + msg.removeprefix("Input should be ")
    return msg.removeprefix("Input should be ")


def _hide_url_password(value: Any) -> Any:
    """A URL with `user:password@` in it, echoed in an error, shows the user but not the password."""
    if isinstance(value, str):
        return re.sub(r"^([a-z][a-z0-9+.-]*://[^/:@\s]*):[^@/\s]*@", r"\1:(not shown)@", value)
    return value
