"""OAuth2 settings and access tokens: the providers' presets, each mistake as one line,
and the cache (a token is reused while it lasts, by an injected clock, not the wall's)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mailbridge.config import OAuth2Settings, Secret, load_config
from mailbridge.errors import ConfigError, TokenError
from mailbridge.oauth2 import TokenSource, xoauth2
from tests.e2e.support import free_port
from tests.servers import authserver
from tests.servers.authserver import AuthServer

STATION = """
[relay]
address = "tips@relay.example.test"
[ledger]
relay_public_keys = ["kf/9GWuaNKzKSzsNFT/Us4rHJ2ZaeOEr3X4L2AkeBPw="]
[[stations]]
id = "ncs"
mailbox = "tips@ncs.example.test"
[stations.imap]
host = "imap.gmail.com"
username = "tips@ncs.example.test"
folders = ["INBOX"]
"""
ENV = {"NCS_REFRESH": "rt-1", "NCS_CLIENT_SECRET": "cs-1"}


def _load(tmp_path: Path, oauth2: str, extra: str = "") -> OAuth2Settings:
    path = tmp_path / "mailbridge.toml"
    path.write_text(STATION + extra + "[stations.imap.oauth2]\n" + oauth2, encoding="utf-8")
    imap = load_config(path, env=ENV, role="station").stations["ncs"].imap
    assert imap is not None and imap.oauth2 is not None
    return imap.oauth2


def _errors(tmp_path: Path, oauth2: str, extra: str = "") -> list[str]:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, oauth2, extra)
    return str(caught.value).splitlines()


def test_presets_fill_the_token_url_and_the_scope_each_protocol_needs(tmp_path: Path) -> None:
    google = _load(tmp_path, 'provider = "google"\nclient_id = "c"\n'
                             'client_secret_env = "NCS_CLIENT_SECRET"\n'
                             'refresh_token_env = "NCS_REFRESH"\n')
    assert google.token_url == "https://oauth2.googleapis.com/token"
    assert google.scope == ("https://mail.google.com/",)
    assert google.refresh_token.reveal() == "rt-1" and "rt-1" not in repr(google)
    microsoft = _load(tmp_path, 'provider = "microsoft"\ntenant = "contoso.onmicrosoft.com"\n'
                                'client_id = "c"\nrefresh_token_env = "NCS_REFRESH"\n')
    assert microsoft.token_url == ("https://login.microsoftonline.com/contoso.onmicrosoft.com"
                                   "/oauth2/v2.0/token")
    assert microsoft.scope == ("https://outlook.office.com/IMAP.AccessAsUser.All",)
    assert microsoft.extra_scope == ("offline_access",)
    assert microsoft.key == "stations.ncs.imap.oauth2"


def test_each_mistake_is_one_line_naming_the_key(tmp_path: Path) -> None:
    lines = _errors(tmp_path, 'provider = "microsoft"\nclient_id = "c"\n')
    assert any(line.startswith("stations.ncs.imap.oauth2.tenant is missing: copy the "
                               "Directory (tenant) ID") for line in lines), lines
    assert any(line.startswith("stations.ncs.imap.oauth2.refresh_token_env is missing")
               for line in lines), lines
    lines = _errors(tmp_path, 'token_url = "http://auth.example.test/token"\nscope = "s"\n'
                              'client_id = "c"\nrefresh_token_env = "NCS_REFRESH"\n')
    assert lines == ["stations.ncs.imap.oauth2.token_url must be an https:// URL, got "
                     f"'http://auth.example.test/token' ({tmp_path / 'mailbridge.toml'})"]
    lines = _errors(tmp_path, 'provider = "yahoo"\nclient_id = "c"\n'
                              'refresh_token_env = "NCS_REFRESH"\n')
    assert lines[0].startswith('stations.ncs.imap.oauth2.provider must be "google" or '
                               '"microsoft", got \'yahoo\''), lines
    lines = _errors(tmp_path, 'provider = "google"\nclient_id = "c"\n'
                              'refresh_token_env = "NCS_REFRESH"\n',
                    extra='password_env = "NCS_CLIENT_SECRET"\n')
    assert lines == ["stations.ncs.imap.password_env and oauth2 exclude each other: keep the "
                     "[oauth2] table or the password, not both "
                     f"({tmp_path / 'mailbridge.toml'})"]


@pytest.fixture
def auth() -> Iterator[AuthServer]:
    with authserver.running("tips@ncs.example.test") as state:
        yield state


def _settings(auth: AuthServer, refresh_token: str, *, url: str = "") -> OAuth2Settings:
    return OAuth2Settings(key="stations.ncs.imap.oauth2", token_url=url or f"{auth.url}/token",
                          scope=(authserver.SCOPE,), client_id=authserver.CLIENT_ID,
                          client_secret=Secret(""), refresh_token=Secret(refresh_token),
                          refresh_token_env="NCS_REFRESH")


def test_a_token_is_kept_until_a_minute_before_it_expires(auth: AuthServer) -> None:
    now = [0.0]
    source = TokenSource(_settings(auth, auth.new_refresh_token()), clock=lambda: now[0])
    first = source.access_token()
    now[0] = 3599 - 61  # the stand-in's tokens last 3599 s
    assert source.access_token() is first and auth.refreshes == 1
    now[0] = 3599 - 60
    assert source.access_token() is not first and auth.refreshes == 2
    second = source.access_token()
    assert source.access_token(stale=second) is not second and auth.refreshes == 3
    assert source.access_token(stale=first) is not first and auth.refreshes == 3  # not cached


def test_refusals_say_what_to_do(auth: AuthServer) -> None:
    with pytest.raises(ConfigError, match=r"^stations\.ncs\.imap\.oauth2: the refresh token in "
                                          r"\$NCS_REFRESH was refused \(invalid_grant"):
        TokenSource(_settings(auth, "rt-unknown")).access_token()
    auth.scope = "https://other.example.test/"
    with pytest.raises(ConfigError, match="the access token lacks the scope "
                                          "https://mail.example.test/: grant it"):
        TokenSource(_settings(auth, auth.new_refresh_token())).access_token()
    gone = f"http://127.0.0.1:{free_port()}/token"
    with pytest.raises(TokenError, match="cannot reach the token endpoint .* it is tried again"):
        TokenSource(_settings(auth, "rt", url=gone)).access_token()


def test_the_xoauth2_string() -> None:
    assert xoauth2("a@b.test", Secret("t")) == "user=a@b.test\x01auth=Bearer t\x01\x01"
