"""The NPU's fork server, run here as a plain process (FLOWKIT_SCRATCH_DIR stands for the
NPU's /tmp): each execution a fresh process, its stream apart, nothing left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node_runner.wire import SERVER_TAG, ChunkReader, FrameReader, parse_server_event, request
from tests.unit.conftest import ADD_NODE, NPU_IMAGE, make_job, node_code

WAIT_S = 20.0


class Server:
    """A fork server process and what it sent, sorted by execution."""

    def __init__(self, scratch: Path, subreapers: bool) -> None:
        env = {**os.environ, "PYTHONPATH": str(NPU_IMAGE), "FLOWKIT_SCRATCH_DIR": str(scratch)}
        if not subreapers:
            env["FLOWKIT_SUBREAPERS"] = "0"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "flowkit.forkserver"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=scratch,
        )
        self.subreapers = True
        self.chunks = ChunkReader()
        self.events: list[dict[str, Any]] = []
        self.streams: dict[str, bytearray] = {}

    def send(self, data: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def run(self, name: str, job: dict[str, Any], memory_limit: int = 0) -> None:
        payload = json.dumps(job).encode()
        self.send(request("run", name, len(payload), memory_limit) + payload)

    def read_until(self, wanted: Any) -> dict[str, Any]:
        """Read until a server event for which ``wanted(event)`` holds."""
        deadline = time.monotonic() + WAIT_S
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            for event in self.events:
                if wanted(event):
                    self.events.remove(event)
                    return event
            data = os.read(self.process.stdout.fileno(), 65536)
            assert data, f"the server ended: {self.stderr()}"
            for tag, payload in self.chunks.feed(data):
                if tag == SERVER_TAG:
                    self.events.append(parse_server_event(payload))
                else:
                    self.streams.setdefault(tag, bytearray()).extend(payload)
        raise AssertionError(f"no such event within {WAIT_S} s; seen {self.events}")

    def stderr(self) -> str:
        return self.process.stderr.read().decode() if self.process.stderr else ""

    def exited(self, name: str) -> dict[str, Any]:
        return self.read_until(lambda e: e["type"] == "exited" and e["exec"] == name)

    def frames(self, name: str) -> list[dict[str, Any]]:
        return FrameReader(1 << 24).feed(bytes(self.streams.get(name, b"")))

    def result(self, name: str) -> dict[str, Any]:
        terminal = [f for f in self.frames(name) if f["type"] in ("result", "error")]
        assert len(terminal) == 1, self.frames(name)
        return terminal[0]

    def close(self) -> int:
        assert self.process.stdin is not None
        self.process.stdin.close()
        return self.process.wait(timeout=WAIT_S)


@pytest.fixture(params=[True, False], ids=["subreapers", "no subreapers"])
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Server]:
    """A fork server, with child subreapers and without (as under older gVisor, where
    it runs one execution at a time and adopts the orphans itself)."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    started = Server(scratch, subreapers=request.param)
    started.subreapers = request.param
    ready = started.read_until(lambda e: e["type"] == "ready")
    assert ready["protocol"] == 2
    yield started
    if started.process.poll() is None:
        started.process.kill()
        started.process.wait()


def probe(body: str) -> dict[str, Any]:
    return make_job(node_code(body))


def test_each_execution_is_a_fresh_process_and_the_server_reports_its_end(server):
    server.run("one", make_job(ADD_NODE, {"a": 2, "b": 3}))
    first = server.exited("one")
    server.run("two", make_job(ADD_NODE, {"a": 4, "b": 5}))
    second = server.exited("two")

    assert server.result("one")["outputs"] == {"out": 5}
    assert server.result("two")["outputs"] == {"out": 9}
    started = [
        frame for name in ("one", "two") for frame in server.frames(name) if frame["type"] == "started"
    ]
    pids = {frame["pid"] for frame in started}
    assert len(pids) == 2
    assert server.process.pid not in pids
    assert first["code"] == second["code"] == 0
    assert server.close() == 0


def test_an_execution_starts_in_an_empty_directory_of_its_own_which_is_removed_after(server, tmp_path):
    server.run("a", probe("import os\nopen('left.txt', 'w').write('x')\nreturn [], {'cwd': os.getcwd()}, ''"))
    server.exited("a")
    server.run("b", probe("import os\nreturn [], {'cwd': os.getcwd(), 'here': os.listdir('.')}, ''"))
    server.exited("b")

    first, second = server.result("a")["outputs"], server.result("b")["outputs"]
    assert first["cwd"] != second["cwd"]
    assert second["here"] == []
    assert list((tmp_path / "scratch").iterdir()) == []


