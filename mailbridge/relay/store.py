"""Relay database: the durable outbox, the tip records and their reply tokens.

SQLite by default (WAL, ``synchronous=FULL``, ``secure_delete=ON``, writes in
``BEGIN IMMEDIATE``), PostgreSQL by URL (psycopg 3). Schema changes go through
the Alembic scripts shipped in ``relay/migrations``; ``upgrade()`` runs them.

What is kept, and why it is enough:
- ``relay_outbox``: ref, station, state, attempts, the server's last reply,
  times rounded to the hour, and the message bytes *only until delivery*
  (then NULL). ``next_attempt_at`` is a scheduling time; it starts at the
  hour of submission (or a random moment inside the station's delay) and is
  cleared on delivery.
- ``relay_tips``: ref, station, reply token, receipt hash (never the code),
  Message-ID (for threading follow-ups), hour of submission.
- ``relay_counters``: the last reference number per station.
- ``relay_form_tokens``: an HMAC of each form token used, with the hour after
  which it can no longer be valid; purged then. A restart does not make a
  used token valid again.
- ``relay_sms_keys`` and ``relay_sms_counts``: for the current hour only, a
  random key and, per 16-bit HMAC of a sender's number under it, how many
  texts came (``count_sms``); earlier hours are deleted at the next text and
  by the hourly ``purge_expired``.
- ``relay_station_counts``: form tips per station id and hour (``accept`` with
  ``per_hour``), so every web worker and every relay on one PostgreSQL database
  share one exact ``relay.station_tips_per_hour``; earlier hours are deleted.
- ``relay_conversations``: per tip, its public key, its private key sealed
  with a key only the receipt code gives (core/conversation.py), its category
  (follow-ups carry it) and how many follow-ups it had.
- ``relay_messages``: officers' replies and the tipster's follow-ups, each
  sealed to the tip's public key, with the day (not the hour) and who wrote it.
  After ``conversation_days`` the tip record, its conversation and its
  messages are deleted (``purge_expired``), and delivered or dropped outbox
  rows after ``outbox_days``.

Never an address, a user agent, a header of the request or a finer time.

Durability: ``accept()`` commits before it returns, so a caller that shows the
receipt only afterwards never acknowledges a tip that a crash can lose.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import (
    Column,
    Connection,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Row,
    String,
    Table,
    Text,
    UniqueConstraint,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from ..config import Station
from ..core.conversation import ConversationKeys, Sealer, seal, unseal
from ..core.message import Composed, hour_of
from ..core.receipts import format_ref
from ..errors import ConfigError, FormTokenUsed, StationFull, StoreError
from ..fsmodes import FILE_MODE, private_file
from ..scrub import compact
from .groupcommit import GroupCommit

log = logging.getLogger(__name__)
T = TypeVar("T")

QUEUED, SENDING, DELIVERED, DEAD, DROPPED = "queued", "sending", "delivered", "dead", "dropped"
STATION, TIPSTER = "station", "tipster"  # who wrote a message of a conversation
CONVERSATION_DAYS = 90
STATES = (QUEUED, SENDING, DELIVERED, DEAD, DROPPED)
MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "relay_alembic_version"
BUSY_TIMEOUT_MS = 15_000
_UPGRADE_LOCK = 0x6D62_7265_6C61  # pg_advisory_xact_lock key: "mbrela", one upgrade at a time

Clock = Callable[[], datetime]
AnyRow = Row[*tuple[Any, ...]]

metadata = MetaData()
counters = Table(
    "relay_counters", metadata,
    Column("station_id", String(32), primary_key=True),
    Column("last_number", Integer, nullable=False),
)
outbox = Table(
    "relay_outbox", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("station_id", String(32), nullable=False),
    Column("ref", String(32), nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", DateTime, nullable=True),
    Column("last_error", Text, nullable=False),
    Column("message", LargeBinary, nullable=True),
    Column("created_hour", DateTime, nullable=False),
    Column("updated_hour", DateTime, nullable=False),
    Column("delivered_hour", DateTime, nullable=True),
    Column("window_hour", DateTime, nullable=False),
    UniqueConstraint("station_id", "ref", name="uq_relay_outbox_ref"),
    Index("ix_relay_outbox_due", "state", "next_attempt_at"),
)
tips = Table(
    "relay_tips", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("station_id", String(32), nullable=False),
    Column("ref", String(32), nullable=False),
    Column("reply_token", String(64), nullable=False, unique=True),
    Column("receipt_hash", String(128), nullable=False, unique=True),
    Column("message_id", String(255), nullable=False),
    Column("created_hour", DateTime, nullable=False),
    UniqueConstraint("station_id", "ref", name="uq_relay_tips_ref"),
    Index("ix_relay_tips_created", "created_hour"),
)
form_tokens = Table(
    "relay_form_tokens", metadata,
    Column("digest", String(64), primary_key=True),
    Column("expires_hour", DateTime, nullable=False),
    Index("ix_relay_form_tokens_expires", "expires_hour"),
)
# The SMS rate limit across intake processes (relay/sms.py): this hour's random key and,
# per 16-bit bucket of a sender under it, a count. Never a number.
sms_keys = Table(
    "relay_sms_keys", metadata,
    Column("hour", DateTime, primary_key=True),
    Column("key", LargeBinary, nullable=False),
)
sms_counts = Table(
    "relay_sms_counts", metadata,
    Column("hour", DateTime, primary_key=True),
    Column("bucket", String(16), primary_key=True),
    Column("count", Integer, nullable=False),
)
# Form tips per station and hour, for relay.station_tips_per_hour across processes.
station_counts = Table(
    "relay_station_counts", metadata,
    Column("hour", DateTime, primary_key=True),
    Column("station_id", String(32), primary_key=True),
    Column("count", Integer, nullable=False),
)
conversations = Table(
    "relay_conversations", metadata,
    Column("tip_id", Integer, ForeignKey("relay_tips.id", ondelete="CASCADE"), primary_key=True),
    Column("category_id", String(32), nullable=False),
    Column("public_key", LargeBinary, nullable=False),
    Column("sealed_private_key", LargeBinary, nullable=False),
    Column("salt", LargeBinary, nullable=False),
    Column("followups", Integer, nullable=False),
)
messages = Table(
    "relay_messages", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("tip_id", Integer, ForeignKey("relay_tips.id", ondelete="CASCADE"), nullable=False),
    Column("author", String(8), nullable=False),
    Column("day", Date, nullable=False),
    Column("sealed", LargeBinary, nullable=False),
    Index("ix_relay_messages_tip", "tip_id"),
)


@dataclass(frozen=True)
class Accepted:
    """A committed submission: its public reference and its outbox row."""

    ref: str
    outbox_id: int


@dataclass(frozen=True)
class Expired:
    """What a retention pass deletes: tips with their conversation, and old outbox rows."""

    conversations: int
    outbox_rows: int

    @property
    def total(self) -> int:
        return self.conversations + self.outbox_rows


@dataclass(frozen=True)
class OutboxRow:
    """What admins see of an outbox row; never the tip text."""

    id: int
    station_id: str
    ref: str
    state: str
    attempts: int
    next_attempt_at: datetime | None
    last_error: str
    created_hour: datetime
    updated_hour: datetime
    delivered_hour: datetime | None = None


@dataclass(frozen=True)
class Claimed:
    """A row taken for one delivery attempt; ``attempts`` fences stale workers."""

    id: int
    station_id: str
    ref: str
    attempts: int
    message: bytes
    window_hour: datetime


@dataclass(frozen=True)
class TipRecord:
    ref: str
    station_id: str
    message_id: str
    created_hour: datetime


@dataclass(frozen=True)
class Said:
    """One message of a conversation, opened: who wrote it, the day, the text."""

    author: str
    day: date
    text: str


@dataclass(frozen=True)
class Conversation:
    """What the status page shows of a tip, opened with its receipt code."""

    tip_id: int
    tip: TipRecord
    reply_token: str
    category_id: str
    delivered: bool
    public_key: bytes
    said: tuple[Said, ...]


def utcnow() -> datetime:
    return datetime.now(UTC)


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def _aware(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment is not None else None


def _hour(moment: datetime) -> datetime:
    return _naive(hour_of(moment))


def database_url(url: str) -> URL:
    """Parse ``relay.database``; plain ``postgresql://`` means psycopg 3."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:  # the value is not echoed: it may hold a password
        raise ConfigError("relay.database is not a database URL: use sqlite:///relay.db or "
                          "postgresql+psycopg://user@host/db") from exc
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(f"relay.database {parsed.render_as_string(hide_password=True)!r}: "
                          f"only sqlite:/// and postgresql+psycopg:// are supported")
    return parsed


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    """Per connection: WAL for concurrent readers, FULL sync so a commit survives
    power loss, secure_delete so a purged body is overwritten, not just unlinked."""
    dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (see _sqlite_begin)
    cursor = dbapi_conn.cursor()
    for pragma in ("journal_mode=WAL", "synchronous=FULL", f"busy_timeout={BUSY_TIMEOUT_MS}",
                   "secure_delete=ON", "foreign_keys=ON"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    """Writers take the lock up front: a deferred BEGIN that later upgrades to a
    write lock can fail with SQLITE_BUSY at once, bypassing busy_timeout."""
    write = conn.get_execution_options().get("mailbridge_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


class WriterLock:
    """One SQLite writer at a time, across this process's threads and the relay's other
    processes (web workers, ``sms-intake``, the admin commands).

    They queue here, on a lock file beside the database (``NAME-writer``, empty,
    0600), instead of in SQLite's busy handler, which polls with sleeps of up to
    100 ms: with two web workers it let an accept wait 1.6 s at the 99th percentile.
    The file lock is polled every 2 ms at most, and given up after ``timeout``
    seconds as SQLite's busy_timeout would be, so a stuck process cannot hang the rest.
    Made by root (an admin command run as root), the file is given to the database's
    owner, as SQLite does with its -wal and -shm files, so it cannot lock the relay out.
    """

    def __init__(self, database: str | None, timeout: float = BUSY_TIMEOUT_MS / 1000) -> None:
        self._threads = threading.Lock()
        self._path = (Path(database + "-writer") if database and database != ":memory:"
                      and not database.startswith("file:") else None)
        self._timeout = timeout
        self._fd = -1
        self._pid = 0  # a forked child opens its own: a shared descriptor shares the lock

    def __enter__(self) -> None:
        self._threads.acquire()
        try:
            if self._path is not None:
                self._lock_file(self._path)
        except BaseException:
            self._threads.release()
            raise

    def _lock_file(self, path: Path) -> None:
        if self._pid != os.getpid():
            database = path.with_name(path.name.removesuffix("-writer"))
            try:
                self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
                if os.geteuid() == 0 and database.exists():
                    owner = database.stat()
                    os.fchown(self._fd, owner.st_uid, owner.st_gid)
            except OSError as exc:
                raise StoreError(f"relay database lock {path}: cannot open it "
                                 f"({exc.strerror}): run this as the relay's user, or "
                                 f"give the file to it (`chown --reference={database} "
                                 f"{path}`)") from exc
            self._pid = os.getpid()
        deadline = time.monotonic() + self._timeout
        pause = 0.0002
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StoreError(f"relay database {path.parent}: another process has "
                                     f"held it for {self._timeout:.0f} s; check for a stuck "
                                     f"`mailbridge` process") from None
                time.sleep(pause)
                pause = min(pause * 2, 0.002)

    def __exit__(self, *exc: object) -> None:
        try:
            if self._path is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def close(self) -> None:
        with self._threads:
            if self._pid == os.getpid():
                os.close(self._fd)
            self._pid = 0


class RelayStore:
    """The relay database. Blocking: async callers use ``asyncio.to_thread``."""

    def __init__(self, url: str, *, clock: Clock = utcnow,
                 conversation_days: int = CONVERSATION_DAYS,
                 outbox_days: int | None = None) -> None:
        self.url = database_url(url)
        self.clock = clock
        self.conversation_days = conversation_days
        self.outbox_days = max(outbox_days or conversation_days, conversation_days)
        self.safe_url = self.url.render_as_string(hide_password=True)
        # hide_parameters: a failing INSERT must not put the tip into an exception text.
        if self.url.get_backend_name() == "sqlite":
            self._make_private(self.url.database)
            self.engine = create_engine(self.url, hide_parameters=True)
            event.listen(self.engine, "connect", _sqlite_connect)
            event.listen(self.engine, "begin", _sqlite_begin)
        else:
            self.engine = create_engine(self.url, hide_parameters=True, pool_pre_ping=True)
        self._writer = self.engine.execution_options(mailbridge_write=True)
        self._writer_lock: AbstractContextManager[Any] = (
            WriterLock(self.url.database) if self.is_sqlite else nullcontext())
        self._upserts = _upserts(self.engine.dialect.name)
        self._group = (GroupCommit(lambda: self._write("storing a tip"))
                       if self.is_sqlite else None)
        self._swept: datetime | None = None  # the hour accept() last deleted earlier ones in

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def _make_private(self, database: str | None) -> None:
        """The file holds tips: 0600 before SQLite creates it (its -wal and -shm files
        take the database file's mode), and leftovers of an older version narrowed."""
        if not database or database == ":memory:" or database.startswith("file:"):
            return
        path = Path(database)
        try:
            private_file(path)
            for suffix in ("-wal", "-shm", "-journal", "-writer"):
                side = path.with_name(path.name + suffix)
                if side.exists():
                    side.chmod(FILE_MODE)
        except OSError as exc:
            raise StoreError(f"relay database {path}: cannot create it 0600 ({exc.strerror}): "
                             f"check that its folder is the relay user's own") from exc

    # -- plumbing ------------------------------------------------------------------

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except SQLAlchemyError as exc:
            orig = getattr(exc, "orig", None) or exc
            raise StoreError(
                f"relay database {self.safe_url}: {action} failed ({type(orig).__name__}: "
                f"{str(orig).strip().splitlines()[0] if str(orig).strip() else ''}); check "
                f"that it is reachable and run `mailbridge db upgrade`") from exc

    @contextmanager
    def _write(self, action: str) -> Iterator[Connection]:
        # SQLite has one writer at a time: writers queue on WriterLock, not in SQLite's
        # busy handler.
        with self._writer_lock, self._errors(action), self._writer.begin() as conn:
            yield conn

    def _write_tip(self, fn: Callable[[Connection], T]) -> T:
        """One of an accept's transactions. On SQLite, those that queue meanwhile share
        one commit (``GroupCommit``): under a surge the log's sync was most of the time
        the writer lock was held."""
        if self._group is None:
            with self._write("storing a tip") as conn:
                return fn(conn)
        with self._errors("storing a tip"):
            return self._group.run(fn)

    @contextmanager
    def _read(self, action: str) -> Iterator[Connection]:
        with self._errors(action), self.engine.connect() as conn:
            yield conn

    def upgrade(self) -> None:
        """Bring the schema to the newest version (Alembic ``upgrade head``)."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self._write("upgrading the schema") as conn:
            if not self.is_sqlite:  # two relays starting at once must not race
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _UPGRADE_LOCK})
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    def close(self) -> None:
        self.engine.dispose()
        if isinstance(self._writer_lock, WriterLock):
            self._writer_lock.close()

    # -- intake --------------------------------------------------------------------

    def accept(self, station: Station, build: Callable[[str, datetime], Composed], *,
               receipt_hash: str, reply_token: str, delay_minutes: int = 0,
               keys: ConversationKeys | None = None, category_id: str = "",
               per_hour: int | None = None,
               form_token: tuple[str, datetime] | None = None) -> Accepted:
        """Take the station's next ref, build the message and store it, committed before
        returning. Show the receipt only afterwards. With ``keys`` the tip's conversation
        is stored with it.

        ``build(ref, date)`` composes the signed message. With ``delay_minutes``
        the first attempt is at a random moment within that many minutes, and
        the message's Date is that moment, so no header pins the minute of
        submission. With ``per_hour`` the tip is counted for its station's hour, and
        refused (``StationFull``, nothing stored) past it. With ``form_token``
        (``FormTokens.used``) the form's token is recorded as used, and a token used
        before is ``FormTokenUsed``, nothing stored.

        Two transactions: the first takes the token, the hour's count and the ref; the
        message is built outside any lock (it is most of an accept's time, and with the
        lock held every web worker queued behind it); the second stores it. If the build
        or the second transaction fails, nothing is stored and the first is given back:
        the token is unused again, the count and the ref number too (the number only if
        no later tip took one since: else it stays a gap, as after a crash in between).
        """
        now = self.clock()
        hour, upserts = _hour(now), self._upserts
        # The first form tip of an hour here forgets the hours before (their counts and
        # expired tokens); the hourly purge_expired does it too.
        sweep = per_hour is not None and hour != self._swept

        def take(conn: Connection) -> int:
            if sweep:
                _forget_hours(conn, hour)
            if form_token is not None and not _use_form_token(conn, upserts, *form_token):
                raise FormTokenUsed
            if per_hour is not None and conn.execute(upserts.count_station_tip, dict(
                    hour=hour, station_id=station.id, count=1, per_hour=per_hour)).first() is None:
                raise StationFull(station.id, per_hour)
            return int(conn.execute(upserts.next_number, dict(
                station_id=station.id, last_number=1)).scalar_one())

        number = self._write_tip(take)
        if sweep:
            self._swept = hour
        ref = format_ref(station.ref_prefix, number)
        try:
            due, date = _schedule(now, delay_minutes)
            composed = build(ref, date)

            def store(conn: Connection) -> int:
                outbox_id = _enqueue(conn, station.id, ref, hour, due, composed)
                tip_id = conn.execute(_INSERT_TIP, dict(
                    station_id=station.id, ref=ref, reply_token=reply_token,
                    receipt_hash=receipt_hash, message_id=composed.message_id,
                    created_hour=hour,
                )).scalar_one()
                if keys is not None:
                    conn.execute(_INSERT_CONVERSATION, dict(
                        tip_id=tip_id, category_id=category_id, public_key=keys.public_key,
                        sealed_private_key=keys.sealed_private_key, salt=keys.salt,
                        followups=0))
                return outbox_id

            outbox_id = self._write_tip(store)
        except BaseException:
            self._give_back(station.id, number, hour if per_hour is not None else None,
                            form_token)
            raise
        return Accepted(ref=ref, outbox_id=outbox_id)

    def _give_back(self, station_id: str, number: int, counted_hour: datetime | None,
                   form_token: tuple[str, datetime] | None) -> None:
        """Undo an accept's first transaction after its tip could not be stored. Best
        effort: if the database fails here too, the tipster is told the tip was not sent
        all the same, and what stays taken is a used token, one count and a ref gap."""
        try:
            with self._write("giving back a tip's ref") as conn:
                conn.execute(update(counters).where(
                    counters.c.station_id == station_id, counters.c.last_number == number)
                    .values(last_number=number - 1))
                if counted_hour is not None:
                    conn.execute(update(station_counts).where(
                        station_counts.c.hour == counted_hour,
                        station_counts.c.station_id == station_id,
                        station_counts.c.count > 0).values(count=station_counts.c.count - 1))
                if form_token is not None:
                    conn.execute(delete(form_tokens).where(
                        form_tokens.c.digest == form_token[0]))
        except StoreError as exc:
            log.warning("a tip that was not stored left its ref number taken: %s", exc)

    # -- conversations ---------------------------------------------------------------

    def _open_since(self) -> datetime:
        """Tips received before this hour are expired: no reply, no lookup."""
        return _hour(self.clock()) - timedelta(days=self.conversation_days)

    def _today(self) -> date:
        return self.clock().astimezone(UTC).date()

    def add_reply(self, reply_token: str, text: str, *, station_id: str) -> bool:
        """Seal an officer's reply to the tip of *reply_token*; False when the token is
        unknown, expired or belongs to another station (nothing is stored then)."""
        query = (select(tips.c.id, conversations.c.public_key)
                 .join(conversations, conversations.c.tip_id == tips.c.id)
                 .where(tips.c.reply_token == reply_token, tips.c.station_id == station_id,
                        tips.c.created_hour > self._open_since()))
        with self._write("storing a reply") as conn:
            row = conn.execute(query).first()
            if row is None:
                return False
            conn.execute(insert(messages).values(tip_id=row.id, author=STATION,
                                                 day=self._today(),
                                                 sealed=seal(bytes(row.public_key), text)))
        return True

    def open_conversation(self, receipt_hash: str, seal_key: bytes,
                          sealer: Sealer) -> Conversation | None:
        """The unexpired conversation of a receipt, its messages opened with the code's
        *seal_key* (``ReceiptHasher.derive``), oldest first; None when there is none."""
        query = (select(tips.c.id, tips.c.ref, tips.c.station_id, tips.c.message_id,
                        tips.c.created_hour, tips.c.reply_token, conversations.c.category_id,
                        conversations.c.public_key, conversations.c.sealed_private_key,
                        conversations.c.salt)
                 .join(conversations, conversations.c.tip_id == tips.c.id)
                 .where(tips.c.receipt_hash == receipt_hash,
                        tips.c.created_hour > self._open_since()))
        with self._read("opening a conversation") as conn:
            row = conn.execute(query).first()
            if row is None:
                return None
            state = conn.execute(select(outbox.c.state).where(
                outbox.c.station_id == row.station_id, outbox.c.ref == row.ref)).scalar()
            sealed = conn.execute(select(messages.c.author, messages.c.day, messages.c.sealed)
                                  .where(messages.c.tip_id == row.id)
                                  .order_by(messages.c.id)).all()
        keys = ConversationKeys(bytes(row.public_key), bytes(row.sealed_private_key),
                                bytes(row.salt))
        private = sealer.unlock(keys, seal_key)
        if private is None:
            return None
        tip = TipRecord(row.ref, row.station_id, row.message_id,
                        row.created_hour.replace(tzinfo=UTC))
        return Conversation(
            tip_id=row.id, tip=tip, reply_token=row.reply_token, category_id=row.category_id,
            delivered=state == DELIVERED, public_key=keys.public_key,
            said=tuple(Said(m.author, m.day, unseal(private, bytes(m.sealed)))
                       for m in sealed))

    def add_followup(self, conversation: Conversation, build: Callable[[datetime], Composed],
                     sealed: bytes, *, delay_minutes: int = 0) -> Accepted:
        """Queue the tipster's follow-up (``build(date)`` composes it) and keep it
        sealed (*sealed*, from ``seal``) in the conversation, in one transaction.
        Its outbox row is ``REF+n``, the n-th follow-up; the message keeps REF."""
        now = self.clock()
        tip_id = conversation.tip_id
        with self._write("storing a follow-up") as conn:
            number = conn.execute(update(conversations).where(conversations.c.tip_id == tip_id)
                                  .values(followups=conversations.c.followups + 1)
                                  .returning(conversations.c.followups)).scalar_one()
            ref = f"{conversation.tip.ref}+{number}"
            due, date = _schedule(now, delay_minutes)
            outbox_id = _enqueue(conn, conversation.tip.station_id, ref, _hour(now), due,
                                 build(date))
            conn.execute(insert(messages).values(tip_id=tip_id, author=TIPSTER,
                                                 day=self._today(), sealed=sealed))
        return Accepted(ref=ref, outbox_id=outbox_id)

    def purge_expired(self, *, dry_run: bool = False) -> Expired:
        """Delete expired tips (their record, keys and messages) and delivered or
        dropped outbox rows past ``outbox_days``; with *dry_run* only count them.
        Dead rows stay: they hold a tip not yet delivered (`mailbridge outbox`)."""
        expired = select(tips.c.id).where(tips.c.created_hour <= self._open_since())
        old_rows = (outbox.c.state.in_((DELIVERED, DROPPED)),
                    outbox.c.updated_hour <= _hour(self.clock()) - timedelta(
                        days=self.outbox_days))
        with self._write("deleting expired conversations") as conn:
            if dry_run:
                count = select(func.count()).select_from
                return Expired(
                    int(conn.execute(count(tips).where(tips.c.id.in_(expired))).scalar_one()),
                    int(conn.execute(count(outbox).where(*old_rows)).scalar_one()))
            conn.execute(delete(messages).where(messages.c.tip_id.in_(expired)))
            conn.execute(delete(conversations).where(conversations.c.tip_id.in_(expired)))
            _forget_sms_hours(conn, _hour(self.clock()))  # even if no text came since
            _forget_hours(conn, _hour(self.clock()))  # even if no tip came since
            return Expired(
                int(conn.execute(delete(tips).where(
                    tips.c.created_hour <= self._open_since())).rowcount),
                int(conn.execute(delete(outbox).where(*old_rows)).rowcount))

    def dead_count(self) -> int:
        """Rows given up on that still hold their tip's text, for an admin to decide."""
        query = select(func.count()).select_from(outbox).where(outbox.c.state == DEAD)
        with self._read("counting the outbox") as conn:
            return int(conn.execute(query).scalar_one())

    def compact(self) -> bool:
        """VACUUM after a purge (``scrub.compact``), so deleted rows leave no bytes in
        free pages or the WAL; False when a reader kept the WAL from being truncated."""
        with self._errors("vacuuming"):
            return compact(self.engine, [t.name for t in metadata.sorted_tables])

    def use_form_token(self, digest: str, valid_until: datetime) -> bool:
        """Record a form token as used: True the first time, False ever after while it
        is valid. Kept to the hour after ``valid_until``; expired records are purged."""
        with self._write("recording a used form token") as conn:
            _forget_hours(conn, _hour(self.clock()))
            return _use_form_token(conn, self._upserts, digest, valid_until)

    def count_sms(self, bucket_of: Callable[[bytes], str]) -> int:
        """Count one text in this hour's bucket ``bucket_of(key)`` (an HMAC of the sender
        under this hour's random key, which never leaves this transaction); return the
        bucket's count. Earlier hours' keys and counts are deleted first, so once an
        hour is over nothing can tie a bucket to a number any more."""
        hour = _hour(self.clock())
        new_key = (_insert_for(self.engine.dialect.name)(sms_keys)
                   .values(hour=hour, key=secrets.token_bytes(32))
                   .on_conflict_do_nothing(index_elements=[sms_keys.c.hour]))
        with self._write("counting a text message") as conn:
            _forget_sms_hours(conn, hour)
            conn.execute(new_key)
            key = conn.execute(select(sms_keys.c.key).where(sms_keys.c.hour == hour)).scalar_one()
            bucket = bucket_of(bytes(key))
            count = (_insert_for(conn.dialect.name)(sms_counts)
                     .values(hour=hour, bucket=bucket, count=1)
                     .on_conflict_do_update(index_elements=[sms_counts.c.hour, sms_counts.c.bucket],
                                            set_={"count": sms_counts.c.count + 1})
                     .returning(sms_counts.c.count))
            return int(conn.execute(count).scalar_one())

    def tip_by_receipt(self, receipt_hash: str) -> TipRecord | None:
        return self._tip(tips.c.receipt_hash == receipt_hash)

    def tip_by_token(self, reply_token: str) -> TipRecord | None:
        return self._tip(tips.c.reply_token == reply_token)

    def _tip(self, where: Any) -> TipRecord | None:
        query = select(tips.c.ref, tips.c.station_id, tips.c.message_id, tips.c.created_hour)
        with self._read("looking up a tip") as conn:
            row = conn.execute(query.where(where)).first()
        if row is None:
            return None
        return TipRecord(row.ref, row.station_id, row.message_id, row.created_hour.replace(
            tzinfo=UTC))

    # -- admin ---------------------------------------------------------------------

    def list_outbox(self, states: Iterable[str] | None = None) -> list[OutboxRow]:
        query = select(*_ADMIN_COLUMNS).order_by(outbox.c.id)
        if states is not None:
            query = query.where(outbox.c.state.in_(list(states)))
        with self._read("listing the outbox") as conn:
            return [_outbox_row(r) for r in conn.execute(query)]

    def get(self, outbox_id: int) -> OutboxRow:
        with self._read("reading the outbox") as conn:
            return _outbox_row(self._locked(conn, outbox_id, lock=False))

    def retry(self, outbox_id: int) -> OutboxRow:
        """Queue a dead (or still queued) row for an attempt now, with a fresh retry window."""
        now = self.clock()
        with self._write("retrying an outbox row") as conn:
            row = self._locked(conn, outbox_id)
            self._check_open(row, now, "retry")
            conn.execute(update(outbox).where(outbox.c.id == outbox_id).values(
                state=QUEUED, next_attempt_at=_naive(now), updated_hour=_hour(now),
                window_hour=_hour(now)))
        return self.get(outbox_id)

    def drop(self, outbox_id: int) -> OutboxRow:
        """Give up on a row for good: its message bytes are erased."""
        now = self.clock()
        with self._write("dropping an outbox row") as conn:
            row = self._locked(conn, outbox_id)
            self._check_open(row, now, "drop")
            conn.execute(update(outbox).where(outbox.c.id == outbox_id).values(
                state=DROPPED, message=None, next_attempt_at=None, updated_hour=_hour(now)))
        self.purge_freed()
        return self.get(outbox_id)

    def _locked(self, conn: Connection, outbox_id: int, *, lock: bool = True) -> AnyRow:
        query = select(*_ADMIN_COLUMNS).where(outbox.c.id == outbox_id)
        row = conn.execute(query.with_for_update() if lock else query).first()
        if row is None:
            raise StoreError(f"outbox row {outbox_id} does not exist: see "
                             f"`mailbridge outbox list --all` for the ids")
        return row

    @staticmethod
    def _check_open(row: AnyRow, now: datetime, verb: str) -> None:
        if row.state in (DELIVERED, DROPPED):
            raise StoreError(f"outbox row {row.id} ({row.ref}) is already {row.state}: "
                             f"there is nothing to {verb}")
        if row.state == SENDING and row.next_attempt_at > _naive(now):
            raise StoreError(f"outbox row {row.id} ({row.ref}) is being sent right now: "
                             f"wait for the attempt to end, then check `mailbridge outbox list`")

    def pending_count(self) -> int:
        query = select(func.count()).select_from(outbox).where(
            outbox.c.state.in_((QUEUED, SENDING)))
        with self._read("counting the outbox") as conn:
            return int(conn.execute(query).scalar_one())

    # -- delivery (used by outbox.DeliveryWorker) -------------------------------------

    def claim_due(self, limit: int, lease: timedelta) -> list[Claimed]:
        """Take up to ``limit`` due rows for one attempt each.

        A claimed row is ``sending`` with ``next_attempt_at`` = end of its lease;
        a row whose lease ran out (its relay died) is due again. On PostgreSQL
        ``FOR UPDATE SKIP LOCKED`` lets several relays share one outbox.
        """
        now = _naive(self.clock())
        with self._write("claiming due rows") as conn:
            ids = list(conn.execute(_DUE, dict(now=now, limit=limit)).scalars())
            if not ids:
                return []
            rows = conn.execute(_CLAIM, dict(ids=ids, until=now + lease,
                                             hour=_hour(now))).all()
        claimed = [Claimed(r.id, r.station_id, r.ref, r.attempts, bytes(r.message),
                           r.window_hour.replace(tzinfo=UTC)) for r in rows]
        return sorted(claimed, key=lambda c: ids.index(c.id))

    def mark_delivered(self, *claims: Claimed) -> int:
        """Delivered: erase the bytes and the schedule, for a pass's rows in one
        transaction. Returns how many were marked: a stale claim changes nothing."""
        hour = _hour(self.clock())
        with self._write("recording deliveries") as conn:
            return sum(conn.execute(_DELIVERED, dict(
                claim_id=claim.id, claim_attempts=claim.attempts, hour=hour)).rowcount
                for claim in claims)

    def mark_failed(self, claim: Claimed, error: str, retry_at: datetime | None) -> str:
        """Back to ``queued`` until ``retry_at``, or ``dead`` when it is None."""
        now = self.clock()
        state = QUEUED if retry_at is not None else DEAD
        self._finish(claim, state=state, last_error=error[:1000], updated_hour=_hour(now),
                     next_attempt_at=_naive(retry_at) if retry_at is not None else None)
        return state

    def _finish(self, claim: Claimed, **values: Any) -> bool:
        stmt = update(outbox).where(outbox.c.id == claim.id, outbox.c.state == SENDING,
                                    outbox.c.attempts == claim.attempts).values(**values)
        with self._write("recording a delivery attempt") as conn:
            return bool(conn.execute(stmt).rowcount)

    def recover_interrupted(self, *, all_rows: bool | None = None) -> int:
        """Make rows left ``sending`` by a crash due now; returns how many.

        They are sent again with the same bytes and the same Message-ID, so a
        station whose server or poller deduplicates by Message-ID sees one tip.
        By default every ``sending`` row on SQLite (one relay per file) and only
        rows whose lease ran out on PostgreSQL (other relays may be sending).
        """
        now = _naive(self.clock())
        if all_rows is None:
            all_rows = self.is_sqlite
        stmt = update(outbox).where(outbox.c.state == SENDING)
        if not all_rows:
            stmt = stmt.where(outbox.c.next_attempt_at <= now)
        with self._write("recovering interrupted rows") as conn:
            return int(conn.execute(stmt.values(state=QUEUED, next_attempt_at=now)).rowcount)

    def next_due(self) -> datetime | None:
        with self._read("reading the schedule") as conn:
            return _aware(conn.execute(_NEXT_DUE).scalar_one())

    def purge_freed(self) -> bool:
        """SQLite: fold the WAL into the database and truncate it, so erased bodies
        (already zeroed there by secure_delete) leave no copy in old WAL frames.
        False when a reader elsewhere still needs the frames: try again later.

        Never in an accept's way: a TRUNCATE checkpoint holds the write lock while
        it waits for readers (a backup or `sqlite3` shell held accepts up to
        busy_timeout). So a PASSIVE checkpoint, which takes no write lock, goes
        first; TRUNCATE follows only when it copied every frame, with busy_timeout
        0 so it gives up at once rather than wait, queued behind this process's
        writers. PostgreSQL keeps old row versions until (auto)vacuum reuses them.
        """
        if not self.is_sqlite:
            return True
        with self._errors("checkpointing the WAL"), self.engine.connect() as conn:
            raw: Any = conn.connection.driver_connection
            busy, frames, copied = raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if busy or copied < frames:
                return False
            with self._writer_lock:
                raw.execute("PRAGMA busy_timeout=0")
                try:
                    busy, _, _ = raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                finally:
                    raw.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            return not busy


_ADMIN_COLUMNS = (outbox.c.id, outbox.c.station_id, outbox.c.ref, outbox.c.state,
                  outbox.c.attempts, outbox.c.next_attempt_at, outbox.c.last_error,
                  outbox.c.created_hour, outbox.c.updated_hour, outbox.c.delivered_hour)


# Each tip's inserts, built once, their values bound at execution: built with inline
# values for every tip, SQLAlchemy Core spent about 0.2 ms of Python on each (coercing
# and keying it), several times what SQLite takes to run it.
_INSERT_TIP = insert(tips).returning(tips.c.id)
_INSERT_CONVERSATION = insert(conversations)
_INSERT_OUTBOX = insert(outbox).returning(outbox.c.id)
# The delivery's statements, the same way.
_DUE = (select(outbox.c.id).where(outbox.c.state.in_((QUEUED, SENDING)),
                                  outbox.c.next_attempt_at <= bindparam("now"))
        .order_by(outbox.c.next_attempt_at, outbox.c.id).limit(bindparam("limit"))
        .with_for_update(skip_locked=True))
_CLAIM = (update(outbox).where(outbox.c.id.in_(bindparam("ids", expanding=True)))
          .values(state=SENDING, attempts=outbox.c.attempts + 1,
                  next_attempt_at=bindparam("until"), updated_hour=bindparam("hour"))
          .returning(outbox.c.id, outbox.c.station_id, outbox.c.ref, outbox.c.attempts,
                     outbox.c.message, outbox.c.window_hour))
_DELIVERED = (update(outbox).where(outbox.c.id == bindparam("claim_id"),
                                   outbox.c.state == SENDING,
                                   outbox.c.attempts == bindparam("claim_attempts"))
              .values(state=DELIVERED, message=None, next_attempt_at=None, last_error="",
                      delivered_hour=bindparam("hour"), updated_hour=bindparam("hour")))
_NEXT_DUE = select(func.min(outbox.c.next_attempt_at)).where(
    outbox.c.state.in_((QUEUED, SENDING)))


def _outbox_row(r: AnyRow) -> OutboxRow:
    return OutboxRow(
        id=r.id, station_id=r.station_id, ref=r.ref, state=r.state, attempts=r.attempts,
        next_attempt_at=_aware(r.next_attempt_at), last_error=r.last_error,
        created_hour=r.created_hour.replace(tzinfo=UTC),
        updated_hour=r.updated_hour.replace(tzinfo=UTC),
        delivered_hour=_aware(r.delivered_hour),
    )


def _insert_for(dialect: str) -> Any:
    """The INSERT that knows ON CONFLICT, for this database."""
    return sqlite_insert if dialect == "sqlite" else pg_insert


def _schedule(now: datetime, delay_minutes: int) -> tuple[datetime, datetime]:
    """(first attempt, the message's Date): due at once without keeping more than the
    hour, or at a random moment within ``delay_minutes``, which is then the Date too (a
    Date of *now* would undo the delay)."""
    if delay_minutes <= 0:
        return _hour(now), now
    due = _naive(now) + timedelta(seconds=1 + secrets.randbelow(delay_minutes * 60))
    return due, due.replace(tzinfo=UTC)


def _enqueue(conn: Connection, station_id: str, ref: str, hour: datetime, due: datetime,
             composed: Composed) -> int:
    """Put a built message into the outbox, due at *due* (``_schedule``)."""
    return int(conn.execute(_INSERT_OUTBOX, dict(
        station_id=station_id, ref=ref, state=QUEUED, attempts=0, next_attempt_at=due,
        last_error="", message=composed.data, created_hour=hour, updated_hour=hour,
        window_hour=hour,
    )).scalar_one())


def _forget_sms_hours(conn: Connection, hour: datetime) -> None:
    """Delete the SMS limiter's keys and counts of the hours before *hour*."""
    conn.execute(delete(sms_counts).where(sms_counts.c.hour < hour))
    conn.execute(delete(sms_keys).where(sms_keys.c.hour < hour))


@dataclass(frozen=True)
class _Upserts:
    """The accept's upserts for one database, built once like ``_INSERT_TIP``.

    - ``next_number``: the station's counter, atomic, so concurrent accepts never share
      a ref;
    - ``count_station_tip``: one form tip for the station's hour unless ``per_hour`` are
      counted; its update is conditional, so concurrent accepts in other processes
      (SQLite: the write lock; PostgreSQL: the row lock) never pass the limit (no row
      comes back past it);
    - ``use_form_token``: a used form token, no row back when it was used before
      (psycopg's rowcount said 1 for a skip).
    """

    next_number: Any
    count_station_tip: Any
    use_form_token: Any


@functools.cache
def _upserts(dialect: str) -> _Upserts:
    insert_for = _insert_for(dialect)
    return _Upserts(
        next_number=insert_for(counters).on_conflict_do_update(
            index_elements=[counters.c.station_id],
            set_={"last_number": counters.c.last_number + 1}).returning(counters.c.last_number),
        count_station_tip=insert_for(station_counts).on_conflict_do_update(
            index_elements=[station_counts.c.hour, station_counts.c.station_id],
            set_={"count": station_counts.c.count + 1},
            where=station_counts.c.count < bindparam("per_hour"),
        ).returning(station_counts.c.count),
        use_form_token=insert_for(form_tokens).on_conflict_do_nothing(
            index_elements=[form_tokens.c.digest]).returning(form_tokens.c.digest))


def _forget_hours(conn: Connection, hour: datetime) -> None:
    """Delete the station counts of the hours before *hour* and the used form tokens
    that expired by then (their ``expires_hour`` is a whole hour, so once an hour is
    enough)."""
    conn.execute(delete(station_counts).where(station_counts.c.hour < hour))
    conn.execute(delete(form_tokens).where(form_tokens.c.expires_hour <= _naive(hour)))


def _use_form_token(conn: Connection, upserts: _Upserts, digest: str,
                    valid_until: datetime) -> bool:
    """Record a used form token in *conn*'s transaction: False when it was already."""
    return conn.execute(upserts.use_form_token, dict(
        digest=digest, expires_hour=_hour(valid_until) + timedelta(hours=1))).first() is not None
