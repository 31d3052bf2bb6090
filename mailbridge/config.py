"""Configuration: one TOML file plus ``.env`` beside it, validated into typed settings.

``load_config(path=None, env=None, role="all")`` finds the file (``--config``,
then ``$MAILBRIDGE_CONFIG``, then ``./config/mailbridge.toml``), loads ``NAME.env``
beside ``NAME.toml`` (else ``.env`` from the same folder) without overriding the
real environment, and returns one
frozen ``Settings`` object. It checks what the role uses: the relay's secret and
delivery for "relay", nothing of the two for "station" (its IMAP, ledger and the
relay's key are checked whenever they are configured), both for "all", and for
"auto" whatever the file configures. Every mistake becomes one line that names the key,
the bad value, the file and the fix; all lines are collected and raised
together as a ``ConfigError``, so an admin fixes everything in one pass.

Secrets never live in the TOML: keys ending in ``_env`` name an environment
variable, resolved here.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast, overload
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .core.keytext import parse_public_key
from .core.sms import fold_keyword
from .core.text import is_slug
from .errors import ConfigError

if TYPE_CHECKING:
    from .core.message import RelayIdentity

DEFAULT_PATH = Path("config/mailbridge.toml")
ENV_VAR = "MAILBRIDGE_CONFIG"
# The languages the public pages offer by default; any catalog under mailbridge/locale/
# can be listed in relay.languages (its folder ``hmn@chv`` is the language ``hmn-chv``).
LANGUAGES = ("vi", "hmn", "en")
LOCALE_DIR = Path(__file__).resolve().parent / "locale"
TlsMode = Literal["none", "starttls", "tls"]
# What a box is for: villagers' tips to the border guards, or soldiers' opinions to their
# unit ("hòm thư góp ý"); one engine, its own categories, form words and posters.
Purpose = Literal["tips", "feedback"]
PURPOSES: tuple[Purpose, ...] = ("tips", "feedback")
# What a command needs checked: the relay's (secret, delivery), the station side's
# (IMAP, ledger, the relay's key), or both; "auto" reads it from what the file configures.
Role = Literal["relay", "station", "all"]

_EMAIL = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$")
_DOMAIN = re.compile(r"^[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$")
DNS_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Secret:
    """A secret value that never shows up in a repr, a log line or a traceback."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __bool__(self) -> bool:
        return bool(self._value)


@dataclass(frozen=True)
class Category:
    """A tip category; ``labels`` maps a language to its label (built-ins use gettext)."""

    id: str
    pictogram: str
    labels: Mapping[str, str] = field(default_factory=dict)


# The built-in categories: their labels come from the gettext catalogs.
BUILTIN_CATEGORIES: tuple[Category, ...] = (
    Category("drugs", "drugs"),
    Category("smuggling", "smuggling"),
    Category("border", "border"),
    Category("residence", "residence"),
    Category("theft", "theft"),
    Category("guns", "guns"),
    Category("trafficking", "trafficking"),
    Category("other", "other"),
)
# A feedback box's defaults: what soldiers raise with their unit's command.
FEEDBACK_CATEGORIES: tuple[Category, ...] = (
    Category("living", "living"),
    Category("training", "training"),
    Category("entitlements", "entitlements"),
    Category("discipline", "discipline"),
    Category("leadership", "leadership"),
    Category("ideas", "ideas"),
    Category("other", "other"),
)
BUILTIN_LABELS: Mapping[str, str] = {
    "drugs": "Drugs",
    "smuggling": "Smuggling",
    "border": "Illegal border crossing",
    "residence": "Illegal residence",
    "theft": "Theft",
    "guns": "Homemade guns",
    "trafficking": "Human trafficking",
    "other": "Other",
    "living": "Daily life and meals",
    "training": "Training and duty",
    "entitlements": "Pay and entitlements",
    "discipline": "Discipline and conduct",
    "leadership": "Officers and command",
    "ideas": "Ideas and proposals",
}


@dataclass(frozen=True)
class OAuth2Provider:
    """Where a provider signs in and trades refresh tokens, and the scope each protocol
    needs (``{tenant}`` is the table's ``tenant``); ``extra`` is asked for, never checked."""

    authorize_url: str
    token_url: str
    imap_scope: str
    smtp_scope: str
    extra: tuple[str, ...] = ()


OAUTH2_PROVIDERS: Mapping[str, OAuth2Provider] = {
    "google": OAuth2Provider("https://accounts.google.com/o/oauth2/v2/auth",
                             "https://oauth2.googleapis.com/token",
                             "https://mail.google.com/", "https://mail.google.com/"),
    "microsoft": OAuth2Provider(
        "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize",
        "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token",
        "https://outlook.office.com/IMAP.AccessAsUser.All",
        "https://outlook.office.com/SMTP.Send", ("offline_access",)),
}


@dataclass(frozen=True)
class OAuth2Settings:
    """XOAUTH2 sign-in (``[...oauth2]``): ``refresh_token`` is traded at ``token_url`` for
    access tokens, which must carry every ``scope``. ``key`` is the table, for errors."""

    key: str
    token_url: str
    scope: tuple[str, ...]
    client_id: str
    client_secret: Secret
    refresh_token: Secret
    refresh_token_env: str
    extra_scope: tuple[str, ...] = ()
    provider: str = ""
    tenant: str = ""


@dataclass(frozen=True)
class SmtpSettings:
    """Outbound SMTP to a station's mail server."""

    host: str
    port: int = 587
    tls: TlsMode = "starttls"
    username: str = ""
    password: Secret = field(default_factory=lambda: Secret(""))
    timeout: float = 30.0
    ca_file: Path | None = None
    oauth2: OAuth2Settings | None = None  # XOAUTH2 instead of the password


