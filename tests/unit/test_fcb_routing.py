"""The FCB's routing, retry and control rules on small graphs, one rule per test."""

from __future__ import annotations

import random

import pytest

from control_unit import fcb
from control_unit.graph import parse_graph


def graph_of(edges: str, **node_options):
    """'a>b a>c' builds nodes a, b, c with edges a.out -> b.in and a.out -> c.in."""
    pairs = [pair.split(">") for pair in edges.split()]
    names = list(dict.fromkeys(name for pair in pairs for name in pair))
    nodes = [
        {"id": name, "code": "", "inputs": [{"name": "in", "list": True}], "outputs": ["out"],
         **node_options.get(name, {})}
        for name in names
    ]  # fmt: skip
    links = [{"source": a, "source_port": "out", "target": b, "target_port": "in"} for a, b in pairs]
    return parse_graph({"schema_version": 1, "nodes": nodes, "edges": links})


def started(graph, run_input=None):
    return fcb.start(graph, fcb.Fcb.new(graph, run_input if run_input is not None else {"x": 1}))


def run_node(graph, state, node, next_nodes=(), outputs=None):
    attempt = state.nodes[node].attempt
    state = fcb.claim(graph, state, node, attempt).fcb
    return fcb.node_succeeded(
        graph, state, node, attempt, next_nodes=next_nodes, outputs=outputs or {"out": node}
    )


def states(state):
    return {name: record.state for name, record in state.nodes.items()}


def test_source_nodes_are_dispatched_at_start_with_the_run_input():
    graph = graph_of("a>b")
    step = started(graph, {"x": 1})
    assert [(d.node_id, d.attempt) for d in step.dispatches] == [("a", 1)]
    assert step.fcb.nodes["a"].inputs == {"x": 1}


def test_a_run_input_that_is_not_an_object_arrives_as_input():
    assert started(graph_of("a>b"), [1, 2]).fcb.nodes["a"].inputs == {"input": [1, 2]}


def test_empty_next_nodes_activates_every_successor():
    graph = graph_of("a>b a>c")
    step = run_node(graph, started(graph).fcb, "a")
    assert {d.node_id for d in step.dispatches} == {"b", "c"}


def test_a_list_of_next_nodes_activates_only_those_and_skipping_propagates():
    graph = graph_of("a>b a>c c>d")
    step = run_node(graph, started(graph).fcb, "a", next_nodes=["b"])
    assert states(step.fcb) == {"a": "succeeded", "b": "queued", "c": "skipped", "d": "skipped"}


def test_a_merge_waits_for_every_upstream_and_runs_if_one_activated_it():
    graph = graph_of("a>b a>c b>d c>d")
    state = run_node(graph, started(graph).fcb, "a", next_nodes=["b"]).fcb
    assert state.nodes["d"].state == "pending"
    state = run_node(graph, state, "b", outputs={"out": 42}).fcb
    assert state.nodes["d"].state == "queued"
    assert state.nodes["d"].inputs is None, "referenced, not copied"
    assert state.nodes["d"].input_refs == (fcb.InputRef("in", "b", "out"),), "c was skipped: it feeds nothing"
    outputs = {name: record.outputs for name, record in state.nodes.items()}
    assert fcb.resolve_inputs(graph, "d", state.nodes["d"].input_refs, outputs) == {"in": [42]}


def test_resolved_inputs_keep_document_order_and_skip_ports_an_upstream_did_not_produce():
    graph = parse_graph({
        "schema_version": 1,
        "nodes": [{"id": "a", "code": "", "outputs": ["x", "y"]}, {"id": "b", "code": "", "outputs": ["x"]},
                  {"id": "j", "code": "", "inputs": [{"name": "all", "list": True}, "one"]}],
        "edges": [{"source": "a", "source_port": "x", "target": "j", "target_port": "all"},
                  {"source": "b", "source_port": "x", "target": "j", "target_port": "all"},
                  {"source": "a", "source_port": "y", "target": "j", "target_port": "one"}],
    })  # fmt: skip
    state = run_node(graph, started(graph).fcb, "a", outputs={"x": 1}).fcb
    state = run_node(graph, state, "b", outputs={"x": 2}).fcb
    refs = state.nodes["j"].input_refs
    outputs = {name: record.outputs for name, record in state.nodes.items()}
    assert fcb.resolve_inputs(graph, "j", refs, outputs) == {"all": [1, 2]}, "a did not produce y"


