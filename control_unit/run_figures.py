"""Per-pipeline figures: how often its runs succeed, and how long each node takes.

Computed in PostgreSQL from Run and NodeExecution rows (indexed by pipeline), so
they cost one grouped query whatever the history's length.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import Aggregate, Count, F, FloatField, Q, Sum
from django.db.models.functions import Extract

from control_unit.models import Run
from trace_monitor.models import NodeExecution

SLOWEST_NODES = 5


class Percentile(Aggregate):
    """PostgreSQL's continuous percentile: ``Percentile("duration_s", 0.95)``."""

    function = "PERCENTILE_CONT"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"

    def __init__(self, expression: Any, fraction: float) -> None:
        if not 0 <= fraction <= 1:
            raise ValueError("a percentile is between 0 and 1")
        super().__init__(expression, fraction=float(fraction), output_field=FloatField())


def pipeline_figures(pipeline_id: Any, since: datetime | None = None) -> dict[str, Any]:
    runs = Run.objects.filter(pipeline_id=pipeline_id)
    executions = NodeExecution.objects.filter(pipeline_id=pipeline_id, finished_at__isnull=False)
    if since is not None:
        runs = runs.filter(created_at__gte=since)
        executions = executions.filter(started_at__gte=since)
    by_state = dict(runs.values_list("state").annotate(count=Count("id")).order_by())
    finished = sum(by_state.get(state, 0) for state in ("succeeded", "failed", "cancelled"))
    run_seconds = runs.filter(finished_at__isnull=False, started_at__isnull=False).aggregate(
        p50=Percentile(Extract(F("finished_at") - F("started_at"), "epoch"), 0.5),
        p95=Percentile(Extract(F("finished_at") - F("started_at"), "epoch"), 0.95),
    )
    per_node = (
        executions.values("node_id")
        .annotate(
            executions=Count("id"),
            failures=Count("id", filter=Q(outcome="failed")),
            p50_s=Percentile("duration_s", 0.5),
            p95_s=Percentile("duration_s", 0.95),
            total_s=Sum("duration_s"),
        )
        .order_by("node_id")
    )
    nodes: list[dict[str, Any]] = []
    for row in per_node:
        node: dict[str, Any] = dict(row)
        node.update({name: _rounded(node[name]) for name in ("p50_s", "p95_s", "total_s")})
        nodes.append(node)
    slowest = sorted(nodes, key=lambda node: node["p95_s"] or 0, reverse=True)
    return {
        "pipeline_id": str(pipeline_id),
        "runs": sum(by_state.values()),
        "runs_by_state": by_state,
        "success_rate": round(by_state.get("succeeded", 0) / finished, 4) if finished else None,
        "run_duration_p50_s": _rounded(run_seconds["p50"]),
        "run_duration_p95_s": _rounded(run_seconds["p95"]),
        "nodes": nodes,
        "slowest_nodes": [node["node_id"] for node in slowest[:SLOWEST_NODES]],
    }


def _rounded(value: float | None) -> float | None:
    return round(float(value), 4) if value is not None else None
