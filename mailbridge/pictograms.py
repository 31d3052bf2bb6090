"""The category pictograms: one drawing each, for the form and the posters.

The form inlines them as SVG (no request, no font, no JavaScript; the stylesheet
strokes them) and the posters draw the same shapes with fpdf2's SVG reader, so a
villager finds on the phone the picture the poster showed. Each is a 24x24 stroked
outline; an unknown name draws "other" (a speech bubble).
"""

from __future__ import annotations

from collections.abc import Mapping

from markupsafe import Markup

SHAPES: Mapping[str, str] = {
    "drugs": '<path d="M4 14l7-7a3.5 3.5 0 0 1 5 5l-7 7a3.5 3.5 0 0 1-5-5zM7.5 10.5l5 5"/>'
             '<circle cx="18.5" cy="18.5" r="2.5"/>',
    "smuggling": '<path d="M2 8l7-4 7 4v8l-7 4-7-4zM2 8l7 4 7-4M9 12v8M17 12h5m-2-2 2 2-2 2"/>',
    "border": '<path d="M12 2v3m0 3v3m0 3v3m0 3v3M2 12h17m-3-3 3 3-3 3"/>',
    "residence": '<path d="M3 11l9-7 9 7M5 9.5V20h14V9.5M10 13.5a2 2 0 1 1 2.6 1.9c-.4.2-.6.5-.6 1'
                 'M12 18.2v.1"/>',
    "theft": '<path d="M4 9h12l-1.3 11H5.3zM7 9V7a3 3 0 0 1 6 0v2M15 13l6-6m-4 0h4v4"/>',
    "guns": '<path d="M2 7h20v4H2zM5 11l-1.5 8h4L9 14h3v-3M9 11v3"/>',
    "trafficking": '<circle cx="8" cy="7" r="3"/><circle cx="16" cy="7" r="3"/>'
                   '<path d="M2 20c0-4 2.7-6 6-6s6 2 6 6m-4 0c0-4 2.7-6 6-6s6 2 6 6"/>',
    # A feedback box's: a steaming bowl, a target, a banknote, a shield, a star, a bulb.
    "living": '<path d="M3 12h18a9 7 0 0 1-18 0zM8 9c0-2 1.5-2 1.5-4M12 9c0-2 1.5-2 1.5-4'
              'M16 9c0-2 1.5-2 1.5-4"/>',
    "training": '<circle cx="12" cy="12" r="9"/><circle cx="12" cy="12" r="5"/>'
                '<path d="M12 12h.1"/>',
    "entitlements": '<path d="M2 7h20v10H2zM5 10v4M19 10v4"/><circle cx="12" cy="12" r="2.5"/>',
    "discipline": '<path d="M12 3l8 3v6c0 5-3.5 8-8 9-4.5-1-8-4-8-9V6zM8.5 12l2.5 2.5 4.5-5"/>',
    "leadership": '<path d="M12 3l2.7 5.6 6.1.9-4.4 4.3 1 6.1L12 17l-5.4 2.9 1-6.1-4.4-4.3'
                  ' 6.1-.9z"/>',
    "ideas": '<path d="M9 18h6M10 21h4M12 3a6 6 0 0 0-3.5 10.9c.6.5 1 1.2 1 2.1h5c0-.9.4-1.6'
             ' 1-2.1A6 6 0 0 0 12 3z"/>',
    "other": '<path d="M3 4h18v12H10l-5 4v-4H3zM8 10h.1M12 10h.1M16 10h.1"/>',
}


def shape(name: str) -> Markup:
    """The inner SVG of *name* for the form's ``<svg viewBox="0 0 24 24">``."""
    return Markup(SHAPES.get(name, SHAPES["other"]))  # noqa: S704 (our own constant)


def svg_document(name: str, colour: str, stroke_width: float = 1.7) -> str:
    """A standalone SVG of *name* stroked in *colour*, as the form's stylesheet draws it."""
    return ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="24" '
            f'height="24" fill="none" stroke="{colour}" stroke-width="{stroke_width}" '
            f'stroke-linecap="round" stroke-linejoin="round">{shape(name)}</svg>')
