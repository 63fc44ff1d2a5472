"""The Flow Control Block (FCB): the pure state machine of one run.

Plain data in, plain data out: every event takes a ``Graph`` and an ``Fcb`` and
returns a new ``Fcb`` plus the effects to carry out (dispatch a node; record a
transition). No database, broker or Docker here; ``control_unit.run_actions``
persists the result under a row lock on the run and dispatches after commit.

Routing: a node returns ``next_nodes``; empty activates every direct successor, a
list activates only those. A node is decided once all its upstream nodes are
terminal: it runs if at least one succeeded upstream activated it, is skipped if
none did (skipping propagates), and is cancelled if an upstream failed without
``continue_on_error``. Independent branches keep running after a failure; the run
then ends failed.

Incremental: an event reads and changes only the node it is about, its direct
successors and, to decide a successor, that successor's upstream nodes. Each node
counts its upstream nodes not yet finished (``NodeRecord.waiting``) and the FCB counts
its unfinished nodes, so no event walks the whole run; pause, resume and cancel visit
only the nodes in the states they change. ``recount`` is the full recomputation the
counters always agree with (tests/unit/test_fcb_incremental.py). ``Nodes`` is how the
core reads records: the plain one here holds them all, control_unit.fcb_store's loads
from the database only what an event asks for.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from control_unit.graph import Graph

# Node states
PENDING, QUEUED, RUNNING, PAUSED = "pending", "queued", "running", "paused"
SUCCEEDED, FAILED, SKIPPED, CANCELLED = "succeeded", "failed", "skipped", "cancelled"
NODE_STATES = (PENDING, QUEUED, RUNNING, PAUSED, SUCCEEDED, FAILED, SKIPPED, CANCELLED)
TERMINAL_NODE_STATES = frozenset({SUCCEEDED, FAILED, SKIPPED, CANCELLED})

# Run states (queued, running, paused, succeeded, failed, cancelled)
RUN_STATES = (QUEUED, RUNNING, PAUSED, SUCCEEDED, FAILED, CANCELLED)
TERMINAL_RUN_STATES = frozenset({SUCCEEDED, FAILED, CANCELLED})

NODE_TRANSITIONS: Mapping[str, frozenset[str]] = {
    PENDING: frozenset({QUEUED, SKIPPED, CANCELLED}),
    QUEUED: frozenset({RUNNING, CANCELLED}),
    # running -> queued is a retry after a failed attempt
    RUNNING: frozenset({PAUSED, SUCCEEDED, FAILED, QUEUED, CANCELLED}),
    PAUSED: frozenset({RUNNING, SUCCEEDED, FAILED, QUEUED, CANCELLED}),
    SUCCEEDED: frozenset(),
    FAILED: frozenset(),
    SKIPPED: frozenset(),
    CANCELLED: frozenset(),
}
RUN_TRANSITIONS: Mapping[str, frozenset[str]] = {
    QUEUED: frozenset({RUNNING, CANCELLED}),
    RUNNING: frozenset({PAUSED, SUCCEEDED, FAILED, CANCELLED}),
    # a node that was already finishing when the run paused may end the run
    PAUSED: frozenset({RUNNING, SUCCEEDED, FAILED, CANCELLED}),
    SUCCEEDED: frozenset(),
    FAILED: frozenset(),
    CANCELLED: frozenset(),
}

MAX_BACKOFF_S = 3600.0
# Failures of the infrastructure, not of the node (the runner names them: the Docker
# engine was away during the attempt). A node's attempts that end so are retried up to
# INFRA_RETRIES times on their own, with a short backoff, without using the node's
# retries; past that they count as the node's failures like any other.
INFRASTRUCTURE_ERRORS = frozenset({"EngineUnavailable"})
INFRA_RETRIES = 5
INFRA_BACKOFF_S = 1.0


class InvalidTransition(Exception):
    """A state change the transition table does not allow."""

    def __init__(self, subject: str, current: str, target: str) -> None:
        super().__init__(f"{subject} cannot go from {current} to {target}")
        self.subject = subject
        self.current = current
        self.target = target


class CannotRerun(Exception):
    pass


@dataclass(frozen=True)
class InputRef:
    """An input port fed by an upstream node's output port."""

    port: str
    source: str
    source_port: str


