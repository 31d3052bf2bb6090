"""``mailbridge posters``: a printable QR poster for each station and placement.

A poster is drawn from a template (TOML in ``poster_templates/``, the format in
docs/ADMIN.md) with fpdf2 into a PDF whose words are real text (searchable, NFC), and
the very same page is rendered by pdfium (pypdfium2) into a 300 dpi PNG: one layout,
two files. The QR code (qrcode, error correction Q, so a dirty or torn poster still
scans) holds the URL in upper case, which is alphanumeric mode and keeps a short
address at version 2-3, with large modules; the relay answers ``/S/NCS/CHO`` as
``/s/ncs/cho``. Words marked with a ``lang`` are translated through the public pages'
catalogs (``make catalogs`` extracts them from the templates).
"""

from __future__ import annotations

import io
import re
import sys
import tomllib
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from ..config import Category, Placement, Settings, Station
from ..errors import ConfigError
from ..fonts import andika, dejavu
from ..labels import category_label, sms_menu_keys, translations
from ..pictograms import svg_document
from .i18n import N_

SIZES: Mapping[str, tuple[float, float]] = {"A4": (210.0, 297.0), "A5": (148.0, 210.0)}
DPI = 300
TEMPLATE_DIR = Path(__file__).resolve().parents[2] / "poster_templates"
DEFAULT_TEMPLATE = "default"
KINDS = ("box", "text", "qr", "pictograms", "lines")
_PT = 25.4 / 72  # one point in millimetres
_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")
# The fonts a template may name without a file.
BUILTIN_FONTS: Mapping[str, Callable[[], Path]] = {
    "dejavu": dejavu,
    "dejavu-bold": lambda: dejavu(bold=True),
    # Andika where fonts-sil-andika is installed, else DejaVu.
    "andika": lambda: andika() or dejavu(),
    "andika-bold": lambda: andika(bold=True) or dejavu(bold=True),
}
# The extra lines a station may have (the hotline, the SMS number): one msgid each, filled
# per language. The SMS line says plainly what texting gives away (docs/THREAT-MODEL.md).
HOTLINE = N_("Urgent? Call %(phone)s")
SMS_LINE = N_("Text %(number)s, starting with the number of a picture. The phone company "
              "knows which number texted this one, and when.")


@dataclass(frozen=True)
class Block:
    """One thing drawn on the page, at millimetres of the template's own page."""

    kind: str
    x: float
    y: float
    w: float
    h: float = 0.0
    text: str = ""
    lang: str = ""  # translate ``text`` into this language; "" prints it as written
    langs: tuple[str, ...] = ("vi",)  # pictograms' labels and extra lines
    font: str = "text"
    size: float = 12.0
    colour: str = "#000000"
    align: str = "C"
    purpose: str = ""  # draw only on posters of a box with this purpose; "" on all
    columns: int = 4
    icon: float = 12.0
    line_height: float = 1.25


