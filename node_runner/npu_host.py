"""The NPU host: the one process of a worker that holds its NPUs.

Celery's prefork pool runs each node in one of several processes, which share
nothing. Were each to keep its own dedicated NPUs, a node run by two of them would
get two NPUs, and its ``concurrency`` would never be more than one per process. So
the worker's main process starts this host (node_runner.worker_npus), and it alone
holds the NPU attach streams, the registry of dedicated NPUs and the warm pool; the
pool processes lease NPUs from it over a Unix socket in a directory only the worker's
user can enter (node_runner.hosted_npus, node_runner.host_wire), one connection per
execution, each served by a thread here.

A pool process that goes away in the middle of an execution (killed, or its worker
child recycled) closes its connection: its execution is killed, as a cancel would.
The host ends when its worker does (it watches its parent), removing its NPUs; a
host that crashes is started again by the worker, and the new one removes what the
old one left.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import queue
import signal
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import docker
from django.db import connections

from control_unit.limits import LimitError, NodeLimits
from node_runner.dedicated_npus import DedicatedNpus, open_registry
from node_runner.host_wire import (
    GONE,
    ITEM_KINDS,
    KILL,
    LEASE,
    LEASED,
    PAUSE,
    REFUSED,
    RELEASE,
    RESUME,
    RUN,
    HostLink,
    HostLinkClosed,
    parse_run_body,
)
from node_runner.npu_connection import NpuGone
from node_runner.npu_execution import Execution, NpuLease, NpuSource, SingleUseNpus, stop_execution
from node_runner.ready_npu import NpuUnavailable
from node_runner.warm_pool import WarmPool, open_pool

log = logging.getLogger(__name__)

# What ends an execution's relay: the server's report of its end, or the NPU's.
_LAST_EVENTS = ("exited", "refused")


@dataclass
class WorkerNpus:
    """Everything the host holds: the warm pool and the dedicated NPUs."""

    pool: WarmPool | None
    registry: DedicatedNpus

    @classmethod
    def open(cls, worker: str) -> WorkerNpus:
        pool = open_pool(worker)
        return cls(pool, open_registry(worker, pool))

    def source(self, request: dict[str, Any]) -> NpuSource:
        if request.get("mode") == "dedicated":
            return self.registry.for_node(str(request["pipeline_id"]), str(request["node_id"]))
        return SingleUseNpus(self.pool)

    def drain(self) -> None:
        self.registry.drain()
        if self.pool is not None:
            self.pool.drain()


class NpuHost:
    """Serves leases on a Unix socket at ``path`` until ``stop`` is set."""

    def __init__(self, npus: WorkerNpus, path: str) -> None:
        self.npus = npus
        self.path = path
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a crashed host's
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(path)
        os.chmod(path, 0o600)
        self._listener.listen(128)
        self._listener.settimeout(0.5)

    def serve(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            sock.settimeout(None)
            threading.Thread(target=self._serve_one, args=(sock,), name="npu-host-lease", daemon=True).start()
        self._listener.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def _serve_one(self, sock: socket.socket) -> None:
        link = HostLink(sock)
        try:
            kind, body = link.receive()
            if kind != LEASE:
                raise HostLinkClosed(f"a connection opened with {kind!r}, not a lease")
            request = json.loads(body)
            try:
                limits = NodeLimits.from_overrides(request["limits"])
                lease = self.npus.source(request).lease(limits, dict(request.get("labels") or {}))
            except (LimitError, KeyError, TypeError) as exc:
                link.send_json(REFUSED, {"message": f"a malformed lease request: {exc}"})
                return
            except (NpuUnavailable, docker.errors.DockerException, OSError) as exc:
                log.warning("could not lease an NPU: %s", exc)
                link.send_json(REFUSED, {"message": str(exc)})
                return
            Relay(link, lease).serve()
        except (HostLinkClosed, ValueError, OSError) as exc:
            log.info("a lease connection ended: %s", exc)
        finally:
            link.close()
            # The registry may have written its book from this thread: its database
            # connection ends with it, or every lease would leave one open.
            connections.close_all()


class Relay:
    """One leased NPU and the pool process driving one execution in it."""

    def __init__(self, link: HostLink, lease: NpuLease) -> None:
        self.link = link
        self.lease = lease
        self.execution: Execution | None = None
        self._done = threading.Event()

    def serve(self) -> None:
        healthy = False
        try:
            self.link.send_json(LEASED, {"id": self.lease.connection.id})
            healthy = self._follow()
        except (HostLinkClosed, OSError) as exc:
            # The pool process went away with its execution maybe running: stop it, as
            # a cancel would, and keep the NPU when that worked.
            log.info("the process driving an execution in NPU %s left: %s", self.lease.connection.id[:12],
                     exc)  # fmt: skip
            healthy = self.execution is None or stop_execution(self.execution)
        finally:
            self._done.set()
            self.lease.release(healthy=healthy and self.lease.connection.alive)

    def _follow(self) -> bool:
        """Apply the pool process's requests until it releases the NPU; whether it
        found the NPU healthy."""
        controls = {PAUSE: "pause", RESUME: "resume", KILL: "kill"}
        while True:
            kind, body = self.link.receive()
            if kind == RUN and self.execution is None:
                job, memory_limit_bytes = parse_run_body(body)
                try:
                    self.execution = self.lease.connection.begin(job, memory_limit_bytes)
                except NpuGone as exc:
                    self.link.send(GONE, str(exc).encode())
                    continue
                threading.Thread(target=self._forward, name="npu-host-relay", daemon=True).start()
            elif kind in controls and self.execution is not None:
                with contextlib.suppress(NpuGone):  # the NPU's end reaches the process anyway
                    getattr(self.execution, controls[kind])()
            elif kind == RELEASE:
                return json.loads(body).get("healthy") is True
            else:
                raise HostLinkClosed(f"an unexpected message {kind!r}")

    def _forward(self) -> None:
        execution = self.execution
        assert execution is not None
        while not self._done.is_set():
            try:
                item, value = execution.items.get(timeout=0.5)
            except queue.Empty:
                continue
            body = value if item == "data" else (json.dumps(value) if item == "server" else value).encode()
            try:
                self.link.send(ITEM_KINDS[item], body)
            except OSError:
                return
            if item == "gone" or (item == "server" and value.get("type") in _LAST_EVENTS):
                return


def _watch_parent(parent: int, stop: threading.Event) -> None:
    """End with the worker, however it ended (a SIGKILL included)."""
    while not stop.wait(1.0):
        if os.getppid() != parent:
            log.warning("the worker (process %d) is gone: the NPU host ends", parent)
            stop.set()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A FlowKit worker's NPU host")
    parser.add_argument("--worker", required=True)
    parser.add_argument("--socket", required=True)
    parser.add_argument("--parent", type=int, required=True)
    args = parser.parse_args(argv)

    import django

    django.setup()
    from node_runner.reaper import reap_worker_containers

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s: %(levelname)s/npu-host] %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    started = time.time()
    # A previous host of this worker that crashed left its pooled and dedicated NPUs.
    with contextlib.suppress(Exception):
        left = reap_worker_containers(args.worker, created_before=started, kept_only=True)
        if left:
            log.warning("removed %d NPUs a previous NPU host of %s left", len(left), args.worker)
    npus = WorkerNpus.open(args.worker)
    host = NpuHost(npus, args.socket)
    parent = threading.Thread(target=_watch_parent, args=(args.parent, stop), name="npu-parent", daemon=True)
    parent.start()
    log.info("the NPU host of %s listens (process %d)", args.worker, os.getpid())
    try:
        host.serve(stop)
    finally:
        npus.drain()
        log.info("the NPU host of %s stopped", args.worker)


if __name__ == "__main__":
    main()
