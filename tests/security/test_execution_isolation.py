"""Executions of one node in its dedicated NPU: an execution cannot reach a previous or
a concurrent execution of the same node — its files, its processes, its memory and
environment, its secrets, its result stream.

Each case sends hostile code through the real path: node ``n`` of a one-node pipeline,
run by a worker (of one process, so that every execution of the node meets the same
registry and NPU; see conftest.py), and the node's next execution is a new version of
the same node, with the same limits, hence the same NPU — each case asserts that it was.
The concurrent case drives the runner's own code from this process instead: a Celery
prefork process runs one node at a time and keeps its own registry, so a worker never
gives two executions of a node to one NPU at the same moment (see its docstring).
"""

from __future__ import annotations

import errno
import hashlib
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connections

from secret_manager.actions import do_set_secret
from secret_manager.models import SecretAuditEvent
from tests.integration.conftest import wait_until
from tests.security.conftest import ADD, Sandbox, node_code, npu_processes, runtime

pytestmark = pytest.mark.django_db(transaction=True)

# Runs ``call`` (machine code, through ctypes) in a forked child, so that a sandbox that
# does not take it (gVisor has no 32-bit system calls) ends that child, not the node.
FORKED = """
def forked(call):
    import json, os
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            os.write(write_end, json.dumps(call()).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    answer = os.read(read_end, 4096)
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    return json.loads(answer) if answer else f'signal {os.WTERMSIG(status)}'
"""

# A system call through the i386 ABI (int 0x80), which a 64-bit process may still use
# where the kernel has IA-32 emulation: the same kernel calls under other numbers.
INT80 = """
def int80(number, *args):
    import ctypes, mmap
    args = [a & 0xFFFFFFFF for a in args] + [0] * (4 - len(args))
    code = bytes([0x53, 0xB8]) + number.to_bytes(4, 'little')
    for opcode, arg in zip((0xBB, 0xB9, 0xBA, 0xBE), args):
        code += bytes([opcode]) + arg.to_bytes(4, 'little')
    code += bytes([0xCD, 0x80, 0x5B, 0xC3])  # int 0x80; pop rbx; ret
    page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(code)
    address = ctypes.addressof(ctypes.c_char.from_buffer(page))
    return ctypes.CFUNCTYPE(ctypes.c_int)(address)()
def i386_abi():
    # gVisor takes int 0x80 but reads the 64-bit table: getpid (20 on i386) is not getpid
    # there. Under runc the ABI is there, and the execution's seccomp filter refuses every
    # call through it (-EPERM).
    import os
    return forked(lambda: int80(20) in (os.getpid(), -1)) is True
"""


def body(*parts: str) -> str:
    return "\n".join(part.strip("\n") for part in parts)


def same_npu(first: Any, second: Any) -> None:
    assert first.container_id, "the first execution never reached an NPU"
    assert second.container_id == first.container_id, (
        "the node's next execution ran in another NPU: this case needs the same one"
    )


# --- files ---------------------------------------------------------------------------------

SYSV_KEY = 0x5EC7E57
PLANT_FILES = node_code(
    """
import os
planted = {}
def attempt(name, action):
    try:
        action()
        planted[name] = 'planted'
    except OSError as exc:
        planted[name] = exc.errno
def write(path):
    with open(path, 'w') as handle:
        handle.write('left by the previous execution')
def next_workdirs():
    # The names the next executions' own directories will have.
    for number in range(1, 400):
        if not os.path.exists(f'/tmp/exec-x{number}'):  # its own is one of them
            os.mkdir(f'/tmp/exec-x{number}', 0o777)
            write(f'/tmp/exec-x{number}/planted')
attempt('tmp', lambda: write('/tmp/planted'))
attempt('tmp_hidden', lambda: write('/tmp/.planted'))
attempt('workdir', lambda: write('planted'))
attempt('fifo', lambda: os.mkfifo('/tmp/planted-fifo'))
attempt('symlink', lambda: os.symlink('/tmp/planted', '/tmp/planted-link'))
attempt('next_workdirs', next_workdirs)
attempt('dev_shm', lambda: write('/dev/shm/planted'))
attempt('dev_shm_hidden', lambda: write('/dev/shm/.planted'))
value = {'planted': planted, 'workdir': os.getcwd()}
"""
)
INSPECT_FILES = node_code(
    """
import os
found = {}
def walk(top):
    # Everything there, unlocked first where it can be (a directory of the same uid).
    paths = []
    for name in sorted(os.listdir(top)):
        path = os.path.join(top, name)
        paths.append(path)
        if os.path.islink(path):
            continue
        try:
            os.chmod(path, 0o700)
        except OSError:
            pass
        if os.path.isdir(path):
            paths += walk(path)
        elif os.path.isfile(path):
            try:
                with open(path) as handle:
                    found[path] = handle.read()
            except OSError as exc:
                found[path] = exc.errno
    return paths
value = {'workdir': os.getcwd(), 'tmp': walk('/tmp'), 'dev_shm': walk('/dev/shm'), 'read': found}
"""
)