@dataclass(frozen=True)
class Template:
    path: Path
    width: float
    height: float
    background: str
    fonts: Mapping[str, Path]
    blocks: tuple[Block, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Poster:
    """One station's poster for one placement (or the station's own form) and size."""

    station: Station
    placement: Placement | None
    size: str

    @property
    def stem(self) -> str:
        return f"{self.placement.id if self.placement else self.station.id}-{self.size}"


def form_url(public_url: str, station: Station, placement: Placement | None) -> str:
    path = f"/s/{station.id}/{placement.id}" if placement else f"/s/{station.id}"
    return public_url.rstrip("/") + path


def qr_payload(url: str) -> str:
    """What the code holds: the URL in upper case (alphanumeric mode, fewer modules)."""
    return url.upper()


def qr_matrix(url: str) -> tuple[list[list[bool]], int]:
    """The QR modules of *url* (no quiet zone) and the version it took."""
    import qrcode
    from qrcode.constants import ERROR_CORRECT_Q

    code = qrcode.QRCode(error_correction=ERROR_CORRECT_Q, border=0)
    code.add_data(qr_payload(url))
    code.make(fit=True)
    return code.get_matrix(), int(code.version)


def extra_lines(station: Station, lang: str) -> list[str]:
    """The station's own lines in *lang*: the hotline and the SMS number, if configured."""
    _ = translations(lang).gettext
    lines = [_(HOTLINE) % {"phone": station.hotline}] if station.hotline else []
    if station.sms is not None:
        lines.append(_(SMS_LINE) % {"number": station.sms.number})
    return lines


def sms_numbers(station: Station) -> dict[str, str]:
    """Category id -> the keyword a text starts with ("1"), printed before its picture's
    label; empty without SMS."""
    if station.sms is None:
        return {}
    return {category: word for word, category in sms_menu_keys(station.sms, station.categories)}


# -- templates -------------------------------------------------------------------------


def find_template(name: str, config_dir: Path) -> Path:
    """A template by file path, else by name in ``poster_templates/`` beside the config,
    else in the bundled ``poster_templates/``."""
    candidates = [Path(name), config_dir / "poster_templates" / f"{name}.toml",
                  TEMPLATE_DIR / f"{name}.toml"]
    for path in candidates:
        if path.suffix == ".toml" and path.is_file():
            return path
    raise ConfigError(f"--template {name}: no file {candidates[1]} nor {candidates[2]}: "
                      f"name a template in poster_templates/ or a .toml file")


def load_template(path: Path, languages: Iterable[str]) -> Template:
    """Read and check a template; every mistake is one line naming the key and the fix."""
    errors: list[str] = []
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"poster template {path} cannot be read as TOML: {exc}") from exc
    known = tuple(languages)

    def error(key: str, message: str) -> None:
        errors.append(f"{key} {message} (poster template {path})")

    page = data.get("page", {})
    width, height = (_number(page, "width", 210.0, "page", error),
                     _number(page, "height", 297.0, "page", error))
    background = _colour(page, "background", "#ffffff", "page", error)
    fonts: dict[str, Path] = {}
    for name, spec in dict(data.get("fonts", {"text": "andika", "bold": "andika-bold"})).items():
        if spec in BUILTIN_FONTS:
            fonts[name] = BUILTIN_FONTS[spec]()
        elif isinstance(spec, str) and (path.parent / spec).is_file():
            fonts[name] = path.parent / spec
        else:
            error(f"fonts.{name}", f"= {spec!r} is neither {', '.join(BUILTIN_FONTS)} nor a "
                                   f"font file beside the template")
    blocks = [_block(i, raw, fonts, known, error)
              for i, raw in enumerate(data.get("blocks", []))]
    unknown = sorted(set(data) - {"page", "fonts", "blocks"})
    for key in unknown:
        error(key, "is not a template setting: use page, fonts or blocks")
    if not blocks:
        error("blocks", "is empty: add [[blocks]] tables (see docs/ADMIN.md)")
    if errors:
        raise ConfigError("\n".join(errors))
    return Template(path, width, height, background, fonts,
                    tuple(b for b in blocks if b is not None))


_BLOCK_KEYS = frozenset({"kind", "x", "y", "w", "h", "text", "lang", "langs", "font", "size",
                         "colour", "align", "purpose", "columns", "icon", "line_height"})


