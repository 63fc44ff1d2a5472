"""Pipeline documents: every problem is reported at once and names its culprit; a valid
document becomes a Graph that answers questions about its shape."""

from __future__ import annotations

import itertools
import json
import pickle
from pathlib import Path
from typing import Any

import pytest

from control_unit.graph import (
    EXTRA_LIMIT_BOUNDS,
    SCHEMA_VERSION,
    EdgeSpec,
    Graph,
    InvalidPipeline,
    Port,
    Problem,
    document_size,
    parse_graph,
    validate_document,
)
from control_unit.limits import LIMIT_BOUNDS

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "pipelines"
ALL_BOUNDS = {**LIMIT_BOUNDS, **EXTRA_LIMIT_BOUNDS}


def node(
    node_id: str, inputs: list[Any] | None = None, outputs: list[Any] | None = None, **fields: Any
) -> dict:
    return {"id": node_id, "code": "", "inputs": inputs or [], "outputs": outputs or [], **fields}


def edge(source: str, target: str, source_port: str = "out", target_port: str = "in", **fields: Any) -> dict:
    return {
        "source": source,
        "source_port": source_port,
        "target": target,
        "target_port": target_port,
        **fields,
    }


def document(nodes: list[Any], edges: list[Any] | None = None, **fields: Any) -> dict:
    return {"schema_version": SCHEMA_VERSION, "nodes": nodes, "edges": edges or [], **fields}


def chain(*node_ids: str) -> dict:
    """Nodes with one input "in" and one output "out", each feeding the next."""
    nodes = [node(node_id, ["in"], ["out"]) for node_id in node_ids]
    return document(nodes, [edge(a, b) for a, b in itertools.pairwise(node_ids)])


def the_problem(doc: Any, code: str, **limits: int) -> Problem:
    """The one problem the document has, which must carry ``code``."""
    problems = validate_document(doc, **limits)
    assert [problem.code for problem in problems] == [code], problems
    return problems[0]


def codes(doc: Any) -> list[str]:
    return [problem.code for problem in validate_document(doc)]


def fan_out_fan_in() -> Graph:
    """split feeds left and right; both feed merge's list input; merge feeds report."""
    return parse_graph(
        document(
            [
                node("split", [], ["out"]),
                node("left", ["in"], ["out"]),
                node("right", ["in"], ["out"]),
                node("merge", [{"name": "parts", "list": True}], ["out"]),
                node("report", ["in"], []),
            ],
            [
                edge("split", "left", id="s-l"),
                edge("split", "right", id="s-r"),
                edge("left", "merge", target_port="parts", id="l-m"),
                edge("right", "merge", target_port="parts", id="r-m"),
                edge("merge", "report", id="m-r"),
            ],
        )
    )


# -- the document as a whole ----------------------------------------------------


def test_a_minimal_document_has_no_problems():
    assert validate_document(document([node("only")])) == []


@pytest.mark.parametrize("doc", [[], "pipeline", 3, None])
def test_a_document_that_is_not_an_object_is_an_invalid_document(doc):
    problem = the_problem(doc, "invalid_document")
    assert "must be a JSON object" in problem.message


def test_nodes_that_are_not_a_list_make_an_invalid_document():
    problem = the_problem(document({"a": node("a")}), "invalid_document")
    assert "'nodes' must be a list" in problem.message


def test_edges_that_are_not_a_list_make_an_invalid_document():
    problem = the_problem(document([node("a")], edges={"e": edge("a", "a")}), "invalid_document")
    assert "'edges' must be a list" in problem.message


def test_a_document_without_edges_is_valid():
    doc = document([node("a")])
    del doc["edges"]
    assert validate_document(doc) == []


def test_a_missing_schema_version_is_not_assumed_and_the_supported_one_is_named():
    doc = document([node("a")])
    del doc["schema_version"]
    problem = the_problem(doc, "unsupported_schema_version")
    assert "no schema_version" in problem.message
    assert f"supported version is {SCHEMA_VERSION}" in problem.message


@pytest.mark.parametrize("version", [2, 0, "1", 1.5, True, None])
def test_any_other_schema_version_is_unsupported(version):
    problem = the_problem(document([node("a")], schema_version=version), "unsupported_schema_version")
    assert f"supported version is {SCHEMA_VERSION}" in problem.message


