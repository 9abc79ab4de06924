"""Who is at the screen: the users of `dashboard.users` (a password, hashed with argon2 or, still accepted, in
plain text) with their role, and the TVs of `dashboard.kiosk_tokens` (viewers). auth.py decides once per request
who it is (`g.principal`); pages and the API ask here.

Roles, each allowed what the one before it is: viewer (reads), lead (gives stop reasons), admin.
No routes here: the login blueprint (auth.py) and every page (pages.py) ask this module, so neither imports the
other.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from flask import current_app, g, session

from agent.config import FactoryConfig, resolve_secret

ROLES = ("viewer", "lead", "admin")
KIOSK_PREFIX = "kiosk:"  # user names have no colon, so a TV's name never is a user's
_hasher = PasswordHasher()
# argon2 takes 64 MiB and tens of milliseconds per check: a few at a time, whatever the number of guessers
_argon2_slots = threading.BoundedSemaphore(4)
_VERIFIED_S = 300.0  # a script sending HTTP Basic pays for argon2 once in this long, not on every request
_verified: dict[str, float] = {}
_verified_key = secrets.token_bytes(32)


@dataclass(frozen=True)
class Principal:
    """Who made a request: a user or a kiosk token (`name`), its role, and how it was recognised."""

    name: str
    role: str
    via: str  # session, basic, kiosk-token

    def may(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


def _cfg() -> FactoryConfig:
    return current_app.extensions["shopfloor"]["cfg"]  # type: ignore[no-any-return]


def _credential(cfg: FactoryConfig, name: str) -> tuple[str, str, str] | None:
    """(kind, secret, role) of user `name`: kind "hash" (argon2) or "plain"; None for no such user."""
    for user in cfg.dashboard.users:
        if user.name == name:
            if user.password_hash is not None:
                return "hash", user.password_hash, user.role
            secret = resolve_secret(user.password, user.password_file)
            return ("plain", secret, user.role) if secret else None
    return None


def password_version(kind: str, secret: str) -> str:
    """A short fingerprint of a user's password (or hash): a session opened with another one has ended."""
    return hashlib.sha256(f"{kind}\0{secret}".encode()).hexdigest()[:24]


def password_versions(cfg: FactoryConfig) -> dict[str, str]:
    """Every user's (and kiosk's) current password version."""
    out = {}
    for user in cfg.dashboard.users:
        found = _credential(cfg, user.name)
        if found:
            out[user.name] = password_version(found[0], found[1])
    for token in cfg.dashboard.kiosk_tokens:
        out[KIOSK_PREFIX + token.name] = password_version("kiosk", token.sha256)
    return out


@functools.cache
def _dummy_hash(like: str) -> str:
    """Checked for unknown names, so the time an answer takes does not tell which names exist: made with the
    parameters of a real user's hash (`like`), so it takes as long."""
    hasher = _hasher
    with contextlib.suppress(InvalidHashError, ValueError):
        hasher = PasswordHasher.from_parameters(extract_parameters(like))
    return hasher.hash(secrets.token_hex(16))


def _argon2_ok(hashed: str, password: str) -> bool:
    key = _cache_key(hashed, password)
    now = time.monotonic()
    if _verified.get(key, 0.0) > now:
        return True
    ok = False
    with _argon2_slots, contextlib.suppress(VerifyMismatchError, VerificationError, InvalidHashError):
        ok = bool(_hasher.verify(hashed, password))
    if ok:
        if len(_verified) > 1000:
            _verified.clear()
        _verified[key] = now + _VERIFIED_S
    return ok


def _cache_key(hashed: str, password: str) -> str:
    return hmac.new(_verified_key, f"{hashed}\0{password}".encode(), "sha256").hexdigest()


def cheap_to_check(name: str, password: str) -> bool:
    """Whether checking this password takes no argon2 run: a plain-text password, or a hash this password
    matched in the last minutes."""
    cfg = _cfg()
    found = _credential(cfg, name)
    if found is None:  # an unknown name costs what a known one would (see verify_password)
        return _hash_like(cfg) is None
    return found[0] == "plain" or _verified.get(_cache_key(found[1], password), 0.0) > time.monotonic()


def _hash_like(cfg: FactoryConfig) -> str | None:
    return next((u.password_hash for u in cfg.dashboard.users if u.password_hash is not None), None)


def verify_password(name: str, password: str) -> Principal | None:
    """The user `name` when `password` is theirs, else None (the same work either way)."""
    cfg = _cfg()
    found = _credential(cfg, name)
    if found is None:
        like = _hash_like(cfg)
        if like is not None:
            _argon2_ok(_dummy_hash(like), password)
        else:  # only plain passwords: compare with something, as for a known name
            hmac.compare_digest(secrets.token_hex(16).encode(), password.encode())
        return None
    kind, secret, role = found
    if kind == "hash":
        ok = _argon2_ok(secret, password)
    else:
        ok = hmac.compare_digest(secret.encode(), password.encode())
    return Principal(name, role, "password") if ok else None


def check_password(name: str, password: str) -> bool:
    """True when `name` is a user of dashboard.users and `password` is theirs (no throttling: auth.py's)."""
    return verify_password(name, password) is not None


def _token_name(token: str, known: list[Any]) -> str | None:
    digest = hashlib.sha256(token.encode("utf-8")).hexdigest()
    name = None
    for entry in known:  # every entry is compared, so timing does not tell how many match
        if hmac.compare_digest(entry.sha256, digest):
            name = entry.name
    return name


def verify_kiosk_token(token: str) -> Principal | None:
    """The TV whose token this is (a viewer), else None."""
    name = _token_name(token, list(_cfg().dashboard.kiosk_tokens))
    return Principal(KIOSK_PREFIX + name, "viewer", "kiosk-token") if name is not None else None


def feed_token_known(token: str) -> bool:
    """Whether `token` is one of capacity.tokens (the feed checks it again and names its holder)."""
    return _token_name(token, list(_cfg().capacity.tokens)) is not None


def session_principal() -> Principal | None:
    """The user of this request's login session, when the session is still good: a session opened with a
    password (or kiosk token) that has changed since is emptied (and so ends)."""
    name, version = session.get("user"), session.get("pwv")
    if not isinstance(name, str):
        return None
    cfg = _cfg()
    if name.startswith(KIOSK_PREFIX):
        role: str | None = "viewer"
    else:
        role = next((u.role for u in cfg.dashboard.users if u.name == name), None)
    if role is None or password_versions(cfg).get(name) != version:
        session.clear()
        return None
    return Principal(name, role, "session")


def open_session(principal: Principal) -> None:
    """Log `principal` in: a new session id, a new CSRF token."""
    session.clear()
    session.rotate()  # type: ignore[attr-defined]
    session.update(user=principal.name, role=principal.role, pwv=password_versions(_cfg()).get(principal.name),
                   created=time.time())


def current_principal() -> Principal | None:
    """Who made this request (auth.py decided it before the view ran), or None."""
    found: Any = g.get("principal")
    return found if isinstance(found, Principal) else None


def current_user() -> str | None:
    """The logged-in user of this request (session, HTTP Basic or kiosk token), or None."""
    found = current_principal()
    return found.name if found else None


def csrf_token() -> str:
    """This session's CSRF token, made on first use."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = session["csrf"] = secrets.token_urlsafe(24)
    return token
