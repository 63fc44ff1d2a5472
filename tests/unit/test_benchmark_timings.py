"""The benchmarks' derivation of dispatch latency and engine overhead from a run's
trace rows (tests/benchmarks/timings.py), on fixed timestamps."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from tests.benchmarks.timings import node_timelines, percentile

T0 = datetime(2026, 1, 1, tzinfo=UTC)
# Unix timestamps as floats keep about a microsecond of precision in 2026.
MICROSECOND = 1e-6


def at(ms: float) -> datetime:
    return T0 + timedelta(milliseconds=ms)


def execution(node_id: str, attempt: int = 1, *, code_started_ms: float = 40.0) -> list[tuple]:
    """The trace rows of one node: dispatched at 0 ms, claimed at 3, about to take an NPU
    at 5, its code running at ``code_started_ms``, NPU gone at 300, outcome applied at 304."""
    code_started = at(code_started_ms).timestamp()
    return [
        (node_id, attempt, "queued", at(0), {"source": "pending", "target": "queued"}),
        (node_id, attempt, "running", at(3), {}),
        (node_id, attempt, "inputs", at(5), {"inputs": {}}),
        (node_id, attempt, "started", at(20), {"container_id": "c"}),
        (node_id, attempt, "log", at(60), {"message": "hello"}),
        (node_id, attempt, "outputs", at(299), {"outputs": {"value": 55, "code_started": code_started}}),
        (node_id, attempt, "finished", at(300), {"outcome": "succeeded"}),
        (node_id, attempt, "succeeded", at(304), {}),
    ]


def test_dispatch_latency_runs_from_the_fcb_dispatch_to_the_nodes_first_line():
    [timeline] = node_timelines(execution("n1", code_started_ms=40))
    assert timeline.dispatch_latency_s == pytest.approx(0.040, abs=MICROSECOND)


def test_engine_overhead_is_everything_but_the_containers_own_time():
    [timeline] = node_timelines(execution("n1"))
    assert timeline.celery_hop_s == pytest.approx(0.003, abs=MICROSECOND)
    assert timeline.claim_commit_s == pytest.approx(0.002, abs=MICROSECOND)
    assert timeline.outcome_s == pytest.approx(0.004, abs=MICROSECOND)
    assert timeline.engine_overhead_s == pytest.approx(0.009, abs=MICROSECOND)
    assert timeline.container_s == pytest.approx(0.295, abs=MICROSECOND)


def test_run_events_retries_and_unfinished_nodes_have_no_timeline():
    rows = [
        ("", 0, "run", at(0), {"source": "queued", "target": "running"}),
        *execution("done"),
        *execution("retried", attempt=2),
        *[row for row in execution("running") if row[2] not in ("finished", "succeeded")],
    ]
    assert [timeline.node_id for timeline in node_timelines(rows)] == ["done"]


def test_percentiles_interpolate_between_ranks():
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 50) == pytest.approx(2.5)
    assert percentile(values, 99) == pytest.approx(3.97)
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))
