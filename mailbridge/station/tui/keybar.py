"""The key line at the bottom: Textual's ``Footer`` drawn as one line of text.

The stock footer mounts a widget per key and restyles each one whenever the focus
moves; on the desk that was about a tenth of a second of every start and every
focus change. Here the same keys (the focused widget's first, one per action) are
one ``Static``; what is lost is clicking a key with the mouse.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import Footer, Static


class KeyBar(Footer):
    """The active keys and what they do, on one line that is cut at the right edge."""

    COMPONENT_CLASSES = {"keybar--key", "keybar--disabled"}
    DEFAULT_CSS = """
    KeyBar > Static { width: 1fr; height: 1; text-wrap: nowrap; text-overflow: clip; }
    KeyBar > .keybar--key { color: $footer-key-foreground; text-style: bold; }
    KeyBar > .keybar--disabled { color: $text-disabled; }
    """

    def compose(self) -> ComposeResult:
        if not self._bindings_ready:
            return
        key_style = self.get_component_rich_style("keybar--key")
        disabled = self.get_component_rich_style("keybar--disabled")
        line = Text(no_wrap=True, overflow="crop")
        actions: set[str] = set()
        for _node, binding, enabled, _tooltip in self.screen.active_bindings.values():
            if not binding.show or binding.action in actions:
                continue
            actions.add(binding.action)
            line.append(f" {self.app.get_key_display(binding)} ",
                        key_style if enabled else disabled)
            line.append(f"{binding.description} ", "" if enabled else disabled)
        yield Static(line, markup=False)
