"""What one execution may tell the runner, checked field by field.

Everything that comes out of an NPU is hostile input: the node's own code can write
raw frames on the runtime's channel (it runs in the same process). So the runner
trusts nothing a frame says about itself:

- Each frame kind has a schema: its fields, their types and sizes, which are required.
  An unknown kind or field, a wrong type, NaN or Infinity (refused by the parser), NUL
  or an unpaired surrogate in a name, a second ``started`` or ``log_dropped``: the
  execution ends as ``ProtocolViolation`` (``wire.ProtocolViolation``, raised here and
  handled by the runner, which keeps the container id). Free text (log lines,
  messages, tracebacks) may hold what an honest node prints, NUL included: it is
  cleaned for storage, not refused. Messages never quote the frame: it may hold a
  secret.
- The budgets are kept here, not by the NPU: log lines and bytes past the node's
  limits are dropped and counted (one marker at the end, with what the NPU says it
  dropped itself); an execution that sends more frames than an honest one can, or
  outputs over the node's cap, is stopped.
- Text is masked (``Masker``) before anything else sees it, and cut to its final
  length only after that: a secret at the cut cannot leave its first part behind.
  The NPU cuts log lines too, further out (``wire.transport_line_bytes``); a line it
  cut is masked as cut (``Masker.mask_cut_line``).
- Verdicts are the runner's: an error frame cannot claim one (``RUNNER_VERDICTS``),
  and out-of-memory kills are counted by the fork server, not by the execution (in
  npu_execution).

A node still returns whatever outputs its code returns: that is its right (however
deep: nothing after the parser walks them by recursion). Outputs the database cannot
store fail the node with an error naming the port.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from control_unit.limits import NodeLimits
from control_unit.storable import clean_text, unstorable_path
from node_runner.npu_outcome import NodeError, NpuOutcome
from node_runner.wire import TERMINAL_TYPES, ProtocolViolation
from secret_manager.masking import Masker

# Error types only the runner gives (control_unit.run_actions decides retries by some):
# a frame claiming one was forged, or names a node's own exception class so.
RUNNER_VERDICTS = frozenset(
    {
        "NodeCancelled",
        "NodeTimeout",
        "NpuCrashed",
        "NpuUnavailable",
        "OutOfMemory",
        "ProtocolViolation",
        "RunnerError",
        "UnstorableOutput",
    }
)
LOG_LEVELS = frozenset({"debug", "info", "warning", "error"})
LOG_STREAMS = frozenset({"stdout", "stderr", "logger"})
# Frames an honest execution sends besides its log lines: started, log_dropped and
# its answer. A few more are tolerated before the execution is stopped.
OTHER_FRAMES = 8
MAX_NAME_CHARS = 200
MAX_NEXT_NODES = 10_000
MAX_STATUS_BYTES = 16 * 1024
MAX_MESSAGE_BYTES = 64 * 1024
MAX_TRACEBACK_BYTES = 256 * 1024
MAX_COUNT = 2**53


class FrameObserver(Protocol):
    def event(self, event: dict[str, Any]) -> None: ...


# -- field checks: each returns the field's value as the runner keeps it --------------


def _fail(kind: str, field: str, problem: str) -> ProtocolViolation:
    return ProtocolViolation(f"the NPU sent a {kind} frame whose {field} {problem}")


def _number(kind: str, field: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(kind, field, "is not a number")
    return float(value)


def _count(kind: str, field: str, value: Any) -> int:
    if type(value) is not int or not 0 <= value <= MAX_COUNT:
        raise _fail(kind, field, "is not a count")
    return value


def _optional_count(kind: str, field: str, value: Any) -> int | None:
    return None if value is None else _count(kind, field, value)


def _flag(kind: str, field: str, value: Any) -> bool:
    if type(value) is not bool:
        raise _fail(kind, field, "is not true or false")
    return value


def _name(kind: str, field: str, value: Any) -> str:
    """A short identifier-like text: refused, not cleaned, when unstorable."""
    if not isinstance(value, str) or not value or len(value) > MAX_NAME_CHARS:
        raise _fail(kind, field, f"is not a name of 1 to {MAX_NAME_CHARS} characters")
    if clean_text(value) != value:
        raise _fail(kind, field, "holds a NUL character or an unpaired surrogate")
    return value


def _optional_name(kind: str, field: str, value: Any) -> str | None:
    return None if value is None else clean_text(_text(kind, field, value))[:MAX_NAME_CHARS]


def _text(kind: str, field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _fail(kind, field, "is not text")
    return value


def _one_of(choices: frozenset[str]) -> Callable[[str, str, Any], str]:
    def check(kind: str, field: str, value: Any) -> str:
        if value not in choices:
            raise _fail(kind, field, f"is not one of {', '.join(sorted(choices))}")
        return str(value)

    return check


def _node_ids(kind: str, field: str, value: Any) -> list[str]:
    # Cleaned, not refused: a node may name a successor that does not exist (an empty
    # name, a typo), and the engine then fails it naming that successor.
    if not isinstance(value, list) or len(value) > MAX_NEXT_NODES:
        raise _fail(kind, field, f"is not a list of at most {MAX_NEXT_NODES:,} node ids")
    return [clean_text(_text(kind, field, item))[:MAX_NAME_CHARS] for item in value]


def _ports(kind: str, field: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(kind, field, "is not an object")
    return value


Check = Callable[[str, str, Any], Any]
# Per kind: (required fields, optional fields). ``ts`` is the NPU's clock: kept for
# the log line's time, never trusted for anything else.
SCHEMA: dict[str, tuple[dict[str, Check], dict[str, Check]]] = {
    "started": ({"pid": _count}, {"python": _optional_name, "ts": _number}),
    "log": (
        {"level": _one_of(LOG_LEVELS), "stream": _one_of(LOG_STREAMS), "message": _text},
        {"truncated": _flag, "ts": _number},
    ),
    "log_dropped": ({"lines": _count, "bytes": _count}, {"ts": _number}),
    "result": (
        {"next_nodes": _node_ids, "outputs": _ports, "status_message": _text},
        {"ts": _number},
    ),
    "error": (
        {"error_type": _name, "message": _text},
        {
            "traceback": _text,
            "port": _optional_name,
            "line": _optional_count,
            "ts": _number,
        },
    ),
}


def checked(frame: dict[str, Any]) -> dict[str, Any]:
    """``frame`` (parsed JSON) with each field checked against its kind's schema."""
    kind = frame.get("type")
    if not isinstance(kind, str) or kind not in SCHEMA:
        raise ProtocolViolation("the NPU sent a frame of an unknown type")
    required, optional = SCHEMA[kind]
    unknown = frame.keys() - required.keys() - optional.keys() - {"type"}
    if unknown:
        raise ProtocolViolation(f"the NPU sent a {kind} frame with {len(unknown)} unknown field(s)")
    missing = required.keys() - frame.keys()
    if missing:
        raise ProtocolViolation(f"the NPU sent a {kind} frame without {', '.join(sorted(missing))}")
    fields = {name: check(kind, name, frame[name]) for name, check in {**required, **optional}.items()
              if name in frame}  # fmt: skip
    return {"type": kind, **fields}


