"""A node's inputs as a worker or a person reads them.

A source node's inputs are stored (the run's input). Any other node's are stored as
references to its upstream nodes' outputs (NodeRun.input_refs, from fcb's InputRef),
so a value fanned out to many nodes is stored once, and are put together here when
read: from the upstream rows the reader already holds, or by one query for the rest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from control_unit.fcb import InputRef, resolve_inputs
from control_unit.graph import Graph
from control_unit.models import NodeRun, Run


def refs_to_row(refs: tuple[InputRef, ...] | None) -> list[list[str]] | None:
    return None if refs is None else [[ref.port, ref.source, ref.source_port] for ref in refs]


def refs_from_row(value: Any) -> tuple[InputRef, ...] | None:
    return None if value is None else tuple(InputRef(*item) for item in value)


def with_inputs(run_id: Any, graph: Graph, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give each node row (a dict with "node_id", "inputs" and "input_refs", which is
    removed) its inputs. Rows that carry "outputs" serve as upstream nodes too."""
    refs = {row["node_id"]: refs_from_row(row.pop("input_refs", None)) for row in rows}
    sources = {ref.source for node_refs in refs.values() if node_refs for ref in node_refs}
    outputs: dict[str, Mapping[str, Any] | None] = {
        row["node_id"]: row["outputs"] for row in rows if "outputs" in row and row["node_id"] in sources
    }
    if missing := sources - outputs.keys():
        rows_wanted = NodeRun.objects.filter(run_id=run_id, node_id__in=missing)
        outputs.update(rows_wanted.values_list("node_id", "outputs"))
    for row in rows:
        node_refs = refs[row["node_id"]]
        if node_refs is not None and row["node_id"] in graph.nodes:
            row["inputs"] = resolve_inputs(graph, row["node_id"], node_refs, outputs)
    return rows


def inputs_of(run_id: Any, graph: Graph, node_id: str, inputs: Any, input_refs: Any) -> dict[str, Any]:
    """One node's inputs, from its stored ``inputs`` and ``input_refs``."""
    (row,) = with_inputs(run_id, graph, [{"node_id": node_id, "inputs": inputs, "input_refs": input_refs}])
    return dict(row["inputs"] or {})


def node_rows(run: Run, graph: Graph, fields: Sequence[str], **filters: Any) -> list[dict[str, Any]]:
    """The run's node rows (``fields``, "inputs" among them; ``filters`` narrow them),
    in order, each with its inputs put together."""
    rows = NodeRun.objects.filter(run=run, **filters).order_by("id").values(*fields, "input_refs")
    return with_inputs(run.id, graph, list(rows))
