"""Hostile code tries to become more than an unprivileged process in its NPU:
mounts, new namespaces, setuid binaries, root-owned files."""

from __future__ import annotations

import errno
import hashlib
import io
import tarfile

from tests.security.conftest import node_code, runtime

MOUNT = node_code(
    """
import ctypes, os, subprocess
libc = ctypes.CDLL(None, use_errno=True)
os.makedirs('/tmp/m', exist_ok=True)
before = open('/proc/self/mountinfo').read()
value = {}
for source, target, fstype in [(b'none', b'/tmp/m', b'tmpfs'), (b'proc', b'/tmp/m', b'proc'),
                               (b'/', b'/tmp/m', b'none')]:
    flags = 4096 if fstype == b'none' else 0  # MS_BIND for the bind mount of /
    result = libc.mount(source, target, fstype, flags, None)
    value[fstype.decode()] = 0 if result == 0 else ctypes.get_errno()
# Remounting the read-only root filesystem read-write.
result = libc.mount(None, b'/', None, 32 | 1 << 5, None)  # MS_REMOUNT
value['remount'] = 0 if result == 0 else ctypes.get_errno()
try:
    value['mount_binary'] = subprocess.run(['mount', '-t', 'tmpfs', 'none', '/tmp/m'],
                                           capture_output=True).returncode
except OSError as exc:
    value['mount_binary'] = exc.errno
value['unchanged'] = open('/proc/self/mountinfo').read() == before
"""
)


def test_mounting_anything_is_refused(sandbox):
    tried = sandbox.attack(MOUNT)
    assert tried.state == "succeeded", tried.error
    result = tried.outputs["value"]
    assert {result[kind] for kind in ("tmpfs", "proc", "none", "remount")} == {errno.EPERM}
    assert result["mount_binary"] != 0
    assert result["unchanged"] is True


UNSHARE = node_code(
    """
import ctypes, json, os
libc = ctypes.CDLL(None, use_errno=True)
CLONE = {'user': 0x10000000, 'mount': 0x00020000, 'net': 0x40000000, 'pid': 0x20000000,
         'uts': 0x04000000, 'ipc': 0x08000000, 'cgroup': 0x02000000}
def attempt(result):
    return 0 if result == 0 else ctypes.get_errno()
# In a single-threaded child: a user namespace cannot be entered by a threaded process.
read_end, write_end = os.pipe()
if os.fork() == 0:
    found = {'unshare': {name: attempt(libc.unshare(flag)) for name, flag in CLONE.items()}}
    # Whatever the new namespaces granted, try to use it on the NPU's own files.
    found['mount_over_sdk'] = attempt(libc.mount(b'none', b'/opt/flowkit', b'tmpfs', 0, None))
    found['remount_root_rw'] = attempt(libc.mount(None, b'/', None, 32, None))  # MS_REMOUNT
    found['writes'] = {}
    for path in ['/etc/passwd', '/opt/flowkit/flowkit/runtime.py']:
        try:
            with open(path, 'a') as handle:
                handle.write('pwned')
            found['writes'][path] = 'written'
        except OSError as exc:
            found['writes'][path] = exc.errno
    os.write(write_end, json.dumps(found).encode())
    os._exit(0)
os.close(write_end)
value = json.loads(os.read(read_end, 65536))
value['uid'] = os.getuid()
"""
)


def test_unsharing_namespaces_gains_nothing(sandbox):
    tried = sandbox.attack(UNSHARE)
    assert tried.state == "succeeded", tried.error
    result = tried.outputs["value"]
    if runtime() == "runc":
        # Docker's seccomp profile refuses unshare without CAP_SYS_ADMIN.
        assert set(result["unshare"].values()) == {errno.EPERM}, result["unshare"]
        assert result["mount_over_sdk"] == errno.EPERM
    else:
        # gVisor implements namespaces inside its own kernel and grants all seven
        # (measured); what matters is that they change nothing: checked by the effects.
        assert result["mount_over_sdk"] in (errno.EPERM, errno.EACCES), result
    assert result["remount_root_rw"] in (errno.EPERM, errno.EACCES), result
    assert result["uid"] != 0
    assert set(result["writes"].values()) <= {errno.EROFS, errno.EACCES}, result["writes"]


