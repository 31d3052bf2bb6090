"""One tip in full: thread, attachments, mailbox signals, notes and history.

Everything from the mailbox is built into rich ``Text`` objects (never markup
strings), after ``core.text`` cleaning, so a tip cannot style or drive the screen.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from ...config import Settings
from ...core.text import one_line
from ..localtime import local, show_hour
from . import strings as S
from .data import AttachmentInfo, HistoryItem, TipDetail
from .keybar import KeyBar


def when(at: datetime | None, zone_name: str) -> str:
    """An officer's action, to the minute, on the station's clock."""
    return local(at, zone_name).strftime("%Y-%m-%d %H:%M") if at else "—"


def hour(at: datetime | None, zone_name: str) -> str:
    """Anything the tipster did: to the hour only, on the station's clock."""
    return show_hour(at, zone_name)


def size(n: int) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1024:
            return f"{n} {unit}"
        n //= 1024
    return f"{n} GB"


def heading(title: str) -> Text:
    return Text(f"\n{title}", style="bold underline")


def summary(d: TipDetail, settings: Settings) -> Text:
    text = Text()
    text.append(f"{d.ref}", style="bold")
    zone_name = settings.ledger.time_zone
    text.append(f"  {S.station_label(settings, d.station_id)}  "
                f"{hour(d.received_hour, zone_name)}\n")
    text.append(f"{S.COL_CATEGORY}: {S.category_label(settings, d.category)}")
    if d.received_category != d.category:
        text.append(f"  ({S.RECEIVED_CATEGORY}: "
                    f"{S.category_label(settings, d.received_category)})")
    text.append(f"\n{S.COL_PLACEMENT}: "
                f"{S.placement_label(settings, d.station_id, d.placement)}\n")
    text.append(f"{S.COL_STATUS}: ")
    text.append(S.status_label(d.status), style="bold")
    if d.status_reason:
        text.append(f"  ({S.REASON}: {S.reason_label(one_line(d.status_reason, max_length=200))})")
    text.append(f"\n{S.COL_ASSIGNEE}: {d.assignee or S.NOBODY}")
    if d.likely_spam:
        text.append(f"\n{S.LIKELY_SPAM_DETAIL}", style="bold")
    return text


def thread_text(d: TipDetail, zone_name: str) -> Text:
    text = Text()
    for item in d.thread:
        kind = S.KIND.get(item.kind, item.kind)
        text.append(f"── {kind} · {hour(item.received_hour, zone_name)}", style="bold")
        if item.kind == "reply" and item.sender:
            text.append(f" · {item.sender}")
        text.append(f"\n{item.subject}\n", style="italic")
        text.append(item.body + "\n")
        if item.hidden_chars:
            text.append(S.TRUNCATED.format(more=item.hidden_chars) + "\n", style="dim")
        text.append("\n")
    return text


def history_text(items: list[HistoryItem], settings: Settings, *, notes: bool = False) -> Text:
    """Notes, or the audit: statuses and categories by their labels, never their ids."""
    zone_name = settings.ledger.time_zone
    label: dict[str, Callable[[str], str]] = {
        "status": S.status_label, "category": lambda c: S.category_label(settings, c)}
    text = Text("" if items else "—")
    for h in items:
        text.append(f"{when(h.at, zone_name)}  ", style="dim")
        if notes:
            text.append(f"{h.who}: ", style="bold")
            text.append(h.new + "\n")
            continue
        who = S.actor_label(h.who) if h.who else S.ACTION["signal"]
        text.append(f"{who}  {S.ACTION.get(h.action, h.action)}: ")
        name = label.get(h.action, str)
        old, new = (name(h.old) if h.old else "", name(h.new))
        text.append(f"{one_line(old)} → {one_line(new)}" if old else one_line(new))
        if h.reason:
            text.append(f"  ({S.reason_label(one_line(h.reason, max_length=200))})",
                        style="italic")
        text.append("\n")
    return text


