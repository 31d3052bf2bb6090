"""Font files for what mailbridge prints: one place for the charts, the briefing, the case
file and the posters.

DejaVu Sans comes from matplotlib's own files (a locked dependency), so Vietnamese never
depends on the system's fonts: a missing font drew boxes. Andika (SIL, made for new
readers: a single-storey a, clear letters and Vietnamese diacritics; SIL Open Font
License 1.1, Debian's fonts-sil-andika) is used for posters where it is installed.
"""

from __future__ import annotations

from pathlib import Path

ANDIKA_DIR = Path("/usr/share/fonts/truetype/andika")


def dejavu(*, bold: bool = False) -> Path:
    """DejaVu Sans (or its bold) from matplotlib's data folder."""
    import matplotlib

    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name


def andika(*, bold: bool = False, folder: Path = ANDIKA_DIR) -> Path | None:
    """Andika's file where fonts-sil-andika is installed, else None."""
    path = folder / ("Andika-Bold.ttf" if bold else "Andika-Regular.ttf")
    return path if path.is_file() else None