def test_a_document_with_an_empty_node_list_is_an_empty_graph():
    assert the_problem(document([]), "empty_graph").message == "the pipeline has no nodes"


def test_a_document_without_nodes_is_an_empty_graph():
    doc = document([])
    del doc["nodes"]
    the_problem(doc, "empty_graph")


def test_other_top_level_keys_are_ignored():
    assert validate_document(document([node("a")], name="etl", description="nightly", extra={"x": 1})) == []


def test_document_size_is_the_length_of_its_compact_utf8_json():
    assert document_size({"a": [1, 2]}) == len(b'{"a":[1,2]}')
    assert document_size({"é": "€"}) == len('{"é":"€"}'.encode())


def test_a_document_over_the_size_limit_reports_only_its_size_and_both_numbers():
    doc = document([node("a", code="x" * 1000), "not a node"], schema_version=99)
    size = document_size(doc)
    problem = the_problem(doc, "document_too_large", max_document_bytes=500)
    assert str(size) in problem.message
    assert "500" in problem.message


def test_the_default_document_size_limit_is_two_mebibytes():
    doc = document([node("a", code="x" * (2 * 1024 * 1024))])
    assert codes(doc) == ["document_too_large"]


def test_a_document_json_cannot_encode_is_an_invalid_document():
    the_problem(document([node("a", label=object())]), "invalid_document")


def test_nan_in_a_document_is_an_invalid_document():
    problem = the_problem(document([node("a")], name=float("nan")), "invalid_document")
    assert "NaN" in problem.message


# -- nodes ----------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["a", 5, None, ["a"]])
def test_a_node_that_is_not_an_object_is_an_invalid_node_named_by_its_place(raw):
    problem = the_problem(document([node("a"), raw]), "invalid_node")
    assert problem.message.startswith("nodes[1] must be an object")


@pytest.mark.parametrize("node_id", ["", "1st", "a b", "a.b", "é", "x" * 65, "-a"])
def test_a_node_id_outside_the_pattern_is_invalid_and_named(node_id):
    problem = the_problem(document([node(node_id)]), "invalid_node_id")
    assert repr(node_id) in problem.message
    assert problem.node == node_id


@pytest.mark.parametrize("node_id", ["a", "_", "A-b_9", "x" * 64, "_-"])
def test_a_node_id_inside_the_pattern_is_valid(node_id):
    assert validate_document(document([node(node_id)])) == []


def test_a_node_without_an_id_is_named_by_its_place():
    raw = node("a")
    del raw["id"]
    problem = the_problem(document([node("b"), raw]), "invalid_node_id")
    assert problem.message == "nodes[1] has no id"


def test_a_node_id_that_is_not_a_string_is_invalid():
    problem = the_problem(document([node(7)]), "invalid_node_id")
    assert "nodes[0]" in problem.message


def test_a_duplicate_node_id_is_reported_once_with_every_place():
    problem = the_problem(document([node("a"), node("b"), node("a"), node("a")]), "duplicate_node_id")
    assert problem.node == "a"
    assert "nodes[0], nodes[2], nodes[3]" in problem.message


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("label", 3),
        ("code", ["print(1)"]),
        ("inputs", "a"),
        ("outputs", {"out": True}),
        ("position", [0, 0]),
        ("position", {"x": "0", "y": 0}),
        ("position", {"x": 0}),
        ("position", {"x": 0, "y": float("inf")}),
        ("limits", [1]),
        ("continue_on_error", "yes"),
    ],
)
def test_a_node_field_of_the_wrong_type_is_an_invalid_node_naming_node_and_field(key, value):
    problems = validate_document(document([node("a", **{key: value})]))
    assert "invalid_node" in [problem.code for problem in problems]
    problem = next(problem for problem in problems if problem.code == "invalid_node")
    assert problem.node == "a"
    assert problem.message.startswith("node 'a'")
    assert key in problem.message


def test_a_node_without_code_is_an_invalid_node():
    raw = node("a")
    del raw["code"]
    assert "no code" in the_problem(document([raw]), "invalid_node").message


@pytest.mark.parametrize("port", [3, None, {"list": True}, {"name": 1}, {"name": "a", "list": "yes"}])
def test_an_unreadable_input_port_is_an_invalid_node(port):
    problem = the_problem(document([node("a", [port])]), "invalid_node")
    assert "inputs[0]" in problem.message


