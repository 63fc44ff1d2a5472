"""Nodes that spin, flood, raise or return nonsense end with a clear error, and the
worker keeps serving."""

from __future__ import annotations

from pathlib import Path

from tests.integration.conftest import node_code

ADD = (Path(__file__).resolve().parents[2] / "examples/nodes/add.py").read_text()


def npu_containers_of(docker_engine, test_run):
    return docker_engine.containers.list(
        all=True, sparse=True, filters={"label": f"flowkit.test_run={test_run.id}"}
    )


def test_busy_loop_is_killed_at_its_timeout_and_its_container_removed(run_node, docker_engine):
    test_run = run_node(node_code("while True:\n    pass\nvalue = None"), timeout_s=2)
    assert test_run.state == "failed"
    assert test_run.error["error_type"] == "NodeTimeout"
    assert "2 s timeout" in test_run.error["message"]
    assert npu_containers_of(docker_engine, test_run) == []


def test_printing_100_mb_ends_with_an_output_flood_error(run_node, docker_engine):
    test_run = run_node(
        node_code(
            "import sys\nchunk = 'y' * 1023 + '\\n'\nfor _ in range(100 * 1024):\n"
            "    sys.stdout.write(chunk)\nvalue = 'done'"
        )
    )
    assert test_run.state == "failed"
    assert test_run.error["error_type"] == "OutputFlood"
    assert "stdout/stderr" in test_run.error["message"]
    # What was kept is bounded and still readable.
    assert 0 < len(test_run.logs) <= 5000
    assert test_run.dropped_log_lines > 0 or len(test_run.logs) == 5000
    assert npu_containers_of(docker_engine, test_run) == []


def test_exception_is_reported_with_the_user_traceback(run_node):
    test_run = run_node(node_code("value = 1\nraise ValueError('the price is negative')"))
    assert test_run.state == "failed"
    assert test_run.error["error_type"] == "ValueError"
    assert test_run.error["message"] == "the price is negative"
    assert "raise ValueError('the price is negative')" in test_run.error["traceback"]
    assert test_run.error["line"] == 5
    assert "flowkit/runtime.py" not in test_run.error["traceback"]


def test_wrong_return_shape_says_what_was_expected(run_node):
    code = ADD.replace('return [], {"out": inputs["a"] + inputs["b"]}, "run successfully"', "return 42")
    test_run = run_node(code, {"a": 1, "b": 2})
    assert test_run.state == "failed"
    assert "main() must return (next_nodes, outputs, status_message)" in test_run.error["message"]
    assert "got int 42" in test_run.error["message"]


def test_output_that_is_not_json_names_its_port(run_node):
    test_run = run_node(node_code("value = {1, 2, 3}"))
    assert test_run.state == "failed"
    assert test_run.error["port"] == "value"
    assert "output 'value' is not JSON-serialisable" in test_run.error["message"]


def test_output_over_the_size_cap_names_its_port(run_node, settings):
    test_run = run_node(node_code(f"value = 'z' * {settings.FLOWKIT_NPU_MAX_OUTPUT_BYTES + 10}"))
    assert test_run.state == "failed"
    assert test_run.error["port"] == "value"
    assert "over the cap" in test_run.error["message"]


def test_worker_keeps_serving_after_failing_nodes(run_node):
    for body in ("raise RuntimeError('boom')", "import os\nos._exit(7)", "value = {1}"):
        assert run_node(node_code(body)).state == "failed"
    test_run = run_node(ADD, {"a": 2, "b": 3})
    assert test_run.state == "succeeded"
    assert test_run.outputs == {"out": 5}
    assert test_run.logs[0]["message"] == "adding 2 and 3"


def test_node_that_exits_early_is_reported_as_crashed_with_its_exit_code(run_node):
    test_run = run_node(node_code("import os\nos._exit(7)"))
    assert test_run.state == "failed"
    assert test_run.error["error_type"] == "NpuCrashed"
    assert "exit code 7" in test_run.error["message"]


def test_binary_junk_on_stdout_is_stored_as_readable_logs(run_node):
    test_run = run_node(node_code("import os\nos.write(1, bytes(range(256)) + b'\\n')\nvalue = 'ok'"))
    assert test_run.state == "succeeded"
    message = test_run.logs[0]["message"]
    assert "\x00" not in message
    assert "\ufffd" in message


def test_an_output_postgres_cannot_store_is_refused_naming_its_port(run_node):
    test_run = run_node(node_code("value = {'data': 'a\\x00b'}"))
    assert test_run.state == "failed"
    assert test_run.error["error_type"] == "UnstorableOutput"
    assert test_run.error["port"] == "value"
    assert "['data']" in test_run.error["message"]
