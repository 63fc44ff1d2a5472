"""Node code writes the runner's protocol itself, and honest nodes show their secrets
by mistake. Issue 16's attacks: forged frames of every kind, forged verdicts, forged
log floods, deep output beside a secret, multi-line and ``repr`` secrets, a secret at
the line cut. Whatever comes out of the NPU, the attempt ends with a clear outcome, the
runner's facts stay the runner's, and no stored, streamed or logged text holds a secret
(nor a listed form of it: secret_manager.masking)."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings

from secret_manager.actions import do_set_secret
from secret_manager.masking import masked_forms
from tests.security.conftest import node_code
from tests.security.test_resource_exhaustion import forged
from trace_monitor.models import NodeExecution, TraceEvent

SECRET = "pa'ss\"w0rd-7c1e-\\-é-value"
PEM = (
    "-----BEGIN TEST KEY-----\n"
    "MIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n"
    "KUpRKfFLfRYC9AIKjbJTWit+CqvjWYzvQwECAwEAAQJAIJLixBy2qpFoS4DSmoEm\n"
    "-----END TEST KEY-----"
)


def set_secrets() -> None:
    do_set_secret("HOSTILE_SECRET", SECRET, user=None)
    do_set_secret("HOSTILE_PEM", PEM, user=None)


def everything_kept(sandbox: Any, attack: Any) -> str:
    """All the text FlowKit kept of the execution: what the API serves, the trace the
    monitor streams, the timeline's rows, and the worker's own log."""
    kept = [repr([attack.error, attack.outputs, attack.logs]), sandbox.worker.log()]
    if is_run(attack):
        kept += [repr(event.data) for event in TraceEvent.objects.filter(run_id=attack.run_ref)]
        kept += [row.error_type for row in NodeExecution.objects.filter(run_id=attack.run_ref)]
    return "\n".join(kept)


def is_run(attack: Any) -> bool:
    """Whether the attack ran as a pipeline run (traced), not as a node test run."""
    return not attack.run_ref.startswith("test-")


def assert_no_form_of(secret: str, text: str) -> None:
    for form in masked_forms([secret]):
        assert form not in text, f"a form of the secret ({len(form)} characters) was kept"


def test_a_forged_dropped_count_holding_a_secret_reaches_no_log_and_no_stored_error(sandbox):
    set_secrets()
    # Once, int() of this count raised with the secret in its message: into the worker's
    # log in clear, and into the stored error in its repr form.
    code = forged(
        """
secret = "<<<secret::HOSTILE_SECRET>>>"
import json
send(json.dumps({"type": "log_dropped", "lines": secret, "bytes": 1}).encode() + b"\\n")
value = 'never'
"""
    )
    attack = sandbox.attack(code)
    assert attack.state == "failed"
    assert attack.error["error_type"] == "ProtocolViolation"
    assert "log_dropped frame whose lines is not a count" in attack.error["message"]
    assert attack.container_id, "the NPU it ran in is still named"
    assert_no_form_of(SECRET, everything_kept(sandbox, attack))


FORGED_FRAMES = {
    "unknown field": '{"type": "log", "level": "info", "stream": "stdout", "message": "m", "shell": "id"}',
    "wrong type": '{"type": "started", "pid": "one"}',
    "result without outputs": '{"type": "result", "next_nodes": [], "status_message": ""}',
    "error type with NUL": '{"type": "error", "error_type": "E\\\\u0000", "message": ""}',
    "NaN time": '{"type": "log", "level": "info", "stream": "stdout", "message": "m", "ts": NaN}',
    "Infinity count": '{"type": "log_dropped", "lines": Infinity, "bytes": 0}',
}


def test_forged_frames_of_every_kind_end_the_attempt_as_a_protocol_violation(sandbox):
    for name, frame in FORGED_FRAMES.items():
        attack = sandbox.attack(forged(f"send(b'{frame}\\n')\nimport time\ntime.sleep(1)\nvalue = 0"))
        assert attack.state == "failed", name
        assert attack.error["error_type"] == "ProtocolViolation", (name, attack.error)
        assert attack.container_id, name


@pytest.mark.parametrize("verdict", ["OutOfMemory", "NodeCancelled"])
def test_a_forged_verdict_is_refused(sandbox, verdict):
    # Once taken at its word: a node "out of memory" had its NPU replaced, one
    # "cancelled" was reported so and never retried.
    frame = f'{{"type": "error", "error_type": "{verdict}", "message": "forged", "traceback": ""}}'
    attack = sandbox.attack(forged(f"send(b'{frame}\\n')\nvalue = 0"))
    assert attack.state == "failed"
    assert attack.error["error_type"] == "ProtocolViolation"
    assert f"claims the verdict {verdict}" in attack.error["message"]


def test_a_success_claiming_out_of_memory_kills_is_refused_not_taken_for_one(sandbox):
    # Once the runner read the count in an answer: a success became OutOfMemory. Only
    # the fork server counts OOM kills now; the runtime sends no such field.
    attack = sandbox.attack(
        forged(
            """
