"""The NPU runtime runs one node and reports on stdout in JSON lines, whatever the node does."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from tests.unit.conftest import (
    ADD_NODE,
    make_job,
    node_code,
    parse_events,
    returning,
    run_job_bytes,
    run_node,
)

EXPECTED_SHAPE = "main() must return (next_nodes, outputs, status_message)"


# --- A node that works -------------------------------------------------------------------------


def test_the_add_example_returns_the_sum_and_logs_what_it_adds():
    run = run_node(ADD_NODE, {"a": 2, "b": 3})

    assert run.returncode == 0
    assert run.result["outputs"] == {"out": 5}
    assert run.result["next_nodes"] == []
    assert run.result["status_message"] == "run successfully"
    assert [(log["level"], log["stream"], log["message"]) for log in run.logs] == [
        ("info", "logger", "adding 2 and 3")
    ]


def test_a_plain_synchronous_main_works_like_an_async_one():
    code = node_code(
        """
        inputs = node.get_inputs()
        return ["next-node"], {"twice": inputs["n"] * 2}, "doubled"
        """
    )
    run = run_node(code, {"n": 21})

    assert run.result["outputs"] == {"twice": 42}
    assert run.result["next_nodes"] == ["next-node"]
    assert run.result["status_message"] == "doubled"


def test_a_status_message_of_none_becomes_an_empty_string():
    run = run_node(node_code("return [], {}, None"))

    assert run.result["status_message"] == ""


def test_the_node_sees_its_id_and_label():
    run = run_node(returning("{'id': node.id, 'label': node.label}"))

    assert run.result["outputs"] == {"id": "node-1", "label": "Node under test"}


def test_events_come_in_order_started_then_logs_then_exactly_one_terminal_event_last():
    code = node_code(
        """
        print("from print")
        logger.info("from the logger")
        return [], {}, "ok"
        """
    )
    run = run_node(code)
    kinds = [event["type"] for event in run.events]

    assert kinds[0] == "started"
    assert kinds[-1] == "result"
    assert set(kinds[1:-1]) == {"log"}
    assert len(kinds) == 4
    assert sum(kind in ("result", "error") for kind in kinds) == 1
    assert isinstance(run.events[0]["pid"], int)
    assert all(isinstance(event["ts"], float) for event in run.events)


# --- What the node writes to stdout and stderr --------------------------------------------------


def test_print_and_raw_writes_to_fd_1_and_2_become_log_events_with_their_stream():
    code = node_code(
        """
        import os, sys
        print("printed")
        os.write(1, b"raw stdout\\n")
        os.write(2, b"raw stderr\\n")
        print("printed to stderr", file=sys.stderr)
        return [], {}, "ok"
        """
    )
    run = run_node(code)
    seen = {(log["stream"], log["level"], log["message"]) for log in run.logs}

    assert seen == {
        ("stdout", "info", "printed"),
        ("stdout", "info", "raw stdout"),
        ("stderr", "warning", "raw stderr"),
        ("stderr", "warning", "printed to stderr"),
    }
    assert run.result["type"] == "result"


def test_binary_junk_on_stdout_becomes_log_text_and_every_stdout_line_is_still_json():
    code = node_code(
        """
        import os
        os.write(1, bytes(range(256)))
        os.write(2, b"\\xff\\xfe\\x00 junk \\x1b[31m")
        return [], {"after": "junk"}, "ok"
        """
    )
    run = run_node(code)

    # The helper parsed every line; check the raw bytes too: pure ASCII JSON lines.
    raw_lines = run.stdout.rstrip(b"\n").split(b"\n")
    assert all(line.isascii() and isinstance(json.loads(line), dict) for line in raw_lines)
    assert len(raw_lines) == len(run.events)
    stdout_messages = [log["message"] for log in run.logs if log["stream"] == "stdout"]
    # bytes(range(256)) holds one newline (byte 10), so it is two lines.
    assert stdout_messages[0] == bytes(range(10)).decode()
    assert stdout_messages[1].startswith(bytes(range(11, 32)).decode())
    assert "\ufffd" in stdout_messages[1]
    assert any(log["stream"] == "stderr" and "junk" in log["message"] for log in run.logs)
    assert run.result["outputs"] == {"after": "junk"}


def test_output_of_a_child_process_is_captured_as_a_log():
    code = node_code(
        """
        import subprocess
        subprocess.run(["echo", "hi from a child"], check=True)
        return [], {}, "ok"
        """
    )
    run = run_node(code)

    assert {"stream": "stdout", "message": "hi from a child"}.items() <= run.logs[0].items()
    assert run.result["type"] == "result"


def test_a_child_left_running_does_not_hold_the_result_past_the_grace_period():
    code = node_code(
        """
        import subprocess
        child = subprocess.Popen(["sleep", "30"])  # inherits the captured stdout and stderr
        return [], {"child": child.pid}, "ok"
        """
    )
    started = time.monotonic()
    run = run_node(code)
    elapsed = time.monotonic() - started
    os.kill(run.result["outputs"]["child"], signal.SIGKILL)

    # The capture waits 2 s in all for the pipes to close, not 2 s per stream.
    assert elapsed < 3.8
    assert run.result["status_message"] == "ok"


def test_a_hundred_thousand_lines_keep_at_most_max_log_lines_and_count_the_rest():
    code = node_code(
        """
        for i in range(100_000):
            print(f"{i:09d}")
        return [], {"done": True}, "ok"
        """
    )
    run = run_node(code, max_log_lines=100)

    assert len(run.logs) == 100
    [dropped] = run.of_type("log_dropped")
    assert dropped["lines"] == 100_000 - 100
    assert dropped["bytes"] == 9 * (100_000 - 100)
    assert run.events.index(dropped) == len(run.events) - 2
    assert run.result["outputs"] == {"done": True}


def test_past_max_log_bytes_lines_are_dropped_and_counted():
    code = node_code(
        """
        for _ in range(50):
            print("x" * 99)
        return [], {}, "ok"
        """
    )
    run = run_node(code, max_log_bytes=1000)

    assert len(run.logs) == 10
    [dropped] = run.of_type("log_dropped")
    assert (dropped["lines"], dropped["bytes"]) == (40, 40 * 99)


def test_writing_more_than_flood_bytes_stops_the_node_with_an_output_flood_error():
    code = node_code(
        """
        import sys
        line = "y" * 1023 + "\\n"
        for _ in range(5 * 1024):
            sys.stdout.write(line)
        return [], {"finished": True}, "ok"
        """
    )
    run = run_node(code, flood_bytes=1024 * 1024)

    assert run.error["error_type"] == "OutputFlood"
    assert "1,048,576 bytes" in run.error["message"]
    assert "stdout/stderr" in run.error["message"]
    assert run.of_type("result") == []
    assert run.returncode == 0


def test_a_single_huge_line_is_truncated_to_max_log_line_bytes():
    code = node_code(
        """
        print("a" * 1_000_000)
        print("short")
        return [], {}, "ok"
        """
    )
    run = run_node(code, max_log_line_bytes=1000)

    assert run.logs[0]["message"] == "a" * 1000
    assert run.logs[0]["truncated"] is True
    assert run.logs[1]["message"] == "short"
    assert "truncated" not in run.logs[1]
    assert len(run.logs) == 2


def test_a_line_over_the_cap_is_truncated_even_when_it_arrives_in_one_read():
    # Smaller than the capture's read size, so the whole line (newline included) is read at once.
    code = node_code(
        """
        import os
        os.write(1, b"b" * 5000 + b"\\n")
        return [], {}, "ok"
        """
    )
    run = run_node(code, max_log_line_bytes=1000)

    assert run.logs[0]["message"] == "b" * 1000
    assert run.logs[0]["truncated"] is True


def test_a_logger_line_over_the_cap_is_truncated_too():
    run = run_node(node_code('logger.info("c" * 5000)\nreturn [], {}, "ok"'), max_log_line_bytes=1000)

    assert run.logs[0]["message"] == "c" * 1000
    assert run.logs[0]["truncated"] is True


# --- A node that fails --------------------------------------------------------------------------


def test_a_raising_node_reports_the_error_with_a_traceback_of_the_users_code_only():
    code = node_code(
        """
        price = -1
        if price < 0:
            raise ValueError("the price is negative")
        return [], {}, "ok"
        """
    )
    run = run_node(code)
    error = run.error

    assert error["error_type"] == "ValueError"
    assert error["message"] == "the price is negative"
    assert 'raise ValueError("the price is negative")' in error["traceback"]
    assert "flowkit/runtime.py" not in error["traceback"]
    assert "flowkit/node.py" not in error["traceback"]
    assert error["line"] == code.splitlines().index('        raise ValueError("the price is negative")') + 1


def test_an_async_node_that_raises_shows_no_asyncio_frames():
    code = node_code('raise KeyError("missing")', asynchronous=True)
    error = run_node(code).error

    assert error["error_type"] == "KeyError"
    assert 'raise KeyError("missing")' in error["traceback"]
    assert "asyncio" not in error["traceback"]
    assert "flowkit/" not in error["traceback"]


def test_a_syntax_error_is_reported_with_its_line():
    code = "x = 1\ny = (\ndef broken(:\n"
    error = run_node(code).error

    assert error["error_type"] == "SyntaxError"
    assert error["line"] in (2, 3)
    assert "SyntaxError" in error["traceback"]


def test_a_syntax_error_on_a_known_line_reports_that_line():
    error = run_node("x = 1\ny = 2\nz = = 3\n").error

    assert error["error_type"] == "SyntaxError"
    assert error["line"] == 3
    assert "z = = 3" in error["traceback"]


@pytest.mark.parametrize(
    ("returned", "complaint"),
    [
        pytest.param("42", "got int 42", id="an int"),
        pytest.param("([], {})", "got tuple", id="a 2-tuple"),
        pytest.param("('next', {}, 'ok')", "next_nodes is str", id="next_nodes a string"),
        pytest.param("([1, 2], {}, 'ok')", "next_nodes is list", id="next_nodes not all strings"),
        pytest.param("([], ['x'], 'ok')", "outputs is list", id="outputs a list"),
        pytest.param("([], {1: 'x'}, 'ok')", "outputs is dict", id="outputs with a non-string port"),
        pytest.param("([], {}, 7)", "status_message is int", id="status not a string"),
    ],
)
def test_a_wrong_return_shape_says_what_main_must_return(returned, complaint):
    error = run_node(node_code(f"return {returned}")).error

    assert EXPECTED_SHAPE in error["message"]
    assert complaint in error["message"]
    assert error["error_type"] == "NodeResultError"


def test_an_output_that_is_not_json_serialisable_names_its_port():
    error = run_node(returning("{'ok': 1, 'x': {1, 2, 3}}")).error

    assert "output 'x'" in error["message"]
    assert "not JSON-serialisable" in error["message"]
    assert error["port"] == "x"


def test_an_output_over_max_output_bytes_names_its_port_and_the_cap():
    error = run_node(returning("{'big': 'z' * 5000}"), max_output_bytes=4096).error

    assert "output 'big'" in error["message"]
    assert "4,096 bytes" in error["message"]
    assert error["port"] == "big"


def test_outputs_that_are_each_small_but_together_over_the_cap_are_refused():
    error = run_node(returning("{'a': 'z' * 3000, 'b': 'z' * 3000}"), max_output_bytes=4096).error

    assert "outputs total" in error["message"]
    assert "4,096 bytes" in error["message"]


def test_a_nan_output_is_rejected_and_names_its_port():
    error = run_node(returning("{'ratio': float('nan')}")).error

    assert "output 'ratio'" in error["message"]
    assert error["port"] == "ratio"


def test_a_deeply_nested_output_gives_a_clear_error_naming_the_port():
    code = returning(
        "{'deep': deep}",
        before="""
        deep = []
        for _ in range(100_000):
            deep = [deep]
        """,
    )
    run = run_node(code)

    assert run.error["port"] == "deep"
    assert "output 'deep'" in run.error["message"]
    assert "nested too deeply" in run.error["message"]
    assert run.returncode == 0


def test_a_node_that_never_calls_run_is_told_so():
    code = "from flowkit.node import Node\nnode = Node()\nnode.register_main(lambda: ([], {}, ''))\n"
    error = run_node(code).error

    assert error["message"] == "the node registered main() but never called node.run()"


def test_a_node_that_never_registers_main_is_told_so():
    error = run_node("from flowkit.node import Node\nnode = Node()\n").error

    assert error["message"] == "the node never called node.register_main(main)"


def test_calling_run_before_register_main_is_an_error():
    error = run_node("from flowkit.node import Node\nNode().run()\n").error

    assert error["message"] == "node.run() was called before node.register_main(main)"


def test_calling_run_twice_is_an_error():
    code = node_code('return [], {}, "ok"') + "node.run()\n"
    run = run_node(code)

    assert run.error["message"] == "node.run() was called twice; a node runs its main once"
    assert run.of_type("result") == []


def test_sys_exit_in_main_is_reported_as_a_clear_error():
    error = run_node(node_code("import sys\nsys.exit(3)")).error

    assert error["error_type"] == "SystemExit"
    assert error["message"] == "the node called sys.exit(3); return from main() instead"


def test_register_main_refuses_something_that_is_not_a_function():
    error = run_node("from flowkit.node import Node\nNode().register_main(42)\n").error

    assert error["error_type"] == "TypeError"
    assert error["message"] == "register_main() takes a function, got int"


def test_get_inputs_returns_a_copy_the_node_may_change():
    code = node_code(
        """
        node.get_inputs()["items"].append(4)
        return [], {"items": node.get_inputs()["items"]}, "ok"
        """
    )
    assert run_node(code, {"items": [1, 2, 3]}).result["outputs"] == {"items": [1, 2, 3]}


def test_a_job_that_is_not_json_is_refused_with_a_protocol_error():
    completed = run_job_bytes(b"this is not json")
    [event] = parse_events(completed.stdout)

    assert event["type"] == "error"
    assert event["error_type"] == "ProtocolError"
    assert completed.returncode == 2


def test_a_job_in_another_protocol_version_is_refused_naming_both_versions():
    job = {**make_job(ADD_NODE), "protocol": 1}
    [event] = parse_events(run_job_bytes(json.dumps(job).encode()).stdout)

    assert event["error_type"] == "ProtocolError"
    assert "protocol 1" in event["message"]
    assert "speaks 2" in event["message"]


# --- The logger ---------------------------------------------------------------------------------


def test_each_awaitable_logger_method_carries_its_level():
    code = node_code(
        """
        await logger.debug("d")
        await logger.info("i")
        await logger.warning("w")
        await logger.error("e")
        await logger.info("%s + %s", 1, 2)
        return [], {}, "ok"
        """,
        asynchronous=True,
    )
    run = run_node(code)

    assert [(log["level"], log["message"]) for log in run.logs] == [
        ("debug", "d"),
        ("info", "i"),
        ("warning", "w"),
        ("error", "e"),
        ("info", "1 + 2"),
    ]
    assert {log["stream"] for log in run.logs} == {"logger"}


def test_an_unawaited_logger_call_in_a_sync_main_still_logs():
    run = run_node(node_code('logger.info("not awaited")\nreturn [], {}, "ok"'))

    assert [log["message"] for log in run.logs] == ["not awaited"]
    assert "never awaited" not in run.stderr
    assert run.result["type"] == "result"
