"""The config loader under any file: arbitrary bytes and text, the example config re-encoded, cut, shuffled or
with any value replaced. Loading either succeeds or raises ConfigError whose problems read like the others
(file, line, key path, found, expected); never another exception, which `shopfloor check-config` would print
as a traceback."""

import math

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from agent.config import ConfigError, FactoryConfig, load
from tests.conftest import FACTORY_YAML
from tests.fuzz import fuzz

EXAMPLE = FACTORY_YAML.read_text(encoding="utf-8")
LINES = EXAMPLE.splitlines(keepends=True)
DATA = yaml.safe_load(EXAMPLE)


@pytest.fixture
def config_file(tmp_path):
    return tmp_path / "config.yaml"


def loads_or_explains(path):
    """Load `path`: a config, or a ConfigError whose every problem is complete and points into the file."""
    size = len(path.read_bytes().decode("utf-8", errors="replace").splitlines())  # YAML breaks lines at fewer
    try:
        cfg = load(path)
    except ConfigError as exc:
        assert exc.problems
        for problem in exc.problems:
            assert problem.file == str(path) and problem.path and problem.found and problem.expected
            assert problem.line is None or 1 <= problem.line <= size + 1, problem
            assert str(problem).startswith(str(path))
        return None
    assert isinstance(cfg, FactoryConfig)
    return cfg


# --- any bytes, any text ------------------------------------------------------------------------------------------

YAML_ALPHABET = list(":-[]{},&*!|>'\"%@`#?~\t\n\n\n    ") + ["<<", "site", "id", "timezone", "lines", "- id:", "0x",
                                                           "1e400", ".nan", "2026-13-45", "null", "!!int", "!!binary",
                                                           "!!python/object", "一号线", "\x00", "\ufeff", "\r\n"]


@fuzz(100)
@given(raw=st.binary(max_size=400) | st.builds(lambda a, b: a + b, st.sampled_from(
    [b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"\xff\xfe\x00\x00", b"", b"site:\n  id: "]), st.binary(max_size=200)))
def test_any_bytes(config_file, raw):
    config_file.write_bytes(raw)
    loads_or_explains(config_file)


@fuzz(100)
@given(text=st.lists(st.sampled_from(YAML_ALPHABET) | st.text(max_size=4), max_size=60).map("".join))
def test_any_yaml_like_text(config_file, text):
    config_file.write_bytes(text.encode("utf-8", errors="surrogatepass"))
    loads_or_explains(config_file)


# --- the example config, damaged ----------------------------------------------------------------------------------


@fuzz(30)
@given(codec=st.sampled_from(["gb18030", "gbk", "big5", "shift_jis", "utf-16", "utf-16-le", "utf-16-be", "utf-32",
                              "utf-32-be"]),
       start=st.integers(0, len(LINES) - 1), count=st.integers(1, 40))
def test_the_example_in_another_encoding_is_named(config_file, codec, start, count):
    text = "".join(LINES[start:start + count]) + "  name: 一号线 Line 1\n"
    config_file.write_bytes(text.encode(codec, errors="replace"))  # 一 is in every one of them
    with pytest.raises(ConfigError) as exc:
        load(config_file)
    (problem,) = exc.value.problems
    assert problem.path == "(encoding)" and problem.found.startswith("not UTF-8: ")
    assert problem.expected.startswith("UTF-8: save the file as UTF-8")


@st.composite
def damaged_example(draw):
    """The example's lines with a few lines deleted, repeated, moved, re-indented, cut or replaced by noise."""
    lines = list(LINES)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        how = draw(st.sampled_from(["delete", "repeat", "move", "indent", "dedent", "cut", "noise", "truncate"]))
        if how == "delete":
            del lines[i]
        elif how == "repeat":
            lines.insert(i, lines[i])
        elif how == "move":
            lines.insert(draw(st.integers(0, len(lines) - 1)), lines.pop(i))
        elif how == "indent":
            lines[i] = "  " + lines[i]
        elif how == "dedent":
            lines[i] = lines[i][2:] if lines[i].startswith("  ") else lines[i]
        elif how == "cut":
            lines[i] = lines[i][:draw(st.integers(0, len(lines[i])))] + "\n"
        elif how == "noise":
            lines[i] = lines[i][:draw(st.integers(0, len(lines[i])))] + draw(
                st.sampled_from(YAML_ALPHABET) | st.text(max_size=8)) + "\n"
        else:
            lines = lines[:i]
        if not lines:
            lines = [""]
    return "".join(lines)


@fuzz(60)
@given(text=damaged_example())
def test_the_example_damaged(config_file, text):
    config_file.write_bytes(text.encode("utf-8", errors="surrogatepass"))
    loads_or_explains(config_file)


# --- the example config with any value replaced -----------------------------------------------------------------

nasty_text = st.sampled_from(["", " ", "\x00", "../../etc/passwd", "Asia/Shanghai\x00", "x" * 300, "1e400", ".nan",
                              "${}", "${X", "$(rm -rf /)", "\\", "-", "::", "一号线", "line-1", "press-1", "plc-1",
                              "line-bus", "KT-100", "00:00", "24:00", "23:59", "RUNNING", "opc.tcp://", "mqtt://a@b",
                              "http://a:b@c"])
leaf = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | nasty_text | st.text(max_size=12)
        | st.dates() | st.just(math.inf))
value = st.recursive(leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    nasty_text | st.text(max_size=6) | st.integers(), inner, max_size=3), max_leaves=6)


def paths(data, prefix=()):
    """Every key path into the data, containers included."""
    out = [prefix]
    if isinstance(data, dict):
        for k, v in data.items():
            out += paths(v, prefix + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += paths(v, prefix + (i,))
    return out


PATHS = [p for p in paths(DATA) if p]


def replaced(data, path, new):
    """`data` with the value at `path` replaced by `new` (or removed when `new` is REMOVE); the containers on the
    way are copied, the rest is shared."""
    if not path:
        return new
    if isinstance(data, dict) and path[0] in data:
        out = dict(data)
    elif isinstance(data, list) and isinstance(path[0], int) and path[0] < len(data):
        out = list(data)
    else:
        return data  # an earlier change removed the way there
    if len(path) == 1 and new is REMOVE:
        del out[path[0]]
    else:
        out[path[0]] = replaced(out[path[0]], path[1:], new)
    return out


REMOVE = object()


@st.composite
def changed_example(draw):
    data = DATA
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS))
        data = replaced(data, path, REMOVE if draw(st.integers(0, 5)) == 0 else draw(value))
    return data


@fuzz(100)
@given(data=changed_example())
def test_the_example_with_any_value_replaced(config_file, data):
    text = yaml.dump(data, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), allow_unicode=True, sort_keys=False)
    config_file.write_text(text, encoding="utf-8")
    loads_or_explains(config_file)