def _block(i: int, raw: Any, fonts: Mapping[str, Path], languages: tuple[str, ...],
           error: Callable[[str, str], None]) -> Block | None:
    where = f"blocks[{i}]"
    if not isinstance(raw, dict):
        error(where, "must be a table")
        return None
    for key in sorted(set(raw) - _BLOCK_KEYS):
        error(f"{where}.{key}", f"is not a block setting: use {', '.join(sorted(_BLOCK_KEYS))}")
    kind = raw.get("kind")
    if kind not in KINDS:
        error(f"{where}.kind", f"= {kind!r}: choose {', '.join(KINDS)}")
        return None
    font = raw.get("font", "text")
    if kind in ("text", "pictograms", "lines") and font not in fonts:
        error(f"{where}.font", f"= {font!r} is not in [fonts]: add it there or name one of "
                               f"{', '.join(fonts)}")
    lang = raw.get("lang", "")
    langs = raw.get("langs", ["vi"])
    for code in [lang, *langs] if lang else langs:
        if code not in languages:
            error(f"{where}.lang", f"= {code!r} has no catalog: choose {', '.join(languages)}")
    if raw.get("align", "C") not in ("L", "C", "R"):
        error(f"{where}.align", '= must be "L", "C" or "R"')
    if raw.get("purpose", "") not in ("", "tips", "feedback"):
        error(f"{where}.purpose", '= must be "tips" or "feedback" (or left out: every box)')
    return Block(kind=kind, x=_number(raw, "x", 0.0, where, error),
                 y=_number(raw, "y", 0.0, where, error),
                 w=_number(raw, "w", 0.0, where, error), h=_number(raw, "h", 0.0, where, error),
                 text=str(raw.get("text", "")), lang=str(lang), langs=tuple(langs),
                 font=str(font), size=_number(raw, "size", 12.0, where, error),
                 colour=_colour(raw, "colour", "#000000", where, error),
                 align=str(raw.get("align", "C")), purpose=str(raw.get("purpose", "")),
                 columns=max(1, int(_number(raw, "columns", 4, where, error))),
                 icon=_number(raw, "icon", 12.0, where, error),
                 line_height=_number(raw, "line_height", 1.25, where, error))


def _number(table: Mapping[str, Any], key: str, default: float, where: str,
            error: Callable[[str, str], None]) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        error(f"{where}.{key}", f"= {value!r} must be a number of 0 or more (millimetres, "
                                f"points for size)")
        return default
    return float(value)


def _colour(table: Mapping[str, Any], key: str, default: str, where: str,
            error: Callable[[str, str], None]) -> str:
    value = table.get(key, default)
    if not isinstance(value, str) or not _COLOUR.match(value):
        error(f"{where}.{key}", f'= {value!r} must be a colour like "#0a5c2f"')
        return default
    return value


def extract_template(fileobj: Any, keywords: Any, comment_tags: Any,
                     options: Any) -> Iterator[tuple[int, str, str, list[str]]]:
    """Babel extractor (babel.cfg): the ``text`` of every block that has a ``lang``."""
    source = fileobj.read().decode("utf-8")
    for raw in tomllib.loads(source).get("blocks", []):
        if isinstance(raw, dict) and raw.get("lang") and raw.get("text"):
            line = source[:source.find(raw["text"])].count("\n") + 1
            yield line, "gettext", raw["text"], ["poster template"]


# -- drawing ---------------------------------------------------------------------------


def render_pdf(template: Template, poster: Poster, public_url: str) -> bytes:
    """The poster as a one-page PDF, scaled from the template's page to the poster's size."""
    import logging

    from fpdf import FPDF

    logging.getLogger("fpdf").setLevel(logging.ERROR)
    # fontTools names each table it cannot subset (Andika's Graphite tables): not news.
    logging.getLogger("fontTools.subset").setLevel(logging.ERROR)
    width, height = SIZES[poster.size]
    scale = width / template.width
    station, url = poster.station, form_url(public_url, poster.station, poster.placement)
    pdf = FPDF(unit="mm", format=(width, height))
    pdf.set_auto_page_break(False)
    pdf.set_margin(0)
    pdf.set_creator("mailbridge")
    pdf.set_title(unicodedata.normalize("NFC", station.name))
    pdf.set_lang("vi")
    for name, path in template.fonts.items():
        pdf.add_font(name, "", str(path))
    pdf.add_page()
    _fill(pdf, template.background, 0, 0, width, height)
    values = {"station": station.name, "hotline": station.hotline,
              "placement": poster.placement.label if poster.placement else "",
              "url": url.split("://", 1)[-1]}
    for block in template.blocks:
        if block.purpose and block.purpose != station.purpose:
            continue
        _draw(pdf, block, scale, station, url, values)
    return bytes(pdf.output())


