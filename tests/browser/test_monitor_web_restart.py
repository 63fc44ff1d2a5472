"""The monitor page outlives its web process: Daphne is killed while a run goes on,
the run finishes while no server is there, and once Daphne is back the page
reconnects with ?after=<last seq> and shows every node finished."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from control_unit.models import Run
from tests.browser.conftest import VIEWPORT, keep_screenshot, log_in, make_user
from tests.browser.runs import chain, create_pipeline, graph_node, node_code, node_row, start_run
from tests.integration.conftest import WebServer, WorkerProcess, wait_for_run

STEP = node_code("time.sleep(1)\nreturn [], {'out': value + 1}, 'stepped'")


@pytest.fixture
def restartable_page(
    browser: Browser, celery_worker: WorkerProcess, transactional_db: None, request: pytest.FixtureRequest
) -> Iterator[tuple[Page, WebServer]]:
    """A page on a Daphne of its own, which the test may kill and start again."""
    server = WebServer()
    server.start()
    context = browser.new_context(base_url=server.url, viewport=VIEWPORT)  # type: ignore[arg-type]
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page, server
        keep_screenshot(page, request.node.name)
    finally:
        context.close()
        server.stop()
    assert not errors, f"uncaught errors in the page: {errors}"


def test_the_monitor_catches_up_after_the_web_process_restarts(restartable_page: tuple[Page, WebServer]):
    page, server = restartable_page
    make_user("edna", "editor")
    log_in(page, "edna")
    steps = ["a", "b", "c", "d"]
    run_id = start_run(
        page, create_pipeline(page, "restart me", chain(steps, dict.fromkeys(steps, STEP))), {"in": 0}
    )
    page.goto(f"/app/runs/{run_id}")
    expect(page.get_by_test_id("connection")).to_have_text("live")
    expect(graph_node(page, "a")).to_have_attribute("data-state", "running", timeout=60_000)

    server.kill()
    expect(page.get_by_test_id("connection")).to_have_text("reconnecting…")
    wait_for_run(Run.objects.get(id=run_id))
    expect(page.get_by_test_id("run-state")).to_have_text("running")  # nothing reached the page meanwhile

    server.start()
    expect(page.get_by_test_id("connection")).to_have_text("live")
    expect(page.get_by_test_id("run-state")).to_have_text("succeeded")
    for step in steps:
        expect(graph_node(page, step)).to_have_attribute("data-state", "succeeded")
        expect(node_row(page, step)).to_contain_text("stepped")