@pytest.mark.parametrize("side", ["inputs", "outputs"])
def test_a_port_name_outside_the_pattern_is_an_invalid_node(side):
    problem = the_problem(document([node("a", **{side: ["bad port"]})]), "invalid_node")
    assert "'bad port'" in problem.message


@pytest.mark.parametrize("side", ["inputs", "outputs"])
def test_a_port_declared_twice_in_a_node_is_an_invalid_node(side):
    problem = the_problem(document([node("a", **{side: ["p", "q", "p"]})]), "invalid_node")
    assert problem.message == f"node 'a' declares {side[:-1]} 'p' more than once"


def test_a_list_input_and_a_plain_input_of_one_name_are_declared_twice():
    the_problem(document([node("a", ["p", {"name": "p", "list": True}])]), "invalid_node")


def test_an_input_and_an_output_may_share_a_name():
    assert validate_document(document([node("a", ["rows"], ["rows"])])) == []


def test_code_over_the_limit_names_the_node_and_both_sizes_in_utf8_bytes():
    code = "€" * 100  # 300 bytes in UTF-8, 100 characters
    problem = the_problem(document([node("big", code=code)]), "code_too_large", max_code_bytes=299)
    assert problem.node == "big"
    assert "'big'" in problem.message
    assert "300 bytes" in problem.message
    assert "299 bytes" in problem.message


def test_code_at_the_limit_is_accepted():
    assert validate_document(document([node("a", code="€" * 100)]), max_code_bytes=300) == []


# -- limits ---------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ALL_BOUNDS))
def test_every_numeric_limit_is_accepted_at_its_bounds(name):
    low, high = ALL_BOUNDS[name]
    for value in (low, high):
        assert validate_document(document([node("a", limits={name: value})])) == []


@pytest.mark.parametrize(
    ("name", "value"),
    [(name, bounds[0] - 1) for name, bounds in sorted(ALL_BOUNDS.items())]
    + [(name, bounds[1] + 1) for name, bounds in sorted(ALL_BOUNDS.items())],
)
def test_a_numeric_limit_outside_its_bounds_is_out_of_range(name, value):
    problem = the_problem(document([node("a", limits={name: value})]), "limit_out_of_range")
    low, high = ALL_BOUNDS[name]
    assert problem.node == "a"
    assert name in problem.message
    assert f"between {low:g} and {high:g}" in problem.message


@pytest.mark.parametrize("name", sorted(ALL_BOUNDS))
def test_a_bool_is_not_a_number_for_a_limit(name):
    the_problem(document([node("a", limits={name: True})]), "limit_out_of_range")


@pytest.mark.parametrize("name", sorted(ALL_BOUNDS))
def test_a_string_is_not_a_number_for_a_limit(name):
    the_problem(document([node("a", limits={name: "5"})]), "limit_out_of_range")


def test_retries_must_be_a_whole_number():
    problem = the_problem(document([node("a", limits={"retries": 1.5})]), "limit_out_of_range")
    assert "whole number" in problem.message


@pytest.mark.parametrize("value", [0, 1, "false", None])
def test_network_must_be_a_bool(value):
    problem = the_problem(document([node("a", limits={"network": value})]), "limit_out_of_range")
    assert "network" in problem.message


@pytest.mark.parametrize("value", ["", "x" * 201, 3, ["flowkit/npu"]])
def test_image_must_be_a_non_empty_string_of_at_most_200_characters(value):
    problem = the_problem(document([node("a", limits={"image": value})]), "limit_out_of_range")
    assert "image" in problem.message


def test_an_unknown_limit_names_the_node_and_the_key():
    problem = the_problem(document([node("a", limits={"gpus": 1})]), "unknown_limit")
    assert problem.node == "a"
    assert "'gpus'" in problem.message


def test_each_unknown_limit_is_its_own_problem():
    assert codes(document([node("a", limits={"gpus": 1, "disk_mb": 9})])) == [
        "unknown_limit",
        "unknown_limit",
    ]


# -- edges ----------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["a->b", 1, None, []])
def test_an_edge_that_is_not_an_object_is_an_invalid_edge_named_by_its_place(raw):
    problem = the_problem(document([node("a")], [raw]), "invalid_edge")
    assert problem.message.startswith("edges[0] must be an object")