def test_the_next_execution_finds_nothing_of_the_previous_one_s_files(dedicated_sandbox):
    first = dedicated_sandbox.run_node(PLANT_FILES)
    assert first.state == "succeeded", first.error
    planted = first.outputs["value"]["planted"]
    assert set(planted.values()) == {"planted"}, planted

    second = dedicated_sandbox.attack_again(INSPECT_FILES)
    assert second.state == "succeeded", second.error
    same_npu(first, second)
    seen = second.outputs["value"]
    assert seen["workdir"] != first.outputs["value"]["workdir"]
    # Its own (empty) working directory, and nothing else, anywhere it could write.
    assert seen["tmp"] == [seen["workdir"]], seen["tmp"]
    assert seen["dev_shm"] == []
    assert seen["read"] == {}, seen["read"]


PLANT_IPC = node_code(
    f"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
libc.mq_open.restype = ctypes.c_int
KEY, IPC_CREAT = {SYSV_KEY}, 0o1000
LEFT = b'left by the previous execution'
class Message(ctypes.Structure):
    _fields_ = [('kind', ctypes.c_long), ('text', ctypes.c_char * 64)]
def checked(result, what):
    if result is None or result < 0:
        raise OSError(ctypes.get_errno(), what)
    return result
def shared_memory():
    address = libc.shmat(checked(libc.shmget(KEY, 4096, IPC_CREAT | 0o666), 'shmget'), None, 0)
    if address in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), 'shmat')
    ctypes.memmove(address, LEFT, len(LEFT))
    libc.shmdt(ctypes.c_void_p(address))
def message_queue():
    queue = checked(libc.msgget(KEY, IPC_CREAT | 0o666), 'msgget')
    checked(libc.msgsnd(queue, ctypes.byref(Message(1, LEFT)), len(LEFT), 0), 'msgsnd')
def posix_queue():
    queue = checked(libc.mq_open(b'/planted', os.O_CREAT | os.O_RDWR, 0o600, None), 'mq_open')
    checked(libc.mq_send(queue, LEFT, len(LEFT), 0), 'mq_send')
planted = {{}}
for name, action in (('shm', shared_memory), ('msg', message_queue), ('posix_mqueue', posix_queue),
                     ('sem', lambda: checked(libc.semget(KEY, 1, IPC_CREAT | 0o666), 'semget'))):
    try:
        action()
        planted[name] = 'planted'
    except OSError as exc:
        planted[name] = exc.errno
value = planted
"""
)
INSPECT_IPC = node_code(
    f"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
libc.mq_open.restype = ctypes.c_int
libc.mq_receive.restype = ctypes.c_ssize_t
libc.msgrcv.restype = ctypes.c_ssize_t
KEY, IPC_NOWAIT, SHM_RDONLY = {SYSV_KEY}, 0o4000, 0o10000
class Message(ctypes.Structure):
    _fields_ = [('kind', ctypes.c_long), ('text', ctypes.c_char * 64)]
def attached(shmid):
    address = libc.shmat(shmid, None, SHM_RDONLY)
    if address in (None, ctypes.c_void_p(-1).value):
        return None
    text = ctypes.string_at(address, 64).rstrip(b'\\0').decode('latin-1')
    libc.shmdt(ctypes.c_void_p(address))
    return text
def rows(path):
    try:
        with open(path) as handle:
            return handle.readlines()[1:]
    except OSError as exc:
        return exc.errno
found = {{}}
shmid = libc.shmget(KEY, 0, 0)
found['shm'] = attached(shmid) if shmid >= 0 else ctypes.get_errno()
# Without its key: every small segment id.
found['shm_by_id'] = {{str(i): text for i in range(4096) if (text := attached(i)) is not None}}
queue = libc.msgget(KEY, 0)
if queue >= 0:
    message = Message()
    got = libc.msgrcv(queue, ctypes.byref(message), 64, 0, IPC_NOWAIT)
    found['msg'] = message.text.decode('latin-1') if got >= 0 else f'queue, errno {{ctypes.get_errno()}}'
else:
    found['msg'] = ctypes.get_errno()
found['sem'] = 'found' if libc.semget(KEY, 0, 0) >= 0 else ctypes.get_errno()
queue = libc.mq_open(b'/planted', os.O_RDONLY | os.O_NONBLOCK)
if queue >= 0:
    buffer = ctypes.create_string_buffer(1 << 16)
    got = libc.mq_receive(queue, buffer, len(buffer), None)
    received = buffer.raw[:got].decode('latin-1') if got >= 0 else f'queue, errno {{ctypes.get_errno()}}'
    found['posix_mqueue'] = received
else:
    found['posix_mqueue'] = ctypes.get_errno()
try:
    found['dev_mqueue'] = os.listdir('/dev/mqueue')
except OSError as exc:
    found['dev_mqueue'] = exc.errno
found['sysvipc'] = {{kind: rows(f'/proc/sysvipc/{{kind}}') for kind in ('shm', 'sem', 'msg')}}
value = found
"""
)


def test_the_next_execution_finds_none_of_the_previous_one_s_ipc_objects(dedicated_sandbox):
    # System V IPC objects and POSIX message queues outlive their maker, and gVisor lists
    # neither (no /proc/sysvipc, no /dev/mqueue) for the server to remove: an execution
    # may not make them at all (npu_image/flowkit/_seccomp.py).
    first = dedicated_sandbox.run_node(PLANT_IPC)
    assert first.state == "succeeded", first.error
    assert first.outputs["value"] == dict.fromkeys(("shm", "msg", "posix_mqueue", "sem"), errno.EPERM)

    second = dedicated_sandbox.attack_again(INSPECT_IPC)
    assert second.state == "succeeded", second.error
    same_npu(first, second)
    seen = second.outputs["value"]
    assert "left by the previous execution" not in repr(seen), seen
    for kind in ("shm", "msg", "sem", "posix_mqueue"):
        assert seen[kind] in (errno.ENOENT, errno.EPERM), seen  # none, or not even a lookup
    assert seen["shm_by_id"] == {}, seen["shm_by_id"]
    assert seen["dev_mqueue"] in ([], errno.ENOENT), seen["dev_mqueue"]
    assert all(rows in ([], errno.ENOENT) for rows in seen["sysvipc"].values()), seen["sysvipc"]


