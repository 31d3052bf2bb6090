"""The maildir poller (the demo's path: relay -> Maildir -> ledger, no mail server)."""

from __future__ import annotations

import io
import mailbox
import threading
import time
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from sqlalchemy import select

from mailbridge.config import Station
from mailbridge.station.ledger.models import Audit, Location, MailEvent, Message, Tip
from mailbridge.station.poller.maildir import MaildirPoller
from mailbridge.station.poller.run import poll
from tests.station.poller_helpers import RELAY_ID, Ledger, new_ref, plain, settings, tip


def _maildir(tmp_path: Path) -> tuple[mailbox.Maildir, Path]:
    root = tmp_path / "Maildir"
    return mailbox.Maildir(root, create=True), root


def test_maildir_index_flags_moves_and_deletes(tmp_path: Path) -> None:
    box, root = _maildir(tmp_path)
    ref = new_ref()
    keys = [box.add(tip(ref, message_id="<m1@relay.example.test>")),
            box.add(tip(ref, "thêm", references=("<m1@relay.example.test>",))),
            box.add(plain("hello")), box.add(plain("bye"))]
    ledger = Ledger(f"sqlite:///{tmp_path}/l.db", tmp_path / "att", "station@example.test")
    poller = MaildirPoller(root, ledger.store, relay=RELAY_ID, max_message_bytes=10**6)
    counts = poller.poll()
    assert (counts.new, counts.tips, counts.followups, counts.other) == (4, 1, 1, 2)
    assert not poller.poll().changed()  # idempotent

    msg = box.get_message(keys[0])
    msg.set_subdir("cur")
    msg.set_flags("FS")
    box[keys[0]] = msg                      # an officer read and flagged it
    archive = box.add_folder("Archive")
    archive.add(box.get_message(keys[2]))
    box.remove(keys[2])                     # moved to Archive
    box.remove(keys[3])                     # deleted
    counts = poller.poll()
    assert (counts.new, counts.flags, counts.gone) == (0, 1, 2)
    with ledger.sessions() as s:
        events = sorted((e.kind, e.folder, e.detail) for e in s.scalars(select(MailEvent)))
        live = s.scalars(select(Location.folder).where(Location.gone.is_(False))).all()
    assert ("flags", "INBOX", "+\\Flagged +\\Seen") in events
    assert ("moved", "Archive", "from INBOX") in events
    assert sorted(live) == ["Archive", "INBOX", "INBOX"]
    assert ledger.count(Message) == 4 and ledger.count(Tip) == 1
    ledger.close()


def test_poll_once_with_a_maildir_station_prints_one_summary_line(tmp_path: Path) -> None:
    box, root = _maildir(tmp_path)
    box.add(tip(new_ref(), "Có người lạ ở bản"))
    url = f"sqlite:///{tmp_path}/ledger.db"
    station = Station(id="ncs", name="NCS", ref_prefix="NCS", mailbox="s@example.test",
                      maildir=root)
    out = io.StringIO()
    code = poll(settings(url, tmp_path / "att", {"ncs": station}), once=True,
                console=Console(file=out, width=200))
    assert code == 0
    assert out.getvalue().splitlines() == ["poll ncs: new=1 tips=1"]
    assert "Có người" not in out.getvalue()  # counts only, never tip text
    ledger = Ledger(url, tmp_path / "att", "s@example.test")
    assert ledger.count(Tip) == 1
    ledger.close()


def test_poll_forever_picks_up_new_maildir_deliveries(tmp_path: Path) -> None:
    box, root = _maildir(tmp_path)
    url = f"sqlite:///{tmp_path}/ledger.db"
    station = Station(id="ncs", name="NCS", ref_prefix="NCS", mailbox="s@example.test",
                      maildir=root)
    ledger = Ledger(url, tmp_path / "att", "s@example.test")
    stop = threading.Event()
    out = io.StringIO()
    thread = threading.Thread(target=poll, args=(settings(url, tmp_path / "att",
                                                          {"ncs": station}),),
                              kwargs={"once": False, "stop": stop,
                                      "console": Console(file=out, width=200)})
    thread.start()
    try:
        box.add(tip(new_ref()))
        deadline = time.monotonic() + 20
        while ledger.count(Tip) < 1:
            assert time.monotonic() < deadline, "the delivery never reached the ledger"
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join(20)
        ledger.close()
    assert not thread.is_alive()
    assert "poll ncs: new=1 tips=1" in out.getvalue()


def test_poll_once_turns_configured_folder_and_flag_signals_into_statuses(
        tmp_path: Path) -> None:
    """Moving a tip to a mapped folder or flagging it sets its status, with no UI open."""
    box, root = _maildir(tmp_path)
    filed, flagged, untouched = new_ref(), new_ref(), new_ref()
    keys = {ref: box.add(tip(ref)) for ref in (filed, flagged, untouched)}
    url = f"sqlite:///{tmp_path}/ledger.db"
    station = Station(id="ncs", name="NCS", ref_prefix="NCS", mailbox="s@example.test",
                      maildir=root)
    cfg = settings(url, tmp_path / "att", {"ncs": station})
    cfg = replace(cfg, ledger=replace(cfg.ledger, folder_status={"Spam": "spam"},
                                      flag_status={"\\Flagged": "verifying"}))
    out = io.StringIO()
    assert poll(cfg, once=True, console=Console(file=out, width=200)) == 0

    box.add_folder("Spam").add(box.get_message(keys[filed]))
    box.remove(keys[filed])                 # an officer filed it under Spam
    msg = box.get_message(keys[flagged])
    msg.set_subdir("cur")
    msg.set_flags("F")
    box[keys[flagged]] = msg                # and flagged another one
    assert poll(cfg, once=True, console=Console(file=out, width=200)) == 0
    assert poll(cfg, once=True, console=Console(file=out, width=200)) == 0  # applied once

    ledger = Ledger(url, tmp_path / "att", "s@example.test")
    with ledger.sessions() as s:
        status = {t.ref: t.status for t in s.scalars(select(Tip))}
        audit = sorted((a.actor, a.old, a.new, a.reason) for a in s.scalars(select(Audit)))
    ledger.close()
    assert status == {filed: "spam", flagged: "verifying", untouched: "new"}
    assert audit == [("mailbox", "new", "spam", "folder Spam"),
                     ("mailbox", "new", "verifying", "flag \\Flagged")]
