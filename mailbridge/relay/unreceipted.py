"""Tips that get no receipt (by mail, by SMS): composed and stored as a form tip is.

The same contract (``compose``: allow-listed fields, signed), the same
``RelayStore.accept`` transaction and the same delivery. There is no receipt code to
hand back on these channels without leaving a trace with the sender, so the receipt
hash is a random value that no code opens, and no conversation keys are made.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from nacl.signing import SigningKey

from ..config import Category, Settings, Station
from ..core.message import Composed, Envelope, Submission, compose, hour_of
from ..core.receipts import new_reply_token
from ..labels import category_label
from ..openpgp import encryptor_for
from .i18n import MESSAGE_LANGUAGE, gettext_for
from .store import Accepted, RelayStore


def accept_unreceipted(settings: Settings, store: RelayStore, signer: SigningKey,
                       station: Station, category: Category, text: str, *,
                       placement_id: str = "", placement_label: str = "") -> Accepted:
    """Compose *text* as a tip of *station* and commit it to the outbox (blocking)."""
    relay = settings.relay
    token = new_reply_token()
    hour = hour_of(datetime.now(UTC))

    def build(ref: str, date: datetime) -> Composed:
        submission = Submission(
            station_id=station.id, station_name=station.name, mailbox=station.mailbox,
            ref=ref, category_id=category.id,
            category_label=category_label(category, MESSAGE_LANGUAGE), text=text,
            placement_id=placement_id, placement_label=placement_label, received_hour=hour)
        return compose(submission, Envelope(relay.address, relay.domain, token), signer,
                       gettext=gettext_for(MESSAGE_LANGUAGE), now=date,
                       encrypt=encryptor_for(station.id, station.openpgp_key))

    return store.accept(station, build, receipt_hash=secrets.token_hex(32), reply_token=token,
                        delay_minutes=station.delivery_delay_minutes, category_id=category.id)
