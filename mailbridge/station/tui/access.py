"""Who is acting, and which stations they may see.

There are no passwords in the terminal UI: access to the OS account (and so
to the ledger database) is the boundary. The config maps OS account names to
officer names per station (``stations.<id>.officers``); that name goes into
every audit row. On an installed box the ledger is the station user's alone and
officers open it through sudo (``mailbridge install``'s sudoers rule): the
officer is then sudo's ``SUDO_USER``, which sudo sets itself.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Mapping
from dataclasses import dataclass

from ...config import Settings
from ...errors import ConfigError


@dataclass(frozen=True)
class Access:
    stations: tuple[str, ...]
    actors: Mapping[str, str]  # station id -> the acting officer's name there

    def actor(self, station_id: str) -> str:
        return self.actors.get(station_id, "")


def os_account() -> str:
    """The officer's own account: the one that ran sudo, else this process's user."""
    return os.environ.get("SUDO_USER") or getpass.getuser()


def resolve_access(settings: Settings, *, officer: str | None = None,
                   station: str | None = None, user: str | None = None) -> Access:
    """Stations where the OS account (or the given officer name) is configured."""
    if station is not None and settings.station(station) is None:
        raise ConfigError(f"--station {station!r} is not configured in {settings.path}: "
                          f"choose among {', '.join(sorted(settings.stations))}")
    candidates = [settings.stations[station.lower()]] if station else list(
        settings.stations.values())
    account = user if user is not None else os_account()
    actors: dict[str, str] = {}
    for st in candidates:
        if officer:
            if officer in st.officers.values():
                actors[st.id] = officer
        elif st.officers.get(account):
            actors[st.id] = st.officers[account]
    if not actors:
        where = f"stations.{station.lower()}.officers" if station else "stations.<id>.officers"
        who = (f"officer {officer!r} is not listed" if officer
               else f"OS account {account!r} is not an officer")
        raise ConfigError(f"{who} for any station you asked for: add "
                          f'{account} = "Officer name" to {where} in {settings.path}')
    return Access(tuple(actors), actors)
