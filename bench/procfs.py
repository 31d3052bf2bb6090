"""What the benchmarks read of other processes from /proc."""

from __future__ import annotations

from pathlib import Path


def status_kib(pid: int | str, field: str = "VmRSS:") -> int:
    """A memory line of /proc/PID/status in KiB (VmRSS, VmHWM: the peak); 0 once gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in lines if line.startswith(field)), 0)
