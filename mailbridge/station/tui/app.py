"""The officers' desk: filter and search the tips, open one, move it along the workflow.

Thin screens, work in workers: every database query runs in a thread worker
and hands its result back with ``call_from_thread``; the list reload is
``exclusive`` so typing a search never queues stale queries behind it.
"""

from __future__ import annotations

import gc
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from rich.text import Text
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widget import Widget
from textual.widgets import Input, Select, Static
from textual.worker import get_current_worker

from ...config import Settings
from ...errors import ConfigError, LedgerError, MailbridgeError
from ..ledger import workflow
from ..ledger.models import Status, utcnow
from ..localtime import offset_label, parse_day
from . import strings as S
from .access import Access, resolve_access
from .data import (
    VERDICTS,
    Figures,
    TipDetail,
    TipFilter,
    TipRow,
    arrived_since,
    count_tips,
    figures,
    forged_count,
    load_detail,
    newest_tip,
    page_tips,
    placements_in_use,
    position_of,
    save_attachment,
)
from .detail import AttachmentAction, DetailScreen, hour
from .dialogs import ChoiceDialog, TextDialog
from .keybar import KeyBar
from .tiplist import PAGE, TipList


class LedgerApp(App[int]):
    CSS_PATH = "ledger.tcss"
    TITLE = S.TITLE
    ENABLE_COMMAND_PALETTE = False  # English words and commands officers do not need
    WATCH_SECONDS = 5.0  # how often the open list looks for new tips (one max(id) lookup)
    BINDINGS = [
        Binding("q", "quit", S.KEY_QUIT),
        Binding("slash", "focus_search", S.KEY_SEARCH),
        Binding("f", "focus_filters", S.KEY_FILTER),
        Binding("x", "reset_filters", S.KEY_RESET),
        Binding("r", "refresh", S.KEY_REFRESH),
        Binding("s", "status", S.KEY_STATUS),
        Binding("c", "category", S.KEY_CATEGORY),
        Binding("a", "assign", S.KEY_ASSIGN),
        Binding("n", "note", S.KEY_NOTE),
        Binding("t", "reply", S.KEY_REPLY),
        Binding("escape", "focus_list", S.KEY_LIST, show=False),
    ]

    def __init__(self, settings: Settings, access: Access,
                 sessions: sessionmaker[Session]) -> None:
        super().__init__()
        self.settings = settings
        self.access = access
        self.sessions = sessions
        self.filter = TipFilter(stations=access.stations, zone=settings.ledger.time_zone)
        self.placements: list[tuple[str, str]] = []  # (station, placement) of the tips
        self.opened: list[subprocess.Popen[bytes]] = []  # file openers, reaped when done
        self.baseline: int | None = None  # the newest tip id when the list was (re)opened
        self.newest = 0
        self.fresh = 0  # tips of these stations that arrived since
        self.filters_mounted = False  # the filter bar's mount has begun
        self.filters_ready = False  # ... and ended: its widgets and theirs are there
        self.sub_title = ", ".join(f"{sid}: {name}" for sid, name in access.actors.items())

    # ---- layout ---------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        # Textual's Header is four widgets and an icon for a palette the desk does not have.
        yield Static(Text.assemble((S.TITLE, "bold"), f" — {self.sub_title}"), id="title",
                     markup=False)
        # Two one-line rows of compact widgets: the list keeps its room from 80×24 up.
        # They are filled once the first page is on screen (``_mount_filters``): their
        # dozens of widgets cost the start a fifth of a second of styling.
        yield Horizontal(id="filters")
        yield Horizontal(id="filters2")
        yield Static(id="problem", markup=False)
        yield Static(id="columns", markup=False)
        yield TipList(self.render_row, id="tips")
        yield Static(Text(S.LOADING), id="count", markup=False)
        yield KeyBar()

    def _filter_rows(self) -> tuple[list[Widget], list[Widget]]:
        first: list[Widget] = [
            Select([(Text(S.status_label(s.value)), s.value) for s in Status],
                   prompt=S.ANY_STATUS, id="f-status", compact=True),
            Select([(Text(S.category_label(self.settings, c.id)), c.id)
                    for c in self.settings.categories], prompt=S.ANY_CATEGORY,
                   id="f-category", compact=True)]
        if len(self.access.stations) > 1:
            names = S.short_names({sid: self._station_name(sid)
                                   for sid in self.access.stations})
            first.append(Select([(Text(name), sid) for sid, name in names.items()],
                                prompt=S.ANY_STATION, id="f-station", compact=True))
        first += [Select([], prompt=S.ANY_PLACEMENT, id="f-placement", compact=True),
                  Select([(Text(S.ASSIGNED_TO_ME), "me"), (Text(S.NOBODY), "nobody"),
                          *((Text(name), f"o:{name}") for name in self._officers())],
                         prompt=S.ANY_ASSIGNEE, id="f-assignee", compact=True)]
        second: list[Widget] = [
            Input(placeholder=S.FROM_DATE, id="f-from", classes="date", compact=True),
            Input(placeholder=S.TO_DATE, id="f-to", classes="date", compact=True),
            Select([*((Text(S.status_label(v)), v) for v in VERDICTS),
                    (Text(S.VERDICT_NONE), "none")], prompt=S.ANY_VERDICT,
                   id="f-verdict", compact=True),
            Input(placeholder=S.SEARCH, id="f-text", compact=True)]
        return first, second

    async def _mount_filters(self) -> None:
        """The filter bar, once (after the first page, or at the first key that needs it)."""
        if self.filters_mounted:
            return
        self.filters_mounted = True
        if not gc.isenabled():  # off since run_ledger: start-up's objects live on, so
            gc.freeze()  # later collections need not walk them
            gc.enable()
        first, second = self._filter_rows()
        await self.query_one("#filters", Horizontal).mount_all(first)
        await self.query_one("#filters2", Horizontal).mount_all(second)
        self.filters_ready = True
        self._set_placements()

    def on_mount(self) -> None:
        self.query_one(TipList).focus()
        self.reload()  # the first page first; the rest of the start-up beside it
        self.startup(first=True)
        self.set_interval(self.WATCH_SECONDS, self.watch_new)

    def on_resize(self) -> None:
        self.call_after_refresh(self._header)

    def _header(self) -> None:
        tips = self.query_one(TipList)
        received = f"{S.COL_RECEIVED} ({offset_label(self.settings.ledger.time_zone)})"
        self.query_one("#columns", Static).update(
            Text(tips.header(tips.size.width, received=received)), layout=False)

    def _officers(self) -> list[str]:
        """Every officer of the stations on this desk, by name."""
        names: set[str] = set()
        for sid in self.access.stations:
            st = self.settings.station(sid)
            names.update(st.officers.values() if st else ())
        return sorted(names)

    def _assignees(self) -> tuple[str, ...] | None:
        value = self.query_one("#f-assignee", Select).value
        if value == "me":
            return tuple(sorted(set(self.access.actors.values())))
        if value == "nobody":
            return ("",)
        return (value[2:],) if isinstance(value, str) else None

    def _overdue(self, row: TipRow) -> bool:
        """Open, and no officer action for ``ledger.overdue_days``."""
        days = timedelta(days=self.settings.ledger.overdue_days)
        return (row.status in ("new", "verifying") and row.updated_at is not None
                and row.updated_at < utcnow() - days)

    def _station_name(self, sid: str) -> str:
        return S.station_label(self.settings, sid)

    def render_row(self, row: TipRow) -> list[str]:
        return [row.ref, hour(row.received_hour, self.settings.ledger.time_zone),
                S.category_label(self.settings, row.category),
                S.placement_label(self.settings, row.station_id, row.placement),
                (S.OVERDUE if self._overdue(row) else "") + S.status_label(row.status),
                row.assignee, (S.LIKELY_SPAM if row.likely_spam else "") + row.preview]

    # ---- workers --------------------------------------------------------------------

    def error(self, exc: Exception) -> None:
        """A refusal of the workflow in officers' words; anything else as it is."""
        words = (S.refusal(self.settings, exc.kind, exc.params)
                 if isinstance(exc, LedgerError) else None)
        self.notify(words or str(exc), severity="error", markup=False, timeout=10)
        if not self.filters_mounted:  # no first page: the bar all the same
            self.call_after_refresh(self._mount_filters)

    @work(thread=True, exclusive=True, group="startup")
    def startup(self, first: bool = False) -> None:
        """Apply pending mailbox signals, fill the placement filter, then (re)load the list:
        on the first start only if a signal changed a tip, the list being already there."""
        try:
            with self.sessions() as session:
                applied = workflow.apply_signals(
                    session, folder_status=self.settings.ledger.folder_status,
                    flag_status=self.settings.ledger.flag_status)
                placements = placements_in_use(session, self.access.stations)
                forged = forged_count(session, self.access.stations)
                newest = newest_tip(session)
        except MailbridgeError as exc:
            self.call_from_thread(self.error, exc)
            return
        if forged:
            self.call_from_thread(self.notify, S.FORGED.format(count=forged),
                                  severity="warning", markup=False, timeout=30)
        self.call_from_thread(self._set_placements, placements)
        self.call_from_thread(self._set_baseline, newest)
        if applied or not first:
            self.call_from_thread(self._reload_here)

    def _reload_here(self) -> None:
        row = self.query_one(TipList).current
        self.reload(keep_cursor=row is not None, follow=row.id if row else None)

    def _set_baseline(self, newest: int) -> None:
        """Tips above *newest* count as new from here on (r starts the count again)."""
        self.baseline = self.newest = newest
        self.fresh = 0
        self.query_one(TipList).new_after = newest

    @work(thread=True, exclusive=True, group="watch")
    def watch_new(self) -> None:
        """Every few seconds: has a tip arrived? If so, reload around the officer's tip."""
        baseline = self.baseline
        if baseline is None:
            return
        try:
            with self.sessions() as session:
                newest = newest_tip(session)
                if newest <= self.newest:
                    return
                fresh = arrived_since(session, self.access.stations, baseline)
        except MailbridgeError:
            return  # a busy ledger: the next look will do
        self.call_from_thread(self._arrived, newest, fresh)

    def _arrived(self, newest: int, fresh: int) -> None:
        self.newest = newest
        if fresh == self.fresh:
            return  # another station's tips
        self.fresh = fresh
        row = self.query_one(TipList).current
        self.reload(keep_cursor=True, follow=row.id if row else None)

    def _count_line(self, text: str) -> None:
        """The count line; tips arrived since the list opened come first, never cut."""
        new = S.NEW_TIPS.format(count=self.fresh) if self.fresh else ""
        # One line, always: no reflow of the screen for each of a search's three updates.
        self.query_one("#count", Static).update(Text(new + text), layout=False)

    def _set_placements(self, placements: list[tuple[str, str]] | None = None) -> None:
        """The placement choices of the chosen station (every station's, each named, when
        none is chosen): its configured posters, any other in use, and "unknown"."""
        if placements is not None:
            self.placements = placements
        chosen = self.filter.station
        found = set(self.placements)
        for sid in self.access.stations:
            st = self.settings.station(sid)
            found.update([(sid, ""), *((sid, p.id) for p in (st.placements if st else ()))])
        options = []
        for sid, pid in sorted(found, key=lambda k: (k[0], k[1] == "", k[1])):
            if chosen and sid != chosen:
                continue
            label = S.placement_label(self.settings, sid, pid)
            options.append((Text(label if chosen or len(self.access.stations) == 1
                                 else f"{sid.upper()} · {label}"), f"{sid}/{pid}"))
        if not self.filters_ready:  # a Select being mounted has no option list yet
            return  # _mount_filters fills it
        select = self.query_one("#f-placement", Select)
        keep = select.value if any(v == select.value for _, v in options) else select.BLANK
        select.set_options(options)
        if keep is not select.BLANK:
            select.value = keep

    @work(thread=True, exclusive=True, group="list")
    def reload(self, keep_cursor: bool = False, follow: int | None = None) -> None:
        """First page on screen first, then the count (slower on a broad search).

        After a change (``keep_cursor``) the count comes first, so the cursor can
        stay where the officer was, even past the first page; with ``follow`` it
        goes to that tip's new place (new tips arrive above it), or stays put
        when the tip left the filtered list.
        """
        f = self.filter
        worker = get_current_worker()
        try:
            with self.sessions() as session:
                first = page_tips(session, f, 0, PAGE)
                later = len(first) == PAGE and not keep_cursor
                total = len(first) if len(first) < PAGE or later else count_tips(session, f)
                at = position_of(session, f, follow) if follow is not None else None
                around = page_tips(session, f, at - at % PAGE, PAGE) if at else []
                if worker.is_cancelled:
                    return
                generation = self.call_from_thread(self._show, first, total, keep_cursor,
                                                   not later, at, around)
                if later:
                    if worker.is_cancelled:  # typing on: never count a stale search
                        return
                    total = count_tips(session, f)
                    if not worker.is_cancelled:
                        self.call_from_thread(self._show_total, generation, total)
                if worker.is_cancelled:
                    return
                counts = figures(session, f)
        except MailbridgeError as exc:
            self.call_from_thread(self.error, exc)
            return
        if not worker.is_cancelled:
            self.call_from_thread(self._show_figures, generation, counts)

    def _show_figures(self, generation: int, counts: Figures) -> None:
        """The count line with the report's figures for what the list shows."""
        if generation == self.query_one(TipList).generation:
            self._count_line(S.FIGURES.format(**asdict(counts),
                                              percent=counts.of_value_percent))

    def _show(self, first: list[TipRow], total: int, keep_cursor: bool, counted: bool,
              at: int | None = None, around: list[TipRow] | None = None) -> int:
        tips = self.query_one(TipList)
        generation = tips.reset(total, first, keep_cursor=keep_cursor, cursor=at,
                                counted=counted)
        if at is not None and around:
            tips.set_page(generation, at // PAGE, around)
        self._header()
        self._count_line(S.COUNT.format(shown=total) if counted else S.LOADING)
        if not self.filters_mounted:
            self.call_after_refresh(self._mount_filters)
        return generation

    def _show_total(self, generation: int, total: int) -> None:
        tips = self.query_one(TipList)
        tips.set_total(generation, total)
        if generation == tips.generation:
            self._count_line(S.COUNT.format(shown=total))

    @on(TipList.Widened)
    def _widened(self) -> None:
        self._header()

    @on(TipList.NeedPage)
    def _need_page(self, message: TipList.NeedPage) -> None:
        self.load_page(message.generation, message.page, self.filter)

    @work(thread=True, group="pages")
    def load_page(self, generation: int, page: int, f: TipFilter) -> None:
        try:
            with self.sessions() as session:
                rows = page_tips(session, f, page * PAGE, PAGE)
        except MailbridgeError as exc:
            self.call_from_thread(self.error, exc)
            return
        self.call_from_thread(self.query_one(TipList).set_page, generation, page, rows)

    def load_detail(self, tip_id: int) -> TipDetail | None:
        """Called from the detail screen's worker thread."""
        try:
            with self.sessions() as session:
                return load_detail(session, tip_id, self.settings.ledger.attachments_dir)
        except MailbridgeError as exc:
            self.call_from_thread(self.error, exc)
            return None

    # ---- filters --------------------------------------------------------------------

    @on(Select.Changed)
    @on(Input.Changed)
    def _filter_changed(self) -> None:
        def pick(wid: str) -> str | None:
            found = self.query(f"#{wid}")
            if not found:
                return None
            value = found.first(Select).value
            return value if isinstance(value, str) else None

        date_from, date_to = self._date("f-from"), self._date("f-to")
        bad = [box.value.strip() for box in self.query(".date.invalid").results(Input)]
        problem = self.query_one("#problem", Static)
        said = S.BAD_DATE.format(value=bad[0]) if bad else ""
        if bad or problem.has_class("shown"):  # a keystroke in the search costs no reflow
            problem.update(Text(said), layout=False)
            problem.set_class(bool(bad), "shown")
        new = TipFilter(stations=self.access.stations, zone=self.settings.ledger.time_zone,
                        status=pick("f-status"),
                        category=pick("f-category"), station=pick("f-station"),
                        placement=pick("f-placement"), verdict=pick("f-verdict"),
                        date_from=date_from, date_to=date_to, assignees=self._assignees(),
                        text=self.query_one("#f-text", Input).value)
        if new != self.filter:
            station_changed = new.station != self.filter.station
            self.filter = new
            if station_changed:
                self._set_placements()
            self.reload()

    def _date(self, wid: str) -> date | None:
        """A half-typed or wrong date marks its box, is said in one line above the list,
        and filters nothing (yet)."""
        box = self.query_one(f"#{wid}", Input)
        value = box.value.strip()
        box.set_class(False, "invalid")
        if not value:
            return None
        try:
            return parse_day(value)
        except ValueError:
            box.set_class(True, "invalid")
            return None

    @on(Input.Submitted, "#filters2 Input")
    def _filter_done(self) -> None:
        """Enter in a date or the search box: back to the list, filtered."""
        self.query_one(TipList).focus()

    def action_focus_list(self) -> None:
        """Escape leaves a filter or the search box for the list."""
        self.query_one(TipList).focus()

    async def action_focus_search(self) -> None:
        await self._mount_filters()
        self.query_one("#f-text", Input).focus()

    async def action_focus_filters(self) -> None:
        await self._mount_filters()
        self.query_one("#f-status", Select).focus()

    def action_reset_filters(self) -> None:
        for select in self.query(Select):
            select.clear()
        for box in self.query(Input):
            box.value = ""
        self.query_one(TipList).focus()

    def action_refresh(self) -> None:
        self.startup()

    # ---- opening a tip --------------------------------------------------------------

    @on(TipList.Selected)
    def _open(self, message: TipList.Selected) -> None:
        self.push_screen(DetailScreen(message.tip_id, self.settings, self.load_detail))

    def current(self) -> tuple[int, str, str, str] | None:
        """(id, station, ref, status) of the tip on screen or under the cursor."""
        if isinstance(self.screen, DetailScreen):
            d = self.screen.detail
            return (d.id, d.station_id, d.ref, d.status) if d else None
        row = self.query_one(TipList).current
        return (row.id, row.station_id, row.ref, row.status) if row else None

    # ---- workflow -------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("status", "category", "assign", "note"):
            return not isinstance(self.screen, ChoiceDialog | TextDialog)
        if action in ("focus_search", "focus_filters", "reset_filters", "focus_list"):
            return self.screen is self.screen_stack[0]  # the list's own keys
        return True

    def action_status(self) -> None:
        tip = self.current()
        if tip is None:
            return self.notify(S.NO_TIP, markup=False)
        tip_id, station, ref, status = tip
        allowed = workflow.allowed_statuses(status)
        choices = [(s.value, S.status_label(s.value)) for s in Status if s in allowed]
        if not choices:
            return self.notify(S.NO_STATUS_MOVE.format(ref=ref, status=S.status_label(status)),
                               markup=False)

        def done(result: tuple[str, str] | None) -> None:
            if result:
                self.write(tip_id, station, f"{ref} → {S.status_label(result[0])}",
                           lambda s, who: workflow.set_status(s, tip_id, result[0], actor=who,
                                                              reason=result[1]))

        dialog = ChoiceDialog(S.CHOOSE_STATUS.format(ref=ref), choices, reason=True,
                              reason_required=lambda new: workflow.needs_reason(status, new))
        self.push_screen(dialog, done)

    def action_category(self) -> None:
        tip = self.current()
        if tip is None:
            return self.notify(S.NO_TIP, markup=False)
        tip_id, station, ref, _ = tip
        box = self.settings.station(station)  # a feedback box's opinion takes its categories
        known = [c.id for c in (box.categories if box else self.settings.categories)]
        choices = [(c, S.category_label(self.settings, c)) for c in known]

        def done(result: tuple[str, str] | None) -> None:
            if result:
                self.write(tip_id, station, f"{ref}: {S.category_label(self.settings, result[0])}",
                           lambda s, who: workflow.set_category(
                               s, tip_id, result[0], actor=who, known=known, reason=result[1]))

        self.push_screen(ChoiceDialog(S.CHOOSE_CATEGORY.format(ref=ref), choices, reason=True),
                         done)

    def action_assign(self) -> None:
        tip = self.current()
        if tip is None:
            return self.notify(S.NO_TIP, markup=False)
        tip_id, station, ref, _ = tip
        st = self.settings.station(station)
        officers = sorted(set(st.officers.values())) if st else []
        choices = [("", S.NOBODY), *((o, o) for o in officers)]

        def done(result: tuple[str, str] | None) -> None:
            if result:
                self.write(tip_id, station, f"{ref} → {result[0] or S.NOBODY}",
                           lambda s, who: workflow.assign(s, tip_id, result[0], actor=who,
                                                          officers=officers))

        self.push_screen(ChoiceDialog(S.CHOOSE_ASSIGNEE.format(ref=ref), choices), done)

    def action_note(self) -> None:
        tip = self.current()
        if tip is None:
            return self.notify(S.NO_TIP, markup=False)
        tip_id, station, ref, _ = tip

        def done(text: str | None) -> None:
            if text:
                self.write(tip_id, station, f"{ref}: {S.KEY_NOTE}",
                           lambda s, who: workflow.add_note(s, tip_id, text, actor=who))

        self.push_screen(TextDialog(S.WRITE_NOTE.format(ref=ref), multiline=True), done)

    def action_reply(self) -> None:
        tip = self.current()
        if tip is None:
            return self.notify(S.NO_TIP, markup=False)
        tip_id, station, ref, _ = tip

        def done(text: str | None) -> None:
            if text and text.strip():
                self.send_reply(tip_id, station, ref, text)

        self.push_screen(TextDialog(S.WRITE_REPLY.format(ref=ref), multiline=True), done)

    @work(thread=True, group="write")
    def send_reply(self, tip_id: int, station_id: str, ref: str, text: str) -> None:
        """Answer the tipster from the station's own account (SMTP and IMAP: a thread)."""
        from ..reply import reply_to_tipster, target_of  # SMTP, IMAP, OAuth2: not at start

        station = self.settings.station(station_id)
        try:
            if station is None:
                raise ConfigError(f"station {station_id} is not in the config: add it back "
                                  f"to answer its tips from here")
            with self.sessions() as session:
                target = target_of(session, tip_id)
            reply_to_tipster(self.settings, station, target, text)
        except MailbridgeError as exc:
            self.call_from_thread(self.error, exc)
            return
        self.call_from_thread(self.notify, S.REPLY_SENT.format(ref=ref,
                                                               folder=station.sent_folder),
                              markup=False)

    @work(thread=True, group="write")
    def write(self, tip_id: int, station: str, what: str,
              change: Callable[[Session, str], Any]) -> None:
        """Run one workflow change and commit it (the audit row rides in the same commit);
        the list then reloads with the cursor on that tip, wherever it moved."""
        try:
            with self.sessions() as session:
                change(session, self.access.actor(station))
                workflow.commit(session)
        except MailbridgeError as exc:
            self.call_from_thread(self.error, exc)
            return
        self.call_from_thread(self._written, what, tip_id)

    def _written(self, what: str, tip_id: int) -> None:
        self.notify(S.DONE.format(what=what), markup=False)
        self.reload(keep_cursor=True, follow=tip_id)
        if isinstance(self.screen, DetailScreen):
            self.screen.reload()

    # ---- attachments ----------------------------------------------------------------

    @on(AttachmentAction)
    def _attachment(self, message: AttachmentAction) -> None:
        a = message.attachment
        if a.path is None:  # not the relay's: an officer's reply keeps its files in the mailbox
            return self.error(LedgerError(S.NOT_KEPT.format(name=a.filename)))
        if not a.path.is_file():
            return self.error(LedgerError(S.NO_FILE.format(path=a.path)))
        path = a.path
        if not message.save:
            opener = shutil.which("xdg-open")
            if opener is None:
                return self.notify(S.NO_OPENER, severity="warning", markup=False)
            self.opened = [p for p in self.opened if p.poll() is None]
            self.opened.append(subprocess.Popen(  # noqa: S603
                [opener, str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True))
            return self.notify(S.OPENING.format(name=a.filename), markup=False)

        def done(folder: str | None) -> None:
            if folder:
                self.save(path, Path(folder).expanduser(), a.filename)

        self.push_screen(TextDialog(S.SAVE_TO.format(name=a.filename), str(Path.home())), done)

    @work(thread=True, group="write")
    def save(self, src: Path, folder: Path, filename: str) -> None:
        try:
            target = save_attachment(src, folder, filename)
        except MailbridgeError as exc:
            self.call_from_thread(self.error, exc)
            return
        self.call_from_thread(self.notify, S.SAVED.format(path=target), markup=False)


def open_ledger(settings: Settings, *, officer: str | None = None, station: str | None = None,
                user: str | None = None) -> tuple[LedgerApp, Engine]:
    """Build the app on the configured ledger (the caller disposes of the engine); a
    missing SQLite ledger is an error, never an empty new one."""
    from ..ledger.db import make_engine, session_factory

    access = resolve_access(settings, officer=officer, station=station, user=user)
    engine = make_engine(settings.ledger.database)
    return LedgerApp(settings, access, session_factory(engine)), engine


def main(settings: Settings, *, officer: str | None = None, station: str | None = None) -> int:
    try:
        app, engine = open_ledger(settings, officer=officer, station=station)
    except MailbridgeError as exc:
        print(f"mailbridge ledger: {exc}", file=sys.stderr)
        return exc.exit_code
    try:
        app.run()
    finally:
        engine.dispose()
    return app.return_code or 0