@dataclass(frozen=True)
class ImapSettings:
    """IMAP access to a station mailbox (station side only)."""

    host: str
    port: int = 993
    tls: TlsMode = "tls"
    username: str = ""
    password: Secret = field(default_factory=lambda: Secret(""))
    folders: tuple[str, ...] = ("INBOX",)
    timeout: float = 60.0
    ca_file: Path | None = None
    oauth2: OAuth2Settings | None = None  # XOAUTH2 instead of the password


@dataclass(frozen=True)
class SmsSettings:
    """A station's SMS number: a SIM in a GSM modem on the relay box, read by
    gammu-smsd (``mailbridge sms-config`` writes its configuration)."""

    number: str
    device: str = "/dev/ttyUSB0"
    connection: str = "at"
    model: str = ""
    # Leading keyword or digit (folded: no diacritics, lower case) -> category id;
    # empty: 1, 2, ... in the order of the categories, and their Vietnamese labels.
    keywords: Mapping[str, str] = field(default_factory=dict)
    per_hour: int = 5  # texts per sender number and hour; more are dropped
    # A reply text is a trace on the tipster's phone: off unless the station wants it.
    acknowledge: bool = False
    acknowledge_text: str = "Đã nhận"


@dataclass(frozen=True)
class Placement:
    id: str
    label: str
    language: str = ""  # the form's language when the URL names none ("" is the relay's)


@dataclass(frozen=True)
class Station:
    id: str
    name: str
    ref_prefix: str
    mailbox: str
    placements: tuple[Placement, ...] = ()
    smtp: SmtpSettings | None = None
    maildir: Path | None = None
    imap: ImapSettings | None = None
    delivery_delay_minutes: int = 0
    officers: Mapping[str, str] = field(default_factory=dict)
    hotline: str = ""
    # Spoken instructions for the form, one or more recordings per language
    # (relay/prompts.py names the files); None: no audio on the page.
    audio_prompts: Path | None = None
    # What the box is for, and the categories its form offers: its own
    # [[stations.categories]], else the top-level [[categories]] for "tips" and
    # FEEDBACK_CATEGORIES for "feedback".
    purpose: Purpose = "tips"
    categories: tuple[Category, ...] = BUILTIN_CATEGORIES
    # The form's own words under its title, per language (else the purpose's default).
    intro: Mapping[str, str] = field(default_factory=dict)
    # Who may answer a tipster by mail besides ``mailbox`` (lower-case addresses).
    officer_senders: tuple[str, ...] = ()
    # The relay address that takes tips by e-mail for this station; "" keeps it off.
    mail_tips_address: str = ""
    # Station side: the mailbox's own SMTP account, for answering a tipster from the
    # officers' UI ([stations.reply_smtp]); None leaves that action off. The copy goes
    # to ``sent_folder`` over IMAP, as a mail client files it.
    reply_smtp: SmtpSettings | None = None
    sent_folder: str = "Sent"
    # Tips by text message to a SIM on the relay box; None keeps SMS off.
    sms: SmsSettings | None = None
    # OpenPGP (optional). Relay side: the station's public key, tips are encrypted to
    # it at acceptance. Station side: how the poller decrypts them, a private key file
    # with its passphrase from the environment, or the officers' GnuPG home (its agent).
    openpgp_key: Path | None = None
    openpgp_secret_key: Path | None = None
    openpgp_passphrase: Secret = field(default_factory=lambda: Secret(""))
    openpgp_gnupghome: Path | None = None

    def placement(self, placement_id: str) -> Placement | None:
        return next((p for p in self.placements if p.id == placement_id), None)

    def category(self, category_id: str) -> Category | None:
        """One of this box's categories (a feedback box does not take "drugs")."""
        return next((c for c in self.categories if c.id == category_id), None)


@dataclass(frozen=True)
class RelaySettings:
    address: str
    domain: str
    database: str
    secret: Secret
    listen_host: str = "127.0.0.1"
    listen_port: int = 8080
    public_url: str = "http://127.0.0.1:8080"
    default_language: str = "vi"
    languages: tuple[str, ...] = LANGUAGES
    rate_limit_per_hour: int = 30
    retry_days: int = 5
    max_text_chars: int = 5000
    # Photos and a voice message a tip may carry (relay/media.py cleans each).
    max_photos: int = 3
    photo_max_px: int = 2048
    voice_max_seconds: int = 180
    conversation_days: int = 90
    # Delivered and dropped outbox rows (ref, state, hours; the text is gone at delivery)
    # are deleted after this many days: at least conversation_days (the status page
    # reads a tip's row while its conversation lasts), and as long by default.
    outbox_days: int = 90
    # Receipt-code lookups at /status: per network and for all networks together.
    status_lookups_per_hour: int = 10
    status_lookups_total_per_hour: int = 600
    trusted_proxies: tuple[str, ...] = ()
    # Client connections (see relay/connections.py): a cap, and deadlines in seconds.
    max_connections: int = 1000
    header_timeout_seconds: float = 15.0
    body_timeout_seconds: float = 60.0
    # SMTP intake of officer replies (relay/smtp.py): off while smtp_listen is unset.
    smtp_listen: tuple[str, int] | None = None
    smtp_max_bytes: int = 10 * 1024 * 1024
    smtp_tls_cert: Path | None = None
    smtp_tls_key: Path | None = None
    mail_tips_per_hour: int = 60  # tips by mail, all senders together
    # Form tips one station takes in a UTC hour, from all networks together; past it a
    # tipster reads that the tip was NOT sent (relay/ratelimit.py: StationLimit).
    station_tips_per_hour: int = 60
    # Form tips being handled at once (their bodies in, not yet answered); past it a
    # tipster reads at once that the relay is busy and the tip was NOT sent. One core
    # handles about 80 tips a second (12 ms of CPU each): 12 queued is 150 ms of work.
    tips_in_flight: int = 12
    # Web worker processes on the port (a socket each) sharing the outbox (relay/server.py);
    # the loader's default is one per usable CPU, at most 4 (``default_workers``).
    workers: int = 1
    # DKIM (relay/dkim.py): the key file (default dkim-SELECTOR.key beside the config)
    # and the selector its DNS record is published under.
    dkim_key: Path | None = None
    dkim_selector: str = "mailbridge"
    # The relay's own OpenPGP key, for officers' replies encrypted to it (optional:
    # plain replies always work); its passphrase from the environment.
    openpgp_secret_key: Path | None = None
    openpgp_passphrase: Secret = field(default_factory=lambda: Secret(""))


