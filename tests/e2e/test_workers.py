"""`mailbridge serve` with relay.workers = 2: two web worker processes on one port and
one outbox, delivery in the parent. Tips from concurrent clients arrive once each, the
station's hourly limit holds across the workers, and no worker outlives the relay
(a stop, a worker killed, the parent killed)."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.e2e.support import (
    MAILDIR_STATION,
    Answer,
    RelayProcess,
    free_port,
    maildir_files,
    send_tip,
    submit,
    write_config,
)
from tests.relay.outbox_driver import refs_in_maildir
from tests.waiting import wait_for

WORKERS, CLIENTS = 2, 8
STATION_FULL = "Đồn đã nhận quá nhiều tin báo trong một giờ qua. Tin báo CHƯA được gửi."


def start(folder: Path, extra: str = "") -> RelayProcess:
    port = free_port()
    return RelayProcess(write_config(folder, port, MAILDIR_STATION, extra=extra,
                                     workers=WORKERS), port).start()


def children(pid: int) -> list[int]:
    """The processes whose parent is *pid*, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            found.append(int(stat.parent.name))
    return found


def workers_of(relay: RelayProcess) -> list[int]:
    assert relay.proc is not None
    found = children(relay.proc.pid)
    assert len(found) == WORKERS, found
    return found


def alive(pid: int) -> bool:
    """Running, or at least not yet reaped by anyone."""
    return Path(f"/proc/{pid}").exists()


def test_tips_from_concurrent_clients_arrive_once_each(tmp_path: Path) -> None:
    relay = start(tmp_path)
    try:
        workers_of(relay)

        def tipster(n: int) -> list[str]:
            with httpx.Client(timeout=60) as client:
                return [submit(client, relay.base, "/s/ncs/cho", f"Xe lạ số {n}.{i}").ref
                        for i in range(4)]

        with ThreadPoolExecutor(CLIENTS) as pool:
            refs = sorted(ref for refs in pool.map(tipster, range(CLIENTS)) for ref in refs)
        assert refs == [f"NCS-{n:04d}" for n in range(1, 4 * CLIENTS + 1)]
        mail = tmp_path / "mail" / "ncs"
        wait_for(lambda: len(maildir_files(mail)) == len(refs), "every tip delivered", 60)
        assert sorted(refs_in_maildir(mail)) == refs
    finally:
        assert relay.stop() == 0


def listening_sockets(pid: int, port: int) -> set[int]:
    """The inodes of the sockets *pid* listens on at *port*, from /proc."""
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                listening.add(int(fields[9]))
    held = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            link = os.readlink(fd)
            if link.startswith("socket:["):
                held.add(int(link[8:-1]))
    return listening & held


def test_each_worker_listens_on_a_socket_of_its_own(tmp_path: Path) -> None:
    """The kernel spreads new connections over the workers' sockets (SO_REUSEPORT): on
    one shared socket a burst of keep-alive connections could all go to one worker."""
    relay = start(tmp_path)
    port = int(relay.base.rsplit(":", 1)[1])
    try:
        assert relay.proc is not None
        assert listening_sockets(relay.proc.pid, port) == set()
        sockets = [listening_sockets(pid, port) for pid in workers_of(relay)]
        assert [len(own) for own in sockets] == [1] * WORKERS
        assert len(set().union(*sockets)) == WORKERS
        with ThreadPoolExecutor(CLIENTS) as pool:  # every socket accepts and answers
            refs = pool.map(lambda n: send_tip(relay.base, "/s/ncs/cho", f"Tin {n}.").ref,
                            range(2 * CLIENTS))
            assert sorted(refs) == [f"NCS-{n:04d}" for n in range(1, 2 * CLIENTS + 1)]
    finally:
        assert relay.stop() == 0


@pytest.mark.parametrize("sharing", [False, True])
def test_a_port_another_process_holds_is_refused(tmp_path: Path, sharing: bool) -> None:
    """Even a holder that lets others share the port (SO_REUSEPORT, as the workers'
    sockets do) is not joined: the port is first bound alone."""
    with socket.socket() as holder:
        if sharing:
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        config = write_config(tmp_path, port, MAILDIR_STATION, workers=WORKERS)
        done = subprocess.run([sys.executable, "-m", "mailbridge", "--config", str(config),
                               "serve"], cwd=tmp_path, capture_output=True, text=True,
                              timeout=60, check=False)
    assert done.returncode == 3, done.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "the port is in use" in done.stderr


