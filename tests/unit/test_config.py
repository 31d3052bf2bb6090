"""Config mistakes become one readable line naming the key and the fix, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mailbridge.config import load_config
from mailbridge.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SECRET = "x" * 40

GOOD = """
[relay]
address = "tips@relay.example.test"
secret_env = "MB_SECRET"
database = "sqlite:///relay.db"

[[stations]]
id = "ncs"
name = "Đồn Biên phòng Nậm Cha"
mailbox = "tips@ncs.example.test"
maildir = "mail/ncs"
placements = [{ id = "cho", label = "Chợ phiên" }]
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mailbridge.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_good_config_loads_with_defaults(tmp_path: Path) -> None:
    settings = load_config(_write(tmp_path, GOOD), env={"MB_SECRET": SECRET})
    assert settings.relay.domain == "relay.example.test"
    assert settings.relay.database == f"sqlite:///{tmp_path / 'relay.db'}"
    station = settings.station("NCS")
    assert station is not None and station.ref_prefix == "NCS"
    assert station.maildir == tmp_path / "mail" / "ncs"
    assert station.placement("cho") is not None
    assert [c.id for c in settings.categories][:2] == ["drugs", "smuggling"]
    assert "x" not in repr(settings.relay.secret)


def test_dotenv_beside_the_file_is_loaded_and_the_environment_wins(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD)
    (tmp_path / ".env").write_text(f"MB_SECRET={'d' * 40}\n")
    assert load_config(path, env={}).relay.secret.reveal() == "d" * 40
    assert load_config(path, env={"MB_SECRET": SECRET}).relay.secret.reveal() == SECRET


def test_config_path_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, GOOD)
    env = {"MB_SECRET": SECRET, "MAILBRIDGE_CONFIG": str(path)}
    assert load_config(None, env=env).path == path
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="config/mailbridge.toml does not exist"):
        load_config(None, env={"MB_SECRET": SECRET})


@pytest.mark.parametrize(("change", "expected"), [
    (("[relay]", "[relay]\nbogus = 1"), "relay.bogus is not a known setting"),
    (('mailbox = "tips@ncs.example.test"', ""), "stations.ncs.mailbox is missing"),
    (('mailbox = "tips@ncs.example.test"', 'mailbox = "not an address"'),
     "stations.ncs.mailbox must be an e-mail address"),
    (('maildir = "mail/ncs"', '[stations.smtp]\nhost = "h"\nport = "abc"'),
     "stations.ncs.smtp.port must be a port number 1-65535, got 'abc'"),
    (('maildir = "mail/ncs"', '[stations.smtp]\nhost = "h"\nport = 70000'),
     "stations.ncs.smtp.port must be a port number 1-65535, got 70000"),
    (('maildir = "mail/ncs"', '[stations.smtp]\nhost = "h"\npassword_env = "NOPE"'),
     "stations.ncs.smtp.password_env names $NOPE, which is not set"),
    (('maildir = "mail/ncs"', '[stations.smtp]\nhost = "h"\ntls = "ssl"'),
     'stations.ncs.smtp.tls must be "tls", "starttls" or "none"'),
    (('maildir = "mail/ncs"', ""), "stations.ncs.smtp is missing"),
    (('id = "ncs"', 'id = "Nậm Cha"'), "must be short lower-case ASCII"),
    (('secret_env = "MB_SECRET"', 'secret_env = "SHORT"'), "must hold at least 32 characters"),
    (('secret_env = "MB_SECRET"', ""), "relay.secret_env is missing"),
    (("[[stations]]", "[[categories]]\nid = \"wild\"\n[[stations]]"),
     "categories.wild.labels is missing for custom category 'wild'"),
    (('[relay]', '[relay]\nlanguages = ["vi", "fr"]'),
     "relay.languages has 'fr', which has no catalog: choose among vi, hmn, en, hmn-chv"),
    (('label = "Chợ phiên"', 'label = "Chợ phiên", language = "hmn-chv"'),
     "stations.ncs.placements.cho.language 'hmn-chv' is not in relay.languages: add it there"),
])
def test_each_mistake_is_one_line_naming_key_and_fix(
        tmp_path: Path, change: tuple[str, str], expected: str) -> None:
    old, new = change
    assert old in GOOD
    path = _write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        load_config(path, env={"MB_SECRET": SECRET, "SHORT": "abc"})
    lines = str(info.value).splitlines()
    assert any(expected in line for line in lines), lines
    assert all(str(path) in line for line in lines)


