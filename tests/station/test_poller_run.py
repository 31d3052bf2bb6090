"""``poll()`` as the CLI runs it: IMAP stations, once and forever (IDLE), SQLite and PostgreSQL."""

from __future__ import annotations

import io
import smtplib
import threading
from pathlib import Path

import pytest
from rich.console import Console
from sqlalchemy import inspect, select

from mailbridge.config import Station
from mailbridge.errors import ConfigError
from mailbridge.station.ledger.db import make_engine
from mailbridge.station.ledger.models import Base, Message, Tip
from mailbridge.station.poller.run import poll
from tests.servers.mailstack import MailStack
from tests.station.poller_helpers import (
    RELAY,
    Ledger,
    append,
    imap_settings,
    new_ref,
    plain,
    settings,
    tip,
)
from tests.waiting import wait_for

pytestmark = pytest.mark.servers
INDEXING = ("messages", "message_refs", "attachments", "locations", "folder_state",
            "mail_events", "quarantine")


def _station(stack: MailStack, address: str, folders: tuple[str, ...] = ("INBOX",)) -> Station:
    return Station(id="ncs", name="NCS", ref_prefix="NCS", mailbox=address,
                   imap=imap_settings(stack, address, folders=folders))


def _thread_scenario(stack: MailStack, address: str) -> str:
    ref = new_ref()
    append(stack, address, [
        tip(ref, message_id=f"<{ref}@relay.example.test>"),
        tip(ref, "thêm thông tin", references=(f"<{ref}@relay.example.test>",)),
        plain("Re: tip", sender=address, headers={"In-Reply-To": f"<{ref}@relay.example.test>"}),
    ])
    return ref


def test_poll_once_on_postgresql(mailstack: MailStack, address: str, postgres_url: str,
                                 tmp_path: Path) -> None:
    """The ledger part on a real PostgreSQL: schema, batches, threading, idempotency."""
    ref = _thread_scenario(mailstack, address)
    cfg = settings(postgres_url, tmp_path / "att", {"ncs": _station(mailstack, address)})
    out = io.StringIO()
    assert poll(cfg, once=True, console=Console(file=out, width=200)) == 0
    assert poll(cfg, once=True, console=Console(file=out, width=200)) == 0
    assert out.getvalue().splitlines() == ["poll ncs: new=3 tips=1 followups=1 replies=1",
                                           "poll ncs: no changes"]
    ledger = Ledger(postgres_url, tmp_path / "att", address)
    with ledger.sessions() as s:
        the_tip = s.scalars(select(Tip)).one()
        kinds = sorted(m.kind for m in s.scalars(select(Message).where(
            Message.tip_id == the_tip.id)))
    assert the_tip.ref == ref and kinds == ["followup", "reply", "tip"]
    columns = {t: {c["name"] for c in inspect(ledger.engine).get_columns(t)} for t in INDEXING}
    assert columns == {t: set(Base.metadata.tables[t].columns.keys()) for t in INDEXING}
    ledger.close()


def test_schema_on_sqlite_matches_the_models(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/l.db"
    Ledger(url, tmp_path, "s@example.test").close()
    engine = make_engine(url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        insp = inspect(conn)
        columns = {t: {c["name"] for c in insp.get_columns(t)} for t in INDEXING}
        tips_exists = insp.has_table("tips") and insp.has_table("audit")
    engine.dispose()
    assert columns == {t: set(Base.metadata.tables[t].columns.keys()) for t in INDEXING}
    assert tips_exists


def test_unknown_station_is_a_config_error(mailstack: MailStack, address: str,
                                           tmp_path: Path) -> None:
    cfg = settings(f"sqlite:///{tmp_path}/l.db", tmp_path, {"ncs": _station(mailstack, address)})
    with pytest.raises(ConfigError, match="--station 'nope' is not configured"):
        poll(cfg, once=True, station="nope")


def test_wrong_password_exits_3_with_the_setting_named(mailstack: MailStack, address: str,
                                                        tmp_path: Path) -> None:
    from dataclasses import replace

    from mailbridge.config import Secret

    station = _station(mailstack, address)
    assert station.imap is not None
    station = replace(station, imap=replace(station.imap, password=Secret("wrong")))
    out = io.StringIO()
    code = poll(settings(f"sqlite:///{tmp_path}/l.db", tmp_path, {"ncs": station}), once=True,
                console=Console(file=out, width=300))
    assert code == 3
    assert "imap.password_env" in out.getvalue()


def test_forever_indexes_an_smtp_delivery_via_idle(mailstack: MailStack, address: str,
                                                    tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/l.db"
    ledger = Ledger(url, tmp_path / "att", address)
    stop = threading.Event()
    out = io.StringIO()
    cfg = settings(url, tmp_path / "att", {"ncs": _station(mailstack, address)})
    thread = threading.Thread(target=poll, args=(cfg,), kwargs={
        "once": False, "stop": stop, "console": Console(file=out, width=200)})
    thread.start()
    try:
        wait_for(lambda: "poll ncs" in out.getvalue(), "the first poll (then IDLE)")
        with smtplib.SMTP(mailstack.host, mailstack.smtp_port, timeout=10) as smtp:
            smtp.sendmail(RELAY, [address], tip(new_ref()))
        wait_for(lambda: ledger.count(Tip) >= 1, "IDLE to bring the tip into the ledger")
    finally:
        stop.set()
        append(mailstack, address, [plain("wake")])  # ends the current IDLE
        thread.join(30)
        ledger.close()
    assert not thread.is_alive()
    lines = out.getvalue().splitlines()
    assert lines[0] == "poll ncs: no changes"  # the empty mailbox, before IDLE
    assert "poll ncs: new=1 tips=1" in lines  # the pass IDLE woke for: one message, one tip


def test_forever_stops_a_misconfigured_station_with_exit_2(mailstack: MailStack, address: str,
                                                           tmp_path: Path) -> None:
    from dataclasses import replace

    station = _station(mailstack, address)
    assert station.imap is not None
    station = replace(station, imap=replace(station.imap, tls="tls",
                                            ca_file=tmp_path / "missing.pem"))
    out = io.StringIO()
    code = poll(settings(f"sqlite:///{tmp_path}/l.db", tmp_path, {"ncs": station}), once=False,
                console=Console(file=out, width=300))
    assert code == 2
    assert "imap.ca_file" in out.getvalue()
