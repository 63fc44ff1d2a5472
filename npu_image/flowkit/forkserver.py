"""The NPU's fork server: one long-lived process that starts each execution as a fresh
forked process, and keeps every execution apart from the others.

It imports the SDK once; each job then costs a ``fork``, not a container. The server
is the container's first process (PID 1: no process of the NPU can kill it) and is
non-dumpable, as is every process forked from it: no execution can read its memory
or another's through /proc or ``ptrace`` (each execution also installs a seccomp
filter, ``_seccomp``). It never holds a job: the execution's own process reads its job
from stdin, and its frames are moved to stdout by ``splice``, so neither a job nor a
result passes through the server's memory, which every later fork would inherit.
(gVisor cannot splice from the execution's socket to the engine's pipe: there the
frames pass through one fixed buffer of the server, zeroed after each move.)

Wire protocol (runner -> NPU, on stdin): fixed 64-byte ASCII headers, space-padded and
ending in a newline::

    run <exec> <job bytes> <memory limit bytes or 0>   followed by the job itself
    pause <exec> | resume <exec> | kill <exec> | quit

(``exec`` names the execution: 1-32 characters of [A-Za-z0-9_-]). End of stdin is
``quit``.

NPU -> runner, on stdout: chunks ``<tag> <length>\\n<payload>``. Tag ``@`` carries one
JSON event of the server (``ready``, ``spawned``, ``refused``, ``usage``, ``paused``,
``resumed``, ``exited``); any other tag is an execution's own stream of JSON-line
events (``flowkit.runtime``), opaque to the server. An execution can write only into
its own stream, so it cannot forge another's frames or the server's.

When an execution's leader exits, every process left of it is killed, its stream is
drained to its end, its files are removed (all of /tmp and /dev/shm once no other
execution runs; what cannot be removed ends the server, so that the NPU is replaced),
and only then is ``exited`` sent: the next execution of the node finds nothing of the
previous one.
"""

from __future__ import annotations

import ast
import contextlib
import ctypes
import errno
import fcntl
import json
import os
import platform
import random
import re
import select
import signal
import stat
import sys
import termios
import time
from dataclasses import dataclass, field
from typing import Any, NoReturn

from . import PROTOCOL_VERSION, _channels, _processes, _seccomp
from ._channel import Channel

HEADER_BYTES = 64
EXEC_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")
SERVER_TAG = "@"
USAGE_EVERY_S = 0.5
# How long the server keeps killing an ended execution's leftovers before it gives up
# and declares the NPU unusable (a process it cannot kill: never seen).
CLEANUP_DEADLINE_S = 5.0
# Where executions may write: wiped between executions. Only inside an NPU (the server
# is the container's PID 1); run elsewhere (the runtime's own tests) the server uses
# FLOWKIT_SCRATCH_DIR alone and touches nothing else of the machine it runs on.
NPU_SCRATCH = "/tmp"  # noqa: S108 - inside the NPU
NPU_SHARED_PLACES = ("/dev/shm",)  # noqa: S108 - inside the NPU
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
_LIBC: Any = ctypes.CDLL(None, use_errno=True)
OOM_COUNTERS = ("/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control")


class ServerBroken(Exception):
    """The server cannot go on (its input is out of step); the runner replaces the NPU."""


@dataclass
class Spare:
    """A process forked ahead of the next job, done with everything that does not
    depend on it, waiting for its assignment (``wait_as_spare``)."""

    pid: int
    stream: int  # read end of its frame channel
    assign: int  # write end of its assignment channel
    # The server's own copy of the read end: whether an assignment is still unread
    # there says whether a spare that died had touched its job.
    assign_read: int


@dataclass
class Execution:
    name: str
    pid: int
    stream: int  # read end of the execution's frame channel
    memory_limit: int
    started: float = field(default_factory=time.monotonic)
    leader_status: int | None = None
    leader_rusage: Any = None
    stream_open: bool = True
    paused: bool = False
    memory_exceeded: bool = False
    # Given to a spare: its assignment channel (until its first frame), the job's size.
    assignment: int | None = None
    job_bytes: int = 0
    peak_rss: int = 0