def test_locked_and_deep_trees_left_in_tmp_are_gone_before_the_next_execution(server, tmp_path):
    code = """
import os
os.makedirs('../locked/deeper')
open('../locked/deeper/left', 'w').write('x')
os.chmod('../locked/deeper', 0)
os.chmod('../locked', 0)
os.mkdir('locked-here')
os.chmod('locked-here', 0)
here = os.open('..', os.O_RDONLY)
for _ in range(3000):  # deeper than any recursion limit or PATH_MAX
    os.mkdir('d', dir_fd=here)
    below = os.open('d', os.O_RDONLY, dir_fd=here)
    os.close(here)
    here = below
return [], {}, ''
"""
    server.run("lock", probe(code))
    assert server.exited("lock")["code"] == 0
    server.run("after", probe("import os\nreturn [], {'tmp': os.listdir('..')}, ''"))
    server.exited("after")
    assert server.result("after")["outputs"] == {"tmp": ["exec-after"]}
    assert list((tmp_path / "scratch").iterdir()) == []


def test_a_daemon_left_by_an_execution_is_killed_before_its_end_is_reported(server):
    daemon = """
import os, time
read_end, write_end = os.pipe()
if os.fork() == 0:
    os.setsid()
    pid = os.fork()
    if pid == 0:
        while True:
            with open('beat', 'a') as beat:
                beat.write('.')
            time.sleep(0.02)
    os.write(write_end, str(pid).encode())
    os._exit(0)
daemon = int(os.read(read_end, 32))
time.sleep(0.2)
first = os.path.getsize('beat')
time.sleep(0.3)
return [], {'alive': os.path.getsize('beat') > first, 'daemon': daemon}, ''
"""
    server.run("d", probe(daemon))
    server.exited("d")

    outputs = server.result("d")["outputs"]
    # It lived as long as its execution did (adopted by the execution, or by the
    # server as the execution's own)...
    assert outputs["alive"] is True
    # ...and was gone (killed and reaped) when the end was reported.
    assert not Path(f"/proc/{outputs['daemon']}").exists()


def test_pause_stops_every_process_of_one_execution_and_resume_lets_it_finish(server):
    slow = "import time\nfor _ in range(20):\n    time.sleep(0.05)\nreturn [], {'done': 1}, ''"
    server.run("slow", probe(slow))
    server.run("other", make_job(ADD_NODE, {"a": 1, "b": 1}))
    server.send(request("pause", "slow"))
    server.read_until(lambda e: e["type"] == "paused" and e["exec"] == "slow")
    if server.subreapers:
        server.exited("other")  # the other execution is not held up
    else:
        refused = server.read_until(lambda e: e["type"] == "refused" and e["exec"] == "other")
        assert "one execution of an NPU at a time" in refused["message"]
    time.sleep(1.5)
    assert not any(e["type"] == "exited" and e["exec"] == "slow" for e in server.events)
    server.send(request("resume", "slow"))
    server.exited("slow")
    assert server.result("slow")["outputs"] == {"done": 1}


def test_kill_ends_an_execution_and_the_next_one_runs(server):
    server.run("hang", probe("import time\ntime.sleep(300)\nreturn [], {}, ''"))
    server.read_until(lambda e: e["type"] == "spawned" and e["exec"] == "hang")
    server.send(request("kill", "hang"))
    ended = server.exited("hang")
    assert ended["signal"] == 9
    server.run("next", make_job(ADD_NODE, {"a": 1, "b": 2}))
    server.exited("next")
    assert server.result("next")["outputs"] == {"out": 3}


def test_an_execution_over_its_memory_limit_is_killed_and_said_so(server):
    hog = "x = bytearray(200 * 1024 * 1024)\nimport time\ntime.sleep(5)\nreturn [], {}, ''"
    server.run("hog", probe(hog), memory_limit=64 * 1024 * 1024)
    ended = server.exited("hog")
    assert ended["memory_exceeded"] is True
    assert ended["signal"] == 9


def test_usage_is_reported_while_an_execution_runs(server):
    busy = "import time\nend = time.time() + 1.2\nwhile time.time() < end:\n    pass\nreturn [], {}, ''"
    server.run("busy", probe(busy))
    usage = server.read_until(lambda e: e["type"] == "usage" and e["exec"] == "busy")
    assert usage["rss_bytes"] > 1024 * 1024
    assert usage["pids"] >= 1
    server.exited("busy")


