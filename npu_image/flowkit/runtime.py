"""Entry point of an NPU: read one job from stdin, run the node, report on stdout.

Wire protocol (version 2; ``PROTOCOL_VERSION``, which the fork server announces):

* runner -> NPU: one JSON document (the job)::

      {"protocol": 2, "code": "...", "inputs": {...}, "secrets": {"NAME": "value"},
       "node": {"id": "...", "label": "...", "attempt": 1, "idempotency_key": "run/node"},
       "limits": {"max_output_bytes": N, "max_log_lines": N, "max_log_bytes": N,
                  "max_log_line_bytes": N, "flood_bytes": N}}

* NPU -> runner: JSON lines, in this order: ``started`` (pid, python); any number of
  ``log`` (level, stream, message, truncated); at most one ``log_dropped`` (lines,
  bytes); then exactly one terminal event, ``result`` (next_nodes, outputs,
  status_message) or ``error`` (error_type, message, traceback, optional port and
  line). Each carries ``ts``, and nothing else: the runner checks every frame against
  this (node_runner/npu_frames.py), because the node's code can write frames too.

Anything else the process writes (an interpreter crash) goes to stderr, which the
runner keeps as a diagnostic.

In an NPU these events travel inside the fork server's framing (``flowkit.forkserver``),
one stream per execution.
"""

from __future__ import annotations

import ast
import builtins
import json
import linecache
import os
import platform
import sys
import traceback
import types
from collections.abc import Callable
from typing import Any, NoReturn

from . import PROTOCOL_VERSION, _channel, _job
from ._budget import LogBudget
from ._capture import OutputCapture
from ._channel import Channel
from ._result import NodeResultError
from ._secrets import REFERENCE_MARK, SecretNotDefined, substitute_secrets

MAX_JOB_BYTES = 256 * 1024 * 1024


class NodeContractError(Exception):
    """The node code did not follow the SDK's contract."""


def main() -> None:
    """Run the one job that arrives on stdin (a single-use runtime, as in tests; an NPU
    runs ``flowkit.forkserver``, whose executions each call ``serve`` in a fresh process)."""
    # Keep the real stdout for the protocol before anything can write to fd 1;
    # os.dup gives a non-inheritable descriptor, so child processes never see it.
    channel = Channel(os.dup(1))
    # The SDK every node imports (and asyncio with it) is loaded before the job is read.
    from . import node  # noqa: F401

    serve(channel, lambda: sys.stdin.buffer.read(MAX_JOB_BYTES + 1))


def serve(channel: Channel, read_job: Callable[[], bytes]) -> NoReturn:
    """Read one job with ``read_job``, run it, report on ``channel`` and exit the process."""
    _channel.install(channel)
    try:
        job = _parse_job(read_job())
    except (ValueError, KeyError, TypeError) as exc:
        channel.emit({"type": "error", "error_type": "ProtocolError", "message": str(exc), "traceback": ""})
        os._exit(2)
    _detach_stdin()

    capture = OutputCapture(channel, job.budget, on_flood=lambda: _stop_flood(channel, job.budget))
    capture.start()
    channel.emit({"type": "started", "pid": os.getpid(), "python": platform.python_version()})
    outcome = _execute(job)
    capture.stop()
    if job.budget.dropped_lines:
        channel.emit(
            {"type": "log_dropped", "lines": job.budget.dropped_lines, "bytes": job.budget.dropped_bytes}
        )
    channel.emit_final(outcome)
    # Skip atexit hooks and threads the node left running: the answer is out.
    os._exit(0)


