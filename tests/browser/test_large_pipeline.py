"""A 500-node pipeline opens in the editor without freezing the page, and panning
stays smooth. The bounds asserted here are loose on purpose, so a busy CI machine does
not make the suite flaky, yet a page that freezes fails. `make bench` measures the same
beside a 10-node baseline and writes the figures to docs/PERFORMANCE.md."""

from __future__ import annotations

import json

from playwright.sync_api import Page

from tests.browser.conftest import ARTIFACTS
from tests.browser.graph_benchmarks import MAX_OPEN_S, measure_editor

LAYERS, WIDTH = 25, 20
MIN_PAN_FPS = 5


def test_a_500_node_pipeline_opens_and_pans_smoothly(editor_page: Page):
    figures = measure_editor(editor_page, LAYERS, WIDTH)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "performance.json").write_text(json.dumps(figures, indent=2))
    assert figures["nodes_rendered_at_fit"] == LAYERS * WIDTH, figures
    assert figures["open_s"] < MAX_OPEN_S, figures
    assert figures["pan_fps"] > MIN_PAN_FPS, figures