LOCK_A_TREE = node_code(
    """
import os
top = node.get_inputs()['top']
os.makedirs(f'{top}/locked/deeper')
with open(f'{top}/locked/deeper/planted', 'w') as handle:
    handle.write('left by the previous execution')
os.chmod(f'{top}/locked/deeper', 0)
os.chmod(f'{top}/locked', 0)
value = os.getcwd()
"""
)


def test_a_locked_directory_left_in_tmp_is_gone_for_the_next_execution(dedicated_sandbox):
    first = dedicated_sandbox.run_node(LOCK_A_TREE, {"top": "/tmp"})
    assert first.state == "succeeded", first.error
    second = dedicated_sandbox.attack_again(INSPECT_FILES)
    assert second.state == "succeeded", second.error
    same_npu(first, second)
    seen = second.outputs["value"]
    assert seen["read"] == {}, seen["read"]
    assert seen["tmp"] == [seen["workdir"]], seen["tmp"]


def test_a_locked_directory_left_in_its_working_directory_is_gone_for_the_next_execution(
    dedicated_sandbox, record_property
):
    first = dedicated_sandbox.run_node(LOCK_A_TREE, {"top": "."})
    assert first.state == "succeeded", first.error
    second = dedicated_sandbox.attack_again(INSPECT_FILES)
    assert second.state == "succeeded", second.error
    seen = second.outputs["value"]
    assert seen["read"] == {}, seen["read"]
    assert seen["tmp"] == [seen["workdir"]], seen["tmp"]
    # In the same NPU, or (the fork server failed to remove the tree and ended) a new one.
    fate = "same" if second.container_id == first.container_id else "replaced"
    record_property("npu_after_a_locked_working_directory", fate)


# --- processes ------------------------------------------------------------------------------

PLANT_PROCESSES = node_code(
    """
import ctypes, os, signal, time
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
planted = []
def daemon(argv=None):
    # Double fork and setsid: its parent gone, it leads a session of its own; it ignores
    # the polite signals.
    read_end, write_end = os.pipe()
    middle = os.fork()
    if middle == 0:
        os.setsid()
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            if argv:
                os.execvp(argv[0], argv)
            while True:
                time.sleep(1)
        os.write(write_end, str(pid).encode())
        os._exit(0)
    os.close(write_end)
    os.waitpid(middle, 0)
    planted.append(int(os.read(read_end, 32)))
daemon()
IGNORE_AND_SLEEP = 'import signal, time\\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\\ntime.sleep(600)'
daemon(['python3', '-c', IGNORE_AND_SLEEP])
# clone(CLONE_PARENT): a child of the fork server itself, outside the execution's tree.
pid = libc.syscall(56, 0x00008000 | signal.SIGCHLD, 0, 0, 0, 0)
if pid == 0:
    while True:
        time.sleep(1)
planted.append(pid if pid > 0 else -ctypes.get_errno())
time.sleep(node.get_inputs()['linger_s'])
value = {'planted': planted, 'me': os.getpid()}
"""
)
INSPECT_PROCESSES = node_code(
    """
import os
table = {}
for name in os.listdir('/proc'):
    if name.isdigit():
        try:
            with open(f'/proc/{name}/stat') as handle:
                stat = handle.read()
            table[name] = int(stat[stat.rfind(')') + 2:].split()[1])  # its parent
        except OSError:
            pass
signalled = {}
for pid in node.get_inputs()['planted']:
    try:
        os.kill(pid, 0)
        signalled[pid] = 'alive'
    except OSError as exc:
        signalled[pid] = exc.errno
value = {'me': os.getpid(), 'processes': table, 'signalled': signalled}
"""
)


def test_the_next_execution_finds_none_of_the_previous_one_s_processes(dedicated_sandbox):
    started = dedicated_sandbox.start(PLANT_PROCESSES, {"linger_s": 3})
    npu = dedicated_sandbox.npu_of(started)
    # From the host, while the first execution runs: its leader and what it planted.
    wait_until("the planted processes run", lambda: len(npu_processes(npu)) >= 4)  # (+ a spare)
    first = dedicated_sandbox.finish(started)
    assert first.state == "succeeded", first.error
    planted = first.outputs["value"]["planted"]
    assert len(planted) == 3
    assert all(pid > 0 for pid in planted), planted
    # From the host, before the next execution starts: nothing but the fork server and
    # the spare it forked for the next execution (a child of its own, which the next
    # execution must turn out to be). The runner waits for the server's report that the
    # execution's processes are gone before it starts the next one: up to a second
    # after the answer.
    deadline = time.monotonic() + 2
    while len(left := npu_processes(npu)) > 1 or not all(p.child_of_server for p in left.values()):
        assert time.monotonic() < deadline, f"processes of the first execution outlived it: {left}"
        time.sleep(0.05)
    spare = next(iter(left), None)

    second = dedicated_sandbox.attack_again(INSPECT_PROCESSES, {"planted": planted})
    assert second.state == "succeeded", second.error
    same_npu(first, second)
    seen = second.outputs["value"]
    me = seen["me"]
    if spare is not None:
        assert me == spare, f"process {spare} left in the NPU was not the spare the next execution ran in"
    # Only the fork server (1), the execution itself, and the spare forked after it for
    # the execution after it (a child of the server, younger than this execution).
    others = {int(pid): parent for pid, parent in seen["processes"].items() if int(pid) not in (1, me)}
    assert seen["processes"][str(me)] == 1
    assert len(others) <= 1, seen["processes"]
    assert all(pid > me and parent == 1 for pid, parent in others.items()), seen["processes"]
    assert set(seen["signalled"].values()) == {errno.ESRCH}, seen["signalled"]


