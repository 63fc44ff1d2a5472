"""The trace through the API, from runs on a real worker: tracebacks, events by kind
and node, capped values and their whole downloads, timeline, figures, retention."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from control_unit.models import Run
from control_unit.pipeline_actions import do_create_pipeline
from control_unit.run_actions import do_start_run
from control_unit.trace_retention import PRUNE_TURN_KEY
from node_runner.heartbeat import Heartbeat
from tests.integration.conftest import example_version, node_code, nodes_of, single_node_run, wait_for_run
from trace_monitor.models import NodeExecution, ResourceSample, TraceEvent
from web_ui.cli.main import main as flowkit

pytestmark = pytest.mark.django_db(transaction=True)


def api_client(role: str | None = "viewer") -> Client:
    client = Client()
    if role is not None:
        user = User.objects.create_user(f"trace-{role}", password="a long enough password 123")
        if role != "none":
            user.groups.add(Group.objects.get_or_create(name=role)[0])
        client.force_login(user)
    return client


RAISING = (
    "from flowkit.node import Node\n"  # line 1
    "node = Node()\n"
    "def check(order):\n"
    "    if order['qty'] < 0:\n"
    "        raise ValueError(f\"negative quantity {order['qty']}\")\n"  # line 5
    "def main():\n"
    "    check({'qty': -2})\n"  # line 7
    "    return [], {}, 'never'\n"
    "node.register_main(main)\n"
    "node.run()\n"
)


def test_a_failed_nodes_traceback_with_the_raising_line_is_visible_through_the_api(celery_worker):
    run = wait_for_run(single_node_run(RAISING, "raises"))
    assert run.state == "failed"
    viewer = api_client()

    detail = viewer.get(f"/api/runs/{run.id}/nodes/n").json()
    error = detail["node"]["error"]
    assert error["error_type"] == "ValueError"
    assert error["message"] == "negative quantity -2"
    assert error["line"] == 5
    assert 'line 5, in check\n    raise ValueError(f"negative quantity' in error["traceback"]
    assert "line 7, in main" in error["traceback"]
    assert "flowkit/runtime.py" not in error["traceback"], "only the user's frames are shown"
    [attempt] = detail["attempts"]
    assert attempt["outcome"] == "failed"
    assert attempt["error_type"] == "ValueError"
    assert attempt["container_id"]

    page = viewer.get(f"/api/runs/{run.id}/events", {"kind": "error", "node": "n"}).json()
    assert [event["data"]["traceback"] for event in page["events"]] == [error["traceback"]]
    assert page["more"] is False


def test_events_are_filtered_by_kind_and_node_and_paged_in_order(celery_worker):
    run = wait_for_run(do_start_run(example_version("linear_etl")))
    assert run.state == "succeeded"
    viewer = api_client()
    everything = viewer.get(f"/api/runs/{run.id}/events", {"limit": 1000}).json()
    seqs = [event["seq"] for event in everything["events"]]
    assert seqs == list(range(1, len(seqs) + 1))
    assert everything["last_seq"] == seqs[-1]

    pages, after = [], 0
    while True:
        page = viewer.get(f"/api/runs/{run.id}/events", {"after": after, "limit": 7}).json()
        pages.extend(page["events"])
        if not page["more"]:
            break
        after = page["events"][-1]["seq"]
    assert [event["seq"] for event in pages] == seqs

    states = viewer.get(f"/api/runs/{run.id}/events?kind=succeeded&kind=run").json()["events"]
    assert [(e["node_id"], e["kind"]) for e in states] == [
        (None, "run"),
        ("extract", "succeeded"), ("transform", "succeeded"), ("load", "succeeded"), (None, "run"),
    ]  # fmt: skip
    per_node = viewer.get(f"/api/runs/{run.id}/events", {"node": "transform"}).json()["events"]
    assert "log" in {e["kind"] for e in per_node}
    assert [e["kind"] for e in per_node if e["kind"] != "log"] == [
        "queued", "running", "inputs", "started", "outputs", "finished", "succeeded",
    ]  # fmt: skip
    unknown = viewer.get(f"/api/runs/{run.id}/events", {"kind": "bogus"})
    assert unknown.status_code == 422
    assert unknown.json()["code"] == "unknown_kind"


def test_a_large_output_keeps_a_preview_in_the_trace_and_downloads_whole(celery_worker, settings):
    big = "0123456789" * 10_000  # 100,000 characters, above the 16 KiB preview
    run = wait_for_run(single_node_run(node_code(f"value = {big!r}"), "big output"))
    assert run.state == "succeeded"
    viewer = api_client()
    limit = settings.FLOWKIT_TRACE_PREVIEW_BYTES

    [outputs] = TraceEvent.objects.filter(run=run, kind="outputs")
    assert outputs.data["outputs"] == {}
    assert outputs.data["truncated"]["value"]["bytes"] == len(big) + 2
    assert outputs.data["truncated"]["value"]["preview"] == ('"' + big)[:limit]
    node = viewer.get(f"/api/runs/{run.id}/nodes/n").json()["node"]
    assert node["truncated"]["outputs"]["value"]["bytes"] == len(big) + 2

    download = viewer.get(f"/api/runs/{run.id}/nodes/n/outputs/value")
    assert download.status_code == 200
    assert download.json() == big
    assert download["Content-Disposition"] == 'attachment; filename="n-output-value.json"'
    missing = viewer.get(f"/api/runs/{run.id}/nodes/n/outputs/nope")
    assert missing.status_code == 404
    assert missing.json()["message"] == "node n has no output 'nope' in this run"


def test_timeline_attempts_and_resource_series_of_a_retried_node(celery_worker):
    flaky = example_version("flaky")
    run = wait_for_run(do_start_run(flaky))
    assert run.state == "succeeded", nodes_of(run)
    viewer = api_client()
    timeline = viewer.get(f"/api/runs/{run.id}/timeline").json()
    assert timeline, "no execution"
    assert {entry["worker"] for entry in timeline} == {celery_worker.name}
    starts = [entry["started_at"] for entry in timeline]
    assert starts == sorted(starts)
    retried = [entry for entry in timeline if entry["attempt"] > 1]
    assert retried, "the flaky example retries"
    node_id = retried[0]["node_id"]
    attempts = viewer.get(f"/api/runs/{run.id}/nodes/{node_id}").json()["attempts"]
    assert [a["attempt"] for a in attempts] == list(range(1, len(attempts) + 1))
    assert [a["outcome"] for a in attempts][-1] == "succeeded"
    assert set([a["outcome"] for a in attempts][:-1]) == {"failed"}
    retries = TraceEvent.objects.filter(run=run, node_id=node_id, kind="retry").count()
    assert retries == len(attempts) - 1
    series = viewer.get(f"/api/runs/{run.id}/nodes/{node_id}/resources").json()
    assert series == sorted(series, key=lambda sample: (sample["attempt"], sample["at"]))


def test_pipeline_figures_give_success_rate_and_per_node_percentiles(celery_worker):
    ok = (
        "from flowkit.node import Node\nnode = Node()\nnode.register_main(lambda: ([], {}, ''))\nnode.run()\n"
    )
    document = {
        "schema_version": 1,
        "nodes": [{"id": "fast", "code": ok, "outputs": []}, {"id": "slow", "code": RAISING}],
    }
    pipeline = do_create_pipeline("figures", document)
    runs = [wait_for_run(do_start_run(pipeline.latest_version())) for _ in range(2)]
    assert [run.state for run in runs] == ["failed", "failed"]
    figures = api_client().get(f"/api/pipelines/{pipeline.id}/figures").json()
    assert figures["runs"] == 2
    assert figures["runs_by_state"] == {"failed": 2}
    assert figures["success_rate"] == 0.0
    nodes = {node["node_id"]: node for node in figures["nodes"]}
    assert nodes["fast"]["executions"] == 2
    assert nodes["fast"]["failures"] == 0
    assert nodes["slow"]["failures"] == 2
    durations = list(NodeExecution.objects.filter(node_id="fast").values_list("duration_s", flat=True))
    assert nodes["fast"]["p50_s"] == pytest.approx(sum(durations) / 2, abs=1e-4)  # the median of two
    assert nodes["fast"]["p95_s"] >= nodes["fast"]["p50_s"]
    assert set(figures["slowest_nodes"]) == {"fast", "slow"}


def test_prune_deletes_the_detail_of_old_runs_and_keeps_the_runs(celery_worker, capsys):
    old, recent = (wait_for_run(do_start_run(example_version("linear_etl"))) for _ in range(2))
    Run.objects.filter(id=old.id).update(finished_at=timezone.now() - timedelta(days=31))
    ResourceSample.objects.create(run=old, node_id="load", attempt=1, at=timezone.now(), memory_bytes=1)
    old_events = TraceEvent.objects.filter(run=old).count()
    old_samples = ResourceSample.objects.filter(run=old).count()

    assert flowkit(["trace", "prune", "--dry-run"]) == 0
    assert TraceEvent.objects.filter(run=old).count() == old_events
    assert flowkit(["trace", "prune"]) == 0
    output = capsys.readouterr().out
    assert f"would delete {old_events:,} events and {old_samples} resource samples of 1 runs" in output
    assert f"deleted {old_events:,} events and {old_samples} resource samples of 1 runs" in output
    assert not TraceEvent.objects.filter(run=old).exists()
    assert not ResourceSample.objects.filter(run=old).exists()
    assert TraceEvent.objects.filter(run=recent).exists()
    assert Run.objects.filter(id=old.id, state="succeeded").exists()
    assert NodeExecution.objects.filter(run=old).count() == 3, "figures keep their executions"


def test_one_worker_of_the_fleet_prunes_old_traces_on_its_own_once_per_interval(celery_worker, settings):
    settings.FLOWKIT_TRACE_PRUNE_INTERVAL_S = 600
    cache.delete(PRUNE_TURN_KEY)
    old = wait_for_run(do_start_run(example_version("linear_etl")))
    Run.objects.filter(id=old.id).update(finished_at=timezone.now() - timedelta(days=31))
    assert TraceEvent.objects.filter(run=old).exists()
    one, other = Heartbeat("one@host", 1), Heartbeat("other@host", 1)

    pruner = one.prune_when_its_turn()
    assert pruner is not None, "the first worker takes the turn"
    assert other.prune_when_its_turn() is None, "a second worker in the same interval does not"
    pruner.join(timeout=30)
    assert not TraceEvent.objects.filter(run=old).exists()
    assert Run.objects.filter(id=old.id, state="succeeded").exists()
    assert one.prune_when_its_turn() is None, "nor does the first again before the interval is over"

    settings.FLOWKIT_TRACE_PRUNE_INTERVAL_S = 0
    cache.delete(PRUNE_TURN_KEY)
    assert one.prune_when_its_turn() is None, "0 leaves pruning to the command"


@pytest.mark.parametrize(
    "path",
    ["/api/runs/{run}/events", "/api/runs/{run}/timeline", "/api/runs/{run}/nodes/n",
     "/api/runs/{run}/nodes/n/outputs/value", "/api/runs/{run}/nodes/n/resources",
     "/api/pipelines/{pipeline}/figures", "/api/workers"],
)  # fmt: skip
def test_trace_endpoints_need_a_user_with_a_role(path, transactional_db):
    pipeline = do_create_pipeline("roles", {"schema_version": 1, "nodes": [{"id": "n", "code": ""}]})
    run = Run.objects.create(pipeline=pipeline, version=pipeline.latest_version())
    url = path.format(run=run.id, pipeline=pipeline.id)
    assert api_client(None).get(url).status_code == 401
    assert api_client("none").get(url).status_code == 403
    assert api_client("viewer").get(url).status_code in (200, 404)
