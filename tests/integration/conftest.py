"""Real parts for integration tests: a Celery worker process on the test database,
the Docker engine, and helpers that send nodes through them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import docker
import pytest
from django.conf import settings
from django.db import connection

from control_unit.actions import do_start_node_test_run
from control_unit.dispatcher import dispatching_to
from control_unit.fcb_store import graph_of_version
from control_unit.models import NodeTestRun
from control_unit.node_inputs import inputs_of
from tests.integration.hosts import WorkerHost, separate_hosts

REPO = Path(__file__).resolve().parents[2]
WORKER_START_TIMEOUT_S = 60


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    name: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def database_url_for_processes() -> str:
    """The URL of the database pytest-django created, for processes we start."""
    db = connection.settings_dict
    credentials = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{credentials}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def server_environment() -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url_for_processes(),
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONPATH": str(REPO),
    }


def start_worker(
    name: str,
    log_path: Path,
    env: dict[str, str] | None = None,
    wait: bool = True,
    autoscale: tuple[int, int] | None = None,
    on: Callable[[list[str]], list[str]] = list,
) -> WorkerProcess:
    """A Celery worker process on this test process's queue (or ``env``'s
    FLOWKIT_CELERY_QUEUE) and the capability queues of ``env``'s
    FLOWKIT_WORKER_CAPABILITIES, as deploy/bootstrap/up.sh starts one, in its own
    process group (so that a test can kill it and its pool children at once, like a
    crash). ``autoscale`` (max, min) lets Celery size its pool, as make up does;
    otherwise it has two processes. ``on`` wraps the command, e.g. to run it on
    another host (tests/integration/hosts.py)."""
    from control_unit.routing import parse_capabilities, worker_queues

    env = env or {}
    base = env.get("FLOWKIT_CELERY_QUEUE", settings.FLOWKIT_CELERY_QUEUE)
    queues = ",".join(worker_queues(base, parse_capabilities(env.get("FLOWKIT_WORKER_CAPABILITIES", ""))))
    pool = ["--autoscale", f"{autoscale[0]},{autoscale[1]}"] if autoscale else ["--concurrency", "2"]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            on([sys.executable, "-m", "celery", "-A", "node_runner", "worker", "--queues", queues,
                *pool, "--hostname", name, "--loglevel", "INFO",
                "--without-mingle", "--without-gossip"]),
            cwd=REPO, env={**server_environment(), **env}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    worker = WorkerProcess(process, name, log_path)
    if wait:
        wait_until_serving(worker)
    return worker


def wait_until_serving(worker: WorkerProcess) -> None:
    from node_runner.celery import app

    deadline = time.monotonic() + WORKER_START_TIMEOUT_S
    while not app.control.ping(destination=[worker.name], timeout=0.5):
        if worker.process.poll() is not None or time.monotonic() > deadline:
            worker.process.kill()
            pytest.fail(f"the Celery worker did not start:\n{worker.log()[-3000:]}")


def stop_worker(worker: WorkerProcess) -> None:
    if worker.process.poll() is not None:
        return
    worker.process.send_signal(signal.SIGTERM)
    try:
        worker.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(worker.process.pid, signal.SIGKILL)
        worker.process.wait(timeout=10)


class WebServer:
    """A real Daphne process serving FlowKit on the test database; restartable on
    the same port, as a deployment restarts its web process."""

    def __init__(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port)]
        self.process = subprocess.Popen(
            [*command, "web_ui.asgi:application"],
            cwd=REPO, env=server_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if self.process.poll() is not None:
                    stderr = self.process.stderr.read().decode() if self.process.stderr else ""
                    pytest.fail(f"daphne exited:\n{stderr}")
                assert time.monotonic() < deadline, "daphne did not start"
                time.sleep(0.1)

    def kill(self) -> None:
        """Stop at once, as a crash or a deploy would: no graceful close of sockets."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def web_server(transactional_db: None, celery_worker: WorkerProcess) -> Iterator[WebServer]:
    server = WebServer()
    server.start()
    yield server
    server.stop()


