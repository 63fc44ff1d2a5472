"""The incremental FCB against a full recomputation: on random graphs and random
orders of claims, results, failures, retries, pauses and cancels, after every event
the counters equal those computed afresh from every record, every node a full walk
of the graph would decide now has been decided, each the way its upstream says, and
the run ends exactly when a full walk finds every node finished. And an event reads
only the records it is about: a node's success in a long chain reads as many records
whatever the chain's length."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from control_unit import fcb
from control_unit.graph import Graph, parse_graph
from tests.unit.test_fcb_simulation import Simulation, a_node_to_rerun_from, dag_documents, simulated


def full_decision(graph: Graph, nodes: Mapping[str, fcb.NodeRecord], node_id: str) -> str | None:
    """What a walk over the whole graph decides for a pending node now: None while
    an upstream node is unfinished, else the state it moves to."""
    upstream = graph.upstream(node_id)
    if any(not nodes[up].terminal for up in upstream):
        return None
    for up in upstream:
        if nodes[up].state == "failed" and not graph.nodes[up].continue_on_error:
            return "cancelled"
        if nodes[up].state == "cancelled":
            return "cancelled"
    activated = any(
        nodes[up].state == "succeeded" and node_id in (nodes[up].next_nodes or (node_id,)) for up in upstream
    )
    return "skipped" if upstream and not activated else "queued"


class CheckedSimulation(Simulation):
    def apply(self, step: fcb.Step) -> None:
        super().apply(step)
        after = step.fcb
        recounted = fcb.recount(self.graph, after)
        assert (after.unfinished, after.failed) == (recounted.unfinished, recounted.failed)
        for node_id, record in after.nodes.items():
            assert record.waiting == recounted.nodes[node_id].waiting, node_id
        run_cancel = any(t.node_id is None and t.target == "cancelled" for t in step.transitions)
        for transition in step.transitions:
            if transition.node_id is None or transition.source != "pending" or run_cancel:
                continue
            if transition.node_id not in after.forced:
                # Upstream nodes are finished once a node is decided: the records after
                # the event show them as they were when it was.
                decided = full_decision(self.graph, after.nodes, transition.node_id)
                assert decided == transition.target, (transition, decided)
        if after.run_state in fcb.TERMINAL_RUN_STATES:
            return
        for node_id, record in after.nodes.items():
            if record.state == "pending" and after.run_state != "queued":
                assert full_decision(self.graph, after.nodes, node_id) is None, (
                    f"{node_id} was left undecided"
                )
        assert any(not record.terminal for record in after.nodes.values()), "the run did not end"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=dag_documents(), data=st.data(), allow_cancel=st.booleans())
def test_the_incremental_fcb_agrees_with_a_full_recomputation_after_every_event(document, data, allow_cancel):
    graph = parse_graph(document)
    simulated(graph, fcb.Fcb.new(graph, {"x": 1}), data, allow_cancel, kind=CheckedSimulation)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=dag_documents(), data=st.data())
def test_a_rerun_starts_from_counters_that_agree_with_its_records(document, data):
    graph = parse_graph(document)
    first = simulated(graph, fcb.Fcb.new(graph, {"x": 1}), data, allow_cancel=False)
    initial = fcb.rerun_from(graph, first.fcb, a_node_to_rerun_from(graph, first.fcb, data))
    simulated(graph, initial, data, allow_cancel=False, kind=CheckedSimulation)


class CountedNodes(fcb.Nodes):
    """Records that count which of them an event reads."""

    def __init__(self, records: Mapping[str, fcb.NodeRecord], read: set[str]) -> None:
        super().__init__(records)
        self.read = read

    def __getitem__(self, node_id: str) -> fcb.NodeRecord:
        self.read.add(node_id)
        return super().__getitem__(node_id)

    def in_states(self, states: Collection[str]) -> list[str]:
        found = super().in_states(states)
        self.read.update(found)
        return found

    def changed(self, changes: Mapping[str, fcb.NodeRecord]) -> fcb.Nodes:
        return CountedNodes({**self._records, **changes}, self.read)


def chain(length: int) -> Graph:
    nodes = [{"id": f"n{i}", "code": "", "inputs": ["in"], "outputs": ["out"]} for i in range(length)]
    edges = [
        {"source": f"n{i}", "source_port": "out", "target": f"n{i + 1}", "target_port": "in"}
        for i in range(length - 1)
    ]
    return parse_graph({"schema_version": 1, "nodes": nodes, "edges": edges})


def records_read_by_a_success_midway(length: int) -> int:
    graph = chain(length)
    read: set[str] = set()
    state = fcb.start(graph, fcb.Fcb.new(graph, {})).fcb
    for i in range(length // 2):
        state = fcb.claim(graph, state, f"n{i}", 1).fcb
        state = fcb.node_succeeded(graph, state, f"n{i}", 1, next_nodes=[], outputs={"out": i}).fcb
    state = fcb.claim(graph, state, f"n{length // 2}", 1).fcb
    counted = replace(state, nodes=CountedNodes(state.nodes, read))
    step = fcb.node_succeeded(graph, counted, f"n{length // 2}", 1, next_nodes=[], outputs={"out": 0})
    assert step.fcb.nodes[f"n{length // 2 + 1}"].state == "queued"
    assert set(step.changed) == {f"n{length // 2}", f"n{length // 2 + 1}"}
    return len(read)


def test_an_event_reads_as_many_records_in_a_chain_of_1000_as_in_a_chain_of_10():
    assert records_read_by_a_success_midway(1000) == records_read_by_a_success_midway(10) <= 3


def test_a_cancel_reads_only_the_unfinished_nodes():
    graph = chain(100)
    state = fcb.start(graph, fcb.Fcb.new(graph, {})).fcb
    for i in range(90):
        state = fcb.claim(graph, state, f"n{i}", 1).fcb
        state = fcb.node_succeeded(graph, state, f"n{i}", 1, next_nodes=[], outputs={}).fcb
    read: set[str] = set()
    counted = replace(state, nodes=CountedNodes(state.nodes, read))
    step = fcb.cancel(graph, counted)
    assert read == {f"n{i}" for i in range(90, 100)}
    assert step.fcb.unfinished == 0
    assert {node_id for node_id, record in step.changed.items() if record.state == "cancelled"} == read
