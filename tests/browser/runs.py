"""Pipelines and runs for the monitor's browser tests, made through the JSON API with
the logged-in page's session (as a script of the user's would), and locators of the
monitor page."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from playwright.sync_api import Locator, Page

NODE_TEMPLATE = (
    "import time\n"
    "from flowkit.node import Node\n"
    "node = Node()\n"
    "def main():\n"
    "    inputs = node.get_inputs()\n"
    "    value = inputs.get('in')\n"
    "{body}"
    "node.register_main(main)\n"
    "node.run()\n"
)


def node_code(body: str) -> str:
    """A node whose main has ``value`` (its input ``in``) and runs ``body``, which returns."""
    indented = "".join(f"    {line}\n" for line in body.strip().splitlines())
    return NODE_TEMPLATE.format(body=indented)


DOUBLE = node_code("print('doubling', value)\nreturn [], {'out': value * 2}, 'doubled'")


def chain(ids: list[str], codes: dict[str, str] | None = None) -> dict[str, Any]:
    """A pipeline document: ids[0] -> ids[1] -> ..., laid out left to right."""
    codes = codes or {}
    nodes = [
        {
            "id": node_id, "label": node_id.upper(), "code": codes.get(node_id, DOUBLE),
            "inputs": ["in"], "outputs": ["out"], "position": {"x": index * 240, "y": 0},
        }
        for index, node_id in enumerate(ids)
    ]  # fmt: skip
    edges = [
        {"id": f"e{index}", "source": source, "source_port": "out", "target": target, "target_port": "in"}
        for index, (source, target) in enumerate(pairwise(ids), start=1)
    ]
    return {"schema_version": 1, "nodes": nodes, "edges": edges}


def call_api(page: Page, method: str, path: str, body: Any = None) -> Any:
    """One API call with the page's session cookie and CSRF token."""
    cookies = {cookie["name"]: cookie["value"] for cookie in page.context.cookies()}
    headers = {"X-CSRFToken": cookies.get("csrftoken", ""), "Accept": "application/json"}
    response = page.request.fetch(f"/api{path}", method=method, headers=headers, data=body)
    assert response.ok, f"{method} {path}: {response.status} {response.text()}"
    return response.json() if response.status != 204 else None


def create_pipeline(page: Page, name: str, document: dict[str, Any]) -> str:
    return str(call_api(page, "POST", "/pipelines", {"name": name, "document": document})["id"])


def start_run(page: Page, pipeline_id: str, run_input: Any = None) -> str:
    return str(call_api(page, "POST", f"/pipelines/{pipeline_id}/runs", {"input": run_input})["id"])


def graph_node(page: Page, node_id: str) -> Locator:
    """The coloured box of a node in the monitor's graph (data-state is its state)."""
    return page.locator(f'.react-flow__node[data-id="{node_id}"] .fk-mnode')


def node_row(page: Page, node_id: str) -> Locator:
    return page.locator(f'tr[data-node="{node_id}"]')


def node_panel(page: Page) -> Locator:
    return page.get_by_role("complementary", name="Selected node")
