"""Category labels from the gettext catalogs: one source for the form and the officers.

The public form (relay) and the ledger's screens and report (station) must name a
category with the very same words, so both look it up here: the config's own label
for the language if there is one, else the catalog's translation of the built-in
English label (``mailbridge/locale/{vi,hmn,en}/LC_MESSAGES/messages.po``, compiled
``.mo`` beside them). It sits above both roles, which never import each other.
"""

from __future__ import annotations

import functools
import gettext as _gettext
from pathlib import Path

from babel import Locale, UnknownLocaleError
from babel.support import Translations

from .config import BUILTIN_LABELS, Category, SmsSettings
from .core.sms import fold_keyword

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
DOMAIN = "messages"
# A language Babel does not know (``hmn``, ``hmn-chv``) falls back to Vietnamese for a
# missing string: its readers live in Vietnam, and the msgids are English.
FALLBACK = "vi"


def catalog_path(lang: str, suffix: str = ".mo") -> Path:
    """``hmn-chv`` (config, URL) lives in the folder ``hmn@chv`` (a gettext modifier, as
    ``sr@latin``), which Babel reads as an unknown locale rather than a malformed one."""
    return LOCALE_DIR / lang.replace("-", "@") / "LC_MESSAGES" / (DOMAIN + suffix)


def babel_knows(lang: str) -> bool:
    try:
        Locale.parse(lang)
    except (UnknownLocaleError, ValueError):
        return False
    return True


@functools.cache
def translations(lang: str) -> _gettext.NullTranslations:
    """The compiled catalog of *lang*, with its fallback; identity if there is none."""
    path = catalog_path(lang)
    if not path.is_file():
        return _gettext.NullTranslations()
    with path.open("rb") as fp:
        result = Translations(fp=fp, domain=DOMAIN)
    if lang != FALLBACK and not babel_knows(lang):
        result.add_fallback(translations(FALLBACK))
    return result


SMS_LANGUAGE = "vi"  # the language a villager texts in, and the poster's keyword list


def sms_keywords(sms: SmsSettings, categories: tuple[Category, ...]) -> dict[str, str]:
    """Folded keyword -> category id: the station's own, else each category's number
    (1, 2, ... in the config's order) and its Vietnamese label, as the poster prints them."""
    if sms.keywords:
        return dict(sms.keywords)
    numbers = {str(i): c.id for i, c in enumerate(categories, start=1)}
    # "Vũ khí, súng tự chế": the whole label, and its words before the comma.
    names = {fold_keyword(name): c.id for c in categories
             for name in {category_label(c, SMS_LANGUAGE),
                          category_label(c, SMS_LANGUAGE).split(",")[0]}}
    return {**names, **numbers}


def sms_menu_keys(sms: SmsSettings, categories: tuple[Category, ...]) -> list[tuple[str, str]]:
    """(keyword, category id) per category, as the poster prints it: "1", "2", ...; with
    the station's own keywords, the shortest one of each category."""
    words = sms_keywords(sms, categories)
    menu = []
    for category in categories:
        mine = sorted((w for w, c in words.items() if c == category.id), key=lambda w: (len(w), w))
        if mine:
            menu.append((mine[0], category.id))
    return menu


def sms_menu(sms: SmsSettings, categories: tuple[Category, ...],
             lang: str = SMS_LANGUAGE) -> list[tuple[str, str]]:
    """(keyword, label) per category: "1 Ma túy", "2 Buôn lậu", ..."""
    labels = {c.id: category_label(c, lang) for c in categories}
    return [(word, labels[category]) for word, category in sms_menu_keys(sms, categories)]


def category_label(category: Category, lang: str) -> str:
    """The configured label for *lang*, else the catalog's label of a built-in id."""
    if lang in category.labels:
        return category.labels[lang]
    if category.id in BUILTIN_LABELS:
        return translations(lang).gettext(BUILTIN_LABELS[category.id])
    return next(iter(category.labels.values()), category.id)
