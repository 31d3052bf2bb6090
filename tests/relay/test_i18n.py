"""The gettext catalogs: complete for the public pages, compiled files up to date."""

from __future__ import annotations

import gettext
import unicodedata
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import CommandLineInterface, parse_mapping_cfg
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po, write_po

from mailbridge.config import (
    BUILTIN_CATEGORIES,
    BUILTIN_LABELS,
    FEEDBACK_CATEGORIES,
    Category,
    catalog_languages,
)
from mailbridge.labels import catalog_path, category_label
from mailbridge.relay.i18n import (
    babel_locale,
    format_number,
    gettext_for,
    html_lang,
    language_name,
)

ROOT = Path(__file__).resolve().parents[2]
MESSAGE_LABELS = ("Reference", "Category", "Poster", "Where / when", "Received (hour, UTC)",
                  "(no text)", "Reply to this message to answer the tipster; they read it "
                  "with their receipt code.")
DRAFT = "draft for native review"


def extracted() -> dict[str, list[str]]:
    """msgid -> files, extracted exactly as `pybabel extract -F babel.cfg` does."""
    with (ROOT / "babel.cfg").open(encoding="utf-8") as cfg:
        method_map, options_map = parse_mapping_cfg(cfg)  # type: ignore[no-untyped-call]
    found: dict[str, list[str]] = {}
    for filename, _line, message, _comments, _context in extract_from_dir(
            ROOT, method_map, options_map):
        for msgid in (message if isinstance(message, tuple) else (message,)):
            if msgid:
                found.setdefault(msgid, []).append(filename)
    return found


def catalog(lang: str) -> Catalog:
    with catalog_path(lang, ".po").open("rb") as po:
        return read_po(po)


def translated(cat: Catalog) -> dict[object, object]:
    """What a compiled catalog can hold: the non-empty, non-fuzzy translations."""
    return {m.id: m.string for m in cat if m.id and m.string and not m.fuzzy}


def public(files: list[str]) -> bool:
    """Strings a tipster can read (the station side speaks Vietnamese only)."""
    return any(not f.startswith("mailbridge/station/") for f in files)


def test_extraction_finds_labels_of_config_and_message() -> None:
    msgids = extracted()
    assert set(BUILTIN_LABELS.values()) <= set(msgids)
    assert set(MESSAGE_LABELS) <= set(msgids)
    assert "Send a tip" in msgids  # from the templates


def test_every_catalog_is_a_language() -> None:
    assert catalog_languages() == ("en", "hmn", "hmn-chv", "vi")


@pytest.mark.parametrize("lang", catalog_languages())
def test_every_msgid_is_translated(lang: str) -> None:
    """Every string of the code and templates has a non-empty, non-fuzzy entry (English
    too: an empty entry is one nobody wrote)."""
    cat = catalog(lang)
    missing = [msgid for msgid, files in extracted().items()
               if (lang == "vi" or public(files))
               and (msgid not in cat or not cat[msgid].string or cat[msgid].fuzzy)]
    assert missing == []


@pytest.mark.parametrize("lang", catalog_languages())
def test_catalogs_are_well_formed(lang: str) -> None:
    cat = catalog(lang)
    problems = [(m.id, errors) for m, errors in cat.check()]
    assert problems == []  # e.g. a %(name)s placeholder lost in translation
    for message in cat:
        if isinstance(message.string, str):
            assert unicodedata.normalize("NFC", message.string) == message.string


@pytest.mark.parametrize("lang", catalog_languages())
def test_compiled_catalogs_are_up_to_date(lang: str) -> None:
    """The .mo holds exactly the .po's translations and plural rule (whatever wrote it)."""
    source = catalog(lang)
    with catalog_path(lang).open("rb") as mo:
        compiled = read_mo(mo)
    assert translated(compiled) == translated(source), "run: make catalogs"
    assert compiled.plural_forms == source.plural_forms, "run: make catalogs"