@dataclass(frozen=True)
class NodeRecord:
    # A source node's ``inputs`` are the run's input. Any other node's are references to
    # its upstream nodes' outputs (``input_refs``, see ``resolve_inputs``), never copies:
    # a value fanned out to fifty nodes is stored once. ``inputs`` and ``outputs`` read as
    # None where a store did not read them (fcb_store.StoredNodes); the core needs neither.
    state: str = PENDING
    attempt: int = 0  # attempt of the latest dispatch, from 1; 0 = never dispatched
    dispatched: bool = False  # a task for (node, attempt) is on its way to a worker
    inputs: Mapping[str, Any] | None = None
    input_refs: tuple[InputRef, ...] | None = None
    outputs: Mapping[str, Any] | None = None
    next_nodes: tuple[str, ...] | None = None
    status_message: str = ""
    error: Mapping[str, Any] | None = None
    reused: bool = False
    reason: str = ""
    waiting: int = 0  # upstream nodes not yet finished; decided when it reaches 0
    infra_retries: int = 0  # attempts retried on the infrastructure's budget (INFRA_RETRIES)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_NODE_STATES


class Nodes(Mapping[str, NodeRecord]):
    """The node records of an FCB, as the core reads them: by id, by state, and the
    outputs of upstream nodes. This one holds every record in memory."""

    def __init__(self, records: Mapping[str, NodeRecord]) -> None:
        self._records = dict(records)

    def __getitem__(self, node_id: str) -> NodeRecord:
        return self._records[node_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def fetch(self, node_ids: Collection[str]) -> None:
        """A hint: these records are about to be read."""

    def in_states(self, states: Collection[str]) -> list[str]:
        """The nodes in any of ``states``."""
        return [node_id for node_id, record in self._records.items() if record.state in states]

    def changed(self, changes: Mapping[str, NodeRecord]) -> Nodes:
        """These records with ``changes`` applied."""
        return Nodes({**self._records, **changes})


@dataclass(frozen=True)
class Fcb:
    run_state: str
    run_input: Any
    nodes: Mapping[str, NodeRecord]
    forced: frozenset[str] = frozenset()  # rerun-from: these run whatever routing says
    reason: str = ""
    unfinished: int = 0  # nodes not in a terminal state
    failed: str = ""  # the first node, in document order, that failed without continue_on_error

    @classmethod
    def new(cls, graph: Graph, run_input: Any) -> Fcb:
        nodes = {node_id: NodeRecord(waiting=len(graph.upstream(node_id))) for node_id in graph.nodes}
        return cls(run_state=QUEUED, run_input=run_input, nodes=Nodes(nodes), unfinished=len(nodes))

    @property
    def finished(self) -> bool:
        return self.run_state in TERMINAL_RUN_STATES


@dataclass(frozen=True)
class Dispatch:
    node_id: str
    attempt: int
    delay_s: float = 0.0


@dataclass(frozen=True)
class Transition:
    node_id: str | None  # None: the run itself
    source: str
    target: str
    attempt: int = 0
    reason: str = ""


Effect = Dispatch | Transition


@dataclass
class Step:
    """The result of one event: the new FCB and what to do about it."""

    fcb: Fcb
    effects: list[Effect] = field(default_factory=list)
    claimed: bool = False
    changed: Mapping[str, NodeRecord] = field(default_factory=dict)  # the records this event changed

    @property
    def dispatches(self) -> list[Dispatch]:
        return [effect for effect in self.effects if isinstance(effect, Dispatch)]

    @property
    def transitions(self) -> list[Transition]:
        return [effect for effect in self.effects if isinstance(effect, Transition)]


class _Builder:
    """Copy-on-write edits of one FCB, collecting the effects."""

    def __init__(self, graph: Graph, fcb: Fcb) -> None:
        self.graph = graph
        self.fcb = fcb
        self.base = fcb.nodes if isinstance(fcb.nodes, Nodes) else Nodes(fcb.nodes)
        self.changes: dict[str, NodeRecord] = {}
        self.run_state = fcb.run_state
        self.reason = fcb.reason
        self.unfinished = fcb.unfinished
        self.failed = fcb.failed
        self.ready: deque[str] = deque()  # nodes whose upstream all finished, to decide
        self.effects: list[Effect] = []

    def node(self, node_id: str) -> NodeRecord:
        if node_id in self.changes:
            return self.changes[node_id]
        return self.base[node_id]

    def update(self, node_id: str, **changes: Any) -> None:
        self.changes[node_id] = replace(self.node(node_id), **changes)

    def move(self, node_id: str, target: str, reason: str = "", **changes: Any) -> None:
        record = self.node(node_id)
        if target not in NODE_TRANSITIONS[record.state]:
            raise InvalidTransition(f"node {node_id}", record.state, target)
        attempt = changes.get("attempt", record.attempt)
        self.effects.append(Transition(node_id, record.state, target, attempt, reason))
        self.changes[node_id] = replace(record, state=target, reason=reason, **changes)
        if target in TERMINAL_NODE_STATES:
            self._finished(node_id, target)

    def _finished(self, node_id: str, state: str) -> None:
        """Count a node that just reached a terminal state."""
        self.unfinished -= 1
        fails_run = state == FAILED and not self.graph.nodes[node_id].continue_on_error
        if fails_run and (not self.failed or self.graph.position(node_id) < self.graph.position(self.failed)):
            self.failed = node_id
        successors = self.graph.downstream(node_id)
        self.base.fetch([name for name in successors if name not in self.changes])
        for successor in successors:
            waiting = self.node(successor).waiting - 1
            self.update(successor, waiting=waiting)
            if waiting == 0:
                self.ready.append(successor)

    def move_run(self, target: str, reason: str = "") -> None:
        if target not in RUN_TRANSITIONS[self.run_state]:
            raise InvalidTransition("run", self.run_state, target)
        self.effects.append(Transition(None, self.run_state, target, 0, reason))
        self.run_state = target
        self.reason = reason or self.reason

    def dispatch(self, node_id: str, attempt: int, delay_s: float = 0.0) -> None:
        """Queue an attempt; it only leaves for a worker while the run is running."""
        live = self.run_state == RUNNING
        self.update(node_id, dispatched=live)
        if live:
            self.effects.append(Dispatch(node_id, attempt, delay_s))

    def in_states(self, *states: str) -> list[str]:
        """The nodes in ``states`` when the event began (read before any change)."""
        found = self.base.in_states(states)
        self.base.fetch(found)
        return found

    def done(self, claimed: bool = False) -> Step:
        fcb = replace(
            self.fcb,
            nodes=self.base.changed(self.changes),
            run_state=self.run_state,
            reason=self.reason,
            unfinished=self.unfinished,
            failed=self.failed,
        )
        return Step(fcb, self.effects, claimed, dict(self.changes))

    # -- routing ---------------------------------------------------------------

    def advance(self) -> None:
        """Decide the nodes whose upstream all finished, and the nodes that decides in
        turn (skipping and cancelling propagate), then end the run if all are done."""
        if self.run_state in TERMINAL_RUN_STATES:
            return
        while self.ready:
            node_id = self.ready.popleft()
            if self.node(node_id).state == PENDING:
                self._decide(node_id)
        if self.unfinished == 0:
            if self.failed:
                self.move_run(FAILED, f"node {self.failed} failed")
            else:
                self.move_run(SUCCEEDED)

    def _decide(self, node_id: str) -> None:
        upstream = self.graph.upstream(node_id)
        if node_id not in self.fcb.forced:
            self.base.fetch([up for up in upstream if up not in self.changes])
            for up in upstream:
                record = self.node(up)
                if record.state == FAILED and not self.graph.nodes[up].continue_on_error:
                    self.move(node_id, CANCELLED, f"upstream node {up} failed")
                    return
                if record.state == CANCELLED:
                    self.move(node_id, CANCELLED, f"upstream node {up} was cancelled")
                    return
            if upstream and not any(self._activates(up, node_id) for up in upstream):
                self.move(node_id, SKIPPED, "no upstream node activated it")
                return
        if self.graph.incoming(node_id):
            self.move(node_id, QUEUED, attempt=1, input_refs=self.input_refs_of(node_id))
        else:
            run_input = self.fcb.run_input
            inputs = dict(run_input) if isinstance(run_input, Mapping) else {"input": run_input}
            self.move(node_id, QUEUED, attempt=1, inputs=inputs)
        self.dispatch(node_id, 1)

    def _activates(self, up: str, node_id: str) -> bool:
        record = self.node(up)
        if record.state != SUCCEEDED:
            return False
        return not record.next_nodes or node_id in record.next_nodes

    def input_refs_of(self, node_id: str) -> tuple[InputRef, ...]:
        """The edges into the node from the upstream nodes that activated it, in
        document order: what its inputs are made of (``resolve_inputs``)."""
        return tuple(
            InputRef(edge.target_port, edge.source, edge.source_port)
            for edge in self.graph.incoming(node_id)
            if self._activates(edge.source, node_id)
        )


def resolve_inputs(
    graph: Graph, node_id: str, refs: Iterable[InputRef], outputs: Mapping[str, Mapping[str, Any] | None]
) -> dict[str, Any]:
    """A node's inputs from its references and its upstream nodes' ``outputs``: a list
    port gets the values of every edge into it, in document order (none: empty); an
    upstream node that did not produce the port feeds nothing."""
    list_ports = {port.name for port in graph.nodes[node_id].inputs if port.list}
    inputs: dict[str, Any] = {name: [] for name in list_ports}
    for ref in refs:
        produced = outputs.get(ref.source) or {}
        if ref.source_port not in produced:
            continue
        value = produced[ref.source_port]
        if ref.port in list_ports:
            inputs[ref.port].append(value)
        else:
            inputs[ref.port] = value
    return inputs


# -- events --------------------------------------------------------------------


def start(graph: Graph, fcb: Fcb) -> Step:
    builder = _Builder(graph, fcb)
    builder.move_run(RUNNING)
    pending = set(builder.in_states(PENDING))
    builder.ready.extend(
        node_id
        for node_id in graph.topological_order()
        if node_id in pending and (builder.node(node_id).waiting == 0 or node_id in fcb.forced)
    )
    builder.advance()
    return builder.done()


def claim(graph: Graph, fcb: Fcb, node_id: str, attempt: int) -> Step:
    """A worker picked up (node, attempt). ``claimed`` says whether it may run it.

    Never raises for a stale or redelivered task: that task simply has nothing to do.
    """
    builder = _Builder(graph, fcb)
    record = builder.node(node_id)
    if record.state != QUEUED or record.attempt != attempt or builder.run_state in TERMINAL_RUN_STATES:
        return builder.done(claimed=False)
    if builder.run_state != RUNNING:
        # Paused: hold the attempt; resume sends it again.
        builder.update(node_id, dispatched=False)
        return builder.done(claimed=False)
    builder.move(node_id, RUNNING)
    return builder.done(claimed=True)


def node_succeeded(
    graph: Graph,
    fcb: Fcb,
    node_id: str,
    attempt: int,
    *,
    next_nodes: Iterable[str],
    outputs: Mapping[str, Any],
    status_message: str = "",
) -> Step:
    _check_reporting(graph, fcb, node_id, attempt)
    next_nodes = tuple(next_nodes)
    successors = graph.downstream(node_id)
    strangers = [name for name in next_nodes if name not in successors]
    if strangers:
        error = {
            "error_type": "RoutingError",
            "message": (
                f"next_nodes names {', '.join(repr(s) for s in strangers)}, which "
                f"{'is not a direct successor' if len(strangers) == 1 else 'are not direct successors'} "
                f"of {node_id!r} (successors: {', '.join(successors) or 'none'})"
            ),
        }
        return node_failed(graph, fcb, node_id, attempt, error=error, retryable=False)
    builder = _Builder(graph, fcb)
    builder.move(
        node_id,
        SUCCEEDED,
        outputs=dict(outputs),
        next_nodes=next_nodes,
        status_message=status_message,
        dispatched=False,
    )
    builder.advance()
    return builder.done()


def node_failed(
    graph: Graph,
    fcb: Fcb,
    node_id: str,
    attempt: int,
    *,
    error: Mapping[str, Any],
    retryable: bool = True,
    rng: random.Random | None = None,
) -> Step:
    _check_reporting(graph, fcb, node_id, attempt)
    builder = _Builder(graph, fcb)
    spec = graph.nodes[node_id]
    infra = builder.node(node_id).infra_retries
    live = builder.run_state not in TERMINAL_RUN_STATES
    if live and error.get("error_type") in INFRASTRUCTURE_ERRORS and infra < INFRA_RETRIES:
        # Not the node's failure: retried on the infrastructure's own budget, and the
        # node's retries stay whole. The runner already waited for the engine.
        delay = backoff_delay(INFRA_BACKOFF_S, infra + 1, rng or random.Random())  # noqa: S311 - jitter, not crypto
        reason = (
            f"attempt {attempt} failed: {error.get('error_type')}; infrastructure retry "
            f"{infra + 1}/{INFRA_RETRIES} in {delay:.2f} s (the node's retries are not used)"
        )
        builder.move(node_id, QUEUED, reason, attempt=attempt + 1, error=dict(error), infra_retries=infra + 1)
        builder.dispatch(node_id, attempt + 1, delay)
        return builder.done()
    # The node's own attempts: those retried for the infrastructure do not count.
    tries = attempt - infra
    if retryable and tries <= spec.retries and live:
        delay = backoff_delay(spec.backoff_s, tries, rng or random.Random())  # noqa: S311 - jitter, not crypto
        reason = f"attempt {attempt} failed; retry {tries + 1}/{spec.retries + 1} in {delay:.2f} s"
        builder.move(node_id, QUEUED, reason, attempt=attempt + 1, error=dict(error))
        builder.dispatch(node_id, attempt + 1, delay)
        return builder.done()
    builder.move(node_id, FAILED, str(error.get("message", ""))[:200], error=dict(error), dispatched=False)
    builder.advance()
    return builder.done()


def pause(graph: Graph, fcb: Fcb) -> Step:
    builder = _Builder(graph, fcb)
    builder.move_run(PAUSED)
    for node_id in builder.in_states(RUNNING):
        builder.move(node_id, PAUSED, "run paused")
    return builder.done()


def resume(graph: Graph, fcb: Fcb) -> Step:
    builder = _Builder(graph, fcb)
    builder.move_run(RUNNING)
    for node_id in builder.in_states(PAUSED, QUEUED):
        record = builder.node(node_id)
        if record.state == PAUSED:
            builder.move(node_id, RUNNING, "run resumed")
        elif not record.dispatched:
            builder.dispatch(node_id, record.attempt)
    builder.advance()
    return builder.done()


def cancel(graph: Graph, fcb: Fcb, reason: str = "cancelled by user") -> Step:
    builder = _Builder(graph, fcb)
    builder.move_run(CANCELLED, reason)
    for node_id in builder.in_states(PENDING, QUEUED, RUNNING, PAUSED):
        builder.move(node_id, CANCELLED, reason, dispatched=False)
    return builder.done()


def rerun_from(graph: Graph, original: Fcb, node_id: str) -> Fcb:
    """A new FCB that runs ``node_id`` and its downstream again and reuses the rest.

    A node outside that downstream keeps its recorded result (succeeded: its outputs,
    shown as reused; skipped; failed with continue_on_error) unless one of its own
    upstream nodes runs again, or it did not finish well (failed, cancelled): then it
    runs again too, so routing stays consistent. ``node_id``'s upstream must be
    reusable as recorded.
    """
    if node_id not in graph.nodes:
        raise CannotRerun(f"node {node_id} is not in this pipeline version")
    again = graph.descendants(node_id) | {node_id}
    nodes: dict[str, NodeRecord] = {}
    for name in graph.topological_order():
        record = original.nodes[name]
        continues = graph.nodes[name].continue_on_error
        if name in again or any(up in again for up in graph.upstream(name)):
            again = again | {name}
            nodes[name] = NodeRecord()
        elif record.state == SUCCEEDED:
            nodes[name] = NodeRecord(
                state=SUCCEEDED,
                inputs=record.inputs,
                input_refs=record.input_refs,
                outputs=record.outputs,
                next_nodes=record.next_nodes,
                status_message=record.status_message,
                reused=True,
                reason="reused from the original run",
            )
        elif record.state == SKIPPED or (record.state == FAILED and continues):
            nodes[name] = replace(record, reused=True, dispatched=False)
        else:
            again = again | {name}
            nodes[name] = NodeRecord()
    for ancestor in graph.ancestors(node_id):
        if ancestor in again:
            raise CannotRerun(
                f"cannot rerun from {node_id}: upstream node {ancestor} did not succeed in the original run "
                f"({original.nodes[ancestor].state})"
            )
    fresh = Fcb(QUEUED, original.run_input, Nodes(nodes), forced=frozenset({node_id}))
    return recount(graph, fresh)


def recount(graph: Graph, fcb: Fcb) -> Fcb:
    """The FCB with its counters computed afresh from every record: what the
    incremental events keep up to date one node at a time."""
    nodes = {
        node_id: replace(
            record, waiting=sum(1 for up in graph.upstream(node_id) if not fcb.nodes[up].terminal)
        )
        for node_id, record in fcb.nodes.items()
    }
    failed = [
        node_id
        for node_id in graph.nodes
        if nodes[node_id].state == FAILED and not graph.nodes[node_id].continue_on_error
    ]
    unfinished = sum(1 for record in nodes.values() if not record.terminal)
    return replace(fcb, nodes=Nodes(nodes), unfinished=unfinished, failed=failed[0] if failed else "")


def backoff_delay(backoff_s: float, attempt: int, rng: random.Random) -> float:
    """Exponential backoff with jitter: backoff * 2^(attempt-1) * [0.5, 1.5), capped."""
    base = min(backoff_s * (2 ** (attempt - 1)), MAX_BACKOFF_S)
    return float(base * (0.5 + rng.random()))


def _check_reporting(graph: Graph, fcb: Fcb, node_id: str, attempt: int) -> None:
    if isinstance(fcb.nodes, Nodes):
        # A result is read with the successors it may decide: one read, not two.
        fcb.nodes.fetch([node_id, *graph.downstream(node_id)])
    record = fcb.nodes[node_id]
    if record.state not in (RUNNING, PAUSED) or record.attempt != attempt:
        raise InvalidTransition(
            f"node {node_id} attempt {attempt}", f"{record.state} (attempt {record.attempt})", "a result"
        )