IMAP = '[stations.imap]\nhost = "h"\nusername = "u"\npassword_env = "MB_SECRET"\n'
SMTP = '[stations.smtp]\nhost = "h"\n'
LEDGER = "[ledger]\n"
STATION = 'id = "ncs"'


@pytest.mark.parametrize(("added", "expected"), [
    (("[relay]", "rate_limit_per_hour = 0"), "relay.rate_limit_per_hour must be at least 1, got 0"),
    (("[relay]", "retry_days = 0"), "relay.retry_days must be at least 1, got 0"),
    (("[relay]", "retry_days = -1"), "relay.retry_days must be at least 1, got -1"),
    (("[relay]", "max_text_chars = 0"), "relay.max_text_chars must be at least 1, got 0"),
    (("[relay]", "max_connections = 0"), "relay.max_connections must be at least 1, got 0"),
    (("[relay]", "header_timeout_seconds = 0"),
     "relay.header_timeout_seconds must be more than 0 and at most 3600"),
    (("[relay]", "body_timeout_seconds = inf"),
     "relay.body_timeout_seconds must be more than 0 and at most 3600"),
    (("[relay]", "languages = []"), "relay.languages is empty: list at least one of vi, hmn"),
    (("[relay]", 'domain = ""'), "relay.domain must be a domain name, got ''"),
    ((LEDGER, "max_message_bytes = 0"), "ledger.max_message_bytes must be at least 1, got 0"),
    ((LEDGER, "memory_mb = 64"), "ledger.memory_mb must be 96-1000000, got 64"),
    (("[relay]", "tips_in_flight = 0"), "relay.tips_in_flight must be 1-10000, got 0"),
    (("[relay]", "workers = 0"), "relay.workers must be 1-64, got 0"),
    (("[relay]", "workers = 65"), "relay.workers must be 1-64, got 65"),
    (("[relay]", 'workers = "auto"'), "relay.workers must be an integer, got 'auto'"),
    ((LEDGER, 'attachments_dir = ""'), "ledger.attachments_dir is empty: name a file or"),
    ((SMTP, "timeout = 0"), "stations.ncs.smtp.timeout must be more than 0 and at most 3600"),
    ((SMTP, "timeout = inf"), "stations.ncs.smtp.timeout must be more than 0 and at most 3600"),
    ((IMAP, "timeout = 0.0"), "stations.ncs.imap.timeout must be more than 0 and at most 3600"),
    ((IMAP, "folders = []"), "stations.ncs.imap.folders must list one folder name or more"),
    ((SMTP, 'ca_file = ""'), "stations.ncs.smtp.ca_file is empty"),
    ((STATION, "delivery_delay_minutes = 121"),
     "stations.ncs.delivery_delay_minutes must be 0-120, got 121"),
])
def test_an_explicit_out_of_range_value_is_one_error_not_the_default(
        tmp_path: Path, added: tuple[str, str], expected: str) -> None:
    """``x or default`` once turned an explicit 0 (or [] or "") into the default, silently."""
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, _with(*added)), env={"MB_SECRET": SECRET})
    lines = str(info.value).splitlines()
    assert len(lines) == 1 and expected in lines[0], lines


