"""mailbridge: an anonymous tip box that lands in a station's existing mailbox."""

__version__ = "0.1.0"
