"""OAuth2 sign-in for Gmail and Microsoft 365 mailboxes: access tokens for XOAUTH2.

Both providers refuse an account's plain password over IMAP and SMTP. The admin makes
a refresh token once (``mailbridge oauth2-token``) and keeps it in the env file; here
it is traded at the provider's token endpoint for an access token that lasts about an
hour. A token is cached until a minute before it expires, and traded again at once
when a server refuses it (Microsoft can end one early). Tokens stay in ``Secret`` and
are never logged. A refused refresh is a ``ConfigError`` that names the fix (a revoked
or expired refresh token, an unknown client, a missing scope); an unreachable endpoint
is a ``TokenError``, tried again later.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .config import OAuth2Settings, Secret
from .core.text import one_line
from .errors import ConfigError, TokenError

if TYPE_CHECKING:
    import httpx

# httpx logs each request at INFO: a journal line per token, and one line per event is ours.
logging.getLogger("httpx").setLevel(logging.WARNING)
EARLY = 60.0  # seconds before its expiry that a token is renewed
TIMEOUT = 30.0
T = TypeVar("T")


class TokenSource:
    """Access tokens for one account, refreshed when due; safe to share between threads."""

    def __init__(self, settings: OAuth2Settings, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self._refresh_token = settings.refresh_token
        self._token: Secret | None = None
        self._until = 0.0
        self._lock = threading.Lock()

    def access_token(self, *, stale: Secret | None = None) -> Secret:
        """The cached token while it lasts; a new one when due, or when *stale* (a token a
        server just refused) is still the cached one."""
        with self._lock:
            due = self._token is None or self.clock() >= self._until
            if due or (stale is not None and stale is self._token):
                self._token, lifetime = self._refresh()
                self._until = self.clock() + max(0.0, lifetime - EARLY)
            assert self._token is not None
            return self._token

    def _refresh(self) -> tuple[Secret, float]:
        s = self.settings
        body = token_request(s, {"grant_type": "refresh_token",
                                 "refresh_token": self._refresh_token.reveal()})
        if isinstance(body.get("refresh_token"), str):  # rotated (Microsoft): use the new one
            self._refresh_token = Secret(body["refresh_token"])
        lifetime = body.get("expires_in", 3600)
        return (Secret(body["access_token"]),
                float(lifetime) if isinstance(lifetime, int | float) else 3600.0)


PENDING = ("authorization_pending", "slow_down")  # a device sign-in not finished yet


def token_request(s: OAuth2Settings, grant: dict[str, str], *,
                  pending: bool = False) -> dict[str, Any]:
    """POST a grant to the token endpoint; the answer has an access token with every
    scope needed, or this raises what the refusal means. With ``pending``, a device
    sign-in not finished yet is answered as it is (its ``error`` says which)."""
    form = {**grant, "client_id": s.client_id, "scope": " ".join((*s.scope, *s.extra_scope))}
    if s.client_secret:
        form["client_secret"] = s.client_secret.reveal()
    import httpx  # here: 60 ms at start-up for every command that never signs in

    try:
        response = httpx.post(s.token_url, data=form, timeout=TIMEOUT)
    except httpx.HTTPError as exc:
        raise TokenError(f"{s.key}: cannot reach the token endpoint {s.token_url} "
                         f"({type(exc).__name__}): check the network and DNS; it is "
                         f"tried again") from exc
    body = _json(response)
    token = body.get("access_token")
    if response.status_code != 200 or not isinstance(token, str) or not token:
        if pending and body.get("error") in PENDING:
            return body
        raise refused(s, response.status_code, body)
    granted = str(body.get("scope", "")).split()
    missing = [scope for scope in s.scope if granted and scope not in granted]
    if missing:
        raise ConfigError(missing_scope(s, missing[0]))
    return body


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def new_token_hint(s: OAuth2Settings) -> str:
    how = f"--provider {s.provider}" if s.provider else f"--token-url {s.token_url}"
    tenant = f" --tenant {s.tenant}" if s.tenant else ""
    return (f"make a new one with `mailbridge oauth2-token {how}{tenant} --client-id "
            f"{s.client_id}` and put it in ${s.refresh_token_env}")


def missing_scope(s: OAuth2Settings, scope: str) -> str:
    return (f"{s.key}: the access token lacks the scope {scope}: grant it to the app "
            f"(API permissions, with consent), then {new_token_hint(s)}")


def refused(s: OAuth2Settings, status: int, body: dict[str, Any]) -> ConfigError | TokenError:
    """What the provider's refusal means, and its fix."""
    error = str(body.get("error", ""))
    said = one_line(str(body.get("error_description", "")), max_length=200)
    said = f" ({said})" if said else ""
    if error == "invalid_grant":
        return ConfigError(f"{s.key}: the refresh token in ${s.refresh_token_env} was refused "
                           f"(invalid_grant: revoked, expired, or made for another client)"
                           f"{said}: {new_token_hint(s)}")
    if error in ("invalid_client", "unauthorized_client"):
        return ConfigError(f"{s.key}: the provider does not accept client_id {s.client_id!r} "
                           f"or its secret ({error}){said}: copy both again from the app "
                           f"registration")
    if error == "invalid_scope":
        return ConfigError(missing_scope(s, " ".join(s.scope)))
    if error in ("expired_token", "authorization_declined", "access_denied"):
        return ConfigError(f"{s.key}: the sign-in was declined or took too long ({error}): "
                           f"run `mailbridge oauth2-token` again")
    what = error or "without an access token"
    return TokenError(f"{s.key}: the token endpoint answered {status} {what}{said}; it is "
                      f"tried again")



@functools.cache
def token_source(settings: OAuth2Settings) -> TokenSource:
    """One source per account for the whole process, so every connection shares its cache."""
    return TokenSource(settings)


def xoauth2(user: str, token: Secret) -> str:
    """The SASL XOAUTH2 initial response, before base64 (smtplib encodes it)."""
    return f"user={user}\x01auth=Bearer {token.reveal()}\x01\x01"


def sign_in(source: TokenSource, attempt: Callable[[Secret], T],
            refused_by_server: type[Exception] | tuple[type[Exception], ...]) -> T:
    """``attempt`` with the cached token; when the server refuses it, once more with a new
    one (a token can end before its time)."""
    token = source.access_token()
    try:
        return attempt(token)
    except refused_by_server:
        return attempt(source.access_token(stale=token))