@contextmanager
def host_server_for_npus(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """An HTTP server on the host that NPUs with network access can reach, at their
    bridge's gateway; yields its base URL. The NPU egress policy (deploy/bootstrap/lib.sh
    ensure_npu_egress_policy) refuses NPU traffic to the host, so the test opens its
    one port for as long as the server runs, and closes it again."""
    from node_runner.npu_execution import ensure_npu_network

    network = ensure_npu_network(docker.from_env())
    network.reload()
    gateway = network.attrs["IPAM"]["Config"][0]["Gateway"]
    server = ThreadingHTTPServer((gateway, 0), handler)
    rule = ["-p", "tcp", "-d", gateway, "--dport", str(server.server_address[1]), "-j", "ACCEPT"]
    opened = _iptables("-I", "FLOWKIT-NPU-INPUT", "1", *rule)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://{gateway}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        if opened:
            _iptables("-D", "FLOWKIT-NPU-INPUT", *rule)


def _iptables(*args: str) -> bool:
    """Run iptables; False where there is no such chain (no egress policy installed)."""
    if shutil.which("iptables") is None:
        return False
    return subprocess.run(["iptables", *args], capture_output=True).returncode == 0


def single_node_run(code: str, name: str = "single node", **limits: Any) -> Any:
    """Start a run of a one-node pipeline (node ``n``, output ``value``)."""
    from control_unit.pipeline_actions import do_create_pipeline
    from control_unit.run_actions import do_start_run

    node: dict[str, Any] = {"id": "n", "code": code, "outputs": ["value"]}
    if limits:
        node["limits"] = limits
    version = do_create_pipeline(name, {"schema_version": 1, "nodes": [node]}).latest_version()
    assert version is not None
    return do_start_run(version)


def session_cookie(role: str = "viewer") -> str:
    """The session cookie of a new user with ``role``, for WebSocket clients."""
    from django.contrib.auth.models import Group, User
    from django.test import Client

    name = f"live-{role}-{time.monotonic_ns()}"
    user = User.objects.create_user(name, password="a long enough password 123")
    user.groups.add(Group.objects.get_or_create(name=role)[0])
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


@pytest.fixture
def docker_engine() -> docker.DockerClient:
    return docker.from_env()


@pytest.fixture
def run_node(celery_worker: WorkerProcess, transactional_db: None) -> Any:
    """Send node code through the worker into an NPU and wait for its test run."""

    def run(
        code: str, inputs: dict[str, Any] | None = None, wait_s: float = 90, **limits: Any
    ) -> NodeTestRun:
        test_run = do_start_node_test_run(code=code, inputs=inputs or {}, limits=limits, label="probe")
        deadline = time.monotonic() + wait_s
        while not test_run.is_finished:
            assert celery_worker.process.poll() is None, f"the worker died:\n{celery_worker.log()[-3000:]}"
            assert time.monotonic() < deadline, (
                f"node test run {test_run.id} did not finish ({test_run.state})"
            )
            time.sleep(0.05)
            test_run.refresh_from_db()
        return test_run

    return run


def node_code(body: str) -> str:
    """A node whose main runs ``body`` (which sets ``value``) and returns it as output ``value``."""
    indented = "\n".join("    " + line for line in body.strip().splitlines())
    return (
        "from flowkit.node import Node\n"
        "node = Node()\n"
        "def main():\n"
        f"{indented}\n"
        "    return [], {'value': value}, 'probed'\n"
        "node.register_main(main)\n"
        "node.run()\n"
    )


EXAMPLES = REPO / "examples" / "pipelines"
TERMINAL_RUN_STATES = ("succeeded", "failed", "cancelled")


def example_version(name: str) -> Any:
    """Save examples/pipelines/NAME.json as a pipeline and return its version."""
    import json

    from control_unit.pipeline_actions import do_create_pipeline

    document = json.loads((EXAMPLES / f"{name}.json").read_text())
    return do_create_pipeline(document["name"], document).latest_version()


def wait_for_run(run: Any, states: tuple[str, ...] = TERMINAL_RUN_STATES, wait_s: float = 120) -> Any:
    deadline = time.monotonic() + wait_s
    run.refresh_from_db()
    while run.state not in states:
        assert time.monotonic() < deadline, f"run {run.id} still {run.state}: {nodes_of(run)}"
        time.sleep(0.1)
        run.refresh_from_db()
    return run


def wait_for_node(run: Any, node_id: str, states: tuple[str, ...], wait_s: float = 60) -> Any:
    deadline = time.monotonic() + wait_s
    while True:
        node = run.node_runs.get(node_id=node_id)
        if node.state in states:
            return node
        assert time.monotonic() < deadline, f"node {node_id} still {node.state}"
        time.sleep(0.05)


def nodes_of(run: Any) -> dict[str, Any]:
    return {node.node_id: node for node in run.node_runs.all()}


def node_inputs(run: Any, node_id: str) -> dict[str, Any]:
    """A node's inputs as the worker and the API see them (references resolved)."""
    row = run.node_runs.get(node_id=node_id)
    return inputs_of(run.id, graph_of_version(run.version_id), node_id, row.inputs, row.input_refs)


@pytest.fixture
def worker_queue(settings: Any) -> str:
    """A base queue of this test's own, so that the test process's shared worker never
    takes its nodes (dispatches read the queue from the settings when they are sent)."""
    settings.FLOWKIT_CELERY_QUEUE = f"own-{os.getpid()}-{time.monotonic_ns()}"
    return str(settings.FLOWKIT_CELERY_QUEUE)


def quick_heartbeats(queue: str, **extra: str) -> dict[str, str]:
    """The environment of a worker on ``queue`` that beats every 0.5 s (lost after 3 s)."""
    return {
        "FLOWKIT_WORKER_HEARTBEAT_S": "0.5",
        "FLOWKIT_WORKER_LOST_AFTER_S": "3",
        "FLOWKIT_CELERY_QUEUE": queue,
        **extra,
    }


def wait_until(what: str, check: Any, wait_s: float = 30) -> Any:
    """Poll ``check`` until it returns something true, and return that."""
    deadline = time.monotonic() + wait_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


def execution_processes(container: Any) -> dict[int, str]:
    """The host pids and states (R, S, T ...) of an NPU's processes other than its fork
    server, found through the container's cgroup: those of the executions it runs now,
    and while none runs, the process forked ahead for the next one."""
    container.reload()
    server = int(container.attrs["State"]["Pid"])
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == server:
            continue
        try:
            if container.id not in (entry / "cgroup").read_text():
                continue
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # it ended while we looked
        found[int(entry.name)] = stat[stat.rfind(")") + 2]
    return found


def npu_containers(engine: docker.DockerClient, run: Any, node_id: str | None = None) -> list[Any]:
    """The NPU containers that a run's nodes used, while they exist (running or not).
    A pooled NPU is labelled before its node is known, so the trace (which records the
    container of every execution) says which containers are the run's."""
    from trace_monitor.models import NodeExecution

    executions = NodeExecution.objects.filter(run=run).exclude(container_id="")
    if node_id is not None:
        executions = executions.filter(node_id=node_id)
    ids = sorted(set(executions.values_list("container_id", flat=True)))
    if not ids:
        return []
    # sparse: no per-container inspect, which races with the runner removing it
    return list(engine.containers.list(all=True, sparse=True, filters={"id": ids}))


def wait_for_npu(engine: docker.DockerClient, run: Any, wait_s: float = 30) -> Any:
    """The first NPU of ``run`` once a node runs in it."""
    deadline = time.monotonic() + wait_s
    while not (containers := npu_containers(engine, run)):
        assert time.monotonic() < deadline, "the NPU never started"
        time.sleep(0.05)
    return containers[0]


# Workers that fail: shared by the worker loss, separate hosts and rolling restart tests.


def fast(queue: str) -> dict[str, str]:
    """A worker's environment for tests of lost workers: fast heartbeats, lost after
    3 s of silence, on the test's own queue."""
    return {
        "FLOWKIT_WORKER_HEARTBEAT_S": "0.5",
        "FLOWKIT_WORKER_LOST_AFTER_S": "3",
        "FLOWKIT_CELERY_QUEUE": queue,
    }


@pytest.fixture
def own_queue(settings: Any) -> Iterator[str]:
    """A queue of this test's own: the test process's other worker must not take its
    nodes (dispatches read the queue from the settings when they are sent). Removed
    afterwards from the shared Redis, with the messages a killed worker of the test
    left unacknowledged (kombu would put them back in four hours)."""
    import redis

    queue = settings.FLOWKIT_CELERY_QUEUE = f"loss-{os.getpid()}-{time.monotonic_ns()}"
    yield queue
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL, decode_responses=True)
    unacked = cast(dict[str, str], broker.hgetall("unacked"))  # the sync client's reply
    for tag, value in unacked.items():
        if json.loads(value)[2] == queue:
            broker.hdel("unacked", tag)
            broker.zrem("unacked_index", tag)
    broker.delete(queue)


