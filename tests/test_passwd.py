"""`shopfloor passwd`: a password typed twice without echo (or given on stdin) becomes an argon2 hash, printed as
the user's entry, written to a file, or set in place in a config that then loads without the warning about plain
passwords (the warning check-config and the dashboard log at start)."""

from __future__ import annotations

import argparse
import io
import logging
import os
import pty
import select
import sys
import time

import pytest
import yaml
from argon2 import PasswordHasher

from shopfloor import passwd
from tests.conftest import FACTORY_YAML

PASSWORD = "early shift lead 7"


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="shopfloor")
    passwd.register(top.add_subparsers(dest="command", required=True))
    return top


def passwd_cmd(*argv: str, stdin: str = "", capsys=None) -> tuple[int, str, str]:
    """`shopfloor passwd ARGV` in this process with `stdin` as its standard input: (exit code, stdout, stderr)."""
    args = parser().parse_args(["passwd", *argv])
    saved = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        code = args.func(args)
    finally:
        sys.stdin = saved
    out, err = capsys.readouterr()
    return code, out, err


def test_the_command_is_registered():
    from shopfloor import cli

    assert "shopfloor.passwd" in cli.COMMAND_MODULES


def hash_in(text: str) -> str:
    return text.split("password_hash: '", 1)[1].split("'", 1)[0]


def test_stdin_prints_the_entry_with_a_hash_of_the_password(capsys):
    code, out, err = passwd_cmd("lead", "--stdin", "--role", "admin", stdin=PASSWORD + "\n", capsys=capsys)
    assert code == 0, err
    assert "- {name: lead, role: admin, password_hash: '$argon2id$" in out
    assert PasswordHasher().verify(hash_in(out), PASSWORD)
    assert PASSWORD not in out + err


@pytest.mark.parametrize("argv,stdin,message", [
    (["lead", "--stdin"], "short\n", "a password needs at least 8 characters; nothing was changed"),
    (["lead", "--stdin"], "", "a password needs at least 8 characters; nothing was changed"),
    (["le:ad", "--stdin"], PASSWORD + "\n", "'le:ad' cannot be a user name (1-64 characters, no colon)"),
])
def test_bad_input_is_refused_with_a_message(argv, stdin, message, capsys):
    code, out, err = passwd_cmd(*argv, stdin=stdin, capsys=capsys)
    assert code == 2
    assert err.strip() == f"shopfloor passwd: {message}"
    assert out == ""


PROMPTS = (b"New password:", b"Repeat it:")


def typed(argv: list[str], answers: list[str]) -> tuple[int, str]:
    """`shopfloor passwd ARGV` on a terminal (its controlling terminal, as for a user at a console), typing
    `answers` at its prompts; (exit code, what the screen showed)."""
    args = parser().parse_args(["passwd", *argv])
    pid, fd = pty.fork()
    if pid == 0:  # the child: the command on the terminal, then out without running anything of pytest's
        code = 70
        try:
            sys.stdout, sys.stderr = open(1, "w", closefd=False), open(2, "w", closefd=False)  # noqa: SIM115
            code = args.func(args)
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
    screen = b""
    typed_at = 0
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            # type an answer only after its prompt is shown: getpass discards what was typed before it
            shown = sum(screen.count(p) for p in PROMPTS)
            if typed_at < min(shown, len(answers)):
                os.write(fd, answers[typed_at].encode() + b"\n")
                typed_at += 1
            ready, _, _ = select.select([fd], [], [], 1)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the child has exited
                break
            if not chunk:
                break
            screen += chunk
    finally:
        if time.monotonic() >= deadline:
            os.kill(pid, 9)
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), screen.decode(errors="replace")


def test_a_password_typed_twice_is_not_echoed():
    code, screen = typed(["lead"], [PASSWORD, PASSWORD])
    assert code == 0, screen
    assert "New password:" in screen and "Repeat it:" in screen
    assert PASSWORD not in screen
    assert PasswordHasher().verify(hash_in(screen), PASSWORD)


