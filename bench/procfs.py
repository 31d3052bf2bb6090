"""What the benchmarks read of other processes from /proc."""

from __future__ import annotations

import os
from pathlib import Path


def status_kib(pid: int | str, field: str = "VmRSS:") -> int:
    """A memory line of /proc/PID/status in KiB (VmRSS, VmHWM: the peak); 0 once gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in lines if line.startswith(field)), 0)


def tree_cpu(pid: int) -> float:
    """utime + stime of a process and its children, all threads, in seconds (/proc)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # gone meanwhile
            continue
        fields = text.rpartition(")")[2].split()
        if stat.parent.name == str(pid) or fields[1] == str(pid):
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")