def crash(worker: WorkerProcess) -> None:
    """SIGKILL of the worker's whole process group, like a crashed host."""
    os.killpg(worker.process.pid, signal.SIGKILL)
    worker.process.wait(timeout=10)


def assert_no_npu_left(docker_engine: docker.DockerClient, worker: str, wait_s: float = 10) -> None:
    """No NPU the crashed worker started is left, running or not."""
    deadline = time.monotonic() + wait_s
    while docker_engine.containers.list(all=True, sparse=True, filters={"label": f"flowkit.worker={worker}"}):
        assert time.monotonic() < deadline, f"an NPU of {worker} was not removed"
        time.sleep(0.2)


class SideEffects:
    """A local service that applies each request once per Idempotency-Key."""

    def __init__(self) -> None:
        self.received: Counter[str] = Counter()
        self.applied: Counter[str] = Counter()
        self.lock = threading.Lock()

    def handler(self) -> type[BaseHTTPRequestHandler]:
        effects = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                key = self.headers.get("Idempotency-Key", "")
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with effects.lock:
                    effects.received[key] += 1
                    if key not in effects.applied:
                        effects.applied[key] += 1
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        return Handler


@pytest.fixture
def side_effects() -> Iterator[tuple[SideEffects, str]]:
    effects = SideEffects()
    with host_server_for_npus(effects.handler()) as url:
        yield effects, f"{url}/effect"


