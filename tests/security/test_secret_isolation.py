"""Hostile code tries to get secrets that are not its own: those of another node,
and those living in another run's NPU at the same moment. Only the secrets a node's
own code references ever enter its NPU."""

from __future__ import annotations

import hashlib
import time

from secret_manager.actions import do_set_secret
from secret_manager.models import SecretAuditEvent
from tests.integration.conftest import wait_for_npu
from tests.security.conftest import host_addresses, node_code, nodes_of, start_one_node_run, wait_for_run

MINE = "mine-3f1c8e-value-the-node-may-use"
THEIRS = "theirs-9a7b2d-value-of-another-node"

# Everything the NPU's Python process holds in memory as text, to find any secret.
SCAN_MEMORY = """
import gc, os, sys
mine = "<<<secret::SEC_MINE>>>"
strings = set()
for obj in gc.get_objects():
    for item in (obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else ()):
        if isinstance(item, str) and 12 <= len(item) <= 200:
            strings.add(item)
frame = sys._getframe()
while frame is not None:
    for item in list(frame.f_locals.values()) + list(frame.f_code.co_consts):
        if isinstance(item, str) and 12 <= len(item) <= 200:
            strings.add(item)
    frame = frame.f_back
for name, module in list(sys.modules.items()):
    for item in vars(module).values():
        if isinstance(item, str) and 12 <= len(item) <= 200:
            strings.add(item)
# Its environment as the process holds it, and as the kernel shows it where it may: a
# fork of the NPU's fork server is non-dumpable, so its own /proc files are root's.
environment = ' '.join(f'{key}={item}' for key, item in os.environ.items())
try:
    environment += open('/proc/self/environ', 'rb').read().replace(b'\\0', b' ').decode('utf-8', 'replace')
except OSError as exc:
    environment += f' /proc/self/environ: errno {exc.errno}'
value = {'strings': sorted(strings), 'environ': environment, 'holds_mine': mine in strings}
"""


def set_secrets() -> None:
    do_set_secret("SEC_MINE", MINE, user=None)
    do_set_secret("SEC_THEIRS", THEIRS, user=None)


def resolved_names(run_ref: str) -> set[str]:
    events = SecretAuditEvent.objects.filter(action="resolved", run_id=run_ref)
    return {name for event in events for name in event.names}


def test_a_node_gets_only_the_secrets_its_own_code_references(sandbox):
    set_secrets()
    scanned = sandbox.attack(node_code(SCAN_MEMORY))
    assert scanned.state == "succeeded", scanned.error
    stored = repr(scanned.outputs)
    assert scanned.outputs["value"]["holds_mine"] is True
    # Its own secret was there to find (and is masked in what was stored); the other
    # node's secret never entered the NPU.
    assert "***" in stored
    assert MINE not in stored
    assert THEIRS not in stored
    assert resolved_names(scanned.run_ref) == {"SEC_MINE"}


def test_a_reference_assembled_so_the_runner_cannot_see_it_is_never_filled_in(sandbox):
    set_secrets()
    # Adjacent literals become one string constant for the NPU's parser, but the
    # runner, reading the source, finds no reference: nothing is sent, nothing filled.
    sneaky = node_code('value = "<<<secret::" "SEC_THEIRS>>>"')
    tried = sandbox.attack(sneaky)
    assert tried.state == "failed"
    assert tried.error["error_type"] == "SecretNotDefined"
    assert THEIRS not in repr([tried.error, tried.outputs, tried.logs])
    assert resolved_names(tried.run_ref) == set()
    # Built at run time, a reference is only text.
    dynamic = sandbox.run_node(node_code("name = 'SEC_' + 'THEIRS'\nvalue = f'<<<secret::{name}>>>'"))
    assert dynamic.outputs == {"value": "<<<secret::SEC_THEIRS>>>"}


NEIGHBOUR = node_code(
    """
import hashlib, time
theirs = "<<<secret::SEC_THEIRS>>>"
time.sleep(4)
value = hashlib.sha256(theirs.encode()).hexdigest()
"""
)
HUNT = node_code(
    SCAN_MEMORY
    + """
import socket
value['proc'] = {}
for name in os.listdir('/proc'):
    if name.isdigit() and name != str(os.getpid()):
        for part in ('environ', 'cmdline', 'maps'):
            try:
                raw = open(f'/proc/{name}/{part}', 'rb').read(4096)
                value['proc'][f'{name}/{part}'] = raw.replace(b'\\0', b' ').decode('latin-1')
            except OSError as exc:
                value['proc'][f'{name}/{part}'] = exc.errno
value['neighbours'] = {}
gateway = node.get_inputs()['gateway']
prefix = gateway.rsplit('.', 1)[0]
for last in range(2, 12):
    sock = socket.socket()
    sock.settimeout(0.3)
    try:
        sock.connect((f'{prefix}.{last}', 80))
        value['neighbours'][last] = 'connected'
    except OSError as exc:
        value['neighbours'][last] = exc.errno or 'timeout'
    finally:
        sock.close()
"""
)


def test_another_run_s_secret_cannot_be_taken_from_its_live_npu(sandbox, docker_engine):
    set_secrets()
    neighbour = start_one_node_run(NEIGHBOUR, f"neighbour {time.monotonic_ns()}", sandbox.isolation)
    # The attack starts while the neighbour's NPU holds its secret.
    wait_for_npu(docker_engine, neighbour)
    gateway = host_addresses(docker_engine).npu_gateway
    hunt = sandbox.finish(sandbox.start(HUNT, {"gateway": gateway}, network=True), wait_s=60)
    assert hunt.state == "succeeded", hunt.error
    assert THEIRS not in repr(hunt.outputs)
    assert resolved_names(hunt.run_ref) == {"SEC_MINE"}
    # The neighbour did hold it, and finished unharmed.
    neighbour = wait_for_run(neighbour)
    assert neighbour.state == "succeeded"
    assert nodes_of(neighbour)["n"].outputs == {"value": hashlib.sha256(THEIRS.encode()).hexdigest()}
    sandbox.assert_execution_left_nothing(hunt)
    sandbox.assert_worker_still_serves()
