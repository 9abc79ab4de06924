"""Self-signed certificates for the simulators: generated once into a directory, then reused.

Reuse matters: a client that was told to trust the simulator's certificate keeps working across restarts.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from asyncua.crypto import cert_gen
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

log = logging.getLogger(__name__)

VALID_DAYS = 3650  # a simulator certificate should not expire in the middle of a long-lived test setup


@dataclass(frozen=True)
class CertificatePair:
    """Where a certificate (DER) and its private key (PEM, unencrypted) are kept."""

    certificate: Path
    private_key: Path


def ensure_self_signed(directory: Path, application_uri: str, common_name: str) -> CertificatePair:
    """The certificate and key in `directory`, generated when missing, expired or made for another URI.

    The certificate names `application_uri` (OPC UA requires it in the subject alternative names), this host's
    name, `localhost` and 127.0.0.1, and may be used by servers and clients.
    """
    directory.mkdir(parents=True, exist_ok=True)
    pair = CertificatePair(directory / "cert.der", directory / "key.pem")
    if pair.certificate.is_file() and pair.private_key.is_file() and _still_good(pair, application_uri):
        return pair
    key = cert_gen.generate_private_key()
    alt_names: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(application_uri),
        x509.DNSName(socket.gethostname()),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    certificate = cert_gen.generate_self_signed_app_certificate(
        key,
        common_name,
        {"organizationName": "Shopfloor simulator"},
        alt_names,
        extended=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
        days=VALID_DAYS,
    )
    # The key is written first and owner-only: a crash between the two writes leaves no certificate without key.
    fd = os.open(pair.private_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(cert_gen.dump_private_key_as_pem(key))
    pair.certificate.write_bytes(certificate.public_bytes(serialization.Encoding.DER))
    log.info("generated self-signed certificate %s for %s", pair.certificate, application_uri)
    return pair


def _still_good(pair: CertificatePair, application_uri: str) -> bool:
    try:
        certificate = x509.load_der_x509_certificate(pair.certificate.read_bytes())
        uris = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier
        )
    except (ValueError, x509.ExtensionNotFound, OSError):
        return False
    expires = certificate.not_valid_after_utc
    return application_uri in uris and expires > datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=1)