# Workers on hosts of their own (tests/integration/hosts.py).


def start_worker_on(
    host: WorkerHost, name: str, log_path: Path, env: dict[str, str] | None = None, wait: bool = True
) -> WorkerProcess:
    """A worker on ``host``, reaching the test database and Redis through its gateway."""
    reach = {
        "DATABASE_URL": host.reachable_url(database_url_for_processes()),
        "REDIS_URL": host.reachable_url(settings.REDIS_URL),
        "CELERY_BROKER_URL": host.reachable_url(settings.CELERY_BROKER_URL),
    }
    return start_worker(name, log_path, {**(env or {}), **reach}, wait, on=host.command)


@pytest.fixture
def two_hosts(transactional_db: None) -> Iterator[list[WorkerHost]]:
    """hostA and hostB, each in its own network namespace, removed after the test."""
    services = [database_url_for_processes(), settings.REDIS_URL, settings.CELERY_BROKER_URL]
    with separate_hosts(["hostA", "hostB"], services) as hosts:
        yield hosts


class HostWorkers:
    """The workers a test starts on its hosts, one per host, named after it; stopped
    (warm, then killed) at the end of the test."""

    def __init__(self, hosts: list[WorkerHost], queue: str, logs: Path, env: dict[str, str]) -> None:
        self.hosts = {host.label: host for host in hosts}
        # No overdue watchdog within a test: what these tests show must happen without
        # it (a dispatch lost on the way would leave its node queued, and fail the test).
        self.env = {**fast(queue), "FLOWKIT_REDISPATCH_AFTER_S": "3600", **env}
        self.logs = logs
        self.live: dict[str, WorkerProcess] = {}
        self.started: list[WorkerProcess] = []

    def name_on(self, label: str) -> str:
        # The pid keeps the names of parallel test processes (one Redis) apart.
        return f"worker-{os.getpid()}@{label}"

    def start(self, label: str, wait: bool = True) -> WorkerProcess:
        name = self.name_on(label)
        log_path = self.logs / f"{label}-{len(self.started)}.log"
        worker = start_worker_on(self.hosts[label], name, log_path, self.env, wait=wait)
        self.live[label] = worker
        self.started.append(worker)
        return worker

    def stop_all(self) -> None:
        for worker in self.started:
            stop_worker(worker)


@pytest.fixture
def host_workers(two_hosts: list[WorkerHost], own_queue: str, tmp_path: Path) -> Iterator[HostWorkers]:
    """A worker on each of hostA and hostB, both serving before the test starts (or
    the first of them would take all of a run's first nodes)."""
    workers = HostWorkers(two_hosts, own_queue, tmp_path, {})
    try:
        for host in two_hosts:
            workers.start(host.label, wait=False)
        for worker in workers.started:
            wait_until_serving(worker)
        yield workers
    finally:
        workers.stop_all()


class RecordingDispatcher:
    """Keeps what the control unit would send to a worker (tests where none runs)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.nodes: list[tuple[str, str, int]] = []
        self.node_tests: list[str] = []

    def send_node(self, run_id: str, node_id: str, attempt: int, *, delay_s: float, queue: str) -> None:
        with self._lock:
            self.nodes.append((run_id, node_id, attempt))

    def send_node_test(self, test_run_id: str) -> None:
        with self._lock:
            self.node_tests.append(test_run_id)


@pytest.fixture
def no_broker() -> Iterator[RecordingDispatcher]:
    """Nothing is sent to a worker: runs and node tests stay queued, their dispatches kept."""
    with dispatching_to(RecordingDispatcher()) as dispatcher:
        yield dispatcher
