"""A contract type for import-linter (pyproject.toml, run by ``make test``): no import
cycle between the component folders, however long, and whichever way it closes.

The layers contract forbids every upward import already; this one says the invariant
itself, and names each cycle with an import that takes part in it, should the layers
ever be loosened."""

from __future__ import annotations

import itertools

from grimp import ImportGraph
from importlinter.application import output
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck


def component_cycles(edges: dict[str, dict[str, str]]) -> list[list[str]]:
    """Each cycle of the component graph ``edges`` (component -> component it imports ->
    an example import), once, as a list of components from its smallest name round to it."""
    cycles: list[list[str]] = []

    def walk(start: str, path: list[str]) -> None:
        for following in sorted(edges.get(path[-1], {})):
            if following == start:
                cycles.append([*path, start])
            elif following > start and following not in path:
                walk(start, [*path, following])

    for start in sorted(edges):
        walk(start, [start])
    return cycles


class AcyclicComponentsContract(Contract):
    type_name = "acyclic_components"

    components = fields.ListField(subfield=fields.StringField())

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:
        names: list[str] = list(self.components)  # type: ignore[call-overload]
        edges: dict[str, dict[str, str]] = {}
        for importer in names:
            for imported in names:
                if importer == imported:
                    continue
                expression = f"{importer}.** -> {imported}.**"
                found = graph.find_matching_direct_imports(import_expression=expression)
                if found:
                    first = min(found, key=lambda item: (item["importer"], item["imported"]))
                    edges.setdefault(importer, {})[imported] = f"{first['importer']} -> {first['imported']}"
        cycles = component_cycles(edges)
        shown = [[(a, b, edges[a][b]) for a, b in itertools.pairwise(cycle)] for cycle in cycles]
        return ContractCheck(kept=not cycles, warnings=None, metadata={"cycles": shown})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for cycle in check.metadata["cycles"]:
            output.print_error(" -> ".join([step[0] for step in cycle] + [cycle[0][0]]) + ":")
            for _, _, example in cycle:
                output.indent_cursor()
                output.print_error(f"e.g. {example}", bold=False)
            output.new_line()
