"""``mailbridge ledger export REF --out FILE.pdf``: one tip for the case file, on paper.

The page says what the officers' screen says (the same summary, thread and history
text from ``tui/detail.py``, so the two cannot drift apart), plus each attachment's
SHA-256 so a printed file can be matched to the evidence later. Hours are the
station's, as on screen: the tipster's to the hour, officers' actions to the minute.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..config import Settings
from ..errors import ConfigError
from .ledger.db import make_engine, session_factory, translated
from .ledger.models import Attachment, Tip
from .localtime import offset_label
from .report import new_pdf, save_pdf, text_line
from .tui import strings as S
from .tui.data import TipDetail, load_detail


@translated("reading the ledger")
def find_tip(session: Session, ref: str, station: str | None = None) -> int:
    """The id of tip *ref* (any case); ConfigError when none or, across stations, two."""
    query = select(Tip.id, Tip.station_id).where(Tip.ref == ref.strip().upper())
    if station is not None:
        query = query.where(Tip.station_id == station.lower())
    found = session.execute(query).all()
    if not found:
        raise ConfigError(f"no tip {ref!r} in the ledger: copy the number from the officers' "
                          "list (mailbridge ledger)")
    if len(found) > 1:
        raise ConfigError(f"{ref!r} is a tip of several stations: add --station, one of "
                          f"{', '.join(sorted(s for _, s in found))}")
    return int(found[0][0])


@translated("reading the ledger")
def digests(session: Session, ids: list[int]) -> dict[int, str]:
    """Attachment id -> SHA-256 of its bytes, as the poller recorded it."""
    rows = session.execute(select(Attachment.id, Attachment.sha256)
                           .where(Attachment.id.in_(ids)))
    return {int(i): str(d) for i, d in rows}


def write_case_pdf(detail: TipDetail, sha256: dict[int, str], settings: Settings,
                   path: Path) -> None:
    """The tip's summary, thread in order, attachments with hashes, notes and audit."""
    from .tui.detail import history_text, size, summary, thread_text

    zone_name = settings.ledger.time_zone
    pdf = new_pdf(S.CASE_PAGE.format(ref=detail.ref, page="{page}", pages="{pages}"))
    pdf.add_page()
    pdf.set_font("DejaVu", "B", 15)
    text_line(pdf, 8, S.CASE_TITLE.format(ref=detail.ref))
    pdf.set_font("DejaVu", "", 9)
    text_line(pdf, 5, S.CASE_CLOCK.format(zone=zone_name, offset=offset_label(zone_name)))
    pdf.ln(2)
    pdf.set_font("DejaVu", "", 10)
    text_line(pdf, 5, summary(detail, settings).plain)
    files = [f"{a.filename} ({a.content_type}, {size(a.size)})\n"
             f"{S.CASE_SHA256.format(digest=sha256.get(a.id, '—'))}"
             for a in detail.attachments]
    sections = ((S.THREAD, thread_text(detail, zone_name).plain.strip()),
                (S.ATTACHMENTS, "\n".join(files) or S.NO_ATTACHMENTS),
                (S.NOTES, history_text(detail.notes, settings, notes=True).plain.strip()),
                (S.HISTORY, history_text(detail.history, settings).plain.strip()))
    for title, body in sections:
        _section(pdf, title, body)
    save_pdf(pdf, path, "--out")


def _section(pdf: Any, title: str, body: str) -> None:
    pdf.ln(3)
    pdf.set_font("DejaVu", "B", 11)
    text_line(pdf, 6, title)
    pdf.set_font("DejaVu", "", 9)
    text_line(pdf, 4.5, body)


def run_export(settings: Settings, ref: str, out_path: Path, *, station: str | None = None,
               out: TextIO = sys.stdout) -> int:
    """Find the tip, read it as the detail screen does, and write the PDF."""
    if station is not None and settings.station(station) is None:
        raise ConfigError(f"--station {station!r} is not configured: choose among "
                          f"{', '.join(sorted(settings.stations))}")
    engine = make_engine(settings.ledger.database)
    try:
        with session_factory(engine)() as session:
            detail = load_detail(session, find_tip(session, ref, station),
                                 settings.ledger.attachments_dir)
            assert detail is not None  # found in this very session
            sha256 = digests(session, [a.id for a in detail.attachments])
    finally:
        engine.dispose()
    write_case_pdf(detail, sha256, settings, out_path)
    print(S.CASE_WRITTEN.format(ref=detail.ref, path=out_path), file=out)
    return 0
