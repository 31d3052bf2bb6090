"""DKIM: `mailbridge dkim-key` writes the key and prints its record; what the relay
delivers through the real Postfix and reads back from Dovecot verifies with dkimpy
against that record (a stub DNS answer), and a changed body does not."""

from __future__ import annotations

import asyncio
import dataclasses
import email
import hashlib
import secrets
import stat
from datetime import datetime
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import dkim
import pytest

from mailbridge.cli import main
from mailbridge.config import Station
from mailbridge.core.message import Composed, body_digest, verify_contract
from mailbridge.core.receipts import new_reply_token
from mailbridge.relay.dkim import DkimSigner, generate_key, load_signer, record_problem
from mailbridge.relay.outbox import DeliveryWorker, maildir_name
from mailbridge.relay.store import DELIVERED, RelayStore
from tests.e2e.support import MAILDIR_STATION, relay_toml
from tests.e2e.support import SECRET as E2E_SECRET
from tests.relay.outbox_driver import (
    RELAY_DOMAIN,
    RELAY_KEY,
    builder,
    maildir_station,
    make_settings,
    smtp_station,
)
from tests.relay.test_outbox_mailstack import MAILBOX, fetch_by_message_id
from tests.relay.test_web import SECRET
from tests.relay.test_web import make_settings as config_settings


def stub_dns(signer: DkimSigner) -> Any:
    """dkimpy's ``dnsfunc``: the published TXT record, and nothing else resolves."""
    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        if name.decode("ascii").rstrip(".") == signer.dns_name:
            return signer.txt_value().encode("ascii")
        return None
    return lookup


def contract_of(data: bytes) -> Any:
    msg = email.message_from_bytes(data, policy=default_policy)
    assert isinstance(msg, EmailMessage)
    lists: dict[str, list[str]] = {}
    for name, value in msg.items():
        lists.setdefault(name.lower(), []).append(str(value))
    return verify_contract(lists, body_digest(msg), (bytes(RELAY_KEY.verify_key),)).contract


