"""The demo's dashboard user: its config holds an argon2 hash (no plain-text password warning at start), the
readable password stays in the demo's data dir for the person trying it, and restarts keep the same hash."""

from __future__ import annotations

import logging

from argon2 import PasswordHasher

from agent.config import load
from shopfloor.demo import DEMO_USER, demo_config, demo_password_hash
from tests.conftest import FACTORY_YAML


def test_the_demo_user_has_a_password_hash_and_no_plain_text_warning(tmp_path, caplog):
    caplog.set_level(logging.WARNING, "agent.config.dashboard")
    path = demo_config(FACTORY_YAML, tmp_path, "mqtt://127.0.0.1:1999", 4999, 9999)
    caplog.clear()
    cfg = load(path)
    assert not [m for m in caplog.messages if "plain-text password" in m], caplog.messages
    (user,) = cfg.dashboard.users
    assert (user.name, user.role, user.password, user.password_file) == (DEMO_USER, "lead", None, None)
    password = (tmp_path / "dashboard-password").read_text(encoding="utf-8")
    assert len(password) >= 12 and password not in path.read_text(encoding="utf-8")
    assert user.password_hash is not None and PasswordHasher().verify(user.password_hash, password)
    assert (tmp_path / "dashboard-password.argon2").stat().st_mode & 0o077 == 0

    # a restart keeps the hash (a new one would end the sessions opened with it); an edited password gets its own
    assert demo_password_hash(tmp_path, tmp_path / "dashboard-password") == user.password_hash
    (tmp_path / "dashboard-password").write_text("a password of my own\n", encoding="utf-8")
    edited = demo_password_hash(tmp_path, tmp_path / "dashboard-password")
    assert edited != user.password_hash and PasswordHasher().verify(edited, "a password of my own")