STOP_THE_NEXT_EXECUTION = node_code(
    """
import os, signal
me = os.getpid()
stopped = {}
for name in os.listdir('/proc'):
    if not name.isdigit() or int(name) in (1, me):
        continue
    try:
        with open(f'/proc/{name}/stat') as handle:
            stat = handle.read()
    except OSError:
        continue
    if int(stat[stat.rfind(')') + 2:].split()[1]) == 1:
        # A child of the fork server that is not this execution: the process it forked
        # ahead for the node's next execution.
        try:
            os.kill(int(name), signal.SIGSTOP)
            stopped[name] = 'stopped'
        except OSError as exc:
            stopped[name] = exc.errno
value = stopped
"""
)


def test_an_execution_cannot_hold_up_the_next_one(dedicated_sandbox, record_property):
    # The fork server forks the next execution's process ahead (its spare), today once an
    # execution has ended: none exists while one runs (concurrency 1), so there is nothing
    # to stop. Were it forked earlier, a stopped spare would hold up the next execution
    # (and the server, which reads no request until its first frame).
    first = dedicated_sandbox.run_node(STOP_THE_NEXT_EXECUTION, timeout_s=10)
    assert first.state == "succeeded", first.error
    record_property("processes_stopped_by_the_previous_execution", str(first.outputs["value"]))
    second = dedicated_sandbox.attack_again(node_code("value = 'the next execution ran'"), timeout_s=10)
    assert second.state == "succeeded", second.error
    assert second.outputs == {"value": "the next execution ran"}


# --- memory and environment ---------------------------------------------------------------

LEAVE_A_MARK = node_code(
    """
import os, time
mark = 'the-previous-execution-' + 'was-here'
os.environ['PREVIOUS_EXECUTION'] = mark
kept = [mark * 1000]
value = os.getpid()
"""
)
# Every way into another process's memory, environment and file descriptors, against
# every process of the NPU but this one (the fork server, and any other execution).
MEMORY_ATTACK = body(
    FORKED,
    INT80,
    """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.ptrace.restype = ctypes.c_long
PTRACE_ATTACH, PTRACE_DETACH, PTRACE_SEIZE = 16, 17, 0x4206
def read(path):
    try:
        with open(path, 'rb') as handle:
            data = handle.read(4096)
    except OSError as exc:
        return exc.errno
    return f'read {len(data)} bytes' if data.strip(b'\\0') else 'read nothing'
def ptrace(request, pid):
    if libc.ptrace(request, pid, None, None) == 0:
        libc.ptrace(PTRACE_DETACH, pid, None, None)
        return 'attached'
    return ctypes.get_errno()
class Iovec(ctypes.Structure):
    _fields_ = [('base', ctypes.c_void_p), ('length', ctypes.c_size_t)]
def process_vm_readv(pid):
    buffer = ctypes.create_string_buffer(4096)
    local, remote = Iovec(ctypes.addressof(buffer), 4096), Iovec(0x400000, 4096)
    result = libc.syscall(310, pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    return f'read {result} bytes' if result >= 0 else ctypes.get_errno()
I386 = i386_abi()
def i386(number, *args):
    return forked(lambda: int80(number, *args)) if I386 else 'no i386 ABI'
def pidfd_getfd(pid):
    pidfd = libc.syscall(434, pid, 0)
    if pidfd < 0:
        return {'pidfd_open': ctypes.get_errno()}
    taken = {}
    for fd in range(8):
        result = libc.syscall(438, pidfd, fd, 0)
        taken[fd] = 'taken' if result >= 0 else ctypes.get_errno()
        # The same, through the i386 ABI (its pidfd_getfd has the same number).
        taken[f'i386 {fd}'] = i386(438, pidfd, fd, 0)
    os.close(pidfd)
    return taken
def attack(pid):
    return {
        'status': read(f'/proc/{pid}/status'),  # it exists, and is an honest target
        'mem': read(f'/proc/{pid}/mem'),
        'environ': read(f'/proc/{pid}/environ'),
        'maps': read(f'/proc/{pid}/maps'),
        'ptrace_attach': ptrace(PTRACE_ATTACH, pid),
        'ptrace_seize': ptrace(PTRACE_SEIZE, pid),
        'i386_ptrace_attach': i386(26, PTRACE_ATTACH, pid),
        'i386_ptrace_seize': i386(26, PTRACE_SEIZE, pid),
        'process_vm_readv': process_vm_readv(pid),
        'pidfd_getfd': pidfd_getfd(pid),
    }
def attack_every_other_process():
    me = os.getpid()
    return {name: attack(int(name)) for name in os.listdir('/proc') if name.isdigit() and int(name) != me}
""",
)
READ_OTHER_PROCESSES = node_code(
    MEMORY_ATTACK + "\nvalue = {'me': os.getpid(), 'attacked': attack_every_other_process()}"
)