@pytest.mark.parametrize(("added", "read", "expected"), [
    (("[relay]", "retry_days = 1"), lambda s: s.relay.retry_days, 1),
    (("[relay]", "rate_limit_per_hour = 1"), lambda s: s.relay.rate_limit_per_hour, 1),
    (("[relay]", "max_connections = 1"), lambda s: s.relay.max_connections, 1),
    (("[relay]", "body_timeout_seconds = 2"), lambda s: s.relay.body_timeout_seconds, 2.0),
    (("[relay]", 'languages = ["en"]\ndefault_language = "en"'), lambda s: s.relay.languages,
     ("en",)),
    (("[relay]", 'languages = ["vi", "hmn", "hmn-chv"]'), lambda s: s.relay.languages,
     ("vi", "hmn", "hmn-chv")),
    ((LEDGER, "max_message_bytes = 1"), lambda s: s.ledger.max_message_bytes, 1),
    ((LEDGER, "memory_mb = 96"), lambda s: s.ledger.memory_mb, 96),
    (("[relay]", "tips_in_flight = 1"), lambda s: s.relay.tips_in_flight, 1),
    (("[relay]", "workers = 1"), lambda s: s.relay.workers, 1),
    (("[relay]", "workers = 64"), lambda s: s.relay.workers, 64),
    ((STATION, "delivery_delay_minutes = 0"),
     lambda s: s.stations["ncs"].delivery_delay_minutes, 0),
    ((SMTP, "timeout = 0.5"), lambda s: s.stations["ncs"].smtp.timeout, 0.5),
    ((IMAP, 'folders = ["Sent"]'), lambda s: s.stations["ncs"].imap.folders, ("Sent",)),
])
def test_an_explicit_value_in_range_is_kept(tmp_path: Path, added: tuple[str, str],
                                            read: Callable[[Any], object],
                                            expected: object) -> None:
    settings = load_config(_write(tmp_path, _with(*added)), env={"MB_SECRET": SECRET})
    assert read(settings) == expected


def _with(where: str, line: str) -> str:
    """GOOD with *line* added under ``[relay]``, in the station, or in a table appended
    after it (*where* is then that table's header and first keys)."""
    if where in ("[relay]", STATION):
        return GOOD.replace(where, f"{where}\n{line}", 1)
    return f"{GOOD}\n{where}{line}\n"


def test_all_mistakes_are_reported_together(tmp_path: Path) -> None:
    bad = GOOD.replace("[relay]", "[relay]\nlisten_port = 0\ntypo = 1").replace(
        'mailbox = "tips@ncs.example.test"', 'mailbox = "x"')
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, bad), env={"MB_SECRET": SECRET})
    assert len(str(info.value).splitlines()) == 3


def test_broken_toml_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(_write(tmp_path, "[relay\n"), env={})


def _check(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailbridge", *args], capture_output=True,
                          text=True, env=env, cwd=ROOT, check=False, timeout=60)


def test_check_command_exits_2_without_a_traceback(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.replace("[relay]", "[relay]\nlisten_port = \"x\""))
    result = _check("--config", str(path), "check", env={"MB_SECRET": SECRET, "PATH": ""})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"mailbridge: config: relay.listen_port must be a port number 1-65535, got 'x' ({path})")


def test_check_command_accepts_the_shipped_example(tmp_path: Path) -> None:
    example = (ROOT / "config" / "mailbridge.example.toml").read_text(encoding="utf-8")
    path = _write(tmp_path, example)
    env = {"MAILBRIDGE_SECRET": SECRET, "MAILBRIDGE_SMTP_PASSWORD": "p",
           "MAILBRIDGE_PVS_SMTP_PASSWORD": "p", "MAILBRIDGE_NCS_IMAP_PASSWORD": "p"}
    result = _check("--config", str(path), "check", env=env)
    assert result.returncode == 0, result.stderr
    assert "2 stations, 8 categories" in result.stdout


