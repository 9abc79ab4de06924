"""What every config section is built from: the strict base model, ids, local times, secret references and
the few helpers the checks across sections share."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

SLUG = r"^[a-z0-9][a-z0-9_-]{0,47}$"
Slug = Annotated[str, Field(pattern=SLUG, description="short id: lower-case letters, digits, '-' or '_'")]
HHMM = Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="local time HH:MM")]
SECRET_KEYS = frozenset({"password", "token"})
ENV_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


# `scheme://user[:password]@host`: a URL that carries credentials
_URL_USERINFO = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*@")


def _no_credentials(value: Any) -> Any:
    if isinstance(value, str) and _URL_USERINFO.match(value):
        raise ValueError("a URL with no user or password in it: credentials have keys of their own (a source's or "
                         "the historian's `username`, and `password: ${ENV_VAR}` or `password_file`; see Secrets "
                         "in config/README.md)")
    return value


# Put in a URL field's Annotated[...]: a user or password in the URL is refused before any other check, so the
# user learns where credentials go (they would be neither used to log in nor kept out of the logs).
NoCredentials = BeforeValidator(_no_credentials)


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- secrets -----------------------------------------------------------------------------------------------


class SecretRef(str):
    """A secret given as `${ENV_VAR}`; resolved by `resolve_secret` at start-up, never stored in YAML."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: Any) -> Any:
        from pydantic_core import core_schema

        def check(value: str) -> SecretRef:
            if not ENV_REF.match(value):
                raise ValueError("an environment reference like ${PLC_PASSWORD} (secrets are never inline)")
            return cls(value)

        return core_schema.no_info_after_validator_function(check, core_schema.str_schema())


def resolve_secret(ref: SecretRef | None, file: Path | None) -> str | None:
    """The secret's value from the environment or the file; None when neither is configured."""
    if ref is not None:
        m = ENV_REF.match(ref)
        assert m
        return os.environ.get(m.group(1))
    if file is not None:
        return file.read_text(encoding="utf-8").strip()
    return None


# --- what the checks across sections report -----------------------------------------------------------------

# One rule broken: the key path, what was found there and what is expected (the loader adds file and line).
Issue = tuple[tuple[Any, ...], Any, str]


def unique(items: list[str], loc: tuple[Any, ...], key: str, what: str) -> list[Issue]:
    """An issue for each item that repeats one before it; `loc + (index, key)` is where it stands."""
    out: list[Issue] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        if item in seen:
            out.append((loc + (i, key), item, f"a {what} not used before (ids are unique)"))
        seen.add(item)
    return out


def unset_secret(loc: tuple[Any, ...], ref: SecretRef | None) -> list[Issue]:
    """An issue when `ref` names an environment variable that is not set."""
    if ref is not None and resolve_secret(ref, None) is None:
        return [(loc, str(ref), f"environment variable {ref[2:-1]} to be set")]
    return []


def unreadable_file(loc: tuple[Any, ...], path: Path | None) -> list[Issue]:
    """An issue when `path` is given but is not a file this process can read."""
    if path is not None and not (path.is_file() and os.access(path, os.R_OK)):
        return [(loc, str(path), "a readable file")]
    return []
