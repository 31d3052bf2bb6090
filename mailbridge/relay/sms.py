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
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..config import Category, Settings, SmsSettings, Station
from ..core.message import signing_key
from ..core.sms import Sms, SmsRefused, category_of, read_sms
from ..errors import ConfigError, IntakeError, MailbridgeError
from ..fsmodes import private_dir, private_file
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
_PHONE = re.compile(r"^\+?[0-9]{3,20}$")
SPOOL = Path("/var/spool/mailbridge-sms")  # only with acknowledge = true
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
    return station, station.sms


# -- sms-config ---------------------------------------------------------------------

def gammu_config(settings: Settings, station: Station, sms: SmsSettings, *,
                 command: str, log_file: str = "/dev/null", poll_seconds: int = 5,
                 spool: Path | None = None) -> str:
    """The gammu-smsd configuration for *station*'s modem; each setting says why. With
    ``acknowledge`` the files service, under *spool*, so the reply can be queued."""
    model = f"model = {sms.model}\n" if sms.model else ""
    service = NULL_SERVICE if spool is None else FILES_SERVICE.format(spool=spool)
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
{service}RunOnReceive = {command}
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


NULL_SERVICE = """\
# null: no message is stored (the files service puts the number in every file name);
# the phone's copy is deleted once read and RunOnReceive has the message.
service = null
"""
FILES_SERVICE = """\
# files, because acknowledge = true: gammu-smsd-inject queues the reply in OutboxPath.
# A received message's file has the number in its name: the intake deletes it at once;
# sent and failed replies are deleted too (SentSMSPath and ErrorSMSPath = OutboxPath).
# This service logs numbers even at DebugLevel 0: keep LogFile = /dev/null.
service = files
InboxPath = {spool}/inbox/
OutboxPath = {spool}/outbox/
SentSMSPath = {spool}/outbox/
ErrorSMSPath = {spool}/outbox/
"""


def intake_command(config: Path, station_id: str, *, spool: Path | None = None,
                   smsdrc: Path | None = None) -> str:
    """The RunOnReceive line: this Python and this config, quoted for gammu's shell; with
    an acknowledgement, where the received files are and the file to queue it with."""
    ack = () if spool is None or smsdrc is None else (
        "--inbox", str(spool / "inbox"), "--gammu-config", str(smsdrc.absolute()))
    return " ".join(shlex.quote(part) for part in (
        sys.executable, "-m", "mailbridge", "--config", str(config.absolute()),
        "sms-intake", "--station", station_id, *ack))


def run_sms_config(settings: Settings, station_id: str, *, out: Path | None,
                   log_file: str, poll_seconds: int, spool: Path | None = None) -> int:
    """Print the configuration, or write it 0600 to *out* (it names the modem)."""
    station, sms = station_sms(settings, station_id)
    spool = (spool or SPOOL / station.id).absolute() if sms.acknowledge else None
    if spool is not None and out is None:
        raise ConfigError(f"stations.{station.id}.sms.acknowledge is on: pass --out FILE, "
                          f"the intake queues each acknowledgement with that file")
    command = intake_command(settings.path, station.id, spool=spool, smsdrc=out)
    text = gammu_config(settings, station, sms, command=command, log_file=log_file,
                        poll_seconds=poll_seconds, spool=spool)
    if out is None:
        sys.stdout.write(text)
        return 0
    try:
        if spool is not None:
            for folder in (spool, spool / "inbox", spool / "outbox"):
                private_dir(folder)
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
                   deliver: bool = True, configure_logging: bool = True,
                   inbox: Path | None = None, files: Sequence[str] = (),
                   gammu_config_file: Path | None = None) -> int:
    """One message from gammu-smsd's environment into the outbox. 0 when it was stored or
    refused on purpose (refusals are one line naming their kind), 3 when storing failed.
    With the files service (acknowledge on), its *files* in *inbox* are deleted first."""
    if configure_logging:
        _log_to_syslog()
    station, sms = station_sms(settings, station_id)
    if inbox is not None:
        _delete_received(inbox, files)
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
        if sms.acknowledge and gammu_config_file is not None:
            _acknowledge(gammu_config_file, sms, message)
        if deliver:
            asyncio.run(DeliveryWorker(settings, store).deliver_due())
    except MailbridgeError as exc:
        log.error("sms: a text for station %s was NOT stored: %s", station.id, exc)
        return IntakeError.exit_code
    finally:
        store.close()
    return 0


def _delete_received(inbox: Path, files: Sequence[str]) -> None:
    """The files service's copies (``IN…_<number>_….txt``): gone before anything else."""
    for name in files:
        path = inbox / Path(name).name
        if path.name.startswith("IN"):
            path.unlink(missing_ok=True)


def _acknowledge(smsdrc: Path, sms: SmsSettings, message: Sms) -> None:
    """Queue the short reply; gammu-smsd-inject's output names the number: never shown.
    A sender that is not a phone number (an operator's name) gets none."""
    inject = shutil.which("gammu-smsd-inject")
    if not _PHONE.match(message.reply_number) or inject is None:
        log.info("sms: no acknowledgement: %s", "the sender is not a phone number"
                 if inject else "gammu-smsd-inject is not installed")
        return
    try:
        done = subprocess.run([inject, "-c", str(smsdrc), "TEXT",  # noqa: S603 (digits only)
                               message.reply_number, "-unicode", "-text", sms.acknowledge_text],
                              capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        log.error("sms: the acknowledgement could not be queued (%s)", type(exc).__name__)
        return
    if done.returncode != 0:
        log.error("sms: the acknowledgement could not be queued (gammu-smsd-inject exit %d)",
                  done.returncode)


def _within_limit(store: RelayStore, station: Station, sms: SmsSettings, message: Sms) -> bool:
    count = store.count_sms(lambda key: sms_bucket(key, station.id, message.number_key))
    return count <= sms.per_hour


def _accept(settings: Settings, store: RelayStore, station: Station, sms: SmsSettings,
            message: Sms) -> None:
    categories = station.categories
    fallback = station.category(DEFAULT_CATEGORY) or categories[-1]
    found = category_of(message.text, sms_keywords(sms, categories), fallback.id)
    category: Category = station.category(found) or fallback
    label = gettext_for(MESSAGE_LANGUAGE)(PLACEMENT_LABEL) % {"number": sms.number}
    accepted = accept_unreceipted(settings, store, signing_key(settings.relay.secret.reveal()),
                                  station, category, message.text,
                                  placement_id=PLACEMENT, placement_label=label)
    # DEBUG only, as for form tips: a journal timestamp beside a ref dates the tip.
    log.debug("sms: tip %s for station %s stored", accepted.ref, station.id)
