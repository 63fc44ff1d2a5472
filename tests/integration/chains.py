"""A pipeline of parallel chains of short nodes with side effects, for the tests of
many workers: wide enough to keep every worker busy, long enough to stop a worker
while the run goes on. Each node sends its side effect with its idempotency key to
the test's SideEffects server (tests/integration/conftest.py)."""

from __future__ import annotations

from typing import Any

from tests.integration.conftest import SideEffects, nodes_of
from trace_monitor.models import NodeExecution


def step_node(url: str, sleep_s: float) -> str:
    return (
        "import time, urllib.request\n"
        "from flowkit.node import Node\n"
        "node = Node()\n"
        "def main():\n"
        f"    time.sleep({sleep_s})\n"
        f"    request = urllib.request.Request({url!r}, data=b'one step',\n"
        "                                     headers={'Idempotency-Key': node.idempotency_key})\n"
        "    urllib.request.urlopen(request, timeout=10).read()\n"
        "    return [], {'value': node.attempt}, 'stepped'\n"
        "node.register_main(main)\n"
        "node.run()\n"
    )


def chains_document(url: str, chains: int, layers: int, sleep_s: float) -> dict[str, Any]:
    """``chains`` parallel chains of ``layers`` nodes (``c{chain}l{layer}``), each node
    retried once if it fails."""
    limits = {"network": True, "retries": 1, "timeout_s": 60}
    nodes, edges = [], []
    for chain in range(chains):
        for layer in range(layers):
            node_id = f"c{chain}l{layer}"
            inputs = ["previous"] if layer else []
            nodes.append({"id": node_id, "code": step_node(url, sleep_s), "inputs": inputs,
                          "outputs": ["value"], "limits": limits})  # fmt: skip
            if layer:
                edges.append({"source": f"c{chain}l{layer - 1}", "source_port": "value",
                              "target": node_id, "target_port": "previous"})  # fmt: skip
    return {"schema_version": 1, "nodes": nodes, "edges": edges}


def assert_every_node_succeeded_once(run: Any, effects: SideEffects, node_count: int) -> None:
    """Every node of the run succeeded, its last attempt's execution succeeded, no
    execution is left running, and each node's side effect was applied exactly once.
    (An earlier attempt's NPU may have finished too, if its worker died before the
    result was recorded: the idempotency key keeps its side effect from counting twice.)"""
    nodes = nodes_of(run)
    assert len(nodes) == node_count
    not_succeeded = {node_id: (node.state, node.error) for node_id, node in nodes.items()
                     if node.state != "succeeded"}  # fmt: skip
    assert not not_succeeded, f"run {run.state} ({run.reason}): {not_succeeded}"
    assert run.state == "succeeded"
    outcomes = {(e.node_id, e.attempt): e.outcome for e in NodeExecution.objects.filter(run=run)}
    last = {node_id: outcomes.get((node_id, node.attempt)) for node_id, node in nodes.items()}
    assert set(last.values()) == {"succeeded"}, last
    assert "running" not in outcomes.values(), outcomes
    applied = {node_id: effects.applied[f"{run.id}/{node_id}"] for node_id in nodes}
    assert set(applied.values()) == {1}, f"side effects applied: {applied}"
