"""OpenPGP to the station with the real gpg and keys the test made: PGP/MIME that
keeps the signed contract outside, keys ``check`` must refuse, and why a tip cannot
be decrypted."""

from __future__ import annotations

import email
import io
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import pytest

from mailbridge.checks import print_openpgp
from mailbridge.config import load_config
from mailbridge.core.message import (
    ENCRYPTED_NAME,
    Envelope,
    RelayIdentity,
    Submission,
    body_digest,
    ciphertext,
    compose,
    is_encrypted,
    photo,
    signing_key,
    verify_contract,
)
from mailbridge.errors import ConfigError, OpenPGPError
from mailbridge.openpgp import Decryptor, Encryptor, read_public_key, remove_stale_homes
from tests.openpgp_keys import PASSPHRASE, StationKeys
from tests.waiting import wait_for

MARKER = "MARKER-OPENPGP-7Q"
JPEG = b"\xff\xd8\xff\xe0" + b"photo-bytes-" * 50
KEY = signing_key("s" * 43)


def _tip(keys: StationKeys) -> bytes:
    sub = Submission("ncs", "Trạm Nậm Cha", "ncs@station.test", "NCS-0042", "drugs", "Ma túy",
                     f"Có người buôn {MARKER} ở bản", where_when="chợ phiên",
                     attachments=(photo(1, JPEG),))
    env = Envelope("relay@relay.test", "relay.test", "tok")
    return compose(sub, env, KEY, encrypt=Encryptor(keys.public, "openpgp_key")).data


def _headers(msg: Message) -> dict[str, list[str]]:
    lists: dict[str, list[str]] = {}
    for name, value in msg.items():
        lists.setdefault(name.lower(), []).append(str(value))
    return lists


def test_an_encrypted_tip_is_pgp_mime_with_the_contract_signed_outside(
        station_keys: StationKeys) -> None:
    data = _tip(station_keys)
    assert MARKER.encode() not in data and b"photo-bytes" not in data
    outer = email.message_from_bytes(data)
    assert is_encrypted(outer) and outer["Subject"] == "[NCS-0042]"
    assert [p.get_filename() for p in outer.walk()][1:] == [None, ENCRYPTED_NAME]
    checked = verify_contract(_headers(outer), body_digest(outer), [bytes(KEY.verify_key)])
    assert checked.problem == "" and checked.contract is not None
    assert checked.contract.ref == "NCS-0042"

    armour = ciphertext(outer)
    assert armour is not None
    inner = email.message_from_bytes(Decryptor(secret_key=station_keys.secret,
                                               passphrase=PASSPHRASE)(armour))
    assert inner.get_param("protected-headers") == "v1"
    assert "Ma túy" in str(email.header.make_header(email.header.decode_header(
        inner["Subject"])))
    assert inner["Message-ID"] == outer["Message-ID"]
    texts = [p.get_payload(decode=True) for p in inner.walk()
             if p.get_content_type() == "text/plain"]
    assert MARKER.encode() in texts[0]
    photos = [p for p in inner.walk() if p.get_filename() == "anh-1.jpg"]
    assert photos[0].get_payload(decode=True) == JPEG


def test_the_signature_covers_the_ciphertext(station_keys: StationKeys) -> None:
    data = _tip(station_keys)
    head, _sep, body = data.partition(b"-----BEGIN PGP MESSAGE-----\r\n\r\n")
    changed = head + _sep + (b"A" if body[:1] != b"A" else b"B") + body[1:]
    outer = email.message_from_bytes(changed)
    checked = verify_contract(_headers(outer), body_digest(outer), [bytes(KEY.verify_key)])
    assert checked.problem == "its body was changed after the relay signed it"


def test_line_ends_changed_by_a_server_do_not_break_the_signature(
        station_keys: StationKeys) -> None:
    outer = email.message_from_bytes(_tip(station_keys).replace(b"\r\n", b"\n"))
    relay = RelayIdentity("relay@relay.test", (bytes(KEY.verify_key),))
    assert verify_contract(_headers(outer), body_digest(outer), relay.public_keys).problem == ""


def test_check_reads_the_fingerprint_and_expiry(station_keys: StationKeys) -> None:
    info = read_public_key(station_keys.public, "stations.ncs.openpgp_key")
    assert info.fingerprint == station_keys.fingerprint
    assert info.expires is not None and info.user_ids == ("Trạm Nậm Cha <ncs@station.test>",)


@pytest.mark.parametrize(("which", "says"), [
    ("expired", ": extend it (gpg --quick-set-expire"),
    ("revoked", "is revoked: make a new one"),
    ("signing_only", "can only sign, not encrypt: add an encryption subkey (gpg --quick-add-key"),
    ("secret", "holds a private key: the relay must have the public one only"),
])
def test_keys_the_relay_must_not_use_are_refused_with_the_fix(
        station_keys: StationKeys, which: str, says: str) -> None:
    with pytest.raises(ConfigError, match="^stations.ncs.openpgp_key: ") as caught:
        read_public_key(getattr(station_keys, which), "stations.ncs.openpgp_key")
    assert says in str(caught.value)


def test_a_missing_key_file_names_the_export_command(station_keys: StationKeys) -> None:
    with pytest.raises(ConfigError, match="does not exist: export the station's key there"):
        read_public_key(station_keys.public.with_name("none.asc"), "openpgp_key")