send(b'{"type": "result", "next_nodes": [], "outputs": {"value": 1}, "status_message": "", '
     b'"oom_kills": 999}\\n')
value = 0
"""
        )
    )
    assert attack.state == "failed"
    assert attack.error["error_type"] == "ProtocolViolation"
    assert "unknown field" in attack.error["message"]


def test_a_forged_log_flood_stores_no_more_than_the_line_budget(sandbox):
    attack = sandbox.attack(
        forged(
            """
line = b'{"type": "log", "level": "info", "stream": "stdout", "message": "forged"}\\n'
for _ in range(60000):
    send(line)
value = 'flooded'
"""
        )
    )
    assert attack.state == "failed"
    assert attack.error["error_type"] == "ProtocolViolation"
    assert "more frames than" in attack.error["message"]
    assert len(attack.logs) <= settings.FLOWKIT_NPU_MAX_LOG_LINES
    if is_run(attack):
        lines = TraceEvent.objects.filter(run_id=attack.run_ref, kind="log").count()
        assert lines <= settings.FLOWKIT_NPU_MAX_LOG_LINES


def test_a_deep_output_of_a_node_holding_a_secret_is_masked_and_stored(sandbox):
    set_secrets()
    # An honest node: the masker once recursed, and crashed past ~490 levels.
    attack = sandbox.attack(
        node_code(
            """
value = ["<<<secret::HOSTILE_SECRET>>>"]
for _ in range(800):
    value = [value]
"""
        )
    )
    assert attack.state == "succeeded", attack.error
    value, depth = attack.outputs["value"], 0
    while isinstance(value, list) and isinstance(value[0], list):
        value, depth = value[0], depth + 1
    assert (depth, value) == (800, ["***"])


def test_a_multi_line_secret_printed_is_masked_line_by_line(sandbox):
    set_secrets()
    attack = sandbox.attack(node_code('print("<<<secret::HOSTILE_PEM>>>")\nvalue = 1'))
    assert attack.state == "succeeded", attack.error
    kept = everything_kept(sandbox, attack)
    for line in PEM.splitlines():
        assert line not in kept
    assert sum(line["message"] == "***" for line in attack.logs) == len(PEM.splitlines())


def test_the_repr_of_a_secret_in_a_dict_an_f_string_and_an_exception_is_masked(sandbox):
    set_secrets()
    attack = sandbox.attack(
        node_code(
            """
key = "<<<secret::HOSTILE_SECRET>>>"
print({"key": key})
print(f"{key!r}")
print(ascii(key), repr(key.encode()))
raise KeyError(key)
value = 0
"""
        )
    )
    assert attack.state == "failed"
    assert attack.error["error_type"] == "KeyError"
    assert "***" in attack.error["message"]
    assert_no_form_of(SECRET, everything_kept(sandbox, attack))


def test_a_secret_at_the_line_cut_leaves_no_first_part_behind(sandbox):
    set_secrets()
    cut = settings.FLOWKIT_NPU_MAX_LOG_LINE_BYTES
    # Cut before masking, as it once was, the line kept the secret's first 8 bytes; the
    # runner masks the whole line first, then cuts it.
    attack = sandbox.attack(
        node_code(
            f'print("x" * {cut - 8} + "<<<secret::HOSTILE_SECRET>>>")\n'
            f'print("y" * {cut - 2} + "<<<secret::HOSTILE_SECRET>>>" + "z" * 100)\n'
            "value = 1"
        )
    )
    assert attack.state == "succeeded", attack.error
    whole, cut_after = attack.logs
    assert whole["message"] == "x" * (cut - 8) + "***"
    assert "truncated" not in whole
    assert (cut_after["message"], cut_after["truncated"]) == ("y" * (cut - 2) + "**", True)
    assert SECRET[:8] not in everything_kept(sandbox, attack)