def _parse_job(raw: bytes) -> _job.Job:
    if len(raw) > MAX_JOB_BYTES:
        raise ValueError(f"job is larger than {MAX_JOB_BYTES} bytes")
    document = json.loads(raw)
    if document.get("protocol") != PROTOCOL_VERSION:
        raise ValueError(
            f"runner speaks protocol {document.get('protocol')!r}, this NPU image speaks "
            f"{PROTOCOL_VERSION}; rebuild the image with `flowkit npu build`"
        )
    limits = document["limits"]
    budget = LogBudget(
        max_lines=int(limits["max_log_lines"]),
        max_bytes=int(limits["max_log_bytes"]),
        max_line_bytes=int(limits["max_log_line_bytes"]),
        flood_bytes=int(limits["flood_bytes"]),
    )
    job = _job.Job(
        node_id=str(document["node"]["id"]),
        label=str(document["node"].get("label", "")),
        attempt=int(document["node"].get("attempt", 1)),
        idempotency_key=str(document["node"].get("idempotency_key", "")),
        inputs=dict(document.get("inputs") or {}),
        max_output_bytes=int(limits["max_output_bytes"]),
        budget=budget,
    )
    job.extra["code"] = str(document["code"])
    job.extra["secrets"] = dict(document.get("secrets") or {})
    _job.install(job)
    return job


def _detach_stdin() -> None:
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)


def _stop_flood(channel: Channel, budget: LogBudget) -> None:
    if budget.dropped_lines:
        channel.emit({"type": "log_dropped", "lines": budget.dropped_lines, "bytes": budget.dropped_bytes})
    channel.emit_final(
        {
            "type": "error",
            "error_type": "OutputFlood",
            "message": (
                f"the node wrote more than {budget.flood_bytes:,} bytes to stdout/stderr "
                "and was stopped; log less, or return data as outputs"
            ),
            "traceback": "",
        }
    )
    os._exit(0)


def _execute(job: _job.Job) -> dict[str, Any]:
    code: str = job.extra.pop("code")
    secrets: dict[str, str] = job.extra.pop("secrets")
    filename = f"<node {job.node_id}>"
    # Tracebacks show the source as written (with references, never values).
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    try:
        if REFERENCE_MARK in code:
            tree = substitute_secrets(ast.parse(code, filename), secrets)
            del secrets
            compiled = compile(tree, filename, "exec")
        else:
            # Nothing the runner could have resolved: straight from the source, a tenth
            # of a millisecond sooner than through the syntax tree. (A reference spelt
            # with escapes stays the text it is, as one built at run time does.)
            compiled = compile(code, filename, "exec")
        module = types.ModuleType("__main__")
        module.__dict__["__builtins__"] = builtins
        sys.modules["__main__"] = module
        exec(compiled, module.__dict__)
        if not job.ran:
            if job.main is None:
                raise NodeContractError("the node never called node.register_main(main)")
            raise NodeContractError("the node registered main() but never called node.run()")
        assert job.result is not None
    except BaseException as exc:  # noqa: BLE001 - everything the node raises is reported
        return _error_event(exc, filename)
    next_nodes, outputs, status_message = job.result
    return {"type": "result", "next_nodes": next_nodes, "outputs": outputs, "status_message": status_message}


def _error_event(exc: BaseException, filename: str) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "error", "error_type": type(exc).__name__}
    try:
        event["message"] = str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not hide the error
        event["message"] = f"<{type(exc).__name__} with an unprintable message>"
    if isinstance(exc, SystemExit):
        event["message"] = f"the node called sys.exit({exc.code!r}); return from main() instead"
    if isinstance(exc, NodeResultError) and exc.port is not None:
        event["port"] = exc.port
    if isinstance(exc, SyntaxError):
        event["line"] = exc.lineno
        event["traceback"] = "".join(traceback.format_exception_only(type(exc), exc))
        return event
    if isinstance(exc, (SecretNotDefined, NodeContractError, NodeResultError)):
        event["traceback"] = ""
        return event
    summary = traceback.TracebackException.from_exception(exc)
    _keep_user_frames(summary, filename)
    user_frames = [frame for frame in summary.stack if frame.filename == filename]
    if user_frames:
        event["line"] = user_frames[-1].lineno
    event["traceback"] = "".join(summary.format())
    return event


def _keep_user_frames(summary: traceback.TracebackException, filename: str) -> None:
    """Drop the runtime's and the SDK's frames: the user wants to see their code."""
    seen: set[int] = set()
    current: traceback.TracebackException | None = summary
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        frames = [frame for frame in current.stack if frame.filename == filename]
        if frames:
            current.stack = traceback.StackSummary.from_list(frames)
        current = current.__cause__ or current.__context__


if __name__ == "__main__":
    main()
