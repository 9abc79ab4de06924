"""Config files a plant really produces that YAML alone gets wrong: saved by Notepad in another encoding, a key
written twice, an alias bomb, a password inside a URL. Each is refused by `shopfloor check-config` with exit 2
and a message that says what to fix, never a traceback; and a refused secret is never printed."""

import resource
import subprocess
import sys

import pytest

from agent.config import ConfigError, load
from agent.config.loader import MAX_BYTES
from shopfloor.cli import main
from tests.conftest import FACTORY_YAML, ROOT

EXAMPLE = FACTORY_YAML.read_text(encoding="utf-8")
SAVE_AS = "expected: UTF-8: save the file as UTF-8 (in Notepad: File, Save as, Encoding: UTF-8)"


def check_config(path, *extra, limit_as=None):
    """`shopfloor check-config` as a user runs it: (exit code, stdout, stderr)."""
    def limited():
        resource.setrlimit(resource.RLIMIT_AS, (limit_as, limit_as))

    r = subprocess.run([sys.executable, "-m", "shopfloor", "check-config", str(path), *extra], capture_output=True,
                       text=True, encoding="utf-8", cwd=ROOT, timeout=120, preexec_fn=limited if limit_as else None)
    assert "Traceback" not in r.stderr, r.stderr
    return r.returncode, r.stdout, r.stderr


def problems(path):
    with pytest.raises(ConfigError) as exc:
        load(path)
    return [str(p) for p in exc.value.problems]


# --- encodings ------------------------------------------------------------------------------------------------

NAME_LINE = EXAMPLE.splitlines().index("  name: 慈溪一厂 Cixi Plant 1") + 1


@pytest.mark.parametrize(
    ("encode", "named"),
    [
        (lambda t: t.encode("gb18030"), "it looks like GB18030"),
        (lambda t: b"\xff\xfe" + t.encode("utf-16-le"), "it looks like UTF-16 LE with a byte order mark (Notepad's \"Unicode\")"),
    ],
    ids=["gb18030", "utf-16-bom"],
)
def test_another_encoding_is_named_with_the_line_to_fix(tmp_path, encode, named):
    path = tmp_path / "config.yaml"
    path.write_bytes(encode(EXAMPLE))
    code, out, err = check_config(path)
    assert code == 2 and out == ""
    assert f"config.yaml:{NAME_LINE}: (encoding)\n  found:    not UTF-8: {named}" in err
    assert f"(line {NAME_LINE}: 'name: 慈溪一厂 Cixi Plant 1')\n  {SAVE_AS}" in err


@pytest.mark.parametrize(
    ("encoding", "named"),
    [("utf-16-le", "UTF-16 LE (Notepad's \"Unicode\")"), ("utf-16-be", "UTF-16 BE (Notepad's \"Unicode big endian\")"),
     ("utf-32", "UTF-32")],
)
def test_utf16_without_a_byte_order_mark_is_told_by_its_nul_bytes(tmp_path, encoding, named):
    path = tmp_path / "config.yaml"
    path.write_bytes(EXAMPLE.encode(encoding))
    (problem,) = problems(path)
    assert f"(encoding)\n  found:    not UTF-8: it looks like {named}" in problem


def test_utf8_with_or_without_a_byte_order_mark_is_valid(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + EXAMPLE.encode("utf-8"))
    assert load(path).site.name == load(FACTORY_YAML).site.name == "慈溪一厂 Cixi Plant 1"


@pytest.mark.parametrize(
    ("name", "column", "shown"),
    [(b"caf\xe9", 12, "caf\ufffd"),  # Latin-1, not GB18030 either
     (b"M\xfcller", 10, "M\ufffdller")],  # Latin-1 that GB18030 would read as nonsense characters
)
def test_bytes_of_no_known_encoding_name_the_byte_and_line(tmp_path, name, column, shown):
    path = tmp_path / "config.yaml"
    path.write_bytes(b"site:\n  id: x\n  name: " + name + b"\n  timezone: UTC\n")
    byte = name[column - 9]
    assert problems(path) == [f"{path}:3: (encoding)\n  found:    not UTF-8: byte 0x{byte:02X} at line 3, column "
                              f"{column} ('  name: {shown}')\n  {SAVE_AS}"]


