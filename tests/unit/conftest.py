"""Shared helpers for the unit tests: run the NPU runtime on the host, as a subprocess.

The runtime is stdlib-only and talks on stdin/stdout, so a test can hand it a job
exactly as the node runner does and read back the JSON-line events it writes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
NPU_IMAGE = REPO / "npu_image"
ADD_NODE = (REPO / "examples/nodes/add.py").read_text()
RUN_TIMEOUT_S = 60

# Generous defaults; a test lowers the one limit it is about.
DEFAULT_LIMITS: dict[str, int] = {
    "max_output_bytes": 8 * 1024 * 1024,
    "max_log_lines": 5000,
    "max_log_bytes": 2 * 1024 * 1024,
    "max_log_line_bytes": 16 * 1024,
    "flood_bytes": 32 * 1024 * 1024,
}
TERMINAL_TYPES = ("result", "error")


@dataclass
class NodeRun:
    """What one run of the runtime produced."""

    events: list[dict[str, Any]]
    returncode: int
    stdout: bytes
    stderr: str

    def __iter__(self):
        # `events, code = run_node(...)` reads naturally in a test.
        return iter((self.events, self.returncode))

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event["type"] == kind]

    @property
    def logs(self) -> list[dict[str, Any]]:
        return self.of_type("log")

    @property
    def terminal(self) -> dict[str, Any]:
        """The one terminal event, which must also be the last event."""
        terminals = [event for event in self.events if event["type"] in TERMINAL_TYPES]
        assert len(terminals) == 1, f"expected exactly one terminal event, got {self.events!r}"
        assert self.events[-1] is terminals[0], f"the terminal event is not last: {self.events!r}"
        return terminals[0]

    @property
    def result(self) -> dict[str, Any]:
        event = self.terminal
        assert event["type"] == "result", f"the node failed: {event!r}\nstderr: {self.stderr}"
        return event

    @property
    def error(self) -> dict[str, Any]:
        event = self.terminal
        assert event["type"] == "error", f"the node did not fail: {event!r}"
        return event


def make_job(
    code: str,
    inputs: dict[str, Any] | None = None,
    secrets: dict[str, str] | None = None,
    **limit_overrides: int,
) -> dict[str, Any]:
    unknown = set(limit_overrides) - set(DEFAULT_LIMITS)
    assert not unknown, f"not a runtime limit: {unknown}"
    return {
        "protocol": 2,
        "code": code,
        "inputs": inputs or {},
        "secrets": secrets or {},
        "node": {"id": "node-1", "label": "Node under test"},
        "limits": {**DEFAULT_LIMITS, **limit_overrides},
    }


def run_job_bytes(payload: bytes, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "PYTHONPATH": str(NPU_IMAGE), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "flowkit.runtime"],
        input=payload,
        capture_output=True,
        env=env,
        cwd=cwd or NPU_IMAGE,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


def parse_events(stdout: bytes) -> list[dict[str, Any]]:
    """Every stdout line must be one JSON object: the protocol allows nothing else."""
    lines = stdout.split(b"\n")
    assert lines[-1] == b"", f"stdout does not end with a complete line: {stdout[-200:]!r}"
    events = []
    for number, line in enumerate(lines[:-1], start=1):
        try:
            event = json.loads(line)
        except ValueError:
            raise AssertionError(f"stdout line {number} is not JSON: {line[:200]!r}") from None
        assert isinstance(event, dict), f"stdout line {number} is not a JSON object: {line[:200]!r}"
        events.append(event)
    return events


def run_node(
    code: str,
    inputs: dict[str, Any] | None = None,
    secrets: dict[str, str] | None = None,
    *,
    cwd: Path | None = None,
    **limit_overrides: int,
) -> NodeRun:
    """Run ``code`` as a node in the real runtime and return its events and exit code."""
    job = make_job(code, inputs, secrets, **limit_overrides)
    completed = run_job_bytes(json.dumps(job).encode(), cwd=cwd)
    return NodeRun(
        events=parse_events(completed.stdout),
        returncode=completed.returncode,
        stdout=completed.stdout,
        stderr=completed.stderr.decode("utf-8", "replace"),
    )


def node_code(body: str, *, asynchronous: bool = False, prelude: str = "") -> str:
    """A complete node whose ``main`` runs ``body`` (which must return the result)."""
    definition = "async def main():" if asynchronous else "def main():"
    return (
        "from flowkit.log import Logger\n"
        "from flowkit.node import Node\n"
        "\n"
        "node = Node()\n"
        "logger = Logger(node)\n"
        f"{textwrap.dedent(prelude)}\n"
        f"{definition}\n"
        f"{textwrap.indent(textwrap.dedent(body), '    ')}\n"
        "\n"
        "node.register_main(main)\n"
        "node.run()\n"
    )


def returning(outputs_expression: str, *, before: str = "") -> str:
    """A node whose main runs ``before`` then returns ``outputs_expression`` as its outputs."""
    return node_code(f"{textwrap.dedent(before)}\nreturn [], {outputs_expression}, 'ok'")
