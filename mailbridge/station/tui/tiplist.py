"""A virtual list of tips: only the rows on screen exist, fetched a page at a time.

The widget knows the row count and a cache of pages; when a line that is not
cached scrolls into view it posts ``NeedPage`` and shows a placeholder until
the app hands the page back with ``set_page``. Every cell is a plain rich
``Text`` cut to its column, so a tip's words can never become markup or an
escape sequence on the screen.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from textual import events
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from ...core.text import one_line
from . import strings as S
from .data import TipRow

PAGE = 100


@dataclass(frozen=True)
class Column:
    title: str
    width: int  # 0: takes the rest of the line


COLUMNS = (
    Column(S.COL_REF, 10), Column(S.COL_RECEIVED, 15), Column(S.COL_CATEGORY, 20),
    Column(S.COL_PLACEMENT, 14), Column(S.COL_STATUS, 17), Column(S.COL_ASSIGNEE, 14),
    Column(S.COL_PREVIEW, 0),
)


# On a narrow screen these columns go first (in this order), so the tipster's words keep
# at least PREVIEW_MIN cells: the assignee, then the placement (both are in the tip).
NARROW_DROPS = (S.COL_ASSIGNEE, S.COL_PLACEMENT)
PREVIEW_MIN = 24
REF_WIDTH = COLUMNS[0].width  # at least; wider when a ref needs it (NCS-100000)


def columns_for(width: int, ref_width: int = REF_WIDTH) -> tuple[Column, ...]:
    """The columns a line of *width* cells shows, the ref's *ref_width* wide (never cut)."""
    columns: tuple[Column, ...] = (Column(S.COL_REF, ref_width), *COLUMNS[1:])
    for title in NARROW_DROPS:
        if sum(c.width for c in columns) + PREVIEW_MIN <= width:
            break
        columns = tuple(c for c in columns if c.title != title)
    return columns


def fit(cells: Sequence[str], width: int, ref_width: int = REF_WIDTH) -> list[str]:
    """Cut or pad each cell to its column; the last column takes what is left."""
    out: list[str] = []
    used = 0
    shown = {c.title: c for c in columns_for(width, ref_width)}
    for title, cell in zip((c.title for c in COLUMNS), cells, strict=True):
        col = shown.get(title)
        if col is None:
            continue
        size = col.width or max(width - used, 0)
        text = one_line(cell)
        if cell_len(text) > size - 1:
            text = set_cell_size(text, max(size - 2, 0)) + "…"
        out.append(set_cell_size(text, size - 1) + " " if size else "")
        used += size
    return out


