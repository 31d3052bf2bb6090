"""``mailbridge check`` and ``mailbridge db upgrade``: the admin's first two commands."""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO

from .config import ImapSettings, Settings, SmtpSettings
from .core.message import public_key_text, signing_key
from .errors import MailbridgeError


def _problem(exc: Exception) -> str:
    """``Type: text``; for our own errors the type of what they wrap (``LoginError``)."""
    cause = exc.__cause__ if isinstance(exc, MailbridgeError) and exc.__cause__ else exc
    return f"{type(cause).__name__}: {exc}"


def check_smtp(smtp: SmtpSettings, *, local_hostname: str) -> str | None:
    """Log in with delivery's own SMTP client (``relay.outbox.smtp_client``); None when
    it works. Nothing is sent."""
    import aiosmtplib

    from .relay.outbox import smtp_client

    async def login() -> None:
        async with smtp_client(smtp, local_hostname=local_hostname):
            pass

    try:
        asyncio.run(login())
    except (MailbridgeError, aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        return _problem(exc)
    return None


def check_imap(imap: ImapSettings) -> str | None:
    """Log in and EXAMINE every folder with the poller's own connection; None when it
    works."""
    from .station.poller.imap import ImapConnection

    conn = ImapConnection(imap)
    try:
        conn.connect()
        for folder in imap.folders:
            conn.examine(folder)
    except MailbridgeError as exc:
        return _problem(exc)
    finally:
        conn.close()
    return None


def print_keys(settings: Settings, out: TextIO) -> None:
    """The relay's public key, and how the station side comes to trust it."""
    if settings.relay.secret:
        key = public_key_text(signing_key(settings.relay.secret.reveal()))
        print(f"relay signing key: {key}", file=out)
        print(f'  on each station-side box: [ledger] relay_public_keys = ["{key}"]', file=out)
    if settings.role == "relay":
        return
    settings.relay_identity()  # a station side that trusts no key is a config mistake
    trusted = settings.ledger.relay_public_keys
    if trusted:
        print(f"ledger: trusts {len(trusted)} relay key(s): only mail they sign is a tip",
              file=out)


def print_smtp_intake(settings: Settings, out: TextIO) -> None:
    """Where officers' replies come in; a certificate that does not load is the
    ConfigError ``serve`` would stop on, found before the service starts."""
    if settings.relay.smtp_listen is None:
        return
    from .relay.smtp import tls_context

    host, port = settings.relay.smtp_listen
    tls = "STARTTLS" if tls_context(settings) is not None else "no STARTTLS (no certificate)"
    by_mail = [s.id for s in settings.stations.values() if s.mail_tips_address]
    print(f"smtp intake: {host}:{port}, {tls}, replies to reply+TOKEN@{settings.relay.domain}"
          f"{'; tips by mail for ' + ', '.join(by_mail) if by_mail else ''}", file=out)


def run_check(settings: Settings, *, connect: bool = False, out: TextIO = sys.stdout) -> int:
    """Print what the configuration says; with ``connect``, log in to every server."""
    failures = 0
    if connect:
        print("connect: logging in to every configured server (no mail is sent)", file=out)
    for station in settings.stations.values():
        if station.maildir is not None:
            how = f"maildir {station.maildir}"
        elif station.smtp is not None:
            how = f"smtp {station.smtp.host}:{station.smtp.port} ({station.smtp.tls})"
        elif station.imap is not None:  # the station side reads the mailbox, sends nothing
            how = f"imap {station.imap.host}:{station.imap.port} ({station.imap.tls})"
        else:
            how = "no delivery"
        print(f"station {station.id}: {station.name} -> {station.mailbox} via {how}, "
              f"{len(station.placements)} placements", file=out)
        if not connect:
            continue
        if station.maildir is None and station.smtp is not None:
            problem = check_smtp(station.smtp,
                                 local_hostname=settings.relay.domain)
            failures += problem is not None
            print(f"  smtp: {problem or 'ok'}", file=out)
        if station.imap is not None:
            problem = check_imap(station.imap)
            failures += problem is not None
            print(f"  imap: {problem or 'ok'}", file=out)
    print_smtp_intake(settings, out)
    print_keys(settings, out)
    print(f"config {settings.path}: ok, {len(settings.stations)} stations, "
          f"{len(settings.categories)} categories", file=out)
    return 3 if failures else 0


def upgrade_databases(settings: Settings, *, role: str = "all",
                      out: TextIO = sys.stdout) -> int:
    """Create or migrate the role's databases to the newest schema (idempotent)."""
    if role in ("relay", "all"):
        from .relay.store import RelayStore

        store = RelayStore(settings.relay.database)
        try:
            store.upgrade()
        finally:
            store.close()
        print("relay database: up to date", file=out)
    if role in ("station", "all"):
        from .station.ledger.db import upgrade

        upgrade(settings.ledger.database)
        print("ledger database: up to date", file=out)
    return 0
