"""Property tests of the FCB core: random DAGs, random routing choices, random
completion orders, failures, retries, pauses and cancels, driven through the pure
events exactly as workers and users would."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from control_unit import fcb
from control_unit.graph import Graph, parse_graph


@st.composite
def dag_documents(draw):
    size = draw(st.integers(1, 9))
    nodes = [
        {
            "id": f"n{i}",
            "code": "",
            "inputs": [{"name": "in", "list": True}],
            "outputs": ["out"],
            "limits": {"retries": draw(st.integers(0, 2))},
            "continue_on_error": draw(st.booleans()),
        }
        for i in range(size)
    ]
    edges = [
        {"source": f"n{i}", "source_port": "out", "target": f"n{j}", "target_port": "in"}
        for j in range(size)
        for i in range(j)
        if draw(st.integers(0, 2)) == 0
    ]
    return {"schema_version": 1, "nodes": nodes, "edges": edges}


class Simulation:
    """Plays workers and users against the FCB, checking every step on the way."""

    def __init__(self, graph: Graph, state: fcb.Fcb) -> None:
        self.graph = graph
        self.fcb = state
        self.outstanding: list[tuple[str, int]] = []
        self.running: list[tuple[str, int]] = []
        self.held: set[tuple[str, int]] = set()
        self.dispatched: Counter[tuple[str, int]] = Counter()

    def apply(self, step: fcb.Step) -> None:
        for transition in step.transitions:
            table = fcb.RUN_TRANSITIONS if transition.node_id is None else fcb.NODE_TRANSITIONS
            assert transition.target in table[transition.source], transition
        self.fcb = step.fcb
        for dispatch in step.dispatches:
            key = (dispatch.node_id, dispatch.attempt)
            if self.dispatched[key]:
                # Only an attempt held back during a pause may be sent again.
                assert key in self.held, f"{key} dispatched twice"
                self.held.discard(key)
            self.dispatched[key] += 1
            if dispatch.attempt == 1 and dispatch.node_id not in self.fcb.forced:
                for up in self.graph.upstream(dispatch.node_id):
                    assert self.fcb.nodes[up].terminal, f"{dispatch.node_id} dispatched before {up} finished"
            self.outstanding.append(key)

    def run(self, data, allow_cancel: bool, steps: int = 400) -> None:
        for _ in range(steps):
            if self.fcb.finished:
                return
            choices = []
            if self.outstanding:
                choices.append("claim")
            if self.running:
                choices += ["succeed", "fail"]
            choices.append("pause" if self.fcb.run_state == "running" else "resume")
            if allow_cancel:
                choices.append("cancel")
            assert self.outstanding or self.running or self.fcb.run_state == "paused", "deadlock"
            getattr(self, data.draw(st.sampled_from(choices)))(data)
        raise AssertionError("the run did not terminate")

    def claim(self, data) -> None:
        key = self.outstanding.pop(data.draw(st.integers(0, len(self.outstanding) - 1)))
        paused = self.fcb.run_state == "paused"
        step = fcb.claim(self.graph, self.fcb, *key)
        self.apply(step)
        if step.claimed:
            self.running.append(key)
        elif paused:
            self.held.add(key)

    def succeed(self, data) -> None:
        node, attempt = self.running.pop(data.draw(st.integers(0, len(self.running) - 1)))
        successors = list(self.graph.downstream(node))
        chosen = data.draw(st.lists(st.sampled_from(successors), unique=True)) if successors else []
        self.apply(
            fcb.node_succeeded(self.graph, self.fcb, node, attempt, next_nodes=chosen, outputs={"out": 1})
        )

    def fail(self, data) -> None:
        node, attempt = self.running.pop(data.draw(st.integers(0, len(self.running) - 1)))
        retryable = data.draw(st.booleans())
        error = {"error_type": "Boom", "message": "boom"}
        self.apply(
            fcb.node_failed(
                self.graph, self.fcb, node, attempt, error=error, retryable=retryable, rng=random.Random(1)
            )
        )

    def pause(self, data) -> None:
        self.apply(fcb.pause(self.graph, self.fcb))

    def resume(self, data) -> None:
        self.apply(fcb.resume(self.graph, self.fcb))

    def cancel(self, data) -> None:
        self.apply(fcb.cancel(self.graph, self.fcb))


def activates(record: fcb.NodeRecord, node_id: str) -> bool:
    return record.state == "succeeded" and (not record.next_nodes or node_id in record.next_nodes)


def check_final_state(graph: Graph, state: fcb.Fcb) -> None:
    assert state.finished
    assert all(record.terminal for record in state.nodes.values())
    failed = [
        n for n, r in state.nodes.items() if r.state == "failed" and not graph.nodes[n].continue_on_error
    ]
    if state.run_state != "cancelled":
        assert state.run_state == ("failed" if failed else "succeeded")
    for node_id, record in state.nodes.items():
        assert record.attempt <= graph.nodes[node_id].retries + 1
        if state.run_state == "cancelled" or node_id in state.forced:
            continue
        ups = [state.nodes[up] for up in graph.upstream(node_id)]
        poisoned = any(
            (r.state == "failed" and not graph.nodes[up].continue_on_error) or r.state == "cancelled"
            for up, r in zip(graph.upstream(node_id), ups, strict=True)
        )
        if poisoned:
            assert record.state == "cancelled", (node_id, record)
        elif ups and not any(activates(r, node_id) for r in ups):
            assert record.state == "skipped", (node_id, record)
        else:
            assert record.state in ("succeeded", "failed"), (node_id, record)


def simulated(graph: Graph, initial: fcb.Fcb, data, allow_cancel: bool, kind=Simulation) -> Simulation:
    """A run from ``initial`` to its end, played by a ``kind`` of simulation, checked."""
    simulation = kind(graph, initial)
    simulation.apply(fcb.start(graph, initial))
    simulation.run(data, allow_cancel)
    check_final_state(graph, simulation.fcb)
    return simulation


def a_node_to_rerun_from(graph: Graph, first: fcb.Fcb, data) -> str:
    """A node whose every ancestor succeeded in ``first``."""
    eligible = [
        node_id
        for node_id in graph.nodes
        if all(first.nodes[ancestor].state == "succeeded" for ancestor in graph.ancestors(node_id))
    ]
    return data.draw(st.sampled_from(eligible))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=dag_documents(), data=st.data(), allow_cancel=st.booleans())
def test_every_run_terminates_with_each_node_in_one_correct_terminal_state(document, data, allow_cancel):
    graph = parse_graph(document)
    simulated(graph, fcb.Fcb.new(graph, {"x": 1}), data, allow_cancel)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=dag_documents(), data=st.data())
def test_rerun_from_a_node_runs_only_it_and_its_downstream(document, data):
    graph = parse_graph(document)
    first = simulated(graph, fcb.Fcb.new(graph, {"x": 1}), data, allow_cancel=False)
    chosen = a_node_to_rerun_from(graph, first.fcb, data)
    again = graph.descendants(chosen) | {chosen}
    initial = fcb.rerun_from(graph, first.fcb, chosen)
    for node_id, record in initial.nodes.items():
        if node_id in again:
            assert record.state == "pending"
        elif first.fcb.nodes[node_id].state == "succeeded":
            assert record.reused
            assert record.outputs == first.fcb.nodes[node_id].outputs
    second = simulated(graph, initial, data, allow_cancel=False)
    assert second.fcb.nodes[chosen].attempt >= 1
    assert not {node for node, _ in second.dispatched} & graph.ancestors(chosen)
