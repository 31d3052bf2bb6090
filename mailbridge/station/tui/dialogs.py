"""Small modal dialogs: pick one choice (with a reason), or type a text."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList
from textual.widgets.option_list import Option

from ..ledger.workflow import MIN_REASON
from . import strings as S


class ChoiceDialog(ModalScreen[tuple[str, str] | None]):
    """Choose one value; with ``reason`` the officer also types why. Escape cancels."""

    BINDINGS = [Binding("escape", "cancel", S.CANCEL)]

    def __init__(self, title: str, choices: Sequence[tuple[str, str]], *,
                 reason: bool = False,
                 reason_required: Callable[[str], bool] = lambda _value: False) -> None:
        super().__init__()
        self.title_text = title
        self.choices = list(choices)  # (value, label)
        self.with_reason = reason
        self.reason_required = reason_required

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(Text(self.title_text), markup=False)
            yield OptionList(*(Option(Text(label), id=f"v{i}")
                               for i, (_, label) in enumerate(self.choices)), id="choices")
            if self.with_reason:
                yield Input(placeholder=S.REASON_OPTIONAL, id="reason")
            with Horizontal(classes="buttons"):
                yield Button(S.OK, variant="primary", id="ok")
                yield Button(S.CANCEL, id="cancel")

    def on_mount(self) -> None:
        self.query_one("#choices", OptionList).highlighted = 0

    def _value(self) -> str | None:
        highlighted = self.query_one("#choices", OptionList).highlighted
        if highlighted is None or not self.choices:
            return None
        return self.choices[highlighted][0]

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        """The reason box says whether the highlighted choice needs one."""
        value = self._value()
        if self.with_reason and value is not None:
            self.query_one("#reason", Input).placeholder = (
                S.REASON_REQUIRED if self.reason_required(value) else S.REASON_OPTIONAL)

    def _finish(self) -> None:
        value = self._value()
        if value is None:
            return
        reason = self.query_one("#reason", Input).value if self.with_reason else ""
        why = reason.strip()
        problem = (S.REASON_NEEDED if not why and self.reason_required(value) else
                   S.REASON_SHORT.format(min=MIN_REASON) if 0 < len(why) < MIN_REASON else "")
        if problem:
            box = self.query_one("#reason", Input)
            box.add_class("invalid")
            box.focus()
            self.notify(problem, severity="warning", markup=False)
            return
        self.dismiss((value, reason))

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if self.with_reason:
            self.query_one("#reason", Input).focus()
        else:
            self._finish()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._finish()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "ok":
            self._finish()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class TextDialog(ModalScreen[str | None]):
    """Type a text: one line (Enter submits) or several (Ctrl+S submits)."""

    BINDINGS = [Binding("escape", "cancel", S.CANCEL), Binding("ctrl+s", "submit", S.OK)]

    def __init__(self, title: str, value: str = "", *, multiline: bool = False) -> None:
        super().__init__()
        self.title_text = title
        self.value = value
        self.multiline = multiline

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(Text(self.title_text), markup=False)
            if self.multiline:
                from textual.widgets import TextArea  # the editor's modules: not at start-up

                yield TextArea(self.value, id="text", soft_wrap=True)
            else:
                yield Input(self.value, id="text")
            with Horizontal(classes="buttons"):
                yield Button(S.OK, variant="primary", id="ok")
                yield Button(S.CANCEL, id="cancel")

    def action_submit(self) -> None:
        widget = self.query_one("#text")
        self.dismiss(widget.value if isinstance(widget, Input) else
                     str(getattr(widget, "text", "")))  # a multi-line dialog's TextArea

    def action_cancel(self) -> None:
        self.dismiss(None)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "ok":
            self.action_submit()
        else:
            self.dismiss(None)