def cut_text(text: str, max_bytes: int) -> tuple[str, bool]:
    """``text`` cut to at most ``max_bytes`` of UTF-8, and whether it was cut."""
    encoded = text.encode("utf-8", "surrogatepass")
    if len(encoded) <= max_bytes:
        return text, False
    return encoded[:max_bytes].decode("utf-8", "ignore"), True


class ExecutionFrames:
    """Reads one execution's frames into its outcome: checked, masked, budgeted."""

    def __init__(
        self, limits: NodeLimits, masker: Masker, observer: FrameObserver, outcome: NpuOutcome
    ) -> None:
        self._limits = limits
        self._masker = masker
        self._observer = observer
        self._outcome = outcome
        self._frames_left = limits.max_log_lines + OTHER_FRAMES
        self._seen: set[str] = set()
        self._lines = 0
        self._bytes = 0
        self.dropped_lines = 0
        self.dropped_bytes = 0

    def apply(self, frame: dict[str, Any]) -> bool:
        """Apply one parsed frame; True for the execution's answer (result or error)."""
        if self._outcome.answered:
            raise ProtocolViolation("the NPU sent frames after its answer")
        self._frames_left -= 1
        if self._frames_left < 0:
            raise ProtocolViolation(
                f"the NPU sent more frames than its {self._limits.max_log_lines:,} log lines allow"
            )
        event = checked(frame)
        kind = event["type"]
        if kind in ("started", "log_dropped"):
            if kind in self._seen:
                raise ProtocolViolation(f"the NPU sent a second {kind} frame")
            self._seen.add(kind)
        if kind == "log":
            self._log(event)
        elif kind == "log_dropped":
            # What the NPU dropped before the runner saw it: only a count to show.
            self.dropped_lines += event["lines"]
            self.dropped_bytes += event["bytes"]
        elif kind == "result":
            self._result(event)
        elif kind == "error":
            self._error(event)
        else:
            self._observer.event(event)
        return kind in TERMINAL_TYPES

    def close(self) -> None:
        """The execution is over: put the count of dropped lines on the outcome and in
        the trace (one marker where lines are missing)."""
        self._outcome.dropped_log_lines = self.dropped_lines
        self._outcome.dropped_log_bytes = self.dropped_bytes
        if self.dropped_lines or self.dropped_bytes:
            self._observer.event(
                {"type": "log_dropped", "lines": self.dropped_lines, "bytes": self.dropped_bytes}
            )

    def _log(self, event: dict[str, Any]) -> None:
        message = event["message"]
        cut_by_npu = bool(event.get("truncated"))
        masked = self._masker.mask_cut_line(message) if cut_by_npu else self._masker.mask_text(message)
        text, cut = cut_text(clean_text(masked), self._limits.max_log_line_bytes)
        size = len(text.encode("utf-8"))
        if self._lines >= self._limits.max_log_lines or self._bytes + size > self._limits.max_log_bytes:
            self.dropped_lines += 1
            self.dropped_bytes += size
            return
        self._lines += 1
        self._bytes += size
        line: dict[str, Any] = {"level": event["level"], "stream": event["stream"], "message": text}
        if "ts" in event:
            line["ts"] = event["ts"]
        if cut or cut_by_npu:
            line["truncated"] = True
        self._outcome.logs.append(line)
        self._observer.event({"type": "log", **line})

    def _result(self, event: dict[str, Any]) -> None:
        outcome = self._outcome
        outcome.next_nodes = event["next_nodes"]
        outcome.status_message = self._final_text(event["status_message"], MAX_STATUS_BYTES)
        outputs: dict[str, Any] = event["outputs"]
        size = _encoded_size(outputs)
        if size > self._limits.max_output_bytes:
            # The runtime refuses such outputs itself: this answer did not come from it.
            raise ProtocolViolation(
                f"the NPU sent outputs of {size:,} bytes of JSON, over the cap of "
                f"{self._limits.max_output_bytes:,} bytes"
            )
        for port, value in outputs.items():
            problem = _unstorable(port, value)
            if problem is not None:
                outcome.error = NodeError("UnstorableOutput", problem, port=clean_text(port))
                self._observer.event({"type": "error", **outcome.error.as_dict()})
                return
        outcome.outputs = outputs
        self._observer.event({"type": "result", "next_nodes": outcome.next_nodes})

    def _error(self, event: dict[str, Any]) -> None:
        error_type = event["error_type"]
        if error_type in RUNNER_VERDICTS:
            raise ProtocolViolation(
                f"the node's error claims the verdict {error_type}, which only the runner gives "
                "(a node's own exception class cannot have that name)"
            )
        self._outcome.error = NodeError(
            error_type,
            self._final_text(event["message"], MAX_MESSAGE_BYTES),
            traceback=self._final_text(event.get("traceback", ""), MAX_TRACEBACK_BYTES),
            port=event.get("port"),
            line=event.get("line"),
        )
        self._observer.event({"type": "error", "error_type": error_type})

    def _final_text(self, text: str, max_bytes: int) -> str:
        """Masked first, then cleaned for storage and cut to its final length."""
        return cut_text(clean_text(self._masker.mask_text(text)), max_bytes)[0]


def _encoded_size(outputs: dict[str, Any]) -> int:
    """The outputs' size as the runtime measures it against the cap (npu_image/flowkit/
    _result.py): each port's value as ASCII-escaped JSON."""
    return sum(len(json.dumps(value, ensure_ascii=True)) for value in outputs.values())


def _unstorable(port: str, value: Any) -> str | None:
    """Why the output ``port`` cannot be kept, or None."""
    where = unstorable_path(value)
    if where is not None or unstorable_path(port) is not None:
        return (
            f"output {clean_text(port)!r} holds a NUL character or an unpaired surrogate"
            f"{' at ' + where if where else ''}, which cannot be stored; encode binary data "
            "(for example base64) before returning it"
        )
    return None
