"""The processes of one execution, as /proc shows them inside the NPU.

An execution is its leader (forked by the fork server, a child subreaper) and every
descendant of it. A process cannot leave that tree while its leader lives: an orphan
is adopted by the nearest subreaper above it, which is the leader at the latest. A
process that leaves it anyway (the leader died, or gave up being a subreaper, or a
``clone(CLONE_PARENT)``) lands with the fork server, which kills it as a stray.

Where the sandbox has no child subreapers (gVisor's older releases refuse
PR_SET_CHILD_SUBREAPER), orphans land with the fork server at once; the server then runs
one execution at a time, and counts the orphans it adopted meanwhile as that
execution's (forkserver.ForkServer.members).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Stopping a tree walks it until it stops growing; a fork bomb has to run out of pids
# (its limit) well before this many rounds.
MAX_ROUNDS = 64


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    ppid: int
    state: str
    cpu_ticks: int  # this process's user + system time, and that of the children it waited for


def process_table() -> dict[int, ProcessInfo]:
    table: dict[int, ProcessInfo] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                raw = handle.read()
        except OSError:
            continue  # it ended while we looked
        # The command name is in parentheses and may hold anything, spaces included.
        fields = raw[raw.rfind(b")") + 2 :].split()
        try:
            ticks = sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
            table[int(name)] = ProcessInfo(int(name), int(fields[1]), fields[0].decode(), ticks)
        except (IndexError, ValueError):
            continue
    return table


def descendants(root: int, table: dict[int, ProcessInfo]) -> list[int]:
    """``root`` and every process below it in ``table``."""
    children: dict[int, list[int]] = {}
    for info in table.values():
        children.setdefault(info.ppid, []).append(info.pid)
    found, frontier = [], [root] if root in table else []
    while frontier:
        pid = frontier.pop()
        found.append(pid)
        frontier.extend(children.get(pid, ()))
    return found


def children_of(parent: int, table: dict[int, ProcessInfo]) -> list[int]:
    return [info.pid for info in table.values() if info.ppid == parent]


def resident_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as handle:
            return int(handle.read().split()[1]) * PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return 0


def signal_quietly(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


# Which processes make up an execution, given the process table.
Members = Callable[[dict[int, ProcessInfo]], list[int]]


def tree(root: int) -> Members:
    return lambda table: descendants(root, table)


def stop_all(members: Members) -> list[int]:
    """SIGSTOP every member, walking again until no new process appears (a stopped
    process forks no more); returns the processes stopped."""
    stopped: set[int] = set()
    for _ in range(MAX_ROUNDS):
        fresh = [pid for pid in members(process_table()) if pid not in stopped]
        if not fresh:
            break
        for pid in fresh:
            signal_quietly(pid, signal.SIGSTOP)
            stopped.add(pid)
    return sorted(stopped)


def continue_all(members: Members) -> None:
    for pid in members(process_table()):
        signal_quietly(pid, signal.SIGCONT)


def kill_all(members: Members) -> None:
    """Kill every member. Stopped first, so that nothing forks between the walk and
    the kill."""
    for pid in stop_all(members):
        signal_quietly(pid, signal.SIGKILL)
