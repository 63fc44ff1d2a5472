"""Allowed state changes, and the error for a change that is not allowed."""

from __future__ import annotations

from control_unit.models import NodeTestRunState as S


class InvalidTransition(Exception):
    def __init__(self, what: str, current: str, target: str) -> None:
        super().__init__(f"{what} cannot go from {current} to {target}")
        self.current = current
        self.target = target


NODE_TEST_RUN_TRANSITIONS: dict[str, frozenset[str]] = {
    S.QUEUED: frozenset({S.RUNNING, S.FAILED}),
    S.RUNNING: frozenset({S.SUCCEEDED, S.FAILED}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset(),
}


def sources_of(target: str) -> list[str]:
    """States from which ``target`` may be reached."""
    return [state for state, targets in NODE_TEST_RUN_TRANSITIONS.items() if target in targets]
