"""The editor's rules, seen in the browser: a cycle-forming connection is refused,
validation problems are shown on the offending node, undo and redo, copy and paste,
and a single node's test run shows its outputs."""

from __future__ import annotations

import json

from playwright.sync_api import Page, expect

from control_unit.models import Pipeline
from control_unit.pipeline_actions import do_import_pipeline
from tests.browser.canvas import canvas_node, connect, select_node
from tests.browser.pipelines import two_node_pipeline
from tests.integration.conftest import EXAMPLES

EDGES = ".react-flow__edge"


def test_a_connection_that_would_form_a_cycle_is_refused(editor_page: Page):
    page = editor_page
    page.goto(f"/app/pipelines/{two_node_pipeline()}")
    expect(page.locator(EDGES)).to_have_count(1)
    connect(page, "b", "out", "a", "in")
    expect(page.get_by_role("alert")).to_contain_text("b → a would form a cycle")
    expect(page.locator(EDGES)).to_have_count(1)
    expect(page.get_by_test_id("version")).to_have_text("v1")  # nothing changed


def test_a_validation_problem_is_shown_on_its_node(editor_page: Page):
    page = editor_page
    page.goto(f"/app/pipelines/{two_node_pipeline()}")
    select_node(page, "b")
    timeout = page.get_by_label("Timeout (s)")
    timeout.fill("-5")
    timeout.press("Enter")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("alert").first).to_contain_text("Not saved: 1 problem")
    expect(canvas_node(page, "b").locator(".fk-node")).to_have_class("fk-node selected has-problem")
    expect(canvas_node(page, "b").get_by_role("alert")).to_contain_text("timeout_s")
    expect(canvas_node(page, "a").locator(".has-problem")).to_have_count(0)
    expect(page.get_by_test_id("version")).to_have_text("v1 · unsaved changes")


def test_a_nodes_worker_capabilities_are_checked_and_saved(editor_page: Page):
    page = editor_page
    pipeline_id = two_node_pipeline()
    page.goto(f"/app/pipelines/{pipeline_id}")
    select_node(page, "b")
    capabilities = page.get_by_label("Worker capabilities")
    capabilities.fill("gpu, GPU!")
    capabilities.press("Enter")
    page.get_by_role("button", name="Save").click()
    expect(canvas_node(page, "b").get_by_role("alert")).to_contain_text("which is not a capability")
    capabilities.fill("gpu")
    capabilities.press("Enter")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_test_id("version")).to_have_text("v2")
    saved = Pipeline.objects.get(id=pipeline_id).latest_version()
    assert saved is not None
    assert [node.get("requires") for node in saved.document["nodes"]] == [None, ["gpu"]]


def test_undo_and_redo_with_keys_and_buttons(editor_page: Page):
    page = editor_page
    page.goto(f"/app/pipelines/{two_node_pipeline()}")
    nodes = page.locator(".react-flow__node")
    expect(nodes).to_have_count(2)
    # The palette's Add button works from the keyboard.
    page.get_by_role("button", name="Add Merge").focus()
    page.keyboard.press("Enter")
    expect(nodes).to_have_count(3)
    expect(canvas_node(page, "merge")).to_be_visible()

    page.locator(".react-flow__pane").click(position={"x": 5, "y": 5})
    page.keyboard.press("Control+z")
    expect(nodes).to_have_count(2)
    page.keyboard.press("Control+Shift+z")
    expect(nodes).to_have_count(3)
    page.get_by_role("button", name="Undo").click()
    expect(nodes).to_have_count(2)
    page.get_by_role("button", name="Redo").click()
    expect(nodes).to_have_count(3)

    # Copy and paste two connected nodes: they come with their edge and fresh ids.
    select_node(page, "a")
    canvas_node(page, "b").locator(".fk-node-title").click(modifiers=["Control"])
    page.keyboard.press("Control+c")
    page.keyboard.press("Control+v")
    expect(nodes).to_have_count(5)
    expect(canvas_node(page, "a_2")).to_be_visible()
    expect(canvas_node(page, "b_2")).to_be_visible()
    expect(page.locator(EDGES)).to_have_count(2)
    page.keyboard.press("Delete")
    expect(nodes).to_have_count(3)
    expect(page.locator(EDGES)).to_have_count(1)


def test_testing_one_node_shows_its_outputs_and_logs(editor_page: Page, celery_worker):
    page = editor_page
    page.goto(f"/app/pipelines/{two_node_pipeline()}")
    select_node(page, "a")
    page.get_by_label("Inputs (JSON)").fill('{"in": 21}')
    page.get_by_role("button", name="Test node").click()
    result = page.locator(".fk-test-result")
    expect(result).to_have_attribute("data-state", "succeeded", timeout=90_000)
    expect(result.locator(".fk-outputs")).to_contain_text('"out": 42')
    expect(result.locator(".fk-logs")).to_contain_text("doubling 21")


