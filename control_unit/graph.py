"""Pipeline documents: validate one in full, then turn it into an immutable Graph.

This module is pure: no database, no Django models. Validation reports every problem
it finds at once, each naming the node or edge at fault, so the editor can show them
all; ``parse_graph`` only ever builds a Graph from a document with no problem at all.
Every walk over the graph is iterative and O(V + E), so long chains and large graphs
cost little and never hit the recursion limit.
"""

from __future__ import annotations

import json
import math
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard, TypeVar

from control_unit.limits import LIMIT_BOUNDS
from control_unit.routing import CAPABILITY_RULE, MAX_CAPABILITIES, is_capability

SCHEMA_VERSION = 1
NODE_ID_PATTERN = r"[A-Za-z_][A-Za-z0-9_-]{0,63}"
# Limits a node may set beyond the runtime ones in LIMIT_BOUNDS. "network" is a bool
# and "image" a short non-empty string; neither has numeric bounds.
ISOLATION_MODES = ("dedicated", "container")
EXTRA_LIMIT_BOUNDS: dict[str, tuple[float, float]] = {"retries": (0, 20), "backoff_s": (0, 3600)}

DEFAULT_MAX_DOCUMENT_BYTES = 2 * 1024 * 1024
DEFAULT_MAX_CODE_BYTES = 256 * 1024
DEFAULT_BACKOFF_S = 1.0
MAX_IMAGE_CHARS = 200

_NAME_RE = re.compile(NODE_ID_PATTERN)
_NAME_RULE = (
    "it must start with a letter or underscore and hold at most 64 letters, digits, underscores or hyphens"
)
_KNOWN_LIMITS = ", ".join(sorted([*LIMIT_BOUNDS, *EXTRA_LIMIT_BOUNDS, "network", "image"]))
_EDGE_ENDS = ("source", "source_port", "target", "target_port")
_SHOWN_CHARS = 80  # longer than any valid id, so valid names are never clipped
_Report = Callable[[str, str], None]  # adds a problem about the node being checked
_LISTED_IN_MESSAGE = 10

_K = TypeVar("_K")
_V = TypeVar("_V")


class _FrozenMap(Mapping[_K, _V]):
    """A read-only dict that, unlike MappingProxyType, can be pickled and copied."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[_K, _V]) -> None:
        self._data = dict(data)

    def __getitem__(self, key: _K) -> _V:
        return self._data[key]

    def __iter__(self) -> Iterator[_K]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return repr(self._data)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a pipeline document; ``code`` is stable, ``message`` is for people."""

    code: str
    message: str
    node: str | None = None
    edge: str | None = None

    def as_dict(self) -> dict[str, str]:
        fields = {"code": self.code, "message": self.message, "node": self.node, "edge": self.edge}
        return {key: value for key, value in fields.items() if value is not None}


class InvalidPipeline(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        shown = [problem.message for problem in self.problems[:_LISTED_IN_MESSAGE]]
        if count > _LISTED_IN_MESSAGE:
            shown.append(f"and {count - _LISTED_IN_MESSAGE} more")
        super().__init__(f"{count} problem{'' if count == 1 else 's'}: {'; '.join(shown)}")


@dataclass(frozen=True)
class Port:
    name: str
    # A list port may be fed by several edges; its value is the list of the fed values.
    list: bool = False


@dataclass(frozen=True)
class NodeSpec:
    id: str
    label: str
    code: str
    inputs: tuple[Port, ...]
    outputs: tuple[str, ...]
    position: tuple[float, float]
    # Only the runtime limits the node runner applies (those of LIMIT_BOUNDS, and
    # "network"), and only those the document sets.
    limits: Mapping[str, Any]
    retries: int = 0
    backoff_s: float = DEFAULT_BACKOFF_S
    image: str | None = None
    continue_on_error: bool = False
    # Worker capabilities the node needs (control_unit.routing), sorted and unique.
    requires: tuple[str, ...] = ()
    # "dedicated": the node's own long-lived NPU, a fresh process per execution;
    # "container": a single-use container per execution (node_runner.dedicated_npus).
    isolation: str = "dedicated"

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "requires", tuple(sorted(set(self.requires))))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "limits", _FrozenMap(self.limits))


@dataclass(frozen=True)
class EdgeSpec:
    id: str
    source: str
    source_port: str
    target: str
    target_port: str