class TipList(ScrollView, can_focus=True):
    """Newest first; Enter opens the highlighted tip."""

    BINDINGS = [
        Binding("up", "cursor(-1)", show=False),
        Binding("down", "cursor(1)", show=False),
        Binding("pageup", "page(-1)", show=False),
        Binding("pagedown", "page(1)", show=False),
        Binding("home", "jump(0)", show=False),
        Binding("end", "jump(-1)", show=False),
        Binding("enter", "select", S.KEY_OPEN),
    ]
    COMPONENT_CLASSES = {"tiplist--cursor", "tiplist--loading", "tiplist--new"}
    DEFAULT_CSS = """
    TipList { height: 1fr; overflow-x: hidden; }
    TipList > .tiplist--cursor { background: $accent; color: $text; text-style: bold; }
    TipList > .tiplist--loading { color: $text-muted; }
    TipList > .tiplist--new { color: $success; text-style: bold; }
    """

    cursor: reactive[int] = reactive(0)

    class NeedPage(Message):
        """The rows of page *page* (of generation *generation*) are needed on screen."""

        def __init__(self, generation: int, page: int) -> None:
            super().__init__()
            self.generation = generation
            self.page = page

    class Widened(Message):
        """The ref column grew: the app redraws the column titles."""

    class Selected(Message):
        def __init__(self, tip_id: int) -> None:
            super().__init__()
            self.tip_id = tip_id

    def __init__(self, render_row: Callable[[TipRow], Sequence[str]], *,
                 id: str | None = None) -> None:
        super().__init__(id=id)
        self.render_row = render_row
        self.total = 0
        self.generation = 0
        self.pages: dict[int, list[TipRow]] = {}
        self.pending: set[int] = set()
        self.new_after: int | None = None  # tips above this id arrived while the list was open
        self.ref_width = REF_WIDTH
        self._texts: dict[tuple[TipRow, int, int], str] = {}  # a row's line, this result set

    # ---- data from the app ----------------------------------------------------------

    def reset(self, total: int, first_page: list[TipRow], *, keep_cursor: bool = False,
              cursor: int | None = None, counted: bool = True) -> int:
        """A new result set; returns its generation (stale pages are dropped). The cursor
        goes to *cursor*, else stays (``keep_cursor``) or goes to the top.

        Before the count (``counted`` false, *total* the first page's length) a scrolling
        list keeps its height until ``set_total``: a new height reflows the whole screen,
        and the first page would wait for that."""
        self.generation += 1
        self.total = total
        self.pages = {0: first_page}
        self._texts.clear()
        self._fit_refs(first_page)
        self.pending = set()
        height = self.size.height
        if counted or min(total, self.virtual_size.height) < height:
            self.virtual_size = Size(self.size.width, total)
        if cursor is None:
            cursor = min(self.cursor, max(total - 1, 0)) if keep_cursor else 0
        if not keep_cursor:
            self.scroll_to(y=0, animate=False)
        self.cursor = cursor
        self.refresh()
        return self.generation

    def set_total(self, generation: int, total: int) -> None:
        """The full count, which may arrive after the first page."""
        if generation == self.generation and total != self.total:
            self.total = total
            self.refresh()
        if generation == self.generation and total != self.virtual_size.height:
            self.virtual_size = Size(self.size.width, total)

    def set_page(self, generation: int, page: int, rows: list[TipRow]) -> None:
        if generation != self.generation:
            return
        self.pages[page] = rows
        self._fit_refs(rows)
        self.pending.discard(page)
        self.refresh()

    def _fit_refs(self, rows: list[TipRow]) -> None:
        """Widen the ref column for the longest ref seen (it only grows: rows stay put)."""
        longest = max((cell_len(r.ref) for r in rows), default=0) + 1
        if longest > self.ref_width:
            self.ref_width = longest
            self.post_message(self.Widened())

    def row(self, index: int) -> TipRow | None:
        rows = self.pages.get(index // PAGE)
        if rows is None or index % PAGE >= len(rows):
            return None
        return rows[index % PAGE]

    @property
    def current(self) -> TipRow | None:
        return self.row(self.cursor) if self.total else None

    # ---- rendering ------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        index = self.scroll_offset.y + y
        base = self.rich_style
        if index >= self.total:
            return Strip.blank(width, base)
        row = self.row(index)
        if row is None:
            self._need(index // PAGE)
            style = base + self.get_component_rich_style("tiplist--loading")
            return Strip([Segment(set_cell_size(S.LOADING, width), style)])
        style = base
        if self.new_after is not None and row.id > self.new_after:
            style = base + self.get_component_rich_style("tiplist--new")
        if index == self.cursor:
            style = base + self.get_component_rich_style("tiplist--cursor")
        key = (row, width, self.ref_width)
        text = self._texts.get(key)
        if text is None:  # each row's cells are fitted once, not at every repaint
            if len(self._texts) > 4 * PAGE:  # scrolled far: keep only what is near
                self._texts.clear()
            text = self._texts[key] = "".join(fit(self.render_row(row), width, self.ref_width))
        return Strip([Segment(text, style)]).crop_extend(0, width, base)

    def _need(self, page: int) -> None:
        if page not in self.pending:
            self.pending.add(page)
            # Created in the widget's own turn: a message made while the screen
            # renders counts the screen as its sender and never reaches the app.
            self.call_later(self._post_need, self.generation, page)

    def _post_need(self, generation: int, page: int) -> None:
        self.post_message(self.NeedPage(generation, page))

    def header(self, width: int, *, received: str = S.COL_RECEIVED) -> str:
        """The column titles; *received* names the time column (with its zone)."""
        return "".join(fit([received if c.title == S.COL_RECEIVED else c.title
                            for c in COLUMNS], width, self.ref_width))

    # ---- cursor ---------------------------------------------------------------------

    def watch_cursor(self, old: int, new: int) -> None:
        self.refresh(Region(0, old - self.scroll_offset.y, self.size.width, 1))
        self.refresh(Region(0, new - self.scroll_offset.y, self.size.width, 1))
        self.scroll_to_region(Region(0, new, 1, 1), animate=False, immediate=True)

    def _move(self, index: int) -> None:
        if self.total:
            self.cursor = max(0, min(index, self.total - 1))

    def action_cursor(self, delta: int) -> None:
        self._move(self.cursor + delta)

    def action_page(self, direction: int) -> None:
        self._move(self.cursor + direction * max(self.size.height - 1, 1))

    def action_jump(self, where: int) -> None:
        self._move(where if where >= 0 else self.total - 1)

    def action_select(self) -> None:
        row = self.current
        if row is not None:
            self.post_message(self.Selected(row.id))

    def on_click(self, event: events.Click) -> None:
        self._move(self.scroll_offset.y + event.y)
        if event.chain == 2:
            self.action_select()

    def on_resize(self, _event: events.Resize) -> None:
        self.virtual_size = Size(self.size.width, self.total)