def test_a_node_test_can_be_cancelled_while_it_runs(editor_page: Page, celery_worker):
    page = editor_page
    page.goto(f"/app/pipelines/{two_node_pipeline()}")
    select_node(page, "a")
    page.get_by_label("Inputs (JSON)").fill('{"in": "wait"}')
    page.get_by_role("button", name="Test node").click()
    result = page.locator(".fk-test-result")
    expect(result).to_have_attribute("data-state", "running", timeout=90_000)
    page.get_by_role("button", name="Cancel test").click()
    expect(result).to_have_attribute("data-state", "cancelled", timeout=30_000)
    expect(result.locator(".fk-error")).to_contain_text("NodeCancelled")
    expect(page.get_by_role("button", name="Cancel test")).to_have_count(0)
    expect(page.get_by_role("button", name="Test node")).to_be_enabled()


def test_automatic_layout_orders_nodes_left_to_right_and_undoes(editor_page: Page):
    page = editor_page
    page.goto(f"/app/pipelines/{two_node_pipeline(positions=((400, 200), (0, 0)))}")
    expect(canvas_node(page, "a")).to_be_visible()
    assert left_of(page, "b", "a")  # stored the wrong way round
    page.get_by_role("button", name="Auto layout").click()
    expect(page.get_by_test_id("version")).to_have_text("v1 · unsaved changes")
    page.wait_for_function(LEFT_OF, arg=["a", "b"])
    page.keyboard.press("Control+z")
    page.wait_for_function(LEFT_OF, arg=["b", "a"])


# True when the first node's box ends left of where the second node's box begins.
LEFT_OF = """([first, second]) => {
    const box = (id) => document.querySelector(`.react-flow__node[data-id="${id}"]`).getBoundingClientRect();
    return box(first).right < box(second).left;
}"""


def left_of(page: Page, first: str, second: str) -> bool:
    return bool(page.evaluate(LEFT_OF, [first, second]))


def test_ports_connect_from_the_keyboard(editor_page: Page):
    page = editor_page
    page.goto(f"/app/pipelines/{two_node_pipeline()}")
    page.get_by_role("button", name="Add Merge").focus()
    page.keyboard.press("Enter")  # the new node is selected and open in the panel
    panel = page.get_by_role("complementary", name="Selected node")
    expect(panel.locator("h2 code")).to_have_text("merge")
    panel.get_by_label("Connect an output to items").select_option(label="A (a.out)")
    panel.get_by_label("Connect an output to items").select_option(label="B (b.out)")
    expect(page.locator(EDGES)).to_have_count(3)
    panel.get_by_role("button", name="Disconnect a.out from items").press("Enter")
    expect(page.locator(EDGES)).to_have_count(2)

    # A node is selected from the keyboard too: focus it, press Enter.
    canvas_node(page, "a").focus()
    page.keyboard.press("Enter")
    expect(panel.locator("h2 code")).to_have_text("a")
    panel.get_by_label("Connect an output to in").select_option(label="Merge (merge.merged)")
    expect(page.get_by_role("alert")).to_contain_text("merge → a would form a cycle")
    expect(page.locator(EDGES)).to_have_count(2)


def test_the_example_pipelines_open_and_save_unchanged(editor_page: Page):
    """The editor keeps what it does not edit (list ports, names, limits, extra keys)."""
    page = editor_page
    for path in sorted(EXAMPLES.glob("*.json")):
        document = json.loads(path.read_text())
        pipeline = do_import_pipeline(document)
        page.goto(f"/app/pipelines/{pipeline.id}")
        expect(page.locator(".react-flow__node")).to_have_count(len(document["nodes"]))
        expect(page.locator(EDGES)).to_have_count(len(document["edges"]))
        page.locator(".react-flow__pane").click(position={"x": 5, "y": 5})
        page.keyboard.press("Control+s")
        expect(page.get_by_role("status")).to_have_text("Saved version 2.")
        saved = pipeline.versions.get(number=2).document
        # Edges without an id get one (e1, e2, ...), so problems can name them.
        assert all(edge["id"] for edge in saved["edges"])
        assert without_edge_ids(saved) == without_edge_ids(document), path.name


def without_edge_ids(document: dict) -> dict:
    edges = [{key: value for key, value in edge.items() if key != "id"} for edge in document["edges"]]
    return {**document, "edges": edges}