def test_example_env_lists_every_variable_the_example_names() -> None:
    example = (ROOT / "config" / "mailbridge.example.toml").read_text(encoding="utf-8")
    env_file = (ROOT / "config" / "example.env").read_text(encoding="utf-8")
    import re

    named = set(re.findall(r'^\s*\w+_env\s*=\s*"(\w+)"', example, re.M))
    assert named and all(f"{name}=" in env_file for name in named)


def test_relay_public_keys_are_read_and_check_prints_the_key_to_copy(tmp_path: Path) -> None:
    import io

    from mailbridge.checks import run_check
    from mailbridge.core.keytext import public_key_text
    from mailbridge.core.message import signing_key

    key = public_key_text(signing_key(SECRET))
    settings = load_config(_write(tmp_path, GOOD), env={"MB_SECRET": SECRET})
    assert settings.relay_identity().public_keys == (signing_key(SECRET).verify_key.encode(),)
    out = io.StringIO()
    assert run_check(settings, out=out) == 0
    assert f'relay_public_keys = ["{key}"]' in out.getvalue()

    station_side = GOOD + f'\n[ledger]\nrelay_public_keys = ["{key}"]\n'
    other = load_config(_write(tmp_path, station_side), env={"MB_SECRET": "o" * 40})
    assert other.relay_identity().public_keys == (signing_key(SECRET).verify_key.encode(),)

    bad = GOOD + '\n[ledger]\nrelay_public_keys = ["not a key", "AAAA"]\n'
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, bad), env={"MB_SECRET": SECRET})
    lines = str(err.value).splitlines()
    assert any(line.startswith("ledger.relay_public_keys[0] is not base64: copy the key")
               for line in lines), lines
    assert any("ledger.relay_public_keys[1] holds 3 bytes" in line for line in lines), lines


def test_smtp_intake_keys(tmp_path: Path) -> None:
    text = GOOD.replace('database = "sqlite:///relay.db"',
                        'database = "sqlite:///relay.db"\nsmtp_listen = "[::1]:2525"').replace(
        'maildir = "mail/ncs"', 'maildir = "mail/ncs"\nofficer_senders = ["An@Don.example.vn"]\n'
        'mail_tips_address = "NCS@relay.example.test"')
    settings = load_config(_write(tmp_path, text), env={"MB_SECRET": SECRET})
    assert settings.relay.smtp_listen == ("::1", 2525)
    assert settings.stations["ncs"].officer_senders == ("an@don.example.vn",)
    assert settings.stations["ncs"].mail_tips_address == "ncs@relay.example.test"
    assert load_config(_write(tmp_path, GOOD), env={"MB_SECRET": SECRET}).relay.smtp_listen is None


@pytest.mark.parametrize(("where", "line", "expected"), [
    ("relay", 'smtp_listen = "2525"', 'relay.smtp_listen must be "host:port"'),
    ("relay", 'smtp_listen = "0.0.0.0:99999"', 'relay.smtp_listen must be "host:port"'),
    ("relay", 'smtp_tls_cert = "cert.pem"', "relay.smtp_tls_cert and relay.smtp_tls_key go"),
    ("station", 'officer_senders = ["an"]', "officer_senders must list e-mail addresses"),
    ("station", 'mail_tips_address = "ncs"', "mail_tips_address must be an e-mail address"),
])
def test_smtp_intake_mistakes_are_one_line(tmp_path: Path, where: str, line: str,
                                           expected: str) -> None:
    anchor = 'database = "sqlite:///relay.db"' if where == "relay" else 'maildir = "mail/ncs"'
    with pytest.raises(ConfigError) as exc:
        load_config(_write(tmp_path, GOOD.replace(anchor, f"{anchor}\n{line}")),
                    env={"MB_SECRET": SECRET})
    assert len(str(exc.value).splitlines()) == 1
    assert expected in str(exc.value)


