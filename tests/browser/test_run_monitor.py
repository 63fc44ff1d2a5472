"""The run monitor: a run's nodes turn green live, a node's output and log open in
the side panel, a long run is paused and resumed, a rerun starts from a middle node
and reuses what came before, and the page catches up after its connection drops."""

from __future__ import annotations

import json
import re

from playwright.sync_api import Page, expect

from control_unit.models import Run
from tests.browser.runs import (
    chain,
    create_pipeline,
    graph_node,
    node_code,
    node_panel,
    node_row,
    start_run,
)
from tests.integration.conftest import wait_for_run

RUN_TIMEOUT_MS = 120_000
SLOW = node_code(
    "time.sleep({seconds})\nprint('slept')\nreturn [], {{'out': value + 1}}, 'slept {seconds} s'"
)


def slow(seconds: float) -> str:
    return SLOW.format(seconds=seconds)


def test_a_run_turns_green_and_a_node_shows_its_output_and_log(editor_page: Page):
    page = editor_page
    pipeline_id = create_pipeline(page, "three doublings", chain(["a", "b", "c"]))
    run_id = start_run(page, pipeline_id, {"in": 5})
    page.goto(f"/app/runs/{run_id}")
    expect(page.get_by_test_id("connection")).to_have_text("live")
    for node_id in ("a", "b", "c"):
        expect(graph_node(page, node_id)).to_have_attribute("data-state", "succeeded", timeout=RUN_TIMEOUT_MS)
    expect(page.get_by_test_id("run-state")).to_have_text("succeeded")
    expect(node_row(page, "c")).to_contain_text("doubled")

    graph_node(page, "b").click()
    panel = node_panel(page)
    expect(panel.locator("h2 code")).to_have_text("b")
    expect(panel.get_by_test_id("node-outputs")).to_contain_text("20")
    expect(panel.get_by_test_id("node-inputs")).to_contain_text("10")
    expect(panel.get_by_test_id("node-logs")).to_contain_text("doubling 10")
    download = panel.get_by_test_id("node-outputs").get_by_role("link", name="download")
    expect(download).to_have_attribute("href", f"/api/runs/{run_id}/nodes/b/outputs/out")
    expect(panel.get_by_role("table", name="Attempts")).to_contain_text("succeeded")
    expect(page.locator('[data-execution="c#1"]')).to_be_visible()  # the timeline has every execution

    # The keyboard's way: the node list selects, Escape closes the panel.
    node_row(page, "c").get_by_role("button", name="C").focus()
    page.keyboard.press("Enter")
    expect(panel.locator("h2 code")).to_have_text("c")
    page.keyboard.press("Escape")
    expect(node_panel(page)).to_have_count(0)


def test_a_long_run_is_paused_and_resumed_and_finishes(editor_page: Page):
    page = editor_page
    pipeline_id = create_pipeline(page, "long run", chain(["a", "b"], {"a": slow(10), "b": slow(1)}))
    run_id = start_run(page, pipeline_id, {"in": 1})
    page.goto(f"/app/runs/{run_id}")
    expect(graph_node(page, "a")).to_have_attribute("data-state", "running", timeout=60_000)

    graph_node(page, "a").click()  # its panel follows the node live
    expect(node_panel(page).get_by_test_id("node-state")).to_have_text("running")
    page.get_by_role("button", name="Pause").click()
    expect(page.get_by_test_id("run-state")).to_have_text("paused")
    expect(graph_node(page, "a")).to_have_attribute("data-state", "paused")
    expect(page.get_by_role("button", name="Pause")).to_have_count(0)
    expect(graph_node(page, "b")).to_have_attribute("data-state", "pending")

    resume = page.get_by_role("button", name="Resume")
    # The stream may show "paused" before the Pause request returns; until it does the
    # controls are disabled, and a disabled button takes no focus.
    expect(resume).to_be_enabled()
    resume.focus()  # the controls work from the keyboard
    expect(resume).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("run-state")).to_have_text("running")
    expect(page.get_by_test_id("run-state")).to_have_text("succeeded", timeout=RUN_TIMEOUT_MS)
    expect(graph_node(page, "b")).to_have_attribute("data-state", "succeeded")
    expect(node_row(page, "b")).to_contain_text("slept 1 s")
    panel = node_panel(page)
    expect(panel.get_by_test_id("node-state")).to_have_text("succeeded")
    expect(panel.get_by_test_id("node-logs")).to_contain_text("slept")  # a line that came live
    expect(panel.get_by_test_id("node-outputs")).to_contain_text("2")
    # The peaks saved when the execution ended reach its attempts table.
    expect(panel.get_by_role("table", name="Attempts")).to_contain_text("MiB")
    expect(page.get_by_role("status")).to_have_count(1)  # the stream badge; "Resume: ..." is stale now
    for name in ("Pause", "Resume", "Cancel"):
        expect(page.get_by_role("button", name=name, exact=True)).to_have_count(0)


