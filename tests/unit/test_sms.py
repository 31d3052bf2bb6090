"""core/sms.py: what gammu-smsd's environment becomes, and what never becomes a tip."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest

from mailbridge.config import BUILTIN_CATEGORIES, Settings, SmsSettings, load_config
from mailbridge.core.sms import (
    BINARY,
    EMPTY,
    FLASH,
    MALFORMED,
    REPORT,
    SmsRefused,
    category_of,
    fold_keyword,
    number_key,
    read_sms,
)
from mailbridge.errors import ConfigError
from mailbridge.labels import sms_keywords, sms_menu


def env(*texts: str, number: str = "+84912345678", **extra: str) -> dict[str, str]:
    values = {"SMS_MESSAGES": str(len(texts)), "DECODED_PARTS": "0"}
    for n, text in enumerate(texts, start=1):
        values |= {f"SMS_{n}_TEXT": text, f"SMS_{n}_NUMBER": number, f"SMS_{n}_CLASS": "-1",
                   f"SMS_{n}_REFERENCE": "0"}
    return values | extra


def test_parts_join_in_order_without_added_spaces() -> None:
    sms = read_sms(env("phan000 phan0", "01 phan002 p", "han003"), max_chars=5000)
    assert sms.text == "phan000 phan001 phan002 phan003"


def test_decomposed_vietnamese_arrives_nfc() -> None:
    decomposed = unicodedata.normalize("NFD", "Đường mòn phía suối")
    assert read_sms(env(decomposed), max_chars=5000).text == "Đường mòn phía suối"


def test_the_number_is_kept_only_as_digits_and_never_shown() -> None:
    sms = read_sms(env("xin chào"), max_chars=5000)
    assert sms.number_key == "84912345678"
    assert "912345678" not in repr(sms)


@pytest.mark.parametrize("spelling", ["+84912345678", "0912345678", "84912345678",
                                      "0912 345 678", "0084912345678"])
def test_every_spelling_of_a_number_is_one_sender(spelling: str) -> None:
    assert number_key(spelling) == "84912345678"


@pytest.mark.parametrize(("values", "kind"), [
    (env(""), EMPTY),
    (env("  \n\t "), EMPTY),
    (env("x", SMS_1_REFERENCE="5"), REPORT),
    (env("flash", SMS_1_CLASS="0"), FLASH),
    ({"SMS_MESSAGES": "1", "SMS_1_NUMBER": "+84911111111", "SMS_1_CLASS": "1"}, BINARY),
    (env("x", DECODED_PARTS="1", DECODED_1_MMS_ADDRESS="http://x/m"), BINARY),
    ({}, MALFORMED),
    ({"SMS_MESSAGES": "many"}, MALFORMED),
])
def test_what_never_becomes_a_tip(values: dict[str, str], kind: str) -> None:
    with pytest.raises(SmsRefused) as refused:
        read_sms(values, max_chars=5000)
    assert refused.value.kind == kind


def test_long_texts_are_cut_to_the_relay_limit() -> None:
    assert len(read_sms(env("a" * 200), max_chars=50).text) == 50


KEYWORDS = sms_keywords(SmsSettings(number="0912 000 111"), BUILTIN_CATEGORIES)


@pytest.mark.parametrize(("text", "category"), [
    ("1 có người vận chuyển hàng", "drugs"),
    ("1. có người", "drugs"),
    ("2: xe chở thuốc lá", "smuggling"),
    ("Ma túy ở bản trên", "drugs"),
    ("MA TUY o ban tren", "drugs"),
    ("buon lau qua suoi", "smuggling"),
    ("Buôn lậu", "smuggling"),
    ("vu khi o nha ong A", "guns"),  # "Vũ khí, súng tự chế": the words before its comma
    ("Vũ khí, súng tự chế", "guns"),
    ("10 người lạ vào bản", "other"),
    ("có người lạ", "other"),
    ("ma tuyet voi", "other"),
])
def test_a_leading_keyword_or_digit_names_the_category(text: str, category: str) -> None:
    assert category_of(text, KEYWORDS, "other") == category


def test_the_poster_menu_numbers_the_categories_in_vietnamese() -> None:
    menu = sms_menu(SmsSettings(number="0912 000 111"), BUILTIN_CATEGORIES)
    assert menu[:2] == [("1", "Ma túy"), ("2", "Buôn lậu")]
    assert len(menu) == len(BUILTIN_CATEGORIES)


def test_a_station_may_choose_its_own_keywords() -> None:
    sms = SmsSettings(number="0912 000 111", keywords={fold_keyword("Thuốc"): "drugs"})
    assert category_of("thuoc phien", sms_keywords(sms, BUILTIN_CATEGORIES), "other") == "drugs"
    assert category_of("1 thuoc", sms_keywords(sms, BUILTIN_CATEGORIES), "other") == "other"


# -- config: [stations.sms] ----------------------------------------------------------

STATION = """
[relay]
address = "tips@relay.example.test"
secret_env = "MB_SECRET"

