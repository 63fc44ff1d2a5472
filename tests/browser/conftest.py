"""Browser tests: Playwright drives Debian's Chromium against a real Daphne process
on the test database, with a real Celery worker for runs.

The server is a separate process, so tests use transactional_db: rows a test writes
are committed and the server sees them; the flush after each test clears them.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.integration.conftest import REPO, server_environment

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
VIEWPORT = {"width": 1280, "height": 800}
PASSWORD = "a long enough password 123"
SERVER_START_TIMEOUT_S = 30

# Playwright waits up to this long in expect() before failing; runs start NPUs.
expect.set_options(timeout=15_000)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/browser/" in str(item.fspath):
            item.add_marker(pytest.mark.browser)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def web_server(
    django_db_setup: None, celery_worker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Daphne serving the app (and the built front end) on the test database."""
    if not (REPO / "web_ui/static/web_ui/app/manifest.json").exists():
        pytest.fail("the front end is not built: run `make test` (it builds web_ui/frontend)")
    port = free_port()
    env = {key: value for key, value in server_environment().items() if key != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    # Every browser test signs in from 127.0.0.1, a dozen a minute on a fast machine: the
    # sign-in limit (tests/integration/test_web_security.py) would refuse the eleventh.
    env["FLOWKIT_SIGN_IN_RATE"] = "1000/m"
    log_path = tmp_path_factory.mktemp("daphne") / "daphne.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "web_ui.asgi:application"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"daphne did not start:\n{log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Playwright's sync API keeps an event loop running in this thread, and Django
    # refuses ORM calls from a thread with a running loop unless told this one is
    # safe (it is: the loop is Playwright's). Only while a browser module runs, so
    # the check still guards the consumer tests that share this pytest process.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield browser
            browser.close()


def keep_screenshot(page: Page, test_name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@pytest.fixture
def page(
    browser: Browser, web_server: str, transactional_db: None, request: pytest.FixtureRequest
) -> Iterator[Page]:
    """A fresh browser context per test; its last screen is kept in tests/browser/artifacts/."""
    context = browser.new_context(base_url=web_server, viewport=VIEWPORT)  # type: ignore[arg-type]
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    try:
        if not page.is_closed():  # a test that closes its page keeps its own screenshot
            keep_screenshot(page, request.node.name)
    finally:
        context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def make_user(username: str, role: str) -> User:
    user = User.objects.create_user(username, password=PASSWORD)
    user.groups.add(Group.objects.get_or_create(name=role)[0])  # transactional tests flush migration data
    return user


def log_in(page: Page, username: str, next_path: str = "/app/") -> None:
    page.goto(f"/accounts/login/?next={next_path}")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()


@pytest.fixture
def editor_page(page: Page) -> Page:
    make_user("edna", "editor")
    log_in(page, "edna")
    return page


@pytest.fixture
def viewer_page(page: Page) -> Page:
    make_user("vic", "viewer")
    log_in(page, "vic")
    return page