def test_rerun_from_a_middle_node_reuses_the_nodes_before_it(editor_page: Page):
    page = editor_page
    pipeline_id = create_pipeline(page, "rerun me", chain(["a", "b", "c"]))
    run_id = start_run(page, pipeline_id, {"in": 1})
    page.goto(f"/app/runs/{run_id}")
    expect(page.get_by_test_id("run-state")).to_have_text("succeeded", timeout=RUN_TIMEOUT_MS)

    graph_node(page, "b").click()
    node_panel(page).get_by_role("button", name="Rerun from this node").click()
    expect(page).not_to_have_url(re.compile(f"/app/runs/{run_id}$"))
    expect(page).to_have_url(re.compile(r"/app/runs/[0-9a-f-]+$"))
    expect(page.get_by_text("rerun from")).to_contain_text("b")
    expect(page.get_by_test_id("run-state")).to_have_text("succeeded", timeout=RUN_TIMEOUT_MS)
    expect(graph_node(page, "a")).to_have_attribute("data-state", "reused")
    expect(graph_node(page, "b")).to_have_attribute("data-state", "succeeded")
    expect(graph_node(page, "c")).to_have_attribute("data-state", "succeeded")
    expect(node_row(page, "c")).to_contain_text("doubled")
    new_run = Run.objects.exclude(id=run_id).get()
    assert new_run.rerun_from == "b"
    assert page.url.endswith(str(new_run.id))

    # Restart runs the same version again, from the start, in a new run.
    page.get_by_role("button", name="Restart").click()
    expect(page).not_to_have_url(re.compile(f"/app/runs/({run_id}|{new_run.id})$"))
    expect(page.get_by_test_id("run-state")).to_have_text("succeeded", timeout=RUN_TIMEOUT_MS)
    for node_id in ("a", "b", "c"):
        expect(graph_node(page, node_id)).to_have_attribute("data-state", "succeeded")
    assert Run.objects.count() == 3


def test_cancel_stops_a_run_and_a_failed_node_shows_its_traceback(editor_page: Page):
    page = editor_page
    pipeline_id = create_pipeline(page, "cancel me", chain(["a", "b"], {"a": slow(60)}))
    run_id = start_run(page, pipeline_id, {"in": 1})
    page.goto(f"/app/runs/{run_id}")
    expect(graph_node(page, "a")).to_have_attribute("data-state", "running", timeout=60_000)
    page.get_by_role("button", name="Cancel", exact=True).click()
    page.get_by_role("button", name="Keep running").click()  # a second thought changes nothing
    expect(page.get_by_test_id("run-state")).to_have_text("running")
    page.get_by_role("button", name="Cancel", exact=True).click()
    page.get_by_role("button", name="Cancel the run").click()
    expect(page.get_by_test_id("run-state")).to_have_text("cancelled")
    expect(graph_node(page, "a")).to_have_attribute("data-state", "cancelled")
    expect(graph_node(page, "b")).to_have_attribute("data-state", "cancelled")

    failing = node_code("print('about to fail')\nraise ValueError(f'no good: {value}')")
    run_id = start_run(page, create_pipeline(page, "fails", chain(["x"], {"x": failing})), {"in": 7})
    page.goto(f"/app/runs/{run_id}")
    expect(page.get_by_test_id("run-state")).to_have_text("failed", timeout=RUN_TIMEOUT_MS)
    expect(node_row(page, "x")).to_contain_text("ValueError: no good: 7")
    graph_node(page, "x").click()
    panel = node_panel(page)
    expect(panel.get_by_role("alert")).to_contain_text("ValueError: no good: 7")
    expect(panel.get_by_test_id("node-traceback")).to_contain_text("raise ValueError(f'no good: {value}')")
    expect(panel.get_by_test_id("node-logs")).to_contain_text("about to fail")