[[stations]]
id = "ncs"
mailbox = "tips@ncs.example.test"
maildir = "mail/ncs"
"""


def _load(tmp_path: Path, sms: str) -> Settings:
    path = tmp_path / "mailbridge.toml"
    path.write_text(STATION + "[stations.sms]\n" + sms, encoding="utf-8")
    return load_config(path, env={"MB_SECRET": "x" * 40})


def test_sms_is_off_unless_configured_and_quiet_by_default(tmp_path: Path) -> None:
    path = tmp_path / "mailbridge.toml"
    path.write_text(STATION, encoding="utf-8")
    station = load_config(path, env={"MB_SECRET": "x" * 40}).station("ncs")
    assert station is not None and station.sms is None
    station = _load(tmp_path, 'number = "0912 000 111"\n').station("ncs")
    assert station is not None and station.sms is not None
    assert station.sms.acknowledge is False
    assert station.sms.per_hour == 5
    assert station.sms.keywords == {}


def test_keywords_are_folded_as_texts_are(tmp_path: Path) -> None:
    settings = _load(tmp_path, 'number = "0912 000 111"\n'
                               '[stations.sms.keywords]\n"Thuốc  Phiện" = "drugs"\n')
    station = settings.station("ncs")
    assert station is not None and station.sms is not None
    assert station.sms.keywords == {"thuoc phien": "drugs"}


@pytest.mark.parametrize(("sms", "line"), [
    ('device = "/dev/ttyUSB0"\n', "stations.ncs.sms.number is missing: add it"),
    ('number = "call me"\n', "stations.ncs.sms.number must be a phone number"),
    ('number = "0912 000 111"\ndevice = "/dev/tty USB0; rm"\n',
     "stations.ncs.sms.device must be one word of gammu's configuration"),
    ('number = "0912 000 111"\nper_hour = 0\n', "stations.ncs.sms.per_hour must be 1-1000"),
    ('number = "0912 000 111"\nacknowledge = "yes"\n',
     "stations.ncs.sms.acknowledge must be true or false"),
    ('number = "0912 000 111"\nkeywords = { "1" = 5 }\n',
     "stations.ncs.sms.keywords must map a word or digit to a category id"),
    ('number = "0912 000 111"\nnumbr = 1\n', "stations.ncs.sms.numbr is not a known setting"),
    ('number = "0912 000 111"\nkeywords = { "9" = "weather" }\n',
     "stations.ncs.sms.keywords '9' = 'weather': this box has no such category"),
])
def test_sms_mistakes_are_one_line_naming_the_key(tmp_path: Path, sms: str, line: str) -> None:
    with pytest.raises(ConfigError) as error:
        _load(tmp_path, sms)
    assert line in str(error.value)
    assert len(str(error.value).splitlines()) == 1
