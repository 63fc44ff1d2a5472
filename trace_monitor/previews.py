"""Size caps for what a trace carries: large values keep a preview and their size.

A node may return up to FLOWKIT_NPU_MAX_OUTPUT_BYTES (8 MiB by default). Such a value
is stored whole once, on the node's row, and downloaded from the API; events, stream
frames and snapshots carry only the first FLOWKIT_TRACE_PREVIEW_BYTES of its JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def json_size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def cap_ports(values: Mapping[str, Any] | None, limit: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split port values into those that fit ``limit`` bytes of JSON and, for the
    others, ``{port: {"bytes": size, "preview": first bytes of the JSON}}``."""
    kept: dict[str, Any] = {}
    truncated: dict[str, Any] = {}
    for port, value in (values or {}).items():
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        size = len(text.encode("utf-8"))
        if size <= limit:
            kept[port] = value
        else:
            truncated[port] = {"bytes": size, "preview": cap_text(text, limit)}
    return kept, truncated


def cap_text(text: str, limit: int) -> str:
    """At most ``limit`` bytes of UTF-8, never cutting a character in two."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return text
    return data[:limit].decode("utf-8", "ignore")


def capped_node(node: dict[str, Any], limit: int) -> dict[str, Any]:
    """A node row (NodeRun.VISIBLE_FIELDS) with its inputs and outputs capped."""
    node = dict(node)
    truncated: dict[str, Any] = {}
    for field in ("inputs", "outputs"):
        if node.get(field) is not None:
            node[field], cut = cap_ports(node[field], limit)
            if cut:
                truncated[field] = cut
    if truncated:
        node["truncated"] = truncated
    return node
