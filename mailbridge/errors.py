"""One error tree, split by who fixes it.

    MailbridgeError                 root: everything mailbridge raises on purpose
    ├── ConfigError                 the admin fixes the config file or environment (exit 2)
    └── RuntimeFailure              something outside failed; retrying may help (exit 3)
        ├── DeliveryError           sending a tip to a station mailbox failed
        │   └── PermanentDeliveryError  the server refused for good (5xx): dead-letter
        ├── IntakeError             a submission or incoming mail was refused
        │   ├── MediaRefused        a photo or voice message that cannot be cleaned
        │   ├── StationFull         a station's form tips of this hour are used up
        │   └── FormTokenUsed       a tip's form token was used by another tip already
        ├── StoreError              the relay database failed
        ├── LedgerError             the station ledger failed
        │   └── WorkflowError       a status change or assignment the rules refuse
        ├── PollError               talking to a station mailbox (IMAP) failed
        ├── OpenPGPError            gpg could not encrypt or decrypt a tip
        └── TokenError              the OAuth2 token endpoint could not be reached

Messages name the bad value, where it came from and the fix.
"""

from __future__ import annotations


class MailbridgeError(Exception):
    """Root of every error mailbridge raises on purpose."""

    exit_code = 3


class ConfigError(MailbridgeError):
    """The configuration is wrong; the admin must edit it. Never retried."""

    exit_code = 2


class RuntimeFailure(MailbridgeError):
    """A failure outside our control; the operation may succeed later."""

    exit_code = 3


class DeliveryError(RuntimeFailure):
    """A tip could not be delivered yet (temporary: retried with backoff)."""


class PermanentDeliveryError(DeliveryError):
    """The receiving server refused the tip for good (5xx); it is dead-lettered."""


class IntakeError(RuntimeFailure):
    """A submission or incoming mail was refused."""


class MediaRefused(IntakeError):
    """One uploaded file is refused and never forwarded (the tip's text is kept).

    ``reason`` (``empty``, ``too_big``, ``wrong_type``, ``unreadable``) and
    ``field`` (``photo`` or ``voice``) with ``number`` (1-based) let the form say
    which file and why in the tipster's language; the message is for logs."""

    def __init__(self, field: str, number: int, reason: str) -> None:
        super().__init__(f"{field} {number} refused: {reason}")
        self.field = field
        self.number = number
        self.reason = reason


class StationFull(IntakeError):
    """A station took its ``relay.station_tips_per_hour`` form tips this UTC hour; the
    tip is not stored (the tipster reads that it was NOT sent)."""

    def __init__(self, station_id: str, per_hour: int) -> None:
        super().__init__(f"station {station_id} took its {per_hour} form tips of this hour "
                         f"(relay.station_tips_per_hour): more are taken from the next UTC "
                         f"hour; raise the setting if real tipsters are refused")
        self.station_id = station_id


class FormTokenUsed(IntakeError):
    """A tip's form token is already recorded as used (a double-tap, a replay): the tip
    is not stored (the tipster reads that the form was already sent or expired)."""

    def __init__(self) -> None:
        super().__init__("the form token was already used: open the form again to send "
                         "another tip")


class StoreError(RuntimeFailure):
    """The relay database failed."""


class LedgerError(RuntimeFailure):
    """The station ledger database failed.

    ``kind`` and ``params`` (ids, not words) let the officers' screens say it in
    Vietnamese; the message stays for logs and scripts."""

    def __init__(self, message: str, kind: str = "", **params: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.params = params


class WorkflowError(LedgerError):
    """An officer's change that the workflow rules refuse (e.g. a verdict without reason)."""


class PollError(RuntimeFailure):
    """Talking to a station mailbox over IMAP failed."""


class OpenPGPError(RuntimeFailure):
    """gpg could not encrypt a tip to a station's key, or decrypt one for the ledger."""


class TokenError(RuntimeFailure):
    """An OAuth2 access token could not be had for now (network, the provider's 5xx).
    A refresh token or client the provider refuses is a ConfigError: retrying won't help."""