def test_two_different_passwords_change_nothing(tmp_path):
    out = tmp_path / "entry.yaml"
    code, screen = typed(["lead", "--out", str(out)], [PASSWORD, PASSWORD + "x"])
    assert code == 2
    assert "the two passwords differ; nothing was changed" in screen
    assert not out.exists()


def test_out_writes_the_entry_for_the_owner_only(tmp_path, capsys):
    out = tmp_path / "entry.yaml"
    code, _, err = passwd_cmd("tv-1", "--role", "viewer", "--stdin", "--out", str(out), stdin=PASSWORD, capsys=capsys)
    assert code == 0, err
    assert out.stat().st_mode & 0o777 == 0o600
    (entry,) = yaml.safe_load(out.read_text())
    assert entry["name"] == "tv-1" and entry["role"] == "viewer"
    assert PasswordHasher().verify(entry["password_hash"], PASSWORD)


USERS_BLOCK = """dashboard:
  users:
    # the early shift's lead
    - name: lead
      password: ${SHOPFLOOR_TEST_LEAD}   # to be hashed
    - {name: boss, role: admin, password_file: boss-password}
"""


def test_config_sets_the_hash_in_place_and_the_load_stops_warning(tmp_path, capsys, caplog, monkeypatch):
    from agent.config import load

    def warnings():
        caplog.clear()
        load(config)
        return " ".join(m for m in caplog.messages if "plain-text password" in m)

    caplog.set_level(logging.WARNING, "agent.config.dashboard")
    monkeypatch.setenv("SHOPFLOOR_TEST_LEAD", "plain lead password")
    config = tmp_path / "factory.yaml"
    (tmp_path / "boss-password").write_text("boss password 1")
    text = FACTORY_YAML.read_text(encoding="utf-8") + "\n" + USERS_BLOCK.replace("boss-password",
                                                                              str(tmp_path / "boss-password"))
    config.write_text(text, encoding="utf-8")
    assert "dashboard.users: lead, boss have a plain-text password; run `shopfloor passwd`" in warnings()
    for user, other in (("boss", "lead"), ("lead", None)):  # a flow entry, then a block entry with a comment
        code, _, err = passwd_cmd(user, "--stdin", "--config", str(config), stdin=PASSWORD + "\n", capsys=capsys)
        assert code == 0, err
        changed = config.read_text(encoding="utf-8")
        assert "# the early shift's lead" in changed  # comments kept
        users = {u["name"]: u for u in yaml.safe_load(changed)["dashboard"]["users"]}
        assert "password" not in users[user] and "password_file" not in users[user]
        assert users["boss"]["role"] == "admin" and set(users) == {"lead", "boss"}
        if other:
            assert "password" in users[other] and "password_hash" not in users[other]
            assert f"dashboard.users: {other} has a plain-text password" in warnings()
        else:
            assert warnings() == ""
    assert PasswordHasher().verify(users["lead"]["password_hash"], PASSWORD)
    cfg = load(config)
    assert {u.name: (u.role, u.password_hash is not None) for u in cfg.dashboard.users} == {
        "lead": ("lead", True), "boss": ("admin", True)}


def test_config_without_the_user_is_left_as_it_was(tmp_path, capsys):
    config = tmp_path / "factory.yaml"
    config.write_text(USERS_BLOCK, encoding="utf-8")
    code, _, err = passwd_cmd("nobody", "--stdin", "--config", str(config), stdin=PASSWORD, capsys=capsys)
    assert code == 2
    assert err.strip() == f"shopfloor passwd: no user 'nobody' in {config} (dashboard.users)"  # before any prompt
    assert config.read_text(encoding="utf-8") == USERS_BLOCK


def test_a_missing_config_says_so(tmp_path, capsys):
    code, _, err = passwd_cmd("lead", "--stdin", "--config", str(tmp_path / "nope.yaml"), stdin=PASSWORD,
                              capsys=capsys)
    assert code == 2 and "No such file or directory" in err
