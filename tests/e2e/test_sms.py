"""SMS tips through the real gammu-smsd (dummy phone: a folder, no modem) into the station
mailbox of the real Postfix + Dovecot, and the senders' numbers nowhere afterwards.

The tests' own fixture is the phone: ``gammu savesms`` (and ``addsms`` for a delivery
report, which savesms cannot make) writes each received text into the dummy phone's
inbox, as a SIM holds it until gammu-smsd reads and deletes it.
"""

from __future__ import annotations

import email
import os
import secrets
import signal
import subprocess
import sys
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest

from mailbridge.config import load_config
from mailbridge.core.message import body_digest, verify_contract
from mailbridge.relay.store import DELIVERED, RelayStore
from tests.e2e.support import free_port, smtp_station, write_config
from tests.waiting import wait_for

pytestmark = pytest.mark.servers

MAILBOX = "station1@example.test"
STATION_NUMBER = "0203 777 000"  # the station's own, printed on posters: not a sender
SENDERS = {
    "single": "+84912345678", "parts": "0987654321", "ucs2": "84961234567",
    "digit": "+84355512345", "report": "+84977000111", "empty": "+84388222333",
    "flood": "+84911999888", "wap": "+84866777888", "mms": "+84855666777",
    "flash": "+84844555666", "direct": "+84899001122",
}
FLOOD, PER_HOUR = 5, 3
LONG = " ".join(f"doan{i:03d}" for i in range(50))  # 399 characters: three parts
UCS2 = "Ma túy: ở bản Nậm Cuổi có người giấu hàng dưới gầm nhà sàn, đường mòn phía suối"
REPORT = """[SMSBackup000]
PDU = Status_Report
DateTime = 20261201T105254Z
SMSCDateTime = 20261201T105254Z
State = UnRead
Number = "{number}"
Text00 =
Coding = Default_No_Compression
Folder = 1
Length = 0
Class = -1
MessageReference = 5
DeliveryStatus = 0
"""


