"""Attempts that fail for the infrastructure (the Docker engine was away) are retried on
their own budget: the node's retries stay whole (issue 16, Operations)."""

from __future__ import annotations

import random

from control_unit import fcb
from tests.unit.test_fcb_routing import graph_of, started

ENGINE_AWAY = {"error_type": "EngineUnavailable", "message": "the Docker engine was unavailable"}
NODE_BUG = {"error_type": "ValueError", "message": "bad input"}


def fail(graph, state, node, error):
    attempt = state.nodes[node].attempt
    state = fcb.claim(graph, state, node, attempt).fcb
    return fcb.node_failed(graph, state, node, attempt, error=error, rng=random.Random(1))


def test_an_engine_outage_is_retried_without_using_the_node_s_retries():
    graph = graph_of("a>b", a={"limits": {"retries": 0}})
    step = fail(graph, started(graph).fcb, "a", ENGINE_AWAY)
    record = step.fcb.nodes["a"]
    assert (record.state, record.attempt, record.infra_retries) == ("queued", 2, 1)
    assert [(d.node_id, d.attempt) for d in step.dispatches] == [("a", 2)]
    assert "infrastructure retry 1/5" in step.transitions[-1].reason


def test_the_node_s_own_retries_count_only_its_own_failures():
    graph = graph_of("a>b", a={"limits": {"retries": 1, "backoff_s": 0.1}})
    state = fail(graph, started(graph).fcb, "a", ENGINE_AWAY).fcb
    step = fail(graph, state, "a", NODE_BUG)
    assert (step.fcb.nodes["a"].state, step.fcb.nodes["a"].attempt) == ("queued", 3), "its one retry"
    assert "retry 2/2" in step.transitions[-1].reason
    step = fail(graph, step.fcb, "a", NODE_BUG)
    assert step.fcb.nodes["a"].state == "failed"


def test_the_infrastructure_budget_runs_out_into_the_node_s_retries():
    graph = graph_of("a>b", a={"limits": {"retries": 0}})
    state = started(graph).fcb
    for _ in range(fcb.INFRA_RETRIES):
        state = fail(graph, state, "a", ENGINE_AWAY).fcb
    assert state.nodes["a"].infra_retries == fcb.INFRA_RETRIES
    step = fail(graph, state, "a", ENGINE_AWAY)
    assert step.fcb.nodes["a"].state == "failed", "an engine that never comes back fails the node"