def signals_text(d: TipDetail) -> Text:
    """Where each message of the thread lies in the mailbox and its flags, in words."""
    return Text("\n".join(f"{S.KIND.get(kind, kind)} · {S.folder_label(folder)}: "
                          f"{S.flags_label(flags)}" for kind, folder, flags in d.signals) or "—")


def attachment_option(a: AttachmentInfo) -> Option:
    return Option(Text(f"{a.filename}  ({a.content_type}, {size(a.size)})"), id=f"a{a.id}")


class AttachmentAction(Message):
    """Open or save one attachment (handled by the app, which knows the folders)."""

    def __init__(self, attachment: AttachmentInfo, *, save: bool) -> None:
        super().__init__()
        self.attachment = attachment
        self.save = save


class DetailScreen(Screen[None]):
    """Escape (or q) goes back to the list; the workflow keys are the app's."""

    BINDINGS = [
        Binding("escape", "back", S.KEY_BACK),
        Binding("q", "back", S.KEY_BACK, show=False),  # q leaves the tip, never the program
        Binding("o", "open_file", S.KEY_OPEN_FILE),
        Binding("w", "save_file", S.KEY_SAVE),
    ]

    def __init__(self, tip_id: int, settings: Settings,
                 load: Callable[[int], TipDetail | None]) -> None:
        super().__init__()
        self.tip_id = tip_id
        self.settings = settings
        self.load = load
        self.detail: TipDetail | None = None

    def compose(self) -> ComposeResult:
        yield Static(Text(S.LOADING), id="summary", markup=False)
        with VerticalScroll(id="detail-body"):
            yield Static(heading(S.THREAD), markup=False)
            yield Static(Text(""), id="thread", markup=False)
            yield Static(heading(S.ATTACHMENTS), markup=False)
            yield OptionList(id="attachments")
            yield Static(heading(S.SIGNALS), markup=False)
            yield Static(Text(""), id="signals", markup=False)
            yield Static(heading(S.NOTES), markup=False)
            yield Static(Text(""), id="notes", markup=False)
            yield Static(heading(S.HISTORY), markup=False)
            yield Static(Text(""), id="history", markup=False)
        yield KeyBar()

    def on_mount(self) -> None:
        self.reload()

    @work(thread=True, exclusive=True, group="detail")
    def reload(self) -> None:
        detail = self.load(self.tip_id)
        self.app.call_from_thread(self.show, detail)

    def show(self, d: TipDetail | None) -> None:
        self.detail = d
        if d is None:
            self.query_one("#summary", Static).update(Text(S.NO_TIP))
            return
        self.query_one("#summary", Static).update(summary(d, self.settings))
        zone_name = self.settings.ledger.time_zone
        self.query_one("#thread", Static).update(thread_text(d, zone_name))
        files = self.query_one("#attachments", OptionList)
        files.clear_options()
        if d.attachments:
            files.add_options([attachment_option(a) for a in d.attachments])
        else:
            files.add_option(Option(Text(S.NO_ATTACHMENTS), disabled=True))
        self.query_one("#signals", Static).update(signals_text(d))
        self.query_one("#notes", Static).update(history_text(d.notes, self.settings,
                                                             notes=True))
        self.query_one("#history", Static).update(history_text(d.history, self.settings))

    def chosen_attachment(self) -> AttachmentInfo | None:
        if self.detail is None or not self.detail.attachments:
            return None
        index = self.query_one("#attachments", OptionList).highlighted
        return self.detail.attachments[index or 0]

    def action_back(self) -> None:
        self.dismiss(None)

    def action_open_file(self) -> None:
        a = self.chosen_attachment()
        if a is not None:
            self.app.post_message(AttachmentAction(a, save=False))

    def action_save_file(self) -> None:
        a = self.chosen_attachment()
        if a is not None:
            self.app.post_message(AttachmentAction(a, save=True))

