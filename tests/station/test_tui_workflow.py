"""Workflow rules, mailbox signals, search and list queries on a hand-built ledger.

Every test here runs on SQLite and on a real PostgreSQL server: the audit
trail, FTS5 and tsvector search, and the paged list must agree on both.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from mailbridge.core.text import search_form
from mailbridge.errors import LedgerError, WorkflowError
from mailbridge.station.ledger import workflow
from mailbridge.station.ledger.db import make_engine, session_factory, upgrade
from mailbridge.station.ledger.models import (
    Audit,
    Location,
    MailEvent,
    Message,
    Note,
    Status,
    Tip,
)
from mailbridge.station.ledger.search import fts5_query, search_tip_ids, tsquery
from mailbridge.station.tui.data import (
    TipFilter,
    apply_filter,
    count_tips,
    load_detail,
    page_tips,
    safe_filename,
    save_attachment,
)

T0 = datetime(2026, 3, 1, 8)


def add_tip(s: Session, n: int, *, station: str = "ncs", body: str = "", category: str = "drugs",
            placement: str = "cho", hours: int = 0, status: str = "new") -> Tip:
    """One tip with its message, as the poller would index it."""
    ref = f"{station.upper()}-{n:04d}"
    msg = Message(station_id=station, message_id=f"<{ref}@relay.example.test>",
                  raw_sha256=f"{n:064d}", size=len(body), kind="tip",
                  subject=f"[{ref}] {category}", text_body=body, search_text=search_form(body),
                  received_hour=T0 + timedelta(hours=hours))
    s.add(msg)
    s.flush()
    tip = Tip(station_id=station, ref=ref, message_pk=msg.id, received_category=category,
              category=category, placement=placement, received_hour=T0 + timedelta(hours=hours),
              subject=msg.subject, preview=body[:60], status=status)
    s.add(tip)
    s.flush()
    msg.tip_id = tip.id
    return tip


@pytest.fixture(params=["sqlite", "postgres"])
def sessions(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Session]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    upgrade(url)
    engine = make_engine(url)
    with session_factory(engine)() as session:
        yield session
    engine.dispose()


def audits(s: Session, tip_id: int) -> list[tuple[str, str, str, str, str]]:
    rows = s.execute(select(Audit.actor, Audit.action, Audit.old, Audit.new, Audit.reason)
                     .where(Audit.tip_id == tip_id).order_by(Audit.id))
    return [tuple(r) for r in rows]  # type: ignore[misc]


def test_status_path_is_audited_and_keeps_the_verdict(sessions: Session) -> None:
    s = sessions
    tip = add_tip(s, 1, body="hàng cấm qua suối")
    s.commit()
    workflow.set_status(s, tip.id, "verifying", actor="Lan")
    workflow.set_status(s, tip.id, "of_value", actor="Lan", reason="đúng địa điểm")
    workflow.set_status(s, tip.id, "handled", actor="Bình", reason="đã bắt giữ")
    s.commit()
    s.refresh(tip)
    assert (tip.status, tip.verdict, tip.status_reason) == ("handled", "of_value", "đã bắt giữ")
    assert tip.first_action_at is not None
    assert audits(s, tip.id) == [
        ("Lan", "status", "new", "verifying", ""),
        ("Lan", "status", "verifying", "of_value", "đúng địa điểm"),
        ("Bình", "status", "of_value", "handled", "đã bắt giữ"),
    ]


def test_status_rules_refuse_and_write_nothing(sessions: Session) -> None:
    s = sessions
    tip = add_tip(s, 1)
    s.commit()
    with pytest.raises(WorkflowError, match="cannot go from new to handled"):
        workflow.set_status(s, tip.id, "handled", actor="Lan", reason="x")
    with pytest.raises(WorkflowError, match="needs a reason"):
        workflow.set_status(s, tip.id, "spam", actor="Lan", reason="  ")
    with pytest.raises(WorkflowError, match="unknown status"):
        workflow.set_status(s, tip.id, "closed", actor="Lan")
    with pytest.raises(WorkflowError, match="officers"):
        workflow.set_status(s, tip.id, "verifying", actor="")
    s.rollback()
    assert audits(s, tip.id) == []
    assert s.get(Tip, tip.id).first_action_at is None  # type: ignore[union-attr]


def test_reopen_clears_the_verdict(sessions: Session) -> None:
    s = sessions
    tip = add_tip(s, 1)
    workflow.set_status(s, tip.id, "spam", actor="Lan", reason="quảng cáo")
    workflow.set_status(s, tip.id, "verifying", actor="Lan", reason="có người gọi lại")
    s.commit()
    assert (tip.status, tip.verdict) == ("verifying", "")


def test_category_assign_note_are_audited(sessions: Session) -> None:
    s = sessions
    tip = add_tip(s, 1, category="other")
    s.commit()
    workflow.set_category(s, tip.id, "smuggling", actor="Lan", known={"smuggling", "other"},
                          reason="hàng lậu")
    workflow.assign(s, tip.id, "Bình", actor="Lan", officers={"Bình", "Lan"})
    note = workflow.add_note(s, tip.id, "Gọi trưởng bản\x1b[31m hỏi thêm", actor="Lan")
    s.commit()
    assert (tip.category, tip.received_category, tip.assignee) == ("smuggling", "other", "Bình")
    assert s.get(Note, note.id).text == "Gọi trưởng bản hỏi thêm"  # type: ignore[union-attr]
    assert audits(s, tip.id) == [
        ("Lan", "category", "other", "smuggling", "hàng lậu"),
        ("Lan", "assign", "", "Bình", ""),
        ("Lan", "note", "", "Gọi trưởng bản hỏi thêm", ""),
    ]
    with pytest.raises(WorkflowError, match="not an officer"):
        workflow.assign(s, tip.id, "Mallory", actor="Lan", officers={"Bình"})
    with pytest.raises(WorkflowError, match="unknown category"):
        workflow.set_category(s, tip.id, "weather", actor="Lan", known={"other"})
    with pytest.raises(WorkflowError, match="empty"):
        workflow.add_note(s, tip.id, " \x1b[0m ", actor="Lan")


def test_mailbox_signals_map_to_statuses_once(sessions: Session) -> None:
    s = sessions
    tip, other = add_tip(s, 1), add_tip(s, 2)
    s.add_all([
        MailEvent(station_id="ncs", message_pk=tip.message_pk, kind="moved", folder="verified"),
        MailEvent(station_id="ncs", message_pk=other.message_pk, kind="flags",
                  detail="+\\Seen +$Spam"),
        MailEvent(station_id="ncs", message_pk=other.message_pk, kind="flags",
                  detail="-\\Seen"),
    ])
    s.commit()
    config = {"folder_status": {"Verified": "verifying"}, "flag_status": {"$Spam": "spam"}}
    assert workflow.apply_signals(s, **config) == 2
    assert workflow.apply_signals(s, **config) == 0
    assert (s.get(Tip, tip.id).status, s.get(Tip, other.id).status) == (  # type: ignore[union-attr]
        "verifying", "spam")
    assert audits(s, other.id) == [("mailbox", "status", "new", "spam", "flag $Spam")]
    assert s.scalar(select(func.count(Audit.id)).where(Audit.event_id.is_not(None))) == 2


def test_signal_mapping_is_case_insensitive_and_ignores_removals() -> None:
    maps = {"folder_status": {"Verified": "verifying"}, "flag_status": {"\\Flagged": "verifying"}}
    assert workflow.signal_status("moved", "VERIFIED", "", **maps) == ("verifying",
                                                                       "folder VERIFIED")
    assert workflow.signal_status("flags", "", "+\\flagged", **maps) == ("verifying",
                                                                        "flag \\flagged")
    assert workflow.signal_status("flags", "", "-\\Flagged", **maps) is None
    assert workflow.signal_status("deleted", "Verified", "", **maps) is None


def test_search_finds_text_followups_and_refs(sessions: Session) -> None:
    s = sessions
    drugs = add_tip(s, 1, body="Có người mang ma túy qua cửa khẩu lúc tối")
    guns = add_tip(s, 2, body="Nhà cuối bản có súng tự chế", hours=1)
    add_tip(s, 3, body="Trâu bị mất ở nương", hours=2)
    s.add(Message(station_id="ncs", message_id="<f1@relay.example.test>", raw_sha256="f" * 64,
                  kind="followup", subject="Re: [NCS-0002]", text_body="thêm: xe máy màu đỏ",
                  search_text=search_form("thêm: xe máy màu đỏ"),
                  received_hour=T0, tip_id=guns.id))
    s.commit()
    assert search_tip_ids(s, "ma tuy") == [drugs.id]  # both engines: the text is folded
    assert search_tip_ids(s, "ma túy") == [drugs.id]
    assert search_tip_ids(s, "súng tự") == [guns.id]
    assert search_tip_ids(s, "xe máy") == [guns.id]  # a follow-up finds its tip
    assert search_tip_ids(s, "cửa kh") == [drugs.id]  # the last word is a prefix
    assert search_tip_ids(s, "ncs-0003") == [drugs.id + 2]  # a ref, not words
    assert search_tip_ids(s, '" OR * NEAR( :*') == []  # syntax never reaches the engine
    assert search_tip_ids(s, "") == []


def test_query_builders_quote_every_word() -> None:
    assert fts5_query('ma "túy" OR') == '"ma" "tuy" "or"*'
    assert tsquery("Ma túy & |") == "ma & tuy:*"
    assert fts5_query("!!!") == ""


def test_filters_and_pages(sessions: Session) -> None:
    s = sessions
    for n in range(1, 31):
        add_tip(s, n, category="drugs" if n % 3 else "theft", placement="cho" if n % 2 else "",
                hours=n * 24, body=f"tin số {n}")
    add_tip(s, 99, station="mlt", hours=5000)
    s.commit()
    everything = TipFilter(stations=("ncs",))
    assert count_tips(s, everything) == 30
    first = page_tips(s, everything, 0, 10)
    assert [r.ref for r in first[:2]] == ["NCS-0030", "NCS-0029"]  # newest first
    pages = [r.ref for off in (0, 10, 20) for r in page_tips(s, everything, off, 10)]
    assert len(set(pages)) == 30
    theft = TipFilter(stations=("ncs",), category="theft")
    assert count_tips(s, theft) == 10
    march = TipFilter(stations=("ncs",), date_from=date(2026, 3, 5), date_to=date(2026, 3, 9))
    assert [r.ref for r in page_tips(s, march, 0, 50)] == [f"NCS-{n:04d}" for n in (8, 7, 6, 5, 4)]
    placed = TipFilter(stations=("ncs", "mlt"), placement="ncs/cho", category="drugs")
    assert count_tips(s, placed) == 10  # the odd non-multiples of 3; MLT's "cho" is another
    assert count_tips(s, TipFilter(stations=("ncs", "mlt"), placement="mlt/cho")) == 1
    unknown = TipFilter(stations=("ncs", "mlt"), placement="ncs/")  # sent without a poster
    assert count_tips(s, unknown) == 15
    assert count_tips(s, TipFilter(stations=("ncs", "mlt"), station="mlt")) == 1
    assert count_tips(s, TipFilter(stations=("ncs",), station="mlt")) == 30  # not visible
    assert count_tips(s, TipFilter(stations=("ncs",), text="số 7")) == 1


def test_detail_has_thread_signals_history(sessions: Session, tmp_path: Path) -> None:
    s = sessions
    tip = add_tip(s, 1, body="x" * 50_000)
    s.add(Message(station_id="ncs", message_id="<r1@station>", raw_sha256="r" * 64, kind="reply",
                  subject="Re: [NCS-0001]", text_body="Cảm ơn", sender="station1@example.test",
                  received_hour=T0 + timedelta(hours=3), tip_id=tip.id))
    s.add(Location(message_pk=tip.message_pk, station_id="ncs", folder="Verified",
                   uidvalidity=1, uid=1, flags="\\Flagged \\Seen"))
    s.add(MailEvent(station_id="ncs", message_pk=tip.message_pk, kind="moved", folder="Verified",
                    at=T0 + timedelta(hours=1)))
    workflow.set_status(s, tip.id, Status.VERIFYING, actor="Lan")
    s.commit()
    d = load_detail(s, tip.id, tmp_path)
    assert d is not None
    assert [t.kind for t in d.thread] == ["tip", "reply"]
    assert len(d.thread[0].body) == 20_000 and d.thread[0].hidden_chars == 30_000
    assert d.signals == [("tip", "Verified", "\\Flagged \\Seen")]
    assert [(h.action, h.new) for h in d.history] == [("moved", "Verified"),
                                                      ("status", "verifying")]
    assert load_detail(s, tip.id + 100, tmp_path) is None


def test_save_attachment_never_overwrites_or_escapes(tmp_path: Path) -> None:
    src = tmp_path / "stored.bin"
    src.write_bytes(b"jpeg")
    out = tmp_path / "out"
    out.mkdir()
    first = save_attachment(src, out, "../../etc/passwd")
    second = save_attachment(src, out, "../../etc/passwd")
    assert first.parent == out and second.parent == out
    assert first.name == "_.._etc_passwd" and second.name not in (first.name, "passwd")
    assert first.read_bytes() == second.read_bytes() == b"jpeg"
    assert safe_filename("ảnh\u202e gpj.exe") == "ảnh gpj.exe"
    with pytest.raises(LedgerError, match="not a folder"):
        save_attachment(src, tmp_path / "missing", "a.jpg")



def test_search_uses_the_full_text_index(sessions: Session) -> None:
    s = sessions
    add_tip(s, 1, body="ma túy")
    s.commit()
    dialect = s.get_bind().dialect.name
    f = TipFilter(stations=("ncs",), text="ma túy")
    query = apply_filter(select(Tip.id), f, dialect)
    sql = str(query.compile(s.get_bind(), compile_kwargs={"literal_binds": True}))
    if dialect == "postgresql":
        s.execute(text("SET enable_seqscan = off"))  # tiny table: make the index the only way
        plan = "\n".join(s.scalars(text("EXPLAIN " + sql)))
        assert "ix_messages_fts" in plan, plan
    else:
        plan = "\n".join(str(r) for r in s.execute(text("EXPLAIN QUERY PLAN " + sql)))
        assert "messages_fts VIRTUAL TABLE" in plan, plan
