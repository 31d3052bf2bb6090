"""``mailbridge check`` and ``mailbridge db upgrade``: the admin's first two commands."""

from __future__ import annotations

import contextlib
import smtplib
import ssl
import sys
from typing import TextIO

from .config import ImapSettings, Settings, SmtpSettings


def _tls_context(ca_file: object) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)


def check_smtp(smtp: SmtpSettings) -> str | None:
    """Log in to an SMTP server the way delivery will; None when it works."""
    try:
        context = _tls_context(smtp.ca_file)
        if smtp.tls == "tls":
            client: smtplib.SMTP = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout,
                                                    context=context)
        else:
            client = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout)
        with client:
            client.ehlo()
            if smtp.tls == "starttls":
                client.starttls(context=context)
                client.ehlo()
            if smtp.username:
                client.login(smtp.username, smtp.password.reveal())
    except (OSError, smtplib.SMTPException) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def check_imap(imap: ImapSettings) -> str | None:
    """Log in to an IMAP server the way the poller will; None when it works."""
    from imapclient import IMAPClient
    from imapclient.exceptions import IMAPClientError

    try:
        context = _tls_context(imap.ca_file)
        client = IMAPClient(imap.host, port=imap.port, ssl=imap.tls == "tls",
                            ssl_context=context, timeout=imap.timeout)
        try:
            if imap.tls == "starttls":
                client.starttls(context)
            client.login(imap.username, imap.password.reveal())
            for folder in imap.folders:
                client.select_folder(folder, readonly=True)
        finally:
            with contextlib.suppress(OSError, IMAPClientError):
                client.logout()
    except (OSError, IMAPClientError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


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
        else:
            how = "no delivery"
        print(f"station {station.id}: {station.name} -> {station.mailbox} via {how}, "
              f"{len(station.placements)} placements", file=out)
        if not connect:
            continue
        if station.maildir is None and station.smtp is not None:
            problem = check_smtp(station.smtp)
            failures += problem is not None
            print(f"  smtp: {problem or 'ok'}", file=out)
        if station.imap is not None:
            problem = check_imap(station.imap)
            failures += problem is not None
            print(f"  imap: {problem or 'ok'}", file=out)
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
