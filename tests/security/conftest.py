"""The sandbox attack suite's shared parts.

Every case sends hostile node code through the real path (a Celery worker process,
the Docker engine, an NPU) and checks, from the host wherever it can, that what the
code tried did not happen. Each case also starts a *bystander*, an honest pipeline run
that works beside the attack, and checks afterwards that it finished with the right
output and that the worker still serves an ordinary node.

Every case runs in both isolation modes (the ``sandbox`` fixture, test ids
``[container]`` and ``[dedicated]``): as a node test run in a single-use container, and
as node ``n`` of a one-node pipeline in its dedicated NPU, which stays after the attack:
there, "the NPU is gone" becomes "nothing of the execution is left in it" and "the
worker still serves" becomes "the node's next execution, honest code, succeeds in it
(or in its replacement)". ``pytest_terminal_summary`` lists which, per case.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import pytest
from django.conf import settings
from django.test import override_settings

from control_unit.actions import do_start_node_test_run
from control_unit.models import NodeTestRun, Pipeline, Run
from control_unit.pipeline_actions import do_create_pipeline, do_save_version
from control_unit.run_actions import do_start_run
from tests.integration.conftest import (  # noqa: F401 - fixtures shared with the integration tests
    TERMINAL_RUN_STATES,
    WorkerProcess,
    docker_engine,
    no_broker,
    node_code,
    nodes_of,
    run_node,
    single_node_run,
    start_worker,
    stop_worker,
    wait_for_npu,
    wait_for_run,
)

REPO = Path(__file__).resolve().parents[2]
ADD = (REPO / "examples/nodes/add.py").read_text()
# dedicated: ADD, and the pid the execution ran as in its NPU.
HONEST = ADD.replace("import Node\n", "import Node\nimport os\n", 1).replace(
    'return [], {"out": inputs["a"] + inputs["b"]}',
    'return [], {"out": inputs["a"] + inputs["b"], "pid": os.getpid()}',
)
assert "os.getpid()" in HONEST, "examples/nodes/add.py changed: adapt HONEST"
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


ISOLATION_MODES = ("container", "dedicated")
# How long a replaced dedicated NPU may take to go (it is removed off the node's path).
NPU_REMOVAL_WAIT_S = 30


@dataclass(frozen=True)
class NpuProcess:
    pid: int  # as the NPU sees it
    child_of_server: bool
    command: str


def npu_processes(container: Any) -> dict[int, NpuProcess]:
    """The processes of a running NPU other than its fork server, seen from the host,
    by their pid in the NPU. runc: the host pids in the container's cgroup (the server
    is the container's own pid). runsc: gVisor's processes live inside its sandbox, where
    the host's /proc cannot see them; ``runsc ps`` asks the sandbox (the server is its
    pid 1)."""
    container.reload()
    if container.attrs["HostConfig"].get("Runtime") == "runsc":
        try:
            return _runsc_processes(container.id)
        except (subprocess.CalledProcessError, SandboxGone):
            # An NPU being replaced (removed off the node's path) leaves runsc nothing
            # to ask, or no sandbox process at all; one still running must answer.
            if container_exists(container.client, container.id) and _still_running(container):
                raise
            return {}
    server = int(container.attrs["State"]["Pid"])
    found = {}
    for pid in processes_in_container(container.id):
        if pid == server:
            continue
        try:
            lines = Path(f"/proc/{pid}/status").read_text().splitlines()
            status = dict(line.split(":", 1) for line in lines if ":" in line)
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # it ended while we looked
        in_npu = int(status["NSpid"].split()[-1])
        found[in_npu] = NpuProcess(in_npu, int(status["PPid"]) == server, command)
    return found


def _still_running(container: Any, settle_s: float = 5.0) -> bool:
    """Whether the engine still shows the container running once it has had
    ``settle_s`` to notice a sandbox that just ended (being replaced, its runsc
    processes go a moment before the engine's state says so)."""
    deadline = time.monotonic() + settle_s
    while True:
        try:
            container.reload()
        except docker.errors.NotFound:
            return False
        if container.status not in ("running", "paused"):
            return False
        if time.monotonic() > deadline:
            return True
        time.sleep(0.2)


def _runsc_processes(container_id: str) -> dict[int, NpuProcess]:
    listed = subprocess.run(
        ["runsc", "--root", _runsc_root(container_id), "ps", container_id],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    header = listed[0].split()
    found = {}
    for line in listed[1:]:
        row = dict(zip(header, line.split(None, len(header) - 1), strict=False))
        if row.get("PID", "1") != "1":
            found[int(row["PID"])] = NpuProcess(int(row["PID"]), row.get("PPID") == "1", row.get("CMD", ""))
    return found


class SandboxGone(Exception):
    """No runsc process of the container is left to name its state directory."""


def _runsc_root(container_id: str) -> str:
    """The state directory the engine gave runsc (its sandbox process names it)."""
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and b"runsc" in argv[0] and any(container_id.encode() in arg for arg in argv):
            for arg in argv:
                if arg.startswith(b"--root="):
                    return arg.removeprefix(b"--root=").decode()
    raise SandboxGone(f"no runsc process of {container_id[:12]} names its state directory")


def container_exists(engine: docker.DockerClient, container_id: str) -> bool:
    return bool(engine.containers.list(all=True, sparse=True, filters={"id": container_id}))


@dataclass
class Attack:
    """What the cases read of a finished execution, whichever way it ran: a node test
    run in a single-use container, or node ``n`` of a one-node pipeline run in its
    dedicated NPU."""

    id: str
    run_ref: str  # what the secret audit records as its run
    state: str
    outputs: dict[str, Any]
    error: dict[str, Any] | None
    logs: list[dict[str, Any]]
    container_id: str

    @classmethod
    def of_test_run(cls, test_run: NodeTestRun) -> Attack:
        return cls(
            id=str(test_run.id),
            run_ref=f"test-{test_run.id}",
            state=test_run.state,
            outputs=test_run.outputs or {},
            error=test_run.error,
            logs=test_run.logs or [],
            container_id=test_run.container_id,
        )

    @classmethod
    def of_run(cls, run: Run) -> Attack:
        node = nodes_of(run)["n"]
        return cls(
            id=str(run.id),
            run_ref=str(run.id),
            state=node.state,
            outputs=node.outputs or {},
            error=node.error,
            logs=node.logs or [],
            container_id=node.container_id,
        )


@dataclass
class Started:
    """An execution on its way: a node test run, or a run of a version of a pipeline."""

    test_run: NodeTestRun | None = None
    run: Run | None = None


def node_document(
    code: str, limits: dict[str, Any], isolation: str, outputs: tuple[str, ...] = ("value",)
) -> dict[str, Any]:
    node: dict[str, Any] = {"id": "n", "code": code, "outputs": list(outputs)}
    if limits:
        node["limits"] = limits
    if isolation == "container":
        node["isolation"] = "container"
    return {"schema_version": 1, "nodes": [node], "edges": []}


def start_one_node_run(
    code: str, name: str, isolation: str, inputs: dict[str, Any] | None = None, **limits: Any
) -> Run:
    """A run of a new one-node pipeline (node ``n``, output ``value``), its node in its
    dedicated NPU or, with isolation ``container``, in a single-use container."""
    version = do_create_pipeline(name, node_document(code, limits, isolation)).latest_version()
    assert version is not None
    return do_start_run(version, inputs or {})


@dataclass
class Sandbox:
    """Runs hostile code and checks that its surroundings were not hurt.

    ``container``: the code runs as a node test run, in a single-use container (the
    shared worker). ``dedicated``: it runs as node ``n`` of a one-node pipeline, in the
    node's dedicated NPU, on a worker of one process of its own (so that every
    execution of the node meets the same registry, hence the same NPU); each later
    execution (``run_node``) is a new version of the same pipeline's node ``n``.
    """

    isolation: str
    worker: WorkerProcess  # the worker that runs the attacks
    workers: list[WorkerProcess]  # every worker in play (the bystanders' too)
    engine: docker.DockerClient
    test_run_node: Callable[..., NodeTestRun]
    queue: str | None = None  # dedicated: the attack worker's queue
    record: Callable[[str, str], None] = lambda name, value: None
    bystanders: list[Any] = field(default_factory=list)
    pipeline: Pipeline | None = None  # dedicated: the attacked node's pipeline
    limits: dict[str, Any] = field(default_factory=dict)  # dedicated: its limits
    last: Attack | None = None
    # dedicated: the one process found beside the fork server after an execution, taken
    # for the spare the server forked for the next one (checked by the next execution).
    spare: int | None = None

    # --- running code ---------------------------------------------------------------

    @contextmanager
    def routed(self) -> Iterator[None]:
        """Dispatches sent meanwhile go to the attack worker (dedicated mode)."""
        if self.queue is None:
            yield
            return
        with override_settings(FLOWKIT_CELERY_QUEUE=self.queue):
            yield

    def start(
        self,
        code: str,
        inputs: dict[str, Any] | None = None,
        outputs: tuple[str, ...] = ("value",),
        **limits: Any,
    ) -> Started:
        """Start ``code`` as a new node (container: a node test run; dedicated: a new pipeline)."""
        if self.isolation == "container":
            return Started(
                test_run=do_start_node_test_run(code=code, inputs=inputs or {}, limits=limits, label="probe")
            )
        self.pipeline = do_create_pipeline(
            f"attack {time.monotonic_ns()}", node_document(code, limits, "dedicated", outputs)
        )
        self.limits = limits
        version = self.pipeline.latest_version()
        assert version is not None
        with self.routed():
            return Started(run=do_start_run(version, inputs or {}))

    def start_next(
        self,
        code: str,
        inputs: dict[str, Any] | None = None,
        outputs: tuple[str, ...] = ("value",),
        **limits: Any,
    ) -> Started:
        """Dedicated: the node's next execution, ``code`` saved as a new version of node ``n``."""
        assert self.isolation == "dedicated"
        if self.pipeline is None:
            return self.start(code, inputs, outputs, **limits)
        version = do_save_version(self.pipeline, node_document(code, limits, "dedicated", outputs))
        self.limits = limits
        with self.routed():
            return Started(run=do_start_run(version, inputs or {}))

    def finish(self, started: Started, wait_s: float = 120) -> Attack:
        self.spare = None
        deadline = time.monotonic() + wait_s
        while True:
            assert self.worker.process.poll() is None, f"the worker died:\n{self.worker.log()[-3000:]}"
            if started.test_run is not None:
                started.test_run.refresh_from_db()
                if started.test_run.is_finished:
                    self.last = Attack.of_test_run(started.test_run)
                    return self.last
                what = f"node test run {started.test_run.id} ({started.test_run.state})"
            else:
                assert started.run is not None
                started.run.refresh_from_db()
                if started.run.state in TERMINAL_RUN_STATES:
                    self.last = Attack.of_run(started.run)
                    return self.last
                what = f"run {started.run.id} ({started.run.state}; {nodes_of(started.run)['n'].__dict__})"
            assert time.monotonic() < deadline, f"{what} did not finish"
            time.sleep(0.05)

    def finished_run(self, run: Run) -> Attack:
        """A run of a one-node pipeline started elsewhere (through the API, say), taken
        as the attack: the honest node after it is a new version of that pipeline."""
        self.pipeline, self.limits = Pipeline.objects.get(id=run.pipeline_id), {}
        self.last = Attack.of_run(run)
        return self.last

    def npu_of(self, started: Started, wait_s: float = 30) -> Any:
        """The NPU container of an execution on its way, once it runs there."""
        if started.run is not None:
            return wait_for_npu(self.engine, started.run, wait_s)
        assert started.test_run is not None
        label = f"flowkit.test_run={started.test_run.id}"
        deadline = time.monotonic() + wait_s
        while not (npus := self.engine.containers.list(filters={"label": label})):
            assert time.monotonic() < deadline, "the NPU never started"
            time.sleep(0.05)
        return npus[0]

    def run_node(
        self, code: str, inputs: dict[str, Any] | None = None, wait_s: float = 90,
        outputs: tuple[str, ...] = ("value",), **limits: Any,
    ) -> Attack:  # fmt: skip
        """Run ``code`` without a bystander. container: a new node test run (a new
        single-use container). dedicated: the attacked node's next execution."""
        if self.isolation == "container":
            return Attack.of_test_run(self.test_run_node(code, inputs, wait_s=wait_s, **limits))
        return self.finish(self.start_next(code, inputs, outputs, **limits), wait_s)

    def attack(
        self, code: str, inputs: dict[str, Any] | None = None, wait_s: float = 120, **limits: Any
    ) -> Attack:
        """Run ``code`` in an NPU beside a bystander; check the surroundings; return
        the finished execution for the case's own assertions."""
        return self._attack(lambda: self.start(code, inputs, **limits), wait_s)

    def attack_again(
        self, code: str, inputs: dict[str, Any] | None = None, wait_s: float = 120, **limits: Any
    ) -> Attack:
        """As ``attack``, as the node's next execution (dedicated: a new version of node
        ``n`` of the pipeline that ran last, in its NPU)."""
        return self._attack(lambda: self.start_next(code, inputs, **limits), wait_s)

    def _attack(self, start: Callable[[], Started], wait_s: float) -> Attack:
        bystander = self.start_bystander()
        attacked = self.finish(start(), wait_s)
        self.assert_execution_left_nothing(attacked)
        self.assert_bystander_unaffected(bystander)
        self.assert_worker_still_serves()
        return attacked

    # --- what must hold afterwards -----------------------------------------------------

    def start_bystander(self) -> Any:
        run = start_one_node_run(BYSTANDER, f"bystander {time.monotonic_ns()}", self.isolation)
        self.bystanders.append(run)
        return run

    def assert_execution_left_nothing(self, attacked: Attack) -> None:
        """container: the NPU is removed and no process of it is left on the host.
        dedicated: the NPU stays for the node's next execution, with nothing of this
        one in it: its only processes are the fork server and, at most, the spare the
        server forked for the next execution (or, replaced, it is removed and no
        process of it is left)."""
        if self.isolation == "container" and attacked.run_ref.startswith("test-"):
            npus = self.engine.containers.list(
                all=True, sparse=True, filters={"label": f"flowkit.test_run={attacked.id}"}
            )
            assert npus == [], f"the NPU of {attacked.id} was not removed"
            if attacked.container_id:
                assert processes_in_container(attacked.container_id) == [], "a process of the NPU outlived it"
            return
        if not attacked.container_id:
            return  # it never reached an NPU
        if self.isolation == "container":
            # A run's single-use container is removed off the node's path.
            deadline = time.monotonic() + NPU_REMOVAL_WAIT_S
            while container_exists(self.engine, attacked.container_id):
                assert time.monotonic() < deadline, f"the NPU {attacked.container_id[:12]} was not removed"
                time.sleep(0.2)
            assert processes_in_container(attacked.container_id) == [], "a process of the NPU outlived it"
            return
        self._assert_only_the_server_and_its_spare_are_left(attacked.container_id)

    def _assert_only_the_server_and_its_spare_are_left(self, container_id: str) -> None:
        deadline = time.monotonic() + NPU_REMOVAL_WAIT_S
        while True:
            self.spare = None
            try:
                container = self.engine.containers.get(container_id)
                running = container.status == "running"
                left: dict[int, Any] = npu_processes(container) if running else {}
            except docker.errors.NotFound:
                running, left = False, {}
            if not running:
                left = {pid: "(on the host)" for pid in processes_in_container(container_id)}
            elif len(left) == 1 and next(iter(left.values())).child_of_server:
                # The server's spare, forked ahead for the next execution: the node's next
                # execution must run in it (assert_worker_still_serves checks).
                self.spare, left = next(iter(left)), {}
            if not left:
                return
            assert time.monotonic() < deadline, f"processes of the execution outlived it: {left}"
            time.sleep(0.2)

    def assert_bystander_unaffected(self, run: Any) -> None:
        run = wait_for_run(run, wait_s=120)
        node = nodes_of(run)["n"]
        assert run.state == "succeeded", f"the bystander run {run.state}: {node.error}"
        assert node.outputs == {"value": BYSTANDER_VALUE}

    def assert_worker_still_serves(self) -> None:
        """container: the worker runs an ordinary node test. dedicated: honest code,
        saved as a new version of the attacked node (same limits, so the same profile),
        succeeds in the node's dedicated NPU: the same one, or a replacement if the
        attack had it replaced (recorded as ``npu_after_attack``)."""
        for worker in self.workers:
            assert worker.process.poll() is None, f"the worker died:\n{worker.log()[-3000:]}"
        attacked, spare = self.last, self.spare
        if self.isolation == "container":
            honest = self.run_node(ADD, {"a": 2, "b": 3})
            assert honest.state == "succeeded", honest.error
            assert honest.outputs == {"out": 5}
            return
        honest = self.run_node(HONEST, {"a": 2, "b": 3}, outputs=("out", "pid"), **self.limits)
        assert honest.state == "succeeded", honest.error
        assert honest.outputs["out"] == 5
        if attacked is not None and attacked.container_id:
            fate = self.npu_fate(attacked, honest)
            self.record("npu_after_attack", fate)
            if fate == "same" and spare is not None:
                assert honest.outputs["pid"] == spare, (
                    f"process {spare} left in the NPU was not the spare its next execution ran in"
                )

    def npu_fate(self, attacked: Attack, honest: Attack) -> str:
        if honest.container_id == attacked.container_id:
            return "same"
        deadline = time.monotonic() + NPU_REMOVAL_WAIT_S
        while container_exists(self.engine, attacked.container_id):
            assert time.monotonic() < deadline, (
                f"the node's next execution ran in NPU {honest.container_id[:12]}, "
                f"while its NPU {attacked.container_id[:12]} is still there"
            )
            time.sleep(0.2)
        return "replaced"

    def worker_pids(self) -> list[int]:
        """The host pids of every worker in play (their main processes and pool children)."""
        return sorted({pid for worker in self.workers for pid in worker_pids(worker)})


@pytest.fixture(scope="session")
def dedicated_worker(
    django_db_setup: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """A worker of one process on a queue of its own: every execution of a node meets
    the same registry of dedicated NPUs, so the node's next execution runs in the same
    NPU unless it was replaced. Bounded to a few NPUs, and one warm one to adopt."""
    queue = dedicated_queue()
    name = f"{queue}-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
    env = {
        "FLOWKIT_CELERY_QUEUE": queue,
        "FLOWKIT_NPU_POOL_MIN": "1",
        "FLOWKIT_NPU_POOL_MAX": "1",
        "FLOWKIT_NPU_DEDICATED_MAX": "4",
    }
    worker = start_worker(
        name, tmp_path_factory.mktemp("dedicated-worker") / "worker.log", env, autoscale=(1, 1)
    )
    yield worker
    stop_worker(worker)


def dedicated_queue() -> str:
    """The queue of the dedicated-mode attack worker (this test process's own, derived)."""
    return f"{settings.FLOWKIT_CELERY_QUEUE}-dedicated"


def make_sandbox(
    request: pytest.FixtureRequest, isolation: str, shared: WorkerProcess, test_run_node: Callable[..., Any]
) -> Sandbox:
    engine = docker.from_env()

    def record(name: str, value: str) -> None:
        request.node.user_properties.append((name, value))

    if isolation == "container":
        return Sandbox(
            isolation, worker=shared, workers=[shared], engine=engine,
            test_run_node=test_run_node, record=record,
        )  # fmt: skip
    # Started on first use only: a run of [container] cases alone does without it.
    own: WorkerProcess = request.getfixturevalue("dedicated_worker")
    return Sandbox(
        isolation, worker=own, workers=[own, shared], engine=engine,
        test_run_node=test_run_node, queue=dedicated_queue(), record=record,
    )  # fmt: skip


# transactional_db is named here, not asked for inside: pytest-django decides by the
# fixture names a test has whether its transactions really commit (dispatches are sent
# on commit).
@pytest.fixture(params=ISOLATION_MODES)
def sandbox(
    request: pytest.FixtureRequest,
    transactional_db: None,
    celery_worker: WorkerProcess,
    run_node: Callable[..., Any],  # noqa: F811
) -> Sandbox:
    """Every case runs in both modes: ``[container]`` and ``[dedicated]``."""
    return make_sandbox(request, request.param, celery_worker, run_node)


@pytest.fixture
def dedicated_sandbox(
    request: pytest.FixtureRequest,
    transactional_db: None,
    celery_worker: WorkerProcess,
    run_node: Callable[..., Any],  # noqa: F811
) -> Sandbox:
    return make_sandbox(request, "dedicated", celery_worker, run_node)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """What the cases recorded: which dedicated NPU served the honest execution after
    each attack (the same, or a replacement), and the known limits they met."""
    recorded: dict[tuple[str, str], list[str]] = {}
    for report in terminalreporter.stats.get("passed", []) + terminalreporter.stats.get("failed", []):
        if report.when != "call":
            continue
        for name, value in getattr(report, "user_properties", []):
            recorded.setdefault((name, str(value)), []).append(report.nodeid.rsplit("::", 1)[-1])
    if recorded:
        terminalreporter.section("recorded by the sandbox attack suite")
        for (name, value), tests in sorted(recorded.items()):
            terminalreporter.write_line(f"{name} = {value} ({len(tests)}): {', '.join(tests)}")


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
