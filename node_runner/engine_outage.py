"""An attempt that ended because the Docker engine was away is the engine's failure,
not the node's (issue 16: an engine restart used up a node's two retries in two
seconds).

When an attempt ends with an error the engine's absence can cause (no NPU could be
started, the NPU vanished, the runner's engine call failed) and the engine does not
answer now, or was started again since the attempt began, the runner waits for the
engine (at most FLOWKIT_ENGINE_WAIT_S) and reports ``EngineUnavailable``: the FCB
retries it on the infrastructure's own budget (control_unit.fcb.INFRA_RETRIES) and
the node's retries stay whole. The retry finds the engine back, or waits for it again.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import docker
import psutil
from django.conf import settings

log = logging.getLogger(__name__)

# What an engine away can end an attempt with (node_runner.npu_execution, ready_npu,
# tasks.runner_failure). A node's own failures (its exceptions, timeout, memory) are
# never taken for the engine's.
ENGINE_SENSITIVE = frozenset({"NpuUnavailable", "NpuCrashed", "RunnerError"})
PING_TIMEOUT_S = 3.0
POLL_S = 0.5


def engine_outage(result: dict[str, Any], began_at: float) -> dict[str, Any]:
    """``result`` as the attempt's outcome, with its error renamed ``EngineUnavailable``
    when the engine was away during the attempt (begun at Unix time ``began_at``);
    then only once the engine answers again, or FLOWKIT_ENGINE_WAIT_S has passed."""
    error = result.get("error") or {}
    if error.get("error_type") not in ENGINE_SENSITIVE:
        return result
    if engine_answers() and not engine_started_since(began_at):
        return result
    wait_s = settings.FLOWKIT_ENGINE_WAIT_S
    back = wait_for_engine(wait_s)
    state = "it is back" if back else f"it was still away after {wait_s:g} s"
    log.warning("the Docker engine was away during an attempt (%s): %s", state, error.get("error_type"))
    message = f"the Docker engine was unavailable during this attempt ({state}); {error.get('message', '')}"
    return {**result, "error": {"error_type": "EngineUnavailable", "message": message}}


def engine_answers() -> bool:
    try:
        client = docker.from_env(timeout=PING_TIMEOUT_S)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - any failure to reach it means it is away
        return False


def engine_started_since(began_at: float) -> bool:
    """Whether this host's dockerd was started after ``began_at``: it restarted during
    the attempt and is back already. False where dockerd is not visible (a worker in a
    container, a remote engine): there only an engine that does not answer counts."""
    for process in psutil.process_iter(["name", "create_time"]):
        if process.info.get("name") == "dockerd":
            return float(process.info.get("create_time") or 0) > began_at
    return False


def wait_for_engine(wait_s: float) -> bool:
    deadline = time.monotonic() + wait_s
    while not engine_answers():
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)
    return True
