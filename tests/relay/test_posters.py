"""``mailbridge posters`` on the demo's config: every QR scans (zbar) and the PDF is text."""

from __future__ import annotations

import subprocess
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image
from pypdf import PdfReader
from pyzbar.pyzbar import ZBarSymbol, decode

from mailbridge.config import Settings, load_config
from mailbridge.demo import write_demo_config
from mailbridge.errors import ConfigError
from mailbridge.fonts import andika
from mailbridge.labels import category_label, translations
from mailbridge.relay.posters import (
    HOTLINE,
    Poster,
    find_template,
    form_url,
    load_template,
    plan,
    qr_matrix,
    render_pdf,
)

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Rendered:
    settings: Settings
    posters: list[Poster]
    printed: list[str]
    folder: Path


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Rendered:
    """Every poster of the demo, by the real command with no --out."""
    config = write_demo_config(tmp_path_factory.mktemp("posters") / "demo", 8080)
    settings = load_config(config)
    done = subprocess.run([sys.executable, "-m", "mailbridge", "--config", str(config),
                           "posters"], capture_output=True, text=True, cwd=ROOT,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == ""  # no font warnings, no note: the demo's codes are small
    return Rendered(settings, plan(settings), done.stdout.splitlines(),
                    config.parent / "posters")


def scanned(png: Path, divisor: int) -> list[str]:
    with Image.open(png) as image:
        image.load()
        small = image.resize((image.width // divisor, image.height // divisor),
                             Image.Resampling.LANCZOS)
    return [s.data.decode("ascii") for s in decode(small, symbols=[ZBarSymbol.QRCODE])]


def test_the_demo_has_a_box_of_each_purpose(rendered: Rendered) -> None:
    purposes = {s.purpose for s in rendered.settings.stations.values()}
    assert purposes == {"tips", "feedback"}


def test_it_writes_a_pdf_and_a_png_per_placement_and_size_beside_the_config(
        rendered: Rendered) -> None:
    expected = [str(rendered.folder / p.station.id / f"{p.stem}{suffix}")
                for p in rendered.posters for suffix in (".pdf", ".png")]
    assert rendered.printed == expected
    places = sum(len(s.placements) for s in rendered.settings.stations.values())
    assert len(rendered.posters) == places * 2  # A4 and A5
    assert all(Path(p).stat().st_size > 0 for p in expected)
    with Image.open(rendered.folder / "ncs" / "cho-A4.png") as a4:
        assert a4.size == (2481, 3508)  # 210 x 297 mm at 300 dpi
        dpi = a4.info["dpi"]
    assert round(dpi[0]) == round(dpi[1]) == 300


def test_every_code_scans_at_full_and_at_a_quarter_of_the_resolution(
        rendered: Rendered) -> None:
    for poster in rendered.posters:
        url = form_url(rendered.settings.relay.public_url, poster.station, poster.placement)
        png = rendered.folder / poster.station.id / f"{poster.stem}.png"
        for divisor in (1, 4):
            found = scanned(png, divisor)
            assert found == [url.upper()], (png, divisor)
            assert found[0].lower() == url.lower()


def test_codes_are_alphanumeric_at_version_2_or_3(rendered: Rendered) -> None:
    import qrcode
    from qrcode.util import MODE_ALPHA_NUM

    for poster in rendered.posters:
        url = form_url(rendered.settings.relay.public_url, poster.station, poster.placement)
        assert qr_matrix(url)[1] in (2, 3), url
        code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_Q)
        code.add_data(url.upper())
        code.make(fit=True)
        assert [chunk.mode for chunk in code.data_list] == [MODE_ALPHA_NUM]


def test_the_pdf_is_searchable_text_with_the_station_name(rendered: Rendered) -> None:
    for poster in rendered.posters:
        reader = PdfReader(rendered.folder / poster.station.id / f"{poster.stem}.pdf")
        assert len(reader.pages) == 1
        text = unicodedata.normalize("NFC", reader.pages[0].extract_text())
        assert poster.station.name in text  # "Đồn Biên phòng Nậm Cha (demo)", diacritics
        assert poster.placement is not None and poster.placement.label in text
        url = form_url(rendered.settings.relay.public_url, poster.station, poster.placement)
        assert url.split("://")[1] in text
        for category in poster.station.categories:
            assert category_label(category, "vi") in text
            assert category_label(category, "hmn").split()[0] in text


def test_each_purpose_has_its_own_words(rendered: Rendered) -> None:
    def words(station: str, stem: str) -> str:
        pdf = PdfReader(rendered.folder / station / f"{stem}.pdf")
        return " ".join(unicodedata.normalize("NFC", pdf.pages[0].extract_text()).split())

    tips, feedback = words("ncs", "cho-A4"), words("gy", "nha-an-A5")
    assert "Gửi tin báo" in tips and "Hòm thư góp ý" not in tips
    assert "Hòm thư góp ý" in feedback and "Gửi tin báo" not in feedback
    assert "Đời sống, ăn ở" in feedback and "Ma túy" not in feedback
    assert "nhà mạng vẫn biết" in tips and "nhà mạng vẫn biết" in feedback  # the honest line


def test_the_hotline_is_an_extra_line_in_each_language(rendered: Rendered) -> None:
    settings = rendered.settings
    station = settings.stations["ncs"]
    template = load_template(find_template("default", settings.path.parent),
                             settings.relay.languages)
    import dataclasses

    with_line = dataclasses.replace(station, hotline="0213 3888 999")
    pdf = render_pdf(template, Poster(with_line, station.placements[0], "A4"),
                     settings.relay.public_url)
    path = rendered.folder / "hotline.pdf"
    path.write_bytes(pdf)
    text = unicodedata.normalize("NFC", PdfReader(path).pages[0].extract_text())
    for lang in ("vi", "hmn"):
        line = translations(lang).gettext(HOTLINE) % {"phone": "0213 3888 999"}
        assert line in text.replace("\n", " ")


def test_template_mistakes_are_one_line_each_naming_the_key(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text('[page]\nwidth = "wide"\n[[blocks]]\nkind = "circle"\n'
                      '[[blocks]]\nkind = "text"\nfont = "gothic"\nlang = "fr"\n'
                      'colour = "green"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_template(broken, ("vi", "hmn", "en"))
    lines = str(caught.value).splitlines()
    assert [line.split(" ")[0] for line in lines] == [
        "page.width", "blocks[0].kind", "blocks[1].font", "blocks[1].lang", "blocks[1].colour"]
    assert all(line.endswith(f"(poster template {broken})") for line in lines)


def test_andika_is_used_where_installed_else_dejavu(tmp_path: Path) -> None:
    assert andika(folder=tmp_path) is None  # not installed there: the caller takes DejaVu
    installed = andika()
    if installed is not None:
        assert installed.name == "Andika-Regular.ttf"


def test_unknown_station_or_placement_is_one_line(rendered: Rendered) -> None:
    with pytest.raises(ConfigError, match=r"--station xyz: no such station"):
        plan(rendered.settings, station="xyz")
    with pytest.raises(ConfigError, match=r"--placement nope: station ncs has no such"):
        plan(rendered.settings, station="ncs", placement="nope")
    assert [p.stem for p in plan(rendered.settings, station="ncs", placement="cho",
                                 size="A5")] == ["cho-A5"]


def test_an_admin_copies_a_template_beside_the_config_and_changes_it(
        rendered: Rendered, tmp_path: Path) -> None:
    import io

    from mailbridge.relay.posters import TEMPLATE_DIR, run_posters

    mine = rendered.settings.path.parent / "poster_templates" / "cho-phien.toml"
    mine.parent.mkdir(exist_ok=True)
    text = (TEMPLATE_DIR / "default.toml").read_text(encoding="utf-8")
    mine.write_text(text.replace('"#0a5c2f"', '"#8b0000"') + '\n[[blocks]]\nkind = "text"\n'
                    'x = 10\ny = 2\nw = 190\nsize = 9\ncolour = "#ffffff"\n'
                    'text = "Phiên chợ thứ bảy"\n', encoding="utf-8")
    out = io.StringIO()
    assert run_posters(rendered.settings, station="ncs", placement="cho", size="A5",
                       out=tmp_path, template="cho-phien", stdout=out) == 0
    assert out.getvalue().splitlines() == [str(tmp_path / "ncs" / "cho-A5.pdf"),
                                           str(tmp_path / "ncs" / "cho-A5.png")]
    page = PdfReader(tmp_path / "ncs" / "cho-A5.pdf").pages[0]
    assert "Phiên chợ thứ bảy" in unicodedata.normalize("NFC", page.extract_text())
    with Image.open(tmp_path / "ncs" / "cho-A5.png") as png:
        assert png.convert("RGB").getpixel((5, 5)) == (0x8b, 0, 0)  # the band's new colour
    assert scanned(tmp_path / "ncs" / "cho-A5.png", 4) == [
        form_url(rendered.settings.relay.public_url, rendered.settings.stations["ncs"],
                 rendered.settings.stations["ncs"].placements[0]).upper()]