@dataclass(frozen=True)
class Graph:
    """A validated, acyclic pipeline graph. Nodes keep document order."""

    nodes: Mapping[str, NodeSpec]
    edges: tuple[EdgeSpec, ...]
    _upstream: Mapping[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)
    _downstream: Mapping[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)
    _incoming: Mapping[str, tuple[EdgeSpec, ...]] = field(init=False, repr=False, compare=False)
    _order: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _position: Mapping[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        nodes = _FrozenMap(self.nodes)
        edges = tuple(self.edges)
        for node_id, spec in nodes.items():
            if spec.id != node_id:
                raise ValueError(f"node {spec.id!r} is filed under {node_id!r}")
        incoming: dict[str, list[EdgeSpec]] = {node_id: [] for node_id in nodes}
        predecessors: dict[str, set[str]] = {node_id: set() for node_id in nodes}
        successors: dict[str, set[str]] = {node_id: set() for node_id in nodes}
        for edge in edges:
            for end in (edge.source, edge.target):
                if end not in nodes:
                    raise ValueError(f"edge {edge.id!r} refers to node {end!r}, which is not in the graph")
            incoming[edge.target].append(edge)
            predecessors[edge.target].add(edge.source)
            successors[edge.source].add(edge.target)
        # Walking the nodes in document order lists each neighbour set in document order.
        upstream: dict[str, list[str]] = {node_id: [] for node_id in nodes}
        downstream: dict[str, list[str]] = {node_id: [] for node_id in nodes}
        for node_id in nodes:
            for successor in successors[node_id]:
                upstream[successor].append(node_id)
            for predecessor in predecessors[node_id]:
                downstream[predecessor].append(node_id)
        order = _kahn(nodes, downstream, {node_id: len(upstream[node_id]) for node_id in nodes})
        if len(order) != len(nodes):
            ordered = set(order)
            stuck = [node_id for node_id in nodes if node_id not in ordered]
            raise ValueError(
                f"the graph has a cycle; on or after it: {', '.join(stuck[:_LISTED_IN_MESSAGE])}"
            )
        object.__setattr__(self, "nodes", nodes)
        object.__setattr__(self, "edges", edges)
        object.__setattr__(self, "_upstream", _frozen(upstream))
        object.__setattr__(self, "_downstream", _frozen(downstream))
        object.__setattr__(self, "_incoming", _frozen(incoming))
        object.__setattr__(self, "_order", order)
        object.__setattr__(self, "_position", _FrozenMap({node_id: i for i, node_id in enumerate(nodes)}))

    def position(self, node_id: str) -> int:
        """The node's index in document order."""
        return self._position[self._known(node_id)]

    def upstream(self, node_id: str) -> tuple[str, ...]:
        """Distinct direct predecessors, in document order."""
        return self._upstream[self._known(node_id)]

    def downstream(self, node_id: str) -> tuple[str, ...]:
        """Distinct direct successors, in document order."""
        return self._downstream[self._known(node_id)]

    def incoming(self, node_id: str) -> tuple[EdgeSpec, ...]:
        """The edges into the node, in document order."""
        return self._incoming[self._known(node_id)]

    def sources(self) -> tuple[str, ...]:
        """The nodes no edge leads into, in document order."""
        return tuple(node_id for node_id in self.nodes if not self._upstream[node_id])

    def ancestors(self, node_id: str) -> frozenset[str]:
        """Every node with a path to this one; the node itself is not included."""
        return _reachable(self._known(node_id), self._upstream)

    def descendants(self, node_id: str) -> frozenset[str]:
        """Every node this one has a path to; the node itself is not included."""
        return _reachable(self._known(node_id), self._downstream)

    def topological_order(self) -> tuple[str, ...]:
        """Every node, each after all of its ancestors."""
        return self._order

    def _known(self, node_id: str) -> str:
        if node_id not in self.nodes:
            raise KeyError(f"node {node_id!r} is not in the graph")
        return node_id


def _frozen(table: Mapping[str, list[Any]]) -> Mapping[str, tuple[Any, ...]]:
    return _FrozenMap({key: tuple(values) for key, values in table.items()})


def _kahn(
    nodes: Iterable[str], successors: Mapping[str, Iterable[str]], in_degree: dict[str, int]
) -> tuple[str, ...]:
    """Kahn's algorithm; nodes on or behind a cycle are left out of the order."""
    ready = deque(node_id for node_id in nodes if in_degree[node_id] == 0)
    order: list[str] = []
    while ready:
        node_id = ready.popleft()
        order.append(node_id)
        for successor in successors[node_id]:
            in_degree[successor] -= 1
            if in_degree[successor] == 0:
                ready.append(successor)
    return tuple(order)


def _reachable(start: str, neighbours: Mapping[str, tuple[str, ...]]) -> frozenset[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for neighbour in neighbours[todo.pop()]:
            if neighbour not in seen:
                seen.add(neighbour)
                todo.append(neighbour)
    return frozenset(seen)


# -- the public entry points ---------------------------------------------------


def document_size(document: Any) -> int:
    """The length in bytes of the document's compact UTF-8 JSON encoding.

    Raises TypeError, ValueError or RecursionError for what JSON cannot encode.
    """
    text = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    return len(text.encode("utf-8", "surrogatepass"))


def validate_document(
    document: Any,
    *,
    max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES,
    max_code_bytes: int = DEFAULT_MAX_CODE_BYTES,
) -> list[Problem]:
    """Every problem with the document, in document order; [] when it is a valid pipeline."""
    return _examine(document, max_document_bytes, max_code_bytes).problems


def parse_graph(
    document: Any,
    *,
    max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES,
    max_code_bytes: int = DEFAULT_MAX_CODE_BYTES,
) -> Graph:
    """The document's Graph; raises InvalidPipeline with every problem if it has any."""
    examined = _examine(document, max_document_bytes, max_code_bytes)
    if examined.problems:
        raise InvalidPipeline(examined.problems)
    return Graph(nodes={spec.id: spec for spec in examined.nodes}, edges=tuple(examined.edges))


# -- validation ----------------------------------------------------------------


def _examine(document: Any, max_document_bytes: int, max_code_bytes: int) -> _Validator:
    validator = _Validator(max_code_bytes)
    # The size comes first so that a huge document is never walked.
    try:
        size = document_size(document)
    except (TypeError, ValueError, RecursionError) as exc:
        validator.add("invalid_document", f"the document cannot be encoded as JSON: {_clip(str(exc))}")
        return validator
    if size > max_document_bytes:
        validator.add(
            "document_too_large",
            f"the document is {size} bytes, more than the limit of {max_document_bytes} bytes",
        )
        return validator
    validator.check(document)
    return validator


@dataclass
class _NodeEntry:
    """What edge checks need to know of a node; None ports mean they could not be read."""

    inputs: dict[str, Port] | None
    outputs: dict[str, None] | None


@dataclass(frozen=True)
class _LimitValues:
    runtime: dict[str, Any]
    retries: int = 0
    backoff_s: float = DEFAULT_BACKOFF_S
    image: str | None = None


class _Validator:
    def __init__(self, max_code_bytes: int) -> None:
        self.max_code_bytes = max_code_bytes
        self.problems: list[Problem] = []
        # What parse_graph builds from; only meaningful when there are no problems.
        self.nodes: list[NodeSpec] = []
        self.edges: list[EdgeSpec] = []
        self.known: dict[str, _NodeEntry] = {}  # first node of each id, document order
        self.node_places: dict[str, list[int]] = {}
        self.edge_places: dict[str, list[int]] = {}

    def add(self, code: str, message: str, node: str | None = None, edge: str | None = None) -> None:
        self.problems.append(Problem(code, message, node, edge))

    # -- the document ----------------------------------------------------------

    def check(self, document: Any) -> None:
        if not isinstance(document, dict):
            self.add(
                "invalid_document", f"the pipeline document must be a JSON object, not {_kind(document)}"
            )
            return
        self.check_schema_version(document)
        nodes = document.get("nodes")
        edges = document.get("edges", [])
        if nodes is None or nodes == []:
            self.add("empty_graph", "the pipeline has no nodes")
        elif not isinstance(nodes, list):
            self.add("invalid_document", f"'nodes' must be a list of nodes, not {_kind(nodes)}")
        else:
            for index, raw in enumerate(nodes):
                self.check_node(index, raw)
            self.report_duplicates(self.node_places, "duplicate_node_id", "node id", "nodes", node=True)
        if edges is None:
            edges = []
        if not isinstance(edges, list):
            self.add("invalid_document", f"'edges' must be a list of edges, not {_kind(edges)}")
        else:
            for index, raw in enumerate(edges):
                self.check_edge(index, raw)
            self.report_duplicates(self.edge_places, "duplicate_edge_id", "edge id", "edges", node=False)
        self.check_fed_twice()
        self.check_cycles()
        self.check_strict_json(document)

    def check_schema_version(self, document: dict[Any, Any]) -> None:
        supported = f"the supported version is {SCHEMA_VERSION}"
        if "schema_version" not in document:
            self.add("unsupported_schema_version", f"the document has no schema_version ({supported})")
            return
        version = document["schema_version"]
        if type(version) is not int or version != SCHEMA_VERSION:
            self.add(
                "unsupported_schema_version",
                f"schema_version {_show(version)} is not supported ({supported})",
            )

    def check_strict_json(self, document: Any) -> None:
        # Python's json module reads and writes NaN and Infinity; JSON, and so the
        # database's JSON columns, do not.
        try:
            json.dumps(document, allow_nan=False)
        except ValueError:
            self.add("invalid_document", "the document holds NaN or Infinity, which JSON does not allow")

    def report_duplicates(
        self, places: dict[str, list[int]], code: str, what: str, listing: str, *, node: bool
    ) -> None:
        for name, indexes in places.items():
            if len(indexes) > 1:
                where = ", ".join(f"{listing}[{index}]" for index in indexes)
                message = f"{what} {_q(name)} is used {len(indexes)} times ({where}), but ids must be unique"
                self.add(code, message, node=name if node else None, edge=None if node else name)

    # -- nodes -----------------------------------------------------------------

    def check_node(self, index: int, raw: Any) -> None:
        where = f"nodes[{index}]"
        if not isinstance(raw, dict):
            self.add("invalid_node", f"{where} must be an object, not {_kind(raw)}")
            return
        node_id = raw.get("id")
        if node_id is None:
            self.add("invalid_node_id", f"{where} has no id")
        elif not isinstance(node_id, str):
            self.add("invalid_node_id", f"{where} has an id that is {_kind(node_id)}, not a string")
        elif not _NAME_RE.fullmatch(node_id):
            self.add(
                "invalid_node_id", f"node id {_q(node_id)} ({where}) is not valid: {_NAME_RULE}", node_id
            )
        if not isinstance(node_id, str):
            node_id = None
        name = f"node {_q(node_id)}" if node_id is not None else where

        def problem(code: str, message: str) -> None:
            self.add(code, message, node=node_id)

        label = self.optional(raw, "label", node_id or "", str, "a string", name, problem)
        code = self.check_code(raw, name, problem)
        inputs = self.check_inputs(raw.get("inputs"), name, problem)
        outputs = self.check_outputs(raw.get("outputs"), name, problem)
        position = self.check_position(raw.get("position"), name, problem)
        limits = self.check_limits(raw.get("limits"), name, problem)
        continue_on_error = self.optional(
            raw, "continue_on_error", False, bool, "true or false", name, problem
        )
        requires = self.check_requires(raw.get("requires"), name, problem)
        wanted = '"dedicated" or "container"'
        isolation = self.optional(raw, "isolation", "dedicated", str, wanted, name, problem)
        if isolation not in ISOLATION_MODES:
            problem(
                "invalid_node",
                f"{name} has the isolation {_show(isolation)}, but it must be {wanted}",
            )
            isolation = "dedicated"
        if node_id is None:
            return
        self.node_places.setdefault(node_id, []).append(index)
        if node_id in self.known:
            return
        self.known[node_id] = _NodeEntry(inputs, outputs)
        self.nodes.append(
            NodeSpec(
                id=node_id,
                label=label,
                code=code,
                inputs=tuple((inputs or {}).values()),
                outputs=tuple(outputs or {}),
                position=position,
                limits=limits.runtime,
                retries=limits.retries,
                backoff_s=limits.backoff_s,
                image=limits.image,
                continue_on_error=continue_on_error,
                requires=requires,
                isolation=isolation,
            )
        )

    @staticmethod
    def optional(
        raw: dict[Any, Any], key: str, default: Any, kind: type, wanted: str, name: str, problem: _Report
    ) -> Any:
        value = raw.get(key)
        if value is None:
            return default
        if not isinstance(value, kind):
            problem("invalid_node", f"{name} has a {key} that is {_kind(value)}, but it must be {wanted}")
            return default
        return value

    @staticmethod
    def check_requires(value: Any, name: str, problem: _Report) -> tuple[str, ...]:
        """The worker capabilities a node asks for: it runs only on a worker declaring
        all of them (FLOWKIT_WORKER_CAPABILITIES)."""
        if value is None:
            return ()
        if not isinstance(value, list):
            problem(
                "invalid_requires",
                f"{name} has requires that is {_kind(value)}, but it must be a list of capabilities "
                'such as ["gpu"]',
            )
            return ()
        wanted: list[str] = []
        for index, item in enumerate(value):
            if not is_capability(item):
                problem(
                    "invalid_requires",
                    f"{name} requires {_show(item)} (requires[{index}]), which is not a capability: "
                    f"{CAPABILITY_RULE}",
                )
            elif item in wanted:
                problem("invalid_requires", f"{name} requires {_q(item)} more than once")
            else:
                wanted.append(item)
        if len(wanted) > MAX_CAPABILITIES:
            problem(
                "invalid_requires",
                f"{name} requires {len(wanted)} capabilities, but a worker declares at most "
                f"{MAX_CAPABILITIES}, so no worker could take it",
            )
            return ()
        return tuple(sorted(wanted))

    def check_code(self, raw: dict[Any, Any], name: str, problem: _Report) -> str:
        code = raw.get("code")
        if code is None:
            problem("invalid_node", f'{name} has no code (a node without code has code "")')
            return ""
        if not isinstance(code, str):
            problem("invalid_node", f"{name} has code that is {_kind(code)}, not a string")
            return ""
        size = len(code.encode("utf-8", "surrogatepass"))
        if size > self.max_code_bytes:
            problem(
                "code_too_large",
                f"{name} has {size} bytes of code, more than the limit of {self.max_code_bytes} bytes",
            )
        return code

    @staticmethod
    def port_name(
        value: Any, side: str, index: int, seen: Mapping[str, Any], name: str, problem: _Report
    ) -> str | None:
        """``value`` if it can name a port, else None; reports why not, or why it is a bad name."""
        if value is None:
            problem("invalid_node", f"{name} has {side}[{index}] with no name")
            return None
        if not isinstance(value, str):
            problem("invalid_node", f"{name} has {side}[{index}] named by {_kind(value)}, not a string")
            return None
        if not _NAME_RE.fullmatch(value):
            problem(
                "invalid_node",
                f"{name} has {side[:-1]} {_q(value)}, which is not a valid port name: {_NAME_RULE}",
            )
        if value in seen:
            problem("invalid_node", f"{name} declares {side[:-1]} {_q(value)} more than once")
        return value

    def check_inputs(self, value: Any, name: str, problem: _Report) -> dict[str, Port] | None:
        if value is None:
            return {}
        if not isinstance(value, list):
            problem("invalid_node", f"{name} has inputs that are {_kind(value)}, not a list")
            return None
        ports: dict[str, Port] = {}
        for index, item in enumerate(value):
            is_list: Any = False
            if isinstance(item, dict):
                port_name = item.get("name")
                is_list = item.get("list", False)
                if is_list is None:
                    is_list = False
                elif not isinstance(is_list, bool):
                    problem(
                        "invalid_node",
                        f"{name} has inputs[{index}] with a list flag that is {_kind(is_list)}, "
                        "but it must be true or false",
                    )
                    is_list = False
            elif isinstance(item, str):
                port_name = item
            else:
                problem(
                    "invalid_node",
                    f"{name} has inputs[{index}] that is {_kind(item)}, but "
                    "an input is a name or an object with a name",
                )
                continue
            port = self.port_name(port_name, "inputs", index, ports, name, problem)
            if port is not None:
                ports.setdefault(port, Port(port, is_list))
        return ports

    def check_outputs(self, value: Any, name: str, problem: _Report) -> dict[str, None] | None:
        if value is None:
            return {}
        if not isinstance(value, list):
            problem("invalid_node", f"{name} has outputs that are {_kind(value)}, not a list of names")
            return None
        ports: dict[str, None] = {}
        for index, item in enumerate(value):
            port = self.port_name(item, "outputs", index, ports, name, problem)
            if port is not None:
                ports[port] = None
        return ports

    @staticmethod
    def check_position(value: Any, name: str, problem: _Report) -> tuple[float, float]:
        if value is None:
            return (0.0, 0.0)
        if not isinstance(value, dict):
            problem(
                "invalid_node",
                f"{name} has a position that is {_kind(value)}, not an object with x and y",
            )
            return (0.0, 0.0)
        coordinates: list[float] = []
        for axis in ("x", "y"):
            coordinate = value.get(axis)
            if _is_number(coordinate) and math.isfinite(coordinate):
                coordinates.append(float(coordinate))
            else:
                shown = "no" if coordinate is None else f"{_show(coordinate)} as its"
                problem("invalid_node", f"{name} has {shown} position {axis}, but it must be a finite number")
                coordinates.append(0.0)
        return (coordinates[0], coordinates[1])

    def check_limits(self, value: Any, name: str, problem: _Report) -> _LimitValues:
        if value is None:
            return _LimitValues({})
        if not isinstance(value, dict):
            problem("invalid_node", f"{name} has limits that are {_kind(value)}, not an object")
            return _LimitValues({})
        runtime: dict[str, Any] = {}
        retries, backoff_s, image = 0, DEFAULT_BACKOFF_S, None
        for key, limit in value.items():
            asked = f"{name} asks for {key} = {_show(limit)}"
            if key in LIMIT_BOUNDS or key in EXTRA_LIMIT_BOUNDS:
                low, high = LIMIT_BOUNDS.get(key) or EXTRA_LIMIT_BOUNDS[key]
                whole = key == "retries"
                bounds = f"between {low:g} and {high:g}"
                if not _is_number(limit) or (whole and not float(limit).is_integer()):
                    wanted = "a whole number" if whole else "a number"
                    problem("limit_out_of_range", f"{asked}, but it must be {wanted} {bounds}")
                elif not low <= limit <= high:
                    problem("limit_out_of_range", f"{asked}, but it must be {bounds}")
                elif key == "retries":
                    retries = int(limit)
                elif key == "backoff_s":
                    backoff_s = float(limit)
                else:
                    runtime[key] = limit
            elif key == "network":
                if isinstance(limit, bool):
                    runtime[key] = limit
                else:
                    problem("limit_out_of_range", f"{asked}, but it must be true or false")
            elif key == "image":
                if isinstance(limit, str) and 0 < len(limit) <= MAX_IMAGE_CHARS:
                    image = limit
                else:
                    problem(
                        "limit_out_of_range",
                        f"{asked}, but it must be an image name of 1 to {MAX_IMAGE_CHARS} characters",
                    )
            else:
                problem(
                    "unknown_limit",
                    f"{name} sets the unknown limit {_show(key)} (the limits are {_KNOWN_LIMITS})",
                )
        return _LimitValues(runtime, retries, backoff_s, image)

    # -- edges -----------------------------------------------------------------

    def check_edge(self, index: int, raw: Any) -> None:
        where = f"edges[{index}]"
        if not isinstance(raw, dict):
            self.add("invalid_edge", f"{where} must be an object, not {_kind(raw)}")
            return
        explicit = raw.get("id")
        if explicit is not None and not (isinstance(explicit, str) and explicit):
            self.add(
                "invalid_edge",
                f"{where} has the id {_show(explicit)}, but an edge id must be a non-empty string",
            )
            explicit = None
        name = f"edge {_q(explicit)}" if explicit is not None else where
        ends: dict[str, str] = {}
        for key in _EDGE_ENDS:
            end = raw.get(key)
            if end is None:
                self.add("invalid_edge", f"{name} has no {key}", edge=explicit)
            elif not isinstance(end, str):
                self.add(
                    "invalid_edge",
                    f"{name} has a {key} that is {_kind(end)}, not a string",
                    edge=explicit,
                )
            else:
                ends[key] = end
        if len(ends) < len(_EDGE_ENDS):
            return
        source, source_port, target, target_port = (ends[key] for key in _EDGE_ENDS)
        edge_id = explicit if explicit is not None else f"{source}.{source_port}->{target}.{target_port}"
        name = f"edge {_q(edge_id)}"
        self.edge_places.setdefault(edge_id, []).append(index)
        self.edges.append(EdgeSpec(edge_id, source, source_port, target, target_port))
        source_node, target_node = self.known.get(source), self.known.get(target)
        if source_node is None:
            self.add(
                "dangling_edge", f"{name} comes from node {_q(source)}, which does not exist", edge=edge_id
            )
        elif source_node.outputs is not None and source_port not in source_node.outputs:
            self.add(
                "unknown_port",
                f"{name} leaves node {_q(source)} from port {_q(source_port)}, "
                f"but {_q(source)} has no output {_q(source_port)} "
                f"(its outputs: {_listing(source_node.outputs)})",
                node=source,
                edge=edge_id,
            )
        if target_node is None:
            self.add(
                "dangling_edge", f"{name} points to node {_q(target)}, which does not exist", edge=edge_id
            )
        elif target_node.inputs is not None and target_port not in target_node.inputs:
            self.add(
                "unknown_port",
                f"{name} enters node {_q(target)} at port {_q(target_port)}, "
                f"but {_q(target)} has no input {_q(target_port)} "
                f"(its inputs: {_listing(target_node.inputs)})",
                node=target,
                edge=edge_id,
            )

    # -- the graph as a whole --------------------------------------------------

    def check_fed_twice(self) -> None:
        feeders: dict[tuple[str, str], list[str]] = {}
        for edge in self.edges:
            entry = self.known.get(edge.target)
            port = (
                entry.inputs.get(edge.target_port) if entry is not None and entry.inputs is not None else None
            )
            if port is not None and not port.list:
                feeders.setdefault((edge.target, edge.target_port), []).append(edge.id)
        for (target, port_name), edge_ids in feeders.items():
            if len(edge_ids) > 1:
                self.add(
                    "input_fed_twice",
                    f"input {_q(port_name)} of node {_q(target)} is fed by {len(edge_ids)} edges "
                    f"({', '.join(_q(edge_id) for edge_id in edge_ids)}), "
                    "but only a list input may take several",
                    node=target,
                )

    def check_cycles(self) -> None:
        successors: dict[str, dict[str, None]] = {node_id: {} for node_id in self.known}
        for edge in self.edges:
            if edge.source in self.known and edge.target in self.known:
                successors[edge.source][edge.target] = None
        position = {node_id: index for index, node_id in enumerate(self.known)}
        cycles: list[list[str]] = []
        for component in _strongly_connected(list(self.known), successors):
            if len(component) > 1:
                start = min(component, key=position.__getitem__)
                cycles.append(_cycle_through(start, set(component), successors))
        cycles.extend([node_id] for node_id in self.known if node_id in successors[node_id])
        for cycle in sorted(cycles, key=lambda nodes: position[nodes[0]]):
            self.add("cycle", f"cycle: {' -> '.join([*cycle, cycle[0]])}", node=cycle[0])


def _strongly_connected(nodes: list[str], successors: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iteratively, so long chains cannot exhaust the stack."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in nodes:
        if root in index:
            continue
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(successors[root]))]
        while work:
            node_id, pending = work[-1]
            descended = False
            for successor in pending:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(successors[successor])))
                    descended = True
                    break
                if successor in on_stack:
                    low[node_id] = min(low[node_id], index[successor])
            if descended:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node_id])
            if low[node_id] == index[node_id]:
                component: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node_id:
                        break
                components.append(component)
    return components


def _cycle_through(start: str, members: set[str], successors: Mapping[str, Iterable[str]]) -> list[str]:
    """The shortest cycle from ``start`` back to itself within its strongly connected component."""
    parents: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node_id = queue.popleft()
        for successor in successors[node_id]:
            if successor == start and node_id != start:
                path = [node_id]
                while path[-1] != start:
                    path.append(parents[path[-1]])
                return path[::-1]
            if successor in members and successor != start and successor not in parents:
                parents[successor] = node_id
                queue.append(successor)
    raise AssertionError(f"{start!r} is in a strongly connected component but on no cycle")


# -- wording -------------------------------------------------------------------


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def _clip(text: str) -> str:
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 1] + "…"


def _q(text: str) -> str:
    return repr(_clip(text))


def _show(value: Any) -> str:
    """A short rendering of a value for a message; containers are only named."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _q(value)
    if isinstance(value, int):
        return _clip(str(value))
    if isinstance(value, float):
        return f"{value:g}"
    return _kind(value)


def _listing(names: Iterable[str]) -> str:
    shown = [_q(name) for name in names]
    return ", ".join(shown) if shown else "none"
