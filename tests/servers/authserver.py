"""A stand-in OAuth2 authorization server on 127.0.0.1, in place of Google's or Microsoft's.

One small HTTP server with what mailbridge and Dovecot talk to:
- ``GET /authorize``: the browser's sign-in; it approves at once and redirects to the
  client's loopback ``redirect_uri`` with a code bound to the PKCE challenge;
- ``POST /devicecode``: a device sign-in (RFC 8628), approved by ``approve(user_code)``;
- ``POST /token``: ``authorization_code`` (checks the PKCE verifier), device-code and
  ``refresh_token`` grants, with the error codes the real providers use;
- ``POST /introspect``: what Dovecot's oauth2 passdb asks (RFC 7662): is this access
  token active, and whose is it.
Tests revoke refresh tokens and expire access tokens by hand, never by the clock.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

CLIENT_ID = "mailbridge-test"
SCOPE = "https://mail.example.test/"


@dataclass
class AuthServer:
    """State of the stand-in: which tokens are good, and what was asked of it."""

    user: str
    scope: str = SCOPE  # what a token grants (and its response says)
    refresh_tokens: set[str] = field(default_factory=set)
    access_tokens: set[str] = field(default_factory=set)
    codes: dict[str, tuple[str, str]] = field(default_factory=dict)  # code: challenge, uri
    devices: dict[str, tuple[str, bool]] = field(default_factory=dict)  # device: user, done
    refreshes: int = 0
    introspections: int = 0
    url: str = ""

    def new_refresh_token(self) -> str:
        token = "rt-" + secrets.token_urlsafe(16)
        self.refresh_tokens.add(token)
        return token

    def expire_access_tokens(self) -> None:
        """Every access token given so far is no longer active (as after its hour)."""
        self.access_tokens.clear()

    def revoke(self, refresh_token: str) -> None:
        self.refresh_tokens.discard(refresh_token)

    def approve(self, user_code: str) -> None:
        """The person typed *user_code* at the provider's page and signed in."""
        for device, (code, _done) in list(self.devices.items()):
            if code == user_code:
                self.devices[device] = (code, True)

    def device_code(self, form: dict[str, str]) -> tuple[int, dict[str, object]]:
        if form.get("client_id") != CLIENT_ID:
            return 400, {"error": "invalid_client"}
        device, user_code = secrets.token_urlsafe(16), secrets.token_hex(4).upper()
        self.devices[device] = (user_code, False)
        return 200, {"device_code": device, "user_code": user_code, "interval": 1,
                     "verification_uri": f"{self.url}/device", "expires_in": 900,
                     "message": f"To sign in, open {self.url}/device and enter the code "
                                f"{user_code}."}

    # -- endpoints ----------------------------------------------------------------------

    def token(self, form: dict[str, str]) -> tuple[int, dict[str, object]]:
        if form.get("client_id") != CLIENT_ID:
            return 401, {"error": "invalid_client", "error_description": "unknown client"}
        grant = form.get("grant_type")
        if grant == "refresh_token":
            if form.get("refresh_token") not in self.refresh_tokens:
                return 400, {"error": "invalid_grant",
                             "error_description": "Token has been expired or revoked."}
            self.refreshes += 1
            return 200, self._access()
        if grant == "urn:ietf:params:oauth:grant-type:device_code":
            if form.get("device_code") not in self.devices:
                return 400, {"error": "expired_token"}
            if not self.devices[form["device_code"]][1]:
                return 400, {"error": "authorization_pending"}
            del self.devices[form["device_code"]]
            return 200, dict(self._access(), refresh_token=self.new_refresh_token())
        if grant == "authorization_code":
            challenge, uri = self.codes.pop(form.get("code", ""), ("", ""))
            verifier = form.get("code_verifier", "")
            digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
            if not challenge or digest.rstrip(b"=").decode() != challenge \
                    or form.get("redirect_uri") != uri:
                return 400, {"error": "invalid_grant", "error_description": "bad code"}
            return 200, dict(self._access(), refresh_token=self.new_refresh_token())
        return 400, {"error": "unsupported_grant_type"}

    def _access(self) -> dict[str, object]:
        token = "at-" + secrets.token_urlsafe(16)
        self.access_tokens.add(token)
        return {"access_token": token, "token_type": "Bearer", "expires_in": 3599,
                "scope": self.scope}

    def authorize(self, query: dict[str, str]) -> str:
        """The redirect after an approved sign-in."""
        code = "code-" + secrets.token_urlsafe(8)
        self.codes[code] = (query.get("code_challenge", ""), query.get("redirect_uri", ""))
        params = {"code": code, "state": query.get("state", "")}
        return f"{query['redirect_uri']}?{urlencode(params)}"

    def introspect(self, form: dict[str, str]) -> dict[str, object]:
        self.introspections += 1
        if form.get("token") in self.access_tokens:
            return {"active": True, "username": self.user}
        return {"active": False}


def _handler(state: AuthServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def _form(self) -> dict[str, str]:
            length = int(self.headers.get("Content-Length", "0"))
            pairs = parse_qs(self.rfile.read(length).decode())
            return {k: v[0] for k, v in pairs.items()}

        def _json(self, status: int, body: dict[str, object]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path != "/authorize":
                self._json(404, {"error": "not_found"})
                return
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            self.send_response(302)
            self.send_header("Location", state.authorize(query))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self) -> None:
            if self.path == "/devicecode":
                self._json(*state.device_code(self._form()))
            elif self.path == "/token":
                self._json(*state.token(self._form()))
            elif self.path == "/introspect":
                self._json(200, state.introspect(self._form()))
            else:
                self._json(404, {"error": "not_found"})

    return Handler


@contextmanager
def running(user: str) -> Iterator[AuthServer]:
    """The stand-in, serving on a free loopback port until the block ends."""
    state = AuthServer(user)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
