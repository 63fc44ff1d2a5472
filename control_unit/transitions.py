"""Allowed state changes of single-node test runs (runs follow control_unit.fcb)."""

from __future__ import annotations

from control_unit.fcb import InvalidTransition
from control_unit.models import NodeTestRunState as S

__all__ = ["NODE_TEST_RUN_TRANSITIONS", "InvalidTransition", "sources_of"]

NODE_TEST_RUN_TRANSITIONS: dict[str, frozenset[str]] = {
    S.QUEUED: frozenset({S.RUNNING, S.FAILED, S.CANCELLED}),
    S.RUNNING: frozenset({S.SUCCEEDED, S.FAILED, S.CANCELLED}),
    S.SUCCEEDED: frozenset(),
    S.FAILED: frozenset(),
    S.CANCELLED: frozenset(),
}


def sources_of(target: str) -> list[str]:
    """States from which ``target`` may be reached."""
    return [state for state, targets in NODE_TEST_RUN_TRANSITIONS.items() if target in targets]
