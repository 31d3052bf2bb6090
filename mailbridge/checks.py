"""``mailbridge check`` and ``mailbridge db upgrade``: the admin's first two commands."""

from __future__ import annotations

import asyncio
import io
import smtplib
import socket
import ssl
import sys
import wave
from collections.abc import Iterator
from typing import TextIO

from .config import ImapSettings, RelaySettings, Settings, SmtpSettings, Station
from .core.keytext import public_key_text
from .core.message import signing_key
from .core.text import one_line
from .errors import ConfigError, MailbridgeError, MediaRefused, TokenError
from .openpgp import Decryptor, read_public_key


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


def problem(exc: BaseException, host: str) -> str:
    """What failed, in one line that starts with its kind: DNS, TLS, network, auth or
    oauth2 (a refused refresh token, client or scope), else the error's type."""
    chain = list(_chain(exc))
    kinds = {type(e).__name__ for e in chain}
    line = f"{type(exc).__name__}: {exc}"
    for e in chain:
        if isinstance(e, socket.gaierror):
            line = f"DNS: {host} does not resolve ({e.strerror}): check the host name"
        elif isinstance(e, ssl.SSLCertVerificationError):
            line = (f"TLS: the certificate of {host} is not trusted ({e.verify_message}): "
                    f"check the host name, or set ca_file to its CA certificate")
        elif isinstance(e, ssl.SSLError):
            line = (f"TLS: {e.reason or e}: check tls (\"tls\" on ports 993 and 465, "
                    f"\"starttls\" on 143 and 587)")
        elif isinstance(e, ConfigError | TokenError) and ".oauth2" in str(e):
            line = f"oauth2: {e}"
        elif kinds & {"LoginError", "SMTPAuthenticationError"}:
            line = f"auth: {exc}"
        else:
            continue
        break
    return one_line(line, max_length=600)


