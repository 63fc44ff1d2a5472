"""A person's path through the editor: log in, create a pipeline, drag three nodes
from the palette, connect them, type code, save, run, and see the run succeed."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.browser.canvas import canvas_node, connect, drag_template, select_node, set_code

EDGES = ".react-flow__edge"
CUSTOM_CODE = """from flowkit.node import Node

node = Node()


def main():
    upstream = node.get_inputs().get("in")
    return [], {"out": ["typed in the browser", upstream]}, "custom code ran"


node.register_main(main)
node.run()
"""


def test_build_save_and_run_a_pipeline(editor_page: Page):
    page = editor_page
    page.get_by_label("New pipeline name").fill("browser walk")
    page.get_by_role("button", name="Create pipeline").click()
    expect(page).to_have_url(re.compile(r"/app/pipelines/[0-9a-f-]+$"))
    expect(canvas_node(page, "start")).to_be_visible()

    # The starter node goes; three nodes come from the palette.
    select_node(page, "start")
    page.keyboard.press("Delete")
    expect(canvas_node(page, "start")).to_have_count(0)
    drag_template(page, "python", 40, 150)
    drag_template(page, "transform", 290, 150)
    drag_template(page, "python", 540, 150)
    for node_id in ("python", "transform", "python_2"):
        expect(canvas_node(page, node_id)).to_be_visible()

    connect(page, "python", "out", "transform", "in")
    connect(page, "transform", "out", "python_2", "in")
    expect(page.locator(EDGES)).to_have_count(2)

    select_node(page, "python_2")
    set_code(page, CUSTOM_CODE)
    expect(page.get_by_label("Node code")).to_contain_text("custom code ran")

    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("status")).to_have_text("Saved version 2.")
    expect(page.get_by_test_id("version")).to_have_text("v2")

    page.get_by_role("button", name="Run", exact=True).click()
    expect(page).to_have_url(re.compile(r"/app/runs/[0-9a-f-]+$"))
    expect(page.get_by_test_id("run-state")).to_have_text("succeeded", timeout=120_000)
    expect(page.locator('tr[data-node="python_2"]')).to_contain_text("custom code ran")
    for node_id in ("python", "transform", "python_2"):
        expect(page.locator(f'tr[data-node="{node_id}"]')).to_contain_text("succeeded")