def test_the_station_sides_reply_account(tmp_path: Path) -> None:
    text = GOOD.replace('maildir = "mail/ncs"', 'maildir = "mail/ncs"\nsent_folder = "Đã gửi"') \
        + '[stations.reply_smtp]\nhost = "smtp.ncs.example.test"\nusername = "tips"\n' \
          'password_env = "NCS_PASS"\n'
    station = load_config(_write(tmp_path, text),
                          env={"MB_SECRET": SECRET, "NCS_PASS": "pw"}).stations["ncs"]
    assert station.reply_smtp is not None
    assert (station.reply_smtp.host, station.reply_smtp.port, station.reply_smtp.tls) == \
        ("smtp.ncs.example.test", 587, "starttls")
    assert station.reply_smtp.password.reveal() == "pw" and station.sent_folder == "Đã gửi"
    plain = load_config(_write(tmp_path, GOOD), env={"MB_SECRET": SECRET}).stations["ncs"]
    assert (plain.reply_smtp, plain.sent_folder) == (None, "Sent")
    with pytest.raises(ConfigError, match="password_env is missing") as exc:
        load_config(_write(tmp_path, text.replace('password_env = "NCS_PASS"\n', "")),
                    env={"MB_SECRET": SECRET})
    assert len(str(exc.value).splitlines()) == 1


def test_check_shows_the_smtp_intake_and_refuses_a_certificate_that_does_not_load(
        tmp_path: Path) -> None:
    intake = 'database = "sqlite:///relay.db"\nsmtp_listen = "0.0.0.0:2525"'
    path = _write(tmp_path, GOOD.replace('database = "sqlite:///relay.db"', intake))
    result = _check("--config", str(path), "check", env={"MB_SECRET": SECRET, "PATH": ""})
    assert result.returncode == 0, result.stderr
    assert ("smtp intake: 0.0.0.0:2525, no STARTTLS (no certificate), replies to "
            "reply+TOKEN@relay.example.test") in result.stdout
    (tmp_path / "cert.pem").write_text("not a certificate")
    path = _write(tmp_path, GOOD.replace('database = "sqlite:///relay.db"', intake + (
        '\nsmtp_tls_cert = "cert.pem"\nsmtp_tls_key = "cert.pem"')))
    result = _check("--config", str(path), "check", env={"MB_SECRET": SECRET, "PATH": ""})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "relay.smtp_tls_cert / relay.smtp_tls_key: cannot load" in result.stderr


def test_the_time_zone_is_checked_and_defaults_to_vietnams(tmp_path: Path) -> None:
    assert load_config(_write(tmp_path, GOOD), env={"MB_SECRET": SECRET}).ledger.time_zone == (
        "Asia/Ho_Chi_Minh")
    utc = load_config(_write(tmp_path, GOOD + '\n[ledger]\ntime_zone = "UTC"\n'),
                      env={"MB_SECRET": SECRET})
    assert utc.ledger.time_zone == "UTC"
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, GOOD + '\n[ledger]\ntime_zone = "Hanoi"\n'),
                    env={"MB_SECRET": SECRET})
    assert "ledger.time_zone 'Hanoi' is not a time zone: use an IANA name such as " \
        "'Asia/Ho_Chi_Minh'" in str(err.value)


def test_overdue_days_defaults_to_three_and_is_checked(tmp_path: Path) -> None:
    env = {"MB_SECRET": SECRET}
    assert load_config(_write(tmp_path, GOOD), env=env).ledger.overdue_days == 3
    week = load_config(_write(tmp_path, GOOD + "\n[ledger]\noverdue_days = 7\n"), env=env)
    assert week.ledger.overdue_days == 7
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, GOOD + "\n[ledger]\noverdue_days = 0\n"), env=env)
    assert "ledger.overdue_days" in str(err.value) and "\n" not in str(err.value)


