"""How every benchmark reports: a rich table on the terminal, and a section of
docs/PERFORMANCE.md between `<!-- make bench: NAME -->` and `<!-- end: NAME -->`,
rewritten in place so that each `make bench` replaces its own figures and leaves the
hand-written notes alone."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPORT = Path(__file__).resolve().parents[2] / "docs" / "PERFORMANCE.md"
COMMAND = "make bench"

Row = Sequence[object]


def cell(value: object) -> str:
    """Three significant digits are all that noisy timings on a shared machine carry."""
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return str(value)


def print_table(title: str, columns: Sequence[str], rows: Sequence[Row]) -> None:
    table = Table(*columns, title=title)
    for row in rows:
        table.add_row(*(cell(value) for value in row))
    Console().print(table)


def markdown_table(columns: Sequence[str], rows: Sequence[Row]) -> list[str]:
    return [
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
        *("| " + " | ".join(cell(value) for value in row) + " |" for row in rows),
    ]


def machine(*versions: str) -> str:
    """Where and when the figures were measured, with the versions that matter to them.
    The load average is part of it: these machines are shared, and a busy one is slow."""
    parts = [
        f"{os.cpu_count()} CPUs",
        f"Linux {platform.release()}",
        f"Python {platform.python_version()}",
        *versions,
        f"load average {os.getloadavg()[0]:.1f} at the end",
    ]
    return f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.node()}: {', '.join(parts)}."


def write_section(name: str, lines: Sequence[str]) -> None:
    """Replace the section NAME of docs/PERFORMANCE.md with ``lines``. A new section
    goes after the last generated one (or after the title), so sections keep the
    order in which the benchmarks first wrote them, ahead of the hand-written notes."""
    start, end = f"<!-- make bench: {name} -->", f"<!-- end: {name} -->"
    block = "\n".join([start, *lines, end])
    text = REPORT.read_text() if REPORT.exists() else "# Performance\n"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + block + rest.split(end, 1)[1]
    elif (last_end := text.rfind("<!-- end: ")) != -1:
        line_end = text.index("-->", last_end) + len("-->")
        text = text[:line_end] + "\n\n" + block + text[line_end:]
    else:
        head, _, tail = text.partition("\n")
        text = head + "\n\n" + block + "\n" + tail
    REPORT.write_text(text)
