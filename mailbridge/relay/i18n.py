"""Languages of the public pages: gettext catalogs, Jinja2 environments, labels.

Every string a tipster reads goes through gettext; the catalogs live in
``mailbridge/locale/{vi,hmn,en}/LC_MESSAGES/messages.po`` (compiled ``.mo``
beside them), so a translator corrects a word without touching code. They are
loaded by ``mailbridge/labels.py``, which the station side shares for category
labels.

Babel has no ``hmn`` locale: the Hmong (RPA) catalog states its own plural rule
in its header (Babel keeps it through ``pybabel update`` and ``compile``), falls
back to Vietnamese for any missing string, and uses Vietnamese conventions for
numbers. Messages forwarded to a station are always
labelled in Vietnamese (``MESSAGE_LANGUAGE``), whatever the tipster's language.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from babel import Locale
from babel.numbers import format_decimal
from jinja2 import Environment, FileSystemLoader, select_autoescape

from ..labels import FALLBACK, babel_knows, translations
from ..pictograms import shape

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
MESSAGE_LANGUAGE = "vi"


def N_(message: str) -> str:
    """Mark a string for extraction without translating it here."""
    return message


# The built-in category labels are plain strings in config.py; marking them here
# puts them in the extracted template, so `pybabel update` never drops them.
BUILTIN_LABEL_MSGIDS = (
    N_("Drugs"),
    N_("Smuggling"),
    N_("Illegal border crossing"),
    N_("Illegal residence"),
    N_("Theft"),
    N_("Homemade guns"),
    N_("Human trafficking"),
    N_("Other"),
    N_("Daily life and meals"),
    N_("Training and duty"),
    N_("Pay and entitlements"),
    N_("Discipline and conduct"),
    N_("Officers and command"),
    N_("Ideas and proposals"),
)


def gettext_for(lang: str) -> Callable[[str], str]:
    return translations(lang).gettext


# Each catalog names its own language (in itself, so a reader finds theirs on the
# switch) and gives its BCP 47 tag for <html lang> (hmn-Latn: Hmong in the RPA script):
# adding a language is adding a catalog, with no code to change.
LANGUAGE_NAME = N_("English (the name of this language, written in it)")
LANGUAGE_TAG = N_("en (the BCP 47 tag of this language)")


def language_name(lang: str) -> str:
    return translations(lang).gettext(LANGUAGE_NAME)


def html_lang(lang: str) -> str:
    tag = translations(lang).gettext(LANGUAGE_TAG)
    return lang if tag == LANGUAGE_TAG else tag


def babel_locale(lang: str) -> Locale:
    """The Babel locale for numbers and dates (one Babel lacks, as Hmong, uses Vietnamese)."""
    return Locale.parse(lang if babel_knows(lang) else FALLBACK)


def format_number(number: int, lang: str) -> str:
    return format_decimal(number, locale=babel_locale(lang))


@functools.cache
def environment(lang: str) -> Environment:
    """A Jinja2 environment per language: templates compiled once, no shared state."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATE_DIR),
        autoescape=select_autoescape(["html"]),
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    env.install_gettext_translations(translations(lang), newstyle=True)  # type: ignore[attr-defined]
    env.globals["pictogram_shape"] = shape  # the posters draw the same shapes
    return env
