"""The pipelines the engine benchmarks run (a sequential chain, a fan-out) and what
their runs' traces say once they finish."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from control_unit.models import PipelineVersion, Run
from control_unit.pipeline_actions import do_create_pipeline
from control_unit.run_actions import do_start_run
from tests.benchmarks.timings import CODE_STARTED_PORT, NodeTimeline, node_timelines
from tests.integration.conftest import nodes_of, wait_for_run
from trace_monitor.models import NodeExecution, TraceEvent

# The node's first line reads the clock: that is "user code starts" (see timings).
FIBO_NODE = f"""import time
{CODE_STARTED_PORT} = time.time()
from flowkit.node import Node
node = Node()
def fibo(n):
    return n if n < 2 else fibo(n - 1) + fibo(n - 2)
def main():
    return [], {{"value": fibo(10), "{CODE_STARTED_PORT}": {CODE_STARTED_PORT}}}, "fibo(10)"
node.register_main(main)
node.run()
"""
TRIVIAL_NODE = f"""import time
{CODE_STARTED_PORT} = time.time()
from flowkit.node import Node
node = Node()
def main():
    print("trivial")
    return [], {{"value": 1, "{CODE_STARTED_PORT}": {CODE_STARTED_PORT}}}, "done"
node.register_main(main)
node.run()
"""
OUTPUTS = ["value", CODE_STARTED_PORT]
RUN_WAIT_S = 600
# A node's isolation (control_unit.graph): its dedicated NPU (the default), or a
# single-use container per execution.
DEDICATED, CONTAINER = "dedicated", "container"


def _isolated(node: dict[str, Any], isolation: str) -> dict[str, Any]:
    return {**node, "isolation": isolation} if isolation != DEDICATED else node


def chain_document(count: int, code: str, isolation: str = DEDICATED) -> dict[str, Any]:
    """n1 -> n2 -> ... -> n<count>: each node waits for the one before."""
    nodes = [
        _isolated(
            {"id": f"n{i}", "code": code, "inputs": ["previous"] if i > 1 else [], "outputs": OUTPUTS},
            isolation,
        )
        for i in range(1, count + 1)
    ]
    edges = [
        {"id": f"e{i}", "source": f"n{i}", "source_port": "value", "target": f"n{i + 1}",
         "target_port": "previous"}
        for i in range(1, count)
    ]  # fmt: skip
    return {"schema_version": 1, "nodes": nodes, "edges": edges}


def fan_out_document(width: int, code: str, isolation: str = DEDICATED) -> dict[str, Any]:
    """One source node, then ``width`` nodes that all become ready when it succeeds."""
    nodes = [_isolated({"id": "source", "code": code, "outputs": OUTPUTS}, isolation)]
    nodes += [
        _isolated({"id": f"leaf{i}", "code": code, "inputs": ["x"], "outputs": OUTPUTS}, isolation)
        for i in range(width)
    ]
    edges = [
        {"id": f"e{i}", "source": "source", "source_port": "value", "target": f"leaf{i}", "target_port": "x"}
        for i in range(width)
    ]
    return {"schema_version": 1, "nodes": nodes, "edges": edges}


@dataclass(frozen=True)
class FinishedRun:
    run: Run
    wall_s: float  # run started -> run finished, both stamped by the FCB
    timelines: list[NodeTimeline]  # of the nodes that succeeded
    workers: frozenset[str]  # the workers that ran its nodes
    failures: dict[str, str]  # node id -> its error, for the nodes that failed
    containers: dict[str, str]  # node id -> the NPU container its first attempt ran in

    @property
    def succeeded(self) -> bool:
        return self.run.state == "succeeded"


def saved_pipeline(name: str, document: dict[str, Any]) -> PipelineVersion:
    """A freshly saved pipeline's version: no worker has an NPU of its nodes yet."""
    version = do_create_pipeline(name, document).latest_version()
    assert version is not None
    return version


def run_to_completion(name: str, document: dict[str, Any]) -> FinishedRun:
    """Run a new pipeline to its end (see ``run_version_to_completion``)."""
    return run_version_to_completion(saved_pipeline(name, document))


def run_version_to_completion(version: PipelineVersion) -> FinishedRun:
    """Run a pipeline to its end. A failed node does not stop the benchmark: on a
    shared Docker engine another process's clean-up can remove an NPU under a node,
    so the caller decides what a failure means for its figure, and reports it."""
    run = wait_for_run(do_start_run(version), wait_s=RUN_WAIT_S)
    assert run.started_at is not None
    assert run.finished_at is not None
    nodes = nodes_of(run).values()
    return FinishedRun(
        run=run,
        wall_s=(run.finished_at - run.started_at).total_seconds(),
        timelines=timelines_of(run),
        workers=frozenset(node.worker for node in nodes if node.worker),
        failures={
            node.node_id: f"{(node.error or {}).get('error_type')}: {(node.error or {}).get('message')}"
            for node in nodes
            if node.state == "failed"
        },
        containers=dict(
            NodeExecution.objects.filter(run=run, attempt=1).values_list("node_id", "container_id")
        ),
    )


def timelines_of(run: Run) -> list[NodeTimeline]:
    rows = TraceEvent.objects.filter(run=run).order_by("seq")
    return node_timelines(rows.values_list("node_id", "attempt", "kind", "at", "data"))