DEFAULT_TIME_ZONE = "Asia/Ho_Chi_Minh"


@dataclass(frozen=True)
class LedgerSettings:
    database: str
    attachments_dir: Path
    max_message_bytes: int = 25 * 1024 * 1024
    folder_status: Mapping[str, str] = field(default_factory=dict)
    flag_status: Mapping[str, str] = field(default_factory=dict)
    # The relay's public keys (base64 in the file): only mail they verify is a tip.
    relay_public_keys: tuple[bytes, ...] = ()
    # Officers read times, and the report cuts days and months, in this zone.
    time_zone: str = DEFAULT_TIME_ZONE
    # An open tip with no officer action for this many days is highlighted in the list.
    overdue_days: int = 3
    # Retention (`mailbridge purge`): quarantined raw mail, attachment files, and the
    # officers' audit trail; 0 keeps forever. Audit is never shorter than the law asks.
    quarantine_days: int = 90
    attachment_days: int = 0
    audit_days: int = 0
    # What the poller may take while indexing, in MiB (its own process and its parser
    # processes, measured from outside): the parser-process count follows it (160: two,
    # where there are two cores), and a 512 MB box keeps room for the relay beside it
    # (docs/PERFORMANCE.md, "A small box").
    memory_mb: int = 160


@dataclass(frozen=True)
class Settings:
    path: Path
    relay: RelaySettings
    ledger: LedgerSettings
    stations: Mapping[str, Station]
    categories: tuple[Category, ...]
    smtp: SmtpSettings | None = None
    role: Role = "all"  # what was validated: a relay-only file has no checked ledger side

    def station(self, station_id: str) -> Station | None:
        return self.stations.get(station_id.lower())

    def category(self, category_id: str) -> Category | None:
        return next((c for c in self.categories if c.id == category_id), None)

    def relay_identity(self) -> RelayIdentity:
        """The relay as the station side checks it: ``ledger.relay_public_keys``, or,
        when both roles share this config, the key derived from the relay's secret.
        Having neither is a ConfigError: without a key every tip would be filed as forged."""
        from .core.message import RelayIdentity, signing_key  # the mail stack, when checking

        keys = self.ledger.relay_public_keys
        if not keys and self.relay.secret:
            keys = (bytes(signing_key(self.relay.secret.reveal()).verify_key),)
        if not keys:
            raise ConfigError(
                f"ledger.relay_public_keys is missing: copy the key `mailbridge check` prints "
                f"on the relay into [ledger] relay_public_keys = [\"...\"] ({self.path})")
        return RelayIdentity(self.relay.address, keys)


T = TypeVar("T")