def test_an_execution_cannot_ptrace_signal_every_process_or_make_ipc_objects(server):
    code = """
import ctypes, os, signal
libc = ctypes.CDLL(None, use_errno=True)
def refused(result):
    return ctypes.get_errno() if result == -1 else f'made {result}'
traced = libc.ptrace(16, os.getppid(), 0, 0)  # PTRACE_ATTACH
trace_errno = ctypes.get_errno()
try:
    os.kill(-1, signal.SIGTERM)
    broadcast = 'sent'
except OSError as exc:
    broadcast = exc.errno
IPC_PRIVATE, IPC_CREAT = 0, 0o1000
ipc = {
    'shmget': refused(libc.shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0o600)),
    'semget': refused(libc.semget(IPC_PRIVATE, 1, IPC_CREAT | 0o600)),
    'msgget': refused(libc.msgget(IPC_PRIVATE, IPC_CREAT | 0o600)),
    'mq_open': refused(libc.mq_open(b'/left', os.O_CREAT | os.O_RDWR, 0o600, None)),
}
return [], {'ptrace': [traced, trace_errno], 'broadcast': broadcast, 'ipc': ipc}, ''
"""
    server.run("p", probe(code))
    server.exited("p")
    outputs = server.result("p")["outputs"]
    assert outputs["ptrace"] == [-1, 1]  # EPERM
    assert outputs["broadcast"] == 1
    assert outputs["ipc"] == {"shmget": 1, "semget": 1, "msgget": 1, "mq_open": 1}
    server.run("after", make_job(ADD_NODE, {"a": 1, "b": 1}))
    server.exited("after")
    assert server.result("after")["outputs"] == {"out": 2}


def test_unknown_requests_end_the_server_with_a_message(server):
    server.send(b"launch x".ljust(63) + b"\n")
    assert server.process.wait(timeout=WAIT_S) == 3
    assert server.process.stderr is not None
    assert b"unknown request 'launch'" in server.process.stderr.read()


def test_the_end_of_stdin_ends_a_running_execution_and_then_the_server(server):
    server.run("hang", probe("import time\ntime.sleep(300)\nreturn [], {}, ''"))
    server.read_until(lambda e: e["type"] == "spawned" and e["exec"] == "hang")
    assert server.close() == 0  # within WAIT_S: the server does not wait for more input
    assert server.exited("hang")["signal"] == 9


def test_the_next_execution_runs_even_when_its_spare_process_died_while_waiting(server):
    server.run("first", make_job(ADD_NODE, {"a": 1, "b": 1}))
    server.exited("first")
    deadline = time.monotonic() + WAIT_S
    while not (spares := _children(server.process.pid)):
        assert time.monotonic() < deadline, "no process was forked ahead of the next job"
        time.sleep(0.01)
    assert len(spares) == 1
    os.kill(spares[0], signal.SIGKILL)

    server.run("second", make_job(ADD_NODE, {"a": 2, "b": 2}))
    server.exited("second")
    assert server.result("second")["outputs"] == {"out": 4}
    started = [frame["pid"] for frame in server.frames("second") if frame["type"] == "started"]
    assert started != spares


def _children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(child) for child in found.stdout.split()]


def test_no_descriptor_of_the_server_can_be_opened_through_proc(server):
    """gVisor opens /proc/<pid>/fd of a same-uid process whatever dumpable says: the
    server's channels are sockets, which no open through /proc reaches, and the pipes
    the engine hands it are left without any mode."""
    server.run("one", make_job(ADD_NODE, {"a": 1, "b": 1}))
    server.exited("one")  # and its spare, forked for the next one, waits
    held = Path(f"/proc/{server.process.pid}/fd")
    kinds = {}
    for fd in held.iterdir():
        target = os.readlink(fd)
        if target.startswith("pipe:"):
            assert fd.stat().st_mode & 0o7777 == 0, (fd.name, target)
        kinds[fd.name] = target.partition(":")[0]
    assert kinds["0"] == kinds["1"] == "pipe"
    assert "socket" in kinds.values()
    assert set(kinds.values()) <= {"pipe", "socket", "/dev/null"}, kinds
    code = "import os\nreturn [], {'channel': os.readlink('/proc/self/fd/3')}, ''"
    server.run("two", probe(code))
    server.exited("two")
    assert server.result("two")["outputs"]["channel"].startswith("socket:")
