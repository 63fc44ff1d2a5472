"""Benchmarks (`make bench`): the browser fixtures, and a marker that keeps them out
of `make test`."""

import pytest

from tests.browser.conftest import browser, editor_page, page, web_server  # noqa: F401 - fixtures


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/benchmarks/" in str(item.fspath):
            item.add_marker(pytest.mark.benchmark)
