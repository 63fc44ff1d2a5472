"""The cost of FCB events with no worker and no NPU: a stand-in worker claims and
finishes each node of a layered run through the control unit's actions, on the real
PostgreSQL, and each node's claim + outcome (two FCB events, two transactions) is
timed. A run of 10 nodes is the baseline of a run of 1,000; a cancel of a 5,000-node
run is timed beside a cancel of a 10-node one."""

from __future__ import annotations

import time

from control_unit.dispatcher import dispatching_to
from control_unit.run_actions import do_cancel_run, do_claim_node, do_start_run
from tests.integration.conftest import RecordingDispatcher
from tests.integration.layered import finish, layered

# The shapes: layers x width.
SMALL, LARGE = (5, 2), (10, 100)
# The small run is repeated so that both give as many samples.
SMALL_REPEATS = 100
CANCELLED_SHAPE = (50, 100)
CANCELLED_RUNNING = 10


def event_costs(layers: int, width: int, repeats: int = 1) -> list[float]:
    """Seconds each node's claim and outcome took, over ``repeats`` runs."""
    costs: list[float] = []
    version = layered(f"fcb events {layers}x{width}", layers, width)
    with dispatching_to(RecordingDispatcher()) as dispatched:
        for _ in range(repeats):
            done = len(dispatched.nodes)
            run = do_start_run(version)
            while done < len(dispatched.nodes):
                run_id, node_id, _ = dispatched.nodes[done]
                began = time.perf_counter()
                finish(run_id, node_id, done)
                costs.append(time.perf_counter() - began)
                done += 1
            run.refresh_from_db()
            assert run.state == "succeeded", run.reason
    return costs


def cancel_seconds(layers: int, width: int) -> float:
    """A run of layers x width nodes, a few of them running: how long its cancel takes."""
    with dispatching_to(RecordingDispatcher()) as dispatched:
        run = do_start_run(layered(f"cancelled {layers}x{width}", layers, width))
        for run_id, node_id, _ in list(dispatched.nodes[:CANCELLED_RUNNING]):
            assert do_claim_node(run_id, node_id, 1, "stand-in-worker") is not None
        began = time.perf_counter()
        do_cancel_run(run.id)
        took = time.perf_counter() - began
    run.refresh_from_db()
    assert run.state == "cancelled"
    return took