# What refuses each attempt: /proc files of a non-dumpable process are root's (EACCES);
# ptrace and process_vm_readv are refused by the execution's seccomp filter and, were
# it not there, by the kernel for a non-dumpable target (EPERM); so is every system
# call through the i386 ABI (returned as -EPERM). gVisor: no pidfd system calls
# (ENOSYS) and no i386 ABI at all.
REFUSED = {errno.EACCES, errno.EPERM, -errno.EPERM}
NOT_THERE = {errno.ENOSYS, "no i386 ABI"}
# gVisor (20221219) opens /proc/<pid>/environ and maps to the same uid whatever
# dumpable says. The environment every process of the NPU started with is blanked by
# the fork server, so nothing is read there; the maps show where things are mapped
# (the image's own libraries and heaps), not what they hold: docs/SECURITY.md.


def assert_refused(attempts: dict[str, Any], where: str) -> None:
    gvisor = runtime() == "runsc"
    allowed = REFUSED | (NOT_THERE if gvisor else set())
    for name, result in attempts.items():
        if name == "status":
            assert str(result).startswith("read "), (where, result)
        elif isinstance(result, dict):
            assert_refused(result, f"{where} {name}")
        elif gvisor and name == "environ":
            assert result in allowed | {"read nothing"}, f"{where}: {name} gave {result!r}"
        elif gvisor and name == "maps":
            assert result in allowed or str(result).startswith("read "), f"{where}: {name} gave {result!r}"
        else:
            assert result in allowed, f"{where}: {name} gave {result!r}"


def test_the_next_execution_cannot_read_the_memory_or_environment_of_any_other_process(
    dedicated_sandbox,
):
    first = dedicated_sandbox.run_node(LEAVE_A_MARK)
    assert first.state == "succeeded", first.error

    second = dedicated_sandbox.attack_again(READ_OTHER_PROCESSES)
    assert second.state == "succeeded", second.error
    same_npu(first, second)
    me, attacked = second.outputs["value"]["me"], second.outputs["value"]["attacked"]
    # The previous execution is gone: the other processes are the fork server and the
    # spare it forked for the next execution (younger than this one).
    others = [int(pid) for pid in attacked if pid != "1"]
    assert "1" in attacked
    assert len(others) <= 1, list(attacked)
    assert all(pid > me for pid in others), list(attacked)
    for pid, attempts in attacked.items():
        assert_refused(attempts, "the fork server" if pid == "1" else f"the spare ({pid})")
    assert "was-here" not in repr(second.outputs)


FORGED_PIDS = 4242
# The fork server's own descriptors: its stdin (every job of the NPU arrives there) and
# its stdout (every frame and every event of the server leave there, to the runner).
# Opened without blocking, never read; where one opens for writing, an event "of the
# server" about this execution goes in, which the runner would record as a resource
# sample.
OPEN_THE_SERVER_S_STREAMS = node_code(
    f"""
import json, os, time
me = os.path.basename(os.getcwd()).removeprefix('exec-')
opened = {{}}
for number in range(8):
    for mode_name, mode in (('read', os.O_RDONLY), ('write', os.O_WRONLY)):
        try:
            fd = os.open(f'/proc/1/fd/{{number}}', mode | os.O_NONBLOCK)
        except OSError as exc:
            opened[f'{{number}} {{mode_name}}'] = exc.errno
            continue
        opened[f'{{number}} {{mode_name}}'] = 'opened'
        if number == 1 and mode_name == 'write':
            event = json.dumps({{'type': 'usage', 'exec': me, 'cpu_s': 0.0, 'rss_bytes': {FORGED_PIDS},
                                'pids': {FORGED_PIDS}, 'net_rx_bytes': None, 'net_tx_bytes': None,
                                'ts': time.time()}}).encode()
            time.sleep(0.3)
            os.write(fd, b'@ %d\\n' % len(event) + event)
            opened['forged'] = me
            time.sleep(1)
        os.close(fd)
value = opened
"""
)


def test_an_execution_cannot_open_the_fork_server_s_streams(dedicated_sandbox):
    from trace_monitor.models import ResourceSample

    tried = dedicated_sandbox.attack(OPEN_THE_SERVER_S_STREAMS)
    assert tried.state == "succeeded", tried.error
    assert ResourceSample.objects.filter(run_id=tried.id, pids=FORGED_PIDS).count() == 0
    # runc: the non-dumpable server's /proc/1/fd is root's. gVisor lets the same uid in:
    # the engine's pipes have no mode left (EACCES), the server's own channels are
    # sockets, never opened through /proc (ENXIO, or ENOENT as gVisor says it).
    refused = {errno.EACCES} | ({errno.ENXIO, errno.ENOENT} if runtime() == "runsc" else set())
    assert set(tried.outputs["value"].values()) <= refused, tried.outputs


