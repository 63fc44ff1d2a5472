"""The resource monitor as an admin sees it: a worker's capabilities, its pool and
queue depth, and a Drain button that takes the worker through draining to stopped.
An editor sees the worker but no Drain button."""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import log_in, make_user
from tests.integration.conftest import WorkerProcess, quick_heartbeats, start_worker, stop_worker


@pytest.fixture
def gpu_worker(transactional_db: None, tmp_path: Any) -> Iterator[WorkerProcess]:
    # A queue of its own: draining it must not touch the test process's shared worker.
    queue = f"drain-page-{os.getpid()}-{time.monotonic_ns()}"
    name = f"drain-page-{os.getpid()}@{socket.gethostname()}"
    worker = start_worker(
        name, tmp_path / "worker.log", quick_heartbeats(queue, FLOWKIT_WORKER_CAPABILITIES="gpu")
    )
    yield worker
    stop_worker(worker)


def test_an_admin_drains_a_worker_from_the_resource_monitor(page: Page, gpu_worker: WorkerProcess):
    make_user("ada", "admin")
    log_in(page, "ada", "/app/resources")
    card = page.locator(f'[data-worker="{gpu_worker.name}"]')
    expect(card.get_by_role("heading", level=2)).to_contain_text("online", timeout=30_000)
    expect(card.get_by_test_id("capabilities")).to_have_text("Capabilities: gpu")
    expect(card.get_by_test_id("pool")).to_have_text(re.compile(r"^Pool: 2 processes · queue depth \d+$"))

    page.once("dialog", lambda dialog: dialog.accept())
    card.get_by_role("button", name=f"Drain {gpu_worker.name}").click()
    expect(card.get_by_role("heading", level=2)).to_contain_text(re.compile("draining|stopped"))
    expect(card.get_by_role("heading", level=2)).to_contain_text("stopped", timeout=60_000)
    expect(card.get_by_role("button", name=f"Drain {gpu_worker.name}")).to_have_count(0)
    assert gpu_worker.process.wait(timeout=30) == 0


def test_an_editor_sees_the_worker_but_cannot_drain_it(page: Page, gpu_worker: WorkerProcess):
    make_user("edna", "editor")
    log_in(page, "edna", "/app/resources")
    card = page.locator(f'[data-worker="{gpu_worker.name}"]')
    expect(card.get_by_role("heading", level=2)).to_contain_text("online", timeout=30_000)
    expect(card.get_by_role("button", name=re.compile("^Drain"))).to_have_count(0)
