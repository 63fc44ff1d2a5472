"""The sandbox attack suite's shared parts.

Every case sends hostile node code through the real path (a Celery worker process,
the Docker engine, a fresh NPU) and checks, from the host wherever it can, that
what the code tried did not happen. Each case also starts a *bystander*, an honest
pipeline run that works beside the attack, and checks afterwards that it finished
with the right output and that the worker still serves an ordinary node.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import pytest
from django.conf import settings

from control_unit.models import NodeTestRun
from tests.integration.conftest import (  # noqa: F401 - fixtures shared with the integration tests
    WorkerProcess,
    docker_engine,
    node_code,
    nodes_of,
    run_node,
    single_node_run,
    wait_for_run,
)

REPO = Path(__file__).resolve().parents[2]
ADD = (REPO / "examples/nodes/add.py").read_text()
BYSTANDER_SECONDS = 1.5
BYSTANDER_VALUE = hashlib.sha256(b"the bystander's honest work").hexdigest()
BYSTANDER = node_code(
    f"import hashlib, time\ntime.sleep({BYSTANDER_SECONDS})\n"
    'value = hashlib.sha256(b"the bystander\'s honest work").hexdigest()'
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/security/" in str(item.fspath):
            item.add_marker(pytest.mark.security)
            item.add_marker(pytest.mark.integration)


def runtime() -> str:
    """The NPU runtime this suite runs under (FLOWKIT_NPU_RUNTIME: runc or runsc)."""
    return str(settings.FLOWKIT_NPU_RUNTIME)


def processes_in_container(container_id: str) -> list[int]:
    """Host pids whose cgroup is the container's: any survivor of a removed NPU."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if container_id in (entry / "cgroup").read_text():
                found.append(int(entry.name))
        except OSError:
            continue  # the process ended while we looked
    return found


@dataclass
class Sandbox:
    """Runs hostile code and checks that its surroundings were not hurt."""

    run_node: Callable[..., NodeTestRun]
    worker: WorkerProcess
    engine: docker.DockerClient
    bystanders: list[Any] = field(default_factory=list)

    def start_bystander(self) -> Any:
        run = single_node_run(BYSTANDER, name=f"bystander {time.monotonic_ns()}")
        self.bystanders.append(run)
        return run

    def attack(
        self, code: str, inputs: dict[str, Any] | None = None, wait_s: float = 120, **limits: Any
    ) -> NodeTestRun:
        """Run ``code`` in an NPU beside a bystander; check the surroundings; return
        the finished node test run for the case's own assertions."""
        bystander = self.start_bystander()
        test_run = self.run_node(code, inputs, wait_s=wait_s, **limits)
        self.assert_npu_is_gone(test_run)
        self.assert_bystander_unaffected(bystander)
        self.assert_worker_still_serves()
        return test_run

    def assert_npu_is_gone(self, test_run: NodeTestRun) -> None:
        left = self.engine.containers.list(
            all=True, sparse=True, filters={"label": f"flowkit.test_run={test_run.id}"}
        )
        assert left == [], f"the NPU of {test_run.id} was not removed"
        if test_run.container_id:
            assert processes_in_container(test_run.container_id) == [], "a process of the NPU outlived it"

    def assert_bystander_unaffected(self, run: Any) -> None:
        run = wait_for_run(run, wait_s=120)
        node = nodes_of(run)["n"]
        assert run.state == "succeeded", f"the bystander run {run.state}: {node.error}"
        assert node.outputs == {"value": BYSTANDER_VALUE}

    def assert_worker_still_serves(self) -> None:
        assert self.worker.process.poll() is None, f"the worker died:\n{self.worker.log()[-3000:]}"
        honest = self.run_node(ADD, {"a": 2, "b": 3})
        assert honest.state == "succeeded", honest.error
        assert honest.outputs == {"out": 5}


@pytest.fixture
def sandbox(run_node: Any, celery_worker: WorkerProcess, docker_engine: docker.DockerClient) -> Sandbox:  # noqa: F811
    return Sandbox(run_node=run_node, worker=celery_worker, engine=docker_engine)


class HostListener:
    """A TCP listener on every host address: a connection that reaches it is a
    connection from an NPU that reached the host."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("0.0.0.0", 0))  # noqa: S104 - the point: listen where an NPU could reach
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.peers: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.peers.append(peer[0])
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


@pytest.fixture
def host_listener() -> Iterator[HostListener]:
    listener = HostListener()
    yield listener
    listener.close()


@dataclass(frozen=True)
class HostAddresses:
    npu_gateway: str  # the NPU bridge's address on this host
    own: list[str]  # this host's other addresses (LAN, other bridges)
    default_gateway: str | None  # the host's router


def host_addresses(engine: docker.DockerClient) -> HostAddresses:
    from node_runner.npu_execution import ensure_npu_network

    network = ensure_npu_network(engine)
    network.reload()
    gateway = str(network.attrs["IPAM"]["Config"][0]["Gateway"])
    listed = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True, check=True
    ).stdout
    own = [line.split()[3].split("/")[0] for line in listed.splitlines()]
    route = subprocess.run(
        ["ip", "-4", "route", "show", "default"], capture_output=True, text=True, check=True
    )
    words = route.stdout.split()
    default_gateway = words[words.index("via") + 1] if "via" in words else None
    return HostAddresses(gateway, [a for a in own if a != gateway], default_gateway)


def egress_policy_installed() -> bool:
    listed = subprocess.run(["iptables", "-S", "INPUT"], capture_output=True, text=True, check=False).stdout
    return "FLOWKIT-NPU-INPUT" in listed


def worker_pids(worker: WorkerProcess) -> list[int]:
    """The Celery worker's main process and its pool children, as the host sees them."""
    children = subprocess.run(
        ["pgrep", "-P", str(worker.process.pid)], capture_output=True, text=True, check=False
    ).stdout.split()
    return [worker.process.pid, *map(int, children)]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def marker_path(tag: str) -> Path:
    """A host path that hostile code would create if it ever ran outside an NPU."""
    return Path("/tmp") / f"flowkit-security-marker-{tag}-{os.getpid()}-{time.monotonic_ns()}"
