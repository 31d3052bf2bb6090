"""Debian's nginx and Caddy, run as the test's user with everything under a folder of
their own, in front of a real ``mailbridge serve``: the shipped files in deploy/, with
only their ports, certificate paths and upstream replaced (each replacement must
match, so a changed deploy file changes what is tested)."""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import signal
import socket
import ssl
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.e2e.support import ROOT, free_port
from tests.waiting import wait_for

NGINX_SITE = ROOT / "deploy" / "nginx" / "mailbridge.conf"
CADDYFILE = ROOT / "deploy" / "caddy" / "Caddyfile"
DEBIAN_NGINX_CONF = Path("/etc/nginx/nginx.conf")
NAME = "tinbao.example.org"


def replaced(text: str, changes: Mapping[str, str], where: str) -> str:
    for old, new in changes.items():
        assert old in text, f"{where} no longer has {old!r}: update the test with it"
        text = text.replace(old, new)
    return text


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


def self_signed(folder: Path) -> Certificate:
    """A certificate for 127.0.0.1 and the deploy files' name, made by ``cryptography``."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAME)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName(NAME), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    paths = Certificate(folder / "cert.pem", folder / "key.pem")
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    paths.key.chmod(0o600)
    return paths


@dataclass(frozen=True)
class Proxy:
    https: str  # base URL of the HTTPS side
    http: str  # base URL of the plain-HTTP side (it only redirects)
    https_port: int
    prefix: Path  # every file the proxy writes is under it (its configuration is not)
    main_log: Path  # where its own start and stop lines go (never a client)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@contextmanager
def _running(argv: list[str], prefix: Path, https_port: int, http_port: int,
             env: Mapping[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    with (prefix / "proxy.out").open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=prefix,
                                env=None if env is None else dict(env))
    try:
        wait_for(lambda: proc.poll() is not None or (_listening(https_port)
                                                      and _listening(http_port)),
                 f"{argv[0]} listening", 30)
        assert proc.poll() is None, (prefix / "proxy.out").read_text(errors="replace")
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _binary(name: str) -> str:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists()
                                  else None)
    assert path, f"{name} is missing: run `bash scripts/system-packages`"
    return path


@contextmanager
def nginx(folder: Path, relay_port: int, cert: Certificate) -> Iterator[Proxy]:
    """Debian's nginx.conf and the shipped site, with paths under ``folder``."""
    prefix, inputs = folder / "nginx", folder / "nginx-conf"
    logs = prefix / "logs"
    logs.mkdir(parents=True)
    inputs.mkdir()
    https_port, http_port = free_port(), free_port()
    site = inputs / "mailbridge.conf"
    site.write_text(replaced(NGINX_SITE.read_text(encoding="utf-8"), {
        "listen 80 default_server;": f"listen 127.0.0.1:{http_port} default_server;",
        "listen [::]:80 default_server;": "",
        "listen 443 ssl http2 default_server;":
            f"listen 127.0.0.1:{https_port} ssl http2 default_server;",
        "listen [::]:443 ssl http2 default_server;": "",
        f"/etc/letsencrypt/live/{NAME}/fullchain.pem": str(cert.cert),
        f"/etc/letsencrypt/live/{NAME}/privkey.pem": str(cert.key),
        "proxy_pass http://127.0.0.1:8080;": f"proxy_pass http://127.0.0.1:{relay_port};",
    }, NGINX_SITE.name), encoding="utf-8")
    temp = "".join(f"\t{kind}_temp_path {prefix / kind};\n"
                   for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    # Debian's own main file, at its most talkative (info) for what is not the site's.
    conf = inputs / "nginx.conf"
    conf.write_text(replaced(DEBIAN_NGINX_CONF.read_text(encoding="utf-8"), {
        "user www-data;": "",
        "pid /run/nginx.pid;": f"pid {prefix / 'nginx.pid'};",
        "error_log /var/log/nginx/error.log;": f"error_log {logs / 'error.log'} info;",
        "access_log /var/log/nginx/access.log;": f"access_log {logs / 'access.log'};\n{temp}",
        "include /etc/nginx/sites-enabled/*;": f"include {site};",
    }, str(DEBIAN_NGINX_CONF)), encoding="utf-8")
    argv = [_binary("nginx"), "-p", str(prefix), "-c", str(conf), "-e", str(logs / "stderr.log")]
    check = subprocess.run([*argv, "-t"], capture_output=True, text=True, timeout=60,
                           check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    with _running([*argv, "-g", "daemon off;"], prefix, https_port, http_port):
        yield Proxy(f"https://127.0.0.1:{https_port}", f"http://127.0.0.1:{http_port}",
                    https_port, prefix, logs / "error.log")


@contextmanager
def caddy(folder: Path, relay_port: int, cert: Certificate) -> Iterator[Proxy]:
    """Debian's Caddy with the shipped Caddyfile; its home, data and config under
    ``folder`` (everything it stores is searched too)."""
    prefix, inputs = folder / "caddy", folder / "caddy-conf"
    prefix.mkdir()
    inputs.mkdir()
    https_port, http_port = free_port(), free_port()
    caddyfile = inputs / "Caddyfile"
    caddyfile.write_text(replaced(CADDYFILE.read_text(encoding="utf-8"), {
        "\tadmin off\n": f"\tadmin off\n\thttp_port {http_port}\n\thttps_port {https_port}\n",
        f"{NAME} {{\n": f"127.0.0.1 {{\n\ttls {cert.cert} {cert.key}\n",
        "reverse_proxy 127.0.0.1:8080 {": f"reverse_proxy 127.0.0.1:{relay_port} {{",
    }, CADDYFILE.name), encoding="utf-8")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(prefix), "XDG_DATA_HOME": str(prefix),
           "XDG_CONFIG_HOME": str(prefix)}
    argv = [_binary("caddy"), "run", "--config", str(caddyfile), "--adapter", "caddyfile"]
    check = subprocess.run([_binary("caddy"), "validate", *argv[2:]], env=env, cwd=prefix,
                           capture_output=True, text=True, timeout=60, check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    with _running(argv, prefix, https_port, http_port, env):
        yield Proxy(f"https://127.0.0.1:{https_port}", f"http://127.0.0.1:{http_port}",
                    https_port, prefix, prefix / "proxy.out")
