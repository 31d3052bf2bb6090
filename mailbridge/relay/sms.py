"""SMS tips: gammu-smsd's configuration (``sms-config``) and its RunOnReceive (``sms-intake``).

A SIM in a USB GSM modem on the relay box, driven by Debian's gammu-smsd. The
configuration written here keeps the sender's number out of everything gammu writes:
the ``null`` service stores no message (the ``files`` service puts the number in each
file name), the dummy or real phone's copy is deleted once read, ``DebugLevel = 0``
(level 1 logs "Received message from: +84…"), ``DeliveryReport = no`` (``log`` writes
the number of each report), the gammu library's own log is off (``logformat =
nothing``) and the daemon's log goes to ``/dev/null`` unless ``--log`` names a file: its
lines carry the second each text came, finer than the hour the relay keeps.

gammu-smsd starts one ``mailbridge sms-intake`` per message (concatenated parts come
together), with the message in the environment. The intake reads it (``core/sms.py``),
counts the sender in this hour's bucket (``RelayStore.count_sms``: the relay database,
since every intake is a new process), and composes and stores the tip as a form tip
is (``accept_unreceipted``, ``X-Mailbridge-Placement: sms``), then makes one delivery
pass so the tip does not wait for the relay's next one. gammu-smsd drops the child's
output, so its lines go to syslog too; none holds the number, the text or a time.
"""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path

from ..config import Category, Settings, SmsSettings, Station
from ..core.message import signing_key
from ..core.sms import Sms, SmsRefused, category_of, read_sms
from ..errors import ConfigError, IntakeError, MailbridgeError
from ..fsmodes import private_file
from ..labels import sms_keywords
from .i18n import MESSAGE_LANGUAGE, N_, gettext_for
from .outbox import DeliveryWorker
from .ratelimit import sms_bucket
from .store import RelayStore
from .unreceipted import accept_unreceipted

log = logging.getLogger(__name__)

PLACEMENT = "sms"
DEFAULT_CATEGORY = "other"
SYSLOG = Path("/dev/log")
PLACEMENT_LABEL = N_("Text message to %(number)s")


def station_sms(settings: Settings, station_id: str) -> tuple[Station, SmsSettings]:
    """The station and its SMS settings, or a ConfigError naming the fix."""
    station = settings.station(station_id)
    if station is None:
        raise ConfigError(f"--station {station_id!r} is not in the config: use one of "
                          f"{', '.join(sorted(settings.stations))}")
    if station.sms is None:
        raise ConfigError(f"stations.{station.id}.sms is missing: add a [stations.sms] table "
                          f"with the SIM's number (see config/mailbridge.example.toml)")
    unknown = sorted({c for c in station.sms.keywords.values() if settings.category(c) is None})
    if unknown:
        raise ConfigError(f"stations.{station.id}.sms.keywords names categories that do not "
                          f"exist ({', '.join(unknown)}): use one of "
                          f"{', '.join(c.id for c in settings.categories)}")
    return station, station.sms


# -- sms-config ---------------------------------------------------------------------

def gammu_config(settings: Settings, station: Station, sms: SmsSettings, *,
                 command: str, log_file: str = "/dev/null", poll_seconds: int = 5) -> str:
    """The gammu-smsd configuration for *station*'s modem; each setting says why."""
    model = f"model = {sms.model}\n" if sms.model else ""
    return f"""\
# gammu-smsd for station {station.id}: written by `mailbridge sms-config --station {station.id}`.
# Every setting below keeps the sender's number out of what gammu writes: change none
# of them without reading docs/ADMIN.md ("SMS tips").
[gammu]
device = {sms.device}
connection = {sms.connection}
{model}# The gammu library's own log would trace the modem's traffic, numbers included.
logformat = nothing

[smsd]
# null: no message is stored (the files service puts the number in every file name);
# the phone's copy is deleted once read and RunOnReceive has the message.
service = null
RunOnReceive = {command}
# Level 1 logs "Received message from: <number>"; 0 logs no number.
DebugLevel = 0
# The daemon's lines carry the second each text came: /dev/null unless diagnosing.
LogFile = {log_file}
# "log" writes one line with the number per report; reports are never asked for.
DeliveryReport = no
ReceiveFrequency = {poll_seconds}
CommTimeout = {poll_seconds}
# No status file, no battery or signal polling: nothing else to write or log.
StatusFrequency = 0
CheckBattery = 0
CheckSignal = 0
"""