KILL_EVERY_PROCESS = node_code(
    body(
        FORKED,
        INT80,
        """
import os, time
child = os.fork()
if child == 0:
    time.sleep(60)
    os._exit(0)
# Signal 0: the permission check only, harmless. kill(-1) reaches every process of the
# NPU this one may signal (its own child here; another execution's, were one running).
try:
    os.kill(-1, 0)
    native = 'allowed'
except OSError as exc:
    native = exc.errno
value = {'x86_64': native, 'i386': forked(lambda: int80(37, -1, 0)) if i386_abi() else 'no i386 ABI'}
os.kill(child, 9)
os.waitpid(child, 0)
""",
    )
)


def test_kill_of_every_process_is_refused_through_every_system_call_abi(dedicated_sandbox):
    tried = dedicated_sandbox.attack(KILL_EVERY_PROCESS)
    assert tried.state == "succeeded", tried.error
    assert tried.outputs["value"]["x86_64"] == errno.EPERM
    assert tried.outputs["value"]["i386"] in {-errno.EPERM, "no i386 ABI"}, tried.outputs


# --- secrets --------------------------------------------------------------------------------

HOLD_THE_SECRET = node_code(
    """
import hashlib, os
secret = "<<<secret::EXEC_ONE_SECRET>>>"
# Everywhere an execution could leave it: its environment, its memory (many copies),
# files in /tmp, its working directory and /dev/shm, and a daemon of its own (forked,
# and an exec'd program with it in its command line and environment). System V IPC and
# message queues: test_the_next_execution_finds_none_of_the_previous_one_s_ipc_objects.
os.environ['HELD'] = secret
kept = [secret * 100, bytearray(secret.encode() * 100), secret.encode('utf-16-le')]
for path in ('/tmp/held', 'held', '/dev/shm/held'):
    with open(path, 'w') as handle:
        handle.write(secret)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execvpe('python3', ['python3', '-c', 'import time; time.sleep(600)', secret],
                   {**os.environ, 'HELD': secret})
    os._exit(0)
os.wait()
value = hashlib.sha256(secret.encode()).hexdigest()
"""
)
# The value is looked for as its two halves, never joined in this execution's memory:
# each hit of the first half is followed by the second or not. A control value, joined
# here at run time, shows that the memory scan does find what is there.
HUNT_THE_SECRET = node_code(
    body(
        FORKED,
        """
import ctypes, json, os, stat
inputs = node.get_inputs()
first, second = inputs['first'].encode(), inputs['second'].encode()
control_first, control_second = inputs['control_first'].encode(), inputs['control_second'].encode()
control = control_first + control_second
def hits_in(data, head, tail):
    found, at = 0, data.find(head)
    while at != -1:
        if data[at + len(head):at + len(head) + len(tail)] == tail:
            found += 1
        at = data.find(head, at + 1)
    return found
def scan_own_memory(skip_regions):
    # In a forked copy of this process, so that a region that faults ends only that
    # copy; /proc/self/mem is refused (the process is non-dumpable), ctypes reads it.
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        out = os.fdopen(write_end, 'w', buffering=1)
        with open('/proc/self/maps') as maps:
            regions = maps.readlines()
        for line in regions:
            fields = line.split()
            start, end = (int(x, 16) for x in fields[0].split('-'))
            name = fields[5] if len(fields) > 5 else 'anonymous'
            if 'r' not in fields[1] or name.startswith('[v') or start in skip_regions:
                continue
            out.write(json.dumps({'begin': start}) + '\\n')
            found = {'secret': 0, 'control': 0}
            step, overlap = 1 << 20, len(first) + len(second) + len(control)
            at = start
            while at < end:
                chunk = ctypes.string_at(at, min(step + overlap, end - at))
                found['secret'] += hits_in(chunk, first, second)
                found['control'] += hits_in(chunk, control_first, control_second)
                at += step
            out.write(json.dumps({'done': start, 'name': name, 'bytes': end - start, **found}) + '\\n')
        out.close()
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as reports:
        lines = [json.loads(line) for line in reports]
    os.waitpid(pid, 0)
    return lines
memory = {'secret': [], 'control': 0, 'bytes': 0, 'faulted': []}
skip = set()
while True:
    lines = scan_own_memory(skip)
    begun = None
    for line in lines:
        if 'begin' in line:
            begun = line['begin']
            continue
        begun = None
        skip.add(line['done'])
        memory['bytes'] += line['bytes']
        memory['control'] += line['control']
        if line['secret']:
            memory['secret'].append(line['name'])
    if begun is None:
        break
    memory['faulted'].append(hex(begun))
    skip.add(begun)
try:
    open('/proc/self/mem', 'rb').close()
    memory['proc_self_mem'] = 'opened'
except OSError as exc:
    memory['proc_self_mem'] = exc.errno
files = {'secret': [], 'read': 0}
for top in ('/tmp', '/dev/shm', '/dev/mqueue'):
    for root, dirs, names in os.walk(top):
        for name in names:
            path = os.path.join(root, name)
            try:
                if not stat.S_ISREG(os.lstat(path).st_mode):
                    continue
                with open(path, 'rb') as handle:
                    data = handle.read()
            except OSError:
                continue
            files['read'] += 1
            if hits_in(data, first, second):
                files['secret'].append(path)
proc = {'secret': [], 'refused': 0, 'read': 0}
me = str(os.getpid())
for pid in os.listdir('/proc'):
    if not pid.isdigit():
        continue
    for part in ('environ', 'cmdline', 'maps', 'mem', 'status'):
        try:
            with open(f'/proc/{pid}/{part}', 'rb') as handle:
                data = handle.read(1 << 20)
        except OSError:
            proc['refused'] += 1
            continue
        proc['read'] += 1
        if hits_in(data, first, second):
            proc['secret'].append(f'{pid}/{part}')
sysv = {'secret': [], 'segments': 0}
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
try:
    with open('/proc/sysvipc/shm') as handle:
        listed = [int(row.split()[1]) for row in handle.readlines()[1:]]
except OSError:
    listed = []
for shmid in sorted({*listed, *range(4096)}):
    address = libc.shmat(shmid, None, 0o10000)  # SHM_RDONLY
    if address in (None, ctypes.c_void_p(-1).value):
        continue
    sysv['segments'] += 1
    if hits_in(ctypes.string_at(address, 4096), first, second):
        sysv['secret'].append(shmid)
value = {'memory': memory, 'files': files, 'proc': proc, 'sysv': sysv}
""",
    )
)