@pytest.mark.parametrize("key", ["source", "source_port", "target", "target_port"])
def test_an_edge_missing_an_end_names_the_edge_and_the_field(key):
    raw = edge("a", "b", id="e1")
    del raw[key]
    doc = chain("a", "b")
    doc["edges"] = [raw]
    problem = the_problem(doc, "invalid_edge")
    assert problem.edge == "e1"
    assert problem.message == f"edge 'e1' has no {key}"


def test_an_edge_end_that_is_not_a_string_is_an_invalid_edge():
    doc = chain("a", "b")
    doc["edges"] = [edge("a", "b", target_port=["in"])]
    assert "target_port" in the_problem(doc, "invalid_edge").message


@pytest.mark.parametrize("edge_id", ["", 5, ["e"]])
def test_an_edge_id_must_be_a_non_empty_string(edge_id):
    doc = chain("a", "b")
    doc["edges"] = [edge("a", "b", id=edge_id)]
    assert the_problem(doc, "invalid_edge").message.startswith("edges[0] has the id")


def test_a_duplicate_edge_id_names_the_id_and_every_place():
    doc = document([node("a", [], ["out"]), node("b", ["in", "in2"])])
    doc["edges"] = [edge("a", "b", id="e"), edge("a", "b", target_port="in2", id="e")]
    problem = the_problem(doc, "duplicate_edge_id")
    assert problem.edge == "e"
    assert "edges[0], edges[1]" in problem.message


def test_an_edge_from_a_missing_node_names_the_edge_and_the_source():
    doc = chain("b")
    doc["edges"] = [edge("nope", "b", id="e1")]
    problem = the_problem(doc, "dangling_edge")
    assert problem.edge == "e1"
    assert problem.message == "edge 'e1' comes from node 'nope', which does not exist"


def test_an_edge_to_a_missing_node_names_the_edge_and_the_target():
    doc = chain("a")
    doc["edges"] = [edge("a", "nope", id="e1")]
    problem = the_problem(doc, "dangling_edge")
    assert problem.message == "edge 'e1' points to node 'nope', which does not exist"


def test_an_edge_between_two_missing_nodes_reports_both_ends():
    doc = chain("a")
    doc["edges"] = [edge("x", "y", id="e1")]
    messages = [problem.message for problem in validate_document(doc)]
    assert messages == [
        "edge 'e1' comes from node 'x', which does not exist",
        "edge 'e1' points to node 'y', which does not exist",
    ]


def test_an_unknown_source_port_names_the_edge_node_and_port():
    doc = chain("a", "b")
    doc["edges"] = [edge("a", "b", source_port="result", id="e1")]
    problem = the_problem(doc, "unknown_port")
    assert (problem.node, problem.edge) == ("a", "e1")
    assert "'a' has no output 'result'" in problem.message


def test_an_unknown_target_port_names_the_edge_node_and_port():
    doc = chain("a", "b")
    doc["edges"] = [edge("a", "b", target_port="items", id="e1")]
    problem = the_problem(doc, "unknown_port")
    assert (problem.node, problem.edge) == ("b", "e1")
    assert "'b' has no input 'items'" in problem.message


def test_an_input_fed_by_two_edges_names_the_node_the_port_and_both_edges():
    doc = chain("a", "b", "c")
    doc["edges"].append(edge("a", "c", id="shortcut"))
    problem = the_problem(doc, "input_fed_twice")
    assert problem.node == "c"
    assert "input 'in' of node 'c'" in problem.message
    assert "'b.out->c.in'" in problem.message
    assert "'shortcut'" in problem.message


def test_a_list_input_may_be_fed_by_several_edges():
    doc = document(
        [node("a", [], ["out"]), node("b", [], ["out"]), node("c", [{"name": "in", "list": True}])],
        [edge("a", "c"), edge("b", "c")],
    )
    assert validate_document(doc) == []


# -- cycles ---------------------------------------------------------------------


def test_a_cycle_is_reported_once_naming_its_nodes_in_order():
    doc = chain("a", "b", "c")
    doc["nodes"][0]["inputs"] = ["back"]
    doc["edges"].append(edge("c", "a", target_port="back"))
    problem = the_problem(doc, "cycle")
    assert problem.message == "cycle: a -> b -> c -> a"
    assert problem.node == "a"


def test_a_self_loop_is_a_cycle():
    doc = document([node("a", ["in"], ["out"])], [edge("a", "a")])
    assert the_problem(doc, "cycle").message == "cycle: a -> a"