class _Reader:
    """Reads one TOML table, records mistakes, and reports keys it never read."""

    def __init__(self, data: Mapping[str, Any], where: str, ctx: _Context) -> None:
        self.data = data
        self.where = where
        self.ctx = ctx
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def error(self, name: str, message: str) -> None:
        self.ctx.error(f"{self.key(name)} {message}")

    @overload
    def get(self, name: str, kind: type[T], default: T, *, required: bool = ...,
            hint: str = ...) -> T: ...

    @overload
    def get(self, name: str, kind: type[T], default: None = ..., *, required: bool = ...,
            hint: str = ...) -> T | None: ...

    def get(self, name: str, kind: type[T], default: T | None = None, *,
            required: bool = False, hint: str = "") -> T | None:
        self.used.add(name)
        if name not in self.data:
            if required:
                self.error(name, f"is missing: add it{hint}")
            return default
        value = self.data[name]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.error(name, f"must be {_kind_name(kind)}, got {value!r}")
            return default
        return value

    def text(self, name: str, default: str = "", *, required: bool = False,
             hint: str = "") -> str:
        return self.get(name, str, default, required=required, hint=hint)

    def integer(self, name: str, default: int, least: int, most: int | None = None) -> int:
        """An integer from *least* (to *most*). Not ``get(...) or default``: an explicit
        0 is a value, kept when in range and refused when not, never silently replaced."""
        value = self.get(name, int, default)
        if value < least or (most is not None and value > most):
            span = f"at least {least}" if most is None else f"{least}-{most}"
            self.error(name, f"must be {span}, got {value}")
            return default
        return value

    def seconds(self, name: str, default: float) -> float:
        """A timeout: more than 0 and at most an hour (0, inf and nan are mistakes)."""
        value = self.get(name, float, default)
        if not (math.isfinite(value) and 0 < value <= 3600):
            self.error(name, f"must be more than 0 and at most 3600 seconds, got {value}")
            return default
        return value

    def port(self, name: str, default: int) -> int:
        self.used.add(name)
        value = self.data.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
            self.error(name, f"must be a port number 1-65535, got {value!r}")
            return default
        return value

    def tls(self, name: str, default: TlsMode) -> TlsMode:
        value = self.text(name, default)
        if value not in ("none", "starttls", "tls"):
            self.error(name, f'must be "tls", "starttls" or "none", got {value!r}')
            return default
        return value  # type: ignore[return-value]

    def secret(self, name: str) -> Secret:
        """Resolve ``NAME_env``: the value names an environment variable."""
        var = self.text(name)
        if not var:
            return Secret("")
        if not _ENV_NAME.match(var):
            self.error(name, f"must name an environment variable, got {var!r}")
            return Secret("")
        if var not in self.ctx.env:
            self.error(name, f"names ${var}, which is not set: add {var}=... to "
                             f"{self.ctx.dotenv} or the service environment")
            return Secret("")
        value = self.ctx.env[var]
        if not value:
            self.error(name, f"names ${var}, which is empty: set it in {self.ctx.dotenv} "
                             "or the service environment")
        elif value.startswith("change-me"):
            self.error(name, f"${var} still holds the example value: replace it")
        return Secret(value)

    def path(self, name: str) -> Path | None:
        value = self.text(name)
        if value:
            return self.ctx.resolve(value)
        if self.data.get(name) == "":
            self.error(name, "is empty: name a file or folder, or remove the key")
        return None

    def table(self, name: str) -> _Reader | None:
        value = self.get(name, dict)
        return _Reader(value, self.key(name), self.ctx) if value is not None else None

    def tables(self, name: str) -> Iterator[_Reader]:
        value = self.get(name, list, [])
        for i, item in enumerate(value):
            if isinstance(item, dict):
                ident = item.get("id")
                label = ident if isinstance(ident, str) and ident else f"[{i}]"
                sep = "" if label.startswith("[") else "."
                yield _Reader(item, f"{self.key(name)}{sep}{label}", self.ctx)
            else:
                self.ctx.error(f"{self.key(name)}[{i}] must be a table, got {item!r}")

    def finish(self) -> None:
        for extra in sorted(set(self.data) - self.used):
            self.ctx.error(f"{self.key(extra)} is not a known setting: remove it or fix "
                           f"its spelling (see config/mailbridge.example.toml)")


def _kind_name(kind: type) -> str:
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false",
            dict: "a table", list: "a list"}.get(kind, kind.__name__)


def _file_role(data: Mapping[str, Any]) -> Role:
    """The roles a file configures: the relay's secret or delivery, the station side's
    ledger or IMAP; both, or neither, is "all" (every mistake is reported)."""
    relay, stations = data.get("relay"), data.get("stations")
    tables = [s for s in stations if isinstance(s, dict)] if isinstance(stations, list) else []
    relay_side = ("smtp" in data or (isinstance(relay, dict) and "secret_env" in relay)
                  or any("smtp" in s or "maildir" in s for s in tables))
    station_side = "ledger" in data or any("imap" in s for s in tables)
    if relay_side != station_side:
        return "relay" if relay_side else "station"
    return "all"


@dataclass
class _Context:
    path: Path
    env: Mapping[str, str]
    dotenv: Path
    role: Role = "all"
    errors: list[str] = field(default_factory=list)

    @property
    def relay_side(self) -> bool:
        return self.role in ("relay", "all")

    def error(self, line: str) -> None:
        self.errors.append(f"{line} ({self.path})")

    def resolve(self, value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.path.parent / p).resolve()

    def database(self, url: str) -> str:
        """Make ``sqlite:///relative.db`` relative to the config file's folder."""
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix:
            return prefix + str(self.resolve(url[len(prefix):]))
        return url


