"""Capability routing: the queue of a node, the queues of a worker, the reason a node
waits, and what the pipeline document may ask for."""

from __future__ import annotations

from itertools import combinations
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from control_unit.graph import parse_graph, validate_document
from control_unit.routing import (
    MAX_CAPABILITIES,
    CapabilityError,
    missing_capability_reason,
    parse_capabilities,
    queue_for,
    worker_queues,
)

capability = st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True)
capability_sets = st.sets(capability, max_size=MAX_CAPABILITIES)


def test_a_node_without_wishes_goes_to_the_base_queue():
    assert queue_for("flowkit", []) == "flowkit"


def test_a_node_queue_names_its_sorted_capability_set():
    assert queue_for("flowkit", ["network", "gpu"]) == "flowkit@gpu+network"
    assert queue_for("flowkit", ["gpu", "network", "gpu"]) == "flowkit@gpu+network"


def test_a_worker_consumes_the_queue_of_every_subset_of_its_capabilities():
    assert worker_queues("flowkit", ["network", "gpu"]) == [
        "flowkit",
        "flowkit@gpu",
        "flowkit@network",
        "flowkit@gpu+network",
    ]


def test_a_worker_without_capabilities_consumes_only_the_base_queue():
    assert worker_queues("flowkit", []) == ["flowkit"]


@given(offered=capability_sets, wanted=capability_sets)
def test_a_worker_consumes_a_node_queue_exactly_when_it_offers_everything_the_node_requires(
    offered: set[str], wanted: set[str]
):
    assert (queue_for("q", wanted) in worker_queues("q", offered)) == (wanted <= offered)


@given(offered=capability_sets)
def test_the_queues_of_a_worker_are_bounded_and_distinct(offered: set[str]):
    queues = worker_queues("q", offered)
    assert len(queues) == len(set(queues)) == 2 ** len(offered) <= 2**MAX_CAPABILITIES


def test_worker_capabilities_are_parsed_from_a_comma_separated_setting():
    assert parse_capabilities(" gpu, network ,,gpu") == ("gpu", "network")
    assert parse_capabilities("") == ()


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("GPU", "not a valid capability"),
        ("gpu+network", "not a valid capability"),
        ("a@b", "not a valid capability"),
        (",".join(f"c{index}" for index in range(MAX_CAPABILITIES + 1)), "at most 4"),
    ],
)
def test_bad_worker_capabilities_are_refused(text: str, complaint: str):
    with pytest.raises(CapabilityError, match=complaint):
        parse_capabilities(text)


def test_a_node_no_online_worker_can_take_waits_with_a_reason():
    assert (
        missing_capability_reason(["gpu"], []) == "waiting for a worker with capability gpu: none is online"
    )
    assert missing_capability_reason(["gpu"], [(), ("network",)]) == (
        "waiting for a worker with capability gpu: none is online"
    )
    assert missing_capability_reason(["gpu", "network"], [("gpu",), ("network",)]) == (
        "waiting for a worker with capabilities gpu, network: no online worker has all of them"
    )


def test_a_node_an_online_worker_can_take_has_no_reason_to_wait():
    assert missing_capability_reason(["gpu"], [("gpu", "network")]) is None


# -- the pipeline document -------------------------------------------------------


def document(**fields: Any) -> dict[str, Any]:
    return {"schema_version": 1, "nodes": [{"id": "train", "code": "", **fields}]}


def test_a_node_may_require_capabilities():
    graph = parse_graph(document(requires=["network", "gpu"]))
    assert graph.nodes["train"].requires == ("gpu", "network")


def test_a_node_requires_nothing_by_default():
    assert parse_graph(document()).nodes["train"].requires == ()


@pytest.mark.parametrize(
    ("requires", "message"),
    [
        ("gpu", "node 'train' has requires that is a string, but it must be a list of capabilities"),
        (["GPU"], "node 'train' requires 'GPU' (requires[0]), which is not a capability"),
        ([3], "node 'train' requires 3 (requires[0]), which is not a capability"),
        (["gpu", "gpu"], "node 'train' requires 'gpu' more than once"),
        (
            [f"c{index}" for index in range(MAX_CAPABILITIES + 1)],
            "node 'train' requires 5 capabilities, but a worker declares at most 4, "
            "so no worker could take it",
        ),
    ],
)
def test_bad_requirements_are_refused_naming_the_node(requires: Any, message: str):
    problems = validate_document(document(requires=requires))
    assert [problem.code for problem in problems] == ["invalid_requires"]
    assert problems[0].node == "train"
    assert problems[0].message.startswith(message)


def test_every_subset_of_a_worker_capabilities_is_a_valid_requirement():
    offered = ("gpu", "network", "fast-disk")
    for size in range(len(offered) + 1):
        for subset in combinations(offered, size):
            assert validate_document(document(requires=list(subset))) == []