def test_separate_cycles_are_each_reported():
    doc = document(
        [node(node_id, ["in"], ["out"]) for node_id in ("a", "b", "c", "d")],
        [edge("a", "b"), edge("b", "a"), edge("c", "d"), edge("d", "c")],
    )
    assert [problem.message for problem in validate_document(doc)] == [
        "cycle: a -> b -> a",
        "cycle: c -> d -> c",
    ]


def test_a_ten_thousand_node_cycle_is_found_without_recursion():
    node_ids = [f"n{index}" for index in range(10_000)]
    doc = chain(*node_ids)
    doc["nodes"][0]["inputs"] = ["back"]
    doc["edges"].append(edge(node_ids[-1], node_ids[0], target_port="back"))
    problem = the_problem(doc, "cycle")
    assert problem.message == f"cycle: {' -> '.join(node_ids)} -> n0"


def test_dangling_edges_do_not_disturb_cycle_detection():
    doc = document(
        [node("a", ["in"], ["out"]), node("b", ["in"], ["out"])],
        [edge("a", "b"), edge("b", "ghost"), edge("ghost", "a", id="g"), edge("b", "a", target_port="in")],
    )
    assert sorted(codes(doc)) == ["cycle", "dangling_edge", "dangling_edge", "input_fed_twice"]


# -- several problems at once ---------------------------------------------------


def test_every_problem_in_a_document_is_reported_at_once():
    doc = {
        "nodes": [
            node("a", ["in"], ["out"], limits={"timeout_s": 0, "gpus": 1}),
            node("a"),
            node("b c"),
            node("big", code="x" * 50),
            node("d", ["in"], ["out"]),
            "not a node",
        ],
        "edges": [
            edge("a", "ghost"),
            edge("a", "a", source_port="nope"),
            edge("d", "d", id="e"),
            edge("d", "d", id="e", target_port="in"),
            7,
        ],
    }
    problems = validate_document(doc, max_code_bytes=10)
    assert sorted({problem.code for problem in problems}) == [
        "code_too_large",
        "cycle",
        "dangling_edge",
        "duplicate_edge_id",
        "duplicate_node_id",
        "input_fed_twice",
        "invalid_edge",
        "invalid_node",
        "invalid_node_id",
        "limit_out_of_range",
        "unknown_limit",
        "unknown_port",
        "unsupported_schema_version",
    ]


def test_a_problem_as_a_dict_leaves_out_what_it_does_not_name():
    assert Problem("cycle", "cycle: a -> a", node="a").as_dict() == {
        "code": "cycle",
        "message": "cycle: a -> a",
        "node": "a",
    }


def test_invalid_pipeline_counts_its_problems_and_joins_their_messages():
    error = InvalidPipeline([Problem("empty_graph", "no nodes"), Problem("cycle", "cycle: a -> a")])
    assert str(error) == "2 problems: no nodes; cycle: a -> a"
    assert [problem.code for problem in error.problems] == ["empty_graph", "cycle"]


def test_parse_graph_raises_invalid_pipeline_with_every_problem():
    doc = document([node("1a"), node("b", limits={"pids": 1})])
    with pytest.raises(InvalidPipeline) as caught:
        parse_graph(doc)
    assert [problem.code for problem in caught.value.problems] == ["invalid_node_id", "limit_out_of_range"]


# -- the graph ------------------------------------------------------------------


def test_upstream_lists_distinct_direct_predecessors_in_document_order():
    graph = fan_out_fan_in()
    assert graph.upstream("merge") == ("left", "right")
    assert graph.upstream("split") == ()


def test_downstream_lists_distinct_direct_successors_in_document_order():
    graph = fan_out_fan_in()
    assert graph.downstream("split") == ("left", "right")
    assert graph.downstream("report") == ()


def test_incoming_lists_the_edges_into_a_node_in_document_order():
    assert [edge.id for edge in fan_out_fan_in().incoming("merge")] == ["l-m", "r-m"]


def test_sources_are_the_nodes_without_incoming_edges():
    assert fan_out_fan_in().sources() == ("split",)


def test_ancestors_are_every_node_with_a_path_to_the_node():
    graph = fan_out_fan_in()
    assert graph.ancestors("report") == {"split", "left", "right", "merge"}
    assert graph.ancestors("split") == frozenset()