@pytest.mark.parametrize(("secret", "passphrase", "reason"), [
    ("other_secret", "", "encrypted to a key whose private part this station does not have"),
    ("secret", "not the passphrase", "passphrase is wrong"),
])
def test_why_a_tip_cannot_be_decrypted(station_keys: StationKeys, secret: str,
                                       passphrase: str, reason: str) -> None:
    armour = ciphertext(email.message_from_bytes(_tip(station_keys)))
    assert armour is not None
    decrypt = Decryptor(secret_key=getattr(station_keys, secret), passphrase=passphrase)
    with pytest.raises(OpenPGPError, match=reason):
        decrypt(armour)


STATION_TOML = """
[relay]
address = "tips@relay.example.test"
secret_env = "MB_SECRET"
database = "sqlite:///relay.db"

[ledger]
database = "sqlite:///ledger.db"

[[stations]]
id = "ncs"
mailbox = "tips@ncs.example.test"
maildir = "mail/ncs"
openpgp_key = "keys/ncs.asc"
openpgp_secret_key = "keys/ncs-secret.asc"
openpgp_passphrase_env = "NCS_OPENPGP_PASSPHRASE"
"""


def _config(tmp_path: Path, keys: StationKeys, public: Path) -> Path:
    (tmp_path / "keys").mkdir(exist_ok=True)
    shutil.copy(public, tmp_path / "keys" / "ncs.asc")
    shutil.copy(keys.secret, tmp_path / "keys" / "ncs-secret.asc")
    path = tmp_path / "mailbridge.toml"
    path.write_text(STATION_TOML, encoding="utf-8")
    return path


ENV = {"MB_SECRET": "x" * 40, "NCS_OPENPGP_PASSPHRASE": PASSPHRASE}


def test_check_prints_the_fingerprint_expiry_and_how_the_poller_decrypts(
        tmp_path: Path, station_keys: StationKeys) -> None:
    settings = load_config(_config(tmp_path, station_keys, station_keys.public), env=ENV)
    station = settings.stations["ncs"]
    assert station.openpgp_key == tmp_path / "keys" / "ncs.asc"
    assert station.openpgp_passphrase.reveal() == PASSPHRASE
    out = io.StringIO()
    print_openpgp(settings, out)
    expires = read_public_key(station_keys.public, "k").expires
    assert expires is not None
    assert out.getvalue().splitlines() == [
        f"openpgp ncs: tips encrypted to {station_keys.fingerprint} (Trạm Nậm Cha "
        f"<ncs@station.test>), expires {expires:%Y-%m-%d}",
        f"openpgp ncs: the poller decrypts with {tmp_path / 'keys' / 'ncs-secret.asc'}"]


def test_an_expired_key_in_the_config_is_one_line_naming_the_key_and_the_fix(
        tmp_path: Path, station_keys: StationKeys) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(_config(tmp_path, station_keys, station_keys.expired), env=ENV)
    lines = str(caught.value).splitlines()
    assert [line for line in lines if "openpgp" in line] == [
        line for line in lines if line.startswith("stations.ncs.openpgp_key: the key ")
        and "expired on " in line and ": extend it (gpg --quick-set-expire" in line]
    assert any("openpgp" in line for line in lines)


def test_check_refuses_a_relay_key_file_without_a_private_key(
        tmp_path: Path, station_keys: StationKeys) -> None:
    path = _config(tmp_path, station_keys, station_keys.public)
    shutil.copy(station_keys.other_public, tmp_path / "keys" / "relay.asc")
    path.write_text(STATION_TOML.replace(
        'database = "sqlite:///relay.db"\n',
        'database = "sqlite:///relay.db"\nopenpgp_secret_key = "keys/relay.asc"\n'),
        encoding="utf-8")
    settings = load_config(path, env=ENV)
    with pytest.raises(ConfigError, match=r"^relay.openpgp_secret_key: .*relay.asc holds no "
                                          r"private key: export it with gpg --armor "
                                          r"--export-secret-keys"):
        print_openpgp(settings, io.StringIO())
    shutil.copy(station_keys.other_secret, tmp_path / "keys" / "relay.asc")
    out = io.StringIO()
    print_openpgp(settings, out)
    assert out.getvalue().splitlines()[-1] == (
        f"openpgp relay: officers' encrypted replies are read with {tmp_path}/keys/relay.asc")


def _agents_of(home: Path) -> list[int]:
    """Pids of running gpg-agents serving *home*, read from /proc."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(b"gpg-agent") and str(home).encode() in cmdline:
            found.append(int(proc.name))
    return found


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temporary folder with a short path: an agent's socket path must fit 108 bytes."""
    with tempfile.TemporaryDirectory(prefix="mbgpg-", dir="/tmp") as folder:
        yield Path(folder)


def test_a_keyring_left_by_a_killed_process_is_removed_with_its_agent(short_tmp: Path) -> None:
    """A poller killed by SIGKILL leaves its keyring (a copy of the station's private
    key) and its agent: the next process that makes a keyring removes both."""
    tmp_path = short_tmp
    child = ("import os, signal, subprocess\n"
             "from mailbridge.openpgp import _private_home\n"
             "home = _private_home()\n"
             "subprocess.run(['gpg-connect-agent', '--homedir', str(home), '/bye'],"
             " check=True, capture_output=True)\n"
             "print(home, flush=True)\n"
             "os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                          env={**os.environ, "TMPDIR": str(tmp_path)}, timeout=60, check=False)
    home = Path(proc.stdout.strip())
    assert proc.returncode == -signal.SIGKILL and home.parent == tmp_path, proc.stderr
    assert home.is_dir() and _agents_of(home)
    mine = tmp_path / f"mailbridge-gpg-{os.getpid()}-live"  # a live process's: kept
    mine.mkdir()
    assert remove_stale_homes(tmp_path) == [home]
    assert not home.exists() and mine.is_dir()
    wait_for(lambda: not _agents_of(home), "the stale agent gone")