def _draw(pdf: Any, block: Block, s: float, station: Station, url: str,
          values: Mapping[str, str]) -> None:
    x, y, w, h = block.x * s, block.y * s, block.w * s, block.h * s
    if block.kind == "box":
        _fill(pdf, block.colour, x, y, w, h)
    elif block.kind == "qr":
        _qr(pdf, url, x, y, w, block.colour)
    elif block.kind == "text":
        text = translations(block.lang).gettext(block.text) if block.lang else block.text
        _text(pdf, block, s, x, y, w, _fill_in(text, values, block))
    elif block.kind == "lines":
        lines = [line for lang in block.langs for line in extra_lines(station, lang)]
        if lines:
            _text(pdf, _fitted(pdf, block, s, w, h, "\n".join(lines)), s, x, y, w,
                  "\n".join(lines))
    else:
        _pictograms(pdf, block, s, station.categories, x, y, w, h, sms_numbers(station))


def _fitted(pdf: Any, block: Block, s: float, w: float, h: float, text: str) -> Block:
    """*block* at the largest size (half points down to 7) whose wrapped *text* fits its
    height ``h``; as it is when ``h`` is 0. Three lines or six take the same room."""
    size = block.size
    while h > 0 and size > 7:
        pdf.set_font(block.font, "", size * s)
        wrapped = pdf.multi_cell(w, size * s * _PT * block.line_height,
                                 unicodedata.normalize("NFC", text), dry_run=True,
                                 output="LINES")
        if len(wrapped) * size * s * _PT * block.line_height <= h:
            break
        size -= 0.5
    return replace(block, size=size)


def _fill_in(text: str, values: Mapping[str, str], block: Block) -> str:
    try:
        return text % values if "%(" in text else text
    except (KeyError, ValueError, TypeError) as exc:
        raise ConfigError(f"a poster text {block.text!r} has {exc}: use %(station)s, "
                          f"%(placement)s, %(url)s or %(hotline)s (and %% for a %)") from exc


def _rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def _fill(pdf: Any, colour: str, x: float, y: float, w: float, h: float) -> None:
    pdf.set_fill_color(*_rgb(colour))
    pdf.rect(x, y, w, h, style="F")


def _text(pdf: Any, block: Block, s: float, x: float, y: float, w: float, text: str) -> None:
    size = block.size * s
    pdf.set_font(block.font, "", size)
    pdf.set_text_color(*_rgb(block.colour))
    pdf.set_xy(x, y)
    pdf.multi_cell(w, size * _PT * block.line_height, unicodedata.normalize("NFC", text),
                   align=block.align)


def _qr(pdf: Any, url: str, x: float, y: float, size: float, colour: str) -> None:
    """Dark modules as filled runs on a white square with a four-module quiet zone."""
    matrix, _ = qr_matrix(url)
    module = size / (len(matrix) + 8)
    _fill(pdf, "#ffffff", x, y, size, size)
    pdf.set_fill_color(*_rgb(colour))
    for row, cells in enumerate(matrix):
        col = 0
        while col < len(cells):
            if not cells[col]:
                col += 1
                continue
            start = col
            while col < len(cells) and cells[col]:
                col += 1
            # A hair wider than the run, so no white seam shows between rows.
            pdf.rect(x + (start + 4) * module, y + (row + 4) * module,
                     (col - start) * module + 0.01, module + 0.01, style="F")


