"""Without a broker or a worker process: a queued node that requires a capability says
why it waits whenever no online worker offers it, also when the one that did is
drained or lost after the node was sent; and a worker's heartbeat never turns a
drain back into online."""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from control_unit.pipeline_actions import do_create_pipeline
from control_unit.run_actions import do_start_run
from control_unit.worker_wait import do_note_waiting_nodes
from trace_monitor.models import TraceEvent, WorkerStatus
from trace_monitor.resource_monitor import HostLoad, WorkerPool, record_heartbeat

# Dispatches are not sent: the node stays queued as if no worker took it.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("no_broker")]

LOAD = HostLoad(cpu_percent=1.0, cpu_count=2, memory_used_bytes=1, memory_total_bytes=2)


def beat(name: str, *, capabilities: list[str], state: str = "online", pid: int | None = None) -> None:
    record_heartbeat(
        name=name, host="h", pid=pid or os.getpid(), concurrency=2, load=LOAD, npus=[], state=state,
        pool=WorkerPool(capabilities=capabilities),
    )  # fmt: skip


def gpu_run() -> Any:
    node = {"id": "train", "code": "", "requires": ["gpu"]}
    version = do_create_pipeline("gpu", {"schema_version": 1, "nodes": [node]}).latest_version()
    assert version is not None
    return do_start_run(version)


def reason_of(run: Any) -> str:
    return str(run.node_runs.get(node_id="train").reason)


def test_a_node_a_gpu_worker_can_take_has_nothing_to_explain():
    beat("gpu@h", capabilities=["gpu"])
    run = gpu_run()
    assert do_note_waiting_nodes() == 0
    assert reason_of(run) == ""


def test_a_node_whose_worker_is_drained_after_it_was_sent_says_why_it_waits_once():
    beat("gpu@h", capabilities=["gpu"])
    beat("plain@h", capabilities=[])
    run = gpu_run()
    WorkerStatus.objects.filter(name="gpu@h").update(state="draining")
    assert do_note_waiting_nodes() == 1
    assert do_note_waiting_nodes() == 0, "the same reason is not recorded twice"
    assert reason_of(run) == "waiting for a worker with capability gpu: none is online"
    assert TraceEvent.objects.filter(run=run, node_id="train", kind="waiting").count() == 1


def test_a_worker_silent_past_the_lost_time_offers_nothing(settings):
    beat("gpu@h", capabilities=["gpu"])
    run = gpu_run()
    WorkerStatus.objects.filter(name="gpu@h").update(
        last_seen=timezone.now() - timedelta(seconds=settings.FLOWKIT_WORKER_LOST_AFTER_S + 1)
    )
    assert do_note_waiting_nodes() == 1
    assert reason_of(run).startswith("waiting for a worker with capability gpu")


def test_a_heartbeat_keeps_a_drain_of_the_same_process_and_a_new_process_is_online_again():
    beat("w@h", capabilities=[], pid=100)
    WorkerStatus.objects.filter(name="w@h").update(state="draining")
    beat("w@h", capabilities=[], pid=100)
    assert WorkerStatus.objects.get(name="w@h").state == "draining"
    beat("w@h", capabilities=[], pid=100, state="stopped")
    assert WorkerStatus.objects.get(name="w@h").state == "stopped"
    beat("w@h", capabilities=[], pid=200)
    assert WorkerStatus.objects.get(name="w@h").state == "online"