def test_dkim_key_writes_a_private_key_once_and_prints_its_record(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    settings = config_settings(tmp_path)
    monkeypatch.setenv("MB_SECRET", SECRET)
    config = str(settings.path)
    assert main(["--config", config, "dkim-key"]) == 0
    first = capsys.readouterr().out
    key = tmp_path / "dkim-mailbridge.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    signer = load_signer(settings)
    assert signer is not None
    assert f"{signer.dns_name}. 3600 IN TXT (" in first
    assert f"value: {signer.txt_value()}" in first
    pem = key.read_bytes()
    assert main(["--config", config, "dkim-key"]) == 0  # again: the key is kept
    assert key.read_bytes() == pem
    assert "exists: kept" in capsys.readouterr().out

    assert main(["--config", config, "dkim-key", "--selector", "mb2027"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "dkim-mb2027.key").read_bytes() != pem  # a new key to change to
    assert 'dkim_selector = "mb2027"' in out
    assert main(["--config", config, "dkim-key", "--selector", "a b"]) == 2


def test_a_configured_key_that_is_missing_names_the_command(tmp_path: Path) -> None:
    settings = config_settings(tmp_path, dkim_key=tmp_path / "nowhere.key")
    with pytest.raises(Exception, match=r"relay.dkim_key: .*nowhere.key does not exist: "
                                        r"create it with `mailbridge dkim-key`"):
        load_signer(settings)


def capturing(station: Station, text: str) -> tuple[Any, list[bytes]]:
    """The outbox driver's builder, keeping the bytes it composed."""
    built: list[bytes] = []
    build = builder(station, text, new_reply_token())

    def capture(ref: str, date: datetime) -> Composed:
        composed = build(ref, date)
        built.append(composed.data)
        return composed
    return capture, built


def deliver_signed(tmp_path: Path, station: Station, text: str) -> tuple[DkimSigner, bytes]:
    """Accept one tip and deliver it with a DKIM key: the signer and the unsigned bytes."""
    key = tmp_path / "relay.key"
    key.write_bytes(generate_key())
    store = RelayStore(f"sqlite:///{tmp_path / 'relay.db'}")
    store.upgrade()
    try:
        settings = make_settings(str(store.url), station)
        settings = dataclasses.replace(
            settings, relay=dataclasses.replace(settings.relay, dkim_key=key))
        build, built = capturing(station, text)
        store.accept(station, build, receipt_hash=secrets.token_hex(32),
                     reply_token=new_reply_token())
        worker = DeliveryWorker(settings, store)
        assert asyncio.run(worker.deliver_due()) == 1
        assert [r.state for r in store.list_outbox()] == [DELIVERED]
    finally:
        store.close()
    assert worker.dkim is not None
    return worker.dkim, built[0]


@pytest.mark.servers
def test_mail_through_postfix_verifies_against_the_published_key(
        mailstack: Any, tmp_path: Path) -> None:
    station = smtp_station("ncs", mailstack.smtp_port, mailbox=MAILBOX, tls="starttls",
                           username=MAILBOX, password="secret",
                           ca_file=Path(mailstack.ca_file), timeout=15)
    signer, sent = deliver_signed(tmp_path, station, "Xe tải lúc nửa đêm ở bản Nậm Cắn")
    message_id = email.message_from_bytes(sent)["Message-ID"]
    got = fetch_by_message_id(mailstack, str(message_id))
    assert b"Received:" in got  # really through Postfix and Dovecot
    assert dkim.verify(got, dnsfunc=stub_dns(signer))
    assert contract_of(got) is not None  # the contract signature is untouched

    head, _, body = got.partition(b"\r\n\r\n")
    assert not dkim.verify(head + b"\r\n\r\nChanged on the way.\r\n" + body,
                           dnsfunc=stub_dns(signer))
    other = DkimSigner(RELAY_DOMAIN, "mailbridge", generate_key())
    assert not dkim.verify(got, dnsfunc=stub_dns(other))  # only the published key verifies


def test_maildir_delivery_is_signed_and_named_by_the_unsigned_bytes(tmp_path: Path) -> None:
    station = maildir_station("ncs", tmp_path / "Maildir")
    signer, sent = deliver_signed(tmp_path, station, "Có người lạ ở chợ phiên")
    [path] = (tmp_path / "Maildir" / "new").iterdir()
    assert dkim.verify(path.read_bytes(), dnsfunc=stub_dns(signer))
    assert path.name == maildir_name(1, sent)  # a redelivery finds this copy


def test_the_openssl_signature_is_dkimpys_own_byte_for_byte() -> None:
    """The relay's RSA step is OpenSSL's; dkimpy's pure-Python one gives the same bytes."""
    import dkim.crypto

    import mailbridge.relay.dkim as relay_dkim

    pem = generate_key()
    pk = dkim.crypto.parse_pem_private_key(pem)
    for text in (b"", b"From: a@b\r\n", secrets.token_bytes(300)):
        digest = dkim.HashThrough(hashlib.sha256())
        digest.update(text)
        assert (relay_dkim._openssl_rsa_sign(digest, pk)
                == dkim.crypto.RSASSA_PKCS1_v1_5_sign(digest, pk))
    assert dkim.RSASSA_PKCS1_v1_5_sign is relay_dkim._openssl_rsa_sign


def test_check_says_whether_mail_is_signed(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    stations = MAILDIR_STATION.replace('maildir = "mail/ncs"', "") + (
        '[stations.smtp]\nhost = "127.0.0.1"\nport = 2525\ntls = "none"\n')
    config = tmp_path / "mailbridge.toml"
    config.write_text(relay_toml(stations), encoding="utf-8")
    (tmp_path / ".env").write_text(f"MAILBRIDGE_SECRET={E2E_SECRET}\n", encoding="utf-8")
    assert main(["--config", str(config), "check"]) == 0
    assert "dkim: no key at " in capsys.readouterr().out
    assert main(["--config", str(config), "dkim-key"]) == 0
    capsys.readouterr()
    assert main(["--config", str(config), "check"]) == 0
    assert ("dkim: signs as d=relay.example.test s=mailbridge "
            "(record mailbridge._domainkey.relay.example.test)") in capsys.readouterr().out


def test_the_published_record_is_compared_with_the_key() -> None:
    signer = DkimSigner(RELAY_DOMAIN, "mailbridge", generate_key())
    value = signer.txt_value()
    assert record_problem(value.encode(), signer) is None
    # As a zone file's split strings arrive, joined, with spaces inside p=.
    spaced = value.replace("p=", "p= ").replace(value[-20:], " " + value[-20:])
    assert record_problem(spaced.encode(), signer) is None
    other = DkimSigner(RELAY_DOMAIN, "mailbridge", generate_key()).txt_value()
    assert "holds another key" in str(record_problem(other.encode(), signer))
    assert "no TXT record at mailbridge._domainkey." in str(record_problem(None, signer))
