"""`flowkit node run` sends a node file through the real path and prints its result."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from control_unit.models import NodeTestRun
from tests.integration.conftest import REPO, server_environment


def flowkit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "web_ui.cli.main", *args],
        cwd=REPO, env=server_environment(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_node_run_prints_the_output_and_a_container_appears_in_docker_events(
    celery_worker, transactional_db, docker_engine
):
    since = time.time() - 1
    result = flowkit("node", "run", "examples/nodes/add.py", "--input", "a=2", "--input", "b=3")
    assert result.returncode == 0, result.stderr
    assert "out = 5" in result.stdout.splitlines()
    assert "adding 2 and 3" in result.stdout

    test_run = NodeTestRun.objects.get()
    events = docker_engine.events(
        since=int(since), until=int(time.time()) + 1, decode=True,
        filters={"label": f"flowkit.test_run={test_run.id}"},
    )  # fmt: skip
    actions = [event["Action"] for event in events if event.get("Type") == "container"]
    assert {"create", "start", "die", "destroy"} <= set(actions), actions
    assert test_run.container_id in {event["id"] for event in docker_engine.events(
        since=int(since), until=int(time.time()) + 1, decode=True,
        filters={"label": f"flowkit.test_run={test_run.id}", "event": "create"},
    )}  # fmt: skip


def test_node_run_reports_a_failing_node_and_exits_non_zero(celery_worker, transactional_db, tmp_path):
    node_file = tmp_path / "broken.py"
    node_file.write_text(
        "from flowkit.node import Node\nnode = Node()\n"
        "def main():\n    return {}\nnode.register_main(main)\nnode.run()\n"
    )
    result = flowkit("node", "run", str(node_file))
    assert result.returncode == 1
    assert "main() must return (next_nodes, outputs, status_message)" in result.stderr


def test_node_run_refuses_a_limit_out_of_range(transactional_db):
    result = flowkit("node", "run", "examples/nodes/add.py", "--memory", "1")
    assert result.returncode == 2
    assert "memory_mb must be between 16 and 65536" in result.stderr
    assert NodeTestRun.objects.count() == 0


def test_run_watch_follows_the_fan_out_example_to_success(celery_worker, transactional_db):
    result = flowkit("run", "examples/pipelines/fan_out.json", "--input", '{"numbers": [1, 2, 3]}', "--watch")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "report: succeeded" in result.stdout
    assert "succeeded" in result.stdout.splitlines()[-1]


def test_run_watch_exits_non_zero_when_the_run_fails(celery_worker, transactional_db, tmp_path):
    pipeline = tmp_path / "broken.json"
    pipeline.write_text(
        json.dumps(
            {
                "schema_version": 1,
                "nodes": [{"id": "boom", "code": "print('about to fail')\nraise SystemError('down')"}],
            }
        )
    )
    result = flowkit("run", str(pipeline), "--watch")
    assert result.returncode == 1
    assert "failed" in result.stdout.splitlines()[-1]
    # The watch follows the run's trace: its log lines, and the error with its traceback.
    lines = [line[9:] for line in result.stdout.splitlines()]  # without the time
    assert "boom | about to fail" in lines
    assert "boom SystemError: down" in lines
    assert any(line.strip().startswith('File "<node boom>", line 2') for line in result.stdout.splitlines())


def test_run_refuses_an_invalid_pipeline_file_listing_its_problems(transactional_db, tmp_path):
    pipeline = tmp_path / "bad.json"
    pipeline.write_text('{"schema_version": 1, "nodes": [], "edges": []}')
    result = flowkit("run", str(pipeline))
    assert result.returncode == 2
    assert "is not a valid pipeline" in result.stderr


def test_runs_list_show_and_cancel(celery_worker, transactional_db):
    started = flowkit("run", "examples/pipelines/linear_etl.json", "--watch")
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.split()[1]
    assert run_id in flowkit("runs", "list").stdout
    shown = flowkit("runs", "show", run_id)
    assert "loaded 2 rows, total 3.0" in shown.stdout
    refused = flowkit("runs", "cancel", run_id)
    assert refused.returncode == 1
    assert "cannot go from succeeded to cancelled" in refused.stderr
