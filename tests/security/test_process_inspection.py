"""Hostile code tries to trace or read the memory of another process of its NPU:
``ptrace`` (``PTRACE_TRACEME``, attaching to a sibling) and ``process_vm_readv``.

Two layers refuse them, and each is attacked on its own: the filter every execution
installs before node code runs (npu_image/flowkit/_seccomp.py), through the real path;
and the NPU's seccomp profile (node_runner/seccomp/npu.json), which covers every
process of the container, the fork server included, from a process that never
installed the execution's filter. The sibling is a program the attacker starts
(``exec`` makes a process dumpable again), so nothing but seccomp stands in the way:
without it, the kernel allows a process to trace and read its own child.
"""

from __future__ import annotations

import errno
import json

import docker
import pytest
from django.conf import settings

from control_unit.limits import NodeLimits
from node_runner.container_spec import npu_container_options
from tests.security.conftest import node_code, runtime

# Sets ``value``: what each attempt gave, 'allowed' or the errno's name.
INSPECT = """
import ctypes, errno, os, subprocess, time

libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
PTRACE_TRACEME, PTRACE_ATTACH, PTRACE_DETACH, PTRACE_SEIZE = 0, 16, 17, 0x4206

class Iovec(ctypes.Structure):
    _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]

def outcome(result):
    return 'allowed' if result >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))

def traceme():
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        ctypes.set_errno(0)
        os.write(write, outcome(libc.ptrace(PTRACE_TRACEME, 0, None, None)).encode())
        os._exit(0)
    os.close(write)
    answer = os.read(read, 64).decode()
    os.waitpid(child, 0)
    return answer

value = {'traceme': traceme()}
sibling = subprocess.Popen(['sleep', '30'])
time.sleep(0.2)
try:
    for name, request in (('attach', PTRACE_ATTACH), ('seize', PTRACE_SEIZE)):
        ctypes.set_errno(0)
        value[name] = outcome(libc.ptrace(request, sibling.pid, None, None))
        if value[name] == 'allowed':
            libc.ptrace(PTRACE_DETACH, sibling.pid, None, None)
    buffer = ctypes.create_string_buffer(8)
    local = Iovec(ctypes.addressof(buffer), 8)
    remote = Iovec(0x400000, 8)  # any address: the call is refused before it is read
    ctypes.set_errno(0)
    result = libc.process_vm_readv(sibling.pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    value['process_vm_readv'] = outcome(result) if ctypes.get_errno() != errno.EFAULT else 'allowed'
    ctypes.set_errno(0)
    result = libc.process_vm_writev(sibling.pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    value['process_vm_writev'] = outcome(result) if ctypes.get_errno() != errno.EFAULT else 'allowed'
finally:
    sibling.kill()
    sibling.wait()
"""
ATTEMPTS = {"traceme", "attach", "seize", "process_vm_readv", "process_vm_writev"}
REFUSED = {name: errno.errorcode[errno.EPERM] for name in ATTEMPTS}


def test_node_code_can_neither_trace_nor_read_another_process(sandbox):
    tried = sandbox.attack(node_code(INSPECT))
    assert tried.state == "succeeded", tried.error
    assert tried.outputs["value"] == REFUSED


@pytest.fixture
def engine():
    client = docker.from_env()
    yield client
    for container in client.containers.list(all=True, filters={"label": "flowkit.security.outer-layer"}):
        container.remove(force=True)


def test_the_npu_profile_refuses_them_to_a_process_without_the_execution_s_filter(engine):
    """At the fork server's level: a process of an NPU, created with every option the
    worker gives one, that runs the same attempts instead of the fork server."""
    if runtime() == "runsc":
        pytest.skip(
            "runsc ignores the container's seccomp profile (registered without --oci-seccomp, "
            "which refuses select(2) to the fork server in this release): each execution's own "
            "filter is the layer there (test_node_code_can_neither_trace_nor_read_another_process)"
        )
    options = npu_container_options(
        image=settings.FLOWKIT_NPU_IMAGE, limits=NodeLimits.defaults(),
        labels={"flowkit.security.outer-layer": "1"}, runtime=runtime(), network_name="none",
    )  # fmt: skip
    script = INSPECT + "\nimport json, sys\nsys.stdout.write(json.dumps(value))\n"
    options.update(
        entrypoint=["python3", "-c", script], stdin_open=False, detach=True,
        # The only option changed beside the command: the probe's answer is read from its log.
        log_config=docker.types.LogConfig(type=docker.types.LogConfig.types.JSON),
    )  # fmt: skip
    container = engine.containers.create(**options)
    container.start()
    assert container.wait(timeout=60)["StatusCode"] == 0, container.logs(stderr=True).decode()
    assert json.loads(container.logs(stdout=True, stderr=False)) == REFUSED
