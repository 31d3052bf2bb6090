"""``mailbridge demo``: the whole chain on one machine, with no mail server.

Writes a demo configuration (two tip stations and a feedback box, delivering into
Maildirs under the demo folder), then runs the two roles as separate processes, exactly as in
production: ``serve`` (the public relay) and ``poll`` (the station side, here
indexing the Maildirs). A few sample tips go through the real web form so the
mailboxes and the ledger have something to show. Ctrl-C and SIGTERM stop both
children before the demo exits.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import wave
from html.parser import HTMLParser
from pathlib import Path
from types import FrameType

from .config import Settings, load_config
from .errors import ConfigError, RuntimeFailure

DEMO_TOML = """\
# Demo configuration written by `mailbridge demo`. Everything stays in this folder.
[relay]
address = "tips@relay.demo.test"
domain = "relay.demo.test"
database = "sqlite:///relay.db"
secret_env = "MAILBRIDGE_SECRET"
listen_host = "127.0.0.1"
listen_port = {port}
public_url = "http://127.0.0.1:{port}"
# Every demo tip comes from this machine: the limit must not stop `--seed N`.
rate_limit_per_hour = {rate}
# Officers' replies: send them to the Reply-To of a tip (reply+TOKEN@relay.demo.test)
# through this port; the demo mailboxes below may answer.
smtp_listen = "127.0.0.1:{smtp_port}"

[ledger]
database = "sqlite:///ledger.db"
attachments_dir = "attachments"

[[stations]]
id = "ncs"
name = "Đồn Biên phòng Nậm Cha (demo)"
ref_prefix = "NCS"
mailbox = "tinbao@ncs.demo.test"
maildir = "mail/ncs"
officers = {{ {user} = "Cán bộ trực ban" }}
officer_senders = ["tinbao@ncs.demo.test", "tinbao@pvs.demo.test"]
# Spoken instructions, made by `mailbridge demo` with espeak-ng (vi.m4a).
audio_prompts = "prompts/ncs"
placements = [
  {{ id = "cho", label = "Chợ phiên" }},
  {{ id = "truong", label = "Trường tiểu học" }},
  {{ id = "tram-y-te", label = "Trạm y tế xã" }},
]

[[stations]]
id = "pvs"
name = "Đồn Biên phòng Pa Vệ (demo)"
ref_prefix = "PVS"
mailbox = "tinbao@pvs.demo.test"
maildir = "mail/pvs"
officers = {{ {user} = "Cán bộ trực ban" }}
officer_senders = ["tinbao@ncs.demo.test", "tinbao@pvs.demo.test"]
placements = [
  {{ id = "nha-van-hoa", label = "Nhà văn hóa bản" }},
]

# A feedback box ("hòm thư góp ý"): the unit's soldiers send their opinions to its command.
[[stations]]
id = "gy"
name = "Hòm thư góp ý Đồn Nậm Cha (demo)"
purpose = "feedback"
ref_prefix = "GY"
mailbox = "gopy@ncs.demo.test"
maildir = "mail/gy"
officers = {{ {user} = "Cán bộ trực ban" }}
placements = [
  {{ id = "nha-an", label = "Nhà ăn" }},
]
"""

DEMO_RATE = 100_000  # tips per hour from one network: the demo's own seeding, never limited
SAMPLES = (
    ("ncs", "cho", "smuggling",
     "Có người lạ mang nhiều gói hàng qua đường mòn sau chợ vào tối thứ bảy."),
    ("ncs", "truong", "drugs", "Thấy người bán thuốc lạ cho thanh niên gần cổng trường."),
    ("pvs", "nha-van-hoa", "residence",
     "Nhà ông ở cuối bản có khách lạ ở lại nhiều ngày, không khai báo."),
)


def write_demo_config(folder: Path, port: int, smtp_port: int = 2525) -> Path:
    """Write demo/mailbridge.toml and demo/.env once; later runs keep them."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "mailbridge.toml"
    if not config.exists():
        user = getpass.getuser()
        if not user.replace("-", "").replace("_", "").isalnum():
            user = "officer"
        config.write_text(DEMO_TOML.format(port=port, user=f'"{user}"', rate=DEMO_RATE,
                                           smtp_port=smtp_port), encoding="utf-8")
    env = folder / ".env"
    if not env.exists():
        env.write_text(f"MAILBRIDGE_SECRET={secrets.token_urlsafe(32)}\n", encoding="utf-8")
        env.chmod(0o600)
    return config


# What the Vietnamese prompt says: the form's own words, from the catalog.
PROMPT_MSGIDS = ("Send a tip", "You do not need to give your name. This form does not ask "
                 "who you are.", "What is it about?", "What did you see?")