class ForkServer:
    def __init__(self, out_fd: int = 1, *, subreapers: bool = True) -> None:
        self.out = out_fd
        # Whether an execution's leader can adopt its orphans (see _processes).
        self.subreapers = subreapers
        # An NPU without network has only its loopback: nothing to count per execution.
        self.networked = network_bytes() != (None, None)
        self.executions: dict[str, Execution] = {}
        self.by_pid: dict[int, Execution] = {}
        # A fork costs about a millisecond, and the fresh process's first writes as many
        # again in page faults: the next execution's process is forked and prepared
        # while the NPU waits, after the previous execution's end.
        self.spare: Spare | None = None
        # The execution whose process is reading its job from stdin: the server reads
        # no header until it has (its first frame, or its end, says so).
        self.reading_job: Execution | None = None
        self.base_environment = dict(os.environ)
        self.next_usage = 0.0
        self._wake_read, self._wake_write = _channels.private_channel(nonblocking=True)
        # Scratch space for a job the server must skip, or frames it cannot splice: the
        # only buffer that ever holds an execution's bytes in the server, zeroed after use.
        self._scratch = bytearray(64 * 1024)
        self.can_splice = True

    # --- the loop ------------------------------------------------------------------

    def serve(self) -> None:
        signal.set_wakeup_fd(self._wake_write)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.make_spare()
        self.send_event(
            {
                "type": "ready",
                "protocol": PROTOCOL_VERSION,
                "pid": os.getpid(),
                "python": platform.python_version(),
            }
        )
        stdin_open = True
        while True:
            self.reap()
            self.finish_ended()
            if not stdin_open and not self.executions:
                break  # checked after the last end is reported: nothing left to wait for
            readable = self.wait_readable(listen_stdin=stdin_open and self.reading_job is None)
            for fd in readable:
                if fd == self._wake_read:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_read, 4096)
                elif fd == 0:
                    stdin_open = self.handle_header()
                else:
                    self.relay(fd)
            self.sample_usage()
            if not stdin_open:
                for execution in list(self.executions.values()):
                    if execution.leader_status is None:
                        _processes.kill_all(self.members(execution))

    def wait_readable(self, *, listen_stdin: bool) -> list[int]:
        fds = [self._wake_read] + [e.stream for e in self.executions.values() if e.stream_open]
        if listen_stdin:
            fds.append(0)
        timeout = max(0.0, self.next_usage - time.monotonic()) if self.executions else None
        try:
            readable, _, _ = select.select(fds, [], [], timeout)
        except InterruptedError:
            return []
        return readable

    # --- the runner's requests ----------------------------------------------------

    def handle_header(self) -> bool:
        """Act on one header; False at the end of stdin."""
        header = self.read_exactly(0, HEADER_BYTES)
        if not header:
            return False
        if len(header) < HEADER_BYTES or not header.endswith(b"\n"):
            raise ServerBroken("a request header was cut short")
        words = header.decode("ascii", "replace").split()
        op, args = (words[0], words[1:]) if words else ("", [])
        if op == "quit":
            return False
        if (
            op == "run"
            and len(args) == 3
            and EXEC_NAME.fullmatch(args[0])
            and args[1].isdigit()
            and args[2].isdigit()
        ):
            self.start(args[0], int(args[1]), int(args[2]))
            return True
        if op in ("pause", "resume", "kill") and len(args) == 1 and args[0] in self.executions:
            self.control(op, self.executions[args[0]])
            return True
        if op in ("pause", "resume", "kill"):
            return True  # an execution that has ended meanwhile: nothing to do
        raise ServerBroken(f"unknown request {op!r}")

    def start(self, name: str, job_bytes: int, memory_limit: int) -> None:
        if name in self.executions:
            self.skip_job(job_bytes)
            self.send_event({"type": "refused", "exec": name, "message": "an execution of that name runs"})
            return
        if self.executions and not self.subreapers:
            self.skip_job(job_bytes)
            message = "this sandbox runs one execution of an NPU at a time (no child subreapers)"
            self.send_event({"type": "refused", "exec": name, "message": message})
            return
        spare = self.take_spare(name, job_bytes)
        if spare is not None:
            execution = self.begin(name, spare.pid, spare.stream, memory_limit)
            execution.assignment, execution.job_bytes = spare.assign_read, job_bytes
            return
        self.fork_execution(name, job_bytes, memory_limit)

    def fork_execution(self, name: str, job_bytes: int, memory_limit: int) -> None:
        stream_read, stream_write = _channels.private_channel()
        try:
            pid = os.fork()
        except OSError as exc:
            os.close(stream_read)
            os.close(stream_write)
            self.skip_job(job_bytes)
            self.send_event(
                {
                    "type": "refused",
                    "exec": name,
                    "message": f"the NPU could not start a process for the execution: {exc.strerror}",
                }
            )
            return
        if pid == 0:
            try:
                become_execution(name, job_bytes, stream_write, self.base_environment, self.subreapers)
            finally:
                os._exit(70)
        os.close(stream_write)
        self.begin(name, pid, stream_read, memory_limit)

    def begin(self, name: str, pid: int, stream: int, memory_limit: int) -> Execution:
        execution = Execution(name=name, pid=pid, stream=stream, memory_limit=memory_limit)
        if not self.executions:
            self.next_usage = time.monotonic() + USAGE_EVERY_S
        self.executions[name] = execution
        self.by_pid[pid] = execution
        self.reading_job = execution
        rx, tx = network_bytes() if self.networked else (None, None)
        self.send_event(
            {
                "type": "spawned",
                "exec": name,
                "pid": pid,
                "oom_kills": oom_kills(),
                "net_rx_bytes": rx,
                "net_tx_bytes": tx,
            }
        )
        return execution

    def make_spare(self) -> None:
        """Fork the next execution's process ahead, unless one waits already or none
        could run next (one execution at a time, and one runs)."""
        if self.spare is not None or (self.executions and not self.subreapers):
            return
        stream_read, stream_write = _channels.private_channel()
        assign_read, assign_write = _channels.private_channel()
        try:
            pid = os.fork()
        except OSError:
            for fd in (stream_read, stream_write, assign_read, assign_write):
                os.close(fd)
            return  # out of pids for now: the next job forks on demand
        if pid == 0:
            try:
                wait_as_spare(stream_write, assign_read, self.base_environment, self.subreapers)
            finally:
                os._exit(70)
        os.close(stream_write)
        self.spare = Spare(pid, stream_read, assign_write, assign_read)

    def take_spare(self, name: str, job_bytes: int) -> Spare | None:
        """Hand the job to the waiting spare, if there is a live one."""
        spare, self.spare = self.spare, None
        if spare is None:
            return None
        try:
            # A few bytes into an empty channel: never blocks, even if the spare is gone.
            write_all(spare.assign, f"{name} {job_bytes}\n".encode("ascii"))
        finally:
            os.close(spare.assign)
        return spare

    def drop_spare(self) -> None:
        if self.spare is not None:
            for fd in (self.spare.stream, self.spare.assign, self.spare.assign_read):
                os.close(fd)
            self.spare = None

    def own_children(self) -> set[int]:
        """The server's children that are no stray: leaders and the spare."""
        return {*self.by_pid, *([self.spare.pid] if self.spare else [])}

    def control(self, op: str, execution: Execution) -> None:
        if execution.leader_status is not None:
            return
        if op == "pause" and not execution.paused:
            _processes.stop_all(self.members(execution))
            execution.paused = True
            self.send_event({"type": "paused", "exec": execution.name})
        elif op == "resume" and execution.paused:
            _processes.continue_all(self.members(execution))
            execution.paused = False
            self.send_event({"type": "resumed", "exec": execution.name})
        elif op == "kill":
            _processes.kill_all(self.members(execution))

    def skip_job(self, size: int) -> None:
        view = memoryview(self._scratch)
        try:
            while size > 0:
                got = os.readv(0, [view[: min(size, len(view))]])
                if got == 0:
                    raise ServerBroken("stdin ended inside a job")
                size -= got
        finally:
            self._scratch[:] = bytes(len(self._scratch))

    @staticmethod
    def read_exactly(fd: int, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = os.read(fd, size - len(data))
            if not chunk:
                break
            data += chunk
        return data

    # --- executions' streams --------------------------------------------------------

    def relay(self, fd: int) -> None:
        execution = next((e for e in self.executions.values() if e.stream == fd), None)
        if execution is None:
            return
        available = pending_bytes(fd)
        if available == 0:
            # Readable with nothing in it: every writer has closed it. (Whether it had
            # read its job is for reap to judge, once it is known how it ended.)
            execution.stream_open = False
            os.close(fd)
            return
        if self.reading_job is execution:
            self.reading_job = None  # it wrote: it has read its job
        if execution.assignment is not None:
            os.close(execution.assignment)
            execution.assignment = None
        header = f"{execution.name} {available}\n".encode("ascii")
        write_all(self.out, header)
        while available > 0:
            available -= self.move(fd, available)

    def move(self, fd: int, size: int) -> int:
        """Move up to ``size`` bytes from ``fd`` to stdout; how many moved."""
        if self.can_splice:
            try:
                return os.splice(fd, self.out, size)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self.can_splice = False  # gVisor: not from a socket into the engine's pipe
        view = memoryview(self._scratch)[: min(size, len(self._scratch))]
        got = 0
        try:
            got = os.readv(fd, [view])
            if got == 0:
                raise ServerBroken("an execution's stream ended inside a chunk")
            write_all(self.out, view[:got])
        finally:
            view[:got] = bytes(got)
        return got

    # --- ends of executions ---------------------------------------------------------

    def reap(self) -> None:
        """Wait for every child that ended; when one did, kill the strays it left."""
        reaped = False
        while True:
            try:
                pid, status, rusage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            reaped = True
            if self.spare is not None and pid == self.spare.pid:
                self.drop_spare()  # killed while it waited (memory pressure, a signal)
                continue
            execution = self.by_pid.pop(pid, None)
            if execution is None:
                continue
            execution.leader_status = status
            execution.leader_rusage = rusage
            if self.reading_job is execution:
                self.reading_job = None
                if execution.assignment is not None and pending_bytes(execution.assignment) > 0:
                    # A spare that died before it read its assignment: its job is untouched
                    # on stdin, and a process forked now takes it.
                    self.forget(execution)
                    self.fork_execution(execution.name, execution.job_bytes, execution.memory_limit)
                    continue
                if not execution.stream_open or pending_bytes(execution.stream) == 0:
                    # Killed before it read its job to the end (it writes a frame as soon
                    # as it has): the rest of that job is still on stdin, out of step.
                    raise ServerBroken("an execution ended before it read its job")
        if reaped:
            self.kill_strays()

    def forget(self, execution: Execution) -> None:
        del self.executions[execution.name]
        if execution.stream_open:
            os.close(execution.stream)
        if execution.assignment is not None:
            os.close(execution.assignment)
        execution.stream_open, execution.assignment = False, None

    def finish_ended(self) -> None:
        for execution in list(self.executions.values()):
            if execution.leader_status is not None:
                self.finish(execution)

    def members(self, execution: Execution) -> _processes.Members:
        """The processes of ``execution``: its leader's tree, and without subreapers
        (one execution at a time) the orphans the server adopted meanwhile."""
        if self.subreapers:
            return _processes.tree(execution.pid)

        def with_adopted(table: dict[int, _processes.ProcessInfo]) -> list[int]:
            own = self.own_children()
            adopted = [pid for pid in _processes.children_of(os.getpid(), table) if pid not in own]
            return [pid for root in (execution.pid, *adopted) for pid in _processes.descendants(root, table)]

        return with_adopted

    def kill_strays(self) -> None:
        """Kill the server's children that are not a live execution's leader: processes
        of an execution whose leader has ended (they were adopted by the server)."""
        if not self.subreapers and any(e.leader_status is None for e in self.executions.values()):
            return  # adopted orphans of the execution that runs: they are its own
        table = _processes.process_table()
        own = self.own_children()
        for pid in _processes.children_of(os.getpid(), table):
            if pid not in own:
                # Stop its subtree first, so that its own children cannot run on.
                _processes.kill_all(_processes.tree(pid))

    def finish(self, execution: Execution) -> None:
        deadline = time.monotonic() + CLEANUP_DEADLINE_S
        while execution.stream_open:
            # Processes the execution left may still hold its stream: kill them, then
            # relay what they wrote until the stream ends.
            self.kill_strays()
            readable, _, _ = select.select([execution.stream], [], [], 0.01)
            if readable:
                self.relay(execution.stream)
            if time.monotonic() > deadline:
                raise ServerBroken(f"the processes of execution {execution.name} could not be stopped")
            self.reap()
        del self.executions[execution.name]
        remove_tree(workdir_of(execution.name))
        if not self.executions:
            wipe_shared_places()
        status, usage = execution.leader_status or 0, execution.leader_rusage
        self.send_event(
            {
                "type": "exited",
                "exec": execution.name,
                "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
                "oom_kills": oom_kills(),
                "memory_exceeded": execution.memory_exceeded,
                "cpu_s": round(usage.ru_utime + usage.ru_stime, 6),
                "peak_rss_bytes": max(execution.peak_rss, usage.ru_maxrss * 1024),
                "duration_s": round(time.monotonic() - execution.started, 6),
            }
        )
        self.make_spare()  # forked now that nothing of this execution is left

    # --- resources ------------------------------------------------------------------

    def sample_usage(self) -> None:
        now = time.monotonic()
        if not self.executions or now < self.next_usage:
            return
        self.next_usage = now + USAGE_EVERY_S
        table = _processes.process_table()
        rx, tx = network_bytes() if self.networked else (None, None)
        for execution in self.executions.values():
            if execution.leader_status is not None:
                continue
            pids = self.members(execution)(table)
            rss = sum(_processes.resident_bytes(pid) for pid in pids)
            execution.peak_rss = max(execution.peak_rss, rss)
            ticks = sum(table[pid].cpu_ticks for pid in pids if pid in table)
            if execution.memory_limit and rss > execution.memory_limit and not execution.memory_exceeded:
                execution.memory_exceeded = True
                _processes.kill_all(self.members(execution))
            self.send_event(
                {
                    "type": "usage",
                    "exec": execution.name,
                    "cpu_s": ticks / _processes.CLOCK_TICKS,
                    "rss_bytes": rss,
                    "pids": len(pids),
                    "net_rx_bytes": rx,
                    "net_tx_bytes": tx,
                    "ts": time.time(),
                }
            )

    def send_event(self, event: dict[str, Any]) -> None:
        payload = json.dumps(event, ensure_ascii=True, allow_nan=False).encode("ascii")
        write_all(self.out, f"{SERVER_TAG} {len(payload)}\n".encode("ascii") + payload)


# --- the execution's side of the fork ---------------------------------------------------


def become_execution(
    name: str, job_bytes: int, stream: int, environment: dict[str, str], subreapers: bool
) -> NoReturn:
    """In a process forked for a job: leave the server behind, read the job, run the node."""
    leave_server(stream)
    # The job first: the server reads no further request until this execution's first frame.
    job = ForkServer.read_exactly(0, job_bytes)
    try:
        prepare(environment, subreapers)
        enter_workdir(name)
    except Exception as exc:  # noqa: BLE001 - reported as the execution's error
        fail_setup(exc)
    run(job)


def wait_as_spare(stream: int, assign: int, environment: dict[str, str], subreapers: bool) -> NoReturn:
    """In a process forked ahead of its job: do all that does not depend on the job,
    then wait for the server's assignment (its execution's name and job size)."""
    # Above the descriptors leave_server arranges, and kept across its sweep.
    assign = fcntl.fcntl(assign, fcntl.F_DUPFD_CLOEXEC, 10)
    leave_server(stream, keep=assign)
    failure: Exception | None = None
    try:
        prepare(environment, subreapers)
        warm_up()  # touches, in this process, the pages the node's run will write
    except Exception as exc:  # noqa: BLE001 - reported once it has a job
        failure = exc
    line = b""
    while not line.endswith(b"\n"):
        chunk = os.read(assign, 64)
        if not chunk:
            os._exit(0)  # the server ended: no job will come
        line += chunk
    os.close(assign)
    name, job_bytes = line.decode("ascii").split()
    job = ForkServer.read_exactly(0, int(job_bytes))
    try:
        if failure is not None:
            raise failure
        enter_workdir(name)
    except Exception as exc:  # noqa: BLE001 - reported as the execution's error
        fail_setup(exc)
    run(job)


def leave_server(stream: int, keep: int | None = None) -> None:
    """Keep nothing of the server's but stdin (until the job is read), stderr (a crash
    report) and this execution's own frame channel, as fd 3: fd 1 is the server's frame
    stream."""
    signal.set_wakeup_fd(-1)
    for signum in (signal.SIGCHLD, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL)
    os.setsid()
    if keep is not None and keep <= 3:
        raise OSError("the assignment channel would be overwritten")
    if stream != 3:
        os.dup2(stream, 3, inheritable=False)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.close(null)
    if keep is None:
        os.closerange(4, os.sysconf("SC_OPEN_MAX"))
    else:
        os.closerange(4, keep)
        os.closerange(keep + 1, os.sysconf("SC_OPEN_MAX"))


def prepare(environment: dict[str, str], subreapers: bool) -> None:
    """What sets an execution apart from every other one in the NPU, its job aside."""
    # Orphans of the node's processes come to this process, not to the server: the
    # execution's processes stay one tree, which pause and kill walk.
    if subreapers and _LIBC.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_CHILD_SUBREAPER refused")
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as adj:
        adj.write("1000")  # under memory pressure the kernel takes an execution, never the server
    os.environ.clear()
    os.environ.update(environment)
    random.seed()  # else every execution would draw the numbers the server's state gives
    _seccomp.install()


def enter_workdir(name: str) -> None:
    workdir = workdir_of(name)
    os.mkdir(workdir, 0o700)
    os.chdir(workdir)
    os.environ.update(HOME=workdir, TMPDIR=workdir)


def fail_setup(exc: Exception) -> NoReturn:
    message = f"the NPU could not isolate the execution: {exc}"
    error = {"type": "error", "error_type": "NpuSetupError", "message": message, "traceback": ""}
    Channel(3).emit_final(error)
    os._exit(2)


def run(job: bytes) -> NoReturn:
    from . import runtime

    runtime.serve(Channel(3), lambda: job)


# Decided where the server starts: its executions' pids are not 1.
_IN_NPU = os.getpid() == 1


def in_npu() -> bool:
    return _IN_NPU


def scratch_dir() -> str:
    return NPU_SCRATCH if in_npu() else os.environ["FLOWKIT_SCRATCH_DIR"]


def workdir_of(name: str) -> str:
    return os.path.join(scratch_dir(), f"exec-{name}")


# --- helpers -----------------------------------------------------------------------------


def blank_initial_environment() -> None:
    """Zero the environment the server was started with, where /proc/<pid>/environ
    reads it, and empty libc's list; ``os.environ`` keeps Python's copy, which each
    execution sets again. gVisor (20221219) shows that memory to the same uid whatever
    dumpable says, and every process of the NPU is forked from the server. (It holds
    the image's environment only, never a secret; now it holds nothing.)"""
    environ = ctypes.POINTER(ctypes.c_void_p).in_dll(_LIBC, "environ")
    index = 0
    while environ[index]:
        ctypes.memset(environ[index], 0, _LIBC.strlen(ctypes.c_void_p(environ[index])))
        index += 1
    _LIBC.clearenv()


def pending_bytes(fd: int) -> int:
    raw = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    return int.from_bytes(raw, sys.byteorder, signed=True)


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def oom_kills() -> int | None:
    """The out-of-memory kills in this NPU so far (None where the sandbox shows none, as
    under gVisor). Counted as each execution starts and ends, it tells the runner a node
    whose processes the kernel killed for memory without waiting for the container to
    stop (the engine's own flag is only set then)."""
    for path in OOM_COUNTERS:
        try:
            with open(path, encoding="ascii") as counters:
                for line in counters:
                    name, _, value = line.partition(" ")
                    if name == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            continue
    return None


def network_bytes() -> tuple[int | None, int | None]:
    """Bytes received and sent on the NPU's interfaces (loopback aside); None without any."""
    rx = tx = 0
    found = False
    try:
        with open("/proc/net/dev", encoding="ascii") as handle:
            for line in handle.readlines()[2:]:
                interface, _, counters = line.partition(":")
                if interface.strip() == "lo":
                    continue
                values = counters.split()
                rx, tx, found = rx + int(values[0]), tx + int(values[8]), True
    except (OSError, ValueError, IndexError):
        return None, None
    return (rx, tx) if found else (None, None)


def remove_tree(path: str) -> None:
    """Remove ``path`` whatever a node did to it, or raise ServerBroken: the NPU is then
    replaced rather than handed to the next execution with something left in it.

    A node may have taken every mode away from its own directories (the same uid may
    give them back, which is what happens here, top down), or built a tree deeper than
    any recursion or path length allows: the walk holds one descriptor and a list of
    names, going down by name and back up through ``..``. No process of the execution
    is left to move things while it runs."""
    try:
        if stat.S_ISDIR(os.lstat(path).st_mode):
            _remove_directory(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ServerBroken(f"{path} could not be removed: {exc.strerror}") from None
    if os.path.lexists(path):
        raise ServerBroken(f"{path} could not be removed")


def _remove_directory(path: str) -> None:
    parent, name = os.path.split(path)
    here = os.open(parent or ".", os.O_RDONLY | os.O_DIRECTORY)
    below: list[str] = []  # the names from ``parent`` down to ``here``
    going_down: str | None = name
    try:
        while True:
            if going_down is not None:
                os.chmod(going_down, stat.S_IRWXU, dir_fd=here)
                down = os.open(going_down, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=here)
                os.close(here)
                here = down
                below.append(going_down)
                going_down = None
            with os.scandir(here) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        going_down = entry.name
                        break
                    os.unlink(entry.name, dir_fd=here)
            if going_down is not None:
                continue
            up = os.open("..", os.O_RDONLY | os.O_DIRECTORY, dir_fd=here)
            os.close(here)
            here = up
            os.rmdir(below.pop(), dir_fd=here)
            if not below:
                return
    finally:
        os.close(here)


def wipe_shared_places() -> None:
    """Empty what every execution of the NPU can write: /tmp and /dev/shm. Only called
    while no execution runs. (System V IPC and POSIX message queues cannot be made by
    an execution at all: see _seccomp.)"""
    for place in (scratch_dir(), *(NPU_SHARED_PLACES if in_npu() else ())):
        try:
            entries = os.listdir(place)
        except FileNotFoundError:
            continue  # this runtime has no such place
        except OSError as exc:
            raise ServerBroken(f"{place} could not be listed: {exc.strerror}") from None
        for entry in entries:
            remove_tree(os.path.join(place, entry))


def warm_up() -> None:
    """What each execution does once before its node's code, done in the server so that
    every fork starts with it done: the seccomp program built, the compiler warm."""
    _seccomp.prepare()
    tree = ast.parse(WARM_UP, "<warm-up>")
    compile(tree, "<warm-up>", "exec")
    json.loads(json.dumps({"warm": [1, 2.5, "up", None, True]}))


# A node's usual shape, parsed and compiled once by the server.
WARM_UP = """
from flowkit.node import Node
node = Node()
async def main():
    inputs = node.get_inputs()
    return [], {"out": [f"{k}={v!r}" for k, v in inputs.items()]}, "ok"
node.register_main(main)
node.run()
"""


def children_may_be_subreapers() -> bool:
    """Whether a process other than the first may become a child subreaper: gVisor's
    older releases accept it of PID 1 only."""
    pid = os.fork()
    if pid == 0:
        os._exit(0 if _LIBC.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0 else 1)
    _, status = os.waitpid(pid, 0)
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


def main() -> None:
    libc = _LIBC
    # Non-dumpable, and so is every process forked from it: /proc/<pid>/mem, environ
    # and ptrace are refused to the other processes of the NPU.
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    # Under gVisor those /proc files are open to the same uid anyway: nothing is left
    # in them to take (see each).
    _channels.seal_stdio()
    blank_initial_environment()
    # As PID 1 it adopts every orphan anyway; elsewhere (tests) this makes it so.
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    subreapers = children_may_be_subreapers()
    if not in_npu() and os.environ.get("FLOWKIT_SUBREAPERS") == "0":
        subreapers = False  # the runtime's own tests of that mode, outside a sandbox
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_DFL)
    # What every node imports, loaded once: each execution's fork has it already.
    from . import log, node, runtime  # noqa: F401

    warm_up()
    if not in_npu() and not os.path.isdir(os.environ.get("FLOWKIT_SCRATCH_DIR", "")):
        sys.exit("outside an NPU the fork server needs FLOWKIT_SCRATCH_DIR, a directory of its own to wipe")
    with contextlib.suppress(OSError):
        os.chdir("/")
    try:
        ForkServer(subreapers=subreapers).serve()
    except ServerBroken as exc:
        print(f"flowkit fork server: {exc}", file=sys.stderr, flush=True)
        os._exit(3)
    except OSError as exc:
        if exc.errno == errno.EPIPE:  # the runner went away
            os._exit(0)
        raise
    os._exit(0)


if __name__ == "__main__":
    main()