def intake_command(config: Path, station_id: str) -> str:
    """The RunOnReceive line: this Python and this config, quoted for gammu's shell."""
    return " ".join(shlex.quote(part) for part in (
        sys.executable, "-m", "mailbridge", "--config", str(config.absolute()),
        "sms-intake", "--station", station_id))


def run_sms_config(settings: Settings, station_id: str, *, out: Path | None,
                   log_file: str, poll_seconds: int) -> int:
    """Print the configuration, or write it 0600 to *out* (it names the modem)."""
    station, sms = station_sms(settings, station_id)
    text = gammu_config(settings, station, sms, command=intake_command(settings.path, station.id),
                        log_file=log_file, poll_seconds=poll_seconds)
    if out is None:
        sys.stdout.write(text)
        return 0
    try:
        private_file(out)
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot write it ({exc.strerror}): name a file in a "
                          f"folder this user may write") from exc
    print(f"wrote {out}: start it with `gammu-smsd -c {out}` (docs/ADMIN.md, SMS tips)")
    return 0


# -- sms-intake ---------------------------------------------------------------------

def _log_to_syslog() -> None:
    """INFO lines to stderr and to syslog (gammu-smsd discards the child's stderr). The
    relay's web server is not imported: an intake starts once per text."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if SYSLOG.exists():
        try:
            syslog = logging.handlers.SysLogHandler(address=str(SYSLOG))
        except OSError:
            pass
        else:
            syslog.ident = "mailbridge-sms-intake: "
            handlers.append(syslog)
    for handler in handlers:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def run_sms_intake(settings: Settings, station_id: str, env: Mapping[str, str], *,
                   deliver: bool = True, configure_logging: bool = True) -> int:
    """One message from gammu-smsd's environment into the outbox. 0 when it was stored or
    refused on purpose (refusals are one line naming their kind), 3 when storing failed."""
    if configure_logging:
        _log_to_syslog()
    station, sms = station_sms(settings, station_id)
    try:
        message = read_sms(env, max_chars=settings.relay.max_text_chars)
    except SmsRefused as refused:
        log.info("sms: a message for station %s was not taken (%s)", station.id, refused.kind)
        return 0
    store = RelayStore(settings.relay.database,
                       conversation_days=settings.relay.conversation_days)
    try:
        if not _within_limit(store, station, sms, message):
            log.info("sms: a text for station %s was dropped: stations.%s.sms.per_hour was "
                     "reached for its sender", station.id, station.id)
            return 0
        _accept(settings, store, station, sms, message)
        if deliver:
            asyncio.run(DeliveryWorker(settings, store).deliver_due())
    except MailbridgeError as exc:
        log.error("sms: a text for station %s was NOT stored: %s", station.id, exc)
        return IntakeError.exit_code
    finally:
        store.close()
    return 0


def _within_limit(store: RelayStore, station: Station, sms: SmsSettings, message: Sms) -> bool:
    count = store.count_sms(lambda key: sms_bucket(key, station.id, message.number_key))
    return count <= sms.per_hour


def _accept(settings: Settings, store: RelayStore, station: Station, sms: SmsSettings,
            message: Sms) -> None:
    categories = settings.categories
    fallback = settings.category(DEFAULT_CATEGORY) or categories[-1]
    found = category_of(message.text, sms_keywords(sms, categories), fallback.id)
    category: Category = settings.category(found) or fallback
    label = gettext_for(MESSAGE_LANGUAGE)(PLACEMENT_LABEL) % {"number": sms.number}
    accepted = accept_unreceipted(settings, store, signing_key(settings.relay.secret.reveal()),
                                  station, category, message.text,
                                  placement_id=PLACEMENT, placement_label=label)
    # DEBUG only, as for form tips: a journal timestamp beside a ref dates the tip.
    log.debug("sms: tip %s for station %s stored", accepted.ref, station.id)