def mailbridge(config: Path, *args: str, env: dict[str, str] | None = None,
               ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailbridge", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, **(env or {})})


def gammu(smsdrc: Path, *args: str) -> None:
    subprocess.run(["gammu", "-c", str(smsdrc), *args], capture_output=True, check=True,
                   timeout=60)


def savesms(smsdrc: Path, sender: str, *args: str) -> None:
    gammu(smsdrc, "savesms", *args, "-folder", "1", "-unread", "-sender", sender)


def spellings(number: str) -> list[bytes]:
    """The number as anything could write it: +84…, 0…, 84… all hold its last nine digits,
    with spaces as posters write it, and as UTF-16 (gammu's NumberUnicode)."""
    nine = "".join(c for c in number if c.isdigit())[-9:]
    spaced = f"{nine[:3]} {nine[3:6]} {nine[6:]}"
    return [nine.encode(), spaced.encode(), nine.encode("utf-16-be"),
            nine.encode("utf-16-be").hex().upper().encode()]


@dataclass
class GammuRun:
    folder: Path
    phone: Path
    smsdrc: Path
    log: Path
    out: Path

    def start(self) -> subprocess.Popen[bytes]:
        with self.out.open("ab") as out:
            return subprocess.Popen(["gammu-smsd", "-c", str(self.smsdrc)], stdout=out,
                                    stderr=subprocess.STDOUT)

    def finished(self) -> int:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return text.count("Process finished") + text.count("Process failed")

    def inbox(self) -> list[Path]:
        folder = self.phone / "sms" / "1"
        return sorted(folder.iterdir()) if folder.is_dir() else []

    def run(self, messages: int, timeout: float = 300, *, then: str = "") -> None:
        """gammu-smsd until every message went through RunOnReceive (and its log says
        *then*), then SIGTERM."""
        daemon = self.start()
        try:
            wait_for(lambda: self.finished() >= messages and not self.inbox()
                     and then in self.log.read_text(errors="replace"),
                     f"gammu-smsd handing over {messages} messages", timeout, interval=0.2)
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(30)


def gammu_run(folder: Path, config: Path, *extra: str) -> GammuRun:
    smsdrc, log = folder / "smsdrc", folder / "gammu-smsd.log"
    made = mailbridge(config, "sms-config", "--station", "ncs", "--out", str(smsdrc),
                      "--log", str(log), "--poll-seconds", "1", *extra)
    assert made.returncode == 0, made.stderr
    (folder / "phone").mkdir(exist_ok=True)  # the dummy phone: gammu fills it
    return GammuRun(folder, folder / "phone", smsdrc, log, folder / "gammu-smsd.out")


def sms_config(folder: Path, stack: Any, prefix: str, extra: str = "") -> Path:
    stations = smtp_station(stack, prefix) + f"""
[stations.sms]
number = "{STATION_NUMBER}"
device = "{folder / 'phone'}"
connection = "none"
model = "dummy"
per_hour = {PER_HOUR}
{extra}"""
    config = write_config(folder, free_port(), stations)
    with (folder / ".env").open("a") as env:
        env.write("STATION_SMTP_PASSWORD=secret\n")
    upgraded = mailbridge(config, "db", "upgrade", "--role", "relay")
    assert upgraded.returncode == 0, upgraded.stderr
    return config


def station_tips(stack: Any, prefix: str) -> list[EmailMessage]:
    found = []
    for sub in ("new", "cur"):
        folder = stack.maildir(MAILBOX) / sub
        for path in folder.iterdir() if folder.is_dir() else ():
            msg = email.message_from_bytes(path.read_bytes(), policy=default_policy)
            assert isinstance(msg, EmailMessage)
            if str(msg.get("X-Mailbridge-Ref", "")).startswith(prefix + "-"):
                found.append(msg)
    return found


def text_of(msg: EmailMessage) -> str:
    part = msg.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


@dataclass
class Outcome:
    folder: Path
    config: Path
    prefix: str
    tips: list[EmailMessage]
    intakes: list[subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def outcome(mailstack: Any, tmp_path_factory: pytest.TempPathFactory) -> Outcome:
    folder = tmp_path_factory.mktemp("sms")
    prefix = "S" + secrets.token_hex(3).upper()
    config = sms_config(folder, mailstack, prefix)
    run = gammu_run(folder, config)
    savesms(run.smsdrc, SENDERS["single"], "TEXT", "-text", "co nguoi la o ban tren dem qua")
    savesms(run.smsdrc, SENDERS["parts"], "TEXT", "-autolen", "400", "-text", LONG)
    savesms(run.smsdrc, SENDERS["ucs2"], "TEXT", "-unicode", "-autolen", "200", "-text", UCS2)
    savesms(run.smsdrc, SENDERS["digit"], "TEXT", "-text", "2 xe cho thuoc la qua suoi")
    (folder / "report.smsbackup").write_text(REPORT.format(number=SENDERS["report"]))
    gammu(run.smsdrc, "addsms", "1", str(folder / "report.smsbackup"), "-yes")
    (folder / "report.smsbackup").unlink()  # the test's own input, not what gammu wrote
    savesms(run.smsdrc, SENDERS["empty"], "TEXT", "-text", "")
    for i in range(FLOOD):
        savesms(run.smsdrc, SENDERS["flood"], "TEXT", "-text", f"tin nhan lien tuc so {i}")
    savesms(run.smsdrc, SENDERS["wap"], "WAPINDICATOR", "http://x.example/w", "wap")
    savesms(run.smsdrc, SENDERS["mms"], "MMSINDICATOR", "http://x.example/m", "mms", "ai do")
    savesms(run.smsdrc, SENDERS["flash"], "TEXT", "-flash", "-text", "tin nhan nhay")
    assert len(run.inbox()) == 17  # the long texts are two (UCS-2: 67 each) and three parts
    run.run(messages=14)
    expected = 4 + PER_HOUR
    wait_for(lambda: len(station_tips(mailstack, prefix)) >= expected,
             f"{expected} SMS tips in the station mailbox", 60, interval=0.2)
    # What an intake prints, run as gammu-smsd runs it (gammu-smsd discards it): the
    # flood's sixth text, dropped, and one from a new sender, stored and delivered.
    intakes = [mailbridge(config, "sms-intake", "--station", "ncs", env={
        "SMS_MESSAGES": "1", "SMS_1_NUMBER": SENDERS[sender], "SMS_1_CLASS": "-1",
        "SMS_1_REFERENCE": "0", "SMS_1_TEXT": text, "DECODED_PARTS": "0"})
        for sender, text in (("flood", "tin nhan lien tuc nua"), ("direct", "tin nhan thu"))]
    assert [i.returncode for i in intakes] == [0, 0], [i.stderr for i in intakes]
    wait_for(lambda: len(station_tips(mailstack, prefix)) >= expected + 1,
             "the direct intake's tip", 60, interval=0.2)
    return Outcome(folder, config, prefix, station_tips(mailstack, prefix), intakes)


def test_each_text_is_one_tip_in_the_station_mailbox(outcome: Outcome) -> None:
    texts = sorted(text_of(m) for m in outcome.tips)
    assert len(outcome.tips) == 4 + PER_HOUR + 1, texts
    for wanted in ("co nguoi la o ban tren dem qua", LONG, UCS2, "2 xe cho thuoc la qua suoi",
                   "tin nhan thu"):
        assert sum(wanted in t for t in texts) == 1, wanted
    assert sum("tin nhan lien tuc so" in t for t in texts) == PER_HOUR
    refs = [str(m["X-Mailbridge-Ref"]) for m in outcome.tips]
    assert len(set(refs)) == len(refs)


def test_the_ucs2_text_and_the_parts_arrive_readable_and_whole(outcome: Outcome) -> None:
    by_text = {text_of(m): m for m in outcome.tips}
    assert any(UCS2 in t for t in by_text)  # diacritics intact, NFC
    [long_text] = [t for t in by_text if "doan000" in t]
    assert LONG in long_text  # three parts joined in order, nothing added at the seams


def test_a_leading_keyword_or_digit_names_the_category(outcome: Outcome) -> None:
    def category(start: str) -> str:
        [msg] = [m for m in outcome.tips if start in text_of(m)]
        return str(msg["X-Mailbridge-Category"])

    assert category(UCS2) == "drugs"  # "Ma túy:", its Vietnamese label
    assert category("2 xe cho thuoc la") == "smuggling"  # 2, as the poster numbers them
    assert category("co nguoi la o ban") == "other"


def test_every_tip_is_signed_and_placed_sms(outcome: Outcome) -> None:
    settings = load_config(outcome.config, env={})
    keys = settings.relay_identity().public_keys
    for msg in outcome.tips:
        assert str(msg["X-Mailbridge-Placement"]) == "sms"
        lists: dict[str, list[str]] = {}
        for name, value in msg.items():
            lists.setdefault(name.lower(), []).append(str(value))
        checked = verify_contract(lists, body_digest(msg), keys)
        assert checked.contract is not None, checked.problem


def test_the_outbox_delivered_each_once_and_the_flood_was_cut(outcome: Outcome) -> None:
    settings = load_config(outcome.config, env={})
    store = RelayStore(settings.relay.database)
    try:
        rows = store.list_outbox()
    finally:
        store.close()
    assert [r.state for r in rows] == [DELIVERED] * len(rows)
    assert len(rows) == 4 + PER_HOUR + 1  # the flood's sixth, run directly: dropped too
    assert "per_hour was reached" in outcome.intakes[0].stderr
    assert "outbox: delivered" in outcome.intakes[1].stderr


def test_no_sender_number_in_anything_gammu_or_mailbridge_wrote(outcome: Outcome) -> None:
    written = [p for p in outcome.folder.rglob("*")
               if p.is_file() and p.name not in ("mailbridge.toml", ".env")]
    names = {p.name for p in written}
    assert {"relay.db", "smsdrc", "gammu-smsd.log", "gammu-smsd.out"} <= names
    assert "Read " in (outcome.folder / "gammu-smsd.log").read_text()  # it did log
    assert not list((outcome.folder / "phone" / "sms" / "1").iterdir())
    blobs = {str(p): p.read_bytes() for p in written}
    blobs |= {f"mail {m['X-Mailbridge-Ref']}": m.as_bytes() for m in outcome.tips}
    blobs |= {f"intake {i} output": (run.stdout + run.stderr).encode()
              for i, run in enumerate(outcome.intakes)}
    for name, number in SENDERS.items():
        for needle in spellings(number):
            leaks = [where for where, data in blobs.items() if needle in data]
            assert not leaks, f"{name} sender {needle!r} in {leaks}"


def test_sms_config_writes_the_settings_that_keep_numbers_out(tmp_path: Path,
                                                             mailstack: Any) -> None:
    config = sms_config(tmp_path, mailstack, "SCFG")
    printed = mailbridge(config, "sms-config", "--station", "ncs")
    assert printed.returncode == 0, printed.stderr
    settings = dict(line.split(" = ", 1) for line in printed.stdout.splitlines()
                    if " = " in line and not line.startswith("#"))
    assert settings["service"] == "null"
    assert settings["DebugLevel"] == "0"
    assert settings["LogFile"] == "/dev/null"
    assert settings["DeliveryReport"] == "no"
    assert settings["logformat"] == "nothing"
    assert settings["RunOnReceive"].endswith(f"--config {config} sms-intake --station ncs")
    missing = mailbridge(config, "sms-config", "--station", "nope")
    assert missing.returncode == 2
    assert missing.stderr.startswith("mailbridge: config: --station 'nope' is not in the config")


@pytest.mark.parametrize("changed", [
    {"DebugLevel": "1"},  # "Received message from: +84…"
    {"service": "files", "InboxPath": "{folder}/inbox/", "OutboxPath": "{folder}/inbox/"},
])
def test_without_each_setting_gammu_writes_the_number(tmp_path: Path, mailstack: Any,
                                                      changed: dict[str, str]) -> None:
    """The check above can fail: change one setting and gammu-smsd leaves the number."""
    config = sms_config(tmp_path, mailstack, "SLEAK")
    run = gammu_run(tmp_path, config)
    (tmp_path / "inbox").mkdir()
    lines = run.smsdrc.read_text().splitlines()
    keys = {k: v.format(folder=tmp_path) for k, v in changed.items()}
    lines = [f"{line.split(' = ')[0]} = {keys.pop(line.split(' = ')[0])}"
             if line.split(" = ")[0] in keys else line for line in lines]
    lines = [*lines, *(f"{k} = {v}" for k, v in keys.items())]
    # RunOnReceive: the shell's `true`, so only gammu writes anything.
    run.smsdrc.write_text("\n".join(line if not line.startswith("RunOnReceive") else
                                    "RunOnReceive = true" for line in lines) + "\n")
    savesms(run.smsdrc, SENDERS["single"], "TEXT", "-text", "co nguoi la")
    run.run(messages=1, timeout=60)
    written = b"".join(p.read_bytes() + p.name.encode() for p in tmp_path.rglob("*")
                       if p.is_file() and p.name not in ("mailbridge.toml", ".env", "smsdrc"))
    assert spellings(SENDERS["single"])[0] in written


def test_an_acknowledgement_is_sent_and_its_files_deleted(tmp_path: Path,
                                                         mailstack: Any) -> None:
    """acknowledge = true: the files service, whose inbox file and queued reply name the
    number, both deleted; the reply goes out (the only place left is gammu's own log,
    asked for here to see it, which is why sms-config sends it to /dev/null)."""
    prefix = "S" + secrets.token_hex(3).upper()
    config = sms_config(tmp_path, mailstack, prefix, 'acknowledge = true\n')
    spool = tmp_path / "spool"
    run = gammu_run(tmp_path, config, "--spool", str(spool))
    assert "service = files" in run.smsdrc.read_text()
    savesms(run.smsdrc, SENDERS["single"], "TEXT", "-text", "co nguoi la o bai da")
    run.run(messages=1, then="Transmitted")  # the acknowledgement went out
    [tip] = station_tips(mailstack, prefix)
    assert "co nguoi la o bai da" in text_of(tip)
    assert [p for p in spool.rglob("*") if p.is_file()] == []
    assert spellings(SENDERS["single"])[0] in run.log.read_bytes()  # hence /dev/null
    run.log.unlink()
    written = b"".join(p.read_bytes() + p.name.encode() for p in tmp_path.rglob("*")
                       if p.is_file() and p.name not in ("mailbridge.toml", ".env"))
    for needle in spellings(SENDERS["single"]):
        assert needle not in written + tip.as_bytes()
