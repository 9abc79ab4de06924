"""Config model of an OPC UA source and the text form of a NodeId, a tag's address (no asyncua here: the config
check imports this module)."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from agent.config.base import Model, NoCredentials, SecretRef, Slug

NODE_ID_FORMS = "ns=<index>; or nsu=<namespace URI>; then i=<number>, s=<text>, g=<GUID> or b=<base64>"
_NODE_ID = re.compile(r"(?:ns=(?P<ns>[^;]*);|nsu=(?P<uri>.*?);)?(?P<kind>[isgb])=(?P<id>.*)\Z", re.DOTALL)
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")


def parse_node_id(text: str) -> tuple[int | str, str, str]:
    """An OPC UA NodeId in its text form as (namespace index or URI, identifier type i/s/g/b, identifier).

    No namespace means namespace 0. Raises ValueError saying what is wrong.
    """
    m = _NODE_ID.match(text)
    if m is None:
        raise ValueError(f"an OPC UA NodeId: {NODE_ID_FORMS} (e.g. ns=3;i=1042)")
    kind, identifier = m.group("kind"), m.group("id")
    namespace: int | str = 0
    if m.group("uri") is not None:
        namespace = m.group("uri")
        if not namespace:
            raise ValueError("a namespace URI after nsu= (e.g. nsu=urn:vendor:plc;i=1042)")
    elif m.group("ns") is not None:
        if not m.group("ns").isdigit() or int(m.group("ns")) > 65535:
            raise ValueError("a namespace index from 0 to 65535 after ns=")
        namespace = int(m.group("ns"))
    if kind == "i" and not (identifier.isdigit() and identifier.isascii() and int(identifier) < 2**32):
        raise ValueError("a whole number from 0 to 4294967295 after i=")
    if kind == "s" and not identifier:
        raise ValueError("a name after s=")
    if kind == "g" and not _GUID.match(identifier):
        raise ValueError("a GUID like 72962b91-fa75-4ae6-8d28-b404dc7daf63 after g=")
    if kind == "b":
        try:
            if not base64.b64decode(identifier, validate=True):
                raise ValueError
        except ValueError:
            raise ValueError("bytes in base64 (e.g. M/RbKBsRVkePCePcx24oRA==) after b=") from None
    return namespace, kind, identifier


class OpcUaSecurity(Model):
    policy: Literal["None", "Basic256Sha256"] = "None"
    mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    certificate_dir: Path | None = Field(
        default=None, description="where the client certificate is generated once and kept (default <data-dir>/pki)"
    )
    trusted_server_certificates: list[Path] = Field(
        default=[], description="server certificates (DER or PEM) this agent trusts"
    )

    @model_validator(mode="after")
    def _policy_mode(self) -> OpcUaSecurity:
        if (self.policy == "None") != (self.mode == "None"):
            raise ValueError("policy None goes with mode None; Basic256Sha256 needs mode Sign or SignAndEncrypt")
        return self


class OpcUaSource(Model):
    id: Slug
    endpoint: Annotated[str, NoCredentials, Field(pattern=r"^opc\.tcp://")]
    security: OpcUaSecurity = OpcUaSecurity()
    username: str | None = None
    password: SecretRef | None = None
    password_file: Path | None = None
    publishing_interval_ms: Annotated[float, Field(gt=0)] = 100
    watchdog_s: Annotated[float, Field(gt=0)] = 5.0
    timeout_s: Annotated[float, Field(gt=0)] = 4.0
