"""``mailbridge oauth2-token``: the admin signs in once, and gets a refresh token.

The installed-app flow (RFC 8252) with PKCE (RFC 7636): the browser signs in at the
provider, which sends it back to a one-request HTTP server on 127.0.0.1; the code it
carries is traded for a refresh token. A headless box is reached through
``ssh -L PORT:127.0.0.1:PORT``, so the redirect lands on the box. Microsoft also has
the device-code flow (RFC 8628, ``--device``): a code typed on any browser, no tunnel.
The token is printed on stdout as ``NAME=VALUE`` for the env file, and nothing else
keeps it.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import TextIO
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from .config import OAUTH2_PROVIDERS, OAuth2Settings, Secret
from .errors import ConfigError, TokenError
from .oauth2 import TIMEOUT, refused, token_request

DEVICE_URLS = {"microsoft": "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/devicecode"}
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
DONE_PAGE = (b"<!doctype html><meta charset=utf-8><title>mailbridge</title>"
             b"<p>Signed in. You can close this tab and go back to the terminal.")


@dataclass(frozen=True)
class Flow:
    """Where to sign in and what to ask for."""

    authorize_url: str
    token: OAuth2Settings  # token_url, client, scopes; key and env name for messages
    extra_params: tuple[tuple[str, str], ...] = ()


def flow(provider: str, client_id: str, *, tenant: str = "", client_secret: str = "",
         authorize_url: str = "", token_url: str = "", scope: str = "",
         env_name: str = "MAILBRIDGE_OAUTH2_REFRESH_TOKEN") -> Flow:
    """The provider's preset (IMAP and SMTP scopes together), or explicit URLs."""
    preset = OAUTH2_PROVIDERS.get(provider)
    if provider and preset is None:
        raise ConfigError(f'--provider must be "google" or "microsoft", got {provider!r}')
    if provider == "microsoft" and not tenant:
        raise ConfigError("--tenant is missing: copy the Directory (tenant) ID from the "
                          "app's Overview page in Entra ID")
    if preset is None and not (token_url and scope):
        raise ConfigError("without --provider, give --token-url and --scope (and "
                          "--authorize-url, or --device with --device-url)")
    scopes = scope.split() if scope else list(dict.fromkeys(
        (preset.imap_scope, preset.smtp_scope)) if preset else [])
    settings = OAuth2Settings(
        key="oauth2-token",
        token_url=token_url or (preset.token_url.format(tenant=tenant) if preset else ""),
        scope=tuple(scopes), client_id=client_id, client_secret=Secret(client_secret),
        refresh_token=Secret(""), refresh_token_env=env_name,
        extra_scope=preset.extra if preset else (), provider=provider, tenant=tenant)
    # Google gives a refresh token only for offline access, and again only on consent.
    extra = (("access_type", "offline"), ("prompt", "consent")) if provider == "google" else ()
    return Flow(authorize_url or (preset.authorize_url.format(tenant=tenant) if preset else ""),
                settings, extra)


