"""The graph editor and the run monitor with a 500-node graph, each beside a 10-node
baseline measured in the same run and the same browser; the ratios are what the
benchmark reports. Run with `make bench`, which rewrites this section of
docs/PERFORMANCE.md."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
from playwright.sync_api import Page

from tests.benchmarks.report import COMMAND, machine, markdown_table, print_table, write_section
from tests.browser.graph_benchmarks import measure_editor, measure_monitor

SIZES = {"baseline": (2, 5), "large": (25, 20)}  # 10 and 500 nodes
FIGURES = ("open_s", "pan_fps", "pan_longest_frame_ms", "select_node_with_log_s")
COLUMNS = ("page", "figure", "10 nodes (baseline)", "500 nodes", "500 / 10")
results: dict[tuple[str, str], dict[str, Any]] = {}


@pytest.mark.parametrize("size", list(SIZES))
def test_the_editor_opens_and_pans(editor_page: Page, size: str):
    results[("editor", size)] = measure_editor(editor_page, *SIZES[size])


@pytest.mark.parametrize("size", list(SIZES))
def test_the_monitor_opens_and_pans(editor_page: Page, size: str):
    results[("monitor", size)] = measure_monitor(editor_page, *SIZES[size])


def test_report():
    """Print the figures with their ratios to the baseline and write them to
    docs/PERFORMANCE.md (runs last: pytest keeps a file's order)."""
    assert len(results) == 4, f"a measurement failed: {sorted(results)}"
    rows = []
    for page_name in ("editor", "monitor"):
        base, large = results[(page_name, "baseline")], results[(page_name, "large")]
        for figure in FIGURES:
            if figure in large:
                ratio = large[figure] / base[figure] if base[figure] else float("nan")
                rows.append((page_name, figure, base[figure], large[figure], ratio))
    print_table("graph pages", COLUMNS, [(p, f, f"{b:g}", f"{v:g}", f"{r:.2f}") for p, f, b, v, r in rows])
    write_report(rows)


def write_report(rows: list[tuple[str, str, float, float, float]]) -> None:
    chromium = subprocess.run(
        ["/usr/bin/chromium", "--version"], capture_output=True, text=True
    ).stdout.strip()
    write_section(
        "graph pages",
        [
            "## Graph pages: editor and run monitor, 500 nodes beside a 10-node baseline",
            "",
            f"Command: `{COMMAND}` (tests/benchmarks/test_graph_pages.py). "
            f"{machine(chromium or 'Chromium', 'headless at 1280x800')} "
            "Layered pipelines (10 nodes: 2 layers of 5; 500 nodes: "
            "25 layers of 20, 960 edges); the monitor opens a finished run of each. `open_s`: from "
            "navigation to every node drawn (the monitor: coloured, with its node list and timeline); "
            "`pan_fps` and `pan_longest_frame_ms`: animation frames during 120 pointer moves over the "
            "graph; `select_node_with_log_s`: finding a node with the list's filter, by keyboard, "
            "until its log shows.",
            "",
            *markdown_table(COLUMNS, [(p, f, f"{b:g}", f"{v:g}", f"{r:.2f}") for p, f, b, v, r in rows]),
        ],
    )