def test_the_station_limit_is_exact_across_workers(tmp_path: Path) -> None:
    limit, flood = 10, 40
    relay = start(tmp_path, extra=f"station_tips_per_hour = {limit}\n")
    hours = {int(time.time() // 3600)}
    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            results = list(pool.map(
                lambda n: send_tip(relay.base, "/s/ncs/cho", f"Tin số {n}: hàng lậu."),
                range(flood)))
        hours.add(int(time.time() // 3600))
        acknowledged = sorted(a.ref for a in results if a.status == 200)
        refused = [(a.status, a.retry_after, a.page) for a in results if a.status != 200]
        if len(hours) == 1:  # an hour that turns mid-test opens a second one
            assert len(acknowledged) == limit
        assert len(acknowledged) + len(refused) == flood
        for status, retry, page in refused:
            assert status == 503 and 0 < int(retry) <= 3600
            assert STATION_FULL in page
        mail = tmp_path / "mail" / "ncs"
        wait_for(lambda: len(maildir_files(mail)) == len(acknowledged),
                 "every acknowledged tip delivered", 60)
        assert sorted(refs_in_maildir(mail)) == acknowledged
    finally:
        relay.stop()


def test_sigterm_stops_the_workers_then_the_relay_exits_0(tmp_path: Path) -> None:
    relay = start(tmp_path)
    try:
        workers = workers_of(relay)
        with httpx.Client(timeout=30) as client:
            submit(client, relay.base, "/s/ncs/cho", "Có người lạ ở bản.")
        # At once: the worker's byte on its pipe wakes the parent's idle delivery.
        wait_for(lambda: len(maildir_files(tmp_path / "mail" / "ncs")) == 1,
                 "the tip delivered")
        assert relay.proc is not None
        relay.proc.send_signal(signal.SIGTERM)
        assert relay.proc.wait(timeout=30) == 0
    finally:
        relay.stop()
    assert [pid for pid in workers if alive(pid)] == []  # waited for, before the exit
    logs = relay.logs()
    assert logs.count("relay listening on") == 1 and "(2 workers)" in logs  # once all serve
    assert "relay stopped" in logs


def test_a_stop_under_load_loses_no_acknowledged_tip(tmp_path: Path) -> None:
    """SIGTERM while eight phones keep sending: what was taken is answered, the relay
    exits 0, and after a restart every tip acknowledged is delivered once; the others
    got a refusal or a broken connection, never a receipt."""
    relay = start(tmp_path)
    answers: list[Answer] = []
    broken: list[str] = []
    done = threading.Event()

    def tipster(n: int) -> None:
        for i in itertools.count():
            if done.is_set():
                return
            try:
                answers.append(send_tip(relay.base, "/s/ncs/cho", f"Tin số {n}.{i}."))
            except httpx.TransportError as exc:  # the relay has gone: not acknowledged
                broken.append(type(exc).__name__)
                return

    assert relay.proc is not None
    with ThreadPoolExecutor(CLIENTS) as pool:
        phones = [pool.submit(tipster, n) for n in range(CLIENTS)]
        try:
            wait_for(lambda: sum(a.status == 200 for a in answers) >= 3 * CLIENTS,
                     "tips flowing", 60)
            relay.proc.send_signal(signal.SIGTERM)
            assert relay.proc.wait(timeout=30) == 0
        finally:
            done.set()
            for phone in phones:
                phone.result()
    acknowledged = sorted(a.ref for a in answers if a.status == 200)
    assert all(a.ref for a in answers if a.status == 200)
    assert {a.status for a in answers} <= {200, 503}, [a.status for a in answers]
    restarted = RelayProcess(relay.config, int(relay.base.rsplit(":", 1)[1])).start()
    try:
        mail = tmp_path / "mail" / "ncs"
        wait_for(lambda: len(maildir_files(mail)) >= len(acknowledged),
                 "every acknowledged tip delivered", 60)
        assert sorted(refs_in_maildir(mail)) == acknowledged
    finally:
        assert restarted.stop() == 0


def test_a_worker_that_dies_stops_the_whole_relay_with_exit_3(tmp_path: Path) -> None:
    relay = start(tmp_path)
    try:
        first, second = workers_of(relay)
        subprocess.run(["kill", "-KILL", str(second)], check=True)
        assert relay.proc is not None
        assert relay.proc.wait(timeout=30) == 3
    finally:
        relay.stop()
    assert not alive(first) and not alive(second)
    lines = [line for line in relay.logs().splitlines() if "was killed by SIGKILL" in line]
    assert len(lines) == 1 and f"(pid {second})" in lines[0], relay.logs()


def test_the_workers_do_not_outlive_a_killed_relay(tmp_path: Path) -> None:
    relay = start(tmp_path)
    workers = workers_of(relay)
    relay.kill9()
    try:
        wait_for(lambda: not any(alive(pid) for pid in workers), "the workers gone", 30)
    finally:
        for pid in workers:  # should they have outlived it, they go now
            subprocess.run(["kill", "-KILL", str(pid)], check=False, capture_output=True)