def pkce() -> tuple[str, str]:
    """(verifier, S256 challenge)."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class _OneRedirect(HTTPServer):
    timed_out = False

    def handle_timeout(self) -> None:
        self.timed_out = True


def _loopback(port: int) -> tuple[_OneRedirect, dict[str, str]]:
    """A server that takes one redirect and keeps its query."""
    got: dict[str, str] = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass  # the query holds the code

        def do_GET(self) -> None:
            query = parse_qs(urlsplit(self.path).query)
            if "code" in query or "error" in query:
                got.update({k: v[0] for k, v in query.items()})
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(DONE_PAGE)))
            self.end_headers()
            self.wfile.write(DONE_PAGE)

    try:
        server = _OneRedirect(("127.0.0.1", port), Handler)
    except OSError as exc:
        raise ConfigError(f"--port {port} cannot be used on 127.0.0.1 ({exc.strerror}): "
                          f"choose another") from exc
    return server, got


def run_oauth2_token(f: Flow, *, port: int, timeout: float = 600.0,
                     out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Sign in through the browser, print ``NAME=refresh token``; 0 when done."""
    if not f.authorize_url:
        raise ConfigError("--authorize-url is missing: the provider's sign-in address")
    server, got = _loopback(port)
    with server:
        port = server.server_address[1]
        host = "localhost" if f.token.provider == "microsoft" else "127.0.0.1"
        redirect = f"http://{host}:{port}/"
        verifier, challenge = pkce()
        state = secrets.token_urlsafe(16)
        params = {"response_type": "code", "client_id": f.token.client_id,
                  "redirect_uri": redirect, "scope": " ".join(
                      (*f.token.scope, *f.token.extra_scope)),
                  "state": state, "code_challenge": challenge,
                  "code_challenge_method": "S256", **dict(f.extra_params)}
        print(f"On a box without a browser, first run on your own computer:\n"
              f"  ssh -L {port}:127.0.0.1:{port} THIS-BOX\n"
              f"Then open this address in the browser there, and sign in as the station "
              f"mailbox:\n{f.authorize_url}?{urlencode(params)}\n"
              f"Waiting for the sign-in on 127.0.0.1:{port} ...", file=err, flush=True)
        server.timeout = timeout
        while not got:
            server.handle_request()
            if server.timed_out:
                raise ConfigError(f"no sign-in came back within {timeout:.0f} s: run "
                                  f"`mailbridge oauth2-token` again")
    if got.get("state") != state:
        raise ConfigError("the sign-in came back with the wrong state: run the command "
                          "again and use the newest address only")
    if "error" in got:
        raise ConfigError(f"the provider refused the sign-in ({got['error']}: "
                          f"{got.get('error_description', '')}): check the app registration "
                          f"and the redirect URI {redirect}")
    body = token_request(f.token, {"grant_type": "authorization_code", "code": got["code"],
                                   "redirect_uri": redirect, "code_verifier": verifier})
    return _print_refresh_token(f, body, out, err)


def run_device_code(f: Flow, device_url: str, *, out: TextIO = sys.stdout,
                    err: TextIO = sys.stderr, sleep: Callable[[float], None] = time.sleep,
                    clock: Callable[[], float] = time.monotonic) -> int:
    """Show the code to type at the provider's page, then ask until it is signed in."""
    scope = " ".join((*f.token.scope, *f.token.extra_scope))
    try:
        response = httpx.post(device_url, data={"client_id": f.token.client_id, "scope": scope},
                              timeout=TIMEOUT)
    except httpx.HTTPError as exc:
        raise TokenError(f"cannot reach {device_url} ({type(exc).__name__}): check the "
                         f"network and DNS") from exc
    try:
        device = response.json()
    except ValueError:
        device = {}
    if response.status_code != 200 or not isinstance(device, dict) \
            or "device_code" not in device:
        raise refused(f.token, response.status_code, device if isinstance(device, dict) else {})
    print(device.get("message") or f"Open {device.get('verification_uri')} and enter the "
          f"code {device.get('user_code')}", file=err, flush=True)
    interval = float(device.get("interval", 5))
    deadline = clock() + float(device.get("expires_in", 900))
    while True:
        body = token_request(f.token, {"grant_type": DEVICE_GRANT,
                                       "device_code": device["device_code"]}, pending=True)
        if "access_token" in body:
            return _print_refresh_token(f, body, out, err)
        interval += 5 if body.get("error") == "slow_down" else 0
        if clock() + interval > deadline:
            raise ConfigError("the code expired before the sign-in: run `mailbridge "
                              "oauth2-token --device` again")
        sleep(interval)


def _print_refresh_token(f: Flow, body: dict[str, object], out: TextIO, err: TextIO) -> int:
    refresh = body.get("refresh_token")
    if not isinstance(refresh, str) or not refresh:
        raise ConfigError("the provider gave no refresh token: for Microsoft, allow "
                          "offline_access; for Google, remove the app's access in the "
                          "account's security settings and sign in again")
    print("Signed in. Put this line in the env file beside the config (mode 0600), then "
          "`mailbridge check --connect`:", file=err)
    print(f"{f.token.refresh_token_env}={refresh}", file=out, flush=True)
    return 0

