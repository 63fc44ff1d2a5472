"""Locators and gestures for the graph editor's canvas."""

from __future__ import annotations

from playwright.sync_api import Locator, Page, expect


def canvas_node(page: Page, node_id: str) -> Locator:
    return page.locator(f'.react-flow__node[data-id="{node_id}"]')


def handle(page: Page, node_id: str, port: str, kind: str) -> Locator:
    """kind: "source" for an output port, "target" for an input port."""
    return canvas_node(page, node_id).locator(f'.react-flow__handle.{kind}[data-handleid="{port}"]')


def drag_template(page: Page, template: str, x: float, y: float) -> None:
    """HTML5 drag of a palette template onto the canvas pane at (x, y) of the pane."""
    page.locator(f'[data-template="{template}"]').drag_to(
        page.locator(".react-flow__pane"), target_position={"x": x, "y": y}
    )


def connect(page: Page, source: str, source_port: str, target: str, target_port: str) -> None:
    handle(page, source, source_port, "source").drag_to(handle(page, target, target_port, "target"))


def select_node(page: Page, node_id: str) -> None:
    canvas_node(page, node_id).locator(".fk-node-title").click()
    panel = page.get_by_role("complementary", name="Selected node")
    expect(panel.locator("h2 code")).to_have_text(node_id)


def set_code(page: Page, code: str) -> None:
    """Replace the selected node's code as if pasted (typing would auto-indent)."""
    editor = page.get_by_label("Node code")
    editor.click()
    page.keyboard.press("Control+A")
    page.keyboard.insert_text(code)
