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
_BASE_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# A config larger than this is refused before it is parsed.
MAX_BYTES = 16 * 1024 * 1024
# Values (every key, scalar, list and mapping, counted as often as aliases repeat them) a config may hold: a
# 10,000-tag collect list has about 100,000. An alias-made "billion laughs" is refused on this count, before
# anything walks the expanded tree.
MAX_NODES = 1_000_000

SAVE_AS_UTF8 = "UTF-8: save the file as UTF-8 (in Notepad: File, Save as, Encoding: UTF-8)"


class _Loader(_BASE_LOADER):  # type: ignore[misc, valid-type]
    """The safe loader (libyaml's where present) that records every key repeated in a mapping: YAML lets the
    last one win silently, and a config must not."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        # (mapping node, key, line of its first occurrence, line of the repeat)
        self.repeats: list[tuple[yaml.MappingNode, Any, int, int]] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # `<<: *defaults`: the keys written beside it override the merged ones, by design
                key = self.construct_object(key_node, deep=False)
                try:
                    first = seen.get(key)
                except TypeError:
                    continue  # an unhashable key: the constructor reports it
                line = key_node.start_mark.line + 1
                if first is not None:
                    self.repeats.append((node, key, first, line))
                else:
                    seen[key] = line
        return super().construct_mapping(node, deep=deep)  # type: ignore[no-any-return]

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except yaml.YAMLError:
            raise
        except Exception as exc:  # noqa: BLE001 - PyYAML's constructors raise ValueError, IndexError, ...
            # a value its tag cannot be built from, e.g. the unquoted date 2026-13-45, `!!int abc` or `!!int ""`
            kind = node.tag.rsplit(":", 1)[-1]
            raise yaml.constructor.ConstructorError(
                None, None, f"{_clip(str(node.value))!r} is not a valid {kind} ({exc}); quote it if it is text",
                node.start_mark) from None


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
    text = _read_text(path, file)
    root, data, repeats = _parse(text, file)
    if not isinstance(data, dict):
        raise ConfigError([Problem(file, 1, "(top level)", _describe(data), "a mapping with site, shifts, lines, ...")])
    index: dict[tuple[Any, ...], int] = {}
    paths: dict[int, tuple[Any, ...]] = {}
    if root is not None:
        _line_index(root, index, paths)
    problems = [Problem(file, again, _key_path(paths.get(id(node), ()) + (key,)),
                        f"{key!r} given twice: on line {first} and on line {again}",
                        "each key once in its mapping (YAML would silently keep the last one)")
                for node, key, first, again in sorted(repeats, key=lambda r: r[3])]
    try:
        cfg = FactoryConfig.model_validate(data)
    except ValidationError as exc:
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
    problems += [Problem(file, _line_for(index, loc), _key_path(loc), _describe(found), expected)
                 for loc, found, expected in cross_check(cfg, resolve_secrets)]
    if problems:
        raise ConfigError(problems)
    return cfg


def check(path: str | Path) -> list[Problem]:
    """Every problem in a config file; an empty list when it is valid."""
    try:
        load(path)
    except ConfigError as exc:
        return exc.problems
    return []


# --- reading the file: size and encoding ---------------------------------------------------------------------


def _read_text(path: Path, file: str) -> str:
    """The file's text, when it is UTF-8 (with or without a byte order mark) and at most MAX_BYTES long."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError([Problem(file, None, "(file)", exc.strerror or str(exc), "a readable YAML file")]) from None
    if len(raw) > MAX_BYTES:
        raise ConfigError([Problem(file, None, "(file)", f"more than {MAX_BYTES // (1024 * 1024)} MiB",
                                   "a config file of at most 16 MiB (is this the right file?)")])
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([_not_utf8(raw, exc, file)]) from None
    nul = text.find("\0")
    if nul >= 0:
        raise ConfigError([_not_utf8(raw, None, file) if _utf16(raw) else
                           Problem(file, text.count("\n", 0, nul) + 1, "(encoding)",
                                   "a NUL character (byte 0): this is not a text file", SAVE_AS_UTF8)])
    return text


def _utf16(raw: bytes) -> str | None:
    """"UTF-16 LE" or "UTF-16 BE" when the bytes look like it (by byte order mark, or NUL bytes beside ASCII)."""
    if raw.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        return None  # UTF-32: named by _not_utf8
    if raw.startswith(b"\xff\xfe"):
        return "UTF-16 LE"
    if raw.startswith(b"\xfe\xff"):
        return "UTF-16 BE"
    # no mark: ASCII text (YAML's keys) in UTF-16 has a NUL byte beside almost every character
    head = raw[:4096]
    even, odd = head[0::2].count(0), head[1::2].count(0)
    if len(head) >= 4:
        if odd >= len(head) // 8 and even * 4 < odd:
            return "UTF-16 LE"
        if even >= len(head) // 8 and odd * 4 < even:
            return "UTF-16 BE"
    return None


