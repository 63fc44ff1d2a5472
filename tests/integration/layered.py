"""Layered pipelines of trivial nodes, and a stand-in worker that claims and finishes
their nodes through the control unit's actions as a node runner would (no NPU): for
the engine's scale tests and its FCB benchmark."""

from __future__ import annotations

from typing import Any

from control_unit.models import PipelineVersion
from control_unit.pipeline_actions import do_create_pipeline
from control_unit.run_actions import do_claim_node, do_record_node_outcome


def layered(name: str, layers: int, width: int) -> PipelineVersion:
    """``layers`` layers of ``width`` nodes; each node after the first layer takes the
    values of two nodes of the layer before on its list input."""
    nodes: list[dict[str, Any]] = []
    edges: list[dict[str, Any]] = []
    for layer in range(layers):
        for i in range(width):
            node: dict[str, Any] = {"id": f"l{layer}n{i}", "code": "", "outputs": ["v"]}
            if layer:
                node["inputs"] = [{"name": "values", "list": True}]
                for j in sorted({i, (i + 1) % width}):
                    edges.append(
                        {"source": f"l{layer - 1}n{j}", "source_port": "v",
                         "target": f"l{layer}n{i}", "target_port": "values"}
                    )  # fmt: skip
            nodes.append(node)
    version = do_create_pipeline(name, {"schema_version": 1, "nodes": nodes, "edges": edges}).latest_version()
    assert version is not None
    return version


def finish(run_id: str, node_id: str, value: int) -> bool:
    """Claim the node's first attempt and record its success, as a worker would."""
    assert do_claim_node(run_id, node_id, 1, "stand-in-worker") is not None, node_id
    return do_record_node_outcome(run_id, node_id, 1, {"outputs": {"v": value}, "next_nodes": []})
