"""Pipelines the browser tests open, stored through the control unit as the API would."""

from __future__ import annotations

from django.contrib.auth.models import User

from control_unit.pipeline_actions import do_create_pipeline

CODE = (
    "from flowkit.node import Node\n"
    "node = Node()\n"
    "def main():\n"
    "    value = node.get_inputs().get('in')\n"
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
