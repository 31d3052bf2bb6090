"""Posters of a station that takes texts: the number, the keyword digits before the
pictures' labels, and the plain sentence on what the phone company knows."""

from __future__ import annotations

import dataclasses
import unicodedata
from pathlib import Path

import pytest
from pypdf import PdfReader

from mailbridge.config import Settings, SmsSettings, load_config
from mailbridge.demo import write_demo_config
from mailbridge.labels import translations
from mailbridge.relay.posters import SMS_LINE, Poster, find_template, load_template, render_pdf


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return load_config(write_demo_config(tmp_path_factory.mktemp("posters") / "demo", 8080))


def poster_text(settings: Settings, tmp_path: Path, sms: SmsSettings | None) -> str:
    station = dataclasses.replace(settings.stations["ncs"], sms=sms)
    template = load_template(find_template("default", settings.path.parent),
                             settings.relay.languages)
    path = tmp_path / "poster.pdf"
    path.write_bytes(render_pdf(template, Poster(station, station.placements[0], "A4"),
                                settings.relay.public_url))
    text = PdfReader(path).pages[0].extract_text()
    return unicodedata.normalize("NFC", text).replace("\n", " ")


def test_the_sms_number_and_what_the_operator_knows_in_each_language(
        settings: Settings, tmp_path: Path) -> None:
    text = poster_text(settings, tmp_path, SmsSettings(number="0912 345 678"))
    for lang in ("vi", "hmn"):
        line = translations(lang).gettext(SMS_LINE) % {"number": "0912 345 678"}
        assert line in text, lang
    assert "Nhà mạng biết số nào đã nhắn tin đến số này và lúc nào." in text
    assert "1 Ma túy" in text
    assert "2 Buôn lậu" in text


def test_without_sms_no_number_and_no_digits(settings: Settings, tmp_path: Path) -> None:
    text = poster_text(settings, tmp_path, None)
    assert "Nhắn tin đến" not in text
    assert "Ma túy" in text
    assert "1 Ma túy" not in text