def make_prompts(folder: Path) -> None:
    """The form's instructions spoken in Vietnamese by Debian's espeak-ng, made here
    (never downloaded) and encoded as a small M4A like a voice message."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise RuntimeFailure("espeak-ng is missing: the demo speaks its Vietnamese "
                             "instructions with it; install the Debian package espeak-ng "
                             "(sudo apt-get install espeak-ng)")
    from .labels import translations
    from .relay.media import m4a_from_samples

    _ = translations("vi").gettext
    text = " ".join(_(msgid).rstrip(".?:") + "." for msgid in PROMPT_MSGIDS)
    folder.mkdir(parents=True, exist_ok=True)
    spoken = folder / "vi.wav"
    subprocess.run([espeak, "-v", "vi", "-s", "140", "-w", str(spoken), text],  # noqa: S603
                   check=True, capture_output=True)
    with wave.open(str(spoken), "rb") as sound:
        rate, pcm = sound.getframerate(), sound.readframes(sound.getnframes())
    spoken.unlink()
    (folder / "vi.m4a").write_bytes(m4a_from_samples(pcm, rate))


def ensure_prompts(settings: Settings) -> list[str]:
    """The demo's spoken instructions, made once; without espeak-ng the demo runs without
    them (an empty folder) and says how to have them: nothing else needs the package."""
    notes = []
    for station in settings.stations.values():
        folder = station.audio_prompts
        if folder is None or (folder / "vi.m4a").is_file():
            continue
        try:
            make_prompts(folder)
        except RuntimeFailure as exc:
            folder.mkdir(parents=True, exist_ok=True)
            notes.append(f"demo: no spoken instructions for {station.id}: {exc}")
    return notes


class _FormFields(HTMLParser):
    """Collects what a browser would send: hidden fields, the first choice of each radio
    group, and the names of the text fields."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: dict[str, str] = {}
        self.textareas: list[str] = []
        self.action = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and not self.action:
            self.action = a.get("action", "")
        elif tag == "input" and a.get("name"):
            kind = a.get("type", "text")
            if kind == "hidden" or (kind == "radio" and a["name"] not in self.fields):
                self.fields[a["name"]] = a.get("value", "")
        elif tag == "textarea" and a.get("name"):
            self.textareas.append(a["name"])


def fill_form(page_html: str, page_url: str, text: str,
              choices: dict[str, str] | None = None) -> tuple[str, dict[str, str]]:
    """What a browser would post for this form page: (target URL, fields), with the
    first option of each choice unless *choices* names another, and *text* in the
    first text area."""
    parser = _FormFields()
    parser.feed(page_html)
    fields = dict(parser.fields)
    fields.update(choices or {})
    if parser.textareas:
        fields[parser.textareas[0]] = text
    target = urllib.parse.urljoin(page_url, parser.action) if parser.action else page_url
    return target, fields


def submit_sample(base_url: str, station: str, placement: str, category: str,
                  text: str) -> None:
    """Send one tip through the real form, as a phone would (no JavaScript). A refusal
    (the rate limit: HTTP 429) is a RuntimeFailure naming it, never a bug."""
    url = f"{base_url}/s/{station}/{placement}"
    try:
        with urllib.request.urlopen(url, timeout=10) as page:  # noqa: S310 (our loopback URL)
            target, fields = fill_form(page.read().decode("utf-8"), url, text,
                                       {"category": category})
        data = urllib.parse.urlencode(fields).encode("utf-8")
        with urllib.request.urlopen(target, data=data, timeout=30) as reply:  # noqa: S310
            status = reply.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        raise RuntimeFailure(f"demo tip to {station}: the relay at {base_url} did not answer "
                             f"({exc}); see its lines above") from exc
    if status == 429:
        raise RuntimeFailure(f"demo tip to {station} was refused by the relay's rate limit: "
                             f"raise relay.rate_limit_per_hour in the demo config, or send "
                             f"fewer with --seed")
    if status != 200:
        raise RuntimeFailure(f"demo tip to {station} was refused: HTTP {status}")