# Records every WebSocket the page opens; while window.__offline is set, new ones go
# to a port where nothing listens, as if the server were down.
SOCKET_SPY = """
window.__sockets = [];
window.__offline = false;
const RealWebSocket = window.WebSocket;
window.WebSocket = class extends RealWebSocket {
  constructor(url, protocols) {
    super(window.__offline ? "ws://127.0.0.1:9/" : url, protocols);
    window.__sockets.push(window.__offline ? "offline" : String(url));
    window.__lastSocket = this;
  }
};
"""


def test_the_monitor_catches_up_after_its_connection_drops(editor_page: Page):
    page = editor_page
    page.add_init_script(SOCKET_SPY)
    steps = ["a", "b", "c", "d"]
    pipeline_id = create_pipeline(page, "four steps", chain(steps, {step: slow(1) for step in steps}))
    run_id = start_run(page, pipeline_id, {"in": 0})
    page.goto(f"/app/runs/{run_id}")
    expect(page.get_by_test_id("connection")).to_have_text("live")
    expect(graph_node(page, "a")).to_have_attribute("data-state", "running", timeout=60_000)

    page.evaluate("window.__offline = true; window.__lastSocket.close()")
    expect(page.get_by_test_id("connection")).to_have_text("reconnecting…")
    wait_for_run(Run.objects.get(id=run_id))
    # Everything after the drop happened while the page was away.
    expect(page.get_by_test_id("run-state")).to_have_text("running")
    expect(graph_node(page, "d")).not_to_have_attribute("data-state", "succeeded")

    page.evaluate("window.__offline = false")
    expect(page.get_by_test_id("connection")).to_have_text("live")
    expect(page.get_by_test_id("run-state")).to_have_text("succeeded")
    for step in steps:
        expect(graph_node(page, step)).to_have_attribute("data-state", "succeeded")
    expect(node_row(page, "d")).to_contain_text("slept 1 s")
    urls = page.evaluate("window.__sockets")
    assert "?after=" not in urls[0], urls  # the first connection asks for a snapshot
    assert re.search(r"\?after=\d+$", urls[-1]), urls  # the last one resumes after a sequence number


def test_a_viewer_sees_the_run_but_no_controls(viewer_page: Page):
    from control_unit.pipeline_actions import do_create_pipeline
    from control_unit.run_actions import do_start_run

    page = viewer_page
    version = do_create_pipeline("watched", chain(["a", "b"])).latest_version()
    assert version is not None
    run = do_start_run(version, {"in": 2})
    page.goto(f"/app/runs/{run.id}")
    expect(page.get_by_test_id("run-state")).to_have_text("succeeded", timeout=RUN_TIMEOUT_MS)
    expect(page.get_by_role("group", name="Run controls")).to_have_count(0)
    for name in ("Pause", "Resume", "Cancel", "Restart"):
        expect(page.get_by_role("button", name=name, exact=True)).to_have_count(0)
    graph_node(page, "b").click()
    expect(node_panel(page).get_by_test_id("node-outputs")).to_contain_text("8")
    expect(page.get_by_role("button", name="Rerun from this node")).to_have_count(0)


def test_a_large_output_shows_a_preview_and_downloads_whole(editor_page: Page):
    page = editor_page
    big = node_code("return [], {'out': 'x' * 100_000 + 'END'}, 'big'")
    run_id = start_run(page, create_pipeline(page, "big output", chain(["big"], {"big": big})), {"in": 0})
    page.goto(f"/app/runs/{run_id}")
    expect(graph_node(page, "big")).to_have_attribute("data-state", "succeeded", timeout=RUN_TIMEOUT_MS)
    graph_node(page, "big").click()
    outputs = node_panel(page).get_by_test_id("node-outputs")
    expect(outputs).to_contain_text("preview of the start")
    expect(outputs).not_to_contain_text("END")  # only the preview travels to the page
    link = outputs.get_by_role("link", name="download the whole value")
    with page.expect_download() as download_info:
        link.click()
    path = download_info.value.path()
    assert json.loads(path.read_text()) == "x" * 100_000 + "END"
