"""`make up`'s supervisor (deploy/supervisor/): the only worker, killed with SIGKILL in
the middle of a node, is started again by the supervisor under the same name; its new
life fails and retries the attempt the old one left running, and the run finishes
within 30 s of the kill (issue 16, Operations)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from control_unit.routing import parse_capabilities, worker_queues
from tests.integration.conftest import (
    REPO,
    fast,
    node_code,
    nodes_of,
    server_environment,
    single_node_run,
    wait_until,
)
from trace_monitor.models import NodeExecution

pytestmark = pytest.mark.django_db(transaction=True)

# What the issue allows between the kill and the run's end.
RECOVERY_S = 30
VENV = Path(sys.executable).parent.parent
BOOTSTRAP = REPO / "deploy/bootstrap"


@dataclass
class Supervisor:
    home: Path
    env: dict[str, str]
    worker_name: str

    def ctl(self, *args: str) -> str:
        command = [str(VENV / "bin/supervisorctl"), "-s", f"unix://{self.home}/run/supervisor.sock", *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=60).stdout.strip()

    def worker_pid(self) -> int:
        """The worker's pid, or 0 while it is not running."""
        answer = self.ctl("pid", "worker")
        return int(answer) if answer.isdigit() else 0

    def pid(self) -> int:
        path = self.home / "run/supervisord.pid"
        return int(path.read_text()) if path.exists() else 0

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
            for path in sorted((self.home / "log").glob("*.log"))
        )


@pytest.fixture
def supervisor(own_queue: str, tmp_path: Path) -> Iterator[Supervisor]:
    """supervisord with make up's configuration running only the worker program, on
    this test's database and queue, its home (socket, pid file, logs) in tmp_path."""
    from node_runner.celery import app

    (tmp_path / "run").mkdir()
    (tmp_path / "log").mkdir()
    name = f"supervised-{os.getpid()}-{time.monotonic_ns()}@{socket.gethostname()}"
    env = {
        **server_environment(),
        **fast(own_queue),
        # Heartbeats and loss judgement as in fast(), but nothing but the restart
        # recovers the node: no peer would call this worker lost in time.
        "FLOWKIT_WORKER_LOST_AFTER_S": "600",
        "FLOWKIT_HOME": str(tmp_path),
        # As start_supervisor (deploy/bootstrap/supervisor.sh) marks its programs.
        "FLOWKIT_SUPERVISED_BY": str(tmp_path),
        "FLOWKIT_REPO": str(REPO),
        "FLOWKIT_VENV": str(VENV),
        "FLOWKIT_SUPERVISED": "worker.conf",
        "FLOWKIT_WORKER_QUEUES": ",".join(worker_queues(own_queue, parse_capabilities(""))),
        "FLOWKIT_WORKER_AUTOSCALE": "2,1",
        "FLOWKIT_WORKER_NAME": name,
    }
    subprocess.run(
        [str(VENV / "bin/supervisord"), "-c", str(REPO / "deploy/supervisor/supervisord.conf")],
        env=env, cwd=REPO, check=True, timeout=60,
    )  # fmt: skip
    running = Supervisor(tmp_path, env, name)
    try:
        wait_until(
            "the supervised worker answers",
            lambda: app.control.ping(destination=[name], timeout=0.5),
            wait_s=90,
        )
        yield running
    finally:
        pid = running.pid()
        running.ctl("shutdown")
        deadline = time.monotonic() + 60
        while pid and _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if pid and _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_supervisor_restarts_a_killed_worker_and_its_run_finishes_within_30_s(supervisor, docker_engine):
    # The first attempt would outlast the test; the retry, on the new life, is quick.
    code = node_code(
        "import time\nfrom flowkit.node import Node\n"
        "time.sleep(120 if Node().attempt == 1 else 1)\nvalue = 'done'"
    )
    run = single_node_run(code, "supervised", retries=1, backoff_s=0.1, timeout_s=300)
    wait_until(
        "the first attempt's NPU started",
        lambda: NodeExecution.objects.filter(run=run, attempt=1).exists(),
        wait_s=60,
    )
    victim = supervisor.worker_pid()
    assert victim, supervisor.ctl("status")

    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()

    restarted = wait_until(
        "the supervisor started the worker again",
        lambda: (pid := supervisor.worker_pid()) not in (0, victim) and pid,
        wait_s=RECOVERY_S,
    )
    while True:
        run.refresh_from_db()
        if run.state in ("succeeded", "failed", "cancelled"):
            break
        assert time.monotonic() - killed_at < RECOVERY_S, (
            f"the run is still {run.state} {RECOVERY_S} s after the kill: {nodes_of(run)['n'].state} "
            f"attempt {nodes_of(run)['n'].attempt}\n{supervisor.logs()}"
        )
        time.sleep(0.2)
    finished_after_s = time.monotonic() - killed_at
    print(f"worker {victim} killed, restarted as {restarted}: run {run.state} {finished_after_s:.1f} s later")

    node = nodes_of(run)["n"]
    assert run.state == "succeeded", f"{node.error}\n{supervisor.logs()}"
    assert node.attempt == 2, "the killed attempt was retried once"
    first = NodeExecution.objects.get(run=run, node_id="n", attempt=1)
    assert (first.outcome, first.error_type) == ("failed", "WorkerLost")
    assert NodeExecution.objects.get(run=run, node_id="n", attempt=2).worker == supervisor.worker_name
    assert supervisor.worker_pid() == restarted, "the new life kept running"


def test_make_up_stops_what_a_killed_supervisor_left_running(supervisor):
    orphan = supervisor.worker_pid()
    os.kill(supervisor.pid(), signal.SIGKILL)
    time.sleep(1)
    assert _alive(orphan), "the worker should outlive its supervisor's SIGKILL"

    # What make up and make down do first.
    stopped = subprocess.run(
        ["bash", "-c", f"source {BOOTSTRAP}/lib.sh; source {BOOTSTRAP}/supervisor.sh; stop_supervisor"],
        env={**os.environ, "FLOWKIT_HOME": str(supervisor.home)},
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert stopped.returncode == 0, stopped.stderr
    assert "a killed supervisor left running" in stopped.stdout
    wait_until("the orphaned worker is gone", lambda: not _running(orphan), wait_s=5)


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting for init to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False