def _wait_healthy(base_url: str, proc: subprocess.Popen[bytes], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeFailure(f"the relay exited with code {proc.returncode}; see above")
        try:
            with urllib.request.urlopen(base_url + "/healthz", timeout=2):  # noqa: S310
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise RuntimeFailure(f"the relay did not answer on {base_url} within {seconds:.0f} s")


def _count_mail(folder: Path) -> int:
    return sum(1 for sub in ("new", "cur") for _ in (folder / sub).glob("*")
               if (folder / sub).is_dir())


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    """SIGTERM stops the demo as Ctrl-C does, so its children are stopped too."""
    raise KeyboardInterrupt


def run_demo(folder: Path, *, port: int = 8080, seed: int = 3, once: bool = False,
             smtp_port: int = 2525) -> int:
    folder = folder.absolute()
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port must be 1-65535, got {port}")
    if not 1 <= smtp_port <= 65535:
        raise ConfigError(f"--smtp-port must be 1-65535, got {smtp_port}")
    if seed < 0:
        raise ConfigError(f"--seed must be 0 or more, got {seed}")
    config = write_demo_config(folder, port, smtp_port)
    settings = load_config(config)
    for note in ensure_prompts(settings):
        print(note, file=sys.stderr)
    if seed > settings.relay.rate_limit_per_hour:
        raise ConfigError(f"--seed {seed} is more than relay.rate_limit_per_hour "
                          f"({settings.relay.rate_limit_per_hour}) in {config}: raise it to "
                          f"{DEMO_RATE}, or send fewer")
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return _run(settings, config, folder, seed=seed, once=once)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(settings: Settings, config: Path, folder: Path, *, seed: int, once: bool) -> int:
    """Start the relay, seed, then poll once or run until Ctrl-C / SIGTERM."""
    base = settings.relay.public_url
    cmd = [sys.executable, "-m", "mailbridge", "--config", str(config)]
    env = dict(os.environ)
    _step(cmd, ["db", "upgrade"], env, quiet=True)
    relay = subprocess.Popen([*cmd, "serve"], env=env)  # noqa: S603 (our own command)
    poller: subprocess.Popen[bytes] | None = None
    try:
        _wait_healthy(base, relay)
        before = sum(_count_mail(s.maildir) for s in settings.stations.values() if s.maildir)
        for station, placement, category, text in (SAMPLES * (seed // len(SAMPLES) + 1))[:seed]:
            submit_sample(base, station, placement, category, text)
        maildirs = [s.maildir for s in settings.stations.values() if s.maildir]
        deadline = time.monotonic() + 30
        while sum(_count_mail(m) for m in maildirs) < before + seed:
            if time.monotonic() > deadline:
                raise RuntimeFailure("sample tips were not delivered to the demo Maildirs "
                                     "within 30 s: run `mailbridge outbox list`")
            time.sleep(0.2)
        if once:
            _step(cmd, ["poll", "--once"], env)
            print(f"\nmailbridge demo: {seed} sample tips sent, delivered and indexed; the "
                  "relay stops now. `mailbridge demo` without --once (or `make demo`) keeps "
                  "it running at:")
            _print_urls(settings, config, folder)
            return 0
        poller = subprocess.Popen([*cmd, "poll"], env=env)  # noqa: S603
        print("\nmailbridge demo is running:")
        _print_urls(settings, config, folder)
        print("Press Ctrl-C to stop.", flush=True)
        relay.wait()
        return relay.returncode or 0
    except KeyboardInterrupt:
        return 0
    finally:
        for proc in (poller, relay):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()


def _step(cmd: list[str], args: list[str], env: dict[str, str], *,
          quiet: bool = False) -> None:
    """Run one mailbridge command to its end; its failure is the demo's (exit 3), not a bug."""
    done = subprocess.run([*cmd, *args], env=env, check=False,  # noqa: S603 (our command)
                          stdout=subprocess.DEVNULL if quiet else None)
    if done.returncode:
        raise RuntimeFailure(f"`mailbridge {' '.join(args)}` failed with exit code "
                             f"{done.returncode}; see its lines above")


def _print_urls(settings: Settings, config: Path, folder: Path) -> None:
    base = settings.relay.public_url
    print(f"  station chooser   {base}/")
    print(f"  replies (code)    {base}/status")
    for station in settings.stations.values():
        print(f"  {station.id} form        {base}/s/{station.id}")
        for p in station.placements:
            print(f"    poster {p.id:<12} {base}/s/{station.id}/{p.id}")
        print(f"  {station.id} mailbox     {station.maildir}")
    if settings.relay.smtp_listen is not None:
        host, smtp_port = settings.relay.smtp_listen
        print(f"  replies by SMTP   {host}:{smtp_port}, to a tip's Reply-To, from a demo "
              f"mailbox")
    print(f"  ledger database   {settings.ledger.database}")
    exe = Path(sys.executable).parent / "mailbridge"
    with contextlib.suppress(ValueError):
        exe = exe.relative_to(Path.cwd())
    print("Try, in another terminal:")
    for args in ("ledger", "report", "outbox list --all"):
        print(f"  {exe} --config {config} {args}")
    print(f"(demo files in {folder})", flush=True)