def test_a_nul_byte_is_not_a_text_file(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_bytes(b"site:\n  id: x\n  timezone: UTC\n\x00\n")
    assert problems(path) == [f"{path}:4: (encoding)\n  found:    a NUL character (byte 0): this is not a text file"
                              f"\n  {SAVE_AS}"]


# --- duplicate keys -------------------------------------------------------------------------------------------


def test_a_key_given_twice_is_an_error_with_both_lines(tmp_path):
    tz_line = EXAMPLE.splitlines().index("  timezone: Asia/Shanghai") + 1
    path = tmp_path / "config.yaml"
    path.write_text(EXAMPLE.replace("  timezone: Asia/Shanghai\n", "  timezone: Asia/Shanghai\n  timezone: UTC\n"),
                    encoding="utf-8")
    code, out, err = check_config(path)
    assert code == 2 and out == ""
    assert err == ("shopfloor: the config has 1 problem(s):\n"
                   f"{path}:{tz_line + 1}: site.timezone\n"
                   f"  found:    'timezone' given twice: on line {tz_line} and on line {tz_line + 1}\n"
                   "  expected: each key once in its mapping (YAML would silently keep the last one)\n")


def test_repeated_keys_at_any_depth_are_each_reported(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("site: {id: x, timezone: UTC}\n"
                    "shifts:\n"
                    "  - {id: day, name: Day, start: '08:00', end: '16:00'}\n"
                    "  - id: night\n"
                    "    name: Night\n"
                    "    start: '20:00'\n"
                    "    end: '04:00'\n"
                    "    breaks:\n"
                    "      - {start: '00:00', end: '00:30', end: '00:45'}\n"
                    "    start: '21:00'\n"
                    "site: {id: y, timezone: UTC}\n", encoding="utf-8")
    found = problems(path)
    assert f"{path}:9: shifts[1].breaks[0].end\n  found:    'end' given twice: on line 9 and on line 9" in found[0]
    assert f"{path}:10: shifts[1].start\n  found:    'start' given twice: on line 6 and on line 10" in found[1]
    assert f"{path}:11: site\n  found:    'site' given twice: on line 1 and on line 11" in found[2]
    assert len(found) == 3


def test_merge_keys_may_be_overridden(tmp_path):
    """`<<: *base` then a key of its own is YAML's way to override, not a repeat."""
    path = tmp_path / "config.yaml"
    path.write_text("x-base: &base {id: x, timezone: Asia/Shanghai}\nsite:\n  <<: *base\n  timezone: UTC\n",
                    encoding="utf-8")
    assert problems(path) == [f"{path}:1: x-base\n  found:    {{'id': 'x', 'timezone': 'Asia/Shanghai'}}\n"
                              "  expected: no such key here (check the spelling; see config/README.md)"]


# --- YAML bombs and size --------------------------------------------------------------------------------------

BOMB = ("site: {id: x, timezone: UTC}\n"
        "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
        + "".join(f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)))


def test_a_billion_laughs_is_refused_in_bounded_memory(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB, encoding="utf-8")  # 9 ** 9 = 387 million "lol"s in 400 bytes
    code, out, err = check_config(path, limit_as=1 << 30)
    assert code == 2 and out == ""
    assert "bomb.yaml:8: (aliases)\n  found:    more than 1,000,000 values, counting each alias as the value it " \
           "repeats\n  expected: a config of at most 1,000,000 values (aliases of aliases make a few lines into " \
           "billions of values: a 'YAML bomb')" in err


def test_an_alias_inside_itself_is_refused(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("site: &s {id: x, timezone: UTC, more: [*s]}\n", encoding="utf-8")
    assert problems(path) == [f"{path}:1: (aliases)\n  found:    an alias inside the value it names (the value "
                              "would contain itself)\n  expected: aliases that name a value written before them, "
                              "not one they are part of"]


def test_aliases_within_the_budget_still_work(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("site: {id: x, timezone: &tz Asia/Shanghai, name: *tz}\n"
                    "shifts:\n"
                    "  - id: day\n"
                    "    name: Day\n"
                    "    start: '08:00'\n"
                    "    end: '16:00'\n"
                    "    breaks: &breaks [{start: '12:00', end: '12:30', name: lunch}]\n"
                    "  - {id: late, name: Late, start: '16:00', end: '23:00', breaks: *breaks}\n", encoding="utf-8")
    cfg = load(path)
    assert cfg.site.name == "Asia/Shanghai"
    assert [b.name for s in cfg.shifts for b in s.breaks] == ["lunch", "lunch"]


def test_a_file_over_the_size_limit_is_refused_unread(tmp_path):
    path = tmp_path / "huge.yaml"
    with path.open("wb") as f:
        f.write(EXAMPLE.encode())
        f.truncate(MAX_BYTES + 1)
    assert problems(path) == [f"{path}: (file)\n  found:    more than 16 MiB\n"
                              "  expected: a config file of at most 16 MiB (is this the right file?)"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("site: {id: x, timezone: UTC}\nshifts: 2026-13-45\n",
         ":2: (syntax)\n  found:    '2026-13-45' is not a valid timestamp (month must be in 1..12); quote it if it is "
         "text\n  expected: valid YAML"),
        ("site: {id: x, timezone: !!int abc}\n",
         ":1: (syntax)\n  found:    'abc' is not a valid int (invalid literal for int() with base 10: 'abc'); quote it "
         "if it is text\n  expected: valid YAML"),
        ("site: " + "[" * 5000 + "]" * 5000 + "\n", ": (syntax)\n  found:    exceeded maximum nesting depth\n"),
    ],
    ids=["bad-date", "bad-int-tag", "deep"],
)
def test_values_yaml_cannot_build_are_problems_not_tracebacks(tmp_path, text, expected):
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    (problem,) = problems(path)
    assert expected in problem


# --- credentials in URLs --------------------------------------------------------------------------------------

SECRETS_POINTER = ("expected: a URL with no user or password in it: credentials have keys of their own (a source's "
                   "or the historian's `username`, and `password: ${ENV_VAR}` or `password_file`; see Secrets in "
                   "config/README.md)")


def test_a_password_in_any_url_is_refused_and_never_printed(tmp_path):
    text = (EXAMPLE.replace("url: mqtt://127.0.0.1:1883", "url: mqtt://edge:Mqtt-s3cret@127.0.0.1:1883")
            .replace("endpoint: opc.tcp://127.0.0.1:4840", "endpoint: opc.tcp://plc:Opc@-s3cret@127.0.0.1:4840"))
    text = text[:text.index("\nhistorian:")] + (
        "\nhistorian:\n  kind: influxdb\n  url: http://admin:Influx-s3cret@127.0.0.1:8086\n  database: shopfloor\n"
        "capacity:\n  push:\n    feed_url: https://feed:Feed-s3cret@mes.example/v1\n    endpoints:\n"
        "      - {name: erp, url: 'https://hook:Hook-s3cret@erp.example/in', secrets: ['${HOOK_SECRET}']}\n")
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    code, out, err = check_config(path)
    assert code == 2 and out == "" and "s3cret" not in err
    for key, shown in [("sources.opcua[0].endpoint", "opc.tcp://plc:(not shown)@127.0.0.1:4840/shopfloor/plc"),
                       ("sources.mqtt[0].url", "mqtt://edge:(not shown)@127.0.0.1:1883"),
                       ("historian.url", "http://admin:(not shown)@127.0.0.1:8086"),
                       ("capacity.push.feed_url", "https://feed:(not shown)@mes.example/v1"),
                       ("capacity.push.endpoints[0].url", "https://hook:(not shown)@erp.example/in")]:
        assert f": {key}\n  found:    '{shown}'\n  {SECRETS_POINTER}\n" in err


def test_a_user_alone_in_a_url_is_refused_too(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(EXAMPLE.replace("url: mqtt://127.0.0.1:1883", "url: mqtt://edge@127.0.0.1:1883"),
                    encoding="utf-8")
    (problem,) = problems(path)
    assert ": sources.mqtt[0].url\n  found:    'mqtt://edge@127.0.0.1:1883'\n  " + SECRETS_POINTER in problem


def test_agent_historian_url_with_a_password_is_refused_unechoed(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["agent", "--config", str(FACTORY_YAML), "--historian", "http://admin:Influx-s3cret@127.0.0.1:8086/db"])
    out, err = capsys.readouterr()
    assert exc.value.code == 2 and "s3cret" not in out + err
    assert err == "shopfloor agent: --historian http://127.0.0.1: put the password in INFLUX_PASSWORD, not in the URL\n"
