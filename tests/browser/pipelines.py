"""Pipelines the browser tests open, stored through the control unit as the API would."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User

from control_unit.pipeline_actions import do_create_pipeline

CODE = (
    "from flowkit.node import Node\n"
    "node = Node()\n"
    "def main():\n"
    "    value = node.get_inputs().get('in')\n"
    "    if value == 'wait':  # a node test to cancel\n"
    "        import time\n"
    "        time.sleep(300)\n"
    "    print('doubling', value)\n"
    "    return [], {'out': value * 2}, 'doubled'\n"
    "node.register_main(main)\n"
    "node.run()\n"
)


def two_node_pipeline(
    name: str = "two nodes", positions: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (320, 0))
) -> str:
    """a -> b, saved through the control unit as the server would."""
    node = {"code": CODE, "inputs": ["in"], "outputs": ["out"]}
    (ax, ay), (bx, by) = positions
    document = {
        "schema_version": 1,
        "nodes": [
            {"id": "a", "label": "A", "position": {"x": ax, "y": ay}, **node},
            {"id": "b", "label": "B", "position": {"x": bx, "y": by}, **node},
        ],
        "edges": [{"id": "e1", "source": "a", "source_port": "out", "target": "b", "target_port": "in"}],
    }
    return str(do_create_pipeline(name, document, User.objects.first()).id)


def layered_pipeline(name: str, layers: int, width: int) -> str:
    """layers x width nodes; each node after the first layer collects two nodes of the
    layer before on a list port. The shape of a big real pipeline: wide and deep."""
    nodes: list[dict[str, Any]] = []
    edges: list[dict[str, str]] = []
    for layer in range(layers):
        for row in range(width):
            node_id = f"n{layer}_{row}"
            nodes.append({
                "id": node_id, "label": f"Step {layer}.{row}", "code": CODE,
                "inputs": [{"name": "in", "list": True}] if layer else [], "outputs": ["out"],
                "position": {"x": layer * 260, "y": row * 110},
            })  # fmt: skip
            if layer:
                for source_row in {row, (row + 1) % width}:
                    edges.append({
                        "id": f"e{len(edges) + 1}", "source": f"n{layer - 1}_{source_row}",
                        "source_port": "out", "target": node_id, "target_port": "in",
                    })  # fmt: skip
    document = {"schema_version": 1, "nodes": nodes, "edges": edges}
    return str(do_create_pipeline(name, document, User.objects.first()).id)