SETUID = node_code(
    """
import os, stat
value = {'setuid_files': [], 'calls': {}}
for top in ['/bin', '/sbin', '/usr', '/lib', '/etc', '/opt', '/var']:
    for root, dirs, files in os.walk(top):
        for name in files:
            path = os.path.join(root, name)
            try:
                mode = os.lstat(path).st_mode
            except OSError:
                continue
            if stat.S_ISREG(mode) and mode & (stat.S_ISUID | stat.S_ISGID):
                value['setuid_files'].append(path)
for name, call in [('setuid', lambda: os.setuid(0)), ('setgid', lambda: os.setgid(0)),
                   ('setreuid', lambda: os.setreuid(0, 0)), ('setgroups', lambda: os.setgroups([0]))]:
    try:
        call()
        value['calls'][name] = 0
    except OSError as exc:
        value['calls'][name] = exc.errno
open('/tmp/own', 'w').close()
for name, call in [('chown_root', lambda: os.chown('/tmp/own', 0, 0)),
                   ('chmod_setuid', lambda: os.chmod('/tmp/own', 0o4755))]:
    try:
        call()
        value['calls'][name] = 0
    except OSError as exc:
        value['calls'][name] = exc.errno
value['setuid_bit_kept'] = bool(os.stat('/tmp/own').st_mode & stat.S_ISUID)
import subprocess
# In its own session: su signals its process group when it gives up.
value['su'] = subprocess.run(['su', '-c', 'id -u'], capture_output=True, input=b'\\n',
                             start_new_session=True).returncode
value['uid'] = os.getuid()
"""
)


def test_no_setuid_binary_exists_and_becoming_root_is_refused(sandbox):
    tried = sandbox.attack(SETUID)
    assert tried.state == "succeeded", tried.error
    result = tried.outputs["value"]
    assert result["setuid_files"] == []
    calls = result["calls"]
    assert {calls[name] for name in ("setuid", "setgid", "setreuid", "setgroups", "chown_root")} == {
        errno.EPERM
    }
    # chmod u+s on one's own file is allowed, but /tmp is nosuid and no-new-privileges holds.
    assert result["su"] != 0
    assert result["uid"] != 0


READ_RUNTIME = node_code(
    "import hashlib\nvalue = hashlib.sha256(open('/opt/flowkit/flowkit/runtime.py', 'rb').read()).hexdigest()"
)
TAMPER = node_code(
    """
import os
value = {}
for path in ['/opt/flowkit/flowkit/runtime.py', '/opt/flowkit/flowkit/pwned.py', '/etc/passwd',
             '/usr/bin/python3', '/root/x', '/x']:
    try:
        with open(path, 'ab') as handle:
            handle.write(b'\\nimport os; os.system(\"id\")\\n')
        value[path] = 'written'
    except OSError as exc:
        value[path] = exc.errno
SDK = '/opt/flowkit/flowkit'
for name, call in [('rename', lambda: os.rename(f'{SDK}/log.py', f'{SDK}/log2.py')),
                   ('unlink', lambda: os.unlink('/opt/flowkit/flowkit/node.py')),
                   ('mkdir', lambda: os.mkdir('/var/pwned'))]:
    try:
        call()
        value[name] = 'done'
    except OSError as exc:
        value[name] = exc.errno
"""
)


def image_file_sha256(engine, path: str) -> str:
    """The file as the NPU image holds it, read by the host from a container that never starts."""
    from django.conf import settings

    container = engine.containers.create(settings.FLOWKIT_NPU_IMAGE, entrypoint=["true"])
    try:
        stream, _ = container.get_archive(path)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
            member = archive.extractfile(archive.getmembers()[0])
            assert member is not None
            return hashlib.sha256(member.read()).hexdigest()
    finally:
        container.remove(force=True)


def test_writing_to_the_root_filesystem_fails_and_the_next_npu_gets_a_pristine_runtime(
    sandbox, docker_engine
):
    tampered = sandbox.attack(TAMPER)
    assert tampered.state == "succeeded", tampered.error
    assert set(tampered.outputs["value"].values()) <= {errno.EROFS, errno.EACCES}, tampered.outputs
    # Checked against the image from the host: the next NPU (dedicated: the node's
    # next execution, in the very NPU the attack ran in) runs the runtime unchanged.
    expected = image_file_sha256(docker_engine, "/opt/flowkit/flowkit/runtime.py")
    after = sandbox.run_node(READ_RUNTIME)
    assert after.outputs == {"value": expected}
    if sandbox.isolation == "dedicated":
        assert after.container_id == tampered.container_id
