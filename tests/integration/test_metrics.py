"""GET /metrics: off until a token is set, refused without it, and after a run through
the real worker, its executions and their latencies are counted."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from control_unit.pipeline_actions import do_create_pipeline
from control_unit.run_actions import do_start_run
from tests.integration.conftest import node_code, wait_for_run
from trace_monitor.models import WorkerStatus

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "a-metrics-token-of-32-characters"


def scrape(authorization: str | None = f"Bearer {TOKEN}") -> Any:
    headers = {"Authorization": authorization} if authorization is not None else {}
    return Client().get("/metrics", headers=headers)


def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = scrape()
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def value(figures: dict, name: str, **labels: str) -> float:
    return figures.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_are_off_until_a_token_is_set(settings):
    settings.FLOWKIT_METRICS_TOKEN = ""
    response = scrape()
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer a-wrong-token-of-32-characters", f"Basic {TOKEN}", f"Bearer {TOKEN}x", TOKEN],
)
def test_a_scrape_without_the_token_is_refused(settings, authorization):
    settings.FLOWKIT_METRICS_TOKEN = TOKEN
    response = scrape(authorization)
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert TOKEN not in response.content.decode()


def test_a_scrape_after_a_run_finds_its_executions_and_latencies(settings, celery_worker):
    settings.FLOWKIT_METRICS_TOKEN = TOKEN
    before = samples()
    nodes = [{"id": f"n{i}", "code": node_code("value = 1"), "outputs": ["value"]} for i in range(3)]
    edges = [{"source": f"n{i}", "source_port": "value", "target": f"n{i + 1}", "target_port": "in"}
             for i in range(2)]  # fmt: skip
    for node in nodes[1:]:
        node["inputs"] = ["in"]
    version = do_create_pipeline(
        "scraped", {"schema_version": 1, "nodes": nodes, "edges": edges}
    ).latest_version()
    run = wait_for_run(do_start_run(version), wait_s=90)
    assert run.state == "succeeded"
    # Another test's flush may have emptied the workers' table: the next heartbeat
    # (every 2 s) writes the worker's row again.
    deadline = time.monotonic() + 30
    while not WorkerStatus.objects.filter(name=celery_worker.name, state="online").exists():
        assert time.monotonic() < deadline, "the worker never sent a heartbeat"
        time.sleep(0.2)

    after = samples()

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("flowkit_runs", state="succeeded") == 1
    assert grew("flowkit_node_executions", outcome="succeeded") == 3
    for histogram in ("flowkit_node_execution_seconds", "flowkit_dispatch_latency_seconds",
                      "flowkit_engine_overhead_seconds"):  # fmt: skip
        assert grew(f"{histogram}_count") == 3, histogram
        assert grew(f"{histogram}_sum") > 0, histogram
        assert value(after, f"{histogram}_bucket", le="+Inf") == value(after, f"{histogram}_count")
    # Dispatch within a minute on this machine: every one of the run's nodes is below the
    # 60 s bucket, and none is counted twice.
    assert grew("flowkit_dispatch_latency_seconds_bucket", le="60.0") == 3
    heartbeat = (
        "flowkit_worker_last_heartbeat_seconds",
        (("state", "online"), ("worker", celery_worker.name)),
    )
    assert heartbeat in after, "the worker's heartbeat is missing"
    assert 0 <= after[heartbeat] < 60