def _pictograms(pdf: Any, block: Block, s: float, categories: Iterable[Category],
                x: float, y: float, w: float, row_height: float,
                numbers: Mapping[str, str]) -> None:
    """The box's categories in a grid: the form's pictogram, its label in each language
    (the first after its SMS keyword, "1 Ma túy", when the station takes texts)."""
    cell = w / block.columns
    icon = block.icon * s
    for i, category in enumerate(categories):
        cx, cy = x + (i % block.columns) * cell, y + (i // block.columns) * row_height
        svg = svg_document(category.pictogram, block.colour).encode("utf-8")
        pdf.image(io.BytesIO(svg), x=cx + (cell - icon) / 2, y=cy, w=icon, h=icon)
        pdf.set_xy(cx, cy + icon + 1)
        for n, lang in enumerate(block.langs):
            size = block.size * s * (1 if n == 0 else 0.85)
            pdf.set_font(block.font, "", size)
            pdf.set_text_color(*_rgb(block.colour if n == 0 else "#444444"))
            pdf.set_x(cx)
            label = category_label(category, lang)
            if n == 0 and category.id in numbers:
                label = f"{numbers[category.id]} {label}"
            pdf.multi_cell(cell, size * _PT * block.line_height,
                           unicodedata.normalize("NFC", label), align="C")


def render_png(pdf: bytes, path: Path) -> None:
    """The PDF's page at 300 dpi, by pdfium: the PNG shows exactly what prints."""
    import pypdfium2 as pdfium

    document = pdfium.PdfDocument(pdf)
    try:
        page = document[0]
        image = page.render(scale=DPI / 72).to_pil()
        page.close()
    finally:
        document.close()
    image.save(path, dpi=(DPI, DPI))


# -- the command -----------------------------------------------------------------------


def plan(settings: Settings, *, station: str | None = None, placement: str | None = None,
         size: str | None = None) -> list[Poster]:
    """Every poster asked for: each station (or one), each placement (or one; a station
    without placements gets one for its own form), each size (or one)."""
    stations = list(settings.stations.values())
    if station is not None:
        found = settings.station(station)
        if found is None:
            raise ConfigError(f"--station {station}: no such station in {settings.path}; "
                              f"choose among {', '.join(settings.stations)}")
        stations = [found]
    sizes = [size] if size else list(SIZES)
    posters: list[Poster] = []
    for st in stations:
        places: list[Placement | None] = list(st.placements) or [None]
        if placement is not None:
            chosen = st.placement(placement.lower())
            if chosen is None:
                raise ConfigError(f"--placement {placement}: station {st.id} has no such "
                                  f"placement; choose among "
                                  f"{', '.join(p.id for p in st.placements) or 'none'}")
            places = [chosen]
        posters += [Poster(st, p, sz) for p in places for sz in sizes]
    return posters


def run_posters(settings: Settings, *, station: str | None = None,
                placement: str | None = None, size: str | None = None,
                out: Path | None = None, template: str = DEFAULT_TEMPLATE,
                stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr) -> int:
    """Write a PDF and a PNG per poster under *out* (``posters/`` beside the config) and
    print each file; a progress bar on a terminal when there are several."""
    from rich.console import Console
    from rich.progress import Progress

    posters = plan(settings, station=station, placement=placement, size=size)
    chosen = load_template(find_template(template, settings.path.parent),
                           settings.relay.languages)
    folder = out if out is not None else settings.path.parent / "posters"
    public_url = settings.relay.public_url
    console = Console(file=stderr)
    with Progress(console=console, transient=True,
                  disable=len(posters) < 2 or not console.is_terminal) as progress:
        task = progress.add_task("posters", total=len(posters))
        for poster in posters:
            target = folder / poster.station.id
            target.mkdir(parents=True, exist_ok=True)
            pdf = render_pdf(chosen, poster, public_url)
            (target / f"{poster.stem}.pdf").write_bytes(pdf)
            render_png(pdf, target / f"{poster.stem}.png")
            for suffix in (".pdf", ".png"):
                print(target / f"{poster.stem}{suffix}", file=stdout)
            progress.advance(task)
    _warn_large_codes(posters, public_url, stderr)
    return 0


def _warn_large_codes(posters: Iterable[Poster], public_url: str, stderr: TextIO) -> None:
    """A long address makes a denser code, harder to scan from afar: say so, once each."""
    seen: set[str] = set()
    for poster in posters:
        url = form_url(public_url, poster.station, poster.placement)
        if url in seen:
            continue
        seen.add(url)
        version = qr_matrix(url)[1]
        if version > 3:
            print(f"mailbridge: note: the QR code of {url} is version {version} (2-3 is the "
                  f"aim): a shorter relay.public_url or placement id makes it easier to scan",
                  file=stderr)