STATION_EXAMPLE = ROOT / "config" / "station.example.toml"
STATION_ENV = {"MAILBRIDGE_NCS_IMAP_PASSWORD": "p", "PATH": ""}
RELAY_ONLY = GOOD  # secret and a maildir, no [ledger], no IMAP
STATION_ONLY = """
[relay]
address = "tips@relay.example.test"

[ledger]
relay_public_keys = ["cuBKv6+h1cuODxZ9Ik/VnKx+wslXoX9c2PpUv2zhp28="]

[[stations]]
id = "ncs"
mailbox = "tips@ncs.example.test"
"""
EXAMPLE_KEY = "cuBKv6+h1cuODxZ9Ik/VnKx+wslXoX9c2PpUv2zhp28="
NO_KEY = STATION_ONLY.replace(f'relay_public_keys = ["{EXAMPLE_KEY}"]', 'time_zone = "UTC"')


@pytest.mark.parametrize(("text", "env", "role", "expected"), [
    (STATION_ONLY, {}, "station", None),
    (STATION_ONLY, {}, "auto", None),
    (STATION_ONLY, {}, "relay", "relay.secret_env is missing"),
    (STATION_ONLY, {}, "all", "relay.secret_env is missing"),
    (STATION_ONLY.replace("[[stations]]", '[[stations]]\nmaildir = "m"'), {}, "auto",
     "relay.secret_env is missing"),  # a maildir delivers: the relay's, so both roles
    (RELAY_ONLY.replace('secret_env = "MB_SECRET"\n', ""), {}, "relay",
     "relay.secret_env is missing"),
    (RELAY_ONLY, {}, "station", "relay.secret_env names $MB_SECRET, which is not set"),
    (RELAY_ONLY, {"MB_SECRET": "short"}, "auto", "$MB_SECRET must hold at least 32"),
    (RELAY_ONLY.replace('maildir = "mail/ncs"\n', ""), {"MB_SECRET": SECRET}, "relay",
     "stations.ncs.smtp is missing"),
    (RELAY_ONLY.replace('maildir = "mail/ncs"\n', ""), {"MB_SECRET": SECRET}, "station",
     None),
    (STATION_ONLY + '[stations.imap]\nhost = "h"\n', {}, "station",
     "stations.ncs.imap.username is missing"),
    (NO_KEY.replace('address = "tips@relay.example.test"', 'address = "x"'), {}, "station",
     "relay.address must be an e-mail address"),
])
def test_each_role_validates_what_it_uses(tmp_path: Path, text: str, env: dict[str, str],
                                          role: Any, expected: str | None) -> None:
    path = _write(tmp_path, text)
    if expected is None:
        assert load_config(path, env=env, role=role).role in ("station", "relay")
        return
    with pytest.raises(ConfigError) as err:
        load_config(path, env=env, role=role)
    lines = str(err.value).splitlines()
    assert any(expected in line for line in lines), lines


@pytest.mark.parametrize(("text", "expected"), [
    (STATION_ONLY, "station"), (RELAY_ONLY, "relay"),
    (RELAY_ONLY + '\n[ledger]\ntime_zone = "UTC"\n', "all"),
])
def test_auto_reads_the_role_from_the_file(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path, text)
    assert load_config(path, env={"MB_SECRET": SECRET}, role="auto").role == expected


def test_a_station_side_that_trusts_no_key_is_refused_when_it_needs_one(tmp_path: Path) -> None:
    settings = load_config(_write(tmp_path, NO_KEY), env={}, role="station")
    with pytest.raises(ConfigError, match=r"^ledger.relay_public_keys is missing: copy the key "
                                          r"`mailbridge check` prints on the relay"):
        settings.relay_identity()
    result = _check("--config", str(tmp_path / "mailbridge.toml"), "check", env={"PATH": ""})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("mailbridge: config: ledger.relay_public_keys is missing")
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_admin_guides_station_side_file_is_the_tested_one() -> None:
    guide = (ROOT / "docs" / "ADMIN.md").read_text(encoding="utf-8")
    assert f"```toml\n{STATION_EXAMPLE.read_text(encoding='utf-8')}```" in guide


