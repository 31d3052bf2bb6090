"""``mailbridge ledger export REF --out FILE.pdf``: one tip's thread, attachments' hashes
and audit on paper, read back from the PDF's own text."""

from __future__ import annotations

import hashlib
import io
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from mailbridge.cli import main
from mailbridge.config import Settings
from mailbridge.errors import ConfigError
from mailbridge.station.casefile import run_export
from mailbridge.station.ledger import workflow
from mailbridge.station.ledger.db import make_engine, session_factory, upgrade
from mailbridge.station.ledger.models import Attachment, Audit, Message, Note
from tests.station.test_report import pdf_text
from tests.station.test_tui_app import T0, add_tip, make_settings

PHOTO = b"\x89PNG photo of the crossing"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """NCS-0001: the tip (T0+1h UTC), a follow-up with a photo, an officer's reply; a
    status change, a category correction and a note at known UTC minutes."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    upgrade(url)
    engine = make_engine(url)
    with session_factory(engine)() as s:
        tip = add_tip(s, 1, "Có người lạ chở hàng qua đường mòn lúc nửa đêm",
                      category="smuggling")
        add_tip(s, 2, "Tin khác, không thuộc hồ sơ này")
        later = [("followup", "Bổ sung: xe máy màu đỏ, không biển số", "", 5),
                 ("reply", "Cảm ơn, đồn đã nhận tin và đang xác minh.", "lan@ncs.example.vn", 9)]
        for n, (kind, body, sender, hours) in enumerate(later):
            s.add(Message(station_id="ncs", message_id=f"<m{n}@example.test>",
                          raw_sha256=f"{n:064x}", kind=kind, subject="[NCS-0001]",
                          text_body=body, sender=sender, tip_id=tip.id,
                          received_hour=T0 + timedelta(hours=hours)))
        s.flush()
        followup = s.query(Message).filter_by(kind="followup").one()
        s.add(Attachment(message_pk=followup.id, filename="anh-duong-mon.png",
                         content_type="image/png", size=len(PHOTO),
                         sha256=hashlib.sha256(PHOTO).hexdigest()))
        workflow.set_status(s, tip.id, "verifying", actor="Nguyễn Thị Lan")
        workflow.set_category(s, tip.id, "border", actor="Trần Văn Bình", known={"border"},
                              reason="người báo chọn nhầm loại tin")
        workflow.add_note(s, tip.id, "Đã báo tổ tuần tra số 2", actor="Nguyễn Thị Lan")
        s.flush()
        for minutes, action in ((30, "status"), (45, "category"), (50, "note")):
            s.execute(update(Audit).where(Audit.action == action)
                      .values(at=T0 + timedelta(hours=10, minutes=minutes)))
        s.execute(update(Note).values(at=T0 + timedelta(hours=10, minutes=50)))
        s.commit()
    engine.dispose()
    return make_settings(tmp_path, url)


def test_the_case_file_holds_the_thread_hashes_and_audit_on_the_stations_clock(
        settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "case" / "NCS-0001.pdf"
    out = io.StringIO()
    assert run_export(settings, "ncs-0001", path, out=out) == 0
    assert out.getvalue().strip() == f"Đã ghi hồ sơ NCS-0001 vào {path}"
    _, text = pdf_text(path)
    lines = [" ".join(line.split()) for line in text.splitlines()]
    assert "Hồ sơ tin báo NCS-0001" in lines
    assert "Mọi giờ ghi trong hồ sơ là giờ của đồn (Asia/Ho_Chi_Minh, UTC+07)" in lines
    assert "NCS-0001 Đồn Biên phòng Nậm Cuổi 2026-03-01 16h" in lines  # 09h UTC
    # The thread in order, the tipster's hours to the hour, on the station's clock.
    order = [lines.index(line) for line in (
        "── Tin báo · 2026-03-01 16h",
        "Có người lạ chở hàng qua đường mòn lúc nửa đêm",
        "── Bổ sung của người báo tin · 2026-03-01 20h",
        "Bổ sung: xe máy màu đỏ, không biển số",
        "── Trả lời của cán bộ · 2026-03-02 00h · lan@ncs.example.vn",
        "Cảm ơn, đồn đã nhận tin và đang xác minh.")]
    assert order == sorted(order)
    assert "anh-duong-mon.png (image/png, 26 B)" in lines
    assert f"SHA-256: {hashlib.sha256(PHOTO).hexdigest()}" in lines
    assert "2026-03-02 01:50 Nguyễn Thị Lan: Đã báo tổ tuần tra số 2" in lines
    assert "2026-03-02 01:30 Nguyễn Thị Lan Trạng thái: Mới → Đang xác minh" in lines
    assert ("2026-03-02 01:45 Trần Văn Bình Loại tin: Buôn lậu → Xuất nhập cảnh trái phép "
            "(người báo chọn nhầm loại tin)") in lines, lines
    assert "Tin khác, không thuộc hồ sơ này" not in text
    assert "Hồ sơ tin báo NCS-0001, trang 1/1" in lines


def test_every_page_of_a_long_case_file_names_the_tip_and_its_page(
        settings: Settings, tmp_path: Path) -> None:
    engine = make_engine(settings.ledger.database)
    with session_factory(engine)() as s:
        for n in range(120):
            workflow.add_note(s, 1, f"Ghi chú số {n}: đã kiểm tra đường mòn", actor="Lan")
        s.commit()
    engine.dispose()
    path = tmp_path / "long.pdf"
    run_export(settings, "NCS-0001", path, out=io.StringIO())
    pages, text = pdf_text(path)
    assert pages >= 2
    for page in range(1, pages + 1):
        assert f"Hồ sơ tin báo NCS-0001, trang {page}/{pages}" in text


def test_an_unknown_ref_is_one_line_naming_the_fix(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no tip 'NCS-9999' in the ledger: copy the number"):
        run_export(settings, "NCS-9999", tmp_path / "x.pdf", out=io.StringIO())
    assert not (tmp_path / "x.pdf").exists()


def test_the_command_line_with_a_station_side_file(
        settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``ledger export`` from a real station-side config, with either place for --station."""
    config = tmp_path / "station.toml"
    config.write_text(f"""
[relay]
address = "tips@relay.example.test"

[ledger]
database = "{settings.ledger.database}"
relay_public_keys = ["cuBKv6+h1cuODxZ9Ik/VnKx+wslXoX9c2PpUv2zhp28="]

[[stations]]
id = "ncs"
name = "Đồn Biên phòng Nậm Cuổi"
mailbox = "station1@example.test"

[[stations]]
id = "mlt"
mailbox = "station2@example.test"
""", encoding="utf-8")
    out = tmp_path / "c.pdf"
    assert main(["--config", str(config), "ledger", "export", "NCS-0001", "--out", str(out),
                 "--station", "ncs"]) == 0
    assert pdf_text(out)[1].startswith("Hồ sơ tin báo NCS-0001\n")
    assert main(["--config", str(config), "ledger", "--station", "mlt", "export", "NCS-0001",
                 "--out", str(out)]) == 2
    assert "no tip 'NCS-0001' in the ledger" in capsys.readouterr().err