@pytest.mark.parametrize("lang", ["hmn", "hmn-chv"])
def test_hmong_is_marked_as_a_draft_with_one_plural_form(lang: str) -> None:
    text = catalog_path(lang, ".po").read_text(encoding="utf-8")
    assert "DRAFT FOR NATIVE REVIEW" in text.split('msgid ""')[0]
    assert '"Plural-Forms: nplurals=1; plural=0;\\n"' in text
    cat = catalog(lang)
    assert cat.num_plurals == 1
    assert all(DRAFT in m.user_comments for m in cat if m.id and m.string)
    assert gettext_for(lang)("Send the tip") == "Xa"


@pytest.mark.parametrize(("lang", "name", "tag", "numbers"), [
    ("vi", "Tiếng Việt", "vi", "vi"), ("hmn", "Hmoob", "hmn-Latn", "vi"),
    ("hmn-chv", "Hmôngz", "hmn-Latn-VN-x-chv", "vi"), ("en", "English", "en", "en")])
def test_each_catalog_names_its_language_in_itself(lang: str, name: str, tag: str,
                                                   numbers: str) -> None:
    """Adding a language is adding a catalog: its name, tag and numbers need no code."""
    assert language_name(lang) == name and html_lang(lang) == tag
    assert str(babel_locale(lang)) == numbers
    assert lang == "en" or gettext_for(lang)("Send a tip") != "Send a tip"  # a translation


def test_hmong_plural_rule_survives_pybabel_update_and_compile(tmp_path: Path) -> None:
    """Babel has no hmn locale: its catalog's own header must carry the plural rule."""
    template = tmp_path / "messages.pot"
    po = tmp_path / "messages.po"
    po.write_bytes(catalog_path("hmn", ".po").read_bytes())
    pot = Catalog()
    for message in catalog("hmn"):
        if message.id:
            pot.add(message.id, locations=message.locations)
    with template.open("wb") as out:
        write_po(out, pot)
    cli = CommandLineInterface()
    cli.run(["pybabel", "-q", "update", "-i", str(template), "-o", str(po), "-l", "hmn",
             "--ignore-obsolete"])  # type: ignore[no-untyped-call]
    cli.run(["pybabel", "-q", "compile", "-i", str(po), "-o", str(tmp_path / "messages.mo"),
             "-l", "hmn"])  # type: ignore[no-untyped-call]
    with (tmp_path / "messages.mo").open("rb") as mo:
        compiled = gettext.GNUTranslations(mo)
    assert compiled.info()["plural-forms"] == "nplurals=1; plural=0;"
    assert compiled.plural(5) == 0  # type: ignore[attr-defined]
    assert compiled.gettext("Send the tip") == "Xa"


def test_vietnamese_uses_the_agreed_terms() -> None:
    _ = gettext_for("vi")
    assert _("Send a tip") == "Gửi tin báo"
    assert _("You do not need to give your name. This form does not ask who you are."
             ).startswith("Không cần ghi tên.")
    assert [_(BUILTIN_LABELS[c.id]) for c in BUILTIN_CATEGORIES] == [
        "Ma túy", "Buôn lậu", "Xuất nhập cảnh trái phép", "Cư trú trái phép",
        "Trộm cắp tài sản", "Vũ khí, súng tự chế", "Mua bán người", "Việc khác"]
    assert _("Suggestion box") == "Hòm thư góp ý"
    assert [_(BUILTIN_LABELS[c.id]) for c in FEEDBACK_CATEGORIES] == [
        "Đời sống, ăn ở", "Huấn luyện, công tác", "Chế độ, chính sách", "Kỷ luật, tác phong",
        "Cán bộ, chỉ huy", "Sáng kiến, đề xuất", "Việc khác"]


def test_hmong_numbers_follow_vietnamese() -> None:
    assert str(babel_locale("hmn")) == "vi"
    assert format_number(5000, "hmn") == format_number(5000, "vi") == "5.000"
    assert format_number(5000, "en") == "5,000"


def test_category_labels_prefer_the_config() -> None:
    custom = Category("cattle", "other", {"vi": "Trộm gia súc", "en": "Cattle theft"})
    assert category_label(custom, "en") == "Cattle theft"
    assert category_label(custom, "hmn") == "Trộm gia súc"  # no Hmong label: first given
    assert category_label(Category("drugs", "drugs"), "hmn") == "Tshuaj yeeb"
    assert category_label(Category("drugs", "drugs", {"vi": "Ma túy (heroin)"}), "vi") == (
        "Ma túy (heroin)")