def resolved_names(run_ref: str) -> set[str]:
    events = SecretAuditEvent.objects.filter(action="resolved", run_id=run_ref)
    return {name for event in events for name in event.names}


def test_the_next_execution_finds_the_previous_one_s_secret_nowhere_in_the_npu(dedicated_sandbox):
    secret = f"exec-one-{uuid.uuid4().hex}-secret-value"
    do_set_secret("EXEC_ONE_SECRET", secret, user=None)
    first = dedicated_sandbox.run_node(HOLD_THE_SECRET)
    assert first.state == "succeeded", first.error
    # It did hold the value (and its own outputs are masked).
    assert first.outputs == {"value": hashlib.sha256(secret.encode()).hexdigest()}
    assert resolved_names(first.run_ref) == {"EXEC_ONE_SECRET"}

    half = len(secret) // 2
    control = f"a-control-{uuid.uuid4().hex}"
    inputs = {
        "first": secret[:half],
        "second": secret[half:],
        "control_first": control[:12],
        "control_second": control[12:],
    }
    second = dedicated_sandbox.attack_again(HUNT_THE_SECRET, inputs, timeout_s=120)
    assert second.state == "succeeded", second.error
    same_npu(first, second)
    assert resolved_names(second.run_ref) == set()
    found = second.outputs["value"]
    memory = found["memory"]
    # The scan works: it read the whole process and found the control value.
    assert memory["control"] >= 1, memory
    assert memory["bytes"] > 10 * 1024 * 1024, memory
    assert memory["proc_self_mem"] == errno.EACCES or runtime() == "runsc", memory
    # And the previous execution's secret is nowhere.
    assert memory["secret"] == [], memory
    assert found["files"]["secret"] == [], found["files"]
    assert found["proc"]["secret"] == [], found["proc"]
    assert found["sysv"] == {"secret": [], "segments": 0}, found["sysv"]
    assert secret not in repr([second.outputs, second.logs, second.error])


# --- concurrent executions: the result stream ------------------------------------------------

VICTIM_VALUE = hashlib.sha256(b"the victim's own result").hexdigest()
# Two executions of one node at once: they find each other through /tmp, which
# concurrent executions share (docs/SECURITY.md: not isolated, by design).
CONCURRENT = node_code(
    body(
        MEMORY_ATTACK,
        """
import hashlib, json, os, time
inputs = node.get_inputs()
if inputs['role'] == 'victim':
    with open('/tmp/victim-ready', 'w') as handle:
        handle.write(str(os.getpid()))
    deadline = time.time() + inputs['wait_s']
    while not os.path.exists('/tmp/attacker-done') and time.time() < deadline:
        time.sleep(0.02)
    print('the victim logs this line')
    value = {'result': hashlib.sha256(b"the victim's own result").hexdigest()}
else:
    deadline = time.time() + 20
    while not os.path.exists('/tmp/victim-ready') and time.time() < deadline:
        time.sleep(0.02)
    victim = int(open('/tmp/victim-ready').read())
    me = os.getpid()
    # Frames that would take over the victim's result if they landed in its stream
    # (JSON lines), or in the server's stream to the runner (tagged chunks).
    frame = b'{"type": "result", "outputs": {"value": "forged"}, "next_nodes": [], "status_message": ""}\\n'
    forged = frame + b''.join(b'x%d %d\\n' % (n, len(frame)) + frame for n in range(1, 40))
    written = {}
    for pid in [p for p in os.listdir('/proc') if p.isdigit() and int(p) != me]:
        try:
            fds = os.listdir(f'/proc/{pid}/fd')
        except OSError as exc:
            written[f'{pid}/fd'] = exc.errno
            fds = [str(n) for n in range(64)]
        for fd in fds:
            try:
                handle = os.open(f'/proc/{pid}/fd/{fd}', os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                written[f'{pid}/fd/{fd}'] = exc.errno
                continue
            try:
                written[f'{pid}/fd/{fd}'] = os.write(handle, forged)
            except OSError as exc:
                written[f'{pid}/fd/{fd}'] = exc.errno
            finally:
                os.close(handle)
    attacked = attack_every_other_process()
    try:
        os.kill(victim, 0)
        signal_to_sibling = 'allowed'
    except OSError as exc:
        signal_to_sibling = exc.errno
    value = {'victim': victim, 'written': written, 'attacked': attacked,
             'signal_to_sibling': signal_to_sibling}
    open('/tmp/attacker-done', 'w').close()
""",
    )
)


