"""``mailbridge oauth2-token`` against a stand-in provider: the browser's sign-in comes
back to the command's loopback server, the code is traded with its PKCE verifier, and
the refresh token printed is one the provider honours."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from mailbridge.config import OAuth2Settings, Secret
from mailbridge.oauth2 import TokenSource
from tests.e2e.support import ROOT
from tests.servers import authserver
from tests.servers.authserver import AuthServer


def _sign_in(auth: AuthServer, client_id: str, tmp_path: Path) -> tuple[int, str, str]:
    """Run the command, follow the address it prints as a browser would; (exit, out, err)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailbridge", "oauth2-token", "--client-id", client_id,
         "--authorize-url", f"{auth.url}/authorize", "--token-url", f"{auth.url}/token",
         "--scope", authserver.SCOPE, "--port", "0", "--env-name", "NCS_REFRESH"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={"PATH": "", "HOME": str(tmp_path)})
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if line.startswith(f"{auth.url}/authorize?"):
            break
    else:
        proc.kill()
        raise AssertionError(f"no sign-in address: {''.join(lines)}")
    page = httpx.get(line.strip(), follow_redirects=True, timeout=30)
    assert page.status_code == 200 and "Signed in" in page.text
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, "".join(lines) + err


def test_the_printed_refresh_token_is_one_the_provider_honours(tmp_path: Path) -> None:
    with authserver.running("station1@example.test") as auth:
        code, out, err = _sign_in(auth, authserver.CLIENT_ID, tmp_path)
        assert code == 0, err
        assert "ssh -L " in err and ":127.0.0.1:" in err
        name, _, token = out.strip().partition("=")
        assert name == "NCS_REFRESH" and token in auth.refresh_tokens
        assert token not in err  # only stdout carries it, for the env file
        settings = OAuth2Settings(key="k", token_url=f"{auth.url}/token",
                                  scope=(authserver.SCOPE,), client_id=authserver.CLIENT_ID,
                                  client_secret=Secret(""), refresh_token=Secret(token),
                                  refresh_token_env="NCS_REFRESH")
        assert TokenSource(settings).access_token().reveal() in auth.access_tokens


def test_an_unknown_client_is_one_line_naming_the_fix(tmp_path: Path) -> None:
    with authserver.running("station1@example.test") as auth:
        code, out, err = _sign_in(auth, "someone-else", tmp_path)
    assert code == 2 and out == ""
    assert "does not accept client_id 'someone-else' or its secret (invalid_client" in err
    assert "Traceback" not in err


def test_the_device_code_sign_in(tmp_path: Path) -> None:
    """Microsoft's other way: the command shows a code, the person types it in any
    browser and signs in; the command asks until then."""
    with authserver.running("station1@example.test") as auth:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mailbridge", "oauth2-token", "--device",
             "--client-id", authserver.CLIENT_ID, "--device-url", f"{auth.url}/devicecode",
             "--token-url", f"{auth.url}/token", "--scope", authserver.SCOPE],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
            env={"PATH": "", "HOME": str(tmp_path)})
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert line.startswith(f"To sign in, open {auth.url}/device and enter the code "), line
        auth.approve(line.strip().rstrip(".").rsplit(" ", 1)[1])
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        name, _, token = out.strip().partition("=")
        assert name == "MAILBRIDGE_OAUTH2_REFRESH_TOKEN" and token in auth.refresh_tokens
