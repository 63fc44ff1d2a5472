"""The measurements behind the graph pages' benchmarks: opening a layered pipeline in
the editor, and a finished run of it in the monitor, then panning. Used by the
browser tests (500 nodes, loose bounds) and by `make bench` (tests/benchmarks/, which
measures a 10-node baseline beside it and writes docs/PERFORMANCE.md)."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any
from unittest.mock import patch

from django.utils import timezone
from playwright.sync_api import Page, expect

from control_unit.models import NodeRun, Pipeline, Run
from tests.browser.canvas import canvas_node
from tests.browser.pipelines import layered_pipeline
from tests.browser.runs import graph_node
from trace_monitor.models import NodeExecution
from trace_monitor.recorder import EventDraft, record

MAX_OPEN_S = 20
NODE_SECONDS = 0.4

# Counts animation frames and the longest gap between two while the test pans.
FRAME_PROBE = """() => {
    window.__frames = {count: 0, longest: 0, last: performance.now(), start: performance.now(), on: true};
    const tick = (now) => {
        const f = window.__frames;
        f.count += 1; f.longest = Math.max(f.longest, now - f.last); f.last = now;
        if (f.on) requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
}"""
FRAME_RESULT = """() => {
    const f = window.__frames; f.on = false;
    return {frames: f.count, seconds: (performance.now() - f.start) / 1000, longest_ms: f.longest};
}"""


def pan(page: Page) -> dict[str, float]:
    """120 pointer moves over the graph's pane (a slow pan right and down, then back),
    counting animation frames meanwhile."""
    pane = page.locator(".react-flow__pane").bounding_box()
    assert pane is not None
    x, y = pane["x"] + pane["width"] / 2, pane["y"] + pane["height"] / 2
    page.evaluate(FRAME_PROBE)
    page.mouse.move(x, y)
    page.mouse.down()
    for step in range(1, 121):
        offset = step if step <= 60 else 120 - step
        page.mouse.move(x - offset * 6, y - offset * 3)
    page.mouse.up()
    frames = page.evaluate(FRAME_RESULT)
    return {
        "pan_fps": round(frames["frames"] / frames["seconds"], 1),
        "pan_longest_frame_ms": round(frames["longest_ms"], 1),
    }


def shape(layers: int, width: int) -> dict[str, int]:
    return {"nodes": layers * width, "edges": 2 * (layers - 1) * width if width > 1 else layers - 1}


def measure_editor(page: Page, layers: int, width: int) -> dict[str, Any]:
    pipeline_id = layered_pipeline(f"{layers * width} nodes", layers, width)
    started = time.monotonic()
    page.goto(f"/app/pipelines/{pipeline_id}")
    expect(canvas_node(page, "n0_0")).to_be_visible(timeout=MAX_OPEN_S * 1000)
    open_s = time.monotonic() - started
    rendered = page.locator(".react-flow__node").count()
    return {
        **shape(layers, width),
        "open_s": round(open_s, 2),
        "nodes_rendered_at_fit": rendered,
        **pan(page),
    }


def measure_monitor(page: Page, layers: int, width: int) -> dict[str, Any]:
    nodes = layers * width
    run_id = finished_run(layered_pipeline(f"{nodes} nodes", layers, width), layers)
    started = time.monotonic()
    page.goto(f"/app/runs/{run_id}")
    expect(graph_node(page, "n0_0")).to_have_attribute("data-state", "succeeded", timeout=MAX_OPEN_S * 1000)
    expect(page.locator("tr[data-node]")).to_have_count(nodes)
    expect(page.locator("[data-execution]")).to_have_count(nodes)
    open_s = time.monotonic() - started
    rendered = page.locator(".react-flow__node").count()
    figures = {
        **shape(layers, width),
        "open_s": round(open_s, 2),
        "nodes_rendered_at_fit": rendered,
        **pan(page),
    }
    # Selecting a node in a big run stays quick too: the last node of the middle layer.
    target = f"n{layers // 2}_{width - 1}"
    clicked = time.monotonic()
    page.get_by_label("Find nodes").fill(target)
    expect(page.locator("tr[data-node]")).to_have_count(1)
    page.keyboard.press("Tab")  # from the filter to the one node left, by keyboard
    page.keyboard.press("Enter")
    expect(
        page.get_by_role("complementary", name="Selected node").get_by_test_id("node-logs")
    ).to_contain_text(f"doubling {layers // 2}")
    figures["select_node_with_log_s"] = round(time.monotonic() - clicked, 2)
    return figures


def finished_run(pipeline_id: str, layers: int) -> str:
    """A succeeded run of the pipeline's latest version, one execution per node,
    layer after layer, with the trace events a real run leaves."""
    pipeline = Pipeline.objects.get(id=pipeline_id)
    version = pipeline.latest_version()
    assert version is not None
    start = timezone.now() - timedelta(minutes=5)
    layer_of = {node["id"]: int(node["id"][1:].split("_")[0]) for node in version.document["nodes"]}
    end = start + timedelta(seconds=(layers + 1) * NODE_SECONDS)
    run = Run.objects.create(
        pipeline=pipeline, version=version, state="succeeded", input={}, started_at=start, finished_at=end
    )
    rows, executions, drafts = [], [], []
    for node_id, layer in layer_of.items():
        began = start + timedelta(seconds=layer * NODE_SECONDS)
        done = began + timedelta(seconds=NODE_SECONDS * 0.8)
        rows.append(NodeRun(
            run=run, node_id=node_id, state="succeeded", attempt=1, inputs={"in": [layer, layer]},
            outputs={"out": layer * 2}, next_nodes=[], status_message="doubled", worker="bench",
            started_at=began, finished_at=done,
        ))  # fmt: skip
        executions.append(NodeExecution(
            run=run, pipeline=pipeline, node_id=node_id, attempt=1, worker="bench", started_at=began,
            finished_at=done, duration_s=NODE_SECONDS * 0.8, outcome="succeeded",
        ))  # fmt: skip
        drafts += [
            EventDraft("queued", node_id, 1, {"source": "pending", "target": "queued"}, began),
            EventDraft("running", node_id, 1, {"source": "queued", "target": "running"}, began),
            EventDraft("started", node_id, 1, {"worker": "bench", "container_id": "c"}, began),
            EventDraft("log", node_id, 1, {"level": "info", "message": f"doubling {layer}"}, began),
            EventDraft(
                "finished", node_id, 1, {"outcome": "succeeded", "duration_s": NODE_SECONDS * 0.8}, done
            ),
            EventDraft("succeeded", node_id, 1, {"source": "running", "target": "succeeded"}, done),
        ]
    NodeRun.objects.bulk_create(rows)
    NodeExecution.objects.bulk_create(executions)
    # Nobody watches yet, and broadcasting from the thread of Playwright's event loop
    # is refused (async_to_sync): store the events without sending them.
    with patch("trace_monitor.recorder.send"):
        record(run.id, [*drafts, EventDraft("run", "", 0, {"source": "running", "target": "succeeded"}, end)])
    return str(run.id)
