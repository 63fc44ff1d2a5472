"""A seccomp filter each execution installs before its node's code runs.

Executions of one node share their NPU's uid. What keeps one from reading another's
memory is that every process the fork server starts is non-dumpable, and this filter,
stacked on the engine's own profile: no ``ptrace``, no ``process_vm_readv/writev``, no
``pidfd_getfd``, and no ``kill(-1, ...)`` (which would signal every process of the NPU,
the other executions' included).

It also refuses creating System V IPC objects and POSIX message queues. They outlive
the process that made them, and gVisor gives the server no way to list them (no
/proc/sysvipc, no /dev/mqueue), so the only way to be sure none is left for the next
execution is that none is made. Shared memory through files (``/dev/shm``, which
``multiprocessing`` uses) stays, and is wiped between executions.

Every system call through another ABI than the machine's own (i386's ``int 0x80`` on
x86_64, or x32) is refused: a filter that matches numbers of one ABI says nothing about
the same numbers in another.

It is inherited by every process the node starts and cannot be removed. Unprivileged
processes may install filters once no-new-privileges is set, which every NPU has.
"""

from __future__ import annotations

import ctypes
import errno
import platform
import struct
from typing import Any

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000

# BPF instructions (linux/filter.h).
LD_W_ABS = 0x20
JEQ_K = 0x15
JSET_K = 0x45
RET_K = 0x06

# seccomp_data: nr (u32), arch (u32), instruction_pointer (u64), args[6] (u64).
OFFSET_NR, OFFSET_ARCH, OFFSET_ARG0_LOW = 0, 4, 16

# (audit arch, {syscall: number}, bit set on the numbers of a second ABI sharing the
# arch value, or 0) per machine.
SYSCALLS = {
    "x86_64": (0xC000003E, {"ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311,
                            "pidfd_getfd": 438, "shmget": 29, "semget": 64, "msgget": 68,
                            "mq_open": 240, "kill": 62},
               0x40000000),  # x32
    "aarch64": (0xC00000B7, {"ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271,
                             "pidfd_getfd": 438, "shmget": 194, "semget": 190, "msgget": 186,
                             "mq_open": 180, "kill": 129},
                0),
}  # fmt: skip
DENIED = (
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd",
    "shmget", "semget", "msgget", "mq_open",
)  # fmt: skip


class SeccompUnavailable(Exception):
    pass


def _instruction(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def filter_program(machine: str) -> bytes:
    """The filter's BPF program for ``machine`` (as ``platform.machine()`` names it)."""
    if machine not in SYSCALLS:
        raise SeccompUnavailable(f"no syscall table for {machine}")
    arch, numbers, second_abi_bit = SYSCALLS[machine]
    deny = SECCOMP_RET_ERRNO | errno.EPERM
    program = [
        _instruction(LD_W_ABS, OFFSET_ARCH),
        _instruction(JEQ_K, arch, jt=1, jf=0),
        _instruction(RET_K, deny),
        _instruction(LD_W_ABS, OFFSET_NR),
    ]
    if second_abi_bit:
        program += [_instruction(JSET_K, second_abi_bit, jt=0, jf=1), _instruction(RET_K, deny)]
    for name in DENIED:
        program += [_instruction(JEQ_K, numbers[name], jt=0, jf=1), _instruction(RET_K, deny)]
    program += [
        _instruction(JEQ_K, numbers["kill"], jt=1, jf=0),
        _instruction(RET_K, SECCOMP_RET_ALLOW),
        _instruction(LD_W_ABS, OFFSET_ARG0_LOW),
        _instruction(JEQ_K, 0xFFFFFFFF, jt=0, jf=1),  # pid -1: every process it may signal
        _instruction(RET_K, deny),
        _instruction(RET_K, SECCOMP_RET_ALLOW),
    ]
    return b"".join(program)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


_libc: Any = None
_program: bytes | None = None


def prepare() -> None:
    """Load libc and build the program ahead (the fork server, once): each execution's
    ``install`` is then two system calls."""
    global _libc, _program
    _libc = ctypes.CDLL(None, use_errno=True)
    _program = filter_program(platform.machine())


def install() -> None:
    if _libc is None or _program is None:
        prepare()
    libc, program = _libc, _program
    assert program is not None
    buffer = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.addressof(buffer))
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise SeccompUnavailable(f"no_new_privs: errno {ctypes.get_errno()}")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        raise SeccompUnavailable(f"seccomp filter refused: errno {ctypes.get_errno()}")
