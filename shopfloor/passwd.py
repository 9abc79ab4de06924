"""`shopfloor passwd`: the argon2 hash of a dashboard user's password, for `password_hash:` in dashboard.users.

The password is read twice without echo from the terminal (or once from standard input with --stdin); the hash
is printed as the user entry's line, or written into a file (--out: the entry, mode 600; --config: the
password_hash of that user in a config file, changed in place, which ends the user's open sessions).
"""

from __future__ import annotations

import argparse
import copy
import getpass
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

MIN_LENGTH = 8


def register(sub: Any) -> None:
    p = sub.add_parser("passwd", help="hash a dashboard user's password (argon2) for dashboard.users[].password_hash")
    p.add_argument("user", help="the user's name in dashboard.users")
    p.add_argument("--stdin", action="store_true", help="read the password from the first line of standard input "
                                                        "(for scripts) instead of asking twice")
    p.add_argument("--role", choices=("viewer", "lead", "admin"), default=None,
                   help="the role to print with the entry (default: lead)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--out", help="write the user entry to this file (mode 600) instead of printing it")
    where.add_argument("--config", help="set the user's password_hash in this config file (the user must be "
                                        "listed in its dashboard.users)")
    p.set_defaults(func=cmd_passwd)


def read_password(stdin: bool) -> str:
    """The new password; ValueError with what is wrong with it."""
    if stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        password = password.removesuffix("\r")
    else:
        password = getpass.getpass("New password: ")
        if getpass.getpass("Repeat it: ") != password:
            raise ValueError("the two passwords differ; nothing was changed")
    if len(password) < MIN_LENGTH:
        raise ValueError(f"a password needs at least {MIN_LENGTH} characters; nothing was changed")
    return password


def hash_password(password: str) -> str:
    from argon2 import PasswordHasher

    return PasswordHasher().hash(password)


SECRET_KEYS = ("password", "password_file", "password_hash")


def config_with_user(path: Path, user: str) -> tuple[str, dict[str, Any]]:
    """The text and data of the config file `path`; ValueError unless its dashboard.users has `user`."""
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{path} is not valid YAML: {exc}") from None
    users = ((data.get("dashboard") or {}).get("users") or []) if isinstance(data, dict) else []
    if not isinstance(users, list) or not any(isinstance(u, dict) and u.get("name") == user for u in users):
        raise ValueError(f"no user {user!r} in {path} (dashboard.users)")
    return text, data


def set_in_config(path: Path, user: str, hashed: str) -> None:
    """Set user `user`'s password_hash in the config file `path` (in place of its password, password_file or
    password_hash line), keeping every other line and comment as it was. The result is read back: unless it is
    the same config with only that user's password changed, nothing is written (ValueError says why)."""
    text, before = config_with_user(path, user)
    expected = copy.deepcopy(before)
    for entry in expected["dashboard"]["users"]:
        if isinstance(entry, dict) and entry.get("name") == user:
            for key in SECRET_KEYS:
                entry.pop(key, None)
            entry["password_hash"] = hashed
    lines = text.splitlines(keepends=True)
    for candidate in _edits(lines, user, hashed):
        changed = "".join(candidate)
        try:
            if yaml.safe_load(changed) == expected:
                break
        except yaml.YAMLError:
            continue
    else:
        raise ValueError(f"cannot find the password line of user {user} in {path}; set password_hash: by hand")
    tmp = path.with_name(path.name + ".passwd-tmp")
    tmp.write_text(changed, encoding="utf-8")
    os.chmod(tmp, path.stat().st_mode & 0o777)
    os.replace(tmp, path)


def _edits(lines: list[str], user: str, hashed: str) -> Iterator[list[str]]:
    """Candidate edits of the file's lines, each setting one entry named `user` (flow or block style)."""
    value = f"'{hashed}'"
    flow = re.compile(r"^(\s*-\s*)(\{.*\})(\s*#.*)?$")
    for i, line in enumerate(lines):
        body = line.rstrip("\r\n")
        ending = line[len(body):] or "\n"
        m = flow.match(body)
        if m:
            try:
                entry = yaml.safe_load(m.group(2))
            except yaml.YAMLError:
                continue
            if isinstance(entry, dict) and entry.get("name") == user:
                kept = [f"{k}: {_flow(v)}" for k, v in entry.items() if k not in SECRET_KEYS]
                yield [*lines[:i], f"{m.group(1)}{{{', '.join([*kept, 'password_hash: ' + value])}}}"
                                   f"{m.group(3) or ''}{ending}", *lines[i + 1:]]
            continue
        # block style: any password line may be the user's; set_in_config keeps the edit that reads back right
        m = re.match(r"^(\s*(?:-\s+)?)(\w+):", body)
        if m and m.group(2) in SECRET_KEYS:
            yield [*lines[:i], f"{m.group(1)}password_hash: {value}{ending}", *lines[i + 1:]]


def cmd_passwd(args: argparse.Namespace) -> int:
    if not re.fullmatch(r"[^:\s][^:]{0,63}", args.user):
        print(f"shopfloor passwd: {args.user!r} cannot be a user name (1-64 characters, no colon)", file=sys.stderr)
        return 2
    if args.config:  # a config that cannot take the hash is said before the password is asked for
        try:
            config_with_user(Path(args.config), args.user)
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            print(f"shopfloor passwd: {getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
            return 2
    try:
        password = read_password(args.stdin)
    except ValueError as exc:
        print(f"shopfloor passwd: {exc}", file=sys.stderr)
        return 2
    except (EOFError, KeyboardInterrupt):
        print("\nshopfloor passwd: no password given; nothing was changed", file=sys.stderr)
        return 2
    hashed = hash_password(password)
    entry = f"- {{name: {args.user}, role: {args.role or 'lead'}, password_hash: '{hashed}'}}"
    if args.config:
        path = Path(args.config)
        try:
            set_in_config(path, args.user, hashed)
        except (OSError, ValueError, UnicodeDecodeError) as exc:
            print(f"shopfloor passwd: {getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
            return 2
        print(f"{path}: password_hash of {args.user} set (restart the dashboard; the user's open sessions end)")
        return 0
    if args.out:
        out = Path(args.out)
        try:
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(entry + "\n")
        except OSError as exc:
            print(f"shopfloor passwd: cannot write {out}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        print(f"{out}: the entry for dashboard.users written")
        return 0
    print("add under dashboard.users (replacing the user's password or password_file):")
    print(f"  {entry}")
    return 0


def _flow(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()
