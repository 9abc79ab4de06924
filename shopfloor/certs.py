"""`shopfloor certs list|trust|reject`: the OPC UA server certificates the agent trusts, from the command line.

The store is the agent's `<data-dir>/pki` (agent/sources/opcua/pki.py): `trusted/` and `rejected/`, one
`<thumbprint>.der` each. `list` shows every certificate the agent knows of (its own client certificates, the
trusted and rejected servers, and those the config trusts by path) with subject, thumbprint, expiry and state;
`trust` moves a rejected certificate to trusted (or adds a certificate file), `reject` the other way. The agent
reads the store at each connection attempt: no restart is needed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from agent.sources.opcua.pki import (
    LEGACY_REJECTED,
    REJECTED,
    TRUSTED,
    certificate_files,
    load_der,
    thumbprint,
)

MIN_PREFIX = 6


@dataclass(frozen=True)
class Entry:
    """One certificate file the agent knows of."""

    state: str  # own, trusted, rejected, trusted (config)
    path: Path
    thumbprint: str
    subject: str
    not_after: dt.datetime | None
    error: str = ""  # the file is not a readable certificate

    @property
    def expiry(self) -> str:
        if self.not_after is None:
            return "-"
        day = self.not_after.strftime("%Y-%m-%d")
        return f"EXPIRED {day}" if self.not_after < dt.datetime.now(dt.UTC) else day


def register(sub: Any) -> None:
    p = sub.add_parser("certs", help="OPC UA server certificates the agent trusts: list, trust, reject",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="certs_action", required=True, metavar="ACTION")
    for name, help_text in (("list", "every certificate with subject, thumbprint, expiry and state"),
                            ("trust", "trust a rejected server certificate (by thumbprint) or a certificate file"),
                            ("reject", "stop trusting a server certificate (by thumbprint)")):
        a = actions.add_parser(name, help=help_text)
        if name != "list":
            a.add_argument("certificate", help="thumbprint (its first 6 or more hex digits; colons allowed)"
                                               + (" or a certificate file (DER or PEM)" if name == "trust" else ""))
        where = a.add_mutually_exclusive_group(required=True)
        where.add_argument("--config", help="the agent's config: its agent.data_dir holds the store")
        where.add_argument("--pki", type=Path, help="the store folder itself (<data-dir>/pki)")
        a.add_argument("--data-dir", help="with --config: the agent's --data-dir, when it runs with one")
        a.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        pki_dir, cfg = _store(args)
    except ValueError as exc:
        print(f"shopfloor certs: {exc}", file=sys.stderr)
        return 2
    entries = collect(pki_dir, cfg)
    if args.certs_action == "list":
        print_table(pki_dir, entries)
        return 0
    try:
        message = trust(pki_dir, entries, args.certificate) if args.certs_action == "trust" \
            else reject(pki_dir, entries, args.certificate)
    except LookupError as exc:
        print(f"shopfloor certs: {exc.args[0]}", file=sys.stderr)
        return 1
    print(message)
    return 0


def _store(args: argparse.Namespace) -> tuple[Path, Any]:
    if args.pki is not None:
        if not args.pki.is_dir():
            raise ValueError(f"--pki {args.pki}: no such folder")
        return args.pki, None
    from agent.config import ConfigError, load

    try:
        cfg = load(args.config, resolve_secrets=False)
    except ConfigError as exc:
        raise ValueError(f"the config has {len(exc.problems)} problem(s): `shopfloor check-config "
                         f"{args.config}` lists them") from None
    return Path(args.data_dir or cfg.agent.data_dir) / "pki", cfg


def _entry(state: str, path: Path) -> Entry:
    try:
        der = load_der(path)
        cert = x509.load_der_x509_certificate(der)
    except (OSError, ValueError) as exc:
        return Entry(state, path, "-", "-", None, f"not a readable certificate: {exc}")
    return Entry(state, path, thumbprint(der), cert.subject.rfc4514_string(), cert.not_valid_after_utc)


def collect(pki_dir: Path, cfg: Any = None) -> list[Entry]:
    """Every certificate of the store, the agent's own, and (with a config) those it trusts by path."""
    out: list[Entry] = []
    own_dirs = [pki_dir]
    listed: list[tuple[str, Path]] = []
    if cfg is not None:
        for source in cfg.sources.opcua:
            if source.security.certificate_dir is not None:
                own_dirs.append(Path(source.security.certificate_dir))
            listed += [(source.id, Path(p)) for p in source.security.trusted_server_certificates]
    seen_own: set[Path] = set()
    for folder in own_dirs:
        own = folder / "agent-cert.der"
        if own.is_file() and own.resolve() not in seen_own:
            seen_own.add(own.resolve())
            out.append(_entry("own", own))
    out += [_entry("trusted", p) for p in certificate_files(pki_dir / TRUSTED)]
    out += [_entry("rejected", p) for p in certificate_files(pki_dir / REJECTED)]
    out += [_entry("rejected", p) for p in sorted(pki_dir.glob(LEGACY_REJECTED))]
    out += [_entry(f"trusted (config {source})", p) for source, p in listed]
    return out


