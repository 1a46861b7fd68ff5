"""Background processes that outlive the command that started them, and stop cleanly.

Each component runs in its own session (so its process group can be signalled as a whole and a
terminal's hang-up does not reach it), logs to a file, and is recorded by pid plus the kernel's
start time of that pid, so `down` never signals an unrelated process that reused the pid.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# Popen objects of children started by this interpreter. Keeping them lets `stop` reap them
# (no zombies when `up` and `down` run in one process, as in the test fixture) and keeps
# Python from warning that a still-running child was garbage-collected.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class ProcessRecord:
    """Identity of one started component."""

    component: str
    pid: int
    start_ticks: int


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks) of a pid, or None when it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses; fields after it do not.
    fields = raw[raw.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def spawn(
    component: str,
    argv: Sequence[str],
    *,
    log_path: Path,
    cwd: Path,
    env: Mapping[str, str] | None = None,
) -> ProcessRecord:
    """Start `argv` in a new session with stdout and stderr appended to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc
    stat = _proc_stat(proc.pid)
    return ProcessRecord(component=component, pid=proc.pid, start_ticks=stat[1] if stat else -1)


def is_alive(record: ProcessRecord) -> bool:
    """Whether the recorded process still runs (a zombie or a reused pid counts as gone)."""
    child = _CHILDREN.get(record.pid)
    if child is not None:
        return child.poll() is None
    stat = _proc_stat(record.pid)
    if stat is None:
        return False
    state, start_ticks = stat
    return state not in {"Z", "X"} and start_ticks == record.start_ticks


def exit_code(record: ProcessRecord) -> int | None:
    """The exit status when this interpreter started the process and it has exited."""
    child = _CHILDREN.get(record.pid)
    return child.poll() if child is not None else None


def _signal_group(record: ProcessRecord, sig: signal.Signals) -> None:
    if not is_alive(record):
        # The leader is gone; its group may hold stragglers, but a reused pgid is not ours
        # to signal unless the leader's identity still matches.
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(record.pid, sig)


def stop(records: Sequence[ProcessRecord], *, grace_s: float = 10.0) -> list[ProcessRecord]:
    """SIGTERM every group, SIGKILL what is left after `grace_s`; return what survived."""
    for record in records:
        _signal_group(record, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(is_alive(r) for r in records):
        time.sleep(0.05)
    for record in records:
        _signal_group(record, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and any(is_alive(r) for r in records):
        time.sleep(0.05)
    for record in records:
        child = _CHILDREN.pop(record.pid, None)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=1.0)
    return [r for r in records if is_alive(r)]


def tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a log file, or a note that it is missing."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            text = f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])