def find_config(path: str | Path | None, env: Mapping[str, str]) -> Path:
    """``--config``, then ``$MAILBRIDGE_CONFIG``, then ``./config/mailbridge.toml``."""
    if path:
        return Path(path)
    if env.get(ENV_VAR):
        return Path(env[ENV_VAR])
    return DEFAULT_PATH


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None,
                role: Role | Literal["auto"] = "all") -> Settings:
    """Load and validate what *role* uses; raise ConfigError listing every mistake.

    A station-side file has no relay secret and no SMTP, a relay-side one no IMAP:
    neither is a mistake for the role that does not use it."""
    base_env = dict(os.environ if env is None else env)
    cfg_path = find_config(path, base_env).absolute()
    if not cfg_path.is_file():
        raise ConfigError(
            f"config file {cfg_path} does not exist: pass --config PATH, set ${ENV_VAR}, "
            f"or copy config/mailbridge.example.toml to {DEFAULT_PATH}"
        )
    # relay.toml's secrets in relay.env (the unit's EnvironmentFile), so a command run by
    # hand as the service's user finds them too; else .env beside the file.
    dotenv = cfg_path.with_suffix(".env")
    if not dotenv.is_file():
        dotenv = cfg_path.parent / ".env"
    merged: dict[str, str] = {}
    if dotenv.is_file():
        from dotenv import dotenv_values  # 20-40 ms at every start, for a file few have

        merged.update({k: v for k, v in dotenv_values(dotenv).items() if v is not None})
    merged.update(base_env)  # the real environment wins over .env
    try:
        data = tomllib.loads(cfg_path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{cfg_path} is not valid TOML: {exc}") from exc
    ctx = _Context(cfg_path, merged, dotenv, _file_role(data) if role == "auto" else role)
    settings = _parse(_Reader(data, "", ctx), ctx)
    if ctx.errors or settings is None:
        raise ConfigError("\n".join(ctx.errors))
    return settings


def _parse(top: _Reader, ctx: _Context) -> Settings | None:
    ledger_data = top.data.get("ledger")
    trusts_keys = isinstance(ledger_data, dict) and bool(ledger_data.get("relay_public_keys"))
    relay = _relay(top.table("relay"), ctx, trusts_keys)
    smtp_top = top.table("smtp")
    smtp = _smtp(smtp_top) if smtp_top else None
    ledger = _ledger(top.table("ledger"), ctx)
    tip_categories = _categories(top, BUILTIN_CATEGORIES)
    stations: dict[str, Station] = {}
    for st in top.tables("stations"):
        station = _station(st, smtp, tip_categories, delivers=ctx.relay_side)
        if station is None:
            continue
        if station.id in stations:
            st.error("id", f"{station.id!r} is used twice: give each station its own id")
        stations[station.id] = station
    if not stations:
        ctx.error("stations is empty: add at least one [[stations]] table")
    top.finish()
    if relay is None:
        return None
    for station in stations.values():
        for placement in station.placements:
            if placement.language and placement.language not in relay.languages:
                ctx.error(f"stations.{station.id}.placements.{placement.id}.language "
                          f"{placement.language!r} is not in relay.languages: add it there "
                          f"or choose among {', '.join(relay.languages)}")
    # Every box's categories, in order, each once: the officers' filters and the report.
    categories = tuple({c.id: c for s in stations.values() for c in s.categories}.values())
    return Settings(ctx.path, relay, ledger, stations, categories or tip_categories, smtp,
                    ctx.role)


MAX_WORKERS = 64


def default_workers() -> int:
    """One web worker per CPU this process may run on (its affinity, which systemd's
    CPUAffinity= and containers narrow), at most 4: past that the one SQLite writer
    and the delivery worker are the limit, and each worker costs its own memory."""
    return min(len(os.sched_getaffinity(0)), 4)


def _relay(r: _Reader | None, ctx: _Context, trusts_keys: bool) -> RelaySettings | None:
    if r is None:
        ctx.error("relay is missing: add a [relay] table with address (and, on the relay, "
                  "secret_env)")
        return None
    address = r.text("address", required=True, hint=' such as "tips@relay.example.org"')
    if address and not _EMAIL.match(address):
        r.error("address", f"must be an e-mail address, got {address!r}")
    domain = r.text("domain", address.partition("@")[2])
    if (domain or "domain" in r.data) and not _DOMAIN.match(domain):
        r.error("domain", f"must be a domain name, got {domain!r}")
    if not ctx.relay_side and trusts_keys:
        r.used.add("secret_env")  # the station side trusts the listed keys, never the secret
        secret = Secret("")
    else:
        secret = r.secret("secret_env")
    if "secret_env" not in r.data:
        if ctx.relay_side:
            r.error("secret_env", "is missing: name an environment variable holding at "
                                  "least 32 random characters (python3 -c 'import secrets; "
                                  "print(secrets.token_urlsafe(32))')")
    elif secret and len(secret.reveal()) < 32:
        r.error("secret_env", f"${r.data['secret_env']} must hold at least 32 characters")
    languages = tuple(r.get("languages", list, list(LANGUAGES)))
    known = LANGUAGES + tuple(lang for lang in catalog_languages() if lang not in LANGUAGES)
    if not languages:
        r.error("languages", f"is empty: list at least one of {', '.join(known)}")
        languages = LANGUAGES
    for lang in languages:
        if lang not in known:
            r.error("languages", f"has {lang!r}, which has no catalog: choose among "
                                 f"{', '.join(known)} (docs/ADMIN.md: adding a language)")
    default_language = r.text("default_language", "vi")
    if default_language not in languages:
        r.error("default_language", f"{default_language!r} is not in relay.languages")
    rate = r.integer("rate_limit_per_hour", 30, 1)
    listen_port = r.port("listen_port", 8080)
    listen_host = r.text("listen_host", "127.0.0.1")
    conversation_days = r.integer("conversation_days", 90, 1, 3650)
    settings = RelaySettings(
        address=address,
        domain=domain,
        database=ctx.database(r.text("database", "sqlite:///relay.db")),
        secret=secret,
        listen_host=listen_host,
        listen_port=listen_port,
        public_url=r.text("public_url", f"http://{listen_host}:{listen_port}").rstrip("/"),
        default_language=default_language,
        languages=languages,
        rate_limit_per_hour=rate,
        retry_days=r.integer("retry_days", 5, 1),
        max_text_chars=r.integer("max_text_chars", 5000, 1),
        max_photos=r.integer("max_photos", 3, 0, 10),
        photo_max_px=r.integer("photo_max_px", 2048, 320, 8192),
        voice_max_seconds=r.integer("voice_max_seconds", 180, 0, 1800),
        conversation_days=conversation_days,
        outbox_days=r.integer("outbox_days", conversation_days, conversation_days, 36500),
        status_lookups_per_hour=r.integer("status_lookups_per_hour", 10, 1),
        status_lookups_total_per_hour=r.integer("status_lookups_total_per_hour", 600, 1),
        trusted_proxies=_addresses(r, "trusted_proxies"),
        max_connections=r.integer("max_connections", 1000, 1),
        header_timeout_seconds=r.seconds("header_timeout_seconds", 15.0),
        body_timeout_seconds=r.seconds("body_timeout_seconds", 60.0),
        smtp_listen=_host_port(r, "smtp_listen"),
        smtp_max_bytes=r.integer("smtp_max_bytes", 10 * 1024 * 1024, 1024),
        smtp_tls_cert=r.path("smtp_tls_cert"),
        smtp_tls_key=r.path("smtp_tls_key"),
        mail_tips_per_hour=r.integer("mail_tips_per_hour", 60, 1),
        station_tips_per_hour=r.integer("station_tips_per_hour", 60, 1),
        tips_in_flight=r.integer("tips_in_flight", 12, 1, 10000),
        workers=r.integer("workers", default_workers(), 1, MAX_WORKERS),
        dkim_key=r.path("dkim_key"),
        dkim_selector=r.text("dkim_selector", "mailbridge"),
        openpgp_secret_key=r.path("openpgp_secret_key"),
        openpgp_passphrase=r.secret("openpgp_passphrase_env"),
    )
    if not DNS_LABEL.match(settings.dkim_selector):
        r.error("dkim_selector", f"must be one DNS label (letters, digits, -), got "
                                 f"{settings.dkim_selector!r}")
    if (settings.smtp_tls_cert is None) != (settings.smtp_tls_key is None):
        r.error("smtp_tls_cert", "and relay.smtp_tls_key go together: set both (certificate "
                                 "and its private key, PEM) or neither")
    r.finish()
    return settings


def catalog_languages() -> tuple[str, ...]:
    """Every language with a compiled catalog, as config and URLs name it (``hmn-chv`` for
    the folder ``hmn@chv``): adding a language is adding a catalog."""
    return tuple(sorted(p.parent.parent.name.replace("@", "-")
                        for p in LOCALE_DIR.glob("*/LC_MESSAGES/messages.mo")))


def _host_port(r: _Reader, name: str) -> tuple[str, int] | None:
    """``"host:port"`` (``"[::1]:2525"`` for IPv6), or None when the key is unset."""
    value = r.text(name)
    if not value:
        return None
    host, _, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        r.error(name, f'must be "host:port" such as "0.0.0.0:25", got {value!r}')
        return None
    return host, int(port)


def _addresses(r: _Reader, name: str) -> tuple[str, ...]:
    values = r.get(name, list, [])
    good: list[str] = []
    for value in values:
        try:
            good.append(str(ipaddress.ip_address(value)))
        except ValueError:
            r.error(name, f"must list IP addresses of reverse proxies, got {value!r}")
    return tuple(good)


def _oauth2(r: _Reader, use: Literal["imap", "smtp"]) -> OAuth2Settings:
    """A ``[....oauth2]`` table: a provider's preset, or an explicit token_url and scope."""
    provider = r.text("provider")
    preset = OAUTH2_PROVIDERS.get(provider)
    if provider and preset is None:
        r.error("provider", f'must be "google" or "microsoft", got {provider!r}; or remove '
                            "it and set token_url and scope")
    tenant = r.text("tenant")
    if provider == "microsoft" and not tenant:
        r.error("tenant", "is missing: copy the Directory (tenant) ID from the app's "
                          "Overview page in Entra ID")
    elif tenant and provider != "microsoft":
        r.error("tenant", 'is for provider = "microsoft" only: remove it')
    hint = ' or set provider = "google" or "microsoft"'
    token_url = r.text("token_url", preset.token_url.format(tenant=tenant) if preset else "",
                       required=preset is None, hint=hint)
    host = token_url.partition("://")[2].split("/")[0].rsplit(":", 1)[0]
    if token_url and not (token_url.startswith("https://") or (
            token_url.startswith("http://") and host in ("127.0.0.1", "localhost", "[::1]"))):
        r.error("token_url", f"must be an https:// URL, got {token_url!r}")
    scope = r.text("scope", getattr(preset, f"{use}_scope") if preset else "",
                   required=preset is None, hint=hint)
    refresh_env = r.text("refresh_token_env")
    settings = OAuth2Settings(
        key=r.where,
        token_url=token_url,
        scope=tuple(scope.split()),
        client_id=r.text("client_id", required=True, hint=" (from the app registration)"),
        client_secret=r.secret("client_secret_env"),
        refresh_token=r.secret("refresh_token_env"),
        refresh_token_env=refresh_env,
        extra_scope=preset.extra if preset else (),
        provider=provider,
        tenant=tenant,
    )
    if not refresh_env:
        r.error("refresh_token_env", "is missing: name the environment variable that holds "
                                     "the refresh token `mailbridge oauth2-token` prints")
    r.finish()
    return settings


def _sign_in(r: _Reader, use: Literal["imap", "smtp"]) -> tuple[Secret, OAuth2Settings | None]:
    """The password, or the ``oauth2`` table that replaces it (never both)."""
    oauth_r = r.table("oauth2")
    oauth2 = _oauth2(oauth_r, use) if oauth_r else None
    if oauth2 is not None and "password_env" in r.data:
        r.error("password_env", "and oauth2 exclude each other: keep the [oauth2] table "
                                "or the password, not both")
    if oauth2 is not None and not r.data.get("username"):
        r.error("username", "is missing: XOAUTH2 signs in as the mailbox address, add it")
    return r.secret("password_env"), oauth2


def _smtp(r: _Reader) -> SmtpSettings:
    tls = r.tls("tls", "starttls")
    password, oauth2 = _sign_in(r, "smtp")
    settings = SmtpSettings(
        host=r.text("host", required=True, hint=" (the station's mail server)"),
        port=r.port("port", 465 if tls == "tls" else 587),
        tls=tls,
        username=r.text("username"),
        password=password,
        timeout=r.seconds("timeout", 30.0),
        ca_file=r.path("ca_file"),
        oauth2=oauth2,
    )
    if settings.username and "password_env" not in r.data and oauth2 is None:
        r.error("password_env", "is missing: username is set, so name the environment "
                                "variable that holds the password")
    r.finish()
    return settings


def _imap(r: _Reader) -> ImapSettings:
    tls = r.tls("tls", "tls")
    folders = r.get("folders", list, ["INBOX"])
    if not folders or not all(isinstance(f, str) and f for f in folders):
        r.error("folders", f'must list one folder name or more, e.g. ["INBOX"], got {folders!r}')
        folders = ["INBOX"]
    password, oauth2 = _sign_in(r, "imap")
    settings = ImapSettings(
        host=r.text("host", required=True, hint=" (the station's IMAP server)"),
        port=r.port("port", 993 if tls == "tls" else 143),
        tls=tls,
        username=r.text("username", required=True, hint=" (the mailbox login)"),
        password=password,
        folders=tuple(folders),
        timeout=r.seconds("timeout", 60.0),
        ca_file=r.path("ca_file"),
        oauth2=oauth2,
    )
    if "password_env" not in r.data and oauth2 is None:
        r.error("password_env", "is missing: name the environment variable that holds the "
                                "IMAP password (or add an [oauth2] table)")
    r.finish()
    return settings


def _station(r: _Reader, default_smtp: SmtpSettings | None,
             tip_categories: tuple[Category, ...], *, delivers: bool) -> Station | None:
    sid = r.text("id", required=True, hint=' (short lower-case letters, e.g. "ncs")').lower()
    if sid and not is_slug(sid):
        r.error("id", f"must be short lower-case ASCII letters, digits or '-', got {sid!r}")
    mailbox = r.text("mailbox", required=True,
                     hint=" (the station's existing address that receives tips)")
    if mailbox and not _EMAIL.match(mailbox):
        r.error("mailbox", f"must be an e-mail address, got {mailbox!r}")
    prefix = r.text("ref_prefix", sid.upper()[:6])
    if not re.match(r"^[A-Za-z0-9]{1,12}$", prefix):
        r.error("ref_prefix", f"must be 1-12 letters or digits, got {prefix!r}")
    placements: list[Placement] = []
    for p in r.tables("placements"):
        pid = p.text("id", required=True).lower()
        if pid and not is_slug(pid):
            p.error("id", f"must be short lower-case ASCII letters, digits or '-', got {pid!r}")
        if any(x.id == pid for x in placements):
            p.error("id", f"{pid!r} is used twice in this station")
        placements.append(Placement(pid, p.text("label", pid), p.text("language")))
        p.finish()
    smtp_r = r.table("smtp")
    smtp = _smtp(smtp_r) if smtp_r else None
    maildir = r.path("maildir")
    imap_r = r.table("imap")
    imap = _imap(imap_r) if imap_r else None
    reply_r = r.table("reply_smtp")
    reply_smtp = _smtp(reply_r) if reply_r else None
    if delivers and maildir is None and smtp is None and default_smtp is None:
        r.error("smtp", "is missing: give this station an [stations.smtp] table, a top-level "
                        "[smtp] default, or a maildir path")
    officers = r.get("officers", dict, {})
    if not all(isinstance(v, str) for v in officers.values()):
        r.error("officers", "must map OS account names to officer names (strings)")
        officers = {}
    delay = r.integer("delivery_delay_minutes", 0, 0, 120)
    purpose = r.text("purpose", "tips")
    if purpose not in PURPOSES:
        r.error("purpose", f'must be "tips" or "feedback", got {purpose!r}')
        purpose = "tips"
    intro = r.get("intro", dict, {})
    if not all(isinstance(v, str) and v.strip() for v in intro.values()):
        r.error("intro", 'must map languages to text, e.g. { vi = "...", hmn = "..." }')
        intro = {}
    senders = r.get("officer_senders", list, [])
    for sender in senders:
        if not isinstance(sender, str) or not _EMAIL.match(sender):
            r.error("officer_senders", f"must list e-mail addresses, got {sender!r}")
    sms_r = r.table("sms")
    openpgp_key = r.path("openpgp_key")
    if openpgp_key is not None and delivers:  # expired, revoked, signing-only: refused now
        from .openpgp import read_public_key  # gpg, for the stations that use it

        try:
            read_public_key(openpgp_key, r.key("openpgp_key"))
        except ConfigError as exc:
            r.ctx.error(str(exc))
    mail_tips = r.text("mail_tips_address")
    if mail_tips and not _EMAIL.match(mail_tips):
        r.error("mail_tips_address", f"must be an e-mail address, got {mail_tips!r}")
    categories = _categories(r, FEEDBACK_CATEGORIES if purpose == "feedback" else tip_categories)
    station = Station(
        id=sid,
        name=r.text("name", sid),
        ref_prefix=prefix.upper(),
        mailbox=mailbox,
        placements=tuple(placements),
        smtp=smtp if smtp is not None or maildir is not None else default_smtp,
        maildir=maildir,
        imap=imap,
        delivery_delay_minutes=delay,
        officers=dict(officers),
        hotline=r.text("hotline"),
        audio_prompts=r.path("audio_prompts"),
        purpose=cast(Purpose, purpose),
        categories=categories,
        intro=intro,
        officer_senders=tuple(s.lower() for s in senders if isinstance(s, str)),
        mail_tips_address=mail_tips.lower(),
        reply_smtp=reply_smtp,
        sent_folder=r.text("sent_folder", "Sent"),
        sms=_sms(sms_r, categories) if sms_r else None,
        openpgp_key=openpgp_key,
        openpgp_secret_key=r.path("openpgp_secret_key"),
        openpgp_passphrase=r.secret("openpgp_passphrase_env"),
        openpgp_gnupghome=r.path("openpgp_gnupghome"),
    )
    r.finish()
    return station if sid else None


_SMS_NUMBER = re.compile(r"^\+?[0-9][0-9 .-]{2,19}$")
_GAMMU_VALUE = re.compile(r"^[A-Za-z0-9_./:-]*$")


def _sms(r: _Reader, categories: tuple[Category, ...]) -> SmsSettings:
    number = r.text("number", required=True, hint=' (the SIM\'s number as the poster prints '
                                                  'it, e.g. "0912 345 678")')
    if number and not _SMS_NUMBER.match(number):
        r.error("number", f"must be a phone number such as \"0912 345 678\", got {number!r}")
    gammu = {name: r.text(name, default) for name, default in
             (("device", "/dev/ttyUSB0"), ("connection", "at"), ("model", ""))}
    for name, value in gammu.items():
        if not _GAMMU_VALUE.match(value):
            r.error(name, f"must be one word of gammu's configuration (letters, digits, "
                          f"'/', '.', ':', '_' or '-'), got {value!r}")
    keywords: dict[str, str] = {}
    for word, category in r.get("keywords", dict, {}).items():
        folded = fold_keyword(word)
        if not folded or not isinstance(category, str) or not is_slug(category):
            r.error("keywords", f"must map a word or digit to a category id, e.g. "
                                f"{{ \"1\" = \"drugs\" }}, got {word!r} = {category!r}")
            continue
        if category not in {c.id for c in categories}:
            r.error("keywords", f"{word!r} = {category!r}: this box has no such category: use "
                                f"one of {', '.join(c.id for c in categories)}")
        keywords[folded] = category
    text = r.text("acknowledge_text", "Đã nhận")
    if not 0 < len(text) <= 70:
        r.error("acknowledge_text", f"must be 1-70 characters (one text message), "
                                    f"got {len(text)}")
    settings = SmsSettings(
        number=number, keywords=keywords, per_hour=r.integer("per_hour", 5, 1, 1000),
        acknowledge=r.get("acknowledge", bool, False), acknowledge_text=text, **gammu)
    r.finish()
    return settings


def _ledger(r: _Reader | None, ctx: _Context) -> LedgerSettings:
    if r is None:
        return LedgerSettings(ctx.database("sqlite:///ledger.db"), ctx.resolve("attachments"))
    settings = LedgerSettings(
        database=ctx.database(r.text("database", "sqlite:///ledger.db")),
        attachments_dir=r.path("attachments_dir") or ctx.resolve("attachments"),
        max_message_bytes=r.integer("max_message_bytes", 25 * 1024 * 1024, 1),
        folder_status=_str_map(r, "folder_status"),
        flag_status=_str_map(r, "flag_status"),
        relay_public_keys=_public_keys(r, "relay_public_keys"),
        time_zone=_time_zone(r, "time_zone"),
        overdue_days=r.integer("overdue_days", 3, 1, 365),
        quarantine_days=r.integer("quarantine_days", 90, 0, 36500),
        attachment_days=r.integer("attachment_days", 0, 0, 36500),
        audit_days=r.integer("audit_days", 0, 0, 36500),
        memory_mb=r.integer("memory_mb", 160, 96, 1_000_000),
    )
    r.finish()
    return settings


def _time_zone(r: _Reader, name: str) -> str:
    value = r.text(name, DEFAULT_TIME_ZONE)
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        r.error(name, f"{value!r} is not a time zone: use an IANA name such as "
                      f"{DEFAULT_TIME_ZONE!r}")
        return DEFAULT_TIME_ZONE
    return value


def _public_keys(r: _Reader, name: str) -> tuple[bytes, ...]:
    keys = []
    for i, text in enumerate(r.get(name, list, []) or []):
        try:
            keys.append(parse_public_key(str(text)))
        except ValueError as exc:
            r.error(f"{name}[{i}]", f"{exc}: copy the key that `mailbridge check` prints on "
                                    "the relay")
    return tuple(keys)


def _str_map(r: _Reader, name: str) -> dict[str, str]:
    value = r.get(name, dict, {})
    if not all(isinstance(v, str) for v in value.values()):
        r.error(name, "must map names to status names (strings)")
        return {}
    return dict(value)


def _categories(top: _Reader, default: tuple[Category, ...]) -> tuple[Category, ...]:
    """``[[categories]]`` of the file or of one station; *default* where there are none."""
    if "categories" not in top.data:
        top.used.add("categories")
        return default
    result: list[Category] = []
    for c in top.tables("categories"):
        cid = c.text("id", required=True).lower()
        if cid and not is_slug(cid):
            c.error("id", f"must be short lower-case ASCII letters, digits or '-', got {cid!r}")
        labels = c.get("labels", dict, {})
        if cid not in BUILTIN_LABELS and not labels:
            c.error("labels", f'is missing for custom category {cid!r}: add labels = '
                              f'{{ vi = "...", en = "..." }}')
        result.append(Category(cid, c.text("pictogram", cid if cid in BUILTIN_LABELS
                                          else "other"), dict(labels)))
        c.finish()
    if not result:
        top.error("categories", "is empty: remove the key to use the default list, or add some")
    return tuple(result) or default
