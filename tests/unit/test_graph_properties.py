"""Properties of graph validation over generated documents."""

from __future__ import annotations

from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from control_unit.graph import (
    EXTRA_LIMIT_BOUNDS,
    NODE_ID_PATTERN,
    SCHEMA_VERSION,
    Problem,
    parse_graph,
    validate_document,
)
from control_unit.limits import LIMIT_BOUNDS

PROBLEM_CODES = {
    "invalid_document",
    "unsupported_schema_version",
    "empty_graph",
    "invalid_node",
    "invalid_node_id",
    "duplicate_node_id",
    "invalid_edge",
    "duplicate_edge_id",
    "dangling_edge",
    "unknown_port",
    "cycle",
    "input_fed_twice",
    "limit_out_of_range",
    "unknown_limit",
    "code_too_large",
    "document_too_large",
}
NODE_KEYS = ["id", "label", "code", "inputs", "outputs", "position", "limits", "continue_on_error"]
EDGE_KEYS = ["id", "source", "source_port", "target", "target_port"]
LIMIT_KEYS = [*LIMIT_BOUNDS, *EXTRA_LIMIT_BOUNDS, "network", "image"]

names = st.from_regex(NODE_ID_PATTERN, fullmatch=True)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=20,
)
NODE_VALUES = json_values | names | st.lists(names | json_values, max_size=3)
node_like = st.dictionaries(st.sampled_from(NODE_KEYS), NODE_VALUES, max_size=8) | st.fixed_dictionaries(
    {"id": names, "code": st.text(max_size=5)},
    optional={
        "inputs": st.lists(names | st.fixed_dictionaries({"name": names}, optional={"list": json_values})),
        "outputs": st.lists(names | json_values, max_size=3),
        "limits": st.dictionaries(st.sampled_from(LIMIT_KEYS) | st.text(max_size=5), json_values, max_size=4),
        "position": st.dictionaries(st.sampled_from(["x", "y"]), json_values),
    },
)
edge_like = st.dictionaries(st.sampled_from(EDGE_KEYS), names | json_values, max_size=5)
documents = st.fixed_dictionaries(
    {},
    optional={
        "schema_version": st.just(SCHEMA_VERSION) | json_values,
        "nodes": st.lists(node_like | json_values, max_size=6) | json_values,
        "edges": st.lists(edge_like | json_values, max_size=6) | json_values,
    },
)


@st.composite
def dags(draw: st.DrawFn) -> dict[str, Any]:
    """A valid document whose edges only run from lower to higher node index."""
    count = draw(st.integers(1, 12))
    node_ids = draw(st.lists(names, min_size=count, max_size=count, unique=True))
    outputs = [draw(st.lists(names, min_size=1, max_size=3, unique=True)) for _ in node_ids]
    nodes: list[dict[str, Any]] = []
    edges: list[dict[str, Any]] = []
    for target, target_id in enumerate(node_ids):
        sources = sorted(draw(st.sets(st.integers(0, target - 1), max_size=3))) if target else []
        gather = draw(st.booleans())  # one list input for every edge, or one input per edge
        inputs: list[Any] = [{"name": "many", "list": True}] if gather else []
        for source in sources:
            port = "many" if gather else f"from_{source}"
            if not gather:
                inputs.append(port)
            edges.append(
                {
                    "source": node_ids[source],
                    "source_port": draw(st.sampled_from(outputs[source])),
                    "target": target_id,
                    "target_port": port,
                    **({"id": f"e{len(edges)}"} if draw(st.booleans()) else {}),
                }
            )
        nodes.append({"id": target_id, "code": "", "inputs": inputs, "outputs": outputs[target]})
    return {"schema_version": SCHEMA_VERSION, "nodes": nodes, "edges": edges}


@settings(max_examples=200, deadline=None)
@given(dags())
def test_a_dag_is_valid_and_its_order_puts_every_edge_source_before_its_target(doc):
    assert validate_document(doc) == []
    order = parse_graph(doc).topological_order()
    place = {node_id: index for index, node_id in enumerate(order)}
    assert sorted(order) == sorted(node["id"] for node in doc["nodes"])
    for edge in doc["edges"]:
        assert place[edge["source"]] < place[edge["target"]]


@settings(max_examples=200, deadline=None)
@given(dags(), st.data())
def test_one_back_edge_from_a_descendant_to_an_ancestor_is_exactly_one_cycle_naming_both(doc, data):
    graph = parse_graph(doc)
    ancestors = [node_id for node_id in graph.nodes if graph.descendants(node_id)]
    assume(ancestors)
    ancestor = data.draw(st.sampled_from(ancestors))
    descendant = data.draw(st.sampled_from(sorted(graph.descendants(ancestor))))
    back = next(node for node in doc["nodes"] if node["id"] == ancestor)
    back["inputs"].append("back_edge")
    doc["edges"].append(
        {
            "source": descendant,
            "source_port": graph.nodes[descendant].outputs[0],
            "target": ancestor,
            "target_port": "back_edge",
        }
    )
    problems = validate_document(doc)
    assert [problem.code for problem in problems] == ["cycle"]
    cycle = problems[0].message.removeprefix("cycle: ").split(" -> ")
    assert {ancestor, descendant} <= set(cycle)
    assert cycle[0] == cycle[-1]


def assert_problems(result: Any) -> None:
    assert isinstance(result, list)
    assert all(isinstance(problem, Problem) for problem in result)
    assert {problem.code for problem in result} <= PROBLEM_CODES


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_validation_never_raises_on_any_json_value(doc):
    assert_problems(validate_document(doc))


@settings(max_examples=200, deadline=None)
@given(documents)
def test_validation_never_raises_on_documents_with_arbitrary_nodes_and_edges(doc):
    assert_problems(validate_document(doc))
