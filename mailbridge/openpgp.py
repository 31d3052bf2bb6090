"""OpenPGP to the station, through the system's GnuPG (python-gnupg drives ``gpg``).

The relay holds only a station's public key: ``Encryptor`` imports it into a private
keyring made for this process (a 0700 temporary folder, removed at exit), so nothing
is written to a user's ``~/.gnupg`` and no other key can be picked by mistake. The
station side's ``Decryptor`` uses either the officers' GnuPG home (the agent holds the
key) or a secret key file, imported the same way, with its passphrase from the
environment. No cryptography is done here: gpg does all of it.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import gnupg

from .errors import ConfigError, OpenPGPError

# Every gpg run: no user options file, no network (keys come from files only).
_OPTIONS = ["--no-options", "--no-auto-key-retrieve", "--no-auto-key-locate"]


@dataclass(frozen=True)
class KeyInfo:
    """What ``mailbridge check`` prints of a station's key."""

    fingerprint: str
    user_ids: tuple[str, ...]
    expires: datetime | None  # None: the key does not expire


def _moment(value: str) -> datetime | None:
    return datetime.fromtimestamp(int(value), UTC) if value.strip().isdigit() else None


_HOME_PREFIX = "mailbridge-gpg-"


def _remove_home(home: Path) -> None:
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"],  # noqa: S603,S607
                   check=False, capture_output=True)
    shutil.rmtree(home, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive, and not ours to clean
        return True
    return True


def remove_stale_homes(tmp: Path | None = None) -> list[Path]:
    """Keyrings left by a process that was killed before its exit handler ran (the
    station's holds a copy of its private key): removed with their agents. Outside
    systemd's PrivateTmp nothing else would."""
    removed = []
    for home in Path(tmp or tempfile.gettempdir()).glob(f"{_HOME_PREFIX}*-*"):
        pid = home.name.removeprefix(_HOME_PREFIX).partition("-")[0]
        if (pid.isdigit() and not _alive(int(pid)) and home.is_dir()
                and home.stat().st_uid == os.geteuid()):
            _remove_home(home)
            removed.append(home)
    return removed


def _private_home() -> Path:
    """A keyring folder for this process only (0700, named by its pid), gone at exit
    with its agent; those of killed processes are removed first."""
    remove_stale_homes()
    home = Path(tempfile.mkdtemp(prefix=f"{_HOME_PREFIX}{os.getpid()}-"))
    atexit.register(_remove_home, home)
    return home


def _gpg(home: Path) -> Any:
    if shutil.which("gpg") is None:
        raise ConfigError("OpenPGP needs GnuPG and gpg is not installed: "
                          "apt-get install gnupg")
    gpg = gnupg.GPG(gnupghome=str(home), options=_OPTIONS)
    gpg.encoding = "utf-8"  # user ids and passphrases in Vietnamese
    return gpg


def read_public_key(path: Path, key: str, *, now: datetime | None = None) -> KeyInfo:
    """The one public key in *path*, checked as the relay will use it.

    ConfigError (naming *key*, the setting, and the fix) for a missing file, a file
    with no key, several keys or a private key, and for a key that is revoked, has
    expired or cannot encrypt (signing only).
    """
    if not path.is_file():
        raise ConfigError(f"{key}: {path} does not exist: export the station's key there "
                          f"(gpg --armor --export FINGERPRINT > {path.name})")
    found = _gpg(_home()).scan_keys(str(path))
    keys = [k for k in found if k.get("type") in ("pub", "sec")]
    if len(keys) != 1:
        raise ConfigError(f"{key}: {path} holds {len(keys)} OpenPGP keys, it must hold the "
                          f"station's one public key (gpg --armor --export FINGERPRINT)")
    k = keys[0]
    fpr = str(k["fingerprint"])
    if k["type"] == "sec":
        raise ConfigError(f"{key}: {path} holds a private key: the relay must have the public "
                          f"one only (gpg --armor --export {fpr})")
    moment = now or datetime.now(UTC)
    expires = _moment(str(k.get("expires", "")))
    if k.get("trust") == "r":
        raise ConfigError(f"{key}: the key {fpr} is revoked: make a new one and export it "
                          f"(docs/ADMIN.md, OpenPGP)")
    if k.get("trust") == "e" or (expires is not None and expires <= moment):
        raise ConfigError(f"{key}: the key {fpr} expired on {expires:%Y-%m-%d}: extend it "
                          f"(gpg --quick-set-expire {fpr} 2y '*') and export it again"
                          if expires else f"{key}: the key {fpr} has expired: extend it")
    if not _can_encrypt(k):
        raise ConfigError(f"{key}: the key {fpr} can only sign, not encrypt: add an "
                          f"encryption subkey (gpg --quick-add-key {fpr} cv25519 encr 2y) "
                          f"and export it again")
    return KeyInfo(fpr, tuple(str(u) for u in k.get("uids", [])), expires)


def _can_encrypt(k: dict[str, Any]) -> bool:
    """gpg's upper-case ``E``: the key has a live (unexpired, unrevoked) encryption key."""
    return "E" in str(k.get("cap", ""))


_HOME: Path | None = None
_HOME_LOCK = threading.Lock()


def _home() -> Path:
    """This process's private keyring (made on first use)."""
    global _HOME
    with _HOME_LOCK:
        if _HOME is None:
            _HOME = _private_home()
        return _HOME


class Encryptor:
    """Encrypts to one station's public key (ASCII armour), for PGP/MIME."""

    def __init__(self, path: Path, key: str) -> None:
        self.info = read_public_key(path, key)
        self._gpg = _gpg(_home())
        imported = self._gpg.import_keys(path.read_bytes())
        if self.info.fingerprint not in (imported.fingerprints or []):
            raise ConfigError(f"{key}: gpg did not import {path}: {imported.summary()}")

    def __call__(self, data: bytes) -> bytes:
        """*data* encrypted to the station's key; OpenPGPError if gpg fails."""
        result = self._gpg.encrypt(data, [self.info.fingerprint], always_trust=True,
                                   armor=True)
        if not result.ok:
            raise OpenPGPError(f"gpg could not encrypt to {self.info.fingerprint}: "
                               f"{result.status or 'no status'}")
        return bytes(result.data)


class Decryptor:
    """Decrypts for the ledger: the officers' GnuPG home (its agent holds the key), or a
    secret key file imported into this process's private keyring, with its passphrase."""

    def __init__(self, *, gnupghome: Path | None = None, secret_key: Path | None = None,
                 passphrase: str = "", key: str = "openpgp_secret_key") -> None:
        self.passphrase = passphrase or None
        if secret_key is not None:
            if not secret_key.is_file():
                raise ConfigError(f"{key}: {secret_key} does not exist: export the station's "
                                  f"private key there (gpg --armor --export-secret-keys)")
            home = _private_home()  # its own: no other secret key to try
            # The agent derives the key from the passphrase for every message; its default
            # cost (calibrated to 100 ms) made each tip ~1 s on a busy box. This keyring
            # lives only while the poller runs, which holds the passphrase anyway.
            (home / "gpg-agent.conf").write_text("s2k-count 65536\n", encoding="ascii")
            self._gpg = _gpg(home)
            imported = self._gpg.import_keys(secret_key.read_bytes())
            if not imported.sec_read:
                raise ConfigError(f"{key}: {secret_key} holds no private key: export it with "
                                  f"gpg --armor --export-secret-keys FINGERPRINT")
        else:
            self._gpg = _gpg(gnupghome or Path.home() / ".gnupg")

    def __call__(self, data: bytes) -> bytes:
        """The plaintext of *data*; OpenPGPError naming why gpg could not decrypt it."""
        result = self._gpg.decrypt(data, passphrase=self.passphrase)
        if not result.ok:
            raise OpenPGPError(_decrypt_problem(result))
        return bytes(result.data)


def _decrypt_problem(result: Any) -> str:
    """gpg's reason, as one line an officer or admin can act on."""
    status, stderr = str(result.status or ""), str(getattr(result, "stderr", ""))
    if "Bad passphrase" in stderr:
        return "the private key's passphrase is wrong (openpgp_passphrase_env)"
    if "pinentry" in stderr.lower() or "No passphrase" in stderr:
        return "the private key needs its passphrase: set openpgp_passphrase_env"
    if "NO_SECKEY" in stderr or "no secret key" in status:
        return "it is encrypted to a key whose private part this station does not have"
    if "NODATA" in stderr or "no data" in status:
        return "its encrypted part holds no OpenPGP data"
    return f"gpg could not decrypt it ({status or 'no status'})"


_ENCRYPTORS: dict[Path, Encryptor] = {}
_ENCRYPTORS_LOCK = threading.Lock()


def encryptor_for(station_id: str, path: Path | None) -> Encryptor | None:
    """The station's Encryptor (its key imported once per process), or None when the
    station has no ``openpgp_key``; ConfigError if the key cannot be used."""
    if path is None:
        return None
    with _ENCRYPTORS_LOCK:
        if path not in _ENCRYPTORS:
            _ENCRYPTORS[path] = Encryptor(path, f"stations.{station_id}.openpgp_key")
        return _ENCRYPTORS[path]
