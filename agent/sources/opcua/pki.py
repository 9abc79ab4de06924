"""The agent's store of OPC UA server certificates, in its data directory:

    <data-dir>/pki/trusted/<thumbprint>.der    servers the agent trusts (besides the config's
                                               trusted_server_certificates)
    <data-dir>/pki/rejected/<thumbprint>.der   servers it refused, saved when it saw them

A server certificate the agent does not trust is saved to rejected/; a person checks it and moves it to trusted/
(`shopfloor certs trust`), or back (`shopfloor certs reject`). The agent reads trusted/ on every connection
attempt, so a move takes effect without a restart. Files of the older layout, `pki/untrusted-<thumbprint>.der`,
count as rejected. Thumbprints are SHA-1 of the DER certificate, as OPC UA servers show them.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

log = logging.getLogger(__name__)

TRUSTED = "trusted"
REJECTED = "rejected"
LEGACY_REJECTED = "untrusted-*.der"


def thumbprint(der: bytes) -> str:
    return hashlib.sha1(der).hexdigest()  # noqa: S324 - OPC UA identifies certificates by SHA-1 thumbprint


def load_der(path: Path) -> bytes:
    """A certificate file (DER or PEM) as DER; ValueError when it is neither."""
    data = path.read_bytes()
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data).public_bytes(encoding=Encoding.DER)
    x509.load_der_x509_certificate(data)
    return data


def certificate_files(folder: Path) -> list[Path]:
    """The certificate files of a store folder (.der, .pem, .crt), sorted by name."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in (".der", ".pem", ".crt"))


def trusted_thumbprints(pki_dir: Path) -> set[str]:
    """Thumbprints of the certificates in pki/trusted; a file that is no certificate is logged and skipped."""
    out = set()
    for path in certificate_files(pki_dir / TRUSTED):
        try:
            out.add(thumbprint(load_der(path)))
        except (OSError, ValueError) as exc:
            log.warning("OPC UA trust store: %s is not a certificate (%s); skipped", path, exc)
    return out


def save_rejected(pki_dir: Path, der: bytes) -> Path:
    """Keep a refused server certificate in pki/rejected (written atomically, so a reader never sees half)."""
    folder = pki_dir / REJECTED
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{thumbprint(der)}.der"
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(der)
    os.replace(tmp, path)
    return path