class KeptBook:
    """The registry's book in this test: nothing recorded, every NPU kept."""

    def opened(self, key: Any, connection: Any, adopted: bool) -> None:
        pass

    def used(self, connections: list[Any]) -> None:
        pass

    def closed(self, container_id: str) -> None:
        pass

    def kept(self, container_ids: list[str]) -> set[str]:
        return set(container_ids)


class NodeInThisProcess:
    """Node ``n`` of a pipeline, run by the runner's own code (``execute_node``, as a
    worker's task calls it) with a registry of dedicated NPUs of this process, from
    several threads at once."""

    def __init__(self, engine: Any) -> None:
        import os
        import socket

        from node_runner.dedicated_npus import DedicatedBounds, DedicatedNpus, dedicated_npu_launcher

        self.engine = engine
        self.worker = f"security-{os.getpid()}-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
        bounds = DedicatedBounds.from_settings()
        self.registry = DedicatedNpus(bounds, dedicated_npu_launcher(self.worker), KeptBook())
        self.placement = self.registry.for_node(str(uuid.uuid4()), "n")

    def execute(self, code: str, inputs: dict[str, Any], limits: dict[str, Any]) -> dict[str, Any]:
        from node_runner.tasks import execute_node

        try:
            return execute_node(
                node_id="n", label="n", code=code, inputs=inputs, attempt=1, limits=limits, labels={},
                run_ref=f"in-process-{uuid.uuid4()}", npus=self.placement,
            )  # fmt: skip
        finally:
            connections.close_all()  # this thread's own

    def running(self) -> int:
        return sum(connection.running for connection in self.registry.held().values())

    def close(self) -> None:
        self.registry.drain()
        left = self.engine.containers.list(all=True, filters={"label": f"flowkit.worker={self.worker}"})
        for container in left:
            container.remove(force=True)


@pytest.fixture
def node_in_this_process(docker_engine: Any) -> Iterator[NodeInThisProcess]:
    node = NodeInThisProcess(docker_engine)
    yield node
    node.close()


def test_a_concurrent_execution_cannot_write_into_another_s_result_stream(
    dedicated_sandbox: Sandbox, node_in_this_process: NodeInThisProcess, record_property: Any
):
    """With ``concurrency`` 2 the node's NPU runs two executions at once. The runner's
    code is driven from here (as a worker's NPU host drives it for two pool processes),
    so that the attacker starts only once the victim runs: the victim waits; the
    attacker tries every descriptor of every other process of the NPU (the victim's,
    the fork server's) to write forged frames, and every way into their memory."""
    limits = {"concurrency": 2, "timeout_s": 60}
    gvisor = runtime() == "runsc"
    bystander = dedicated_sandbox.start_bystander()
    outcomes: dict[str, dict[str, Any]] = {}

    def run(role: str) -> None:
        inputs = {"role": role, "wait_s": 3 if gvisor else 30}
        outcomes[role] = node_in_this_process.execute(CONCURRENT, inputs, limits)

    victim = threading.Thread(target=run, args=("victim",))
    victim.start()
    wait_until("the victim runs", lambda: node_in_this_process.running() == 1)
    time.sleep(0.3)
    attacker = threading.Thread(target=run, args=("attacker",))
    attacker.start()
    for thread in (victim, attacker):
        thread.join(timeout=120)
        assert not thread.is_alive()

    # The victim's result, and its stream, are its own.
    victim_outcome = outcomes["victim"]
    assert victim_outcome["error"] is None, victim_outcome["error"]
    assert victim_outcome["outputs"] == {"value": {"result": VICTIM_VALUE}}
    assert [line["message"] for line in victim_outcome["logs"]] == ["the victim logs this line"]
    assert "forged" not in repr(victim_outcome)
    attacker_outcome = outcomes["attacker"]
    if gvisor and (attacker_outcome["error"] or {}).get("error_type") == "NpuUnavailable":
        # gVisor's 2022 release has no child subreapers: its fork server runs one
        # execution at a time and refuses the second (the victim is unharmed).
        assert "one execution of an NPU at a time" in attacker_outcome["error"]["message"]
        record_property("concurrent_attack", "refused: one execution at a time under gVisor")
    else:
        assert attacker_outcome["error"] is None, attacker_outcome["error"]
        assert attacker_outcome["container_id"] == victim_outcome["container_id"], "not one NPU"
        attack = attacker_outcome["outputs"]["value"]
        # Not one descriptor of another process could be opened, let alone written.
        assert set(attack["written"].values()) == {errno.EACCES}, attack["written"]
        assert str(attack["victim"]) in attack["attacked"], "the victim was not among the targets"
        for pid, attempts in attack["attacked"].items():
            assert_refused(attempts, "the fork server" if pid == "1" else f"the other execution ({pid})")
        # Known limit (docs/SECURITY.md): same uid, so a signal to a sibling's pid is allowed.
        record_property("signal_to_concurrent_sibling", str(attack["signal_to_sibling"]))

    # The NPU serves the node's next execution, an honest one, and the bystander is fine.
    honest = node_in_this_process.execute(ADD, {"a": 2, "b": 3}, limits)
    assert honest["error"] is None, honest["error"]
    assert honest["outputs"] == {"out": 5}
    assert honest["container_id"] == victim_outcome["container_id"]
    dedicated_sandbox.assert_bystander_unaffected(bystander)
