"""The ``mailbridge`` command: one sub-command per role.

Exit codes systemd can act on: 0 ok, 2 configuration error (fix the file;
``RestartPreventExitStatus=2`` stops restart loops), 3 runtime error (retry
later), 4 a bug (versions printed, please report).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import traceback
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Literal, cast

from . import __version__
from .config import Role, Settings, load_config
from .errors import ConfigError, MailbridgeError

EXIT_OK, EXIT_CONFIG, EXIT_RUNTIME, EXIT_BUG = 0, 2, 3, 4


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date like 2026-11-23") from exc


def _month(value: str) -> str:
    try:
        date.fromisoformat(value + "-01")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a month like 2026-11") from exc
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailbridge",
        description="Anonymous tip box: web form -> station mailbox -> officers' ledger.",
    )
    parser.add_argument("--version", action="version", version=f"mailbridge {__version__}")
    parser.add_argument("--config", metavar="PATH",
                        help="config file (default: $MAILBRIDGE_CONFIG, then "
                             "./config/mailbridge.toml); .env beside it is loaded")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sub.add_parser("serve", help="run the relay: web form and delivery to station mailboxes")

    p = sub.add_parser("dkim-key", help="relay: create the DKIM key (if missing) and print "
                                        "the DNS TXT record to publish")
    p.add_argument("--selector", metavar="S",
                   help="selector of a new key, to change keys (default: relay.dkim_selector)")

    p = sub.add_parser("sms-config", help="relay: write the gammu-smsd configuration of a "
                                          "station's SMS modem (keeps numbers out of its files)")
    p.add_argument("--station", metavar="ID", required=True)
    p.add_argument("--out", type=Path, metavar="FILE", help="write it here (0600), not to stdout")
    p.add_argument("--log", metavar="FILE", default="/dev/null",
                   help="gammu-smsd's log (default /dev/null: its lines time each text)")
    p.add_argument("--poll-seconds", type=int, default=5, choices=range(1, 61), metavar="N",
                   help="how often gammu-smsd asks the modem for new texts (default 5)")
    p.add_argument("--spool", type=Path, metavar="DIR",
                   help="with acknowledge = true: gammu's spool (default "
                        "/var/spool/mailbridge-sms/ID)")
    p = sub.add_parser("sms-intake", help="relay: gammu-smsd's RunOnReceive: one text from "
                                          "the environment into the outbox")
    p.add_argument("--station", metavar="ID", required=True)
    p.add_argument("--inbox", type=Path, metavar="DIR", help=argparse.SUPPRESS)
    p.add_argument("--gammu-config", type=Path, metavar="FILE", help=argparse.SUPPRESS)
    p.add_argument("files", nargs="*", help=argparse.SUPPRESS)  # the files service's

    p = sub.add_parser("oauth2-token", help="sign in to Gmail or Microsoft 365 once and print "
                                            "the refresh token for the env file")
    p.add_argument("--provider", choices=("google", "microsoft"))
    p.add_argument("--client-id", required=True, help="the app registration's client ID")
    p.add_argument("--tenant", default="", help="Microsoft: the Directory (tenant) ID")
    p.add_argument("--client-secret-env", default="", metavar="NAME",
                   help="environment variable holding the client secret (Google's apps)")
    p.add_argument("--env-name", default="MAILBRIDGE_OAUTH2_REFRESH_TOKEN", metavar="NAME",
                   help="the variable name printed before the token (refresh_token_env)")
    p.add_argument("--port", type=int, default=8765,
                   help="loopback port for the browser's redirect (default 8765; 0: any)")
    p.add_argument("--device", action="store_true",
                   help="Microsoft's device-code sign-in: a code to type in any browser")
    for name in ("authorize-url", "device-url", "token-url", "scope"):
        p.add_argument(f"--{name}", default="", help="instead of --provider")

    p = sub.add_parser("check", help="validate the configuration; one line per mistake")
    p.add_argument("--connect", action="store_true",
                   help="also log in to every station's SMTP and IMAP server")

    p = sub.add_parser("outbox", help="admin: list, retry or drop queued tips")
    osub = p.add_subparsers(dest="action", metavar="ACTION")
    lp = osub.add_parser("list", help="show the outbox (never the tip text)")
    lp.add_argument("--all", action="store_true", help="include delivered and dropped rows")
    osub.add_parser("retry", help="deliver a queued or dead tip now").add_argument("id", type=int)
    osub.add_parser("drop", help="give up on a tip and purge its text").add_argument(
        "id", type=int)

    p = sub.add_parser("poll", help="station side: index station mailboxes into the ledger")
    p.add_argument("--once", action="store_true", help="one pass, then exit")
    p.add_argument("--station", metavar="ID", help="only this station")

    p = sub.add_parser("db", help="database maintenance")
    dsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    up = dsub.add_parser("upgrade", help="create or migrate the relay and ledger databases")
    up.add_argument("--role", choices=("relay", "station", "all"), default="all",
                    help="only the relay database, only the ledger, or both (default)")

    p = sub.add_parser("purge", help="delete what is past its retention and vacuum the "
                                     "database (docs/ADMIN.md: what is kept, how long)")
    p.add_argument("--dry-run", action="store_true", help="only say what would be deleted")
    p.add_argument("--role", choices=("relay", "station", "all"),
                   help="only the relay side, only the station side, or both (default: "
                        "what the config file configures)")

    for name, flag, what in (("backup", "--to", "copy the databases (and attachments) into "
                                                 "DIR, 0600; never the secret"),
                             ("restore", "--from", "put a backup from DIR back (stop the "
                                                   "services first)")):
        p = sub.add_parser(name, help=what)
        p.add_argument(flag, dest="folder", type=Path, metavar="DIR", required=True)
        p.add_argument("--role", choices=("relay", "station", "all"),
                       help="only the relay side, only the station side, or both (default: "
                            "what the config file configures)")

    p = sub.add_parser("ledger", help="station side: the officers' terminal UI; the acting "
                                      "officer is stations.<id>.officers[your OS account]")
    p.add_argument("--station", metavar="ID", help="only this station")
    lsub = p.add_subparsers(dest="action", metavar="ACTION")
    ep = lsub.add_parser("export", help="one tip for the case file: thread, attachments' "
                                        "SHA-256 and audit, as a PDF to print")
    ep.add_argument("ref", metavar="REF", help="the tip's number, e.g. NCS-0042")
    ep.add_argument("--out", type=Path, metavar="FILE.pdf", required=True)
    ep.add_argument("--station", dest="export_station", metavar="ID",
                    help="the tip's station, when two stations use the same number")

    p = sub.add_parser("report", help="figures for command")
    p.add_argument("--format", dest="fmt", choices=("table", "csv", "json", "bars"),
                   default="table")
    p.add_argument("--from", dest="date_from", type=_date, metavar="YYYY-MM-DD")
    p.add_argument("--to", dest="date_to", type=_date, metavar="YYYY-MM-DD")
    p.add_argument("--month", type=_month, metavar="YYYY-MM")
    p.add_argument("--station", metavar="ID")
    p.add_argument("--chart", type=Path, metavar="PNG", help="also write a bar chart image")
    p.add_argument("--pdf", type=Path, metavar="FILE",
                   help="also write the period's one-page briefing (Vietnamese PDF)")

    p = sub.add_parser("posters", help="printable QR posters (PDF and 300 dpi PNG) for each "
                                       "station and placement")
    p.add_argument("--station", metavar="ID", help="only this station")
    p.add_argument("--placement", metavar="ID", help="only this placement")
    p.add_argument("--size", choices=("A4", "A5"), help="only this size (default: both)")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="folder to write to (default: posters/ beside the config)")
    p.add_argument("--template", default="default", metavar="NAME",
                   help="poster_templates/NAME.toml beside the config, or the bundled one, "
                        "or a .toml file (default: default)")

    p = sub.add_parser("install", help="Debian, as root: the role's system user, folders, "
                                       "config skeleton, secret and systemd units")
    p.add_argument("--role", choices=("relay", "station"), required=True)
    p.add_argument("--dry-run", action="store_true", help="print the steps, change nothing")
    p.add_argument("--root", type=Path, default=Path("/"), metavar="DIR",
                   help="install under DIR (its etc/passwd gets the user), not into /")
    p.add_argument("--source", type=Path, metavar="DIR",
                   help="the mailbridge source folder with systemd/ and config/ "
                        "(default: the one this mailbridge runs from)")

    p = sub.add_parser("demo", help="run everything on this machine: no mail server needed")
    p.add_argument("--dir", type=Path, default=Path("demo"), help="demo folder (default: demo)")
    p.add_argument("--port", type=int, default=8080, help="web port (default: 8080)")
    p.add_argument("--smtp-port", type=int, default=2525,
                   help="SMTP port for officers' replies (default: 2525)")
    p.add_argument("--seed", type=int, default=3, help="sample tips to send at start")
    p.add_argument("--once", action="store_true",
                   help="send the sample tips, index them, print a summary and exit")
    return parser


def _run(args: argparse.Namespace) -> int:
    if args.command == "install":  # before any config exists
        from .install import run_install

        return run_install(args.role, root=args.root, dry_run=args.dry_run,
                           source=args.source)
    if args.command == "demo":
        from .demo import run_demo

        return run_demo(args.dir, port=args.port, seed=args.seed, once=args.once,
                        smtp_port=args.smtp_port)
    if args.command == "oauth2-token":
        from .oauth2_login import DEVICE_URLS, flow, run_device_code, run_oauth2_token

        secret = os.environ.get(args.client_secret_env, "") if args.client_secret_env else ""
        sign_in = flow(args.provider or "", args.client_id, tenant=args.tenant,
                       client_secret=secret, authorize_url=args.authorize_url,
                       token_url=args.token_url, scope=args.scope, env_name=args.env_name)
        if not args.device:
            return run_oauth2_token(sign_in, port=args.port)
        device_url = args.device_url or DEVICE_URLS.get(args.provider or "", "")
        if not device_url:
            raise ConfigError("--device is for --provider microsoft (Google's device sign-in "
                              "does not grant mail access), or give --device-url")
        return run_device_code(sign_in, device_url.format(tenant=args.tenant))
    settings = load_config(args.config, role=_role(args))
    return _dispatch(args, settings)


def _role(args: argparse.Namespace) -> Role | Literal["auto"]:
    """What the command uses, so a station-side file is not asked for the relay's secret
    nor a relay-side one for IMAP; ``check`` and ``db upgrade`` go by the file."""
    if args.command in ("serve", "outbox", "sms-config", "sms-intake", "dkim-key"):
        return "relay"
    if args.command in ("poll", "ledger", "report"):
        return "station"
    if (args.command in ("db", "purge", "backup", "restore")
            and args.role not in (None, "all")):
        return cast(Role, args.role)
    return "auto"


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    command = args.command
    if command == "check":
        from .checks import run_check

        return run_check(settings, connect=args.connect)
    if command == "serve":
        from .relay.server import serve

        serve(settings)
        return EXIT_OK
    if command == "sms-config":
        from .relay.sms import run_sms_config

        return run_sms_config(settings, args.station, out=args.out, log_file=args.log,
                              poll_seconds=args.poll_seconds, spool=args.spool)
    if command == "sms-intake":
        from .relay.sms import run_sms_intake

        return run_sms_intake(settings, args.station, os.environ, inbox=args.inbox,
                              files=args.files, gammu_config_file=args.gammu_config)
    if command == "dkim-key":
        from .relay.dkim import run_dkim_key

        return run_dkim_key(settings, args.selector)
    if command == "outbox":
        from .relay.admin import run_outbox

        return run_outbox(settings, args.action or "list", getattr(args, "id", None),
                          show_all=getattr(args, "all", False))
    if command == "poll":
        from .logs import log_to_stderr
        from .station.poller.run import poll

        log_to_stderr()
        return poll(settings, once=args.once, station=args.station)
    if command == "db":
        from .checks import upgrade_databases

        return upgrade_databases(settings, role=settings.role)
    if command == "purge":
        from .purge import run_purge

        return run_purge(settings, dry_run=args.dry_run)
    if command in ("backup", "restore"):
        from .backup import run_backup, run_restore

        return (run_backup if command == "backup" else run_restore)(settings, args.folder)
    if command == "ledger" and args.action == "export":
        from .station.casefile import run_export

        return run_export(settings, args.ref, args.out,
                          station=args.export_station or args.station)
    if command == "ledger":
        from .station.tui import run_ledger

        return run_ledger(settings, station=args.station)
    if command == "report":
        from .station.report import run_report

        return run_report(settings, fmt=args.fmt, date_from=args.date_from,
                          date_to=args.date_to, month=args.month, station=args.station,
                          chart=args.chart, pdf=args.pdf)
    if command == "posters":
        from .relay.posters import run_posters

        return run_posters(settings, station=args.station, placement=args.placement,
                           size=args.size, out=args.out, template=args.template)
    raise AssertionError(f"unhandled command {command!r}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            print(f"mailbridge: config: {line}", file=sys.stderr)
        return EXIT_CONFIG
    except MailbridgeError as exc:
        print(f"mailbridge: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:  # `mailbridge report --format csv | head`: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except Exception:  # a bug: say so, with what a report needs
        traceback.print_exc()
        print(f"mailbridge {__version__} (Python {platform.python_version()}) hit a bug; "
              "please report it with the lines above.", file=sys.stderr)
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
