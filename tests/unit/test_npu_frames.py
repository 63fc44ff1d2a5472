"""The runner's reading of an execution's frames: every field checked, budgets kept by
the runner, text masked before it is cut, verdicts the runner's own."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node_runner.npu_frames import OTHER_FRAMES, RUNNER_VERDICTS, ExecutionFrames
from node_runner.npu_outcome import NpuOutcome
from node_runner.wire import ProtocolViolation, parse_frame
from secret_manager.masking import MASK, Masker, masked_forms
from tests.unit.test_wire import LIMITS

SECRET = "s3cr3t-'quoted'\n\"value\""
LOG = {"type": "log", "level": "info", "stream": "stdout", "message": "hello", "ts": 1.5}
RESULT = {"type": "result", "next_nodes": ["b"], "outputs": {"out": [1, {"k": "v"}]}, "status_message": "ok"}
ERROR = {
    "type": "error",
    "error_type": "ValueError",
    "message": "bad",
    "traceback": "Traceback ...",
    "line": 3,
}


class Seen:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def event(self, event: dict[str, Any]) -> None:
        self.events.append(event)


def reader(limits=LIMITS, secrets=(SECRET,)) -> tuple[ExecutionFrames, NpuOutcome, Seen]:
    outcome, seen = NpuOutcome(container_id="c1"), Seen()
    return ExecutionFrames(limits, Masker(secrets), seen, outcome), outcome, seen


def feed(frames: ExecutionFrames, outcome: NpuOutcome, *events: dict[str, Any]) -> None:
    for event in events:
        if frames.apply(event):
            outcome.answered = True
    frames.close()


def test_an_honest_executions_frames_make_its_outcome():
    frames, outcome, seen = reader()
    feed(frames, outcome, {"type": "started", "pid": 7, "python": "3.13.1"}, LOG, RESULT)
    assert outcome.answered
    assert outcome.error is None
    assert (outcome.next_nodes, outcome.outputs, outcome.status_message) == (["b"], RESULT["outputs"], "ok")
    assert outcome.logs == [{"level": "info", "stream": "stdout", "message": "hello", "ts": 1.5}]
    assert [event["type"] for event in seen.events] == ["started", "log", "result"]


def test_a_node_error_is_kept_with_its_details():
    frames, outcome, _ = reader()
    feed(frames, outcome, ERROR)
    assert outcome.error is not None
    assert (outcome.error.error_type, outcome.error.message, outcome.error.line) == ("ValueError", "bad", 3)


FORGED = {
    "unknown type": {"type": "shell", "command": "id"},
    "unknown field": {**LOG, "extra": 1},
    "missing field": {"type": "log", "level": "info", "stream": "stdout"},
    "count as text": {"type": "log_dropped", "lines": SECRET, "bytes": 1},
    "negative count": {"type": "log_dropped", "lines": -1, "bytes": 1},
    "boolean count": {"type": "log_dropped", "lines": True, "bytes": 1},
    "huge count": {"type": "log_dropped", "lines": 2**64, "bytes": 1},
    "unknown level": {**LOG, "level": "shout"},
    "unknown stream": {**LOG, "stream": "stdin"},
    "message not text": {**LOG, "message": {"a": 1}},
    "truncated not a flag": {**LOG, "truncated": "yes"},
    "time as text": {**LOG, "ts": "noon"},
    "pid as text": {"type": "started", "pid": "1"},
    "next node not a name": {**RESULT, "next_nodes": [1]},
    "next nodes not a list": {**RESULT, "next_nodes": "b"},
    "outputs not an object": {**RESULT, "outputs": [1, 2]},
    "status not text": {**RESULT, "status_message": 5},
    "empty error type": {**ERROR, "error_type": ""},
    "error type with a surrogate": {**ERROR, "error_type": "Bad\ud800"},
    "error type too long": {**ERROR, "error_type": "E" * 201},
    "line as text": {**ERROR, "line": "3"},
    "out-of-memory kills claimed": {**RESULT, "oom_kills": 5},
}


@pytest.mark.parametrize("frame", FORGED.values(), ids=FORGED.keys())
def test_a_frame_that_breaks_its_schema_is_a_protocol_violation_whose_message_quotes_nothing(frame):
    frames, outcome, _ = reader()
    with pytest.raises(ProtocolViolation) as refused:
        frames.apply(frame)
    assert not any(form in str(refused.value) for form in masked_forms([SECRET]))
    assert outcome.error is None
    assert not outcome.answered


@pytest.mark.parametrize("verdict", sorted(RUNNER_VERDICTS))
def test_an_error_frame_cannot_claim_a_verdict_of_the_runner(verdict):
    frames, _, _ = reader()
    with pytest.raises(ProtocolViolation, match=f"claims the verdict {verdict}"):
        frames.apply({**ERROR, "error_type": verdict})


@pytest.mark.parametrize(
    "kind", [{"type": "started", "pid": 1}, {"type": "log_dropped", "lines": 1, "bytes": 2}]
)
def test_a_second_frame_of_a_kind_sent_once_is_a_protocol_violation(kind):
    frames, _, _ = reader()
    frames.apply(kind)
    with pytest.raises(ProtocolViolation, match="second"):
        frames.apply(kind)


def test_frames_after_the_answer_are_a_protocol_violation():
    frames, outcome, _ = reader()
    feed(frames, outcome, RESULT)
    with pytest.raises(ProtocolViolation, match="after its answer"):
        frames.apply(LOG)


def test_log_lines_past_the_budget_are_dropped_and_counted_by_the_runner():
    limits = replace(LIMITS, max_log_lines=3)
    frames, outcome, seen = reader(limits)
    feed(frames, outcome, *[LOG] * 5, {"type": "log_dropped", "lines": 2, "bytes": 10}, RESULT)
    assert len(outcome.logs) == 3
    assert (outcome.dropped_log_lines, outcome.dropped_log_bytes) == (4, 10 + 2 * len("hello"))
    assert seen.events[-1] == {"type": "log_dropped", "lines": 4, "bytes": 20}


def test_log_bytes_past_the_budget_are_dropped_and_counted():
    limits = replace(LIMITS, max_log_bytes=12)
    frames, outcome, _ = reader(limits)
    feed(frames, outcome, *[LOG] * 4)
    assert [line["message"] for line in outcome.logs] == ["hello", "hello"]
    assert outcome.dropped_log_lines == 2


def test_an_execution_sending_more_frames_than_its_budget_allows_is_stopped():
    limits = replace(LIMITS, max_log_lines=10)
    frames, _, _ = reader(limits)
    for _ in range(10 + OTHER_FRAMES):
        frames.apply(LOG)
    with pytest.raises(ProtocolViolation, match="more frames than its 10 log lines allow"):
        frames.apply(LOG)


def test_a_log_line_is_masked_then_cut_so_a_secret_at_the_cut_leaves_nothing():
    limits = replace(LIMITS, max_log_line_bytes=200)
    frames, outcome, _ = reader(limits)
    line = "x" * 95 + SECRET + " tail"
    feed(frames, outcome, {**LOG, "message": line})
    stored = outcome.logs[0]
    assert stored["message"] == "x" * 95 + MASK + " tail"
    frames, outcome, _ = reader(replace(limits, max_log_line_bytes=97))
    feed(frames, outcome, {**LOG, "message": line})
    assert outcome.logs[0] == {**stored, "message": "x" * 95 + "**", "truncated": True}


def test_a_line_the_npu_cut_inside_a_secret_keeps_no_first_part_of_it():
    frames, outcome, _ = reader()
    feed(frames, outcome, {**LOG, "message": "token=" + SECRET[:9], "truncated": True})
    assert outcome.logs[0]["message"] == "token=" + MASK
    assert outcome.logs[0]["truncated"] is True


def test_unstorable_text_is_cleaned_and_an_unstorable_output_fails_the_node_naming_its_port():
    frames, outcome, _ = reader()
    feed(frames, outcome, {**LOG, "message": "nul\x00here"}, {**RESULT, "outputs": {"blob": "a\x00b"}})
    assert outcome.logs[0]["message"] == "nul\ufffdhere"
    assert outcome.error is not None
    assert (outcome.error.error_type, outcome.error.port) == ("UnstorableOutput", "blob")
    assert outcome.outputs == {}


def test_an_error_message_and_traceback_are_masked_before_they_are_cut():
    frames, outcome, _ = reader()
    feed(frames, outcome, {**ERROR, "message": repr(SECRET), "traceback": f"KeyError: {SECRET!r}"})
    assert outcome.error is not None
    assert (outcome.error.message, outcome.error.traceback) == (f"'{MASK}'", f"KeyError: '{MASK}'")


def test_a_forged_nan_never_reaches_the_schema():
    with pytest.raises(ProtocolViolation, match="not JSON"):
        parse_frame(b'{"type": "log", "level": "info", "stream": "stdout", "message": "m", "ts": NaN}')


SECRETS = st.text(st.characters(codec="utf-8"), min_size=4, max_size=30)
AROUND = st.text(st.characters(codec="utf-8"), max_size=20)


@given(secret=SECRETS, before=AROUND, after=AROUND, show=st.sampled_from(["raw", "repr", "ascii", "lines"]))
def test_no_stored_or_streamed_log_line_holds_a_form_of_a_secret(secret, before, after, show):
    shown = {"raw": secret, "repr": repr(secret), "ascii": ascii(secret), "lines": secret}[show]
    printed = before + shown + after
    # What the capture in the NPU sends: one frame per printed line.
    lines = printed.split("\n")
    frames, outcome, seen = reader(secrets=(secret,))
    feed(frames, outcome, *[{**LOG, "message": line} for line in lines])
    stored = [line["message"] for line in outcome.logs] + [e.get("message", "") for e in seen.events]
    for text in stored:
        for form in masked_forms([secret]):
            assert form not in text


def test_outputs_over_the_cap_are_a_protocol_violation_as_the_runtime_never_sends_them():
    outputs = {"a": "x" * 49, "b": "y" * 49}  # 51 + 51 bytes of JSON
    frames, outcome, _ = reader(replace(LIMITS, max_output_bytes=102))
    feed(frames, outcome, {**RESULT, "outputs": outputs})
    assert outcome.outputs == outputs
    frames, _, _ = reader(replace(LIMITS, max_output_bytes=101))
    with pytest.raises(ProtocolViolation, match="outputs of 102 bytes of JSON, over the cap of 101"):
        frames.apply({**RESULT, "outputs": outputs})


def test_a_successor_named_wrongly_is_kept_cleaned_for_the_engine_to_refuse_by_name():
    frames, outcome, _ = reader()
    feed(frames, outcome, {**RESULT, "next_nodes": ["", "a\x00b", "n" * 300]})
    assert outcome.next_nodes == ["", "a\ufffdb", "n" * 200]
