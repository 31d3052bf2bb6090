"""OpenPGP keys made by the tests with the real gpg, once per run (keys are slow to make).

``station_keys`` makes, in a temporary GnuPG home, the station's key (a certifying
primary and an encryption subkey, its private part protected by a passphrase), a
second key whose private part does not fit, and the keys ``mailbridge check`` must
refuse: expired, revoked and signing-only. Each is exported to its own file.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

PASSPHRASE = "núi đá 2026"


@dataclass(frozen=True)
class StationKeys:
    home: Path  # a GnuPG home holding every private key (for ``gpg --decrypt``)
    public: Path
    secret: Path  # protected by PASSPHRASE
    fingerprint: str
    other_public: Path
    other_secret: Path  # no passphrase
    expired: Path
    revoked: Path
    signing_only: Path


def gpg(home: Path, *args: str, data: bytes | None = None) -> bytes:
    return subprocess.run(["gpg", "--homedir", str(home), "--batch", "--yes", *args],
                          input=data, capture_output=True, check=True).stdout


def _fingerprint(home: Path, user_id: str) -> str:
    out = gpg(home, "--with-colons", "--list-keys", user_id).decode()
    return next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr"))


def make_key(home: Path, user_id: str, *, passphrase: str = "", expire: str = "2y",
          usage: str = "cert", subkey: bool = True, extra: tuple[str, ...] = ()) -> str:
    gpg(home, *extra, "--passphrase", passphrase, "--pinentry-mode", "loopback",
         "--quick-gen-key", user_id, "ed25519", usage, expire)
    fpr = _fingerprint(home, user_id)
    if subkey:
        gpg(home, *extra, "--passphrase", passphrase, "--pinentry-mode", "loopback",
             "--quick-add-key", fpr, "cv25519", "encr", expire)
    return fpr


@pytest.fixture(scope="session")
def station_keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StationKeys]:
    root = tmp_path_factory.mktemp("openpgp")
    home = root / "home"
    home.mkdir(mode=0o700)
    fpr = make_key(home, "Trạm Nậm Cha <ncs@station.test>", passphrase=PASSPHRASE)
    other = make_key(home, "Another <other@station.test>")
    # Made two years ago with one year to live.
    made = (datetime.now(UTC) - timedelta(days=730)).strftime("%Y%m%dT%H%M%S")
    expired = make_key(home, "Expired <expired@station.test>", expire="1y",
                       extra=("--faked-system-time", made))
    revoked = make_key(home, "Revoked <revoked@station.test>")
    certificate = (home / "openpgp-revocs.d" / f"{revoked}.rev").read_text()
    gpg(home, "--import", data=certificate.replace("\n:-----", "\n-----").encode())
    signing = make_key(home, "Signs <signs@station.test>", usage="sign", subkey=False)

    def export(name: str, fingerprint: str, *, secret: str | None = None) -> Path:
        path = root / name
        if secret is None:
            path.write_bytes(gpg(home, "--armor", "--export", fingerprint))
        else:
            path.write_bytes(gpg(home, "--passphrase", secret, "--pinentry-mode", "loopback",
                                  "--armor", "--export-secret-keys", fingerprint))
        return path

    yield StationKeys(
        home=home, public=export("ncs.asc", fpr),
        secret=export("ncs-secret.asc", fpr, secret=PASSPHRASE), fingerprint=fpr,
        other_public=export("other.asc", other),
        other_secret=export("other-secret.asc", other, secret=""),
        expired=export("expired.asc", expired), revoked=export("revoked.asc", revoked),
        signing_only=export("signs.asc", signing))
    subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False,
                   capture_output=True, env={**os.environ})
