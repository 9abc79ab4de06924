"""Config model of a Siemens S7 source and the syntax of an S7 tag address (no snap7 here)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from agent.config.base import Model, Slug


class S7SourceConfig(Model):
    id: Slug
    host: str
    port: Annotated[int, Field(ge=1, le=65535)] = 102
    rack: Annotated[int, Field(ge=0, le=7)] = 0
    slot: Annotated[int, Field(ge=0, le=31)] = 1
    timeout_s: Annotated[float, Field(gt=0)] = 2.0
    poll_ms: Annotated[int, Field(ge=50)] = 500


def parse_address(text: str) -> object:
    """The parsed address; raises ValueError with what is expected."""
    raise ValueError("S7 addresses are not supported yet")
