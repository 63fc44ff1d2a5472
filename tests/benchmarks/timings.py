"""The moments of one node execution, read from its run's trace, and the intervals
the engine benchmarks report. Pure: trace rows in, seconds out.

Every moment but one is a trace event's ``at``, stamped by the process that did the
thing (all on this host, one clock):

- ``queued``: the control unit made the node ready and dispatched it (FCB pending ->
  queued, in the transaction whose commit sends the Celery task);
- ``claimed``: a worker claimed it (queued -> running);
- ``inputs``: the runner resolved its secrets and is about to take an NPU;
- ``finished``: the NPU is gone and the runner knows the outcome;
- ``succeeded``: the FCB applied the outcome (running -> succeeded); the successors'
  ``queued`` carries the same instant.

``code_started`` comes from inside the NPU: the benchmark's node code reads the
clock on its first line and returns it as an output (the runtime's own ``started``
event carries no time, and the runner does not store it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

CODE_STARTED_PORT = "code_started"


@dataclass(frozen=True)
class NodeTimeline:
    node_id: str
    queued: float
    claimed: float
    inputs: float
    code_started: float
    finished: float
    succeeded: float

    @property
    def dispatch_latency_s(self) -> float:
        """Node ready in the FCB -> the node's own code runs in its NPU."""
        return self.code_started - self.queued

    @property
    def celery_hop_s(self) -> float:
        """Dispatched -> claimed: the broker, the worker's prefetch and the claim's lock."""
        return self.claimed - self.queued

    @property
    def claim_commit_s(self) -> float:
        """Claimed -> about to take an NPU: the claim's commit, loading the node, secrets."""
        return self.inputs - self.claimed

    @property
    def outcome_s(self) -> float:
        """NPU gone -> outcome applied: the trace's last events, the execution row and the
        FCB transition (which also dispatches the successors)."""
        return self.succeeded - self.finished

    @property
    def container_s(self) -> float:
        """What the NPU itself costs: take or create, start, run the node, remove."""
        return self.finished - self.inputs

    @property
    def engine_overhead_s(self) -> float:
        """Everything between ready and applied that is not the container's own time."""
        return self.celery_hop_s + self.claim_commit_s + self.outcome_s


def node_timelines(events: Iterable[tuple[str, int, str, datetime, dict[str, Any]]]) -> list[NodeTimeline]:
    """The timelines of the first attempts that succeeded, from (node_id, attempt,
    kind, at, data) trace rows; a node that was retried or failed has none."""
    moments: dict[str, dict[str, Any]] = {}
    for node_id, attempt, kind, at, data in events:
        if not node_id or attempt != 1:
            continue
        node = moments.setdefault(node_id, {})
        if kind == "outputs":
            node[CODE_STARTED_PORT] = float(data["outputs"][CODE_STARTED_PORT])
        elif kind in ("queued", "running", "inputs", "finished", "succeeded"):
            node[kind] = at.timestamp()
    wanted = ("queued", "running", "inputs", CODE_STARTED_PORT, "finished", "succeeded")
    return [
        NodeTimeline(
            node_id=node_id,
            queued=node["queued"],
            claimed=node["running"],
            inputs=node["inputs"],
            code_started=node[CODE_STARTED_PORT],
            finished=node["finished"],
            succeeded=node["succeeded"],
        )
        for node_id, node in moments.items()
        if all(name in node for name in wanted)
    ]


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile, interpolated between the two nearest ranks (numpy's
    default); NaN for no values."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def ms(seconds: float) -> float:
    return seconds * 1000
