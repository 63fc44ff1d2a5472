"""GET /metrics: FlowKit's figures for Prometheus, read from the database at each scrape.

Runs by state, node executions by outcome, and three histograms the benchmark also
reads (docs/PERFORMANCE.md): how long a node waited between being due and its claim
(dispatch latency), how long its execution took in its NPU, and what the engine added
around it (its due moment to its outcome, less the execution). Then each worker's
last heartbeat, the queue depth it reported, and its NPUs by kind and state.

The histograms are cumulative over the rows the database keeps (what the trace's
retention leaves), so that Prometheus can take their rate. The endpoint is off (404)
until FLOWKIT_METRICS_TOKEN is set; a scrape then sends it as a bearer token. A token
rather than an address rule: behind a reverse proxy every request comes from the proxy.
"""

from __future__ import annotations

import hmac
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CollectorRegistry, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from control_unit.models import Run
from trace_monitor.models import NodeExecution, WorkerStatus

# Seconds: from a local hop (milliseconds) to a node that waited for a worker.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0)

# Per finished attempt (a node's last attempt in its run: NodeRun keeps that one), in
# seconds: due -> claimed, and due -> outcome less the execution's own time.
_ATTEMPT_TIMES = """
    SELECT EXTRACT(EPOCH FROM n.started_at - n.due_at) AS dispatch,
           GREATEST(0, EXTRACT(EPOCH FROM n.finished_at - n.due_at) - e.duration_s) AS overhead
      FROM control_unit_noderun n
      JOIN trace_monitor_nodeexecution e
        ON e.run_id = n.run_id AND e.node_id = n.node_id AND e.attempt = n.attempt
     WHERE n.due_at IS NOT NULL AND n.started_at IS NOT NULL AND n.finished_at IS NOT NULL
       AND e.duration_s IS NOT NULL
"""
_EXECUTION_TIMES = "SELECT duration_s FROM trace_monitor_nodeexecution WHERE duration_s IS NOT NULL"


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    token = settings.FLOWKIT_METRICS_TOKEN
    if not token:
        return JsonResponse(
            {"code": "not_found", "message": "metrics are off: set FLOWKIT_METRICS_TOKEN to turn them on"},
            status=404,
        )
    offered = request.headers.get("Authorization", "")
    if not hmac.compare_digest(offered.encode(), f"Bearer {token}".encode()):
        response = JsonResponse(
            {"code": "not_authenticated", "message": "send the metrics token: Authorization: Bearer <token>"},
            status=401,
        )
        response["WWW-Authenticate"] = 'Bearer realm="flowkit-metrics"'
        return response
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FlowKitCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


class FlowKitCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        runs = GaugeMetricFamily("flowkit_runs", "Runs by state", labels=["state"])
        for state, count in Run.objects.values_list("state").annotate(count=Count("id")).order_by("state"):
            runs.add_metric([state], count)
        yield runs

        executions = GaugeMetricFamily(
            "flowkit_node_executions", "Node executions (attempts) by outcome", labels=["outcome"]
        )
        by_outcome = (
            NodeExecution.objects.values_list("outcome").annotate(count=Count("id")).order_by("outcome")
        )
        for outcome, count in by_outcome:
            executions.add_metric([outcome], count)
        yield executions

        yield _histogram(
            "flowkit_node_execution_seconds",
            "An execution's time in its NPU",
            _EXECUTION_TIMES,
            "duration_s",
            DURATION_BUCKETS,
        )
        yield _histogram(
            "flowkit_dispatch_latency_seconds",
            "From a node being due to a worker's claim",
            _ATTEMPT_TIMES,
            "dispatch",
            LATENCY_BUCKETS,
        )
        yield _histogram(
            "flowkit_engine_overhead_seconds",
            "From a node being due to its recorded outcome, less its execution's own time",
            _ATTEMPT_TIMES,
            "overhead",
            LATENCY_BUCKETS,
        )
        yield from _worker_metrics(WorkerStatus.objects.all())


def _worker_metrics(workers: Iterable[WorkerStatus]) -> Iterator[Metric]:
    heartbeat = GaugeMetricFamily(
        "flowkit_worker_last_heartbeat_seconds",
        "Seconds since a worker's last heartbeat",
        labels=["worker", "state"],
    )
    depth = GaugeMetricFamily(
        "flowkit_worker_queue_depth",
        "Node jobs waiting in a worker's queues, at its last heartbeat",
        labels=["worker"],
    )
    npus = GaugeMetricFamily(
        "flowkit_npus",
        "A worker's NPUs by kind and state, at its last heartbeat",
        labels=["worker", "kind", "state"],
    )
    now = timezone.now()
    for worker in workers:
        heartbeat.add_metric([worker.name, worker.state], (now - worker.last_seen).total_seconds())
        if worker.state not in ("online", "draining"):
            continue
        depth.add_metric([worker.name], worker.queue_depth)
        kinds = [
            (str(npu.get("kind", "")), str(npu.get("state", "")))
            for npu in worker.npus
            if isinstance(npu, dict)
        ]
        for (kind, state), count in _counts(kinds):
            npus.add_metric([worker.name, kind, state], count)
    yield from (heartbeat, depth, npus)


def _counts(values: Iterable[Any]) -> list[tuple[Any, int]]:
    return sorted(Counter(values).items())


def _histogram(name: str, documentation: str, rows: str, column: str, bounds: tuple[float, ...]) -> Metric:
    """A histogram of ``column`` over the query ``rows``, counted in the database."""
    counts = ", ".join(f"COUNT(*) FILTER (WHERE {column} <= %s)" for _ in bounds)
    # ``rows`` and ``column`` are this module's constants; the bounds go as parameters.
    query = f"SELECT {counts}, COUNT(*), COALESCE(SUM({column}), 0) FROM ({rows}) AS observed"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(query, bounds)
        *cumulative, total, total_sum = cursor.fetchone()
    buckets = [(repr(bound), float(count)) for bound, count in zip(bounds, cumulative, strict=True)]
    buckets.append(("+Inf", float(total)))
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=float(total_sum))
