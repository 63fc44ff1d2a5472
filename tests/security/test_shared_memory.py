"""Hostile code fills /dev/shm, the NPU's second writable place (beside /tmp): a tmpfs
of its own, capped at node_runner/container_spec.py SHM_BYTES, where multiprocessing
still finds what it needs (its semaphores live there)."""

from __future__ import annotations

import errno

from node_runner.container_spec import SHM_BYTES
from tests.security.conftest import node_code

FILL_SHM = node_code(
    """
import os
written, stopped = 0, None
chunk = b'x' * (1024 * 1024)
with open('/dev/shm/fill', 'wb', buffering=0) as handle:
    while written < 512 * 1024 * 1024:
        try:
            written += handle.write(chunk)
        except OSError as exc:
            stopped = exc.errno
            break
mounts = [line.split() for line in open('/proc/mounts')]
options = next(fields[3] for fields in mounts if fields[1] == '/dev/shm').split(',')
os.unlink('/dev/shm/fill')
value = {'written': written, 'stopped': stopped, 'noexec': 'noexec' in options}
"""
)
MULTIPROCESSING = node_code(
    """
import multiprocessing

def square(queue, lock, number):
    with lock:
        queue.put(number * number)

queue, lock = multiprocessing.Queue(), multiprocessing.Lock()
workers = [multiprocessing.Process(target=square, args=(queue, lock, n)) for n in range(3)]
for worker in workers:
    worker.start()
value = sorted(queue.get(timeout=20) for _ in workers)
for worker in workers:
    worker.join()
"""
)


def test_filling_dev_shm_stops_at_its_size_limit(sandbox):
    tried = sandbox.attack(FILL_SHM)
    assert tried.state == "succeeded", tried.error
    filled = tried.outputs["value"]
    assert filled["stopped"] == errno.ENOSPC, filled
    assert 0 < filled["written"] <= SHM_BYTES, filled
    assert filled["noexec"], filled


def test_multiprocessing_still_works_beside_the_limit(sandbox):
    done = sandbox.run_node(MULTIPROCESSING)
    assert done.state == "succeeded", done.error
    assert done.outputs["value"] == [0, 1, 4]
