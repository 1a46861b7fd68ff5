"""What the host shows of a dev cluster: its listening ports and its processes (from /proc),
so a test can tell that `down` left nothing behind."""

from __future__ import annotations

import os
from pathlib import Path


def listening_ports() -> set[int]:
    """TCP ports in LISTEN state on this host, IPv4 and IPv6."""
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table, encoding="ascii") as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] == "0A":  # TCP_LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line contains `text` (a cluster's folder names its processes)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in cmdline:
            found.append(int(entry))
    return found