def check_smtp(smtp: SmtpSettings, *, local_hostname: str) -> str | None:
    """Log in with delivery's own SMTP client (``relay.outbox.smtp_client``); None when
    it works. Nothing is sent."""
    import aiosmtplib

    from .relay.outbox import smtp_client

    async def login() -> None:
        client = smtp_client(smtp, local_hostname=local_hostname)
        async with client:
            sock = client.get_transport_info("socket")
        # Leaving says QUIT and closes the TLS layer, whose socket closes only once the
        # server has answered the TLS close: wait for that, briefly, or asyncio.run()
        # ends first and leaves the socket open (a ResourceWarning where it is collected).
        for _ in range(100):
            if sock is None or sock.fileno() == -1:
                break
            await asyncio.sleep(0.01)

    try:
        asyncio.run(login())
    except (MailbridgeError, aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        return problem(exc, smtp.host)
    return None


def check_reply_smtp(smtp: SmtpSettings) -> str | None:
    """Log in as the officers' replies do (``station.reply.signed_in``); nothing is sent."""
    from .station.reply import signed_in

    try:
        with signed_in(smtp):
            pass
    except (MailbridgeError, smtplib.SMTPException, OSError) as exc:
        return problem(exc, smtp.host)
    return None


def check_imap(imap: ImapSettings, extra_folders: tuple[str, ...] = ()) -> str | None:
    """Log in and EXAMINE every folder with the poller's own connection; None when it
    works. Folders the server lacks are named with those it has."""
    from .station.poller.imap import ImapConnection, folder_name

    conn = ImapConnection(imap)
    try:
        conn.connect()
        wanted = dict.fromkeys(folder_name(f) for f in (*imap.folders, *extra_folders))
        have = [str(f[2]) for f in conn.client.list_folders()]
        missing = [f for f in wanted if f not in have]
        if missing:
            return (f"folders: {', '.join(map(repr, missing))} not found; the server has "
                    f"{', '.join(map(repr, sorted(have)))}")
        for folder in wanted:
            conn.examine(folder)
    except Exception as exc:  # ours, or imapclient's own from list_folders
        return problem(exc, imap.host)
    finally:
        conn.close()
    return None


def check_station(settings: Settings, station: Station) -> Iterator[tuple[str, str | None]]:
    """(account, problem or None) for each server the station's config logs in to."""
    if station.maildir is None and station.smtp is not None:
        smtp = station.smtp
        yield (f"smtp {smtp.host}:{smtp.port}",
               check_smtp(smtp, local_hostname=settings.relay.domain))
    if station.imap is not None:
        imap = station.imap
        sent = (station.sent_folder,) if station.reply_smtp is not None else ()
        yield f"imap {imap.host}:{imap.port}", check_imap(imap, sent)
    if station.reply_smtp is not None and settings.role != "relay":
        reply = station.reply_smtp
        yield f"reply_smtp {reply.host}:{reply.port}", check_reply_smtp(reply)


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


def print_openpgp(settings: Settings, out: TextIO) -> None:
    """Each station's OpenPGP key: its fingerprint and expiry where the relay encrypts,
    and whether the poller can decrypt (a key that cannot be used is a ConfigError)."""
    from .station.poller.run import decryptor

    for station in settings.stations.values():
        if station.openpgp_key is not None and settings.role != "station":
            info = read_public_key(station.openpgp_key, f"stations.{station.id}.openpgp_key")
            until = f"expires {info.expires:%Y-%m-%d}" if info.expires else "does not expire"
            print(f"openpgp {station.id}: tips encrypted to {info.fingerprint} "
                  f"({', '.join(info.user_ids) or 'no user id'}), {until}", file=out)
        if settings.role != "relay" and decryptor(station) is not None:
            print(f"openpgp {station.id}: the poller decrypts with "
                  f"{station.openpgp_secret_key or station.openpgp_gnupghome}", file=out)
    relay_key = settings.relay.openpgp_secret_key
    if relay_key is not None and settings.role != "station":  # no private key: ConfigError
        Decryptor(secret_key=relay_key, passphrase=settings.relay.openpgp_passphrase.reveal(),
                  key="relay.openpgp_secret_key")
        print(f"openpgp relay: officers' encrypted replies are read with {relay_key}", file=out)


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


def print_dkim(settings: Settings, out: TextIO, *, connect: bool) -> int:
    """Whether delivered mail is DKIM-signed; with ``connect``, whether DNS publishes the
    key. Returns the failures."""
    if settings.role == "station" or not any(s.smtp for s in settings.stations.values()):
        return 0
    from .relay.dkim import check_record, key_path, load_signer

    signer = load_signer(settings)
    if signer is None:
        print(f"dkim: no key at {key_path(settings)}: mail goes unsigned, so Gmail and "
              f"Microsoft 365 file it as spam (run `mailbridge dkim-key`)", file=out)
        return 0
    print(f"dkim: signs as d={signer.domain} s={signer.selector} "
          f"(record {signer.dns_name})", file=out)
    if not connect:
        return 0
    problem = check_record(signer)
    print(f"  dkim record: {problem or 'ok'}", file=out)
    return problem is not None


def run_check(settings: Settings, *, connect: bool = False, out: TextIO | None = None) -> int:
    """Print what the configuration says; with ``connect``, log in to every server.
    ``out`` is looked up when called (a default bound at import misses a redirect)."""
    out = out or sys.stdout
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
        for account, failed in check_station(settings, station):
            failures += failed is not None
            print(f"  {account}: {failed or 'ok'}", file=out)
    if settings.role != "station":
        relay = settings.relay
        print(f"relay: form on {relay.listen_host}:{relay.listen_port}, {relay.workers} web "
              f"worker{'s' if relay.workers > 1 else ''} (relay.workers)", file=out)
    print_smtp_intake(settings, out)
    failures += print_dkim(settings, out, connect=connect)
    print_keys(settings, out)
    print_openpgp(settings, out)
    print_media(settings, out)
    print(f"config {settings.path}: ok, {len(settings.stations)} stations, "
          f"{len(settings.categories)} categories", file=out)
    return 3 if failures else 0


def check_media(relay: RelaySettings) -> str | None:
    """Clean a tiny photo and a tenth of a second of sound with the real workers; None
    when it works. Run where the relay runs (``ExecStartPre``), it proves the workers can
    start and decode under the unit's limits."""
    from PIL import Image

    from .relay.media import MediaCleaner, MediaLimits

    limits = MediaLimits(relay.max_photos, relay.photo_max_px, relay.voice_max_seconds)
    photo, sound = io.BytesIO(), io.BytesIO()
    Image.new("RGB", (8, 8), "white").save(photo, "PNG")
    with wave.open(sound, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(b"\0\0" * 800)
    try:
        asyncio.run(MediaCleaner(limits).clean([photo.getvalue()], sound.getvalue()))
    except MediaRefused as exc:
        return (f"a test {exc.field} could not be cleaned ({exc.reason}): every photo and "
                f"voice message would be refused (text tips still work); the workers must be "
                f"able to start processes and use {limits.worker_memory_bytes >> 20} MiB")
    return None


def print_media(settings: Settings, out: TextIO) -> None:
    """A warning, not a failure: a relay that cannot clean files still takes text tips."""
    relay = settings.relay
    if settings.role == "station" or not (relay.max_photos or relay.voice_max_seconds):
        return
    failed = check_media(relay)
    print(f"media: {'WARNING ' + failed if failed else 'photos and voice messages are cleaned'}",
          file=out)


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