def test_next_nodes_naming_a_stranger_fails_the_node_without_retry():
    graph = graph_of("a>b", a={"limits": {"retries": 3}})
    step = run_node(graph, started(graph).fcb, "a", next_nodes=["zzz"])
    assert step.fcb.nodes["a"].state == "failed"
    assert step.fcb.nodes["a"].error["error_type"] == "RoutingError"
    assert "'zzz'" in step.fcb.nodes["a"].error["message"]


def test_a_failed_attempt_is_retried_after_a_jittered_backoff():
    graph = graph_of("a>b", a={"limits": {"retries": 2, "backoff_s": 2}})
    state = fcb.claim(graph, started(graph).fcb, "a", 1).fcb
    step = fcb.node_failed(graph, state, "a", 1, error={"message": "flaky"}, rng=random.Random(7))
    assert step.fcb.nodes["a"].state == "queued"
    assert step.fcb.nodes["a"].attempt == 2
    (dispatch,) = step.dispatches
    assert dispatch.attempt == 2
    assert 1.0 <= dispatch.delay_s < 3.0


def test_the_last_failure_cancels_downstream_while_an_independent_branch_finishes():
    graph = graph_of("a>b c>d")
    state = fcb.claim(graph, started(graph).fcb, "a", 1).fcb
    state = fcb.node_failed(graph, state, "a", 1, error={"message": "down"}).fcb
    assert states(state)["b"] == "cancelled"
    assert state.nodes["b"].reason == "upstream node a failed"
    assert state.run_state == "running"
    state = run_node(graph, state, "c").fcb
    state = run_node(graph, state, "d").fcb
    assert state.run_state == "failed"
    assert state.reason == "node a failed"


def test_continue_on_error_lets_the_run_succeed_and_skips_what_the_node_would_activate():
    graph = graph_of("a>b", a={"continue_on_error": True})
    state = fcb.claim(graph, started(graph).fcb, "a", 1).fcb
    state = fcb.node_failed(graph, state, "a", 1, error={"message": "ignored"}, retryable=False).fcb
    assert states(state) == {"a": "failed", "b": "skipped"}
    assert state.run_state == "succeeded"


def test_a_claim_during_a_pause_is_held_and_resume_sends_the_same_attempt_again():
    graph = graph_of("a>b")
    state = fcb.pause(graph, started(graph).fcb).fcb
    held = fcb.claim(graph, state, "a", 1)
    assert held.claimed is False
    assert held.fcb.nodes["a"].dispatched is False
    resumed = fcb.resume(graph, held.fcb)
    assert [(d.node_id, d.attempt) for d in resumed.dispatches] == [("a", 1)]


def test_pause_freezes_running_nodes_and_a_result_arriving_meanwhile_is_applied():
    graph = graph_of("a>b")
    state = fcb.claim(graph, started(graph).fcb, "a", 1).fcb
    state = fcb.pause(graph, state).fcb
    assert state.nodes["a"].state == "paused"
    state = fcb.node_succeeded(graph, state, "a", 1, next_nodes=[], outputs={"out": 1}).fcb
    assert states(state) == {"a": "succeeded", "b": "queued"}
    assert state.nodes["b"].dispatched is False  # held until resume


def test_cancel_marks_every_unfinished_node_and_refuses_later_results():
    graph = graph_of("a>b")
    state = fcb.claim(graph, started(graph).fcb, "a", 1).fcb
    state = fcb.cancel(graph, state).fcb
    assert states(state) == {"a": "cancelled", "b": "cancelled"}
    with pytest.raises(fcb.InvalidTransition):
        fcb.node_succeeded(graph, state, "a", 1, next_nodes=[], outputs={})


@pytest.mark.parametrize(("event", "message"), [(fcb.resume, "run cannot go from running to running")])
def test_illegal_run_transitions_are_refused_with_a_clear_error(event, message):
    graph = graph_of("a>b")
    with pytest.raises(fcb.InvalidTransition, match=message):
        event(graph, started(graph).fcb)


def test_a_stale_claim_changes_nothing():
    graph = graph_of("a>b")
    state = started(graph).fcb
    step = fcb.claim(graph, state, "a", 2)
    assert step.claimed is False
    assert step.fcb.nodes == state.nodes