def _not_utf8(raw: bytes, exc: UnicodeDecodeError | None, file: str) -> Problem:
    """What the file is instead of UTF-8, with the first line that shows it."""
    utf16 = _utf16(raw)
    if utf16 is not None:
        codec = "utf-16-le" if utf16.endswith("LE") else "utf-16-be"
        body = raw[2:] if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else raw
        text = body.decode(codec, errors="replace")
        line = _first_line(text, lambda s: any(ord(c) > 127 for c in s))
        bom = " with a byte order mark" if body is not raw else ""
        notepad = ' (Notepad\'s "Unicode")' if utf16.endswith("LE") else ' (Notepad\'s "Unicode big endian")'
        return _encoding_problem(file, line, text, f"it looks like {utf16}{bom}{notepad}")
    if raw.startswith((b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")):
        return Problem(file, None, "(encoding)", "not UTF-8: it looks like UTF-32", SAVE_AS_UTF8)
    # the line of the first byte that is not UTF-8 (exc is set: the NUL case is always UTF-16 or plain text)
    bad = exc.start if exc is not None else 0
    line = raw.count(b"\n", 0, bad) + 1
    try:
        text = raw.decode("gb18030")
    except UnicodeDecodeError:
        text = ""
    if not _mostly_gb2312(text):
        start = raw.rfind(b"\n", 0, bad) + 1
        end = raw.find(b"\n", bad)
        shown = raw[start:end if end >= 0 else len(raw)].decode("utf-8", errors="replace")
        return Problem(file, line, "(encoding)",
                       f"not UTF-8: byte 0x{raw[bad]:02X} at line {line}, column {bad - start + 1} ({_clip(shown)!r})",
                       SAVE_AS_UTF8)
    return _encoding_problem(file, line, text, "it looks like GB18030 (GBK, Windows' Chinese ANSI)")


def _mostly_gb2312(text: str) -> bool:
    """Most characters beyond ASCII are in GB2312, the common Chinese characters and punctuation (both bytes
    0xA1 or above); Latin-1's "Müller" also decodes as GB18030, but into rare characters outside it."""
    wide = [c for c in text if ord(c) > 127]
    common = 0
    for c in wide:
        encoded = c.encode("gb18030")
        common += len(encoded) == 2 and encoded[0] >= 0xA1 and encoded[1] >= 0xA1
    return bool(wide) and common * 2 >= len(wide)


def _first_line(text: str, wanted: Any) -> int:
    for number, line in enumerate(text.splitlines(), start=1):
        if wanted(line):
            return number
    return 1


def _encoding_problem(file: str, line: int, text: str, guess: str) -> Problem:
    lines = text.splitlines()
    shown = lines[line - 1] if 0 < line <= len(lines) else ""
    return Problem(file, line, "(encoding)", f"not UTF-8: {guess} (line {line}: {_clip(shown.strip())!r})",
                   SAVE_AS_UTF8)


def _clip(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."


# --- parsing: YAML errors, aliases, repeated keys ------------------------------------------------------------


def _parse(text: str, file: str) -> tuple[yaml.Node | None, Any, list[tuple[yaml.MappingNode, Any, int, int]]]:
    """The document's node tree and its Python data, parsed once; every YAML problem as a ConfigError."""
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, None, []
        _count_nodes(root, file)
        data = loader.construct_document(root)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([Problem(file, line, "(syntax)", str(problem), "valid YAML")]) from None
    except RecursionError:  # PyYAML's pure-Python composer, where libyaml is missing (libyaml stops at depth 1000)
        raise ConfigError([Problem(file, None, "(syntax)", "lists or mappings nested too deep",
                                   "valid YAML nested at most a few hundred levels")]) from None
    finally:
        loader.dispose()
    return root, data, loader.repeats


def _count_nodes(root: yaml.Node, file: str) -> None:
    """Refuse a document whose aliases expand it beyond MAX_NODES values, or that contains itself.

    Each node is visited once (its expanded size is remembered), so a "billion laughs" costs as little to
    measure as it took to write.
    """
    size: dict[int, int] = {}
    ancestors: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            ancestors.discard(key)
            size[key] = total = 1 + sum(size[id(c)] for c in _children(node))
            if total > MAX_NODES:
                raise ConfigError([Problem(
                    file, node.start_mark.line + 1, "(aliases)",
                    f"more than {MAX_NODES:,} values, counting each alias as the value it repeats",
                    f"a config of at most {MAX_NODES:,} values (aliases of aliases make a few lines into billions "
                    "of values: a 'YAML bomb')")])
        elif key in ancestors:
            raise ConfigError([Problem(file, node.start_mark.line + 1, "(aliases)",
                                       "an alias inside the value it names (the value would contain itself)",
                                       "aliases that name a value written before them, not one they are part of")])
        elif key not in size:
            ancestors.add(key)
            stack.append((node, True))
            stack.extend((c, False) for c in _children(node) if id(c) not in size)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
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


def _line_index(root: yaml.Node, index: dict[tuple[Any, ...], int], paths: dict[int, tuple[Any, ...]]) -> None:
    """The line of every key path, and the first key path of every mapping node (iterative: any depth)."""
    stack: list[tuple[yaml.Node, tuple[Any, ...]]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        index[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            paths.setdefault(id(node), path)
            for key_node, value_node in node.value:
                key = path + (_scalar_key(key_node),)
                index[key] = key_node.start_mark.line + 1
                stack.append((value_node, key))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, path + (i,)) for i, item in enumerate(node.value))


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
        # up to the last '@': a password may itself hold one
        return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/:@\s]*):.*@", r"\1:(not shown)@", value)
    return value
