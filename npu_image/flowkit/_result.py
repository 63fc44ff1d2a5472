"""Check what a node's ``main`` returned before it leaves the NPU."""

from __future__ import annotations

import json
from typing import Any

EXPECTED = (
    "main() must return (next_nodes, outputs, status_message): a list of successor "
    "node ids, a dict mapping output port names to JSON values, and a status string"
)


class NodeResultError(Exception):
    """The node returned something FlowKit cannot pass on."""

    def __init__(self, message: str, port: str | None = None) -> None:
        super().__init__(message)
        self.port = port


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{type(value).__name__} {text}"


def check_result(value: Any, max_output_bytes: int) -> tuple[list[str], dict[str, Any], str]:
    if not isinstance(value, (tuple, list)) or len(value) != 3:
        raise NodeResultError(f"{EXPECTED}; got {_describe(value)}")
    next_nodes, outputs, status_message = value
    if not isinstance(next_nodes, (list, tuple)) or not all(isinstance(n, str) for n in next_nodes):
        raise NodeResultError(f"{EXPECTED}; next_nodes is {_describe(next_nodes)}")
    if not isinstance(outputs, dict) or not all(isinstance(port, str) for port in outputs):
        raise NodeResultError(f"{EXPECTED}; outputs is {_describe(outputs)}")
    if status_message is None:
        status_message = ""
    if not isinstance(status_message, str):
        raise NodeResultError(f"{EXPECTED}; status_message is {_describe(status_message)}")
    total = 0
    for port, port_value in outputs.items():
        total += _encoded_size(port, port_value, max_output_bytes)
    if total > max_output_bytes:
        raise NodeResultError(
            f"outputs total {total:,} bytes of JSON, over the cap of {max_output_bytes:,} bytes"
        )
    return list(next_nodes), outputs, status_message


def _encoded_size(port: str, value: Any, cap: int) -> int:
    try:
        # Same encoding as the protocol channel, so the cap measures the wire size.
        encoded = json.dumps(value, ensure_ascii=True, allow_nan=False)
    except RecursionError:
        raise NodeResultError(f"output '{port}' is nested too deeply to serialise as JSON", port) from None
    except (TypeError, ValueError) as exc:
        raise NodeResultError(f"output '{port}' is not JSON-serialisable: {exc}", port) from None
    if len(encoded) > cap:
        raise NodeResultError(
            f"output '{port}' is {len(encoded):,} bytes of JSON, over the cap of {cap:,} bytes",
            port,
        )
    return len(encoded)