def test_the_admin_guides_station_side_file_passes_check_db_and_report(tmp_path: Path) -> None:
    path = tmp_path / "station.toml"
    path.write_text(STATION_EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    check = _check("--config", str(path), "check", env=STATION_ENV)
    assert check.returncode == 0, check.stderr
    assert "station ncs: Đồn Biên phòng Nậm Cha -> tinbao.ncs@example.org via imap " \
        "imap.example.org:993 (tls)" in check.stdout
    assert "ledger: trusts 1 relay key(s)" in check.stdout
    upgrade = _check("--config", str(path), "db", "upgrade", env=STATION_ENV)
    assert upgrade.returncode == 0, upgrade.stderr
    assert upgrade.stdout.strip() == "ledger database: up to date"  # no relay.db here
    assert not (tmp_path / "relay.db").exists()
    briefing = tmp_path / "briefing.pdf"
    report = _check("--config", str(path), "report", "--format", "csv", "--pdf",
                    str(briefing), env=STATION_ENV)
    assert report.returncode == 0, report.stderr
    assert briefing.read_bytes().startswith(b"%PDF")


def test_the_commands_roles() -> None:
    from mailbridge.cli import _role, build_parser

    def role(*argv: str) -> str:
        return _role(build_parser().parse_args(list(argv)))

    assert [role("serve"), role("outbox"), role("poll"), role("ledger"), role("report"),
            role("check"), role("db", "upgrade"), role("db", "upgrade", "--role", "relay")] \
        == ["relay", "relay", "station", "station", "station", "auto", "auto", "relay"]


def test_a_relay_side_file_passes_check_and_needs_no_imap(tmp_path: Path) -> None:
    result = _check("--config", str(_write(tmp_path, RELAY_ONLY)), "check",
                    env={"MB_SECRET": SECRET, "PATH": ""})
    assert result.returncode == 0, result.stderr
    assert "relay signing key:" in result.stdout and "ledger:" not in result.stdout
    workers = load_config(_write(tmp_path, RELAY_ONLY), env={"MB_SECRET": SECRET}).relay.workers
    assert (f"relay: form on 127.0.0.1:8080, {workers} web worker" in result.stdout
            and "(relay.workers)" in result.stdout), result.stdout


def test_secrets_come_from_the_env_file_named_like_the_config(tmp_path: Path) -> None:
    """relay.toml reads relay.env (the unit's EnvironmentFile) before a plain .env."""
    config = tmp_path / "relay.toml"
    config.write_text(GOOD, encoding="utf-8")
    (tmp_path / ".env").write_text(f"MB_SECRET={'d' * 40}\n")
    (tmp_path / "relay.env").write_text(f"MB_SECRET={'r' * 40}\n")
    assert load_config(config, env={}).relay.secret.reveal() == "r" * 40
    (tmp_path / "relay.env").unlink()
    assert load_config(config, env={}).relay.secret.reveal() == "d" * 40


def test_a_placement_may_set_its_own_language(tmp_path: Path) -> None:
    text = GOOD.replace('label = "Chợ phiên" }', 'label = "Chợ phiên", language = "hmn" },\n'
                        '              { id = "uy-ban", label = "Ủy ban xã" }')
    settings = load_config(_write(tmp_path, text), env={"MB_SECRET": SECRET})
    station = settings.stations["ncs"]
    assert [(p.id, p.language) for p in station.placements] == [("cho", "hmn"), ("uy-ban", "")]


def test_the_relay_has_one_web_worker_per_usable_cpu_at_most_four(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, GOOD)
    for cpus, workers in ((1, 1), (2, 2), (4, 4), (16, 4)):
        monkeypatch.setattr("os.sched_getaffinity", lambda _pid, n=cpus: set(range(n)))
        assert load_config(path, env={"MB_SECRET": SECRET}).relay.workers == workers
