"""From inside a node, running in a real NPU through a real worker: the sandbox holds."""

from __future__ import annotations

import errno

import pytest

from tests.integration.conftest import node_code

IMAGE_ENVIRONMENT = {
    "PATH", "HOSTNAME", "HOME", "TMPDIR", "LANG", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED",
}  # fmt: skip


def probe(run_node, body: str, **limits):
    test_run = run_node(node_code(body), **limits)
    assert test_run.state == "succeeded", test_run.error
    return test_run.outputs["value"]


def proc_status(run_node) -> dict[str, str]:
    return probe(
        run_node,
        "value = dict(line.split(':\\t', 1) for line in open('/proc/self/status').read().splitlines() "
        "if ':\\t' in line)",
    )


def test_node_has_no_effective_permitted_or_bounding_capabilities(run_node):
    status = proc_status(run_node)
    assert int(status["CapEff"], 16) == 0
    assert int(status["CapPrm"], 16) == 0
    assert int(status["CapBnd"], 16) == 0


def test_node_cannot_gain_privileges_and_runs_under_seccomp_filter(run_node):
    status = proc_status(run_node)
    assert status["NoNewPrivs"].strip() == "1"
    assert status["Seccomp"].strip() == "2"


def test_node_runs_as_a_non_root_user(run_node):
    uid, gid, groups = probe(run_node, "import os\nvalue = [os.getuid(), os.getgid(), os.getgroups()]")
    assert uid != 0
    assert gid != 0
    assert 0 not in groups


def test_writes_outside_tmp_fail_and_tmp_is_writable(run_node):
    results = probe(
        run_node,
        """
import os
value = {}
for path in ['/x', '/etc/x', '/opt/flowkit/x', '/usr/lib/x', '/var/x', '/tmp/ok']:
    try:
        with open(path, 'w') as handle:
            handle.write('x')
        value[path] = 'written'
    except OSError as exc:
        value[path] = exc.errno
""",
    )
    assert results.pop("/tmp/ok") == "written"
    assert len(results) == 5
    assert all(result in (errno.EROFS, errno.EACCES) for result in results.values()), results


def test_tmp_does_not_allow_executing_files(run_node):
    result = probe(
        run_node,
        """
import os, shutil, subprocess
shutil.copy('/bin/true', '/tmp/true')
os.chmod('/tmp/true', 0o755)
try:
    subprocess.run(['/tmp/true'], check=True)
    value = 'executed'
except PermissionError as exc:
    value = exc.errno
""",
    )
    assert result == errno.EACCES


CONNECT = """
import socket
value = {}
for host, port in [('127.0.0.1', 5432), ('127.0.0.1', 6379), ('192.0.2.1', 80)]:
    sock = socket.socket()
    sock.settimeout(3)
    try:
        sock.connect((host, port))
        value[f'{host}:{port}'] = 'connected'
    except OSError as exc:
        value[f'{host}:{port}'] = exc.errno
    finally:
        sock.close()
value['interfaces'] = [line.split(':')[0].strip() for line in open('/proc/net/dev').read().splitlines()[2:]]
"""


def test_node_without_network_access_reaches_neither_host_services_nor_outside(run_node):
    results = probe(run_node, CONNECT)
    # Inside its own network namespace 127.0.0.1 is the NPU itself: nothing listens there.
    assert results["127.0.0.1:5432"] == errno.ECONNREFUSED
    assert results["127.0.0.1:6379"] == errno.ECONNREFUSED
    # No route at all: the packet never leaves the namespace (192.0.2.0/24 is TEST-NET-1).
    assert results["192.0.2.1:80"] == errno.ENETUNREACH
    assert results["interfaces"] == ["lo"]


def test_node_environment_holds_nothing_of_the_worker(run_node, celery_worker):
    environment = probe(run_node, "import os\nvalue = dict(os.environ)")
    assert set(environment) <= IMAGE_ENVIRONMENT, set(environment) - IMAGE_ENVIRONMENT
    for name in ("SECRET_KEY", "DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE"):
        assert name not in environment
    from django.conf import settings

    assert not any(settings.SECRET_KEY in value for value in environment.values())


def test_node_sees_no_docker_socket_and_no_host_paths(run_node):
    mounts = probe(run_node, "value = open('/proc/self/mounts').read()")
    assert "docker.sock" not in mounts
    mount_points = {line.split()[1] for line in mounts.splitlines()}
    host_paths = ("/work", "/home", "/root", "/var/run", "/run", "/var/lib", "/usr/local")
    assert not [point for point in mount_points if point.startswith(host_paths)], mount_points
    exists = probe(
        run_node,
        "import os\nvalue = [os.path.exists(p) for p in ['/var/run/docker.sock', '/run/docker.sock']]",
    )
    assert exists == [False, False]


def test_file_size_and_open_file_limits_are_set(run_node):
    limits = probe(
        run_node,
        "import resource\n"
        "value = [resource.getrlimit(resource.RLIMIT_FSIZE), resource.getrlimit(resource.RLIMIT_NOFILE)]",
    )
    (fsize_soft, fsize_hard), (nofile_soft, nofile_hard) = limits
    assert 0 < fsize_soft == fsize_hard <= 256 * 1024 * 1024
    assert 0 < nofile_soft == nofile_hard <= 256


def test_image_holds_no_server_code(run_node):
    found = probe(
        run_node,
        """
import importlib.util, os
value = {
    'modules': [m for m in ['django', 'celery', 'docker', 'web_ui', 'control_unit', 'node_runner']
                if importlib.util.find_spec(m) is not None],
    'sdk': sorted(os.listdir('/opt/flowkit/flowkit')),
}
""",
    )
    assert found["modules"] == []
    assert {"node.py", "log.py", "runtime.py"} <= set(found["sdk"])


@pytest.mark.parametrize("memory_mb", [64])
def test_memory_bomb_is_killed_by_the_oom_killer_and_reported(run_node, memory_mb):
    test_run = run_node(node_code("value = bytearray(1024 * 1024 * 1024)"), memory_mb=memory_mb)
    assert test_run.state == "failed"
    assert test_run.error["error_type"] in ("OutOfMemory", "MemoryError")
    if test_run.error["error_type"] == "OutOfMemory":
        assert f"memory limit {memory_mb} MiB" in test_run.error["message"]