def test_descendants_are_every_node_the_node_has_a_path_to():
    graph = fan_out_fan_in()
    assert graph.descendants("left") == {"merge", "report"}
    assert graph.descendants("report") == frozenset()


def test_topological_order_puts_each_node_after_its_predecessors():
    assert fan_out_fan_in().topological_order() == ("split", "left", "right", "merge", "report")


def test_asking_about_an_unknown_node_is_a_key_error():
    with pytest.raises(KeyError):
        fan_out_fan_in().upstream("ghost")


def test_nodes_keep_document_order():
    assert list(fan_out_fan_in().nodes) == ["split", "left", "right", "merge", "report"]


def test_string_ports_are_shorthand_for_non_list_ports():
    graph = parse_graph(document([node("a", ["x", {"name": "y", "list": True}, {"name": "z"}], ["out"])]))
    assert graph.nodes["a"].inputs == (Port("x"), Port("y", list=True), Port("z", list=False))
    assert graph.nodes["a"].outputs == ("out",)


def test_an_edge_without_an_id_gets_one_from_its_ends():
    graph = parse_graph(chain("a", "b"))
    assert graph.edges == (EdgeSpec("a.out->b.in", "a", "out", "b", "in"),)


def test_a_node_gets_defaults_for_what_it_leaves_out():
    spec = parse_graph(document([{"id": "a", "code": ""}])).nodes["a"]
    assert (spec.label, spec.inputs, spec.outputs, spec.position) == ("a", (), (), (0.0, 0.0))
    assert (dict(spec.limits), spec.retries, spec.backoff_s, spec.image) == ({}, 0, 1.0, None)
    assert spec.continue_on_error is False


def test_a_node_keeps_what_it_sets():
    raw = node("a", label="Fetch", code="print(1)", position={"x": 10, "y": -2.5}, continue_on_error=True)
    spec = parse_graph(document([raw])).nodes["a"]
    assert (spec.label, spec.code, spec.position, spec.continue_on_error) == (
        "Fetch",
        "print(1)",
        (10.0, -2.5),
        True,
    )


def test_only_runtime_limits_go_to_the_node_runner_and_the_rest_to_their_fields():
    limits = {"timeout_s": 30, "memory_mb": 256, "cpus": 1, "pids": 64, "network": True}
    extra = {"retries": 2, "backoff_s": 0.5, "image": "flowkit/npu:latest"}
    spec = parse_graph(document([node("a", limits={**limits, **extra})])).nodes["a"]
    assert dict(spec.limits) == limits
    assert (spec.retries, spec.backoff_s, spec.image) == (2, 0.5, "flowkit/npu:latest")


def test_a_parsed_graph_cannot_be_changed():
    spec = parse_graph(document([node("a", limits={"cpus": 1})])).nodes["a"]
    graph = parse_graph(document([node("a")]))
    with pytest.raises(TypeError):
        graph.nodes["b"] = spec
    with pytest.raises(TypeError):
        spec.limits["cpus"] = 2


def test_a_parsed_graph_survives_pickling():
    graph = fan_out_fan_in()
    copy = pickle.loads(pickle.dumps(graph))  # noqa: S301 - our own bytes
    assert copy == graph
    assert copy.topological_order() == graph.topological_order()


def test_a_graph_built_with_a_dangling_edge_is_refused():
    spec = parse_graph(document([node("a")])).nodes["a"]
    with pytest.raises(ValueError, match="'ghost'"):
        Graph(nodes={"a": spec}, edges=(EdgeSpec("e", "a", "out", "ghost", "in"),))


def test_a_graph_built_with_a_cycle_is_refused():
    spec = parse_graph(document([node("a")])).nodes["a"]
    with pytest.raises(ValueError, match="cycle"):
        Graph(nodes={"a": spec}, edges=(EdgeSpec("e", "a", "out", "a", "in"),))


def test_a_ten_thousand_node_chain_parses_and_orders_without_recursion():
    node_ids = [f"n{index}" for index in range(10_000)]
    graph = parse_graph(chain(*node_ids))
    assert graph.topological_order() == tuple(node_ids)
    assert len(graph.ancestors(node_ids[-1])) == 9_999


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.json")), ids=lambda path: path.name)
def test_the_shipped_example_pipelines_are_valid(path):
    assert validate_document(json.loads(path.read_text())) == []
