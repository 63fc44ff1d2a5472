"""The graph editor and the run monitor with a 500-node graph, each beside a 10-node
baseline measured in the same run and the same browser; the ratios are what the
benchmark reports. Run with `make bench`, which rewrites this section of
docs/PERFORMANCE.md."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page
from rich.console import Console
from rich.table import Table

from tests.browser.graph_benchmarks import measure_editor, measure_monitor

SIZES = {"baseline": (2, 5), "large": (25, 20)}  # 10 and 500 nodes
FIGURES = ("open_s", "pan_fps", "pan_longest_frame_ms", "select_node_with_log_s")
REPORT = Path(__file__).resolve().parents[2] / "docs" / "PERFORMANCE.md"
START, END = "<!-- make bench: graph pages -->", "<!-- end: graph pages -->"
COMMAND = "make bench"
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
    table = Table("page", "figure", "10 nodes (baseline)", "500 nodes", "500 / 10", title="graph pages")
    for page_name, figure, base_value, large_value, ratio in rows:
        table.add_row(page_name, figure, f"{base_value:g}", f"{large_value:g}", f"{ratio:.2f}")
    Console().print(table)
    write_report(rows)


def write_report(rows: list[tuple[str, str, float, float, float]]) -> None:
    chromium = subprocess.run(
        ["/usr/bin/chromium", "--version"], capture_output=True, text=True
    ).stdout.strip()
    lines = [
        START,
        "## Graph pages: editor and run monitor, 500 nodes beside a 10-node baseline",
        "",
        f"Command: `{COMMAND}` (tests/benchmarks/test_graph_pages.py). Measured "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.node()}: {os.cpu_count()} CPUs, "
        f"Linux {platform.release()}, Python {platform.python_version()}, {chromium or 'Chromium'}, "
        "headless at 1280x800, load average "
        f"{os.getloadavg()[0]:.1f} at the end. Layered pipelines (10 nodes: 2 layers of 5; 500 nodes: "
        "25 layers of 20, 960 edges); the monitor opens a finished run of each. `open_s`: from "
        "navigation to every node drawn (the monitor: coloured, with its node list and timeline); "
        "`pan_fps` and `pan_longest_frame_ms`: animation frames during 120 pointer moves over the "
        "graph; `select_node_with_log_s`: finding a node with the list's filter, by keyboard, "
        "until its log shows.",
        "",
        "| page | figure | 10 nodes (baseline) | 500 nodes | 500 / 10 |",
        "|---|---|---|---|---|",
        *(f"| {p} | {f} | {b:g} | {v:g} | {r:.2f} |" for p, f, b, v, r in rows),
        END,
    ]
    text = REPORT.read_text() if REPORT.exists() else "# Performance\n"
    if START in text and END in text:
        before, rest = text.split(START, 1)
        after = rest.split(END, 1)[1]
        text = before + "\n".join(lines) + after
    else:
        head, _, tail = text.partition("\n")
        text = head + "\n\n" + "\n".join(lines) + "\n" + tail
    REPORT.write_text(text)
