"""Hostile code looks for the processes around its NPU: other processes' memory,
environment and command lines, the runner and the worker, the Docker engine."""

from __future__ import annotations

import errno
import os
import uuid

from django.conf import settings

from tests.security.conftest import host_addresses, node_code, runtime

READ_EVERY_PROCESS = node_code(
    """
import os
value = {'pids': [], 'cmdlines': [], 'environ': [], 'refused': 0}
for name in os.listdir('/proc'):
    if not name.isdigit():
        continue
    value['pids'].append(int(name))
    for part, key in (('cmdline', 'cmdlines'), ('environ', 'environ')):
        try:
            with open(f'/proc/{name}/{part}', 'rb') as handle:
                value[key].append(handle.read().replace(b'\\0', b' ').decode('utf-8', 'replace'))
        except OSError:
            value['refused'] += 1
for pid in inputs_pids:
    try:
        with open(f'/proc/{pid}/environ', 'rb') as handle:
            value['environ'].append(handle.read().decode('utf-8', 'replace'))
    except OSError as exc:
        value.setdefault('host_pids', []).append(exc.errno)
"""
).replace("def main():\n", "def main():\n    inputs_pids = node.get_inputs()['pids']\n")


def test_other_processes_environment_and_command_lines_are_out_of_reach_through_proc(sandbox):
    pids = sandbox.worker_pids()
    # From the host: the worker's environment does hold what the node must not see.
    host_environ = open(f"/proc/{pids[0]}/environ", "rb").read().decode()  # noqa: SIM115
    assert settings.SECRET_KEY in host_environ

    seen = sandbox.attack(READ_EVERY_PROCESS, {"pids": pids})
    assert seen.state == "succeeded", seen.error
    found = seen.outputs["value"]
    everything = repr(found)
    # Only the NPU's own processes are visible: its fork server and the execution, a
    # fork of it (and what the node starts).
    assert all("flowkit.forkserver" in line or line == "" for line in found["cmdlines"]), found["cmdlines"]
    for foreign in ("celery", "daphne", "dockerd", "containerd", "postgres", "redis", "pytest"):
        assert foreign not in everything
    for secret in (settings.SECRET_KEY, settings.DATABASES["default"]["NAME"], "FLOWKIT_SECRET_KEYS"):
        assert secret not in everything
    # The worker's host pids do not exist in the NPU's pid namespace.
    assert found["host_pids"] == [errno.ENOENT] * len(pids)


SIGNAL_THE_WORKER = node_code(
    """
import os, signal
value = {}
for pid in node.get_inputs()['pids']:
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        try:
            os.kill(pid, sig)
            value[f'{pid}/{sig}'] = 'sent'
        except OSError as exc:
            value[f'{pid}/{sig}'] = exc.errno
"""
)


def test_signals_aimed_at_the_worker_reach_no_host_process(sandbox):
    pids = sandbox.worker_pids()
    signalled = sandbox.attack(SIGNAL_THE_WORKER, {"pids": pids})
    assert signalled.state == "succeeded", signalled.error
    sent = signalled.outputs["value"]
    # The worker's host pids do not exist in the NPU's pid namespace.
    assert {sent[f"{pid}/{sig}"] for pid in pids for sig in (19, 9)} == {errno.ESRCH}
    for pid in pids:
        os.kill(pid, 0)  # from the host: every worker process is still there


# The NPU's fork server is its pid 1; the node's code runs in a process forked from
# it, which reports the node's result. kill(-1) would reach every process the node
# may signal.
SIGNAL_THE_RUNTIME = node_code(
    """
import os, signal
refused = {}
for target in (-1, 1):
    try:
        os.kill(target, signal.SIGKILL)
    except OSError as exc:
        refused[target] = exc.errno
value = {'survived': 'the runtime survived', 'refused': refused}
"""
)


def test_signals_aimed_at_the_npu_runtime_end_at_most_that_npu_with_a_clear_error(sandbox):
    signalled = sandbox.attack(SIGNAL_THE_RUNTIME)
    if runtime() == "runc":
        # kill(-1) is refused by the execution's seccomp filter; the kernel ignores
        # SIGKILL sent to a pid namespace's init (the fork server) from inside it.
        assert signalled.state == "succeeded", signalled.error
        assert signalled.outputs == {
            "value": {"survived": "the runtime survived", "refused": {"-1": errno.EPERM}}
        }
    else:
        # gVisor gives its pid 1 no such protection: the node ends its own NPU (the
        # fork server), and the runner says so (the bystander, the worker and, in
        # dedicated mode, the NPU's replacement are checked by attack()).
        assert signalled.state == "failed"
        assert signalled.error["error_type"] == "NpuCrashed"
        assert "exit code 137" in signalled.error["message"]


def docker_api_attack(tag: str) -> str:
    return node_code(
        f"""
import json, socket
request_body = json.dumps({{'Image': 'flowkit/npu:latest', 'Labels': {{'flowkit.attack': '{tag}'}},
                           'HostConfig': {{'Privileged': True, 'Binds': ['/:/host']}}}}).encode()
request = (b'POST /containers/create HTTP/1.1\\r\\nHost: docker\\r\\nContent-Type: application/json\\r\\n'
           b'Content-Length: ' + str(len(request_body)).encode() + b'\\r\\n\\r\\n' + request_body)
value = {{}}
for path in ['/var/run/docker.sock', '/run/docker.sock', '/run/containerd/containerd.sock',
             '/var/run/docker/containerd/containerd.sock']:
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.connect(path)
        sock.sendall(request)
        value[path] = sock.recv(200).decode('latin-1')
    except OSError as exc:
        value[path] = exc.errno
    finally:
        sock.close()
for host in node.get_inputs()['hosts']:
    for port in (2375, 2376):
        sock = socket.socket()
        sock.settimeout(3)
        try:
            sock.connect((host, port))
            sock.sendall(request)
            value[f'{{host}}:{{port}}'] = sock.recv(200).decode('latin-1')
        except OSError as exc:
            value[f'{{host}}:{{port}}'] = exc.errno or str(exc)
        finally:
            sock.close()
"""
    )


def test_reaching_the_docker_engine_is_impossible_and_creates_no_container(sandbox, docker_engine):
    tag = uuid.uuid4().hex
    hosts = host_addresses(docker_engine)
    targets = [hosts.npu_gateway, *hosts.own]
    tried = sandbox.attack(docker_api_attack(tag), {"hosts": targets}, network=True)
    assert tried.state == "succeeded", tried.error
    answers = tried.outputs["value"]
    assert len(answers) == 4 + 2 * len(targets)
    # Every attempt failed before a byte reached an engine: no socket file, no route.
    assert all(isinstance(answer, int) for answer in answers.values()), answers
    assert {answer for path, answer in answers.items() if path.startswith("/")} == {errno.ENOENT}
    # The host refuses the NPU network (deploy/bootstrap/lib.sh ensure_npu_egress_policy).
    assert {answer for path, answer in answers.items() if ":" in path} == {errno.EHOSTUNREACH}
    # From the host: the engine never created the container the node asked for.
    assert docker_engine.containers.list(all=True, filters={"label": f"flowkit.attack={tag}"}) == []
