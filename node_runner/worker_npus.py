"""A worker's NPU host, kept by the worker: started with it, started again if it dies,
stopped (its NPUs removed) when the worker shuts down; and found by the worker's pool
processes, which inherit where it listens (node_runner.npu_host).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Any

from celery.signals import celeryd_after_setup, worker_shutdown

from node_runner.hosted_npus import HostedNpus
from node_runner.reaper import reap_worker_containers

log = logging.getLogger(__name__)

# A host that dies is started again after this long (it should not die at all).
RESTART_AFTER_S = 1.0
# Draining removes every NPU the host holds: one engine call each.
STOP_WAIT_S = 60.0


@dataclass
class HostKeeper:
    """Runs the NPU host of worker ``worker`` as a child of this (the worker's main)
    process, listening on ``socket_path``."""

    worker: str
    socket_path: str
    process: subprocess.Popen[bytes] | None = None
    _stopping: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._spawn()
        self._thread = threading.Thread(target=self._keep, name="npu-host-keeper", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            log.error("the NPU host of %s did not stop in %g s: killed", self.worker, STOP_WAIT_S)
            process.kill()
            process.wait(timeout=10)

    def _spawn(self) -> None:
        command = [sys.executable, "-m", "node_runner.npu_host", "--worker", self.worker,
                   "--socket", self.socket_path, "--parent", str(os.getpid())]  # fmt: skip
        self.process = subprocess.Popen(command, close_fds=True)

    def _keep(self) -> None:
        while True:
            process = self.process
            assert process is not None
            code = process.wait()
            if self._stopping.wait(RESTART_AFTER_S):
                return
            log.error("the NPU host of %s exited (code %s); starting it again", self.worker, code)
            self._spawn()


_keeper: HostKeeper | None = None
_npus: HostedNpus | None = None
_worker_name: str | None = None


def worker_name() -> str | None:
    """The name of the worker this process belongs to (None outside a worker)."""
    return _worker_name


def current_npus() -> HostedNpus | None:
    """The worker's NPU host, as this pool process reaches it (None outside a worker)."""
    return _npus


@celeryd_after_setup.connect
def _start_host(sender: str, **kwargs: Any) -> None:
    # In the worker's main process, before it forks its pool: the pool processes
    # inherit where the host listens.
    global _keeper, _npus, _worker_name
    _worker_name = sender
    directory = tempfile.mkdtemp(prefix="flowkit-npu-host-")  # only this user enters it
    _keeper = HostKeeper(sender, os.path.join(directory, "host.sock"))
    _keeper.start()
    _npus = HostedNpus(_keeper.socket_path)


@worker_shutdown.connect
def _stop_host(sender: Any = None, **kwargs: Any) -> None:
    # The main process, after its pool processes stopped: the host drains its NPUs;
    # whatever a host killed without draining left is removed here.
    if _keeper is None:
        return
    _keeper.stop()
    shutil.rmtree(os.path.dirname(_keeper.socket_path), ignore_errors=True)
    with contextlib.suppress(Exception):
        removed = reap_worker_containers(_keeper.worker, kept_only=True)
        if removed:
            log.info("removed %d NPUs the NPU host of %s left", len(removed), _keeper.worker)