def print_table(pki_dir: Path, entries: list[Entry]) -> None:
    print(f"OPC UA certificates of the agent (store {pki_dir}):")
    if not entries:
        print("  none yet: the agent saves a server's certificate in rejected/ when it first refuses it")
        return
    rows = [("STATE", "THUMBPRINT", "EXPIRES", "SUBJECT", "FILE")]
    rows += [(e.state, e.thumbprint, e.expiry, e.error or e.subject, str(e.path)) for e in entries]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4])


def _find(entries: list[Entry], text: str, states: tuple[str, ...]) -> Entry | None:
    wanted = text.replace(":", "").replace(" ", "").lower()
    if len(wanted) < MIN_PREFIX or any(c not in "0123456789abcdef" for c in wanted):
        raise LookupError(f"{text!r} is not a thumbprint: give at least {MIN_PREFIX} of its hex digits "
                          "(`shopfloor certs list` shows them)")
    hits = {e.thumbprint: e for e in entries if e.state in states and e.thumbprint.startswith(wanted)}
    if len(hits) > 1:
        raise LookupError(f"{text} matches {len(hits)} certificates ({', '.join(sorted(hits))}): give more digits")
    return next(iter(hits.values()), None)


def _move(entry: Entry, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{entry.thumbprint}.der"
    der = load_der(entry.path)
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(der)
    os.replace(tmp, target)  # written whole before the other copy goes: no moment without the certificate
    if entry.path.resolve() != target.resolve():
        entry.path.unlink()
    return target


def trust(pki_dir: Path, entries: list[Entry], text: str) -> str:
    """Move a rejected certificate (or copy a certificate file) to trusted/; the message to print."""
    as_file = Path(text)
    if as_file.is_file():
        entry = _entry("file", as_file)
        if entry.error:
            raise LookupError(f"{text}: {entry.error}")
        if any(e.thumbprint == entry.thumbprint and e.state == "trusted" for e in entries):
            return f"{entry.subject} (thumbprint {entry.thumbprint}) is already trusted"
        folder = pki_dir / TRUSTED
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{entry.thumbprint}.der"
        target.write_bytes(load_der(as_file))
        return (f"trusted {entry.subject} (thumbprint {entry.thumbprint}, expires {entry.expiry}) as {target}; "
                "the agent uses it at its next connection attempt")
    found = _find(entries, text, ("trusted",))
    if found is not None:
        return f"{found.subject} (thumbprint {found.thumbprint}) is already trusted"
    rejected = _find(entries, text, ("rejected",))
    if rejected is None:
        raise LookupError(f"no rejected certificate has thumbprint {text} in {pki_dir / REJECTED} "
                          "(`shopfloor certs list` shows what there is)")
    target = _move(rejected, pki_dir / TRUSTED)
    return (f"trusted {rejected.subject} (thumbprint {rejected.thumbprint}, expires {rejected.expiry}), now {target}; "
            "the agent uses it at its next connection attempt, no restart needed")


def reject(pki_dir: Path, entries: list[Entry], text: str) -> str:
    """Move a trusted certificate to rejected/; the message to print."""
    entry = _find(entries, text, ("trusted",))
    if entry is None:
        by_config = _find(entries, text, tuple(e.state for e in entries if e.state.startswith("trusted (config")))
        if by_config is not None:
            source = by_config.state.removeprefix("trusted (config ").rstrip(")")
            raise LookupError(f"{by_config.subject} is trusted by the config: sources.opcua[{source}].security."
                              f"trusted_server_certificates lists {by_config.path}; remove it there and restart")
        raise LookupError(f"no trusted certificate has thumbprint {text} in {pki_dir / TRUSTED}")
    target = _move(entry, pki_dir / REJECTED)
    return (f"rejected {entry.subject} (thumbprint {entry.thumbprint}), now {target}; the agent refuses the server "
            "from its next connection attempt on")
