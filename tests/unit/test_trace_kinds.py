"""Which event kind each FCB transition becomes."""

from __future__ import annotations

import pytest

from control_unit.fcb import NODE_TRANSITIONS
from trace_monitor.kinds import TRANSITION_KINDS, transition_kind


@pytest.mark.parametrize(
    ("source", "target", "kind"),
    [
        ("pending", "queued", "queued"),
        ("queued", "running", "running"),
        ("running", "queued", "retry"),
        ("paused", "queued", "retry"),
        ("running", "paused", "paused"),
        ("paused", "running", "resumed"),
        ("running", "succeeded", "succeeded"),
        ("paused", "failed", "failed"),
        ("pending", "skipped", "skipped"),
        ("queued", "cancelled", "cancelled"),
    ],
)
def test_node_transitions_are_named_for_what_a_watcher_sees(source, target, kind):
    assert transition_kind("n", source, target) == kind


def test_every_legal_node_transition_has_a_transition_kind():
    for source, targets in NODE_TRANSITIONS.items():
        for target in targets:
            assert transition_kind("n", source, target) in TRANSITION_KINDS


@pytest.mark.parametrize("node_id", [None, ""])
def test_a_change_of_the_run_itself_is_a_run_event(node_id):
    assert transition_kind(node_id, "running", "succeeded") == "run"
