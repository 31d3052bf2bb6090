"""Officers' replies encrypted in Thunderbird (PGP/MIME to the relay's key): the relay
reads them only with relay.openpgp_secret_key; without it the officer is told, in the
bounce, to send the reply without encryption. Plain replies need no key at all."""

from __future__ import annotations

import logging
import shutil
import smtplib
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailbridge.core.message import encrypted
from mailbridge.openpgp import Encryptor
from mailbridge.relay.smtp import ENCRYPTED
from tests.openpgp_keys import StationKeys
from tests.relay.test_smtp_intake import THUNDERBIRD, Intake, reply, running_intake

NEW_TEXT = "Cảm ơn bà con. Sáng thứ Bảy chúng tôi sẽ cử tổ tuần tra."


def _intake(tmp_path: Path, keys: StationKeys, *, relay_key: bool) -> Iterator[Intake]:
    extra = ""
    if relay_key:  # the "other" key stands for the relay's own (no passphrase)
        shutil.copy(keys.other_secret, tmp_path / "relay-secret.asc")
        extra = 'openpgp_secret_key = "relay-secret.asc"\n'
    yield from running_intake(tmp_path, extra)


@pytest.fixture
def keyed(tmp_path: Path, station_keys: StationKeys) -> Iterator[Intake]:
    yield from _intake(tmp_path, station_keys, relay_key=True)


@pytest.fixture
def keyless(tmp_path: Path, station_keys: StationKeys) -> Iterator[Intake]:
    yield from _intake(tmp_path, station_keys, relay_key=False)


def _encrypted(msg: EmailMessage, keys: StationKeys) -> EmailMessage:
    """*msg* as Thunderbird sends it encrypted to the relay: PGP/MIME, subject kept."""
    outer, _headers = encrypted(msg, [], str(msg["Subject"]),
                                Encryptor(keys.other_public, "relay key"))
    return outer


def test_an_encrypted_reply_is_read_with_the_relays_key(
        keyed: Intake, station_keys: StationKeys, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    tip = keyed.tip()
    keyed.send(_encrypted(reply(tip, THUNDERBIRD), station_keys), tip.address)
    assert keyed.read(tip) == [NEW_TEXT]


def test_without_a_relay_key_the_officer_is_told_to_send_it_plain(
        keyless: Intake, station_keys: StationKeys) -> None:
    tip = keyless.tip()
    with pytest.raises(smtplib.SMTPDataError) as refused:
        keyless.send(_encrypted(reply(tip, THUNDERBIRD), station_keys), tip.address)
    assert refused.value.smtp_code == 550
    error = refused.value.smtp_error
    assert (error.decode() if isinstance(error, bytes) else error) == ENCRYPTED[4:]
    assert keyless.read(tip) == []
    keyless.send(reply(tip, THUNDERBIRD), tip.address)  # plain replies always work
    assert keyless.read(tip) == [NEW_TEXT]
