"""Size caps of trace events: small values pass whole, large ones keep a preview."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from trace_monitor.previews import cap_ports, cap_text, capped_node, json_size


def test_values_within_the_limit_are_kept_whole():
    kept, truncated = cap_ports({"a": 1, "b": "x" * 50, "c": {"nested": [1, 2]}}, limit=64)
    assert kept == {"a": 1, "b": "x" * 50, "c": {"nested": [1, 2]}}
    assert truncated == {}


def test_a_large_value_keeps_a_preview_and_its_full_size():
    big = "é" * 10_000  # two bytes each in UTF-8
    kept, truncated = cap_ports({"small": 1, "big": big}, limit=100)
    assert kept == {"small": 1}
    assert truncated["big"]["bytes"] == json_size(big) == 20_002
    preview = truncated["big"]["preview"]
    assert len(preview.encode()) <= 100
    assert json.dumps(big, ensure_ascii=False).startswith(preview)


def test_no_ports_gives_nothing():
    assert cap_ports(None, 10) == ({}, {})


@given(st.text(), st.integers(min_value=0, max_value=64))
def test_cap_text_is_a_prefix_within_the_limit_and_never_splits_a_character(text, limit):
    capped = cap_text(text, limit)
    assert text.startswith(capped)
    assert len(capped.encode("utf-8", "surrogatepass")) <= limit or capped == text


def test_a_node_row_gets_its_inputs_and_outputs_capped_and_says_so():
    node = {"node_id": "n", "inputs": {"in": "y" * 500}, "outputs": {"out": 2}, "state": "succeeded"}
    capped = capped_node(node, limit=100)
    assert capped["inputs"] == {}
    assert capped["outputs"] == {"out": 2}
    assert capped["truncated"] == {"inputs": {"in": {"bytes": 502, "preview": ('"' + "y" * 500)[:100]}}}
    assert node["inputs"] == {"in": "y" * 500}, "the row itself is not changed"
    assert "truncated" not in capped_node({"node_id": "n", "inputs": None, "outputs": {"o": 1}}, 100)
